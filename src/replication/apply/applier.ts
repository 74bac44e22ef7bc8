/**
 * Applies the peer's records to the local memcached, in the order they
 * arrive, on a connection of its own. Writes made here are never recorded,
 * so they are never shipped back (loop prevention).
 *
 * Records are judged as they arrive and written as quiet meta commands
 * (`ms ... q`, `md ... q`, `flush_all noreply`) into one batch per tick,
 * closed by `mn`: memcached answers only what went wrong, and the whole
 * batch settles with one reply. A record costs no promise, no reply and no
 * socket write of its own: a copy is a million records back to back, and a
 * busy peer sends tens of thousands a second.
 *
 * Keys no text command can name (see binary-keys.ts) go, in the same batch,
 * as quiet binary requests on a binary connection, closed by a NOOP. A key
 * always takes the same connection, and each is FIFO, so each key's records
 * apply in order; batches settle in the order they were sent, whichever
 * connection answers first. An immediate flush is a barrier across the two
 * (see send).
 *
 * Conflicts: a record loses to a newer write of the same key that already
 * took effect here (last writer by hybrid logical clock, ties by node id), so
 * concurrent writes on both nodes end the same on both.
 *
 * Expiry: the record says how long the item had left when it was sent; the
 * deadline is computed on this node's clock at arrival, so it does not grow
 * by the replication delay and the two hosts' clocks need not agree.
 */
import { Status, type BinaryPacket } from '../../protocol/binary/messages';
import { exptimeFor } from '../../protocol/text/expiry';
import type { ReplyPart } from '../../protocol/text/reply-parser';
import { flushAll, metaDelete, metaInvalidate, metaRead, metaTouch } from '../../protocol/text/serializer';
import { binaryDelete, binaryFetch, binaryRefusal, binaryStore, binaryTouch, flagsOf, needsBinary } from '../binary-keys';
import { expiresAtFromTtl, FLUSH_CANCEL, type Expiry, type RecordFrame, type RecordOp } from '../link/frames/messages';
import type { Contention } from './contention';
import { BATCH_BYTES, CommandBatch } from './command-batch';
import type { Stored } from '../flush/flush-edge';
import { CANCEL_FLUSH_EXPTIME, type FlushAction, type FlushTiming } from '../flush/flush-schedule';
import { flushTimeFor, memcachedClockEpoch } from '../flush/memcached-clock';
import { compareHlc, compareStamps, HLC_ZERO, type Hlc, type HybridClock, type Stamp } from '../conflict/hlc';
import type { LocalMemcached, LocalMemcachedBinary } from '../local-memcached';
import type { ReplicationMetrics } from '../metrics';
import type { LocalHistory } from '../send/recorder';
import { recordFromReadBack } from '../send/recorder';

/**
 * Records on their way to memcached as one batch of quiet commands.
 */
interface Batch {
  commands: CommandBatch;
  /** Contention tickets of the records sent (they settle with the batch). */
  tickets: number[];
  /** Full-copy records it accounts for, stored or skipped as conflicts. */
  copies: number;
  /** The last live (numbered) record it accounts for; 0 for none. */
  lastSeq: number;
  /** The live stream its records belong to (see newStream). */
  stream: number;
  /** A flush's batch: the keys read before it, to store back once memcached answered it (see flushKeepingNewer). */
  keep?: Kept[];
  /** A flush's batch is filled only when its turn comes (see flushKeepingNewer). */
  prepare?: () => Promise<void>;
  /** A flush's batch: its moment, told to history.flushes once memcached answered (see FlushSchedule.survivorStamp). */
  flushes?: Stamp;
  /** Writes to report once answered, while a delayed flush's moment is near (see flush-edge.ts). */
  nearFlush?: Array<{ key: Buffer; stamp: Stamp; stored: Stored | null }>;
}

/** A peer's record that arrived while a client's flush_all was in flight (see Applier.pauseForLocalFlush). */
interface Deferred {
  record: RecordFrame;
  origin: string;
  sentAt: number;
  stream: number;
}
/** Roughly what a deferred record costs beyond its key and value. */
const DEFERRED_OVERHEAD_BYTES = 200;

/** A key read before a flush, to store back after it unless written again since. */
interface Kept {
  key: Buffer;
  stamp: Stamp;
}

