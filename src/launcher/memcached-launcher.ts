/**
 * Launcher mode (--spawn-memcached): memrepl starts and supervises its own
 * stock memcached, the way a repcached binary was one process. memcached
 * listens only on a private unix socket (no TCP port: nothing can write to it
 * behind the proxy's back); if it dies it is restarted, and the replicator
 * notices the new, empty memcached and asks its peer for a full copy.
 */
import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Logger } from '../log';

export interface LauncherOptions {
  /** memcached's executable. */
  binary: string;
  /** Flags for memcached (-m, -t, -I, ... and anything after `--`). */
  args: string[];
  /** Restart delays: first and cap. */
  restartMinMs: number;
  restartMaxMs: number;
}

export class MemcachedLauncher {
  readonly socketPath: string;
  private child: ChildProcess | null = null;
  private stopping = false;
  private restarts = 0;
  private timer: NodeJS.Timeout | null = null;
  private readonly dir: string;

  constructor(private readonly options: LauncherOptions, private readonly log: Logger) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'memrepl-'));
    this.socketPath = path.join(this.dir, 'memcached.sock');
  }

  /** Starts memcached and resolves once its socket accepts connections (or rejects if it exits first). */
  async start(): Promise<void> {
    await this.spawnOnce();
  }

  private spawnOnce(): Promise<void> {
    const user = process.getuid?.() === 0 ? ['-u', 'root'] : [];
    const args = ['-s', this.socketPath, '-a', '0700', ...user, ...this.options.args];
    const child = spawn(this.options.binary, args, { stdio: ['ignore', 'inherit', 'inherit'] });
    this.child = child;
    this.log.info(`launcher: started ${this.options.binary} ${args.join(' ')} (pid ${child.pid})`);
    return new Promise((resolve, reject) => {
      let up = false;
      const deadline = Date.now() + 10_000;
      const poll = setInterval(() => {
        if (fs.existsSync(this.socketPath)) {
          up = true;
          clearInterval(poll);
          resolve();
        } else if (Date.now() > deadline) {
          clearInterval(poll);
          reject(new Error('memcached did not open its socket within 10 s'));
        }
      }, 20);
      child.once('error', (error) => {
        clearInterval(poll);
        reject(new Error(`cannot run ${this.options.binary}: ${error.message}`));
      });
      child.once('exit', (code, signal) => {
        clearInterval(poll);
        if (!up) return reject(new Error(`memcached exited at once (${signal ?? `code ${code}`}); check its flags`));
        this.exited(code, signal);
      });
    });
  }

  /** memcached died under us: restart it with capped backoff (its data is gone; replication refills it). */
  private exited(code: number | null, signal: NodeJS.Signals | null): void {
    this.child = null;
    if (this.stopping) return;
    const delay = Math.min(this.options.restartMaxMs, this.options.restartMinMs * 2 ** Math.min(this.restarts, 10));
    this.restarts++;
    this.log.warn(`launcher: memcached exited (${signal ?? `code ${code}`}); restarting in ${delay} ms`);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.spawnOnce().then(
        () => (this.restarts = 0),
        (error: Error) => {
          this.log.error(`launcher: ${error.message}`);
          this.exited(null, null);
        },
      );
    }, delay);
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    if (this.timer) clearTimeout(this.timer);
    const child = this.child;
    if (child && child.exitCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
