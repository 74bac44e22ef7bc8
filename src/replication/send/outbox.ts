/**
 * The sender's backlog (docs/design.md §10): every write this node's clients made,
 * in the order memcached applied them, numbered 1, 2, 3 ... per process run,
 * and kept, acknowledged or not, until a byte bound pushes the oldest out.
 *
 * Why keep acknowledged records too: a peer that restarts its proxy (but not
 * its memcached), or whose link drops after it applied but before our ACK
 * arrived, tells us in its HELLO the last record it applied; if that record
 * is still here we send only the rest (partial resync) instead of copying the
 * whole cache. When it is not here any more, cursor() says 'gap' and
 * the link must do a full copy: nothing a client was told is stored may
 * vanish from the stream silently.
 *
 * Records hold their expiry as an absolute deadline on this node's clock; the
 * serializer turns it into remaining time when the record is finally sent, so
 * time spent here does not lengthen the item's life on the peer.
 *
 * Pure: no sockets, no timers (the clock is injected, for appendedAt).
 */
import { RECORD_OPS, recordFrameBytes, type OutgoingRecord } from '../link/frames/messages';

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
   * Bound on the records held, counted as their encoded RECORD frames. A held
   * record takes less than its frame (its fields in HELD_FIELDS_BYTES, its key
   * and value, an 8-byte index slot; see Slabs), so this bounds memory too,
   * give or take the unused tails of slabs.
   */
  maxBytes: number;
  clock?: () => number;
}

export class Outbox {
  private readonly maxBytes: number;
  private readonly clock: () => number;
  private readonly held = new Slabs();
  /** Seq of the oldest record held (= lastSeq + 1 when empty). */
  private firstSeq = 1;
  private count = 0;
  private heldBytes = 0;
  private acked = 0;
  private droppedCount = 0;
  private droppedUnackedCount = 0;