/** What memcached answered a batch before its sentinels: the failures, or the reads of a flush's batch. */
type Answers = [text: ReplyPart[], binary: BinaryPacket[]];
const NO_TEXT: Promise<ReplyPart[]> = Promise.resolve([]);
const NO_BINARY: Promise<BinaryPacket[]> = Promise.resolve([]);

/** What a batch did once memcached answered it: see ApplierEvents.batchAnswered. */
export interface BatchAnswered {
  copies: number;
  lastSeq: number;
}

export interface ApplierEvents {
  /**
   * memcached answered a batch: it stored its records (or refused some, counted
   * and logged), or they all failed to reach it (`error`: the link must
   * reset). Batches are answered in the order they were sent, so `lastSeq` is the
   * live stream's applied position.
   */
  batchAnswered(answered: BatchAnswered, error?: Error): void;
  /** bytesApplying fell below the resume mark: the link may be read again. */
  drained(): void;
  /** memcached refused a record (the node logs it). */
  refused(reason: string): void;
}

/** How long a flush waits for client writes in flight to be answered before it runs anyway (memcached stalled). */
const QUIET_WAIT_MS = 2000;
/** A measured phase of memcached's clock is trusted this long (its timer drifts a little every tick). */
const CLOCK_EPOCH_FRESH_MS = 60_000;
/** A batch goes to memcached at the end of the tick, or once its commands reach this size. */
/** Flow control: above this many bytes sent to memcached and not answered, the link stops being read; below the second, it is read again. */
export const APPLYING_PAUSE_ABOVE = 8 * 1024 * 1024;
const APPLYING_RESUME_BELOW = 2 * 1024 * 1024;

export class Applier {
  /**
   * The stamp of this node's last record the peer's copy under way covers:
   * the peer reads its memcached only once it applied this node's records up
   * to the one its RESYNC_BEGIN names (where this node told it, on that link,
   * that its stream ended), so the copy holds every local write stamped up to
   * this; later ones it may predate. Set when that copy begins, and only then:
   * a HELLO on another connection meanwhile says nothing of this copy.
   */
  copyCovers: Hlc = HLC_ZERO;

  constructor(
    private readonly local: LocalMemcached,
    /** For keys no text command can name. */
    private readonly binaryLocal: LocalMemcachedBinary,
    private readonly clock: HybridClock,
    private readonly history: LocalHistory,
    private readonly contention: Contention,
    private readonly metrics: ReplicationMetrics,
    private readonly nodeId: string,
    private readonly events: ApplierEvents,
  ) {}

  private batch: Batch | null = null;
  private stream = 0;
  /** Bytes of commands sent to memcached and not answered yet (see APPLYING_PAUSE_ABOVE). */
  bytesApplying = 0;
  /** Batches settle one after the other, in the order they were sent. */
  private settling: Promise<void> = Promise.resolve();
  /** An immediate flush in flight: batches judged after it wait until memcached ran it (see send). */
  private barrier: Promise<void> | null = null;
  /** Clients' own flush_all in flight (see pauseForLocalFlush), and the records that arrived meanwhile. */
  private pauses = 0;
  private deferred: Deferred[] = [];
  private deferredBytes = 0;
  /** memcached's clock phase as last measured, for a delayed flush given in a batch (see scheduleFlush). */
  private clockEpoch: { epoch: number | null; measuredAt: number } | null = null;

  /**
   * A full copy's record (seq 0): the peer's state of a key when it read it.
   * It stands unless this node's clients wrote the key since (see copyApplies).
   */
  applyCopy(record: RecordFrame, sentAt: number): void {
    if (this.pauses > 0) return this.defer(record, '', sentAt);
    this.clock.observe(record.hlc);
    const batch = this.openBatch();
    batch.copies++;
    // Stamped with the key's last write the peer remembers, else when its memcached answered (0 from a memrepl
    // before that): written before a flush's moment this node has passed, it went with the flush there.
    const read: Stamp = { wall: record.hlc.wall, logical: record.hlc.logical, nodeId: '' };
    if (read.wall > 0 && this.history.flushes.erases(read)) return this.skipped();
    // A client write on its way to memcached is newer still (see Contention).
    const ticket = this.copyApplies(record) ? this.contention.copyStarted(record.key) : null;
    if (ticket === null) return this.skipped();
    batch.tickets.push(ticket);
    // A touch by a client here after the covered point is newer than the copy's expiry (and on its way to the peer).
    const touch = this.history.touches.lastWriteOf(record.key);
    const ownTouch = touch !== undefined && touch.nodeId === this.nodeId && compareHlc(touch, this.copyCovers) > 0;
    const deadline = this.write(batch, this.sameWriteAdds(record), sentAt, ownTouch ? touch.expiresAt : undefined);
    if (read.wall > 0) this.noteNearFlush(batch, record, read, deadline);
  }

