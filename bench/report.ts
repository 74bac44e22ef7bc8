/**
 * Turns the measurements into one markdown document: printed to stdout and
 * written to docs/bench.md, so the committed figures and what a developer
 * sees after `npm run bench` are the same text.
 */
import type { LoadResult } from './memcaslap';
import type { PacedResult } from './paced-load';
import type { CopyRun, ResyncReport } from './resync';
import type { PairKind, SetPairsReport, SetRun } from './set-pairs';
import { shownPath } from './procs';

export type TargetId = 'a' | 'b' | 'c' | 'd';
export type Protocol = 'text' | 'binary';

export const TARGET_NAMES: Record<TargetId, string> = {
  a: '(a) memcached direct',
  b: '(b) twemproxy → memcached',
  c: '(c) memrepl → memcached',
  d: '(d) memrepl pair, replicating',
};

export const PAIR_NAMES: Record<PairKind, string> = {
  memrepl: 'memrepl pair (2 × memcached + 2 × memrepl)',
  repcached: 'repcached pair (2 × repcached)',
};

export interface Run {
  target: TargetId;
  protocol: Protocol;
  result: LoadResult | null;
  /** Why there is no result (failed, unsupported, not available). */
  note?: string;
  /** User + system CPU per completed request of each of the target's processes over the measured run. */
  cpuUsPerRequest?: Array<{ role: string; us: number | null }>;
}

/** One round of the alternating plain-proxy / pair runs: text TPS of each, null when it failed. */
export interface CostRound {
  plain: number | null;
  pair: number | null;
}

export interface RssRow {
  target: TargetId;
  role: string;
  kib: number | null;
}

export interface LagReport {
  /** Probes only, on the idle pair (no other load), or why not. */
  idle?: PacedResult;
  idleUnavailable?: string;
  /** Set when the lag at half saturation could not be measured. */
  unavailable?: string;
  targetRate?: number;
  paced?: PacedResult;
  /** From A's memrepl_replication_lag_seconds over the paced run, in ms; null if the metric is absent. */
  metric?: { samples: number; p50: number; p99: number } | null;
  /**
   * The same two runs on a repcached pair (same probe, same intervals, the
   * paced run at targetRate), after (d) stopped: a same-run reference for the
   * machine's process wake-ups. Each run's result, or why it has none.
   */
  repcachedIdle?: PacedResult;
  repcachedIdleUnavailable?: string;
  repcachedPaced?: PacedResult;
  repcachedPacedUnavailable?: string;
  /** Why the repcached pair's lag was not measured at all (no REPCACHED_BIN, (d)'s lag did not run, the pair did not start). */
  repcachedUnavailable?: string;
}

export interface Environment {
  date: string;
  command: string;
  commit: string;
  cpu: string;
  kernel: string;
  /** Other work on the machine skews every figure: recorded so a reader can judge. */
  loadAverage: string;
  node: string;
  memcached: string;
  nutcracker: string;
  /** REPCACHED_BIN's version, or why there is none. */
  repcached: string;
  memcaslap: string;
  settings: string;
}

/** What a run measured: everything, or one part (BENCH_ONLY). */
export type Part = 'throughput' | 'resync';

export interface Report {
  env: Environment;
  parts: Part[];
  runs: Run[];
  rss: RssRow[];
  lag: LagReport;
  cost: CostRound[];
  /** 100% sets, memrepl pair against repcached pair (part of the throughput part). */
  sets: SetPairsReport | null;
  resync: ResyncReport | null;
}

const fmtInt = (n: number) => Math.round(n).toLocaleString('en-US');
const fmt = (n: number, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : '—');
const ratio = (x: number | undefined, base: number | undefined) => (x !== undefined && base !== undefined && base > 0 ? `${(x / base).toFixed(2)}×` : '—');

function tpsOf(runs: Run[], target: TargetId, protocol: Protocol): number | undefined {
  return runs.find((r) => r.target === target && r.protocol === protocol)?.result?.tps;
}

/** CPU seconds of every process of a set-pair row, if all were read. */
function cpuTotal(x: SetRun): number | undefined {
  return x.processes.length > 0 && x.processes.every((p) => p.cpuSeconds !== null) ? x.processes.reduce((n, p) => n + (p.cpuSeconds ?? 0), 0) : undefined;
}

function perSet(x: SetRun, seconds: number | undefined): number | undefined {
  return seconds !== undefined && x.result && x.result.ops > 0 ? (seconds * 1e6) / x.result.ops : undefined;
}

/** Whole-pair CPU µs per set of a set-pair row. */
const usPerSet = (x: SetRun) => perSet(x, cpuTotal(x));

function cpuOf(run: Run | undefined, role: string): number | undefined {
  return run?.cpuUsPerRequest?.find((p) => p.role === role)?.us ?? undefined;
}

function cpuByProcess(run: Run): string {
  if (!run.cpuUsPerRequest) return '—';
  return run.cpuUsPerRequest.map((p) => `${p.role} ${p.us === null ? '—' : fmt(p.us, 1)}`).join('; ');
}

