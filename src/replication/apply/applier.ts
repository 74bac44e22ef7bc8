/**
 * Applies the peer's records to the local memcached, in the order they
 * arrive, on a connection of its own. Writes made here are never recorded,
 * so they are never shipped back (loop prevention).
 *
 * Each record is judged here as it arrives, then written into a batch of
 * quiet commands (see apply-batches.ts); the peer's flush_all takes its own
 * way (see peer-flushes.ts).
 *
 * Conflicts: a record loses to a newer write of the same key that already
 * took effect here (last writer by hybrid logical clock, ties by node id), so
 * concurrent writes on both nodes end the same on both.
 *
 * Expiry: the record says how long the item had left when it was sent; the
 * deadline is computed on this node's clock at arrival, so it does not grow
 * by the replication delay and the two hosts' clocks need not agree.
 */
import { expiresAtFromTtl, type Expiry, type RecordFrame } from '../link/frames/messages';
import { compareHlc, compareStamps, HLC_ZERO, type Hlc, type HybridClock, type Stamp } from '../conflict/hlc';
import type { LocalMemcached, LocalMemcachedBinary } from '../local-memcached';
import type { ReplicationMetrics } from '../metrics';
import type { LocalHistory } from '../send/recorder';
import { ApplyBatches, carriesItem, type Batch } from './apply-batches';
import type { Contention } from './contention';
import { PeerFlushes } from './peer-flushes';

/** A peer's record that arrived while a client's flush_all was in flight (see Applier.pauseForLocalFlush). */
interface Deferred {
  record: RecordFrame;
  origin: string;
  sentAt: number;
  stream: number;
}
/** Roughly what a deferred record costs beyond its key and value. */
const DEFERRED_OVERHEAD_BYTES = 200;

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
  /** Bytes of commands sent to memcached and not answered yet, and of records deferred (see APPLYING_PAUSE_ABOVE). */
  bytesApplying = 0;
  private readonly batches: ApplyBatches;
  private readonly peerFlushes: PeerFlushes;
  /** Clients' own flush_all in flight (see pauseForLocalFlush), and the records that arrived meanwhile. */
  private pauses = 0;
  private deferred: Deferred[] = [];
  private deferredBytes = 0;

  constructor(
    local: LocalMemcached,
    /** For keys no text command can name. */
    binaryLocal: LocalMemcachedBinary,
    private readonly clock: HybridClock,
    private readonly history: LocalHistory,
    private readonly contention: Contention,
    private readonly metrics: ReplicationMetrics,
    private readonly nodeId: string,
    private readonly events: ApplierEvents,
  ) {
    this.batches = new ApplyBatches(local, binaryLocal, contention, history, metrics, events, {
      sent: (bytes) => {
        this.bytesApplying += bytes;
      },
      answered: (bytes) => this.answered(bytes),
    });
    this.peerFlushes = new PeerFlushes(local, binaryLocal, history, contention, metrics, this.batches, events);
  }

  /**
   * A full copy's record (seq 0): the peer's state of a key when it read it.
   * It stands unless this node's clients wrote the key since (see copyApplies).
   */
  applyCopy(record: RecordFrame, sentAt: number): void {
    if (this.pauses > 0) return this.defer(record, '', sentAt);
    this.clock.observe(record.hlc);
    const batch = this.batches.open();
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
    const deadline = this.batches.write(batch, this.sameWriteAdds(record), sentAt, ownTouch ? touch.expiresAt : undefined);
    if (read.wall > 0) this.noteNearFlush(batch, record, read, deadline);
  }

  /**
   * A live record (seq > 0): it loses to a newer write of the key that took
   * effect here (last writer by hybrid logical clock, ties by node id).
   */
  applyLive(record: RecordFrame, origin: string, sentAt: number): void {
    if (this.pauses > 0) return this.defer(record, origin, sentAt);
    this.clock.observe(record.hlc);
    const batch = this.batches.open();
    batch.lastSeq = record.seq;
    const stamp: Stamp = { wall: record.hlc.wall, logical: record.hlc.logical, nodeId: origin };
    if (record.op === 'flush') return this.peerFlushes.apply(batch, record, stamp, sentAt);
    if (this.history.flushes.erases(stamp)) return this.skipped();
    const { values, touches } = this.history;
    if (record.op === 'touch') {
      // A touch changes only the expiry: it loses to any newer write of the key, value or expiry.
      if (!values.incomingWins(record.key, stamp) || !touches.incomingWins(record.key, stamp)) return this.skipped();
      const deadline = expiresAtFromTtl(record.ttlMs, sentAt);
      touches.note(record.key, stamp, deadline);
      this.batches.write(batch, record, sentAt, deadline);
      return;
    }
    if (record.op === 'add') return this.applyTouchedItem(batch, record, stamp, sentAt);
    if (!values.incomingWins(record.key, stamp)) return this.skipped();
    values.note(record.key, stamp, null, record.op === 'delete');
    // A newer touch of the key here (or from the peer) keeps its expiry over the older value's.
    const touch = carriesItem(record.op) ? touches.lastWriteOf(record.key) : undefined;
    const expiresAt = touch && compareStamps(touch, stamp) > 0 ? touch.expiresAt : undefined;
    const deadline = this.batches.write(batch, record, sentAt, expiresAt);
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
    const deadline = this.batches.write(batch, record, sentAt);
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

  private skipped(): void {
    this.metrics.recordsSkipped.labels('conflict').inc();
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

  /**
   * A client's flush_all is about to go to memcached, on a connection the
   * applier's are not ordered with. Resolves once every batch sent so far
   * has been answered (their records landed before the flush, and are flushed as on
   * their origin, where they were older than it); records arriving from now
   * on are not judged until resumeAfterLocalFlush, which comes after the
   * flush took effect and was noted (see FlushSchedule), so that each is
   * judged against it and lands after it. Never rejects.
   */
  pauseForLocalFlush(): Promise<void> {
    this.pauses++;
    return this.idle();
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
      if (stream !== this.batches.stream) {
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
    this.deferred.push({ record, origin, sentAt, stream: this.batches.stream });
    const bytes = record.key.length + record.value.length + DEFERRED_OVERHEAD_BYTES;
    this.deferredBytes += bytes;
    this.bytesApplying += bytes;
  }

  private answered(bytes: number): void {
    const before = this.bytesApplying;
    this.bytesApplying -= bytes;
    if (before > APPLYING_RESUME_BELOW && this.bytesApplying <= APPLYING_RESUME_BELOW) this.events.drained();
  }

  /** Resolves once every record judged so far is answered by memcached (or failed). Never rejects. */
  idle(): Promise<void> {
    return this.batches.idle();
  }

  /**
   * The inbox follows another stream (the peer's new run, or a restart of its
   * copy), or must not trust the batches in flight (one failed): batches sent
   * before now report no live position when they settle.
   */
  newStream(): void {
    this.batches.newStream();
  }

  /** Sends the pending batch now (see ApplyBatches.flush). */
  flush(barrier = false): void {
    this.batches.flush(barrier);
  }

  /** Gives memcached a delayed flush at `at` (see PeerFlushes.schedule): the peer's, or one memcached lost by restarting. */
  scheduleFlush(at: Stamp): Promise<void> {
    return this.peerFlushes.schedule(at);
  }
}
