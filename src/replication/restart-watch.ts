/**
 * Notices when the local memcached restarted behind a running proxy: its
 * `stats` pid changes or its uptime goes backwards. A restarted memcached is
 * empty, so this node must ask its peer for a full copy.
 */
import { parseStats, startedAt, STATS_REQUEST } from '../protocol/text/stats';
import type { LocalMemcached } from './local-memcached';

export interface MemcachedIdentity {
  pid: string;
  uptime: number;
  /** When it started, unix seconds (its `time` - `uptime`: fixed for the life of the process). */
  startedAt: number;
}

export class RestartWatch {
  private last: MemcachedIdentity | null = null;
  private timer: NodeJS.Timeout | null = null;
  private checking = false;

  constructor(
    private readonly local: LocalMemcached,
    private readonly onRestart: (before: MemcachedIdentity, after: MemcachedIdentity) => void,
    private readonly intervalMs = 1000,
  ) {}

  /** The memcached seen by the last successful check (null before one). */
  get current(): MemcachedIdentity | null {
    return this.last;
  }

  start(): void {
    this.timer = setInterval(() => void this.check(), this.intervalMs);
    this.timer.unref();
    void this.check();
  }

  /** Checks now (also called when a connection to memcached dropped). */
  async check(): Promise<void> {
    if (this.checking) return;
    this.checking = true;
    try {
      const stats = parseStats(await this.local.request(STATS_REQUEST));
      const uptime = Number(stats.get('uptime') ?? 0);
      const now: MemcachedIdentity = { pid: stats.get('pid') ?? '', uptime, startedAt: startedAt(stats) ?? 0 };
      const before = this.last;
      this.last = now;
      if (before && (before.pid !== now.pid || now.uptime < before.uptime)) this.onRestart(before, now);
    } catch {
      // memcached is down: the next successful check compares with what we saw before.
    } finally {
      this.checking = false;
    }
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }
}