/** The median of the rounds' pair / plain ratios, and how many rounds it is of (those where both ran). */
function medianCost(rounds: CostRound[]): { ratio: number; of: number } | undefined {
  const ratios = rounds
    .filter((x) => x.plain !== null && x.pair !== null && x.plain > 0)
    .map((x) => x.pair! / x.plain!)
    .sort((x, y) => x - y);
  if (ratios.length === 0) return undefined;
  const mid = Math.floor(ratios.length / 2);
  return { ratio: ratios.length % 2 === 1 ? ratios[mid] : (ratios[mid - 1] + ratios[mid]) / 2, of: ratios.length };
}

function verdict(ok: boolean | undefined): string {
  return ok === undefined ? 'not measured' : ok ? '**met**' : '**missed**';
}

export function renderMarkdown(r: Report): string {
  const out: string[] = [];
  const e = r.env;
  out.push('# memrepl benchmark', '');
  out.push(
    'Generated by `npm run bench` (bench/run.ts); this file is overwritten on every full run (a `BENCH_ONLY=...` run only prints its part). ' +
      'Load: memcaslap (libmemcached-tools, C), the same mix against every target, each target on fresh processes on 127.0.0.1. ' +
      'All processes (load generator included) share one machine, so absolute figures depend on it; the ratios are the point.',
    '',
  );
  out.push('| | |', '|---|---|');
  out.push(`| Date | ${e.date} |`);
  out.push(`| Command | \`${e.command}\` |`);
  out.push(`| Commit | ${e.commit} |`);
  out.push(`| CPU | ${e.cpu} |`);
  out.push(`| Kernel | ${e.kernel} |`);
  out.push(`| Load average at start (1/5/15 min) | ${e.loadAverage} |`);
  out.push(`| Node | ${e.node} |`);
  out.push(`| memcached | ${e.memcached} |`);
  out.push(`| twemproxy | ${e.nutcracker} |`);
  out.push(`| repcached | ${e.repcached} |`);
  out.push(`| Load generator | ${e.memcaslap} |`);
  out.push(`| Settings | ${e.settings} |`);
  out.push('');
  if (!r.parts.includes('throughput')) {
    out.push(`Only part of the bench ran (BENCH_ONLY=${r.parts.join(',')}).`, '');
  } else {
    renderThroughput(r, out);
    renderSetPairs(r.sets, e, out);
    renderTargets(r, out);
  }
  if (r.parts.includes('resync')) renderResync(r.resync, out);
  return out.join('\n');
}

