/**
 * The peer's flush_all, run on the local memcached the way memcached would
 * have run it here (see flush-schedule.ts): at once, keeping the keys
 * written here after its moment (in a batch of the applier's own, a barrier
 * between the batches before and after it); delayed, as memcached's own
 * delayed flush, cutting where the origin's did (see memcached-clock.ts); or
 * cancelling the one scheduled. Also gives memcached again a delayed flush it
 * lost by restarting (see Applier.scheduleFlush).
 */
import { Status } from '../../protocol/binary/messages';
import { exptimeFor } from '../../protocol/text/expiry';
import { flushAll, metaInvalidate, metaRead } from '../../protocol/text/serializer';
import { binaryFetch, binaryStore, flagsOf, needsBinary } from '../binary-keys';
import { expiresAtFromTtl, FLUSH_CANCEL, type RecordFrame } from '../link/frames/messages';
import { CANCEL_FLUSH_EXPTIME, type FlushAction, type FlushTiming } from '../flush/flush-schedule';
import { flushTimeFor, memcachedClockEpoch } from '../flush/memcached-clock';
import { compareStamps, type Stamp } from '../conflict/hlc';
import { stampOf } from '../conflict/recent-writes';
import type { LocalMemcached, LocalMemcachedBinary } from '../local-memcached';
import type { ReplicationMetrics } from '../metrics';
import type { LocalHistory } from '../send/recorder';
import { recordFromReadBack } from '../send/recorder';
import type { ApplierEvents } from './applier';
import { carriesItem, type Answers, type ApplyBatches, type Batch } from './apply-batches';
import { CommandBatch } from './command-batch';
import type { Contention } from './contention';

/** A key read before a flush, to store back after it unless written again since. */
interface Kept {
  key: Buffer;
  stamp: Stamp;
}

/** How long a flush waits for client writes in flight to be answered before it runs anyway (memcached stalled). */
const QUIET_WAIT_MS = 2000;
/** A measured phase of memcached's clock is trusted this long (its timer drifts a little every tick). */
const CLOCK_EPOCH_FRESH_MS = 60_000;

export class PeerFlushes {
  /** memcached's clock phase as last measured, for a delayed flush given in a batch (see schedule). */
  private clockEpoch: { epoch: number | null; measuredAt: number } | null = null;

  constructor(
    private readonly local: LocalMemcached,
    /** For keys no text command can name. */
    private readonly binaryLocal: LocalMemcachedBinary,
    private readonly history: Pick<LocalHistory, 'values' | 'flushes' | 'expiries'>,
    private readonly contention: Pick<Contention, 'holdClientWrites' | 'releaseClientWrites'>,
    private readonly metrics: ReplicationMetrics,
    private readonly batches: Pick<ApplyBatches, 'sendFlush'>,
    private readonly events: Pick<ApplierEvents, 'refused'>,
  ) {}

  /** The peer's flush_all, run the way memcached would have run it here (see flush-schedule.ts). */
  apply(batch: Batch, record: RecordFrame, command: Stamp, sentAt: number): void {
    const timing: FlushTiming =
      record.delay === FLUSH_CANCEL ? { kind: 'cancel' } : record.delay === 0 ? { kind: 'now' } : { kind: 'delayed', delayMs: record.delay * 1000 };
    const at = expiresAtFromTtl(record.ttlMs, sentAt);
    const remainingMs = typeof at === 'number' ? at - Date.now() : 0;
    const action = this.history.flushes.incoming(command, timing, remainingMs);
    switch (action.kind) {
      case 'skip':
        this.metrics.recordsSkipped.labels('conflict').inc();
        return;
      case 'cancel':
        return batch.commands.command(flushAll(CANCEL_FLUSH_EXPTIME, true), 'flush');
      case 'schedule':
        this.metrics.recordsApplied.labels('flush').inc();
        this.schedule(action.at).catch((error: Error) => this.events.refused(`could not schedule the peer's delayed flush_all: ${error.message}`));
        return;
      case 'flush':
        return this.flushKeepingNewer(batch, action);
    }
  }

  /**
   * Gives memcached a delayed flush at `at`, once its clock's phase is known
   * (see memcached-clock.ts), unless another command replaced it meanwhile:
   * the peer's, or one memcached lost by restarting. Sent on the applier's
   * connection, outside the batches: a delayed flush cuts by the time items
   * were stored, not by the order of commands.
   */
  schedule(at: Stamp): Promise<void> {
    return memcachedClockEpoch(this.local).then((epoch) => {
      this.clockEpoch = { epoch, measuredAt: Date.now() };
      // Replaced or cancelled meanwhile: not sent. Come due meanwhile (a short delay): sent all the same.
      const { pendingAt, floor } = this.history.flushes.state;
      if (pendingAt !== at && floor !== at) return;
      return this.local.quietBatch(flushAll(flushTimeFor(at.wall, epoch), true)).then(() => {});
    });
  }

