/**
 * `npm run bench`: memcached direct, twemproxy, memrepl and a replicating
 * memrepl pair under the same memcaslap load, in one run, as ratios; then
 * replication lag on the idle pair and at half of its saturation throughput,
 * and (with REPCACHED_BIN) the same two lag runs on a fresh repcached pair at
 * the same fixed rate, as a same-run reference for what this machine's
 * process wake-ups cost; then the plain proxy and the pair again in
 * alternating rounds, for a replication cost that is a median, not one run's
 * luck; then 100% sets through a memrepl pair and a repcached pair side by
 * side (throughput and whole-pair CPU per set). Writes docs/bench.md (or
 * $BENCH_OUT) and prints the same text, with a verdict for every target.
 *
 * Environment overrides (all optional):
 *   BENCH_SECONDS         measured seconds per run (10)
 *   BENCH_WARMUP_SECONDS  unmeasured load before each run (3)
 *   BENCH_LAG_SECONDS     length of the fixed-rate lag run (BENCH_SECONDS)
 *   BENCH_THREADS         memcaslap threads (half the CPUs, at least 1)
 *   BENCH_CONCURRENCY     memcaslap concurrent connections (32)
 *   BENCH_OUT             report path (docs/bench.md)
 *   BENCH_SET_CLIENTS     memcaslap connections for the 100% set rows, comma-separated (4,32)
 *   BENCH_COST_ROUNDS     alternating plain-proxy / pair rounds for the replication cost (5)
 *   REPCACHED_BIN         a repcached 2.3.1 build's memcached binary, for the repcached
 *                         pair rows (100% sets, and the lag reference); without it those
 *                         rows are skipped (one line says so)
 *   BENCH_ONLY            run one part: 'throughput' (targets a-d, the lag run and the set rows) or
 *                         'resync' (the full copy). A partial run prints its report but
 *                         writes it only to an explicit BENCH_OUT, so the committed
 *                         docs/bench.md keeps every section.
 *   BENCH_RESYNC_ITEMS    items node A holds for the full-copy run (1000000)
 *   BENCH_RESYNC_SEGMENT_SECONDS  memcaslap run length around the copy (2)
 *   BENCH_RESYNC_CPU_PROF directory: run the resync's memrepl processes under
 *                         node --cpu-prof, profiles written there (slows them)
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { LoadOptions, runMemcaslap, writeWorkload } from './memcaslap';
import type { PacedOptions, PacedResult } from './paced-load';
import { CLOCK_TICKS_PER_SECOND, cpuTicks, killAllNow, runBounded, shownPath, stopAll } from './procs';
import { CostRound, Environment, LagReport, Part, Protocol, renderMarkdown, RssRow, Run, TargetId } from './report';
import { ResyncReport, runResync } from './resync';
import { findRepcached, REPCACHED_HINT, RepcachedInfo, runSetPairs, SetPairsReport } from './set-pairs';
import { MEMREPL_CLI, memcachedDirect, memrepl, peakRss, repcachedPair, replicatedPair, stopTarget, Target, twemproxy } from './targets';

const ROOT = path.join(__dirname, '..', '..');
const ENV_KEYS = [
  'BENCH_SECONDS',
  'BENCH_WARMUP_SECONDS',
  'BENCH_LAG_SECONDS',
  'BENCH_THREADS',
  'BENCH_CONCURRENCY',
  'BENCH_OUT',
  'BENCH_ONLY',
  'BENCH_RESYNC_ITEMS',
  'BENCH_RESYNC_SEGMENT_SECONDS',
  'BENCH_RESYNC_CPU_PROF',
  'BENCH_SET_CLIENTS',
  'BENCH_COST_ROUNDS',
  'REPCACHED_BIN',
];
const PARTS: Part[] = ['throughput', 'resync'];

function parts(): Part[] {
  const raw = process.env.BENCH_ONLY;
  if (raw === undefined || raw === '') return PARTS;
  const chosen = raw.split(',').map((p) => p.trim());
  const unknown = chosen.filter((p) => !PARTS.includes(p as Part));
  if (unknown.length > 0) throw new Error(`BENCH_ONLY: unknown part ${unknown.join(', ')} (known: ${PARTS.join(', ')})`);
  return PARTS.filter((p) => chosen.includes(p));
}

function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer, got ${JSON.stringify(raw)}`);
  return n;
}

function envIntList(name: string, fallback: number[]): number[] {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const list = raw.split(',').map((x) => Number(x.trim()));
  if (list.length === 0 || !list.every((n) => Number.isInteger(n) && n > 0)) {
    throw new Error(`${name} must be comma-separated positive integers, got ${JSON.stringify(raw)}`);
  }
  return list;
}

const settings = (() => {
  const seconds = envInt('BENCH_SECONDS', 10);
  return {
    seconds,
    warmup: envInt('BENCH_WARMUP_SECONDS', 3),
    lagSeconds: envInt('BENCH_LAG_SECONDS', seconds),
    // The load generator shares the machine with the target: leave it half the CPUs.
    threads: envInt('BENCH_THREADS', Math.max(1, Math.floor(os.cpus().length / 2))),
    concurrency: envInt('BENCH_CONCURRENCY', 32),
    setClients: envIntList('BENCH_SET_CLIENTS', [4, 32]),
    costRounds: envInt('BENCH_COST_ROUNDS', 5),
    parts: parts(),
    /** A partial run (BENCH_ONLY) writes only where BENCH_OUT says. */
    out: process.env.BENCH_OUT ? path.resolve(ROOT, process.env.BENCH_OUT) : process.env.BENCH_ONLY ? null : path.join(ROOT, 'docs/bench.md'),
    workload: { keyBytes: 32, valueBytes: 100, setRatio: 0.1 },
    resyncItems: envInt('BENCH_RESYNC_ITEMS', 1_000_000),
    resyncSegmentSeconds: envInt('BENCH_RESYNC_SEGMENT_SECONDS', 2),
    resyncCpuProf: process.env.BENCH_RESYNC_CPU_PROF ? path.resolve(process.env.BENCH_RESYNC_CPU_PROF) : null,
  };
})();