  constructor(opts: OutboxOptions) {
    if (!Number.isSafeInteger(opts.maxBytes) || opts.maxBytes < 0) throw new RangeError(`maxBytes must be a non-negative integer, got ${opts.maxBytes}`);
    this.maxBytes = opts.maxBytes;
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
    this.held.write(seq, record, this.clock());
    this.count++;
    this.heldBytes += recordFrameBytes(record.key.length, record.value.length);
    while (this.heldBytes > this.maxBytes && this.count > 1) this.dropOldest();
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
   * position (a cursor).
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

  /**
   * The record with this seq, if still held: a fresh object each call, its key
   * and value views into the backlog's slabs (which are never overwritten).
   */
  get(seq: number): OutboxRecord | undefined {
    return this.holds(seq) ? this.held.read(seq) : undefined;
  }

  /** When the record with this seq was appended, if still held (without decoding the record). */
  appendedAt(seq: number): number | undefined {
    return this.holds(seq) ? this.held.appendedAt(seq) : undefined;
  }

  /**
   * A reader positioned after `seq`, for a live link: next() hands out one
   * record at a time in O(1), however deep the backlog. 'gap' when the
   * records after `afterSeq` are no longer all here (or `afterSeq` is not yet).
   */
  cursor(afterSeq: number): OutboxCursor | 'gap' {
    checkSeq(afterSeq);
    if (afterSeq > this.lastSeq || afterSeq < this.firstSeq - 1) return 'gap';
    return new OutboxCursor(this, afterSeq);
  }

  private holds(seq: number): boolean {
    return seq >= this.firstSeq && seq <= this.lastSeq;
  }

  private dropOldest(): void {
    const seq = this.firstSeq;
    this.heldBytes -= this.held.frameBytes(seq);
    this.droppedCount++;
    if (seq > this.acked) this.droppedUnackedCount++;
    this.firstSeq++;
    this.count--;
    this.held.release(this.firstSeq);
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
   * behind: full copy).
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

/** Size of the allocations the backlog writes records into. */
const SLAB_BYTES = 64 * 1024;
/** A record bigger than this gets a slab of its own (so a slab's unused tail stays under a quarter). */
const SHARED_SLAB_MAX = SLAB_BYTES / 4;

/**
 * Where a held record's fields sit from its start (f64: wall, appendedAt,
 * expiresAt; u32: logical, flags, delay, valueLength; u16 keyLength; u8: op,
 * expiryKind); its key and value follow at HELD_FIELDS_BYTES.
 */
const AT = { wall: 0, appendedAt: 8, expiresAt: 16, logical: 24, flags: 28, delay: 32, valueLength: 36, keyLength: 40, op: 42, expiryKind: 43 } as const;
const HELD_FIELDS_BYTES = 44;

const EXPIRY_AT = 0;
const EXPIRY_NEVER = 1;

/**
 * The records themselves, as bytes. A backlog of JS objects (one per record,
 * with its hlc and two Buffer views) lived for minutes, so every record was
 * promoted to V8's old generation and died there: under 60k client TPS the
 * heap grew to 200 MB between full collections. Bytes in slabs are invisible
 * to the collector, and they are copies: a key or value parsed off a client
 * connection is a view into a whole socket read, which would otherwise stay
 * alive with it.
 *
 * Records are written one after another into 64 KiB slabs, in seq order, and
 * leave oldest first, so a slab is freed as soon as its last record goes.
 * Where each record sits is one float per seq in a ring (slab number * 2^16 +
 * offset), grown by doubling.
 */
class Slabs {
  private slabs: Buffer[] = [];
  /** Slab number of slabs[0]. */
  private firstSlab = 0;
  private used = SLAB_BYTES;
  private where = new Float64Array(1024);
  private mask = 1023;
  private heldFrom = 1;

  write(seq: number, record: NewRecord, appendedAt: number): void {
    const { key, value } = record;
    const size = HELD_FIELDS_BYTES + key.length + value.length;
    let at = 0;
    if (size > SHARED_SLAB_MAX) {
      this.addSlab(size);
      this.used = SLAB_BYTES; // the next record starts a new shared slab
    } else {
      if (this.used + size > SLAB_BYTES) {
        this.addSlab(SLAB_BYTES);
        this.used = 0;
      }
      at = this.used;
      this.used += size;
    }
    const slab = this.slabs[this.slabs.length - 1];
    this.index(seq, (this.firstSlab + this.slabs.length - 1) * 0x10000 + at);

    const expiry = record.expiresAt;
    slab.writeDoubleLE(record.hlc.wall, at + AT.wall);
    slab.writeDoubleLE(appendedAt, at + AT.appendedAt);
    slab.writeDoubleLE(expiry ?? 0, at + AT.expiresAt);
    slab.writeUInt32LE(record.hlc.logical, at + AT.logical);
    slab.writeUInt32LE(record.flags, at + AT.flags);
    slab.writeUInt32LE(record.delay, at + AT.delay);
    slab.writeUInt32LE(value.length, at + AT.valueLength);
    slab.writeUInt16LE(key.length, at + AT.keyLength);
    slab[at + AT.op] = RECORD_OPS.indexOf(record.op);
    slab[at + AT.expiryKind] = expiry === null ? EXPIRY_NEVER : EXPIRY_AT;
    key.copy(slab, at + HELD_FIELDS_BYTES);
    value.copy(slab, at + HELD_FIELDS_BYTES + key.length);
  }

  read(seq: number): OutboxRecord {
    const [slab, at] = this.locate(seq);
    const keyLength = slab.readUInt16LE(at + AT.keyLength);
    const valueLength = slab.readUInt32LE(at + AT.valueLength);
    const kind = slab[at + AT.expiryKind];
    const keyStart = at + HELD_FIELDS_BYTES;
    return {
      seq,
      hlc: { wall: slab.readDoubleLE(at + AT.wall), logical: slab.readUInt32LE(at + AT.logical) },
      op: RECORD_OPS[slab[at + AT.op]],
      key: slab.subarray(keyStart, keyStart + keyLength),
      flags: slab.readUInt32LE(at + AT.flags),
      value: slab.subarray(keyStart + keyLength, keyStart + keyLength + valueLength),
      delay: slab.readUInt32LE(at + AT.delay),
      expiresAt: kind === EXPIRY_NEVER ? null : slab.readDoubleLE(at + AT.expiresAt),
      appendedAt: slab.readDoubleLE(at + AT.appendedAt),
      bytes: recordFrameBytes(keyLength, valueLength),
    };
  }

  appendedAt(seq: number): number {
    const [slab, at] = this.locate(seq);
    return slab.readDoubleLE(at + AT.appendedAt);
  }

  frameBytes(seq: number): number {
    const [slab, at] = this.locate(seq);
    return recordFrameBytes(slab.readUInt16LE(at + AT.keyLength), slab.readUInt32LE(at + AT.valueLength));
  }

  /** Records before `oldestSeq` are gone: free the slabs only they used. */
  release(oldestSeq: number): void {
    this.heldFrom = oldestSeq;
    const oldestSlab = Math.floor(this.where[oldestSeq & this.mask] / 0x10000);
    const gone = oldestSlab - this.firstSlab;
    if (gone <= 0) return;
    this.slabs.splice(0, gone);
    this.firstSlab = oldestSlab;
  }

  private locate(seq: number): [Buffer, number] {
    const where = this.where[seq & this.mask];
    const slabNumber = Math.floor(where / 0x10000);
    return [this.slabs[slabNumber - this.firstSlab], where - slabNumber * 0x10000];
  }

  private addSlab(size: number): void {
    this.slabs.push(Buffer.allocUnsafeSlow(size));
  }

  private index(seq: number, where: number): void {
    if (seq - this.heldFrom >= this.where.length) {
      const grown = new Float64Array(this.where.length * 2);
      const mask = grown.length - 1;
      for (let s = this.heldFrom; s < seq; s++) grown[s & mask] = this.where[s & this.mask];
      this.where = grown;
      this.mask = mask;
    }
    this.where[seq & this.mask] = where;
  }
}