  /**
   * A live record (seq > 0): it loses to a newer write of the key that took
   * effect here (last writer by hybrid logical clock, ties by node id).
   */
  applyLive(record: RecordFrame, origin: string, sentAt: number): void {
    if (this.pauses > 0) return this.defer(record, origin, sentAt);
    this.clock.observe(record.hlc);
    const batch = this.openBatch();
    batch.lastSeq = record.seq;
    const stamp: Stamp = { wall: record.hlc.wall, logical: record.hlc.logical, nodeId: origin };
    if (record.op === 'flush') return this.applyFlush(batch, record, stamp, sentAt);
    if (this.history.flushes.erases(stamp)) return this.skipped();
    const { values, touches } = this.history;
    if (record.op === 'touch') {
      // A touch changes only the expiry: it loses to any newer write of the key, value or expiry.
      if (!values.incomingWins(record.key, stamp) || !touches.incomingWins(record.key, stamp)) return this.skipped();
      const deadline = expiresAtFromTtl(record.ttlMs, sentAt);
      touches.note(record.key, stamp, deadline);
      this.write(batch, record, sentAt, deadline);
      return;
    }
    if (record.op === 'add') return this.applyTouchedItem(batch, record, stamp, sentAt);
    if (!values.incomingWins(record.key, stamp)) return this.skipped();
    values.note(record.key, stamp);
    // A newer touch of the key here (or from the peer) keeps its expiry over the older value's.
    const touch = carriesItem(record.op) ? touches.lastWriteOf(record.key) : undefined;
    const expiresAt = touch && compareStamps(touch, stamp) > 0 ? touch.expiresAt : undefined;
    const deadline = this.write(batch, record, sentAt, expiresAt);
    this.noteNearFlush(batch, record, stamp, deadline);
  }

  /**
   * The item a touch on the peer extended, stamped with the write of its value
   * (see Recorder.shipTouchedItem): stored only where the key is gone (an add),
   * and only if nothing newer than that value was written here. That write may
   * have been this node's, remembered under its own id: compared by clock alone.
   * Not noted: it is no new write.
   */
  private applyTouchedItem(batch: Batch, record: RecordFrame, stamp: Stamp, sentAt: number): void {
    const last = this.history.values.lastWriteOf(record.key);
    if (last && compareHlc(last, record.hlc) > 0) return this.skipped();
    const deadline = this.write(batch, record, sentAt);
    this.noteNearFlush(batch, record, stamp, deadline);
  }

  /** While a delayed flush's moment is near, the write is reported to history.nearFlush once answered (see flush-edge.ts). */
  private noteNearFlush(batch: Batch, record: RecordFrame, stamp: Stamp, deadline: Expiry): void {
    if (!this.history.nearFlush.armed) return;
    const stores = carriesItem(record.op) || record.op === 'add';
    // Copies: the record's bytes are views of the link's chunks, kept here for seconds.
    const stored = stores ? { value: Buffer.from(record.value), flags: record.flags, expiresAt: deadline } : null;
    (batch.nearFlush ??= []).push({ key: Buffer.from(record.key), stamp, stored });
  }

  /**
   * A client's flush_all is about to go to memcached, on a connection the
   * applier's are not ordered with. Resolves once every batch sent so far
   * been answered (their records landed before the flush, and are flushed as on
   * their origin, where they were older than it); records arriving from now
   * on are not judged until resumeAfterLocalFlush, which comes after the
   * flush took effect and was noted (see FlushSchedule), so that each is
   * judged against it and lands after it. Never rejects.
   */
  pauseForLocalFlush(): Promise<void> {
    this.pauses++;
    return this.idle();
  }

  /** Resolves once every record judged so far is answered by memcached (or failed). Never rejects. */
  idle(): Promise<void> {
    this.flush();
    return this.settling;
  }

