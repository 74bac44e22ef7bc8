/**
 * The proxy's Prometheus metrics: client connections, requests by command and
 * outcome, memcached's latency and errors, writes handed to replication.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { ClientLatency } from './client-latency';

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
  const commandCounts = new CommandCounts();
  return {
    /** Count requests here (cheap); `commands` shows them when scraped. */
    commandCounts,
    /** The same latency as upstreamLatency, in fine buckets a full copy paces itself by (not scraped). */
    clientLatency: new ClientLatency(),
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