function renderThroughput(r: Report, out: string[]): void {
  out.push('## Throughput and latency', '');
  out.push('Latency is per request as memcaslap sees it, in µs; p50/p99 are interpolated from its log2 histogram (approximate).', '');
  out.push("CPU: user + system time of each of the target's processes over the measured run (`/proc/<pid>/stat`), per request memcaslap completed.", '');
  out.push('| Target | Protocol | TPS | vs memcached | vs twemproxy | avg µs | p50 µs | p99 µs | max µs | get misses | CPU µs per request, by process |');
  out.push('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|');
  for (const run of r.runs) {
    const name = TARGET_NAMES[run.target];
    const res = run.result;
    if (!res) {
      out.push(`| ${name} | ${run.protocol} | ${run.note ?? 'no result'} | | | | | | | | |`);
      continue;
    }
    const l = res.latencyUs;
    out.push(
      `| ${name} | ${run.protocol} | ${fmtInt(res.tps)} | ${ratio(res.tps, tpsOf(r.runs, 'a', run.protocol))} | ` +
        `${ratio(res.tps, tpsOf(r.runs, 'b', run.protocol))} | ${l ? fmtInt(l.avg) : '—'} | ${l ? fmtInt(l.p50) : '—'} | ` +
        `${l ? fmtInt(l.p99) : '—'} | ${l ? fmtInt(l.max) : '—'} | ${fmtInt(res.getMisses)} | ${cpuByProcess(run)} |`,
    );
  }
  out.push('');

  out.push('## Replication lag', '');
  const lag = r.lag;
  out.push(
    "End-to-end probe: a set through node A, then `get` on node B's memcached back to back until the value is there, from the moment A answered STORED; " +
      'one probe at a time, from bench/paced-load.ts in its own process. Idle: probes only (5 ms apart), nothing else on the pair.',
    '',
  );
  if (lag.paced) {
    const p = lag.paced;
    out.push(
      `At half saturation: fixed-rate load on node A alongside the probes (10 ms apart), 90% get / 10% set: target ${fmtInt(lag.targetRate ?? 0)} req/s ` +
        `(half of (d)'s measured text saturation), achieved ${fmtInt(p.achievedRate)} req/s, ${fmtInt(p.errors)} errors, ${fmtInt(p.shed)} shed.`,
      '',
    );
  }
  out.push(
    "The repcached pair rows are the same two runs on a fresh repcached pair after (d) stopped (set through repcached-a, gets on repcached-b's own port; " +
      "same probe, same intervals, the same fixed rate), a same-run reference for what this machine's process wake-ups cost: " +
      "repcached applies a write in one process, where a memrepl pair's write wakes B's memrepl and then B's memcached. " +
      'The lag targets below stay absolute; the reference only shows how much of the tail the machine accounts for.',
    '',
  );
  const rp = lag.repcachedPaced;
  if (rp) {
    out.push(
      `repcached pair at the same fixed rate: target ${fmtInt(lag.targetRate ?? 0)} req/s, achieved ${fmtInt(rp.achievedRate)} req/s, ` +
        `${fmtInt(rp.errors)} errors, ${fmtInt(rp.shed)} shed.`,
      '',
    );
  }
  const notes = [
    ['(d), idle', lag.idle],
    ['(d), half saturation', lag.paced],
    ['repcached pair, idle', lag.repcachedIdle],
    ['repcached pair, same fixed rate', rp],
  ] as const;
  for (const [label, p] of notes) if (p?.note) out.push(`Note (${label}): ${p.note}.`, '');
  out.push('| Load | Source | samples | p50 ms | p99 ms |', '|---|---|---:|---:|---:|');
  const probeRow = (load: string, source: string, p: PacedResult) =>
    p.probeLagMs
      ? `| ${load} | ${source} | ${fmtInt(p.probes)} | ${fmt(p.probeLagMs.p50, 2)} | ${fmt(p.probeLagMs.p99, 2)} |`
      : `| ${load} | ${source} | ${fmtInt(p.probes)} (${fmtInt(p.probeTimeouts)} timed out) | | |`;
  const mine = 'memrepl pair (d), end-to-end probe';
  const theirs = 'repcached pair, end-to-end probe (same probe)';
  const theirRow = (load: string, p: PacedResult | undefined, why: string | undefined) => {
    if (lag.repcachedUnavailable) return;
    out.push(p ? probeRow(load, theirs, p) : `| ${load} | repcached pair: not available: ${why ?? 'not run'} | | | |`);
  };
  if (lag.idle) out.push(probeRow('idle', mine, lag.idle));
  else out.push(`| idle | not available: ${lag.idleUnavailable ?? 'not run'} | | | |`);
  theirRow('idle', lag.repcachedIdle, lag.repcachedIdleUnavailable);
  if (lag.unavailable || !lag.paced) {
    out.push(`| half saturation | not available: ${lag.unavailable ?? 'not run'} | | | |`);
    theirRow('same fixed rate', lag.repcachedPaced, lag.repcachedPacedUnavailable);
  } else {
    out.push(probeRow('half saturation', mine, lag.paced));
    theirRow('same fixed rate', lag.repcachedPaced, lag.repcachedPacedUnavailable);
    out.push(
      lag.metric
        ? `| half saturation | node A \`memrepl_replication_lag_seconds\` (write → peer's ack) | ${fmtInt(lag.metric.samples)} | ${fmt(lag.metric.p50, 2)} | ${fmt(lag.metric.p99, 2)} |`
        : '| half saturation | node A `memrepl_replication_lag_seconds`: absent from /metrics | | | |',
    );
  }
  if (lag.repcachedUnavailable) out.push(`| idle, same fixed rate | repcached pair not measured: ${lag.repcachedUnavailable} | | | |`);
  out.push('');

  out.push('## Replication cost, alternating rounds', '');
  out.push(
    "Text protocol, the mix above: the plain proxy (c) and the pair (d), each on fresh processes with its own warm-up, alternating, so that the ratio is a median and not one run's luck.",
    '',
  );
  out.push('| Round | (c) plain TPS | (d) pair TPS | d / c |', '|---:|---:|---:|---:|');
  r.cost.forEach((round, i) => {
    const show = (x: number | null) => (x === null ? 'failed' : fmtInt(x));
    out.push(`| ${i + 1} | ${show(round.plain)} | ${show(round.pair)} | ${ratio(round.pair ?? undefined, round.plain ?? undefined)} |`);
  });
  const median = medianCost(r.cost);
  out.push(`| median | | | ${median === undefined ? '—' : `${median.ratio.toFixed(2)}×`} |`, '');

  out.push('## Peak memory (VmHWM)', '');
  out.push('| Target | Process | Peak RSS MiB |', '|---|---|---:|');
  for (const row of r.rss) out.push(`| ${TARGET_NAMES[row.target]} | ${row.role} | ${row.kib === null ? '—' : fmt(row.kib / 1024)} |`);
  out.push('');

  out.push('## Notes', '');
  out.push('- twemproxy has no binary-protocol support (memcached text protocol only), so (b) has no binary row.');
  out.push(
    '- memcaslap `--tps` does not throttle (it computes ops per µs in integer arithmetic, which rounds to 0), so the fixed-rate load for the lag comes from bench/paced-load.ts in its own process.',
  );
  out.push(
    "- (c) runs with `-X 0` (replication off): the plain proxy. (d) is node A of a pair (`-X <port>`, B started with `-x 127.0.0.1:<A's port>`), checked to replicate before it is measured.",
  );
  out.push('- memrepl and twemproxy are single-threaded, memcached runs 4 worker threads; memcaslap runs with the thread count shown above on the same CPUs.');
  out.push("- (d) sends all load to node A; node B applies A's records to its own memcached on the same machine, so replication's CPU cost is included.");
  out.push('');
}

/** How to build the repcached the comparison runs against: printed in the report so it survives every regeneration. */
const REPCACHED_BUILD = [
  '# memcached 1.4.13 with the repcached 2.3.1 patch applied (repcached-2.3.1-1.4.13.patch), as one tree',
  'git clone https://github.com/kspe/repcached $HOME/repcached',
  'apt-get update && apt-get install -y libevent-dev build-essential autoconf automake',
  'cd $HOME/repcached',
  "make distclean                      # the repository ships another machine's configure output",
  "sed -i 's/ -Werror//' configure.ac configure            # today's glibc deprecates sigignore(); in both, since a fresh",
  "                                    # clone's timestamps make `make` run autoconf and configure again",
  './configure --enable-replication CFLAGS="-O2 -fcommon"   # -fcommon for 2012 C sources (GCC 12 also builds it without)',
  'make                                # the binary: $HOME/repcached/memcached',
];

