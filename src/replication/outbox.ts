/**
 * The sender's backlog (DESIGN.md §4): every write this node's clients made,
 * in the order memcached applied them, numbered 1, 2, 3 ... per process run,
 * and kept, acknowledged or not, until a byte bound pushes the oldest out.
 *
 * Why keep acknowledged records too: a peer that restarts its proxy (but not
 * its memcached), or whose link drops after it applied but before our ACK
 * arrived, tells us in its HELLO the last record it applied; if that record
 * is still here we send only the rest (partial resync) instead of copying the
 * whole cache. When it is not here any more, recordsAfter() says 'gap' and
 * the link must do a full resync: nothing a client was told is stored may
 * vanish from the stream silently.
 *
 * Records hold their expiry as an absolute deadline on this node's clock; the
 * serializer turns it into remaining time when the record is finally sent, so
 * time spent here does not lengthen the item's life on the peer.
 *
 * Pure: no sockets, no timers (the clock is injected, for appendedAt).
 */
import { recordFrameBytes, type OutgoingRecord } from './frames/messages';

/** What the write path appends: a record without its number. */
export type NewRecord = Omit<OutgoingRecord, 'seq'>;

export interface OutboxRecord extends OutgoingRecord {
  /** When it was appended (this node's clock, ms): for replication lag metrics. */
  readonly appendedAt: number;
  /** Its RECORD frame's size on the wire: what the byte bound counts. */
  readonly bytes: number;
}

export interface OutboxOptions {
  /**
   * Bound on the memory of the records held: their encoded RECORD frames plus
   * recordOverheadBytes each.
   */
  maxBytes: number;
  /**
   * What a held record costs beyond its frame bytes (its object, two Buffer
   * views, its numbers): ~380 bytes measured in a heap snapshot, more than
   * the frame of a small item. Counting it keeps --backlog-size a bound on
   * memory rather than on wire bytes (64 MiB of 188-byte frames held ~3x
   * that). 0 counts frame bytes only.
   */
  recordOverheadBytes?: number;
  clock?: () => number;
}

/** Default recordOverheadBytes (see OutboxOptions). */
export const RECORD_OVERHEAD_BYTES = 384;

/** Compact the array once this many slots at its front are dead (and they are the majority). */
const COMPACT_AFTER = 1024;

export class Outbox {
  private readonly maxBytes: number;
  private readonly recordOverhead: number;
  private readonly clock: () => number;
  /** Held records in seq order from `head`; slots before it are dropped. */
  private slots: Array<OutboxRecord | undefined> = [];
  private head = 0;
  /** Seq of slots[head] (= lastSeq + 1 when empty). */
  private firstSeq = 1;
  private heldBytes = 0;
  private acked = 0;
  private droppedCount = 0;
  private droppedUnackedCount = 0;
  private readonly slabs = new Slabs();

  constructor(opts: OutboxOptions) {
    if (!Number.isSafeInteger(opts.maxBytes) || opts.maxBytes < 0) throw new RangeError(`maxBytes must be a non-negative integer, got ${opts.maxBytes}`);
    this.maxBytes = opts.maxBytes;
    this.recordOverhead = opts.recordOverheadBytes ?? RECORD_OVERHEAD_BYTES;
    this.clock = opts.clock ?? Date.now;
  }

  /**
   * Appends a write that took effect and returns its seq. The oldest records
   * are dropped while the backlog is over its byte bound, except the newest
   * record itself: an item larger than the whole bound still reaches a peer
   * that keeps up (the backlog then exceeds the bound by that one record).
   */
  append(record: NewRecord): number {
    const seq = this.firstSeq + this.count;
    const [key, value] = this.slabs.copyPair(record.key, record.value);
    const stored: OutboxRecord = {
      seq,
      hlc: record.hlc,
      op: record.op,
      key,
      flags: record.flags,
      value,
      delay: record.delay,
      expiresAt: record.expiresAt,
      appendedAt: this.clock(),
      bytes: recordFrameBytes(record.key.length, record.value.length),
    };
    this.slots.push(stored);
    this.heldBytes += stored.bytes;
    while (this.heldBytes + this.count * this.recordOverhead > this.maxBytes && this.count > 1) this.dropOldest();
    return seq;
  }

  /** Seq of the last record appended in this run; 0 before the first. */
  get lastSeq(): number {
    return this.firstSeq + this.count - 1;
  }

  /** Seq of the oldest record still held; lastSeq + 1 when nothing is held. */
  get oldestSeq(): number {
    return this.firstSeq;
  }

  /** Records held. */
  get length(): number {
    return this.count;
  }

  /** Encoded size of the records held. */
  get bytes(): number {
    return this.heldBytes;
  }

  /**
   * The peer applied everything up to `seq` (cumulative; a stale or repeated
   * ACK is ignored). With several peers, pass the lowest of their ACKs: this
   * only feeds metrics and droppedUnacknowledged, each link keeps its own
   * position (a cursor, or the seq it passes to recordsAfter).
   */
  acknowledge(seq: number): void {
    checkSeq(seq);
    if (seq > this.lastSeq) throw new RangeError(`ACK for seq ${seq}, but the last record of this run is ${this.lastSeq}`);
    if (seq > this.acked) this.acked = seq;
  }

