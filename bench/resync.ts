/**
 * Full copy ("marugoto") benchmark: node A's memcached holds `items` items,
 * an empty node B links to A and A copies everything, paced only by A's
 * own clients' latency (`--resync-rate 0`: no cap, on both nodes).
 *
 * Two copies, on the same node A:
 *
 * 1. idle: no client load. The copy rate (B linked → B's `stats replication`
 *    shows `copies_received 1`, and A's own `memrepl_resync_*` metrics), the
 *    time until B's memcached holds every item, and peak RSS.
 * 2. under load: memcaslap drives A (same mix as the throughput runs) in
 *    consecutive short segments, first with B linked and replicating (the
 *    "before" window), then B is replaced by a fresh empty node, which gets
 *    a full copy while the segments go on (the "during" window: segments that
 *    ran entirely inside the copy). Segments rather than one long run because
 *    memcaslap prints its latency histogram only at the end of a run; merged,
 *    they give p50/p99 over every request of the window.
 *
 * Each copy is checked: curr_items of B's memcached against A's (the two may
 * differ by memrepl's own keys, such as memrepl:checkpoint), and a sample of
 * the loaded keys read back from B's memcached with value and flags.
 */
import { LoadResult, mergeResults, runMemcaslap } from './memcaslap';
import { McConnection, stats, withTimeout } from './mc-client';
import { CLOCK_TICKS_PER_SECOND, cpuTicks, freePort, Proc, resetPeakRss, sleep } from './procs';
import { readGauge, waitForAcks } from './prometheus';
import { startMemcached, startMemrepl } from './targets';

export interface ResyncSettings {
  items: number;
  keyBytes: number;
  valueBytes: number;
  /** memcaslap segment length and the number of them before the copy. */
  segmentSeconds: number;
  beforeSegments: number;
  threads: number;
  concurrency: number;
  /** memcaslap's workload file. */
  cfg: string;
  /** Run the memrepl processes under `node --cpu-prof`, profiles written here. */
  cpuProfDir: string | null;
  log: (message: string) => void;
}

export interface SampleCheck {
  checked: number;
  wrong: number;
  examples: string[];
}

export interface CopyRun {
  /** Items A says it sent (increase of memrepl_resync_items_sent_total). */
  itemsSent: number | null;
  /** B's `stats replication`: peer_up 1 → copies_received 1, in ms (polled every 10 ms). */
  linkedToDoneMs: number | null;
  /** A's memrepl_resync_last_duration_seconds: copy start → last item on the link. */
  senderSeconds: number | null;
  /** B linked → B's memcached holds every item (idle copy only). */
  appliedMs: number | null;
  aItems: number | null;
  bItems: number | null;
  sample: SampleCheck | null;
  rss: Array<{ role: string; kib: number | null }>;
  /** CPU used between B linking and copies_received 1, in % of one core: A's memrepl, B's memrepl, A's memcached, B's memcached. */
  cpuPercent: Array<number | null>;
  /** Why a figure is missing. */
  error?: string;
}

export interface LoadWindows {
  before: LoadResult | null;
  during: LoadResult | null;
  beforeSegments: number;
  duringSegments: number;
  segmentSeconds: number;
  /** Set when no segment fitted inside the copy and overlapping ones were used. */
  duringNote?: string;
}

export interface ResyncReport {
  items: number;
  keyBytes: number;
  valueBytes: number;
  fillSeconds: number | null;
  idle: CopyRun | null;
  loaded: CopyRun | null;
  load: LoadWindows | null;
  /** Set when the run could not even start (fill failed, node A did not start). */
  unavailable?: string;
  /** Peak RSS was reset between the two copies (else node A's figure for the loaded copy includes the idle one). */
  rssReset: boolean;
  cpuProfDir: string | null;
}

const POLL_MS = 10;
/** memrepl's own keys in memcached (memrepl:checkpoint) that may exist on one node only. */
const OWN_KEYS_SLACK = 2;
const SAMPLE_KEYS = 10_000;
const FILL_BATCH = 2_000;
const FILL_CONNECTIONS = 2;
const FILL_BATCHES_IN_FLIGHT = 4;

