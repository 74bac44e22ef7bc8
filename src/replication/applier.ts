/**
 * Applies the peer's records to the local memcached, in the order they
 * arrive, pipelined on a connection of its own. Writes made here are never
 * recorded, so they are never shipped back (loop prevention).
 *
 * Conflicts: a record loses to a newer write of the same key that already
 * took effect here (last writer by hybrid logical clock, ties by node id), so
 * concurrent writes on both nodes end the same on both.
 *
 * Expiry: the record says how long the item had left when it was sent; the
 * deadline is computed on this node's clock at arrival, so it does not grow
 * by the replication delay and the two hosts' clocks need not agree.
 */
import type { ReplyPart } from '../protocol/text/reply-parser';
import { flushAll, metaDelete, metaInvalidate, metaSet, metaTouch } from '../protocol/text/serializer';
import { expiresAtFromTtl, type RecordFrame } from './frames/messages';
import type { Contention } from './contention';
import { compareHlc, type Hlc, type HybridClock, type Stamp } from './hlc';
import type { LocalMemcached } from './local-memcached';
import type { ReplicationMetrics } from './metrics';
import type { RecentWrites } from './recent-writes';

/** memcached reads an exptime above 30 days as a unix timestamp. */
const RELATIVE_EXPTIME_MAX = 60 * 60 * 24 * 30;

/**
 * memcached's exptime for a deadline on this node's clock, or null when the
 * item is already dead. Relative, to the nearest second: memcached expires an
 * item T ticks of its once-a-second clock after storing it, just as the
 * original expired T ticks after its write. (Absolute times would be worse:
 * memcached converts them against a wall clock that can sit a second off the
 * monotonic clock it ticks with.)
 */
export function exptimeFor(deadline: number | null, now: number): number | null {
  if (deadline === null) return 0;
  const seconds = Math.round((deadline - now) / 1000);
  if (seconds <= 0) return null;
  return seconds <= RELATIVE_EXPTIME_MAX ? seconds : Math.round(deadline / 1000);
}

export type ApplyOutcome = 'applied' | 'conflict' | 'refused';

export class Applier {
  /**
   * This node's clock when it last told the peer where its own stream ends
   * (HELLO, or a request for a full copy). The peer starts a copy only after
   * applying this node's records up to there, so a copy holds every local
   * write stamped before this; later ones it may predate.
   */
  copyCovers: Hlc = { wall: 0, logical: 0 };

  constructor(
    private readonly local: LocalMemcached,
    private readonly clock: HybridClock,
    private readonly recent: RecentWrites,
    private readonly contention: Contention,
    private readonly metrics: ReplicationMetrics,
    private readonly nodeId: string,
  ) {}

  /**
   * Sends the record's write to memcached; resolves when memcached answered
   * (the record is then applied, or deliberately skipped), rejects if
   * memcached could not be reached.
   */
  apply(record: RecordFrame, origin: string, sentAt: number): Promise<ApplyOutcome> {
    this.clock.observe(record.hlc);
    const stamp: Stamp = { wall: record.hlc.wall, logical: record.hlc.logical, nodeId: origin };
    if (record.op === 'flush') {
      const at: Stamp = { ...stamp, wall: stamp.wall + record.delay * 1000 };
      if (!this.recent.incomingFlushWins(at)) return this.skip('conflict');
      this.recent.noteFlush(at);
      return this.send(flushAll(record.delay), record.op);
    }
    if (record.seq === 0 ? !this.copyApplies(record) : !this.recent.incomingWins(record.key, stamp)) return this.skip('conflict');
    if (record.seq !== 0) this.recent.note(record.key, stamp);
    this.contention.applyStarted(record.key);
    return this.send(this.commandFor(record, sentAt), record.op).finally(() => this.contention.applySettled(record.key));
  }

  /**
   * A full copy's records (seq 0) are not stamped writes but the peer's state
   * when it read the key, and are never remembered. That state includes every
   * write of this node the copy covers (see copyCovers) and every earlier
   * write of the peer (the peer drops a key its own clients wrote after it
   * read it). So a copy stands unless this node's clients wrote the key after
   * the covered point: that write is here and on its way to the peer, and is
   * newer. Otherwise add or set decides, in memcached (see replicator.ts).
   */
  private copyApplies(record: RecordFrame): boolean {
    const last = this.recent.lastWrite(record.key);
    return !last || last.nodeId !== this.nodeId || compareHlc(last, this.copyCovers) <= 0;
  }

  /** `sentAt`: when the peer sent the record, on this node's clock. */
  private commandFor(record: RecordFrame, sentAt: number): Buffer {
    const deadline = expiresAtFromTtl(record.ttlMs, sentAt);
    const exptime = deadline === 'unchanged' ? null : exptimeFor(deadline, Date.now());
    switch (record.op) {
      case 'set':
      case 'add':
        // Expired in transit: what the origin holds now is no item at all.
        if (exptime === null) return metaDelete(record.key);
        return metaSet(record.key, record.value, record.flags, exptime, record.op === 'add' ? 'E' : 'S');
      case 'touch':
        return exptime === null ? metaDelete(record.key) : metaTouch(record.key, exptime);
      case 'invalidate':
        return metaInvalidate(record.key, deadline === 'unchanged' ? null : (exptime ?? -1));
      case 'delete':
      case 'flush':
        return metaDelete(record.key);
    }
  }

  /**
   * Rejects only when memcached cannot be reached (the link then resets and
   * the record comes again). A record memcached refuses (out of memory, too
   * large for this memcached's -I) would be refused again on every retry, so
   * it is counted and passed over instead of wedging the link.
   */
  private async send(command: Buffer, op: string): Promise<ApplyOutcome> {
    const parts: ReplyPart[] = await this.local.request(command);
    const status = parts[parts.length - 1].line;
    if (status.startsWith('SERVER_ERROR') || status.startsWith('CLIENT_ERROR') || status === 'ERROR') {
      this.onRefused(`memcached refused a replicated ${op}: ${status}`);
      return this.skip('refused');
    }
    this.metrics.recordsApplied.labels(op).inc();
    return 'applied';
  }

  /** Reports a refused record (the node logs it). */
  onRefused: (reason: string) => void = () => {};

  private skip(reason: 'conflict' | 'refused'): Promise<ApplyOutcome> {
    this.metrics.recordsSkipped.labels(reason).inc();
    return Promise.resolve(reason);
  }
}