function renderSetPairs(sp: SetPairsReport | null, e: Environment, out: string[]): void {
  out.push('## memrepl pair vs repcached pair (100% sets)', '');
  if (!sp) {
    out.push('Not run.', '');
    return;
  }
  const rc = sp.repcached;
  out.push(
    `memcaslap on node A's client port, text protocol, 100% sets (${sp.keyBytes}-byte keys, ${sp.valueBytes}-byte values), ` +
      `${sp.clientCounts.join(' and ')} connections (\`-c\`) on ${sp.threads} thread${sp.threads === 1 ? '' : 's'}, ${sp.warmup} s warm-up then ${sp.seconds} s measured; ` +
      'every row on a fresh pair, memrepl and repcached alternating, in the same run as the rows above. ' +
      "Node B replicates A's sets: for the memrepl pair B's memrepl applies them to B's memcached, for the repcached pair B's repcached applies them itself.",
    '',
  );
  if ('unavailable' in rc) {
    out.push(`**repcached pair not measured** (${rc.unavailable}): build it as below and run \`REPCACHED_BIN=$HOME/repcached/memcached npm run bench\`.`, '');
  } else {
    out.push(
      `repcached: \`${shownPath(rc.bin)}\` (${rc.version}), started as A \`-l 127.0.0.1 -p <a> -X <r>\` and B \`-l 127.0.0.1 -p <b> -x 127.0.0.1 -X <r>\`.`,
      '',
    );
  }
  out.push(
    `Measured ${e.date.slice(0, 10)} by \`${e.command}\` (the run at the top of this file; load average at its start ${e.loadAverage}) ` +
      `on ${e.cpu.split(' ×')[0]} CPUs that other test runs may have been using: indicative figures.`,
    '',
  );

  const find = (pair: PairKind, clients: number) => sp.runs.find((x) => x.pair === pair && x.clients === clients);
  const other = (run: SetRun) => find(run.pair === 'memrepl' ? 'repcached' : 'memrepl', run.clients);
  // A row whose node B did not get every set is no fair base: it did less work per set.
  const versus = (run: SetRun, value: (x: SetRun) => number | undefined) => {
    if (run.pair !== 'memrepl') return '';
    const rep = other(run);
    if (!rep) return '—';
    const incomplete = [run, rep].filter((x) => x.result && !x.caughtUp).map((x) => x.pair);
    return `${ratio(value(run), value(rep))}${incomplete.length > 0 ? ` (${incomplete.join(', ')}: B did not get every set)` : ''}`;
  };
  const tps = (x: SetRun) => x.result?.tps;
  const side = (x: SetRun, suffix: string) => {
    const procs = x.processes.filter((p) => p.role.endsWith(suffix));
    return procs.length > 0 && procs.every((p) => p.cpuSeconds !== null) ? procs.reduce((n, p) => n + (p.cpuSeconds ?? 0), 0) : undefined;
  };
  const rows = sp.clientCounts.flatMap((c) => (['memrepl', 'repcached'] as PairKind[]).map((p) => find(p, c)).filter((x): x is SetRun => x !== undefined));

  out.push('### Throughput', '');
  out.push(
    'Latency per set as memcaslap sees it, in µs (p50/p99 from its log2 histogram, approximate). "Stored on A / applied on B": increase of `total_items` ' +
      "on node A's memcached (repcached) and on node B's over the measured window, B counted once it had caught up.",
    '',
  );
  out.push(
    '| Pair | connections | sets/s | memrepl / repcached | avg µs | p50 µs | p99 µs | max µs | stored on A | applied on B | B caught up after load end |',
  );
  out.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|');
  for (const run of rows) {
    const res = run.result;
    if (!res) {
      out.push(`| ${PAIR_NAMES[run.pair]} | ${run.clients} | ${run.note ?? 'no result'} | | | | | | | | |`);
      continue;
    }
    const l = res.latencyUs;
    out.push(
      `| ${PAIR_NAMES[run.pair]} | ${run.clients} | ${fmtInt(res.tps)} | ${versus(run, tps)} | ${l ? fmtInt(l.avg) : '—'} | ${l ? fmtInt(l.p50) : '—'} | ` +
        `${l ? fmtInt(l.p99) : '—'} | ${l ? fmtInt(l.max) : '—'} | ${run.setsA === null ? '—' : fmtInt(run.setsA)} | ${run.setsB === null ? '—' : fmtInt(run.setsB)} | ` +
        `${run.drainMs === null ? '—' : run.caughtUp ? `${fmtInt(run.drainMs)} ms` : `**no** (stopped after ${fmtInt(run.drainMs)} ms)`} |`,
    );
  }
  if ('unavailable' in rc) out.push(`| ${PAIR_NAMES.repcached} | | not measured: ${rc.unavailable} | | | | | | | | |`);
  out.push('');

  out.push('### CPU per replicated set (whole pair)', '');
  out.push(
    "User + system CPU time (`/proc/<pid>/stat` utime + stime, 10 ms ticks) of every process of the pair, from the moment node B had applied the warm-up's sets " +
      "to the moment it had applied the measured run's, divided by the sets memcaslap completed. The load generator's own CPU is not in it. " +
      'Node A side: memcached-a + memrepl-a, or repcached-a; node B side likewise.',
    '',
  );
  out.push(
    '| Pair | connections | CPU s, whole pair | CPU µs per set | memrepl / repcached | node A side µs/set | node B side µs/set | by process: CPU s, peak RSS MiB |',
  );
  out.push('|---|---:|---:|---:|---:|---:|---:|---|');
  for (const run of rows) {
    if (!run.result || run.processes.length === 0) {
      out.push(`| ${PAIR_NAMES[run.pair]} | ${run.clients} | ${run.note ?? 'no result'} | | | | | |`);
      continue;
    }
    const total = cpuTotal(run);
    const byProcess = run.processes.map((p) => `${p.role} ${p.cpuSeconds === null ? '—' : fmt(p.cpuSeconds, 2)} s, ${mib(p.peakRssKiB)}`).join('; ');
    out.push(
      `| ${PAIR_NAMES[run.pair]} | ${run.clients} | ${total === undefined ? '—' : fmt(total, 2)} | ${fmtOpt1(usPerSet(run))}${run.caughtUp ? '' : ' (B short)'} | ${versus(run, usPerSet)} | ` +
        `${fmtOpt1(perSet(run, side(run, '-a')))} | ${fmtOpt1(perSet(run, side(run, '-b')))} | ${byProcess} |`,
    );
  }
  out.push('');

  const notes = rows.filter((x) => x.note && x.result);
  if (notes.length > 0) {
    out.push('Trouble seen in these rows:', '');
    for (const x of notes) out.push(`- ${PAIR_NAMES[x.pair]}, ${x.clients} connections: ${x.note}`);
    out.push('');
  }

  out.push('### Notes (memrepl vs repcached)', '');
  out.push(
    '- Figures from a shared machine (see the CPU count and the load average at the start in the table at the top; other test runs may have been running) are indicative: ' +
      'compare the two pairs within one run, not across runs.',
  );
  out.push(
    '- repcached is memcached 1.4.13 with the replication patch; the memrepl pair runs the stock memcached in the table at the top. ' +
      "Both run memcached's default 4 worker threads; memrepl is one Node.js event loop per node.",
  );
  out.push(
    '- repcached ships each write from its main thread through an in-memory queue (8192 entries by default, `-q`) to its peer, and the peer applies it on its own main thread; ' +
      'when the queue is full it drops the link (and prints `replication: can\'t create Q_ITEM`). "Applied on B" and the check after each row (a write through A read back from B) show whether that happened.',
  );
  out.push(
    "- memrepl does more per set than repcached: node A's memrepl records each write (with what conflict resolution and resync need), frames it and waits for node B's acknowledgement, " +
      "and node B's memrepl applies it through B's memcached (another process, another loopback round trip). The CPU rows say what that costs.",
  );
  out.push('');

  out.push('### Building repcached for this comparison', '');
  out.push(
    'Not part of this repository (nothing of repcached is copied into it); build it aside and point the bench at the binary. ' +
      'Without `REPCACHED_BIN` (or with a path that is not a repcached binary) the bench prints one line saying so and skips the repcached rows; the memrepl rows still run.',
    '',
  );
  out.push('```sh', ...REPCACHED_BUILD, '', 'REPCACHED_BIN=$HOME/repcached/memcached npm run bench', '```', '');
}