interface Node {
  memcachedPort: number;
  clientPort: number;
  metricsPort: number;
  memcached: Proc;
  memrepl: Proc;
}

export function resyncKey(i: number, keyBytes: number): string {
  const prefix = 'resync:';
  return prefix + String(i).padStart(Math.max(1, keyBytes - prefix.length), '0');
}

/** Distinct per item, so a value landing under the wrong key would show. */
export function resyncValue(i: number, valueBytes: number): Buffer {
  const value = Buffer.alloc(valueBytes, 97 + (i % 26));
  value.write(`${i}:`, 0, 'latin1');
  return value;
}

const resyncFlags = (i: number) => i % 65536;

export async function runResync(s: ResyncSettings): Promise<ResyncReport> {
  const report: ResyncReport = {
    items: s.items,
    keyBytes: s.keyBytes,
    valueBytes: s.valueBytes,
    fillSeconds: null,
    idle: null,
    loaded: null,
    load: null,
    rssReset: false,
    cpuProfDir: s.cpuProfDir,
  };
  const started: Proc[] = [];
  const nodeArgs = s.cpuProfDir ? ['--cpu-prof', '--cpu-prof-dir', s.cpuProfDir] : [];
  try {
    const mcA = await startMemcached('memcached-a');
    started.push(mcA.proc);
    s.log(`resync: loading ${s.items} items of ${s.valueBytes} bytes into A's memcached`);
    const t0 = Date.now();
    await fill(mcA.port, s);
    report.fillSeconds = (Date.now() - t0) / 1000;
    s.log(`resync: loaded in ${report.fillSeconds.toFixed(1)} s`);
    const replA = await freePort();
    const a = await startMemrepl({
      name: 'memrepl-a',
      upstreamPort: mcA.port,
      extraArgs: ['-X', String(replA), '--node-id', 'a', '--cluster', 'bench-resync', '--resync-rate', '0'],
      nodeArgs,
    });
    started.push(a.proc);
    if (s.cpuProfDir) s.log(`resync: memrepl-a is pid ${a.proc.pid} (CPU profile to ${s.cpuProfDir})`);
    const nodeA: Node = { memcachedPort: mcA.port, clientPort: a.port, metricsPort: a.metricsPort, memcached: mcA.proc, memrepl: a.proc };

    // 1. Idle copy.
    let b1: Node | null = null;
    try {
      s.log('resync: idle copy: starting empty node B');
      const copy = await copyTo(nodeA, replA, 'b', s, nodeArgs, started);
      b1 = copy.node;
      report.idle = copy.run;
      if (!copy.run.error) {
        // Every item applied on B (the copy's end frame can arrive before B's memcached has stored the last ones).
        report.idle.appliedMs = await waitApplied(nodeA, b1, copy.linkedAt, s.items, 60_000);
      }
      await verify(nodeA, b1, s, report.idle, 10_000);
      report.idle.rss = [nodeA.memrepl, b1.memrepl, nodeA.memcached, b1.memcached].map((p) => ({ role: p.name, kib: p.peakRssKiB() }));
      s.log(`resync: idle copy: ${describeRun(report.idle, s.items)}`);
    } catch (error) {
      report.idle ??= emptyRun();
      report.idle.error = (error as Error).message.split('\n')[0].slice(0, 300);
      s.log(`resync: idle copy failed: ${report.idle.error}`);
    }

    // 2. Copy under client load.
    if (b1 !== null && !report.idle?.error) {
      report.rssReset = resetPeakRss(nodeA.memrepl.pid) && resetPeakRss(nodeA.memcached.pid);
      report.loaded = emptyRun();
      try {
        await loadedCopy(nodeA, b1, replA, s, nodeArgs, started, report);
        s.log(`resync: copy under load: ${describeRun(report.loaded, s.items)}`);
      } catch (error) {
        report.loaded.error = (error as Error).message.split('\n')[0].slice(0, 300);
        s.log(`resync: copy under load failed: ${report.loaded.error}`);
      }
    }
  } catch (error) {
    report.unavailable = (error as Error).message.split('\n')[0].slice(0, 300);
    s.log(`resync: not available: ${report.unavailable}`);
  } finally {
    // Proxies first (their SIGTERM handlers write the CPU profiles), then memcached.
    await Promise.all(started.filter((p) => p.name.startsWith('memrepl')).map((p) => p.stop(10_000)));
    await Promise.all(started.map((p) => p.stop()));
  }
  return report;
}

