/**
 * The latency this node's clients see, as counts in fine log-spaced buckets:
 * a full copy reads it to pace itself (see copy/fetch-pace.ts). Two measures:
 *
 * - replies: from a request's send to memcached to its reply, one count per
 *   reply (a log and an increment on the request path, no allocation);
 * - loop: how late the event loop runs a timer due every LOOP_PROBE_MS. A
 *   request that arrives while the loop is busy waits that long before it is
 *   even read, which the first measure cannot see. Counted only while
 *   watchLoop() runs (a replicating node: only copies read it).
 */

/** Bucket i holds latencies below FIRST_US * RATIO^(i+1) µs; the last one everything above. */
const FIRST_US = 10;
const RATIO = 1.25;
const BUCKETS = 48; // up to ~450 ms, then the last bucket
const LOG_RATIO = Math.log(RATIO);
/** How often the loop's lateness is sampled (as prom-client's own event-loop monitor does by default). */
const LOOP_PROBE_MS = 10;

export type LatencyCounts = Float64Array;

/** Both measures at one moment: what came between two is their difference. */
export interface LatencySnapshot {
  replies: LatencyCounts;
  loop: LatencyCounts;
}

export class ClientLatency {
  private readonly replies: LatencyCounts = new Float64Array(BUCKETS);
  private readonly loop: LatencyCounts = new Float64Array(BUCKETS);
  private loopWatch: NodeJS.Timeout | null = null;

  observe(seconds: number): void {
    count(this.replies, seconds);
  }

  /** The event loop ran a timer `seconds` late. */
  observeLoop(seconds: number): void {
    count(this.loop, seconds);
  }

  /** Samples the event loop's lateness from now on, until stopWatchingLoop(). */
  watchLoop(): void {
    if (this.loopWatch) return;
    let last = performance.now();
    this.loopWatch = setInterval(() => {
      const now = performance.now();
      this.observeLoop(Math.max(0, now - last - LOOP_PROBE_MS) / 1000);
      last = now;
    }, LOOP_PROBE_MS);
    this.loopWatch.unref();
  }

  stopWatchingLoop(): void {
    if (this.loopWatch) clearInterval(this.loopWatch);
    this.loopWatch = null;
  }

  /** The counts so far (copies). */
  snapshot(): LatencySnapshot {
    return { replies: Float64Array.from(this.replies), loop: Float64Array.from(this.loop) };
  }
}

function count(counts: LatencyCounts, seconds: number): void {
  const us = seconds * 1e6;
  const i = us <= FIRST_US ? 0 : Math.min(BUCKETS - 1, Math.floor(Math.log(us / FIRST_US) / LOG_RATIO));
  counts[i]++;
}

/** How many came between two snapshots' counts, and the latency `q` of them stayed under (µs; 0 when none came). */
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
