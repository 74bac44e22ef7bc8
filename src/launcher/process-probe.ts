/**
 * Questions about a process that is not (or no longer) our child: is it alive,
 * what command line was it started with, and does a memcached on a unix socket
 * answer with that pid. Used to decide whether a memcached left behind by an
 * earlier memrepl run can be adopted, and to watch one once adopted.
 * Linux-specific where it reads /proc; elsewhere a process is never verifiable,
 * so nothing is adopted or killed there.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import * as fs from 'node:fs';
import * as net from 'node:net';
import { parseStatsText, STATS_REQUEST } from '../protocol/text/stats';

/**
 * Whether `pid` names a running process. A zombie counts as dead: an adopted
 * memcached is not our child, so nobody may reap it promptly (PID 1 in a
 * container often does not), and `kill(pid, 0)` alone would say it lives on.
 * EPERM means it exists but belongs to someone else: alive, and not ours.
 */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  return processState(pid) !== 'Z';
}

/** The state letter of /proc/<pid>/stat (R, S, Z, ...), or null if it cannot be read. */
function processState(pid: number): string | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    // The command name in parentheses may itself hold spaces or ')': the state follows the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) || null;
  } catch {
    return null;
  }
}

/** argv of a process from /proc/<pid>/cmdline, or null if it is gone or unreadable. */
export function commandLine(pid: number): string[] | null {
  try {
    const raw = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    if (raw.length === 0) return null; // a zombie or a kernel thread
    return raw.replace(/\0$/, '').split('\0');
  } catch {
    return null;
  }
}

/** The pid a memcached on `socketPath` reports in `stats`, or null if it does not answer in time. */
export function statsPid(socketPath: string, timeoutMs: number): Promise<number | null> {
  return new Promise((resolve) => {
    const socket = net.connect(socketPath);
    let reply = '';
    const done = (pid: number | null) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(pid);
    };
    const timer = setTimeout(() => done(null), timeoutMs);
    socket.setEncoding('latin1');
    socket.on('connect', () => socket.write(STATS_REQUEST));
    socket.on('data', (chunk: string) => {
      reply += chunk;
      if (reply.endsWith('END\r\n') || reply.length > 64 * 1024) {
        const pid = parseStatsText(reply).get('pid');
        done(pid !== undefined && /^\d+$/.test(pid) ? Number(pid) : null);
      }
    });
    socket.on('error', () => done(null));
    socket.on('close', () => done(null));
  });
}

/** Polls until `pid` is gone or `timeoutMs` passed; whether it is gone. */
export async function waitForExit(pid: number, timeoutMs: number, pollMs = 50): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isAlive(pid)) {
    if (Date.now() >= deadline) return false;
    await sleep(pollMs);
  }
  return true;
}

/**
 * Stops a process that is not our child (we cannot wait on it): SIGTERM, then
 * SIGKILL if it outlives `graceMs`. Only for a process already verified to be
 * our memcached. Resolves whether it is gone.
 */
export async function terminate(pid: number, graceMs: number): Promise<boolean> {
  const signal = (name: NodeJS.Signals) => {
    try {
      process.kill(pid, name);
    } catch {
      // Already gone.
    }
  };
  signal('SIGTERM');
  if (await waitForExit(pid, graceMs)) return true;
  signal('SIGKILL');
  return waitForExit(pid, 2000);
}