function emptyRun(): CopyRun {
  return { itemsSent: null, linkedToDoneMs: null, senderSeconds: null, appliedMs: null, aItems: null, bItems: null, sample: null, rss: [], cpuPercent: [] };
}

function describeRun(r: CopyRun, items: number): string {
  const rate = r.linkedToDoneMs ? Math.round(((r.itemsSent ?? items) * 1000) / r.linkedToDoneMs) : null;
  return `${r.itemsSent ?? '?'} items in ${r.linkedToDoneMs ?? '?'} ms (${rate ?? '?'} items/s), A ${r.aItems ?? '?'} / B ${r.bItems ?? '?'} items${r.error ? `, ${r.error}` : ''}`;
}

/** Pipelined quiet `ms` straight into memcached: a few batches in flight on each of a few connections. */
export async function fill(port: number, s: Pick<ResyncSettings, 'items' | 'keyBytes' | 'valueBytes'>): Promise<void> {
  const conns = await Promise.all(Array.from({ length: FILL_CONNECTIONS }, () => McConnection.connect(port)));
  const deadline = Date.now() + 60_000 + s.items / 10;
  try {
    let next = 0;
    const worker = async (conn: McConnection) => {
      const pending: Array<Promise<unknown>> = [];
      while (next < s.items) {
        const from = next;
        next = Math.min(s.items, next + FILL_BATCH);
        const parts: Buffer[] = [];
        for (let i = from; i < next; i++) {
          const value = resyncValue(i, s.valueBytes);
          parts.push(Buffer.from(`ms ${resyncKey(i, s.keyBytes)} ${value.length} F${resyncFlags(i)} T0 q\r\n`, 'latin1'), value, Buffer.from('\r\n'));
        }
        parts.push(Buffer.from('mn\r\n'));
        const batch = conn.send(Buffer.concat(parts)).then((reply) => {
          if (reply.kind !== 'line' || reply.line !== 'MN') throw new Error(`loading A's memcached: ${JSON.stringify(reply).slice(0, 200)}`);
        });
        batch.catch(() => {}); // awaited below; this only keeps an early failure from counting as unhandled
        pending.push(batch);
        if (pending.length >= FILL_BATCHES_IN_FLIGHT) await withTimeout(pending.shift()!, Math.max(1000, deadline - Date.now()), 'loading A');
      }
      await withTimeout(Promise.all(pending), Math.max(1000, deadline - Date.now()), 'loading A');
    };
    await Promise.all(conns.map(worker));
  } finally {
    for (const c of conns) c.close();
  }
  const count = Number((await stats(port)).get('curr_items'));
  if (count < s.items) throw new Error(`A's memcached holds ${count} items after loading ${s.items} (evictions? raise its -m)`);
}

