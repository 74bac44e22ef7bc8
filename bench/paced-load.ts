/**
 * Fixed-rate load for the replication-lag measurement, run as its own
 * process (never inside a proxy's event loop). memcaslap cannot do this: its
 * --tps throttle computes ops/µs in integer arithmetic, which is 0 at any
 * realistic rate, so it never throttles.
 *
 * Sends `rate` requests per second (90% get / 10% set by default) over a few
 * pipelined connections to node A, and meanwhile probes end-to-end lag: a set
 * through A, then back-to-back gets on B's memcached until the value shows up.
 * With `metricsPort` (a memrepl pair), node A's lag histogram is read just
 * before and just after the paced section (with the backlog drained both
 * times), so the prefill burst does not count. Without it (a repcached pair,
 * which exports no metrics), it waits instead until B's memcached has the
 * prefill's last keys, and reports no histogram. Prints one JSON line with
 * what it achieved.
 *
 * Usage: node dist/bench/paced-load.js '<PacedOptions as JSON>'
 */
import { McConnection, withTimeout } from './mc-client';
import { Buckets, count, fetchMetrics, quantile, readHistogram, subtract, waitForAcks } from './prometheus';

const LAG_METRIC = 'memrepl_replication_lag_seconds';

export interface PacedOptions {
  clientPort: number;
  /** Node A's /metrics port, for its lag histogram; absent for a pair without one (repcached). */
  metricsPort?: number;
  peerMemcachedPort: number;
  rate: number;
  seconds: number;
  connections: number;
  valueBytes: number;
  setRatio: number;
  keys: number;
  probeIntervalMs: number;
}

export interface PacedResult {
  sent: number;
  completed: number;
  errors: number;
  /** Requests not sent because a connection already had too many in flight (the target fell behind). */
  shed: number;
  achievedRate: number;
  probes: number;
  probeTimeouts: number;
  probeLagMs: { p50: number; p99: number; max: number } | null;
  /** Node A's memrepl_replication_lag_seconds over the paced section, in ms; null when A does not export it (or there is no metricsPort). */
  lagMetricMs: { samples: number; p50: number; p99: number } | null;
  /** Set when the prefill had not reached B before the paced section began (its replication may have spilled into it). */
  note?: string;
}

const MAX_IN_FLIGHT_PER_CONNECTION = 512;
const TICK_MS = 1;
const PREFILL_SETTLE_MS = 15000;
const PREFILL_POLL_MS = 50;

