/**
 * The run directory of one memrepl instance in launcher mode (--run-dir): a
 * stable place, unlike a fresh temp dir, so a memrepl restarted after a crash
 * finds the memcached the crashed one left running. It holds
 *
 *   memcached.sock   memcached's private unix socket
 *   memcached.pid    that memcached's pid (written by memrepl at spawn)
 *   memrepl.pid      the pid of the memrepl that owns the directory (for the operator and the refusal message)
 *
 * Ownership is an abstract unix socket named after the directory: binding it is
 * atomic, and the kernel releases it the moment its memrepl dies, even on
 * SIGKILL, so a crashed owner never leaves a lock that has to be guessed stale.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

/** Another live memrepl owns the directory. */
export class RunDirBusyError extends Error {
  constructor(
    readonly dir: string,
    readonly ownerPid: number | null,
  ) {
    super(
      `run dir ${dir} is in use by another memrepl${ownerPid === null ? '' : ` (pid ${ownerPid})`}; ` +
        'give this one its own --run-dir, or another -p (the default run dir follows the client port)',
    );
  }
}

/** The default: one directory per client port, so two memrepls on one host differ by their -p. */
export function defaultRunDir(port: number): string {
  return path.join(os.tmpdir(), `memrepl-${port}`);
}

export class RunDir {
  readonly socketPath: string;
  readonly memcachedPidPath: string;
  private readonly ownerPidPath: string;
  private lock: net.Server | null = null;

  constructor(readonly dir: string) {
    this.dir = path.resolve(dir);
    this.socketPath = path.join(this.dir, 'memcached.sock');
    this.memcachedPidPath = path.join(this.dir, 'memcached.pid');
    this.ownerPidPath = path.join(this.dir, 'memrepl.pid');
  }

  /**
   * Creates the directory (0700: the socket inside is memcached with no
   * authentication) and takes ownership of it, or throws RunDirBusyError.
   */
  async acquire(): Promise<void> {
    makePrivateDir(this.dir, 'run dir');
    await this.takeLock();
    writeFileAtomically(this.ownerPidPath, `${process.pid}\n`);
  }

  private takeLock(): Promise<void> {
    // Abstract names are per network namespace and at most 107 bytes: name it by a hash of the path.
    const name = `\0memrepl-run-dir-${createHash('sha256').update(this.dir).digest('hex').slice(0, 32)}`;
    return new Promise((resolve, reject) => {
      const server = net.createServer((socket) => socket.destroy());
      server.once('error', (error: NodeJS.ErrnoException) => {
        if (error.code === 'EADDRINUSE') return reject(new RunDirBusyError(this.dir, readPid(this.ownerPidPath)));
        // No abstract sockets (not Linux): run unguarded rather than not at all.
        resolve();
      });
      server.listen(name, () => {
        this.lock = server;
        // The lock must not keep the process alive on its own.
        server.unref();
        resolve();
      });
    });
  }

  readMemcachedPid(): number | null {
    return readPid(this.memcachedPidPath);
  }

  writeMemcachedPid(pid: number): void {
    writeFileAtomically(this.memcachedPidPath, `${pid}\n`);
  }

  /** Forgets the memcached: its pid file and socket (stale, or after it was stopped). */
  clearMemcached(): void {
    fs.rmSync(this.memcachedPidPath, { force: true });
    fs.rmSync(this.socketPath, { force: true });
  }

  /** On graceful shutdown: removes our files, the directory if nothing else is in it, and gives up ownership. */
  release(): void {
    this.clearMemcached();
    fs.rmSync(this.ownerPidPath, { force: true });
    try {
      fs.rmdirSync(this.dir);
    } catch {
      // Not empty (the operator keeps something there) or already gone: leave it.
    }
    this.lock?.close();
    this.lock = null;
  }
}

function readPid(file: string): number | null {
  try {
    const text = fs.readFileSync(file, 'utf8').trim();
    return /^[1-9]\d{0,9}$/.test(text) ? Number(text) : null;
  } catch {
    return null;
  }
}

/**
 * Creates `dir` (and its parents) as 0700, or checks an existing one: a
 * directory, of this user, tightened to 0700. What memrepl keeps there (a
 * socket to an unauthenticated memcached, the replication checkpoint) must
 * not be reachable, or forgeable, by other users. `what` names it in errors.
 */
export function makePrivateDir(dir: string, what: string): void {
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (error) {
    // EEXIST: something that is not a directory is in the way (said below).
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw new Error(`cannot create ${what} ${dir}: ${(error as Error).message}`);
  }
  const stat = fs.lstatSync(dir);
  if (!stat.isDirectory()) throw new Error(`${what} ${dir} is not a directory`);
  const uid = process.getuid?.();
  if (uid !== undefined && stat.uid !== uid) throw new Error(`${what} ${dir} belongs to uid ${stat.uid}, not to this user (${uid})`);
  // An existing directory keeps its old mode through mkdir: tighten it.
  if ((stat.mode & 0o777) !== 0o700) fs.chmodSync(dir, 0o700);
}

/** Write-then-rename, so a reader (or a memrepl killed mid-write) never sees half a file. */
export function writeFileAtomically(file: string, text: string): void {
  const temporary = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(temporary, text, { mode: 0o600 });
  fs.renameSync(temporary, file);
}
