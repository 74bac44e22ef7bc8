/**
 * memrepl against what it replaces: 100% sets through a replicating memrepl
 * pair and through a repcached pair, side by side in one run, at a few client
 * counts. Per row: memcaslap's throughput and latency on node A, and the CPU
 * time of every process of the pair (both memcacheds and both memrepls, or
 * both repcacheds) per set, from /proc/<pid>/stat, counted until node B has
 * applied everything (so node B's share of replication is in it).
 *
 * repcached comes from REPCACHED_BIN (a repcached 2.3.1 build's `memcached`);
 * without it the memrepl rows still run and the repcached rows say why they
 * are missing. Nothing here fails the run because repcached is absent.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { stats } from './mc-client';
import { LoadResult, runMemcaslap } from './memcaslap';
import { CLOCK_TICKS_PER_SECOND, cpuTicks, sleep } from './procs';
import { checkReplication, peakRss, repcachedPair, replicatedPair, stopTarget, Target } from './targets';

export type PairKind = 'memrepl' | 'repcached';

/** How to get a repcached binary, for the one line printed when there is none. */
export const REPCACHED_HINT =
  'to add them, build repcached 2.3.1 (git clone https://github.com/kspe/repcached; drop -Werror from configure.ac and configure; ' +
  './configure --enable-replication CFLAGS="-O2 -fcommon"; make: steps in docs/bench.md, ' +
  "'Building repcached') and run REPCACHED_BIN=<that tree>/memcached npm run bench";

export type RepcachedInfo = { bin: string; version: string } | { unavailable: string };

/** REPCACHED_BIN, checked: an executable that says it is repcached. */
export function findRepcached(): RepcachedInfo {
  const raw = process.env.REPCACHED_BIN;
  if (raw === undefined || raw === '') return { unavailable: 'REPCACHED_BIN is not set' };
  const bin = path.resolve(raw);
  try {
    fs.accessSync(bin, fs.constants.X_OK);
    if (!fs.statSync(bin).isFile()) throw new Error('not a file');
  } catch {
    return { unavailable: `REPCACHED_BIN=${raw}: no executable file there` };
  }
  // memcached 1.4.13 has no -V; -h prints "memcached 1.4.13" and "repcached 2.3.1" first.
  const res = spawnSync(bin, ['-h'], { encoding: 'utf8', timeout: 5000 });
  const head = `${res.stdout ?? ''}${res.stderr ?? ''}`
    .split('\n')
    .slice(0, 2)
    .map((l) => l.trim());
  const repcached = head.find((l) => l.startsWith('repcached'));
  if (!repcached) return { unavailable: `REPCACHED_BIN=${raw} is not repcached (-h says ${JSON.stringify(head.join(' / '))})` };
  return { bin, version: head.join(' + ') };
}

export interface ProcessCost {
  role: string;
  /** User + system CPU seconds over the measured window (load start → node B caught up). */
  cpuSeconds: number | null;
  peakRssKiB: number | null;
}

export interface SetRun {
  pair: PairKind;
  clients: number;
  result: LoadResult | null;
  /** Why there is no result, or what went wrong around it. */
  note?: string;
  /** Items stored (total_items) over the window on node A's memcached/repcached and on node B's. */
  setsA: number | null;
  setsB: number | null;
  /** Load end → node B's total_items caught up with A's (or stopped moving), in ms. */
  drainMs: number | null;
  /** False when B's total_items stopped short of A's or the wait hit its deadline. */
  caughtUp: boolean;
  processes: ProcessCost[];
}

export interface SetPairsReport {
  repcached: RepcachedInfo;
  clientCounts: number[];
  seconds: number;
  warmup: number;
  threads: number;
  valueBytes: number;
  keyBytes: number;
  runs: SetRun[];
}

export interface SetPairsSettings {
  /** From findRepcached(), looked up once when the run starts. */
  repcached: RepcachedInfo;
  /** memcaslap workload file with 100% sets. */
  cfg: string;
  clientCounts: number[];
  seconds: number;
  warmup: number;
  threads: number;
  keyBytes: number;
  valueBytes: number;
  log: (message: string) => void;
}

/** memrepl's own keys (checkpoint, copy marks) and the bench's probes may differ between the nodes by a few sets. */
const CAUGHT_UP_SLACK = 5;
/** B's total_items unchanged this long (and A's too): B applied all it is going to. */
const QUIET_MS = 1000;
const DRAIN_DEADLINE_MS = 60_000;

/**
 * Items stored so far (`total_items`: every set links a new item, a
 * replacement included). Not cmd_set: repcached does not count the sets it
 * applies from its peer there (its replication connection has no worker
 * thread to count them on), and memrepl's applier uses meta commands.
 */
async function itemsStored(port: number): Promise<number> {
  const n = Number((await stats(port, '', 3000)).get('total_items'));
  if (!Number.isFinite(n)) throw new Error(`no total_items in stats of 127.0.0.1:${port}`);
  return n;
}

interface Snapshot {
  a: number;
  b: number;
  ticks: Array<number | null>;
}

async function snapshot(target: Target): Promise<Snapshot> {
  const [a, b] = await Promise.all([itemsStored(target.memcachedPort!), itemsStored(target.peerMemcachedPort!)]);
  return { a, b, ticks: target.roles.map((r) => cpuTicks(r.proc.pid)) };
}