async function main(): Promise<void> {
  const o = JSON.parse(process.argv[2] ?? '') as PacedOptions;
  const value = Buffer.alloc(o.valueBytes, 'v');
  const key = (i: number) => `bench:lag:${i}`;
  const conns = await Promise.all(Array.from({ length: o.connections }, () => McConnection.connect(o.clientPort)));

  // Fill the key space first so the gets mostly hit, as in the memcaslap runs.
  await withTimeout(Promise.all(Array.from({ length: o.keys }, (_, i) => conns[i % conns.length].set(key(i), value))), 30000, 'prefill');
  let note: string | undefined;
  let before: Buckets | null = null;
  if (o.metricsPort !== undefined) {
    await waitForAcks(o.metricsPort, 15000);
    before = readHistogram(await fetchMetrics(o.metricsPort), LAG_METRIC);
  } else if (!(await prefillOnPeer(o, key, value))) {
    note = `the prefill had not all reached B's memcached after ${PREFILL_SETTLE_MS / 1000} s; its replication may overlap the paced section`;
  }

  const result: PacedResult = {
    sent: 0,
    completed: 0,
    errors: 0,
    shed: 0,
    achievedRate: 0,
    probes: 0,
    probeTimeouts: 0,
    probeLagMs: null,
    lagMetricMs: null,
    ...(note ? { note } : {}),
  };
  const start = process.hrtime.bigint();
  const elapsedS = () => Number(process.hrtime.bigint() - start) / 1e9;
  let due = 0;
  let next = 0;

  const probing = probeLag(o, () => elapsedS() < o.seconds, result);

  // Every tick, send whatever the schedule says is due by now, so a late
  // timer catches up instead of lowering the rate.
  while (elapsedS() < o.seconds) {
    const target = Math.floor(elapsedS() * o.rate);
    for (; due < target; due++) {
      const conn = conns[next++ % conns.length];
      if (conn.inFlight >= MAX_IN_FLIGHT_PER_CONNECTION) {
        result.shed++;
        continue;
      }
      const k = key(Math.floor(Math.random() * o.keys));
      const request = Math.random() < o.setRatio ? conn.set(k, value) : conn.get(k);
      result.sent++;
      request.then(
        (reply) => {
          if (reply.kind === 'line' && reply.line !== 'STORED') result.errors++;
          else result.completed++;
        },
        () => result.errors++,
      );
    }
    await new Promise((r) => setTimeout(r, TICK_MS));
  }
  result.achievedRate = result.sent / o.seconds;
  await probing;
  // Let the last replies come in (bounded), then report.
  const drainUntil = Date.now() + 5000;
  while (result.completed + result.errors < result.sent && Date.now() < drainUntil) await new Promise((r) => setTimeout(r, 10));
  if (o.metricsPort !== undefined) {
    // Records still in flight when the load stopped are acknowledged shortly after.
    await waitForAcks(o.metricsPort, 5000);
    const after = readHistogram(await fetchMetrics(o.metricsPort), LAG_METRIC);
    if (after) {
      const window = subtract(after, before);
      result.lagMetricMs = { samples: count(window), p50: quantile(window, 0.5) * 1000, p99: quantile(window, 0.99) * 1000 };
    }
  }
  for (const c of conns) c.close();
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

/**
 * Bounded wait until B's memcached holds the prefill's last key of every
 * connection: each connection's sets are stored on A in order, so once its
 * last one is on B the ones before it are too (a pair replicating in order,
 * as repcached does over its one link). True when they all arrived in time.
 */
async function prefillOnPeer(o: PacedOptions, key: (i: number) => string, value: Buffer): Promise<boolean> {
  const last = Array.from({ length: Math.min(o.connections, o.keys) }, (_, j) => key(o.keys - 1 - j));
  if (last.length === 0) return true;
  const deadline = Date.now() + PREFILL_SETTLE_MS;
  const peer = await McConnection.connect(o.peerMemcachedPort);
  try {
    let missing = last;
    while (Date.now() < deadline) {
      const replies = await withTimeout(Promise.all(missing.map((k) => peer.get(k))), 5000, 'prefill check');
      missing = missing.filter((_, i) => {
        const got = replies[i];
        return !(got.kind === 'value' && got.data.equals(value));
      });
      if (missing.length === 0) return true;
      await new Promise((r) => setTimeout(r, PREFILL_POLL_MS));
    }
    return false;
  } finally {
    peer.close();
  }
}

/** One probe at a time: set through A, then poll B's memcached directly until the value is there. */
async function probeLag(o: PacedOptions, keepGoing: () => boolean, result: PacedResult): Promise<void> {
  const client = await McConnection.connect(o.clientPort);
  const peer = await McConnection.connect(o.peerMemcachedPort);
  const lags: number[] = [];
  try {
    for (let i = 0; keepGoing(); i++) {
      const k = `bench:lagprobe:${i}`;
      const v = `${process.pid}-${i}-${Date.now()}`;
      const stored = await withTimeout(client.set(k, v), 5000, 'probe set');
      // The write took effect when A answers STORED: lag counts from there.
      const t0 = process.hrtime.bigint();
      if (stored.kind === 'line' && stored.line === 'STORED') {
        result.probes++;
        for (;;) {
          const got = await withTimeout(peer.get(k), 5000, 'probe get');
          const waitedMs = Number(process.hrtime.bigint() - t0) / 1e6;
          if (got.kind === 'value' && got.data.toString() === v) {
            lags.push(waitedMs);
            break;
          }
          if (waitedMs > 2000) {
            result.probeTimeouts++;
            break;
          }
        }
      }
      await new Promise((r) => setTimeout(r, o.probeIntervalMs));
    }
  } finally {
    client.close();
    peer.close();
  }
  if (lags.length > 0) {
    lags.sort((x, y) => x - y);
    const at = (q: number) => lags[Math.min(lags.length - 1, Math.floor(q * lags.length))];
    result.probeLagMs = { p50: at(0.5), p99: at(0.99), max: lags[lags.length - 1] };
  }
}

if (require.main === module) {
  main().catch((error: Error) => {
    process.stderr.write(`paced-load: ${error.message}\n`);
    process.exit(1);
  });
}
