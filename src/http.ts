/**
 * The operators' HTTP port: Prometheus metrics, and health for load
 * balancers. /healthz is about this node only (does the local memcached
 * answer?); /readyz also says whether this node is fit to take traffic
 * (replication link, first full copy).
 */
import * as http from 'node:http';
import type { Registry } from 'prom-client';

export interface HealthChecks {
  /** Resolves true when the local memcached answers right now. */
  live(): Promise<boolean>;
  /** Reasons this node is not ready yet; empty when ready. */
  notReady(): Promise<string[]>;
  /** Facts an operator should see on /readyz that do not make the node unready. */
  notes(): string[];
}

/** Why this node is not ready (empty when it is): what /readyz and memrepl_ready report. */
export async function notReadyReasons(health: HealthChecks): Promise<string[]> {
  return (await health.live()) ? health.notReady() : ['memcached is not answering'];
}

export function startHttp(port: number, host: string, registry: Registry, health: HealthChecks): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const reply = (status: number, body: string, type = 'text/plain; charset=utf-8') => {
      res.writeHead(status, { 'content-type': type });
      res.end(body);
    };
    const path = (req.url ?? '/').split('?')[0];
    const handle = async () => {
      if (path === '/metrics') return reply(200, await registry.metrics(), registry.contentType);
      if (path === '/healthz') return (await health.live()) ? reply(200, 'ok\n') : reply(503, 'memcached is not answering\n');
      if (path === '/readyz') {
        const reasons = await notReadyReasons(health);
        const notes = health
          .notes()
          .map((note) => `note: ${note}\n`)
          .join('');
        return reasons.length === 0 ? reply(200, `ready\n${notes}`) : reply(503, reasons.join('\n') + '\n' + notes);
      }
      reply(404, 'not found: try /metrics, /healthz or /readyz\n');
    };
    handle().catch((error: Error) => reply(500, `${error.message}\n`));
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}
