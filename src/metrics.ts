/**
 * Prometheus metrics (prom-client), named after the memcached_exporter's
 * conventions with a `memrepl_` prefix. One registry per process, created by
 * the server and handed to the parts that count things.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export function createProxyMetrics(registry: Registry) {
  collectDefaultMetrics({ register: registry, prefix: 'memrepl_' });
  return {
    clientConnections: new Gauge({ name: 'memrepl_current_connections', help: 'Client connections open now.', registers: [registry] }),
    clientConnectionsTotal: new Counter({ name: 'memrepl_connections_total', help: 'Client connections accepted.', registers: [registry] }),
    clientConnectionsRejected: new Counter({
      name: 'memrepl_connections_rejected_total',
      help: 'Client connections refused because the connection limit (-c) was reached.',
      registers: [registry],
    }),
    commands: new Counter({
      name: 'memrepl_commands_total',
      help: 'Client requests by protocol, command and outcome.',
      labelNames: ['protocol', 'command', 'outcome'] as const,
      registers: [registry],
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
    upstreamUp: new Gauge({ name: 'memrepl_upstream_up', help: '1 if the local memcached answered the last health check.', registers: [registry] }),
    writesTookEffect: new Counter({
      name: 'memrepl_writes_total',
      help: 'Client writes that took effect locally and were handed to replication, by kind.',
      labelNames: ['kind'] as const,
      registers: [registry],
    }),
  };
}

export type ProxyMetrics = ReturnType<typeof createProxyMetrics>;