const fmtOpt1 = (n: number | undefined) => (n === undefined ? '—' : fmt(n, 1));

/** Targets of the full copy (issue 5). */
export const RESYNC_TARGET_ITEMS_PER_S = 200_000;
export const RESYNC_TARGET_RSS_BYTES = 200 * 1000 * 1000;
const OWN_KEYS_SLACK = 2;

const rateOf = (items: number | null, ms: number | null) => (items !== null && ms !== null && ms > 0 ? (items * 1000) / ms : undefined);
const mib = (kib: number | null | undefined) => (kib === null || kib === undefined ? '—' : fmt(kib / 1024));
const pct = (x: number | undefined, base: number | undefined) =>
  x !== undefined && base !== undefined && base > 0 ? `${x >= base ? '+' : '−'}${fmt((Math.abs(x - base) / base) * 100)}%` : '—';

function complete(run: CopyRun | null): boolean | undefined {
  if (!run || run.aItems === null || run.bItems === null || !run.sample) return undefined;
  return Math.abs(run.aItems - run.bItems) <= OWN_KEYS_SLACK && run.sample.wrong === 0 && run.sample.checked > 0;
}

function renderResync(rs: ResyncReport | null, out: string[]): void {
  out.push('## Full copy (marugoto)', '');
  if (!rs) {
    out.push('Not run.', '');
    return;
  }
  out.push(
    `${fmtInt(rs.items)} items (${rs.keyBytes}-byte keys, ${rs.valueBytes}-byte values, flags set) loaded straight into node A's memcached` +
      `${rs.fillSeconds !== null ? ` (pipelined \`ms ... q\`: ${fmt(rs.fillSeconds)} s, ${fmtInt(rs.items / rs.fillSeconds)} items/s)` : ''}; ` +
      "then an empty node B (fresh memcached and memrepl, `-x` A) links and A copies everything, paced only by its own clients' latency (`--resync-rate 0`: no cap, on both nodes). " +
      "Copy time: from B's `stats replication` showing `peer_up 1` to `copies_received 1` (polled every 10 ms); " +
      "A's `memrepl_resync_last_duration_seconds` (copy start → last item written to the link) alongside.",
    '',
  );
  if (rs.unavailable) {
    out.push(`Not available: ${rs.unavailable}`, '');
    return;
  }
  const rows: Array<[string, CopyRun | null]> = [
    ['idle (no client load)', rs.idle],
    ['under client load on A', rs.loaded],
  ];
  out.push(
    "| Copy | items sent (A) | B linked → copies_received 1 | items/s | A's metric | items/s (A's metric) | B linked → all on B's memcached | curr_items A / B | sample read back from B |",
    '|---|---:|---:|---:|---:|---:|---:|---:|---|',
  );
  for (const [label, run] of rows) {
    if (!run) {
      out.push(`| ${label} | not run | | | | | | | |`);
      continue;
    }
    if (run.error && run.linkedToDoneMs === null) {
      out.push(`| ${label} | failed: ${run.error} | | | | | | | |`);
      continue;
    }
    const items = run.itemsSent;
    const sample = run.sample
      ? run.sample.wrong === 0
        ? `${fmtInt(run.sample.checked)} of ${fmtInt(run.sample.checked)} match`
        : `**${fmtInt(run.sample.wrong)} of ${fmtInt(run.sample.checked)} wrong** (${run.sample.examples.join('; ')})`
      : '—';
    out.push(
      `| ${label} | ${items === null ? '—' : fmtInt(items)} | ${run.linkedToDoneMs === null ? '—' : `${fmt(run.linkedToDoneMs / 1000, 2)} s`} | ` +
        `${fmtOpt(rateOf(items, run.linkedToDoneMs))} | ${run.senderSeconds === null ? '—' : `${fmt(run.senderSeconds, 2)} s`} | ` +
        `${fmtOpt(rateOf(items, run.senderSeconds === null ? null : run.senderSeconds * 1000))} | ` +
        `${run.appliedMs === null ? '—' : `${fmt(run.appliedMs / 1000, 2)} s`} | ${run.aItems === null ? '—' : fmtInt(run.aItems)} / ${run.bItems === null ? '—' : fmtInt(run.bItems)} | ${sample} |`,
    );
    if (run.error) out.push(`| | ${run.error} | | | | | | | |`);
  }
  out.push('');

  const l = rs.load;
  out.push('### Client load on A before and during the copy', '');
  if (!l) {
    out.push('Not measured (the idle copy failed, or the loaded run did not get that far).', '');
  } else {
    out.push(
      `memcaslap on A's client port (text, the mix above) in back-to-back ${l.segmentSeconds} s runs: "before" with B linked and replicating, ` +
        '"during" the runs that fell entirely between the fresh B linking and `copies_received 1` ' +
        `(B replaced by an empty node while the load went on).${l.duringNote ? ` Note: ${l.duringNote}.` : ''} Latency in µs, p50/p99 from memcaslap's merged log2 histograms.`,
      '',
    );
    out.push('| Window | runs | TPS | avg µs | p50 µs | p99 µs | max µs |', '|---|---:|---:|---:|---:|---:|---:|');
    const row = (label: string, n: number, x: LoadResult | null) => {
      const lat = x?.latencyUs;
      out.push(
        `| ${label} | ${n} | ${x ? fmtInt(x.tps) : '—'} | ${lat ? fmtInt(lat.avg) : '—'} | ${lat ? fmtInt(lat.p50) : '—'} | ${lat ? fmtInt(lat.p99) : '—'} | ${lat ? fmtInt(lat.max) : '—'} |`,
      );
    };
    row('before the copy (B linked, replicating)', l.beforeSegments, l.before);
    row('during the copy', l.duringSegments, l.during);
    const b = l.before;
    const d = l.during;
    out.push(
      `| change | | ${pct(d?.tps, b?.tps)} | ${pct(d?.latencyUs?.avg, b?.latencyUs?.avg)} | ${pct(d?.latencyUs?.p50, b?.latencyUs?.p50)} | ` +
        `${pct(d?.latencyUs?.p99, b?.latencyUs?.p99)} | |`,
    );
    out.push('');
  }

  out.push('### Peak memory and CPU during the copies', '');
  out.push(
    "Peak RSS is VmHWM in MiB; CPU is user + system time between B linking and `copies_received 1`, in % of one core (memrepl is single-threaded: near 100% means its event loop is the limit; V8's GC threads can add a little over 100%).",
    '',
  );
  out.push('| Process | peak RSS, idle copy | peak RSS, copy under load | CPU, idle copy | CPU, copy under load |', '|---|---:|---:|---:|---:|');
  const roles = ['memrepl A (sending)', 'memrepl B (receiving)', 'memcached A', 'memcached B'];
  const cpu = (x: number | null | undefined) => (x === null || x === undefined ? '—' : `${fmtInt(x)}%`);
  roles.forEach((role, i) =>
    out.push(`| ${role} | ${mib(rs.idle?.rss[i]?.kib)} | ${mib(rs.loaded?.rss[i]?.kib)} | ${cpu(rs.idle?.cpuPercent[i])} | ${cpu(rs.loaded?.cpuPercent[i])} |`),
  );
  out.push('');

  out.push('### Targets (full copy)', '');
  out.push('| Target | Measured | Verdict |', '|---|---|---|');
  const idleRate = rs.idle ? rateOf(rs.idle.itemsSent, rs.idle.linkedToDoneMs) : undefined;
  out.push(
    `| copy ≥ ${fmtInt(RESYNC_TARGET_ITEMS_PER_S)} items/s with clients idle (idle copy, B linked → copies_received 1) | ${fmtOpt(idleRate, ' items/s')} | ` +
      `${verdict(idleRate === undefined ? undefined : idleRate >= RESYNC_TARGET_ITEMS_PER_S)} |`,
  );
  const before99 = rs.load?.before?.latencyUs?.p99;
  const during99 = rs.load?.during?.latencyUs?.p99;
  const ratio99 = before99 && during99 !== undefined ? during99 / before99 : undefined;
  out.push(
    `| client p99 on A during the copy ≤ 2× before it (the copy paces itself) | ${ratio99 === undefined ? '—' : `${fmtInt(before99!)} → ${fmtInt(during99!)} µs: ${fmt(ratio99, 2)}×`} | ` +
      `${verdict(ratio99 === undefined ? undefined : ratio99 <= 2)} |`,
  );
  const loadedRate = rs.loaded ? rateOf(rs.loaded.itemsSent, rs.loaded.linkedToDoneMs) : undefined;
  out.push(
    `| the copy under client load still progresses | ${fmtOpt(loadedRate, ' items/s')} | ${verdict(loadedRate === undefined ? undefined : loadedRate > 0 && complete(rs.loaded))} |`,
  );
  const memrepls = [rs.idle, rs.loaded].flatMap((run) => (run ? run.rss.slice(0, 2) : [])).filter((x) => x.kib !== null);
  const worst = memrepls.reduce<{ role: string; kib: number | null } | null>((w, x) => (w === null || (x.kib ?? 0) > (w.kib ?? 0) ? x : w), null);
  const worstBytes = worst?.kib ? worst.kib * 1024 : undefined;
  out.push(
    `| peak RSS of each memrepl < 200 MB during the copies | ${worstBytes === undefined ? '—' : `highest: ${worst!.role} ${fmt(worstBytes / 1e6)} MB (${fmt(worstBytes / 1048576)} MiB)`} | ` +
      `${verdict(worstBytes === undefined ? undefined : worstBytes < RESYNC_TARGET_RSS_BYTES)} |`,
  );
  for (const [label, run] of rows) {
    out.push(
      `| copy complete, ${label} (curr_items equal within memrepl's own ${OWN_KEYS_SLACK} keys; sample matches) | ${run?.aItems != null && run.bItems != null ? `A ${fmtInt(run.aItems)}, B ${fmtInt(run.bItems)}` : '—'} | ${verdict(complete(run))} |`,
    );
  }
  out.push('');

  out.push('### Notes (full copy)', '');
  out.push("- All four processes, and the load generator in the loaded run, share the machine's CPUs: B applying the copy competes with A sending it.");
  out.push(
    "- Items/s counts the items A's metric says it sent (`memrepl_resync_items_sent_total`); under load that includes the keys memcaslap had written. " +
      "`copies_received 1` arrives when the copy's end frame does; the last items may still be on their way into B's memcached, hence the separate \"all on B's memcached\" time (idle copy).",
  );
  out.push(
    `- Peak RSS: ${rs.rssReset ? "node A's VmHWM was reset (clear_refs) between the two copies, so each column is that copy's own peak" : "node A's figure for the loaded copy also covers the idle copy (VmHWM could not be reset)"}; B is a fresh pair of processes in each copy.`,
  );
  out.push(
    "- The copy runs twice over memcached's LRU (lru_crawler metadump; the second pass sends only what the first missed), so the crawler's time is included.",
  );
  if (rs.cpuProfDir) out.push(`- memrepl ran under \`node --cpu-prof\` (profiles in ${rs.cpuProfDir}), which slows it.`);
  out.push('');
}