/** Starts an empty node (memcached + memrepl dialling A) and waits for A's full copy to reach it. */
async function copyTo(
  a: Node,
  replA: number,
  name: string,
  s: ResyncSettings,
  nodeArgs: string[],
  started: Proc[],
): Promise<{ node: Node; run: CopyRun; linkedAt: number; doneAt: number }> {
  const run = emptyRun();
  const sentBefore = (await readGauge(a.metricsPort, 'memrepl_resync_items_sent_total')) ?? 0;
  const mc = await startMemcached(`memcached-${name}`);
  started.push(mc.proc);
  const repl = await freePort();
  const m = await startMemrepl({
    name: `memrepl-${name}`,
    upstreamPort: mc.port,
    extraArgs: ['-x', `127.0.0.1:${replA}`, '-X', String(repl), '--node-id', name, '--cluster', 'bench-resync', '--resync-rate', '0'],
    nodeArgs,
  });
  started.push(m.proc);
  const node: Node = { memcachedPort: mc.port, clientPort: m.port, metricsPort: m.metricsPort, memcached: mc.proc, memrepl: m.proc };
  // Generous: a copy at 5,000 items/s still finishes.
  const procs = [a.memrepl, node.memrepl, a.memcached, node.memcached];
  const { linkedAt, doneAt, cpuAtLink } = await waitCopied(node, procs, 30_000 + s.items / 5);
  run.linkedToDoneMs = doneAt - linkedAt;
  const cpuAtDone = procs.map((p) => cpuTicks(p.pid));
  run.cpuPercent = procs.map((_, i) => {
    const from = cpuAtLink[i];
    const to = cpuAtDone[i];
    return from === null || to === null || doneAt <= linkedAt ? null : ((to - from) / CLOCK_TICKS_PER_SECOND / ((doneAt - linkedAt) / 1000)) * 100;
  });
  run.senderSeconds = await readGauge(a.metricsPort, 'memrepl_resync_last_duration_seconds');
  const sentAfter = await readGauge(a.metricsPort, 'memrepl_resync_items_sent_total');
  run.itemsSent = sentAfter === null ? null : sentAfter - sentBefore;
  return { node, run, linkedAt, doneAt };
}

/** Polls B's `stats replication`: when the link came up, and when the copy's end arrived. */
async function waitCopied(b: Node, procs: Proc[], timeoutMs: number): Promise<{ linkedAt: number; doneAt: number; cpuAtLink: Array<number | null> }> {
  const deadline = Date.now() + timeoutMs;
  let linkedAt: number | null = null;
  let cpuAtLink: Array<number | null> = procs.map((p) => cpuTicks(p.pid));
  let last = '';
  while (Date.now() < deadline) {
    const now = Date.now();
    try {
      const st = await stats(b.clientPort, 'replication', 2000);
      if (linkedAt === null && st.get('peer_up') === '1') {
        linkedAt = now;
        cpuAtLink = procs.map((p) => cpuTicks(p.pid));
      }
      if (Number(st.get('copies_received') ?? 0) >= 1) return { linkedAt: linkedAt ?? now, doneAt: Date.now(), cpuAtLink };
      last = `peer_up ${st.get('peer_up')}, copy_receiving ${st.get('copy_receiving')}`;
    } catch (error) {
      last = (error as Error).message;
    }
    await sleep(POLL_MS);
  }
  throw new Error(`no complete copy on ${b.memrepl.name} within ${Math.round(timeoutMs / 1000)} s (${last}): ${b.memrepl.output().trim().slice(-300)}`);
}

/** Time from `since` until B's memcached holds at least `items` items; null if it never does in time. */
async function waitApplied(a: Node, b: Node, since: number, items: number, timeoutMs: number): Promise<number | null> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const now = Date.now();
    const [onA, onB] = await Promise.all([curr(a.memcachedPort), curr(b.memcachedPort)]);
    if (onB >= Math.min(items, onA - OWN_KEYS_SLACK)) return now - since;
    await sleep(POLL_MS);
  }
  return null;
}

const curr = async (port: number) => Number((await stats(port)).get('curr_items') ?? NaN);

/**
 * Counts on both memcacheds once B caught up (bounded), and a sample of the
 * loaded keys read back from B's memcached: value and flags as loaded.
 */