  /** The last measured phase of memcached's clock, if recent enough to trust (it drifts). */
  private recentClockEpoch(): number | null {
    const known = this.clockEpoch;
    return known && Date.now() - known.measuredAt < CLOCK_EPOCH_FRESH_MS ? known.epoch : null;
  }

  /**
   * Flushes, but keeps the keys written here after the flush's moment: on the
   * flush's origin they were applied after it and survive, so they must
   * survive here too. They are read in the same batch, before the flush, and
   * stored back (add: a client write since wins) as soon as memcached has
   * answered, ahead of every later batch, unless written again meanwhile.
   */
  private flushKeepingNewer(batch: Batch, action: Extract<FlushAction, { kind: 'flush' }>): void {
    const keep: Kept[] = [];
    this.batches.sendFlush(batch, {
      // Client writes already on their way to memcached land before the flush and are known as kept keys
      // once answered; those that come after wait until the kept keys are back (see Contention.holdClientWrites).
      fill: (commands) =>
        this.contention.holdClientWrites(QUIET_WAIT_MS).then(() => {
          this.history.values.forEachNewerThan(action.moment, (key, write) => keep.push({ key: Buffer.from(key), stamp: stampOf(write) }));
          // Text keys first: kept in that order, memcached answers their reads in that order.
          keep.sort((x, y) => Number(needsBinary(x.key)) - Number(needsBinary(y.key)));
          keep.forEach(({ key }, i) => (needsBinary(key) ? commands.binaryCommand(binaryFetch(key, i), null) : commands.command(metaRead(key), null)));
          commands.command(flushAll(0, true), 'flush');
          // After the flush now, in the same batch: sent apart, it could reach memcached first and be undone by it.
          if (action.reschedule !== null) commands.command(flushAll(flushTimeFor(action.reschedule.wall, this.recentClockEpoch()), true), null);
        }),
      // The kept keys are stored back before the batches after the flush are sent (its barrier), so
      // that clients here do not see them missing for longer than one round trip to memcached.
      answered: async ([reads, binaryReads]) => {
        this.history.flushes.ran(action.moment);
        await this.restore(keep, [reads.splice(0, keep.filter(({ key }) => !needsBinary(key)).length), binaryReads.splice(0)]);
        // Client writes held go once the kept keys are back: a delete must not land before the add it undoes.
        this.contention.releaseClientWrites();
      },
      // A flush that failed still lets the client writes it held go.
      failed: () => this.contention.releaseClientWrites(),
    });
  }

  /**
   * Stores back what flushKeepingNewer read, as adds (a client write since
   * the flush is newer) and only for keys not written again since it read
   * them. Sent on the same connections, ahead of every batch after the flush.
   */
  private restore(keep: readonly Kept[], [reads, binaryReads]: Answers): Promise<unknown> {
    const commands = new CommandBatch();
    const now = this.local.lastReceivedAt;
    const unchanged = (key: Buffer, stamp: Stamp) => {
      const last = this.history.values.lastWriteOf(key);
      return last !== undefined && compareStamps(last, stamp) === 0;
    };
    keep.forEach(({ key, stamp }, i) => {
      const read = reads[i];
      if (!read || !unchanged(key, stamp)) return;
      const item = recordFromReadBack(key, [read], stamp, now);
      if (!item || !carriesItem(item.op)) return;
      commands.store({ op: 'add', key, value: item.value, flags: item.flags }, exptimeFor(item.expiresAt, Date.now()));
      // Stale before the flush, stale after it (client writes wait until the kept keys are back: the mark is the add's).
      if (item.op === 'invalidate') commands.command(metaInvalidate(key, true), null);
    });
    // Binary reads answer hits only, each with the opaque it was sent with: its place in `keep`.
    for (const read of binaryReads) {
      const kept = keep[read.header.opaque];
      if (read.header.status !== Status.Success || !kept || !unchanged(kept.key, kept.stamp)) continue;
      const deadline = this.history.expiries.deadlineOf(kept.key);
      if (deadline !== undefined) commands.binaryCommand(binaryStore('add', kept.key, read.value, flagsOf(read), exptimeFor(deadline, Date.now())), null);
    }
    // Answered before the flush's batch settles: a client's own flush_all waits for that (see Applier.pauseForLocalFlush).
    const text = commands.text();
    const stored = [
      text.length > 0 ? this.local.quietBatch(text) : null,
      commands.binary.length > 0 ? this.binaryLocal.quietBatch(Buffer.concat(commands.binary)) : null,
    ];
    return Promise.all(stored).catch(() => {});
  }
}
