/**
 * Reads a Prometheus histogram from memrepl's /metrics and turns cumulative
 * buckets into quantiles the way PromQL's histogram_quantile() does (linear
 * interpolation inside the bucket), so the bench reports what a dashboard
 * would show.
 */
import * as http from 'node:http';

export function fetchMetrics(port: number, timeoutMs = 3000): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/metrics', timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`/metrics answered HTTP ${res.statusCode}`))));
    });
    req.on('timeout', () => req.destroy(new Error(`/metrics on port ${port} timed out`)));
    req.on('error', reject);
  });
}

/** Cumulative bucket counts by upper bound (summed over label sets), or null if the histogram is absent. */
export type Buckets = Map<number, number>;

export function readHistogram(text: string, name: string): Buckets | null {
  const buckets: Buckets = new Map();
  const line = new RegExp(`^${name}_bucket\\{([^}]*)\\}\\s+(\\S+)`);
  for (const row of text.split('\n')) {
    const m = line.exec(row);
    if (!m) continue;
    const le = /(?:^|,)le="([^"]+)"/.exec(m[1]);
    if (!le) continue;
    const bound = le[1] === '+Inf' ? Infinity : Number(le[1]);
    buckets.set(bound, (buckets.get(bound) ?? 0) + Number(m[2]));
  }
  return buckets.size > 0 ? buckets : null;
}

/** What was observed between two scrapes. */
export function subtract(after: Buckets, before: Buckets | null): Buckets {
  const out: Buckets = new Map();
  for (const [le, n] of after) out.set(le, n - (before?.get(le) ?? 0));
  return out;
}

export function count(buckets: Buckets): number {
  return buckets.get(Infinity) ?? 0;
}

export function quantile(buckets: Buckets, q: number): number {
  const sorted = [...buckets.entries()].sort((x, y) => x[0] - y[0]);
  const total = count(buckets);
  if (total === 0) return NaN;
  const rank = q * total;
  let prevBound = 0;
  let prevCount = 0;
  for (const [bound, cumulative] of sorted) {
    if (cumulative >= rank) {
      // Like histogram_quantile: past the last finite bucket, answer that bound.
      if (bound === Infinity) return prevBound;
      const inBucket = cumulative - prevCount;
      return inBucket === 0 ? bound : prevBound + ((rank - prevCount) / inBucket) * (bound - prevBound);
    }
    prevBound = bound;
    prevCount = cumulative;
  }
  return prevBound;
}

/** Reads one gauge (summed over label sets); null if absent or /metrics is unreachable. */
export async function readGauge(port: number, name: string): Promise<number | null> {
  const text = await fetchMetrics(port).catch(() => '');
  let total: number | null = null;
  for (const m of text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})?\\s+(\\S+)`, 'gm'))) total = (total ?? 0) + Number(m[1]);
  return total;
}

/**
 * Bounded wait until the node's peer acknowledged everything it sent, so a
 * lag window neither inherits a backlog from an earlier burst nor misses the
 * tail of its own records. Returns at once if the gauge does not exist.
 */
export async function waitForAcks(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const unacked = await readGauge(port, 'memrepl_replication_unacked_records');
    if (unacked === null || unacked === 0) return;
    await new Promise((r) => setTimeout(r, 100));
  }
}