  get acknowledgedSeq(): number {
    return this.acked;
  }

  /** Records appended but not acknowledged (held or dropped). */
  get unacknowledged(): number {
    return this.lastSeq - this.acked;
  }

  /** The oldest held record not acknowledged yet: now - its appendedAt is the replication lag. */
  oldestUnacknowledged(): OutboxRecord | undefined {
    return this.get(Math.max(this.acked + 1, this.firstSeq));
  }

  /** Records dropped by the byte bound, in total / before they were acknowledged. */
  get dropped(): number {
    return this.droppedCount;
  }

  get droppedUnacknowledged(): number {
    return this.droppedUnackedCount;
  }

  /** The record with this seq, if still held. */
  get(seq: number): OutboxRecord | undefined {
    if (seq < this.firstSeq || seq > this.lastSeq) return undefined;
    return this.slots[this.head + (seq - this.firstSeq)];
  }

  /**
   * Everything after `seq` (the peer's last applied record of this run, 0 for
   * none), oldest first, or 'gap' if part of it was dropped and only a full
   * resync can bring the peer up to date. A seq beyond lastSeq is also a
   * 'gap': the peer claims records this run never wrote, so its state cannot
   * be trusted. `limit` caps how many are returned (copying is O(returned)),
   * so a send loop can page through a deep backlog.
   */
  recordsAfter(seq: number, limit = Infinity): OutboxRecord[] | 'gap' {
    checkSeq(seq);
    if (seq > this.lastSeq || seq < this.firstSeq - 1) return 'gap';
    const from = this.head + (seq + 1 - this.firstSeq);
    const to = Math.min(this.slots.length, from + Math.max(0, limit));
    return this.slots.slice(from, to) as OutboxRecord[];
  }

  /**
   * A reader positioned after `seq`, for a live link: next() hands out one
   * record at a time in O(1), however deep the backlog. 'gap' as for
   * recordsAfter.
   */
  cursor(afterSeq: number): OutboxCursor | 'gap' {
    checkSeq(afterSeq);
    if (afterSeq > this.lastSeq || afterSeq < this.firstSeq - 1) return 'gap';
    return new OutboxCursor(this, afterSeq);
  }

  private get count(): number {
    return this.slots.length - this.head;
  }

  private dropOldest(): void {
    const oldest = this.slots[this.head]!;
    this.slots[this.head] = undefined;
    this.head++;
    this.heldBytes -= oldest.bytes;
    this.droppedCount++;
    if (oldest.seq > this.acked) this.droppedUnackedCount++;
    this.firstSeq = oldest.seq + 1;
    if (this.head >= COMPACT_AFTER && this.head * 2 >= this.slots.length) {
      this.slots = this.slots.slice(this.head);
      this.head = 0;
    }
  }
}

/** Reads an outbox forward from a position; see Outbox.cursor. */
export class OutboxCursor {
  constructor(
    private readonly outbox: Outbox,
    private last: number,
  ) {}

  /** Seq of the last record handed out (or the starting point). */
  get position(): number {
    return this.last;
  }

  /** Records appended after the position (0 when caught up). */
  get pending(): number {
    return this.outbox.lastSeq - this.last;
  }

  /**
   * The next record, null when caught up, or 'gap' when the byte bound
   * dropped the next record before it was read (the peer fell too far
   * behind: full resync).
   */
  next(): OutboxRecord | null | 'gap' {
    if (this.last >= this.outbox.lastSeq) return null;
    const record = this.outbox.get(this.last + 1);
    if (record === undefined) return 'gap';
    this.last = record.seq;
    return record;
  }
}

function checkSeq(seq: number): void {
  if (!Number.isSafeInteger(seq) || seq < 0) throw new RangeError(`seq must be a non-negative integer, got ${seq}`);
}

/** Size of the allocations the backlog copies keys and values into. */
const SLAB_BYTES = 64 * 1024;

/**
 * A key or value parsed off a client connection is a view into a whole
 * socket read (~1 KiB under a pipelining client, 64 KiB at most). Held in
 * the backlog for minutes, such views kept far more memory alive than the
 * byte bound counts: under memcaslap, 54k records counted as 10 MB pinned
 * 32 MB of reads. Node's shared 8 KiB pool is no better: its pages also
 * hold short-lived allocations, and one record keeps a whole page alive.
 * So keys and values are copied into slabs of the backlog's own, in append
 * order; records leave oldest first, so a slab is freed as soon as its last
 * record goes.
 */
class Slabs {
  private slab = Buffer.alloc(0);
  private used = 0;

  copyPair(key: Buffer, value: Buffer): [Buffer, Buffer] {
    const size = key.length + value.length;
    if (size > SLAB_BYTES / 4) {
      // A large value that is (nearly) its own allocation is kept as it is rather than copied.
      const ownsItsMemory = value.buffer.byteLength <= 2 * value.length + 8192;
      return [Buffer.from(key), ownsItsMemory ? value : Buffer.from(value)];
    }
    if (this.used + size > this.slab.length) {
      this.slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
      this.used = 0;
    }
    const at = this.used;
    this.slab.set(key, at);
    this.slab.set(value, at + key.length);
    this.used += size;
    return [this.slab.subarray(at, at + key.length), this.slab.subarray(at + key.length, at + size)];
  }
}
