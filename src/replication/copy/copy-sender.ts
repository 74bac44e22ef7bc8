/**
 * Sending a full copy ("marugoto") to the peer: when one is needed and why,
 * one at a time on the active link, retried with a backoff when it fails
 * with the link still up, never when memcached refuses the walk (-X). The
 * copy itself (walk, fetch, frames) is full-copy.ts; the replicator decides
 * when a copy is needed and tells this.
 */
import { copyProgress, type CopyProgress, describeCopyProgress } from './copy-progress';
import type { Logger } from '../../log';
import type { LatencySnapshot } from '../../proxy/client-latency';
import { parseStats, STATS_SETTINGS_REQUEST } from '../../protocol/text/stats';
import type { UpstreamAddress } from '../../sockets';
import { serializeResyncBegin, serializeResyncEnd } from '../link/frames/serializer';
import { FullCopy, type FullCopyError } from './full-copy';
import { compareHlc, type HybridClock } from '../conflict/hlc';
import type { Link } from '../link/link';
import type { LocalMemcached } from '../local-memcached';
import type { ReplicationMetrics } from '../metrics';
import type { FlushSchedule } from '../flush/flush-schedule';
import type { RecentWrites } from '../conflict/recent-writes';

/** How long a copy waits for the peer's records sent before it asked (they normally take milliseconds). */
const COPY_WAIT_MS = 30_000;
/** A failed copy is tried again after this long, doubling per failure up to the cap. */
const COPY_RETRY_MIN_MS = 500;
const COPY_RETRY_MAX_MS = 30_000;
/** How often a running copy logs its progress. */
const PROGRESS_LOG_MS = 5000;
/** Fetches in flight from the local memcached during a copy: requests, and bytes of replies. */
const COPY_MAX_IN_FLIGHT = 512;
const COPY_MAX_IN_FLIGHT_BYTES = 16 * 1024 * 1024;

export interface CopySenderOptions {
  nodeId: string;
  connectTimeoutMs: number;
  /** Items per second at most (0 = no cap); read at each copy's start, so a reload applies to the next one. */
  copyRatePerSecond: number;
  /** This node's client latency, which copies pace themselves by (see fetch-pace.ts). */
  clientLatency?: () => LatencySnapshot;
}

export interface CopySenderDeps {
  upstream: UpstreamAddress;
  options: () => CopySenderOptions;
  clock: HybridClock;
  /** This node's writes, to leave out the keys written since the copy read them (the live record is newer). */
  values: RecentWrites;
  /** What this node knows of flush_all: a copy's item stamps (see FlushSchedule.survivorStamp). */
  flushes: FlushSchedule;
  /** Resolves once the peer's records up to `seq` are applied here (or after `timeoutMs`: false). */
  whenApplied(seq: number, timeoutMs: number): Promise<boolean>;
  /** Whether `link` is still the one records go to. */
  isActive(link: Link): boolean;
  metrics: ReplicationMetrics;
  log: Logger;
}

export class CopySender {
  /** Why the peer needs a full copy from us, if it does (shown in stats and the peer's /readyz). */
  neededBecause: string | null = null;
  /** Why a copy cannot be made from this node (memcached refuses the walk), if so. */
  impossible: string | null = null;
  /** The current copy's attempt (1 = first; 0 = none running or pending). */
  attempt = 0;
  failures = 0;
  /** `reason: message` of the last failed copy, until a copy completes. */
  lastFailure: string | null = null;
  private copy: FullCopy | null = null;
  /** The link of the copy running or to retry, and whether the peer asked for it (its memcached restarted empty). */
  private copyLink: Link | null = null;
  private requested = false;
  /** A failed copy's next attempt, if one is pending, and when it runs. */
  private retry: NodeJS.Timeout | null = null;
  private retryAt = 0;
  private copyStartedAt = 0;

  constructor(private readonly deps: CopySenderDeps) {}

  get running(): boolean {
    return this.copy !== null;
  }

  get sentItems(): number {
    return this.copy?.progress.items ?? 0;
  }

  /** The running copy's progress (null when none runs). */
  get progress(): CopyProgress | null {
    const copy = this.copy;
    return copy ? copyProgress(copy.progress.items, copy.progress.expected, Date.now() - this.copyStartedAt) : null;
  }

  get retryInMs(): number {
    return this.retry ? Math.max(0, this.retryAt - Date.now()) : 0;
  }