  /** The client's flush ran (or failed): once no other holds it, the records that waited are judged, in order. */
  resumeAfterLocalFlush(): void {
    this.pauses = Math.max(0, this.pauses - 1);
    if (this.pauses > 0) return;
    const deferred = this.deferred;
    this.deferred = [];
    this.answered(this.deferredBytes);
    this.deferredBytes = 0;
    for (const { record, origin, sentAt, stream } of deferred) {
      if (stream !== this.stream) {
        // The inbox follows another stream since (see newStream): the peer sends these again.
        if (record.seq === 0) this.events.batchAnswered({ copies: 1, lastSeq: 0 });
        continue;
      }
      if (record.seq === 0) this.applyCopy(record, sentAt);
      else this.applyLive(record, origin, sentAt);
    }
  }

  /** Held while a client's flush is in flight; counted as applying, so that the link stops being read if many wait. */
  private defer(record: RecordFrame, origin: string, sentAt: number): void {
    this.deferred.push({ record, origin, sentAt, stream: this.stream });
    const bytes = record.key.length + record.value.length + DEFERRED_OVERHEAD_BYTES;
    this.deferredBytes += bytes;
    this.bytesApplying += bytes;
  }

  private skipped(): void {
    this.metrics.recordsSkipped.labels('conflict').inc();
  }