const fmtOpt = (n: number | undefined, unit = '') => (n === undefined ? '—' : `${fmtInt(n)}${unit}`);

/** Set-pair throughput targets by connection count: memrepl / repcached. */
const SET_PAIR_TARGETS: Record<number, number> = { 4: 0.6, 32: 1.0 };
const CPU_PER_SET_TARGET = 2;
const COST_TARGET = 0.85;
const IDLE_LAG_P99_MS = 0.5;
const LOADED_LAG_P99_MS = 2;
const PAIR_RSS_TARGET_MIB = 150;

/** Every target but the full copy's (its own section has those), with its verdict. */
function renderTargets(r: Report, out: string[]): void {
  out.push('## Targets', '');
  out.push('| Target | Measured | Verdict |', '|---|---|---|');
  const row = (target: string, measured: string, ok: boolean | undefined) => out.push(`| ${target} | ${measured} | ${verdict(ok)} |`);
  const sp = r.sets;
  const rc = sp?.repcached;
  for (const [clientsText, want] of Object.entries(SET_PAIR_TARGETS)) {
    const clients = Number(clientsText);
    const mine = sp?.runs.find((x) => x.pair === 'memrepl' && x.clients === clients);
    const theirs = sp?.runs.find((x) => x.pair === 'repcached' && x.clients === clients);
    const name = `memrepl pair ≥ ${want.toFixed(1)}× repcached pair, 100% sets, ${clients} connections`;
    if (!sp || !sp.clientCounts.includes(clients)) row(name, 'not run (BENCH_SET_CLIENTS)', undefined);
    else if (rc && 'unavailable' in rc) row(name, `repcached not measured: ${rc.unavailable}`, undefined);
    else {
      const x = mine?.result?.tps;
      const y = theirs?.result?.tps;
      row(name, ratio(x, y), x !== undefined && y !== undefined && y > 0 ? x / y >= want : undefined);
    }
    const cpuName = `whole-pair CPU per replicated set ≤ ${CPU_PER_SET_TARGET}× repcached's, ${clients} connections`;
    if (sp && sp.clientCounts.includes(clients) && rc && !('unavailable' in rc)) {
      const x = mine ? usPerSet(mine) : undefined;
      const y = theirs ? usPerSet(theirs) : undefined;
      row(
        cpuName,
        x !== undefined && y !== undefined ? `${fmt(x)} / ${fmt(y)} µs: ${ratio(x, y)}` : '—',
        x !== undefined && y !== undefined ? x / y <= CPU_PER_SET_TARGET : undefined,
      );
    }
  }
  const c = tpsOf(r.runs, 'c', 'text');
  const b = tpsOf(r.runs, 'b', 'text');
  row('memrepl ≥ 1.0× twemproxy, the mix (text, c vs b)', ratio(c, b), c !== undefined && b !== undefined ? c >= b : undefined);
  const find = (target: TargetId) => r.runs.find((x) => x.target === target && x.protocol === 'text');
  const mineCpu = cpuOf(find('c'), 'memrepl');
  const theirCpu = cpuOf(find('b'), 'nutcracker');
  row(
    "memrepl's CPU per request ≤ twemproxy's, the mix (text, c's memrepl vs b's nutcracker)",
    mineCpu !== undefined && theirCpu !== undefined ? `${fmt(mineCpu)} / ${fmt(theirCpu)} µs: ${ratio(mineCpu, theirCpu)}` : '—',
    mineCpu !== undefined && theirCpu !== undefined ? mineCpu <= theirCpu : undefined,
  );
  const cost = medianCost(r.cost);
  row(
    `pair ≥ ${COST_TARGET}× the plain proxy (text, d / c, median of ${cost?.of ?? 0} alternating rounds of ${r.cost.length})`,
    cost === undefined ? '—' : `${cost.ratio.toFixed(2)}×`,
    cost === undefined ? undefined : cost.ratio >= COST_TARGET,
  );
  // Absolute targets; the repcached pair's figure from the same run is shown beside them, not judged.
  const lagMeasured = (mine: number | undefined, reference: PacedResult | undefined) => {
    if (mine === undefined) return '—';
    const theirs = reference?.probeLagMs?.p99;
    return `${fmt(mine, 2)} ms (${theirs === undefined ? 'repcached pair not measured' : `repcached pair, same run: ${fmt(theirs, 2)} ms`})`;
  };
  const idle = r.lag.idle?.probeLagMs?.p99;
  row(`idle lag p99 < ${IDLE_LAG_P99_MS} ms end to end`, lagMeasured(idle, r.lag.repcachedIdle), idle === undefined ? undefined : idle < IDLE_LAG_P99_MS);
  const loaded = r.lag.paced?.probeLagMs?.p99;
  row(
    `lag p99 < ${LOADED_LAG_P99_MS} ms end to end at half saturation`,
    lagMeasured(loaded, r.lag.repcachedPaced),
    loaded === undefined ? undefined : loaded < LOADED_LAG_P99_MS,
  );
  // Each node's memrepl at full load: (d) under the mix, and the set-pair rows under 100% sets.
  const peaks = [
    ...r.rss.filter((x) => x.target === 'd' && x.role.startsWith('memrepl')).map((x) => ({ where: `(d) ${x.role}`, kib: x.kib })),
    ...(sp?.runs ?? [])
      .filter((x) => x.pair === 'memrepl')
      .flatMap((x) =>
        x.processes.filter((p) => p.role.startsWith('memrepl')).map((p) => ({ where: `100% sets, ${x.clients} conns, ${p.role}`, kib: p.peakRssKiB })),
      ),
  ].filter((x): x is { where: string; kib: number } => x.kib !== null);
  const worst = peaks.reduce<{ where: string; kib: number } | undefined>((w, x) => (w === undefined || x.kib > w.kib ? x : w), undefined);
  row(
    `peak RSS of each memrepl of a pair at full load ≤ ${PAIR_RSS_TARGET_MIB} MiB (default backlog)`,
    worst ? `highest: ${fmt(worst.kib / 1024)} MiB (${worst.where})` : '—',
    worst ? worst.kib / 1024 <= PAIR_RSS_TARGET_MIB : undefined,
  );
  out.push('');
  if (r.parts.includes('resync')) out.push("The full copy's targets are in its own section below.", '');
}