async function verify(a: Node, b: Node, s: ResyncSettings, run: CopyRun, settleMs: number): Promise<void> {
  const deadline = Date.now() + settleMs;
  for (;;) {
    [run.aItems, run.bItems] = await Promise.all([curr(a.memcachedPort), curr(b.memcachedPort)]);
    if (Math.abs(run.aItems - run.bItems) <= OWN_KEYS_SLACK || Date.now() > deadline) break;
    await sleep(100);
  }
  const conn = await McConnection.connect(b.memcachedPort);
  const sample: SampleCheck = { checked: 0, wrong: 0, examples: [] };
  try {
    const step = Math.max(1, Math.floor(s.items / SAMPLE_KEYS));
    const checks: Array<Promise<void>> = [];
    for (let i = 0; i < s.items; i += step) {
      const key = resyncKey(i, s.keyBytes);
      checks.push(
        conn.get(key).then((reply) => {
          sample.checked++;
          const expected = resyncValue(i, s.valueBytes);
          const ok = reply.kind === 'value' && reply.data.equals(expected) && reply.flags === resyncFlags(i);
          if (!ok) {
            sample.wrong++;
            if (sample.examples.length < 3)
              sample.examples.push(
                `${key}: ${reply.kind === 'value' ? `${reply.data.length} bytes, flags ${reply.flags}` : reply.kind === 'miss' ? 'absent' : reply.line}`,
              );
          }
        }),
      );
    }
    await withTimeout(Promise.all(checks), 30_000, 'reading the sample back from B');
  } finally {
    conn.close();
  }
  run.sample = sample;
}

interface Segment {
  start: number;
  end: number;
  result: LoadResult;
}

/** Back-to-back memcaslap runs on A until `stop()` says so. */
async function segmentsUntil(a: Node, s: ResyncSettings, stop: () => boolean, into: Segment[]): Promise<void> {
  while (!stop()) {
    const start = Date.now();
    const result = await runMemcaslap(s.cfg, { port: a.clientPort, seconds: s.segmentSeconds, threads: s.threads, concurrency: s.concurrency, binary: false });
    into.push({ start, end: Date.now(), result });
  }
}

async function loadedCopy(a: Node, b1: Node, replA: number, s: ResyncSettings, nodeArgs: string[], started: Proc[], report: ResyncReport): Promise<void> {
  const run = report.loaded!;
  s.log(`resync: under load: warm-up and ${s.beforeSegments} × ${s.segmentSeconds} s with B linked`);
  // Warm-up: memcaslap's keys exist and the pair is replicating them.
  await runMemcaslap(s.cfg, { port: a.clientPort, seconds: s.segmentSeconds, threads: s.threads, concurrency: s.concurrency, binary: false });
  const before: Segment[] = [];
  let n = 0;
  await segmentsUntil(a, s, () => n++ >= s.beforeSegments, before);
  // B loses everything: a fresh empty node takes its place while the load goes on.
  await b1.memrepl.stop();
  await b1.memcached.stop();
  const during: Segment[] = [];
  let copyDone = false;
  const deadline = Date.now() + 60_000 + s.items / 2;
  const load = segmentsUntil(a, s, () => copyDone || Date.now() > deadline, during);
  let copy: Awaited<ReturnType<typeof copyTo>> | null = null;
  try {
    s.log('resync: under load: replacing B by an empty node');
    copy = await copyTo(a, replA, 'b2', s, nodeArgs, started);
  } finally {
    copyDone = true;
    await load;
  }
  Object.assign(run, copy.run);
  const inside = during.filter((g) => g.start >= copy.linkedAt && g.end <= copy.doneAt);
  const overlapping = during.filter((g) => g.end > copy.linkedAt && g.start < copy.doneAt);
  report.load = {
    before: mergeResults(before.map((g) => g.result)),
    during: mergeResults((inside.length > 0 ? inside : overlapping).map((g) => g.result)),
    beforeSegments: before.length,
    duringSegments: inside.length > 0 ? inside.length : overlapping.length,
    segmentSeconds: s.segmentSeconds,
    duringNote: inside.length > 0 ? undefined : 'the copy was shorter than one segment: segments overlapping it, partly outside the copy',
  };
  // Live records of the load must have reached B before the counts compare.
  await waitForAcks(a.metricsPort, 30_000);
  await verify(a, copy.node, s, run, 15_000);
  run.rss = [a.memrepl, copy.node.memrepl, a.memcached, copy.node.memcached].map((p) => ({ role: p.name, kib: p.peakRssKiB() }));
}
