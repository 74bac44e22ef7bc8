/**
 * The latency this node's clients see from memcached through the proxy, as
 * counts in fine log-spaced buckets: a full copy reads it to pace itself
 * (see copy/fetch-pace.ts). Counting is all the request path pays: a log and
 * an increment per reply, no allocation.
 */

/** Bucket i holds latencies below FIRST_US * RATIO^(i+1) µs; the last one everything above. */
const FIRST_US = 10;
const RATIO = 1.25;
const BUCKETS = 48; // up to ~450 ms, then the last bucket
const LOG_RATIO = Math.log(RATIO);

export type LatencyCounts = Float64Array;

export class ClientLatency {
  private readonly counts: LatencyCounts = new Float64Array(BUCKETS);

  observe(seconds: number): void {
    const us = seconds * 1e6;
    const i = us <= FIRST_US ? 0 : Math.min(BUCKETS - 1, Math.floor(Math.log(us / FIRST_US) / LOG_RATIO));
    this.counts[i]++;
  }

  /** The counts so far (a copy): what came between two snapshots is their difference. */
  snapshot(): LatencyCounts {
    return Float64Array.from(this.counts);
  }
}

/** How many replies came between two snapshots, and the latency `q` of them stayed under (µs; 0 when none came). */
export function latencyBetween(before: LatencyCounts, after: LatencyCounts, q: number): { count: number; quantileUs: number } {
  let count = 0;
  for (let i = 0; i < BUCKETS; i++) count += after[i] - before[i];
  if (count === 0) return { count, quantileUs: 0 };
  const rank = Math.ceil(q * count);
  let seen = 0;
  for (let i = 0; i < BUCKETS; i++) {
    seen += after[i] - before[i];
    if (seen >= rank) return { count, quantileUs: FIRST_US * RATIO ** (i + 1) };
  }
  return { count, quantileUs: FIRST_US * RATIO ** BUCKETS };
}
