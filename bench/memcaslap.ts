/**
 * The load generator: memcaslap (libmemcached-tools' memaslap), a C program,
 * so the figures measure the target and not a JavaScript client's event loop.
 *
 * Latency: memcaslap only times requests when statistics are on (-S), and
 * then prints, per command type, min/max/avg and a log2 histogram of
 * microseconds where bucket i counts latencies in (2^(i-1), 2^i]. p50/p99 are
 * interpolated inside those buckets, so they are approximate (within a
 * factor of 2 at worst, usually much closer).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { runBounded } from './procs';

export interface Workload {
  keyBytes: number;
  valueBytes: number;
  setRatio: number;
}

export interface LoadOptions {
  port: number;
  seconds: number;
  threads: number;
  concurrency: number;
  binary: boolean;
}

export interface LoadResult {
  tps: number;
  ops: number;
  seconds: number;
  getMisses: number;
  latencyUs: { min: number; avg: number; p50: number; p99: number; max: number } | null;
  /** memcaslap's log2 histogram of all requests (bucket index → count), for merging runs. */
  log2Dist?: Array<[number, number]>;
}

/** memcaslap's -F file: key and value size distributions, and the get/set mix. */
export function writeWorkload(dir: string, w: Workload, name = 'memcaslap.cfg'): string {
  const file = path.join(dir, name);
  fs.writeFileSync(
    file,
    [
      '# key: min max proportion',
      'key',
      `${w.keyBytes} ${w.keyBytes} 1`,
      '# value: min max proportion',
      'value',
      `${w.valueBytes} ${w.valueBytes} 1`,
      '# cmd: type (0 set, 1 get) proportion',
      'cmd',
      `0 ${w.setRatio}`,
      `1 ${1 - w.setRatio}`,
      '',
    ].join('\n'),
  );
  return file;
}

export async function runMemcaslap(cfg: string, o: LoadOptions): Promise<LoadResult> {
  const args = [
    '-s',
    `127.0.0.1:${o.port}`,
    '-F',
    cfg,
    '-t',
    `${o.seconds}s`,
    '-T',
    String(o.threads),
    '-c',
    String(o.concurrency),
    // One statistics dump at the end: without -S memcaslap takes no timestamps at all.
    '-S',
    `${o.seconds}s`,
    ...(o.binary ? ['-B'] : []),
  ];
  // memcaslap stops by itself after -t; the extra time covers start-up and a
  // target that stops answering (it would otherwise wait forever).
  const { status, stdout, stderr } = await runBounded('memcaslap', 'memcaslap', args, (o.seconds + 30) * 1000);
  const parsed = parseMemcaslap(stdout);
  if (!parsed) {
    throw new Error(`memcaslap ${args.join(' ')} (${status}) printed no result: ${(stderr || stdout).trim().slice(-1500)}`);
  }
  return parsed;
}

export function parseMemcaslap(out: string): LoadResult | null {
  const summary = /Run time: ([\d.]+)s Ops: (\d+) TPS: (\d+)/.exec(out);
  if (!summary) return null;
  const misses = /get_misses: (\d+)/.exec(out);
  return {
    seconds: Number(summary[1]),
    ops: Number(summary[2]),
    tps: Number(summary[3]),
    getMisses: misses ? Number(misses[1]) : 0,
    ...parseLatency(out, 'Total'),
  };
}

/**
 * One result from several consecutive runs (segments of one load): ops and
 * seconds add up, histograms merge, so p50/p99 are those of every request of
 * every segment, not an average of per-segment quantiles.
 */
export function mergeResults(results: LoadResult[]): LoadResult | null {
  if (results.length === 0) return null;
  const ops = results.reduce((n, r) => n + r.ops, 0);
  const seconds = results.reduce((n, r) => n + r.seconds, 0);
  const dist = new Map<number, number>();
  for (const r of results) for (const [i, n] of r.log2Dist ?? []) dist.set(i, (dist.get(i) ?? 0) + n);
  const timed = results.filter((r) => r.latencyUs !== null);
  let latencyUs: LoadResult['latencyUs'] = null;
  if (timed.length === results.length && dist.size > 0) {
    const min = Math.min(...timed.map((r) => r.latencyUs!.min));
    const max = Math.max(...timed.map((r) => r.latencyUs!.max));
    const avg = timed.reduce((sum, r) => sum + r.latencyUs!.avg * r.ops, 0) / Math.max(1, ops);
    const q = (p: number) => Math.min(max, Math.max(min, log2Quantile(dist, p)));
    latencyUs = { min, avg, p50: q(0.5), p99: q(0.99), max };
  }
  return {
    ops,
    seconds,
    tps: seconds > 0 ? ops / seconds : 0,
    getMisses: results.reduce((n, r) => n + r.getMisses, 0),
    latencyUs,
    log2Dist: [...dist.entries()].sort((x, y) => x[0] - y[0]),
  };
}

function parseLatency(out: string, kind: string): Pick<LoadResult, 'latencyUs' | 'log2Dist'> {
  const start = out.indexOf(`${kind} Statistics (`);
  if (start < 0) return { latencyUs: null };
  const block = out.slice(start, out.indexOf('\n\n', out.indexOf('Log2 Dist:', start)));
  const field = (name: string) => {
    const m = new RegExp(`${name}:\\s+([\\d.]+)`).exec(block);
    return m ? Number(m[1]) : NaN;
  };
  // Rows look like "      4:    39846   145302    49158    67569": the row
  // label is the bucket index of its first column.
  const dist = new Map<number, number>();
  for (const row of block.slice(block.indexOf('Log2 Dist:')).split('\n').slice(1)) {
    const m = /^\s*(\d+):((?:\s+\d+)+)\s*$/.exec(row);
    if (!m) continue;
    m[2]
      .trim()
      .split(/\s+/)
      .forEach((count, i) => dist.set(Number(m[1]) + i, Number(count)));
  }
  const min = field('Min');
  const max = field('Max');
  const avg = field('Avg');
  if (![min, max, avg].every(Number.isFinite) || dist.size === 0) return { latencyUs: null };
  const q = (p: number) => Math.min(max, Math.max(min, log2Quantile(dist, p)));
  return { latencyUs: { min, avg, p50: q(0.5), p99: q(0.99), max }, log2Dist: [...dist.entries()] };
}

/** Quantile from memcaslap's buckets: bucket i holds values in (2^(i-1), 2^i], bucket 0 values ≤ 1. */
function log2Quantile(dist: Map<number, number>, p: number): number {
  const buckets = [...dist.entries()].sort((x, y) => x[0] - y[0]);
  const total = buckets.reduce((sum, [, n]) => sum + n, 0);
  const rank = p * total;
  let seen = 0;
  for (const [i, n] of buckets) {
    if (n > 0 && seen + n >= rank) {
      const low = i === 0 ? 0 : 2 ** (i - 1);
      const high = 2 ** i;
      return low + ((rank - seen) / n) * (high - low);
    }
    seen += n;
  }
  return NaN;
}
