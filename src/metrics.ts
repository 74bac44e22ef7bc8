/**
 * The node's Prometheus metrics (prom-client), named after the
 * memcached_exporter's conventions with a `memrepl_` prefix: the process's
 * own, health, and replication's state at scrape time. One registry per
 * process, created by the server and handed to the parts that count things
 * (proxy/metrics.ts, replication/metrics.ts).
 */
import { Gauge, type Registry, collectDefaultMetrics } from 'prom-client';
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
export function registerDefaultMetrics(registry: Registry): void {
  collectDefaultMetrics({ register: registry });
  for (const name of MISNAMED_DEFAULT_GAUGES) registry.removeSingleMetric(name);
}

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
  new Gauge({
    name: 'memrepl_resync_expected_items',
    help: "Items the local memcached held when the full copy this node is sending now began: progress_items' goal, approximately (0 when none is running).",
    registers: [registry],
    collect() {
      this.set(read('copy_expected_items'));
    },
  });
}
