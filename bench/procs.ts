/**
 * The bench's child processes: every one is tracked from spawn to exit so
 * that a normal end, an error or Ctrl-C all leave nothing running. Ports are
 * picked at run time on 127.0.0.1 only, and every wait has a deadline.
 */
import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';

export interface Proc {
  name: string;
  pid: number;
  child: ChildProcess;
  /** stdout and stderr so far (the tail, bounded), for error messages. */
  output(): string;
  /** Resolves with the exit code (or signal name) once the process is gone. */
  readonly exited: Promise<string>;
  /** Peak resident set size (VmHWM) in KiB while the process still runs, else null. */
  peakRssKiB(): number | null;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once it has exited. */
  stop(graceMs?: number): Promise<void>;
}

const running = new Set<Proc>();
const OUTPUT_TAIL = 64 * 1024;

export function spawnTracked(name: string, command: string, args: string[]): Proc {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const append = (chunk: Buffer) => {
    output += chunk.toString();
    if (output.length > OUTPUT_TAIL) output = output.slice(-OUTPUT_TAIL);
  };
  child.stdout?.on('data', append);
  child.stderr?.on('data', append);
  const exited = new Promise<string>((resolve) => {
    // 'error' (e.g. ENOENT) comes instead of 'exit' when the spawn itself fails.
    child.once('error', (error) => resolve(`spawn error: ${error.message}`));
    child.once('exit', (code, signal) => resolve(code !== null ? `exit ${code}` : `signal ${signal ?? '?'}`));
  });
  const proc: Proc = {
    name,
    pid: child.pid ?? -1,
    child,
    output: () => output,
    exited,
    peakRssKiB: () => readPeakRss(child.pid),
    async stop(graceMs = 5000) {
      if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
        await exited;
        clearTimeout(timer);
      }
      running.delete(proc);
    },
  };
  running.add(proc);
  void exited.then(() => running.delete(proc));
  return proc;
}

/** Stops everything still running (used at the end, on errors and on signals). */
export async function stopAll(graceMs = 3000): Promise<void> {
  await Promise.all([...running].map((p) => p.stop(graceMs)));
}

/** Last resort when the process is exiting right now: no time to wait politely. */
export function killAllNow(): void {
  for (const p of running) {
    try {
      p.child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
}

/**
 * Starts a new peak-RSS measurement for a running process (Linux: writing 5
 * to clear_refs resets VmHWM to the current RSS). False when not permitted.
 */
export function resetPeakRss(pid: number): boolean {
  try {
    fs.writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

/** Linux's USER_HZ: /proc/<pid>/stat counts CPU time in these. */
export const CLOCK_TICKS_PER_SECOND = 100;

/** CPU time (user + system) a running process has used so far, in clock ticks; null once it is gone. */
export function cpuTicks(pid: number): number | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(rest[11]) + Number(rest[12]);
  } catch {
    return null;
  }
}

function readPeakRss(pid: number | undefined): number | null {
  if (pid === undefined) return null;
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const match = /^VmHWM:\s+(\d+)\s+kB/m.exec(status);
    return match ? Number(match[1]) : null;
  } catch {
    return null;
  }
}

/** One free-port helper for tests and bench alike. */
export { freePort } from '../test/support/ports';

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Waits until 127.0.0.1:port accepts, the process exits, or the deadline passes. */
export async function waitForPort(proc: Proc, port: number, timeoutMs = 10000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let gone: string | null = null;
  void proc.exited.then((how) => (gone = how));
  for (;;) {
    if (gone !== null) throw new Error(`${proc.name} ${gone} before listening on ${port}: ${proc.output().trim().slice(-2000)}`);
    const ok = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, '127.0.0.1');
      socket.setTimeout(1000, () => {
        socket.destroy();
        resolve(false);
      });
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline)
      throw new Error(`${proc.name}: nothing listening on 127.0.0.1:${port} after ${timeoutMs} ms: ${proc.output().trim().slice(-2000)}`);
    await sleep(50);
  }
}

/** Runs a command to completion (bounded), returning its exit code and output. */
export async function runBounded(
  name: string,
  command: string,
  args: string[],
  timeoutMs: number,
): Promise<{ status: string; stdout: string; stderr: string }> {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
  // Tracked like a server so Ctrl-C during a load run also stops the load generator.
  const proc: Proc = {
    name,
    pid: child.pid ?? -1,
    child,
    output: () => stdout + stderr,
    exited: new Promise<string>((resolve) => {
      child.once('error', (error) => resolve(`spawn error: ${error.message}`));
      child.once('exit', (code, signal) => resolve(code !== null ? `exit ${code}` : `signal ${signal ?? '?'}`));
    }),
    peakRssKiB: () => readPeakRss(child.pid),
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await proc.exited;
    },
  };
  running.add(proc);
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const status = await proc.exited;
  clearTimeout(timer);
  running.delete(proc);
  return { status, stdout, stderr };
}

/** A path as the report shows it: under the home directory as $HOME/..., so that it names no one machine's directories. */
export function shownPath(value: string): string {
  const home = process.env.HOME;
  return home && value.startsWith(`${home}/`) ? `$HOME${value.slice(home.length)}` : value;
}
