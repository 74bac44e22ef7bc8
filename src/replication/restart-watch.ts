/**
 * Notices when the local memcached restarted behind a running proxy: its
 * `stats` pid changes or its uptime goes backwards. A restarted memcached is
 * empty, so this node must ask its peer for a full copy; and it remembers
 * where this node's stream stood then (refillFrom). Its poll is also the one
 * request always in flight while memcached stands still, and the one whose
 * wait tells nothing else: how long it took is told (`polled`, see
 * stale-clock.ts). Four polls a second, so that any pause longer than 1.25 s
 * keeps one waiting past the second that shows it.
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
  /** The last record's seq when a connection to memcached last dropped. */
  private disconnectedAtSeq: number | null = null;
  /**
   * The last record before memcached last restarted during this run: the
   * records after it are of writes the new memcached may have run (null: no
   * restart seen).
   */
  refillFrom: number | null = null;
  /** A connection to memcached dropped and no check has answered since: memcached may have restarted (empty). */
  unverified = false;
  private unverifiedSince = 0;

  /** `lastSeq`: this node's last record. */
  constructor(
    private readonly local: LocalMemcached,
    private readonly onRestart: (before: MemcachedIdentity, after: MemcachedIdentity) => void,
    private readonly lastSeq: () => number,
    private readonly polled: (askedAt: number, answeredAt: number) => void,
    private readonly intervalMs = 250,
  ) {}

  /**
   * A connection to memcached dropped, the first sign of a restart: look at
   * once rather than at the next poll, so this node turns cold (and treats
   * deletes of absent keys as deletes) as early as it can.
   */
  disconnected(): void {
    this.disconnectedAtSeq = this.lastSeq();
    this.unverified = true;
    this.unverifiedSince = Date.now();
    setTimeout(() => void this.check(), 50).unref();
  }

  /** The memcached seen by the last successful check (null before one). */
  get current(): MemcachedIdentity | null {
    return this.last;
  }

  start(): void {
    this.timer = setInterval(() => void this.check(), this.intervalMs);
    this.timer.unref();
    void this.check();
  }

  /** Checks now. */
  async check(): Promise<void> {
    if (this.checking) return;
    this.checking = true;
    try {
      const askedAt = Date.now();
      const stats = parseStats(await this.local.request(STATS_REQUEST));
      this.polled(askedAt, this.local.lastReceivedAt);
      const uptime = Number(stats.get('uptime') ?? 0);
      const now: MemcachedIdentity = { pid: stats.get('pid') ?? '', uptime, startedAt: startedAt(stats) ?? 0 };
      const before = this.last;
      this.last = now;
      if (before && (before.pid !== now.pid || now.uptime < before.uptime)) {
        this.refillFrom = this.disconnectedAtSeq ?? this.lastSeq();
        this.onRestart(before, now);
      }
      // Asked after the drop (the monitor's own connection dropped with it, and reconnected for this check).
      if (askedAt >= this.unverifiedSince) this.unverified = false;
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
