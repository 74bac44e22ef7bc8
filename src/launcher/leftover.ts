/**
 * What to do with the memcached an earlier run of this memrepl may have left
 * in the run dir (it was killed with SIGKILL, or crashed, and could not stop
 * it). Adopting it keeps the cache across a proxy crash; anything that is not
 * verifiably that memcached is never trusted and never killed.
 */
import * as path from 'node:path';
import { commandLine, isAlive, statsPid } from './process-probe';

export type Leftover =
  /** Nothing usable: no pid file, a dead pid, or a pid now used by some other process. */
  | { kind: 'none'; reason: string | null }
  /** Our memcached, alive, started with exactly the argv we would use now, answering on our socket. */
  | { kind: 'adopt'; pid: number }
  /** Our memcached, but not one to keep (other flags, or it does not answer): stop it. */
  | { kind: 'replace'; pid: number; reason: string };

/**
 * Checks the recorded pid step by step: the process exists, its command line
 * is memcached on our socket, and that socket answers `stats` with that pid.
 * `argv` is the full command line (binary first) memrepl would start now.
 */
export async function inspectLeftover(pid: number | null, socketPath: string, argv: string[], statsTimeoutMs = 2000): Promise<Leftover> {
  if (pid === null) return { kind: 'none', reason: null };
  if (pid === process.pid) return { kind: 'none', reason: `pid ${pid} is this memrepl` };
  if (!isAlive(pid)) return { kind: 'none', reason: `pid ${pid} is not running` };
  const running = commandLine(pid);
  if (running === null) return { kind: 'none', reason: `cannot read the command line of pid ${pid}` };
  if (!isOurMemcached(running, socketPath, argv[0])) return { kind: 'none', reason: `pid ${pid} is not our memcached (${running.join(' ')})` };
  // The command line alone could be a memcached whose socket was removed and
  // replaced: only the one answering on our socket is the one we would use.
  const answering = await statsPid(socketPath, statsTimeoutMs);
  if (answering !== pid) {
    const why = answering === null ? 'does not answer on its socket' : `its socket is answered by pid ${answering}`;
    return { kind: 'replace', pid, reason: `memcached pid ${pid} ${why}` };
  }
  if (!sameArgv(running, argv)) {
    return {
      kind: 'replace',
      pid,
      reason: `memcached pid ${pid} runs with other flags (${running.slice(1).join(' ')}) than requested (${argv.slice(1).join(' ')})`,
    };
  }
  return { kind: 'adopt', pid };
}

/** memcached (by executable name) listening on our private socket: only a memrepl for this run dir starts that. */
function isOurMemcached(running: string[], socketPath: string, binary: string): boolean {
  if (path.basename(running[0]) !== path.basename(binary)) return false;
  const at = running.indexOf('-s');
  return at >= 0 && running[at + 1] === socketPath;
}

const sameArgv = (a: string[], b: string[]) => a.length === b.length && a.every((arg, i) => arg === b[i]);