  /**
   * Gives memcached a delayed flush at `at`, once its clock's phase is known
   * (see memcached-clock.ts), unless another command replaced it meanwhile:
   * the peer's, or one memcached lost by restarting. Sent on the applier's
   * connection, outside the batches: a delayed flush cuts by the time items
   * were stored, not by the order of commands.
   */
  scheduleFlush(at: Stamp): Promise<void> {
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

  /** The peer's flush_all, run the way memcached would have run it here (see flush-schedule.ts). */
  private applyFlush(batch: Batch, record: RecordFrame, command: Stamp, sentAt: number): void {
    const timing: FlushTiming =
      record.delay === FLUSH_CANCEL ? { kind: 'cancel' } : record.delay === 0 ? { kind: 'now' } : { kind: 'delayed', delayMs: record.delay * 1000 };
    const at = expiresAtFromTtl(record.ttlMs, sentAt);
    const remainingMs = typeof at === 'number' ? at - Date.now() : 0;
    const action = this.history.flushes.incoming(command, timing, remainingMs);
    switch (action.kind) {
      case 'skip':
        return this.skipped();
      case 'cancel':
        return batch.commands.command(flushAll(CANCEL_FLUSH_EXPTIME, true), 'flush');
      case 'schedule':
        this.metrics.recordsApplied.labels('flush').inc();
        this.scheduleFlush(action.at).catch((error: Error) => this.events.refused(`could not schedule the peer's delayed flush_all: ${error.message}`));
        return;
      case 'flush':
        return this.flushKeepingNewer(batch, action);
    }
  }

  /**
   * Flushes, but keeps the keys written here after the flush's moment: on the
   * flush's origin they were applied after it and survive, so they must
   * survive here too. They are read in the same batch, before the flush, and
   * stored back (add: a client write since wins) as soon as memcached has
   * answered, ahead of every later batch, unless written again meanwhile.
   */
  private flushKeepingNewer(batch: Batch, action: Extract<FlushAction, { kind: 'flush' }>): void {
    // In a batch of its own, so that memcached's answers before its sentinels are exactly these reads'.
    const lastSeq = batch.lastSeq;
    batch.lastSeq = 0;
    this.flush();
    const own = this.openBatch();
    own.lastSeq = lastSeq;
    // Client writes already on their way to memcached land before the flush and are known as kept keys
    // once answered; those that come after wait until the kept keys are back (see Contention.holdClientWrites).
    own.prepare = () =>
      this.contention.holdClientWrites(QUIET_WAIT_MS).then(() => {
        const keep: Kept[] = [];
        this.history.values.forEachNewerThan(action.moment, (key, write) =>
          keep.push({ key: Buffer.from(key), stamp: { wall: write.wall, logical: write.logical, nodeId: write.nodeId } }),
        );
        // Text keys first: kept in that order, memcached answers their reads in that order.
        keep.sort((x, y) => Number(needsBinary(x.key)) - Number(needsBinary(y.key)));
        keep.forEach(({ key }, i) => (needsBinary(key) ? own.commands.binaryCommand(binaryFetch(key, i), null) : own.commands.command(metaRead(key), null)));
        own.commands.command(flushAll(0, true), 'flush');
        // After the flush now, in the same batch: sent apart, it could reach memcached first and be undone by it.
        if (action.reschedule !== null) own.commands.command(flushAll(flushTimeFor(action.reschedule.wall, this.recentClockEpoch()), true), null);
        own.keep = keep;
        own.flushes = action.moment;
      });
    this.flush(true);
  }

  /**
   * Stores back what flushKeepingNewer read, as adds (a client write since
   * the flush is newer) and only for keys not written again since it read
   * them. Sent on the same connections, ahead of every batch after the flush.
   */
  private restore(keep: readonly Kept[], [reads, binaryReads]: Answers): Promise<unknown> {
    const batch = this.newBatch();
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
      batch.commands.store({ op: 'add', key, value: item.value, flags: item.flags }, exptimeFor(item.expiresAt, Date.now()));
      // Stale before the flush, stale after it (client writes wait until the kept keys are back: the mark is the add's).
      if (item.op === 'invalidate') batch.commands.command(metaInvalidate(key, true), null);
    });
    // Binary reads answer hits only, each with the opaque it was sent with: its place in `keep`.
    for (const read of binaryReads) {
      const kept = keep[read.header.opaque];
      if (read.header.status !== Status.Success || !kept || !unchanged(kept.key, kept.stamp)) continue;
      const deadline = this.history.expiries.deadlineOf(kept.key);
      if (deadline !== undefined) batch.commands.binaryCommand(binaryStore('add', kept.key, read.value, flagsOf(read), exptimeFor(deadline, Date.now())), null);
    }
    // Answered before the flush's batch settles: a client's own flush_all waits for that (see pauseForLocalFlush).
    const text = batch.commands.text();
    const stored = [
      text.length > 0 ? this.local.quietBatch(text) : NO_TEXT,
      batch.commands.binary.length > 0 ? this.binaryLocal.quietBatch(Buffer.concat(batch.commands.binary)) : NO_BINARY,
    ];
    return Promise.all(stored).catch(() => {});
  }

  /**
   * The inbox follows another stream (the peer's new run, or a restart of its
   * copy), or must not trust the batches in flight (one failed): batches sent
   * before now report no live position when they settle.
   */
  newStream(): void {
    this.flush();
    this.stream++;
  }

  private openBatch(): Batch {
    if (this.batch) return this.batch;
    // Sent at the end of the tick: everything judged in this tick goes out in one write.
    process.nextTick(() => this.flush());
    this.batch = this.newBatch();
    return this.batch;
  }

  private newBatch(): Batch {
    return { commands: new CommandBatch(), tickets: [], copies: 0, lastSeq: 0, stream: this.stream };
  }

  /** The record's quiet command into the batch, its key counted in flight for Contention. */
  /** Returns the deadline it gave the item. */
  private write(batch: Batch, record: RecordFrame, sentAt: number, expiresAt?: number | null): Expiry {
    if (record.seq > 0) batch.tickets.push(this.contention.applyStarted(record.key));
    const deadline = expiresAt !== undefined ? expiresAt : expiresAtFromTtl(record.ttlMs, sentAt);
    const exptime = exptimeFor(deadline, Date.now());
    if (needsBinary(record.key)) this.writeBinary(batch, record, deadline, exptime);
    else this.writeText(batch, record, exptime);
    if (batch.commands.size >= BATCH_BYTES) this.flush();
    return deadline;
  }

  private writeText(batch: Batch, record: RecordFrame, exptime: number): void {
    switch (record.op) {
      case 'set':
      case 'add':
        batch.commands.store(record, exptime);
        break;
      case 'touch':
        batch.commands.command(metaTouch(record.key, exptime, true), record.op);
        break;
      case 'invalidate':
        // The item as the peer holds it, then the mark: the peer's value, not this node's one, is stale.
        batch.commands.store(record, exptime);
        batch.commands.command(metaInvalidate(record.key, true), null);
        break;
      case 'delete':
      case 'flush':
        batch.commands.command(metaDelete(record.key, true), record.op);
        break;
    }
  }

  /** The binary twin of writeText, remembering the expiry it writes (the binary protocol cannot read it back). */
  private writeBinary(batch: Batch, record: RecordFrame, deadline: number | null, exptime: number): void {
    const { key } = record;
    const { expiries } = this.history;
    if (record.op === 'invalidate') {
      // Only meta commands invalidate, and none can name this key: no memrepl sends this.
      this.metrics.recordsSkipped.labels('refused').inc();
      this.events.refused('memcached has no binary command to invalidate a key no text command can name');
      return;
    }
    if (record.op === 'delete' || record.op === 'flush') {
      expiries.forget(key);
      batch.commands.binaryCommand(binaryDelete(key), record.op);
      return;
    }
    switch (record.op) {
      case 'set':
      case 'add':
        // An add that finds the key stored leaves that item's expiry as it was.
        if (record.op === 'set' || expiries.deadlineOf(key) === undefined) expiries.note(key, deadline);
        batch.commands.binaryCommand(binaryStore(record.op, key, record.value, record.flags, exptime), record.op);
        return;
      case 'touch':
        expiries.note(key, deadline);
        batch.commands.binaryCommand(binaryTouch(key, exptime), record.op);
        return;
    }
  }

  /**
   * Sends the pending batch (`barrier`: a flush's, see send). One that
   * accounts for live records goes even with no command in it (all were
   * conflicts): its `mn` keeps the applied position from passing records
   * still in flight before it.
   */
  flush(barrier = false): void {
    const batch = this.batch;
    if (!batch) return;
    this.batch = null;
    if (batch.commands.sent.size === 0 && batch.lastSeq === 0 && !batch.prepare) {
      this.events.batchAnswered({ copies: batch.copies, lastSeq: 0 });
      return;
    }
    let bytes = 0;
    const commands = (): [Buffer, Buffer[]] => {
      const text = batch.commands.text();
      bytes = text.length + batch.commands.binaryBytes;
      this.bytesApplying += bytes;
      return [text, batch.commands.binary];
    };
    const answered = (): BatchAnswered => {
      this.answered(bytes);
      return { copies: batch.copies, lastSeq: batch.stream === this.stream ? batch.lastSeq : 0 };
    };
    // A flush's kept keys are stored back before the batches after it are sent (its barrier), so
    // that clients here do not see them missing for longer than one round trip to memcached.
    const restoreKept = async ([reads, binaryReads]: Answers) => {
      if (batch.flushes) this.history.flushes.ran(batch.flushes);
      const keep = batch.keep;
      const restored = keep ? this.restore(keep, [reads.splice(0, keep.filter(({ key }) => !needsBinary(key)).length), binaryReads.splice(0)]) : null;
      // Client writes held go once the kept keys are back: a delete must not land before the add it undoes.
      await restored;
      if (batch.prepare) this.contention.releaseClientWrites();
    };
    const answers = batch.prepare
      ? this.send(() => batch.prepare!().then(commands), barrier, restoreKept)
      : this.send(commands(), barrier, batch.keep ? restoreKept : undefined);
    // A flush that failed still lets the client writes it held go.
    if (batch.prepare) answers.catch(() => this.contention.releaseClientWrites());
    const settle = () =>
      answers.then(
        ([failures, binaryFailures]) => {
          this.contention.appliesEnded(batch.tickets);
          for (const { key, stamp, stored } of batch.nearFlush ?? []) this.history.nearFlush.answered(key, stamp, stored);
          this.countOutcomes(batch.commands.sent, [...failures.map(refusalOf), ...binaryFailures.map(binaryRefusal)]);
          this.events.batchAnswered(answered());
        },
        (error: Error) => {
          this.contention.appliesEnded(batch.tickets);
          this.events.batchAnswered(answered(), error);
        },
      );
    this.settling = this.settling.then(settle, settle);
  }

  /**
   * Sends a batch's text commands (with `mn`, unless it has only binary ones)
   * and its binary requests (with a NOOP). Each connection keeps its order,
   * which keeps each key's. An immediate flush (`barrier`) must also fall
   * between the binary requests sent before it and after it: its batch sends
   * its binary part first (reads of keys to keep, or just the NOOP: answered
   * after every binary request sent before) and its text part once memcached
   * answered that, and batches sent after it wait until memcached ran it. (A
   * delayed flush and a cancel need no barrier: memcached flushes what was
   * stored before the moment, whenever the command ran.)
   */
  private send(
    commands: [Buffer, Buffer[]] | (() => Promise<[Buffer, Buffer[]]>),
    barrier: boolean,
    beforeRelease?: (answers: Answers) => Promise<void>,
  ): Promise<Answers> {
    const run = async (): Promise<Answers> => {
      const [text, binary] = typeof commands === 'function' ? await commands() : commands;
      const sendText = () => (text.length > 0 || binary.length === 0 ? this.local.quietBatch(text) : NO_TEXT);
      const sendBinary = () => (binary.length > 0 || barrier ? this.binaryLocal.quietBatch(Buffer.concat(binary)) : NO_BINARY);
      if (!barrier) return Promise.all([sendText(), sendBinary()]);
      const packets = await sendBinary();
      return [await sendText(), packets];
    };
    const ran = this.barrier ? this.barrier.then(run) : run();
    const answers = beforeRelease ? ran.then(async (got) => (await beforeRelease(got), got)) : ran;
    if (barrier) {
      const done = answers.then(
        () => {},
        () => {},
      );
      this.barrier = done;
      void done.then(() => {
        if (this.barrier === done) this.barrier = null;
      });
    }
    return answers;
  }

  private answered(bytes: number): void {
    const before = this.bytesApplying;
    this.bytesApplying -= bytes;
    if (before > APPLYING_RESUME_BELOW && this.bytesApplying <= APPLYING_RESUME_BELOW) this.events.drained();
  }

  /**
   * memcached answered only what did not go well. NS (an add of a key it has),
   * NF (a delete or touch of a key it lacks) and HD (a touch that hit: mg's q
   * hides only misses) are fine; an error is a record memcached refuses (out
   * of memory, too large for this memcached's -I), which would be refused
   * again on every retry, so it is counted and logged instead of wedging the
   * link.
   */
  private countOutcomes(sent: Map<RecordOp, number>, refusals: Array<string | null>): void {
    let refused = 0;
    for (const refusal of refusals) {
      if (refusal === null) continue;
      refused++;
      this.events.refused(`memcached refused a replicated record: ${refusal}`);
    }
    if (refused > 0) this.metrics.recordsSkipped.labels('refused').inc(refused);
    // Refusals are not told apart by op: count them against the largest first.
    for (const [op, n] of [...sent].sort((a, b) => b[1] - a[1])) {
      const taken = Math.min(n, refused);
      refused -= taken;
      if (n > taken) this.metrics.recordsApplied.labels(op).inc(n - taken);
    }
  }

  /**
   * A full copy's records (seq 0) are not stamped writes but the peer's state
   * when it read the key, and are never remembered. That state includes every
   * write of this node the copy covers (see copyCovers) and every earlier
   * write of the peer (the peer drops a key its own clients wrote after it
   * read it). So a copy stands unless this node's clients wrote the key after
   * the covered point: that write is here and on its way to the peer, and is
   * newer (and so is one still on its way to memcached: Contention.copyStarted
   * refuses the record then). Otherwise add or set decides, in memcached (see
   * replicator.ts).
   */
  private copyApplies(record: RecordFrame): boolean {
    const last = this.history.values.lastWriteOf(record.key);
    return !last || last.nodeId !== this.nodeId || compareHlc(last, this.copyCovers) <= 0;
  }

  /**
   * A copy's item stamped with the very write this node last noted for the key
   * is that write, already here: a set would store the same bytes again and
   * give them a new CAS unique, failing a client's gets/cas in between for a
   * write nobody made. An add keeps the item (and fills it in if memcached
   * lost it since), with the expiry it has here: the copy's was read back on
   * each node on its way, a second or two short. An invalidation's too keeps
   * its mark (one filled in comes back unmarked).
   */
  private sameWriteAdds(record: RecordFrame): RecordFrame {
    if (!carriesItem(record.op)) return record;
    const last = this.history.values.lastWriteOf(record.key);
    if (!last || last.wall !== record.hlc.wall || last.logical !== record.hlc.logical) return record;
    return { ...record, op: 'add' };
  }
}

/** A record with the item whole (an add's may not be stored). */
function carriesItem(op: RecordOp): boolean {
  return op === 'set' || op === 'invalidate';
}

/** A text answer that means memcached refused the record, as a line for the log; null for one that is fine. */
function refusalOf({ line }: ReplyPart): string | null {
  return line.startsWith('SERVER_ERROR') || line.startsWith('CLIENT_ERROR') || line === 'ERROR' ? line : null;
}