/**
 * Waits until node B has applied what node A stored: B's total_items back within
 * `gap` (+ slack) of A's, or neither moving for QUIET_MS. Returns how long
 * that took and which way it ended.
 */
async function drain(target: Target, gap: number): Promise<{ ms: number; caughtUp: boolean }> {
  const start = Date.now();
  let last = { a: -1, b: -1 };
  let quietSince = Date.now();
  for (;;) {
    const [a, b] = await Promise.all([itemsStored(target.memcachedPort!), itemsStored(target.peerMemcachedPort!)]);
    if (a - b <= gap + CAUGHT_UP_SLACK) return { ms: Date.now() - start, caughtUp: true };
    if (a !== last.a || b !== last.b) {
      last = { a, b };
      quietSince = Date.now();
    } else if (Date.now() - quietSince >= QUIET_MS) {
      return { ms: quietSince - start, caughtUp: false };
    }
    if (Date.now() - start > DRAIN_DEADLINE_MS) return { ms: Date.now() - start, caughtUp: false };
    await sleep(20);
  }
}

/** Lines a repcached printed about its replication link (it prints them on trouble, e.g. a full queue). */
function repcachedComplaints(target: Target): string[] {
  return target.roles
    .filter((r) => r.role.startsWith('repcached'))
    .flatMap((r) =>
      r.proc
        .output()
        .split('\n')
        .filter((l) => /replication/i.test(l))
        .map((l) => `${r.role}: ${l.trim()}`),
    );
}

async function measureRow(pair: PairKind, start: () => Promise<Target>, clients: number, s: SetPairsSettings): Promise<SetRun> {
  const run: SetRun = { pair, clients, result: null, setsA: null, setsB: null, drainMs: null, caughtUp: false, processes: [] };
  let target: Target;
  try {
    s.log(`${pair} pair, ${clients} clients: starting`);
    target = await start();
  } catch (error) {
    run.note = `failed to start: ${(error as Error).message.split('\n')[0].slice(0, 300)}`;
    s.log(`${pair} pair: ${run.note}`);
    return run;
  }
  try {
    const load = {
      port: target.clientPort,
      seconds: s.seconds,
      // memcaslap wants at least one connection per thread.
      threads: Math.min(s.threads, clients),
      concurrency: clients,
      binary: false,
    };
    // The gap between A's and B's total_items with nothing in flight (memrepl's own keys), before any load.
    const idle = await snapshot(target);
    const gap = idle.a - idle.b;
    s.log(`${pair} pair, ${clients} clients: warm-up ${s.warmup} s`);
    await runMemcaslap(s.cfg, { ...load, seconds: s.warmup });
    // The window starts once B has applied the warm-up's sets.
    await drain(target, gap);
    const before = await snapshot(target);
    s.log(`${pair} pair, ${clients} clients: measuring ${s.seconds} s`);
    run.result = await runMemcaslap(s.cfg, load);
    const drained = await drain(target, gap);
    const after = await snapshot(target);
    run.drainMs = drained.ms;
    run.caughtUp = drained.caughtUp;
    run.setsA = after.a - before.a;
    run.setsB = after.b - before.b;
    const rss = peakRss(target);
    run.processes = target.roles.map((r, i) => {
      const t0 = before.ticks[i];
      const t1 = after.ticks[i];
      return { role: r.role, cpuSeconds: t0 === null || t1 === null ? null : (t1 - t0) / CLOCK_TICKS_PER_SECOND, peakRssKiB: rss[i]?.kib ?? null };
    });
    const notes: string[] = [];
    if (!drained.caughtUp)
      notes.push(`node B stopped ${run.setsA - run.setsB} sets short of node A (or did not catch up within ${DRAIN_DEADLINE_MS / 1000} s)`);
    try {
      await checkReplication(target.clientPort, target.peerMemcachedPort!, 5000);
    } catch (error) {
      notes.push(`replication not working after the run: ${(error as Error).message}`);
    }
    const complaints = repcachedComplaints(target);
    if (complaints.length > 0) notes.push(complaints.slice(0, 3).join('; '));
    if (notes.length > 0) run.note = notes.join('; ');
    s.log(`${pair} pair, ${clients} clients: ${run.result.tps} TPS, node B caught up in ${run.drainMs} ms${run.note ? ` (${run.note})` : ''}`);
  } catch (error) {
    run.note = `failed: ${(error as Error).message.split('\n')[0].slice(0, 300)}`;
    s.log(`${pair} pair, ${clients} clients: ${run.note}`);
  } finally {
    await stopTarget(target);
  }
  return run;
}

/**
 * For each client count, a fresh memrepl pair then a fresh repcached pair
 * (interleaved, so a change in the machine's load hits both alike).
 */
export async function runSetPairs(s: SetPairsSettings): Promise<SetPairsReport> {
  const repcached = s.repcached;
  const runs: SetRun[] = [];
  for (const clients of s.clientCounts) {
    runs.push(await measureRow('memrepl', replicatedPair, clients, s));
    if ('bin' in repcached) runs.push(await measureRow('repcached', () => repcachedPair(repcached.bin), clients, s));
  }
  return {
    repcached,
    clientCounts: s.clientCounts,
    seconds: s.seconds,
    warmup: s.warmup,
    threads: s.threads,
    keyBytes: s.keyBytes,
    valueBytes: s.valueBytes,
    runs,
  };
}
