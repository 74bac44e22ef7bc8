/**
 * Prometheus' own checker (Debian's `prometheus` package brings promtool):
 * the tests judge metric names and rule files with it rather than with a
 * copy of its rules.
 */
import { spawn } from 'node:child_process';

export interface PromtoolResult {
  code: number | null;
  output: string;
}

/** Runs `promtool ...args` with `input` on stdin; killed after `timeoutMs`. */
export function promtool(args: string[], input = '', timeoutMs = 30000): Promise<PromtoolResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('promtool', args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
    child.stdin.end(input);
  });
}

/** `promtool check metrics` on a scrape: resolves to its complaints ('' when it has none). */
export async function lintMetrics(exposition: string): Promise<string> {
  const { code, output } = await promtool(['check', 'metrics'], exposition);
  return code === 0 && output.trim() === '' ? '' : `promtool check metrics exited ${code}:\n${output}`;
}
