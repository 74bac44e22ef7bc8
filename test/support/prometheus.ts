/**
 * A real Prometheus server (Debian's /usr/bin/prometheus) for tests: on a
 * free loopback port, with its own temporary storage, stopped by the test.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { eventually, freePort } from './ports';
import { launch, type Running } from './processes';

export interface PrometheusServer {
  port: number;
  process: Running;
  /** GET /api/v1/<endpoint>?<params>: the answer's `data`, or an Error with Prometheus' own message. */
  api<T>(endpoint: string, params?: Record<string, string>): Promise<T>;
  /** An instant query: its result vector. */
  query(expr: string): Promise<Array<{ metric: Record<string, string>; value: [number, string] }>>;
  stop(): Promise<void>;
}

/** Starts Prometheus with `config` (YAML text) and waits until it is ready. */
export async function startPrometheus(config: string, timeoutMs = 20000): Promise<PrometheusServer> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'memrepl-test-prometheus-'));
  const configFile = path.join(dir, 'prometheus.yml');
  fs.writeFileSync(configFile, config);
  const port = await freePort();
  let running: Running;
  try {
    running = await launch(
      'prometheus',
      [`--config.file=${configFile}`, `--storage.tsdb.path=${path.join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`],
      port,
      // Prometheus opens its storage before it listens: seconds on a loaded machine.
      timeoutMs,
    );
  } catch (error) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  const base = `http://127.0.0.1:${port}`;
  const api = async <T>(endpoint: string, params: Record<string, string> = {}): Promise<T> => {
    const response = await fetch(`${base}/api/v1/${endpoint}?${new URLSearchParams(params)}`, { signal: AbortSignal.timeout(10000) });
    const body = (await response.json()) as { status: string; data: T; error?: string; errorType?: string };
    if (body.status !== 'success') throw new Error(`Prometheus ${endpoint} ${JSON.stringify(params)}: ${body.errorType}: ${body.error}`);
    return body.data;
  };
  const server: PrometheusServer = {
    port,
    process: running,
    api,
    async query(expr) {
      const data = await api<{ resultType: string; result: Array<{ metric: Record<string, string>; value: [number, string] }> }>('query', { query: expr });
      if (data.resultType !== 'vector') throw new Error(`${expr}: a ${data.resultType}, not an instant vector`);
      return data.result;
    },
    async stop() {
      await running.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    await eventually(async () => (await fetch(`${base}/-/ready`).catch(() => null))?.status === 200, timeoutMs, 'Prometheus to be ready');
  } catch (error) {
    await server.stop();
    throw new Error(`${(error as Error).message}\n${running.output()}`);
  }
  return server;
}