  /**
   * The peer needs a copy: started on `link` unless one is running (with no
   * link, the next link's handshake starts it). `mode`:
   * add (keep what the peer holds) or set (overwrite it); `peerLastSeq`:
   * where the peer's stream ended when it asked (the walk waits for it here).
   */
  need(link: Link | null, reason: string, mode: 'add' | 'set', peerLastSeq: number, requested = false): void {
    this.neededBecause = reason;
    this.requested = requested;
    this.deps.metrics.resyncs.labels('full_needed').inc();
    this.deps.log.info(`replication: full copy needed: ${reason}`);
    if (link) this.start(link, reason, mode, peerLastSeq, 1);
  }

  /** The link can take more: a copy paused on it goes on. */
  writable(): void {
    this.copy?.writable();
  }

  /** Stops the running copy (the peer asked for a new one, or the link closed); whoever stopped it starts the next. */
  abort(reason: string): void {
    // Forgotten at once: it may still be waiting for the peer's records before its walk, and the next
    // copy must not take it for one under way.
    this.copy?.abort(reason);
    this.copy = null;
  }

  /**
   * This node's memcached restarted: what it holds now came from the peer, or
   * has its record in the stream. A copy the peer did not ask for would send
   * the peer a part of its own state, some of it older than the peer's writes
   * since (a delete undone): it stops, and the peer is told the copy ended.
   * One the peer asked for goes on (its memcached is empty too: this is all
   * there is).
   */
  dropUnrequested(reason: string): void {
    if (this.requested || (!this.copy && !this.retry)) return;
    const items = this.sentItems;
    const link = this.copyLink;
    this.abort(reason);
    this.cancelRetry();
    this.attempt = 0;
    this.neededBecause = null;
    if (link?.open) link.write(serializeResyncEnd({ items, reason }));
  }

  /** The link closed: the next link's handshake decides afresh whether a copy is needed. */
  linkClosed(): void {
    this.abort('replication link closed');
    this.cancelRetry();
    this.attempt = 0;
  }

  stop(): void {
    this.cancelRetry();
    this.abort('shutting down');
  }

  /** memcached -X refuses lru_crawler metadump: a full copy from this node is impossible; say so once, up front. */
  async checkDumping(monitor: LocalMemcached): Promise<void> {
    const parts = await monitor.request(STATS_SETTINGS_REQUEST).catch(() => []);
    if (parseStats(parts).get('dump_enabled') === 'no') {
      this.impossible = 'memcached was started with -X (dumping disabled), so lru_crawler metadump is refused';
      this.deps.log.warn(`replication: ${this.impossible}: a peer that loses its data cannot be refilled from this node`);
    }
  }

  /** Things an operator should know (see Replicator.notes). */
  notes(): string[] {
    const notes: string[] = [];
    if (this.impossible) notes.push(`full copy from this node impossible: ${this.impossible}`);
    if (this.attempt > 0 && this.lastFailure) {
      const next = this.retry ? `retrying in ${this.retryInMs / 1000} s` : `attempt ${this.attempt} running`;
      notes.push(`full copy to the peer failing (${this.lastFailure}); ${next}`);
    }
    return notes;
  }

  private start(link: Link, reason: string, mode: 'add' | 'set', peerLastSeq: number, attempt: number): void {
    if (this.copy) return;
    this.cancelRetry();
    const { log, metrics } = this.deps;
    if (this.impossible) {
      log.warn(`replication: cannot send a full copy: ${this.impossible}; only the backlog replicates`);
      return;
    }
    this.attempt = attempt;
    this.copyLink = link;
    const said = attempt === 1 ? reason : `${reason} (attempt ${attempt}; the last failed: ${this.lastFailure})`;
    link.write(serializeResyncBegin({ reason: said, covers: peerLastSeq }));
    log.info('replication: marugoto copying');
    const startedAt = Date.now();
    const copy = this.newCopy(link, mode);
    this.copy = copy;
    this.copyStartedAt = startedAt;
    metrics.copyInProgress.labels('sending').set(1);
    const progress = setInterval(() => {
      const now = this.progress;
      if (now) log.info(`replication: marugoto progress: ${describeCopyProgress(now)}`);
    }, PROGRESS_LOG_MS);
    progress.unref();
    // The peer's records sent before it asked must be in our memcached before the walk reads it (see Applier.copyCovers).
    this.deps
      .whenApplied(peerLastSeq, COPY_WAIT_MS)
      .then((caughtUp) => {
        if (!caughtUp && this.copy === copy)
          log.warn(`replication: the peer's records up to #${peerLastSeq} did not arrive within ${COPY_WAIT_MS} ms; copying anyway`);
        return copy.run();
      })
      .then(
        ({ items, bytes, walks, repaired }) => {
          link.write(serializeResyncEnd({ items }));
          this.neededBecause = null;
          this.attempt = 0;
          this.lastFailure = null;
          metrics.resyncs.labels('full').inc();
          metrics.copyItems.inc(items);
          metrics.copyBytes.inc(bytes);
          metrics.copyDuration.set((Date.now() - startedAt) / 1000);
          log.info(`replication: marugoto ${items} (${walks} walks${repaired > 0 ? `, ${repaired} items sent after a check found them missing` : ''})`);
          log.info('replication: marugoto owari');
        },
        (error: FullCopyError) => {
          metrics.copyItems.inc(copy.progress.items);
          this.failed(link, error, copy.progress.items, attempt, () => this.start(link, reason, mode, peerLastSeq, attempt + 1));
        },
      )
      .finally(() => {
        clearInterval(progress);
        if (this.copy !== copy) return; // stopped, and another may be running now
        this.copy = null;
        metrics.copyInProgress.labels('sending').set(0);
      });
  }

