/**
 * Launcher mode (--spawn-memcached): memrepl starts and supervises its own
 * stock memcached, the way a repcached binary was one process. memcached
 * listens only on a private unix socket in the run dir (no TCP port: nothing
 * can write to it behind the proxy's back); if it dies it is restarted, and the
 * replicator notices the new, empty memcached and asks its peer for a full copy.
 *
 * memrepl itself may die without stopping memcached (SIGKILL, the OOM killer).
 * The run dir is stable, so the next memrepl finds that memcached and adopts
 * it: the cache survives a proxy crash instead of leaking a memcached and
 * starting an empty second one. An adopted memcached is not our child, so it is
 * watched by polling its pid rather than by an 'exit' event.
 */
import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import type { Logger } from '../log';
import { inspectLeftover } from './leftover';
import { isAlive, terminate } from './process-probe';
import { RunDir } from './run-dir';

export interface LauncherOptions {
  /** memcached's executable. */
  binary: string;
  /** Flags for memcached (-m, -t, -I, ... and anything after `--`). */
  args: string[];
  /** The run dir (--run-dir): socket, pid files, ownership. */
  runDir: string;
  /** Restart delays: first and cap. */
  restartMinMs: number;
  restartMaxMs: number;
  /** How often an adopted memcached is checked for life. */
  watchIntervalMs?: number;
  /** How long memcached gets between SIGTERM and SIGKILL. */
  stopGraceMs?: number;
}

/** The memcached being supervised: our child, or one adopted from an earlier run. */
type Running = { kind: 'child'; process: ChildProcess; pid: number } | { kind: 'adopted'; pid: number; watch: NodeJS.Timeout };

export class MemcachedLauncher {
  private readonly runDir: RunDir;
  private running: Running | null = null;
  private stopping = false;
  private restarts = 0;
  private timer: NodeJS.Timeout | null = null;
  private owned = false;

  constructor(
    private readonly options: LauncherOptions,
    private readonly log: Logger,
  ) {
    this.runDir = new RunDir(options.runDir);
  }

  get socketPath(): string {
    return this.runDir.socketPath;
  }

  get pid(): number | undefined {
    return this.running?.pid;
  }

  /** memcached's full command line: the same on every start, so a leftover can be compared with it. */
  private argv(): string[] {
    const user = process.getuid?.() === 0 ? ['-u', 'root'] : [];
    return [this.options.binary, '-s', this.socketPath, '-a', '0700', ...user, ...this.options.args];
  }

  /**
   * Takes the run dir (RunDirBusyError if another memrepl has it), then adopts
   * the memcached an earlier run left there or starts one. Resolves once memcached serves.
   */
  async start(): Promise<void> {
    await this.runDir.acquire();
    this.owned = true;
    if (await this.adoptLeftover()) return;
    await this.spawnOnce();
  }

  /** Whether a memcached from an earlier run was adopted; stops or forgets any that cannot be. */
  private async adoptLeftover(): Promise<boolean> {
    const leftover = await inspectLeftover(this.runDir.readMemcachedPid(), this.socketPath, this.argv());
    switch (leftover.kind) {
      case 'adopt':
        this.log.info(`launcher: adopted memcached pid ${leftover.pid} from an earlier run`);
        this.watch(leftover.pid);
        return true;
      case 'replace': {
        this.log.warn(`launcher: stopping the memcached left by an earlier run: ${leftover.reason}`);
        if (!(await terminate(leftover.pid, this.stopGraceMs))) throw new Error(`memcached pid ${leftover.pid} from an earlier run did not stop`);
        break;
      }
      case 'none':
        if (leftover.reason) this.log.info(`launcher: ignoring stale ${this.runDir.memcachedPidPath}: ${leftover.reason}`);
        break;
    }
    // Whatever the files said is no longer true; memcached would replace the socket anyway.
    this.runDir.clearMemcached();
    return false;
  }

  private get stopGraceMs(): number {
    return this.options.stopGraceMs ?? 5000;
  }

  /**
   * Polls an adopted memcached's pid: it is not our child, so no 'exit' event
   * tells us it died. A poll of a few hundred ms is well within the time the
   * replicator takes to notice an empty memcached anyway.
   */
  private watch(pid: number): void {
    const watch = setInterval(() => {
      if (isAlive(pid)) return;
      clearInterval(watch);
      this.exited(pid, null, null);
    }, this.options.watchIntervalMs ?? 250);
    this.running = { kind: 'adopted', pid, watch };
  }

  private spawnOnce(): Promise<void> {
    const [binary, ...args] = this.argv();
    const child = spawn(binary, args, { stdio: ['ignore', 'inherit', 'inherit'] });
    // Recorded at once: if memrepl is killed from here on, the next run must find this memcached.
    if (child.pid !== undefined) {
      this.runDir.writeMemcachedPid(child.pid);
      this.running = { kind: 'child', process: child, pid: child.pid };
    }
    this.log.info(`launcher: started ${binary} ${args.join(' ')} (pid ${child.pid})`);
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
        reject(new Error(`cannot run ${binary}: ${error.message}`));
      });
      child.once('exit', (code, signal) => {
        clearInterval(poll);
        if (!up) {
          if (this.running?.pid === child.pid) this.running = null;
          return reject(new Error(`memcached exited at once (${signal ?? `code ${code}`}); check its flags`));
        }
        this.exited(child.pid!, code, signal);
      });
    });
  }

  /** memcached died under us: restart it with capped backoff (its data is gone; replication refills it). */
  private exited(pid: number, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.running?.pid === pid) this.running = null;
    if (this.stopping) return;
    const delay = Math.min(this.options.restartMaxMs, this.options.restartMinMs * 2 ** Math.min(this.restarts, 10));
    this.restarts++;
    const how = signal ?? (code === null ? 'no longer running' : `code ${code}`);
    this.log.warn(`launcher: memcached pid ${pid} exited (${how}); restarting in ${delay} ms`);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.spawnOnce().then(
        () => (this.restarts = 0),
        (error: Error) => {
          this.log.error(`launcher: ${error.message}`);
          this.exited(pid, null, null);
        },
      );
    }, delay);
  }

  /** Graceful shutdown: stop memcached (ours or adopted), remove the run dir's files, give the dir up. */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.timer) clearTimeout(this.timer);
    const running = this.running;
    this.running = null;
    if (running?.kind === 'child' && running.process.exitCode === null && running.process.signalCode === null) {
      const child = running.process;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), this.stopGraceMs);
      await exited;
      clearTimeout(timer);
    } else if (running?.kind === 'adopted') {
      clearInterval(running.watch);
      if (!(await terminate(running.pid, this.stopGraceMs))) this.log.error(`launcher: memcached pid ${running.pid} did not stop`);
    }
    // Files are only ours to remove if the dir was ours (a refused start must not touch the owner's).
    if (this.owned) this.runDir.release();
  }
}
