/**
 * Prometheus metrics (prom-client), named after the memcached_exporter's
 * conventions with a `memrepl_` prefix. One registry per process, created by
 * the server and handed to the parts that count things.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { notReadyReasons, type HealthChecks } from './http';

/**
 * prom-client's gauges that end in `_total`, which Prometheus reserves for
 * counters (`promtool check metrics` flags them). Each is the sum over the
 * `type` label of the gauge of the same name without `_total`
 * (`sum(nodejs_active_handles)`), so dropping them loses nothing.
 */
const MISNAMED_DEFAULT_GAUGES = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

/**
 * Node's process and runtime metrics under the names every Node dashboard and
 * alert expects (`process_*`, `nodejs_*`, as prom-client and the other client
 * libraries publish them): not prefixed, since they describe the process, not memrepl.
 */
function registerDefaultMetrics(registry: Registry): void {
  collectDefaultMetrics({ register: registry });
  for (const name of MISNAMED_DEFAULT_GAUGES) registry.removeSingleMetric(name);
}

/**
 * Requests counted by (protocol, command, outcome) in plain numbers. Every
 * request is counted, and prom-client's `labels(...).inc()` hashes and
 * validates the label set on each call (it showed in profiles of the request
 * path), so the counts are handed to the prom-client counter only when it is
 * scraped.
 */
export class CommandCounts {
  /** protocol → command → outcome → requests since the last scrape. */
  private readonly pending = new Map<string, Map<string, Map<string, number>>>();

  add(protocol: string, command: string, outcome: string, n = 1): void {
    let byCommand = this.pending.get(protocol);
    if (!byCommand) this.pending.set(protocol, (byCommand = new Map()));
    let byOutcome = byCommand.get(command);
    if (!byOutcome) byCommand.set(command, (byOutcome = new Map()));
    byOutcome.set(outcome, (byOutcome.get(outcome) ?? 0) + n);
  }

  /** Moves the counts into `counter` (at scrape time). */
  flushInto(counter: Counter<'protocol' | 'command' | 'outcome'>): void {
    for (const [protocol, byCommand] of this.pending) {
      for (const [command, byOutcome] of byCommand) {
        for (const [outcome, n] of byOutcome) if (n > 0) counter.inc({ protocol, command, outcome }, n);
        byOutcome.clear();
      }
    }
  }
}

export function createProxyMetrics(registry: Registry) {
  registerDefaultMetrics(registry);
  const commandCounts = new CommandCounts();
  return {
    /** Count requests here (cheap); `commands` shows them when scraped. */
    commandCounts,
    clientConnections: new Gauge({ name: 'memrepl_current_connections', help: 'Client connections open now.', registers: [registry] }),
    clientConnectionsTotal: new Counter({ name: 'memrepl_connections_total', help: 'Client connections accepted.', registers: [registry] }),
    clientConnectionsRejected: new Counter({
      name: 'memrepl_connections_rejected_total',
      help: 'Client connections refused because the connection limit (-c) was reached.',
      registers: [registry],
    }),
    clientConnectionsIdleClosed: new Counter({
      name: 'memrepl_connections_idle_closed_total',
      help: 'Client connections closed after sitting idle for --idle-timeout.',
      registers: [registry],
    }),
    commands: new Counter({
      name: 'memrepl_commands_total',
      help: 'Client requests by protocol, command and outcome.',
      labelNames: ['protocol', 'command', 'outcome'] as const,
      registers: [registry],
      collect() {
        commandCounts.flushInto(this);
      },
    }),
    upstreamErrors: new Counter({
      name: 'memrepl_upstream_errors_total',
      help: 'Requests that got SERVER_ERROR because the local memcached could not be reached or did not answer.',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    upstreamLatency: new Histogram({
      name: 'memrepl_upstream_request_duration_seconds',
      help: 'Time from forwarding a request to memcached to the last byte of its reply.',
      buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1],
      registers: [registry],
    }),
    writesTookEffect: new Counter({
      name: 'memrepl_writes_total',
      help: 'Client writes that took effect locally and were handed to replication, by kind.',
      labelNames: ['kind'] as const,
      registers: [registry],
    }),
  };
}

export type ProxyMetrics = ReturnType<typeof createProxyMetrics>;

/**
 * Health as gauges, checked when scraped (the same checks as /healthz and
 * /readyz), so they are true for a Prometheus that requests nothing else.
 */
export function registerHealthMetrics(registry: Registry, health: HealthChecks): void {
  new Gauge({
    name: 'memrepl_upstream_up',
    help: '1 if the local memcached answers (checked at each scrape, as /healthz).',
    registers: [registry],
    async collect() {
      this.set((await health.live()) ? 1 : 0);
    },
  });
  new Gauge({
    name: 'memrepl_ready',
    help: '1 if this node is ready to take traffic (checked at each scrape, as /readyz).',
    registers: [registry],
    async collect() {
      this.set((await notReadyReasons(health)).length === 0 ? 1 : 0);
    },
  });
}

/**
 * Replication facts read when scraped from the list `stats replication`
 * prints, so the two cannot disagree.
 */
export function registerReplicationStateMetrics(registry: Registry, stats: () => Array<[string, string | number]>): void {
  const read = (name: string) => Number(stats().find(([key]) => key === name)?.[1] ?? 0);
  new Gauge({
    name: 'memrepl_replication_backlog_max_bytes',
    help: 'Bytes the backlog holds at most (--backlog-size): unacknowledged records beyond it need a full copy.',
    registers: [registry],
    collect() {
      this.set(read('backlog_max_bytes'));
    },
  });
  new Gauge({
    name: 'memrepl_resync_progress_items',
    help: 'Items the full copy this node is sending now has sent so far (0 when none is running).',
    registers: [registry],
    collect() {
      this.set(read('copy_sent_items'));
    },
  });
}