  private newCopy(link: Link, mode: 'add' | 'set'): FullCopy {
    const { clock, values, flushes } = this.deps;
    const options = this.deps.options();
    return new FullCopy(
      this.deps.upstream,
      link,
      {
        mode,
        ratePerSecond: options.copyRatePerSecond,
        clientLatency: options.clientLatency,
        connectTimeoutMs: options.connectTimeoutMs,
        maxInFlight: COPY_MAX_IN_FLIGHT,
        maxInFlightBytes: COPY_MAX_IN_FLIGHT_BYTES,
        peerMaxFrameBytes: link.peer?.maxFrameBytes ?? Infinity,
        localWrites: {
          // Local stamps come from clock.now(), strictly after clock.last: a write stamped after the mark came after it.
          mark: () => clock.last,
          writtenSince: (key, start, end, mark) => {
            const now = clock.last;
            if (now.wall === mark.wall && now.logical === mark.logical) return false; // nothing written at all since
            const last = values.lastWriteOf(key.subarray(start, end));
            return last !== undefined && last.nodeId === options.nodeId && compareHlc(last, mark) > 0;
          },
          stampOf: (key, start, end) => values.lastWriteOf(key.subarray(start, end)),
          survivorStamp: () => flushes.survivorStamp(),
        },
      },
      this.deps.log,
    );
  }

  /**
   * A copy stopped before its end. Stopped on purpose (link closed, a new
   * request, shutdown): whoever stopped it starts the next one. Impossible
   * (memcached -X): said once, never retried. Anything else, with the link
   * still up: counted, told to the peer (its /readyz shows it), and tried
   * again after a backoff, or the peer would wait for it forever.
   */
  private failed(link: Link, error: FullCopyError, items: number, attempt: number, retry: () => void): void {
    const { log, metrics } = this.deps;
    const stopped = `replication: full copy stopped after ${items} items`;
    if (error.reason === 'aborted') return log.info(`${stopped}: ${error.message}`);
    if (error.reason === 'dump_disabled') {
      this.impossible = error.message;
      return log.warn(`${stopped}: ${error.message}`);
    }
    this.failures++;
    metrics.copyFailures.labels(error.reason).inc();
    this.lastFailure = `${error.reason}: ${error.message}`;
    if (!this.deps.isActive(link) || !link.open) {
      this.attempt = 0;
      return log.warn(`${stopped} (${this.lastFailure}); it starts over when the link is back`);
    }
    const delay = Math.min(COPY_RETRY_MAX_MS, COPY_RETRY_MIN_MS * 2 ** Math.min(attempt - 1, 16));
    const failed = `attempt ${attempt} failed (${this.lastFailure}); retrying in ${delay / 1000} s`;
    log.warn(`${stopped}: ${failed}`);
    link.write(serializeResyncBegin({ reason: `the sender's full copy ${failed}` }));
    this.retryAt = Date.now() + delay;
    this.retry = setTimeout(() => {
      this.retry = null;
      retry();
    }, delay);
    this.retry.unref();
  }

  private cancelRetry(): void {
    if (this.retry) clearTimeout(this.retry);
    this.retry = null;
  }
}