const log = (message: string) => process.stderr.write(`bench: ${message}\n`);

function onPath(command: string): boolean {
  return (process.env.PATH ?? '').split(':').some((dir) => {
    try {
      fs.accessSync(path.join(dir, command), fs.constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

function preflight(): void {
  const needed = settings.parts.includes('throughput') ? ['memcached', 'memcaslap', 'nutcracker'] : ['memcached', 'memcaslap'];
  const missing = needed.filter((c) => !onPath(c));
  if (missing.length > 0) {
    process.stderr.write(`bench: missing ${missing.join(', ')}: run 'apt-get install -y libmemcached-tools nutcracker memcached' and try again\n`);
    process.exit(1);
  }
  if (!fs.existsSync(MEMREPL_CLI)) {
    process.stderr.write(`bench: ${MEMREPL_CLI} not found: run 'npm run build' first\n`);
    process.exit(1);
  }
}

/** First line of a command's output (some print their version on stderr), bounded. */
function versionOf(command: string, args: string[]): string {
  const res = spawnSync(command, args, { encoding: 'utf8', timeout: 5000 });
  return `${res.stdout ?? ''}${res.stderr ?? ''}`.trim().split('\n')[0] || 'unknown';
}

function describeEnvironment(repcached: RepcachedInfo): Environment {
  const cpus = os.cpus();
  const overrides = ENV_KEYS.filter((k) => process.env[k] !== undefined).map((k) => `${k}=${shownPath(process.env[k]!)}`);
  let commit = 'unknown';
  try {
    commit = execFileSync('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8', timeout: 5000 }).trim();
    const dirty = execFileSync('git', ['-C', ROOT, 'status', '--porcelain', '--', 'src'], { encoding: 'utf8', timeout: 5000 }).trim();
    if (dirty) commit += ' (plus uncommitted changes in src/)';
  } catch {
    // not a git checkout: leave it unknown
  }
  const s = settings;
  return {
    date: new Date().toISOString(),
    command: [...overrides, 'npm run bench'].join(' '),
    commit,
    cpu: `${cpus.length} × ${cpus[0]?.model ?? 'unknown'}`,
    kernel: `${os.type()} ${os.release()} ${os.arch()}`,
    loadAverage: os
      .loadavg()
      .map((n) => n.toFixed(2))
      .join(' / '),
    node: process.version,
    memcached: versionOf('memcached', ['-V']),
    nutcracker: versionOf('nutcracker', ['-V']),
    repcached: 'bin' in repcached ? `${repcached.version} (${shownPath(repcached.bin)})` : `not measured: ${repcached.unavailable}`,
    memcaslap: `${versionOf('memcaslap', ['-V'])} (libmemcached-tools)`,
    settings: [
      `memcaslap -T ${s.threads} -c ${s.concurrency}; ` +
        `${s.workload.keyBytes}-byte keys, ${s.workload.valueBytes}-byte values, ${100 - s.workload.setRatio * 100}% get / ${s.workload.setRatio * 100}% set`,
      ...(s.parts.includes('throughput')
        ? [
            `${s.seconds} s measured per run after ${s.warmup} s warm-up`,
            `lag runs ${s.lagSeconds} s (idle, then half saturation${'bin' in repcached ? '; both again on a repcached pair at the same rate' : ''})`,
            `replication cost: ${s.costRounds} alternating rounds of (c) and (d), text`,
            `pairs under 100% sets: memcaslap -c ${s.setClients.join(' and -c ')}, same keys and values`,
          ]
        : []),
      ...(s.parts.includes('resync')
        ? [`full copy of ${s.resyncItems.toLocaleString('en-US')} items, client load around it in ${s.resyncSegmentSeconds} s memcaslap runs`]
        : []),
    ].join('; '),
  };
}

interface Collected {
  runs: Run[];
  rss: RssRow[];
  lag: LagReport;
  cost: CostRound[];
}

/** CPU µs per request of each process over a load run, from /proc tick counts taken before and after it. */
function cpuPerRequest(target: Target, before: Array<number | null>, ops: number): Run['cpuUsPerRequest'] {
  return target.roles.map((r, i) => {
    const start = before[i];
    const end = cpuTicks(r.proc.pid);
    const us = start === null || end === null || ops <= 0 ? null : ((end - start) * 1e6) / CLOCK_TICKS_PER_SECOND / ops;
    return { role: r.role, us };
  });
}

/**
 * Starts one target, runs each protocol's warm-up and measured load against
 * it, records peak RSS, stops it. `during` runs extra work (the lag run) on
 * the same processes before they stop.
 */
async function benchTarget(
  id: TargetId,
  start: () => Promise<Target>,
  protocols: Protocol[],
  cfg: string,
  into: Collected,
  during?: (target: Target) => Promise<void>,
): Promise<boolean> {
  let target: Target;
  try {
    log(`${id}: starting`);
    target = await start();
  } catch (error) {
    const message = (error as Error).message.split('\n')[0];
    log(`${id}: could not start: ${message}`);
    const note = id === 'd' ? `not available: ${message}` : `failed to start: ${message}`;
    for (const protocol of protocols) into.runs.push({ target: id, protocol, result: null, note });
    if (id === 'd') into.lag.unavailable = note;
    return id === 'd';
  }
  let ok = true;
  try {
    for (const protocol of protocols) {
      const load: LoadOptions = {
        port: target.clientPort,
        seconds: settings.seconds,
        threads: settings.threads,
        concurrency: settings.concurrency,
        binary: protocol === 'binary',
      };
      try {
        // Warm-up: fills the cache so gets hit, and lets V8 optimise memrepl's hot paths.
        log(`${id} ${protocol}: warm-up ${settings.warmup} s`);
        await runMemcaslap(cfg, { ...load, seconds: settings.warmup });
        log(`${id} ${protocol}: measuring ${settings.seconds} s`);
        const ticks = target.roles.map((r) => cpuTicks(r.proc.pid));
        const result = await runMemcaslap(cfg, load);
        log(`${id} ${protocol}: ${result.tps} TPS`);
        into.runs.push({ target: id, protocol, result, cpuUsPerRequest: cpuPerRequest(target, ticks, result.ops) });
      } catch (error) {
        ok = false;
        const message = (error as Error).message;
        log(`${id} ${protocol}: failed: ${message}`);
        into.runs.push({ target: id, protocol, result: null, note: `failed: ${message.split('\n')[0].slice(0, 200)}` });
      }
    }
    if (during) await during(target);
  } finally {
    for (const row of peakRss(target)) into.rss.push({ target: id, ...row });
    await stopTarget(target);
  }
  return ok;
}

/** paced-load in its own process: one JSON line, or why not. */
async function pacedLoad(options: PacedOptions): Promise<PacedResult | string> {
  const run = await runBounded('paced-load', process.execPath, [path.join(__dirname, 'paced-load.js'), JSON.stringify(options)], (options.seconds + 90) * 1000);
  const line = run.stdout.trim().split('\n').pop() ?? '';
  if (!line.startsWith('{')) return `paced load failed (${run.status}): ${run.stderr.trim().slice(-500)}`;
  return JSON.parse(line) as PacedResult;
}

/** The two lag runs' shapes, the same for every pair: probes only, then probes alongside a fixed-rate load. */
const IDLE_LAG = { rate: 0, connections: 1, keys: 0, probeIntervalMs: 5 };
const PACED_LAG = { connections: 4, keys: 10000, probeIntervalMs: 10 };

/** What paced-load needs of a pair: where A takes clients, B's memcached, and A's /metrics if it has one. */
function lagBase(target: Target, peerMemcachedPort: number) {
  return {
    clientPort: target.clientPort,
    metricsPort: target.metricsPort,
    peerMemcachedPort,
    seconds: settings.lagSeconds,
    valueBytes: settings.workload.valueBytes,
    setRatio: settings.workload.setRatio,
  };
}

/**
 * Lag on the idle pair (probes only), then at half of (d)'s saturation from
 * a separate process, with A's histogram over exactly that run.
 */
async function measureLag(target: Target, into: Collected): Promise<void> {
  const saturation = into.runs.find((r) => r.target === 'd' && r.protocol === 'text')?.result?.tps;
  if (!saturation || target.metricsPort === undefined || target.peerMemcachedPort === undefined) {
    into.lag.unavailable = 'no saturation figure for (d) to derive the fixed rate from';
    return;
  }
  const base = lagBase(target, target.peerMemcachedPort);
  log(`d: idle lag, probes only, for ${settings.lagSeconds} s`);
  const idle = await pacedLoad({ ...base, ...IDLE_LAG });
  if (typeof idle === 'string') into.lag.idleUnavailable = idle;
  else into.lag.idle = idle;
  const rate = Math.round(saturation / 2);
  log(`d: lag run at ${rate} req/s for ${settings.lagSeconds} s`);
  const paced = await pacedLoad({ ...base, ...PACED_LAG, rate });
  if (typeof paced === 'string') {
    into.lag.unavailable = paced;
    return;
  }
  into.lag.targetRate = rate;
  into.lag.paced = paced;
  into.lag.metric = paced.lagMetricMs;
}

/**
 * The same two lag runs on a fresh repcached pair, after (d) has stopped (one
 * pair at a time), at the rate (d)'s run used: the same probe and the same
 * offered load. repcached applies a write in one process where a memrepl pair
 * wakes B's memrepl and then B's memcached, so this is what the machine's
 * process wake-ups cost, measured in the same run. Records why when it cannot run.
 */
async function measureRepcachedLag(repcached: RepcachedInfo, lag: LagReport): Promise<void> {
  if ('unavailable' in repcached) {
    lag.repcachedUnavailable = repcached.unavailable;
    return;
  }
  const rate = lag.targetRate;
  if (rate === undefined || !lag.paced) {
    lag.repcachedUnavailable = "(d)'s lag run did not complete, so there is no fixed rate to repeat";
    return;
  }
  let target: Target;
  try {
    log('repcached pair: starting, for the lag reference');
    target = await repcachedPair(repcached.bin);
  } catch (error) {
    lag.repcachedUnavailable = `failed to start: ${(error as Error).message.split('\n')[0].slice(0, 300)}`;
    log(`repcached pair: ${lag.repcachedUnavailable}`);
    return;
  }
  try {
    const base = lagBase(target, target.peerMemcachedPort!);
    log(`repcached pair: idle lag, probes only, for ${settings.lagSeconds} s`);
    const idle = await pacedLoad({ ...base, ...IDLE_LAG });
    if (typeof idle === 'string') lag.repcachedIdleUnavailable = idle;
    else lag.repcachedIdle = idle;
    log(`repcached pair: lag run at ${rate} req/s for ${settings.lagSeconds} s`);
    const paced = await pacedLoad({ ...base, ...PACED_LAG, rate });
    if (typeof paced === 'string') lag.repcachedPacedUnavailable = paced;
    else lag.repcachedPaced = paced;
  } finally {
    await stopTarget(target);
  }
}

/**
 * The plain proxy (c) and the pair (d) again, text only, on fresh processes,
 * alternating: one run of each swings by 10-40% on a shared machine (three
 * rounds gave 0.54×, 0.95× and 0.80× in one run), so the replication cost's
 * verdict takes the median of these rounds' ratios, five by default.
 */
async function measureCost(cfg: string, into: Collected): Promise<void> {
  const once = async (id: TargetId, start: () => Promise<Target>): Promise<number | null> => {
    const collected: Collected = { runs: [], rss: [], lag: {}, cost: [] };
    await benchTarget(id, start, ['text'], cfg, collected);
    return collected.runs[0]?.result?.tps ?? null;
  };
  for (let round = 1; round <= settings.costRounds; round++) {
    log(`replication cost: round ${round} of ${settings.costRounds}`);
    const plain = await once('c', memrepl);
    const pair = await once('d', replicatedPair);
    into.cost.push({ plain, pair });
  }
}

/** Temp dir for generated configs and logs; removed however the run ends. */
let workDir: string | null = null;
function removeWorkDir(): void {
  if (workDir) fs.rmSync(workDir, { recursive: true, force: true });
  workDir = null;
}

async function main(): Promise<void> {
  preflight();
  // Told at the start, not minutes later when the rows come: the run goes on without them.
  const repcached = findRepcached();
  if ('unavailable' in repcached && settings.parts.includes('throughput')) {
    process.stderr.write(`bench: repcached pair rows skipped (${repcached.unavailable}): ${REPCACHED_HINT}\n`);
  }
  const env = describeEnvironment(repcached);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'memrepl-bench-'));
  workDir = work;
  const into: Collected = { runs: [], rss: [], lag: {}, cost: [] };
  let resync: ResyncReport | null = null;
  let sets: SetPairsReport | null = null;
  let ok = true;
  try {
    const cfg = writeWorkload(work, settings.workload);
    if (settings.parts.includes('throughput')) {
      ok = (await benchTarget('a', memcachedDirect, ['text', 'binary'], cfg, into)) && ok;
      ok = (await benchTarget('b', () => twemproxy(work), ['text'], cfg, into)) && ok;
      into.runs.push({ target: 'b', protocol: 'binary', result: null, note: 'not supported by twemproxy' });
      ok = (await benchTarget('c', memrepl, ['text', 'binary'], cfg, into)) && ok;
      // (d) being unavailable is reported, not fatal: replication may not be built yet.
      await benchTarget('d', replicatedPair, ['text', 'binary'], cfg, into, async (target) => {
        try {
          await measureLag(target, into);
        } catch (error) {
          into.lag.unavailable = `lag run failed: ${(error as Error).message}`;
        }
      });
      // (d) has stopped: its lag reference on a repcached pair, never two pairs at once.
      try {
        await measureRepcachedLag(repcached, into.lag);
      } catch (error) {
        into.lag.repcachedUnavailable = `lag run failed: ${(error as Error).message}`;
      }
      await measureCost(cfg, into);
      // Like (d): a pair that cannot start or replicate is reported in its row, not fatal; repcached may not be built.
      sets = await runSetPairs({
        repcached,
        cfg: writeWorkload(work, { ...settings.workload, setRatio: 1 }, 'memcaslap-sets.cfg'),
        clientCounts: settings.setClients,
        seconds: settings.seconds,
        warmup: settings.warmup,
        threads: settings.threads,
        keyBytes: settings.workload.keyBytes,
        valueBytes: settings.workload.valueBytes,
        log,
      });
    }
    if (settings.parts.includes('resync')) {
      if (settings.resyncCpuProf) fs.mkdirSync(settings.resyncCpuProf, { recursive: true });
      resync = await runResync({
        items: settings.resyncItems,
        keyBytes: settings.workload.keyBytes,
        valueBytes: settings.workload.valueBytes,
        segmentSeconds: settings.resyncSegmentSeconds,
        beforeSegments: 3,
        threads: settings.threads,
        concurrency: settings.concurrency,
        cfg,
        cpuProfDir: settings.resyncCpuProf,
        log,
      });
      // Like (d): a resync that cannot run is reported in the document, a broken copy fails the run.
      if (resync.idle?.error || resync.loaded?.error) ok = false;
    }
  } finally {
    await stopAll();
    removeWorkDir();
  }
  // Keep the table's order stable: by target, text before binary.
  into.runs.sort((x, y) => x.target.localeCompare(y.target) || (x.protocol === 'text' ? -1 : 1) - (y.protocol === 'text' ? -1 : 1));
  const markdown = renderMarkdown({ env, parts: settings.parts, runs: into.runs, rss: into.rss, lag: into.lag, cost: into.cost, sets, resync });
  process.stdout.write(`${markdown}\n`);
  if (settings.out) {
    fs.mkdirSync(path.dirname(settings.out), { recursive: true });
    fs.writeFileSync(settings.out, markdown);
    log(`written to ${path.relative(process.cwd(), settings.out) || settings.out}`);
  } else {
    log('partial run (BENCH_ONLY): docs/bench.md left as it is; set BENCH_OUT to write this report');
  }
  if (!ok) process.exitCode = 1;
}

// Whatever happens, nothing the bench started outlives it.
process.on('exit', () => {
  killAllNow();
  removeWorkDir();
});
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    log(`${signal}: stopping everything the bench started`);
    stopAll(1000).finally(() => process.exit(130));
  });
}

main().catch((error: Error) => {
  log(`failed: ${error.stack ?? error.message}`);
  stopAll(1000).finally(() => process.exit(1));
});
