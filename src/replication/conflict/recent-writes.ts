/**
 * The bounded conflict map of docs/design.md §7: keys written recently (by a client
 * here, or by an applied peer record) and the stamp of their last write.
 *
 * memcached keeps no version per item and the proxy cannot afford one per key,
 * but it does not need one: an incoming record can only conflict with a local
 * write that the peer had not seen when it wrote, that is, a write younger
 * than the replication delay. So: remember recent writes, and let an incoming
 * record for a key that is not remembered win.
 *
 * Forgetting is only safe once no older record can still arrive. The window
 * bounds that by time, counted from when the peer acknowledged the write
 * (see keepFrom): a record the peer made before it had seen a write here is
 * ahead of that acknowledgement on the link, or just behind it, however long
 * the link stalled.
 *
 * Layout. The map holds up to a million keys, so it keeps no JS object, string
 * or Map entry per key (a Map<string, Entry> cost ~200 bytes a key, most of
 * the process's memory budget). Instead:
 *
 * - the log: one Buffer used as a ring of records in the order of notes, each
 *   the stamp, the key's hash and the key's bytes (HEADER + key length bytes,
 *   61 for a 32-byte key). The ring is also the FIFO that says which entry is
 *   oldest: evicting is dropping the record at `head`. A key noted again gets
 *   a new record at the tail and its old one is marked dead, to be skipped and
 *   freed when it reaches the head (or dropped early when the ring is
 *   rewritten, see relayout);
 * - the index: an open-addressing hash table (Int32Array, linear probing, at
 *   most half full) from a key's hash to its live record. Lookups compare the
 *   stored key bytes, so two keys with one hash stay two entries: a collision
 *   costs a probe, never a wrong answer.
 *
 * Every call is O(1) amortised; rewriting the ring (growing, compacting away
 * dead records, shrinking) is O(live entries) and paid for by the appends or
 * pops since the last rewrite.
 *
 * The ring is a resizable ArrayBuffer, rewritten in place: a rewrite into a
 * new buffer held the old ring and the new one at once, until a major GC
 * freed the old one, so a burst of new keys raised the process's peak memory
 * well above what it kept (node B of a pair taking 37k sets/s peaked at
 * 124 MiB, and at 106 MiB in place). Growing commits pages as they are
 * written; shrinking gives them back at once.
 */
import { compareStamps, type Stamp } from './hlc';
import { keyHash, randomSeed } from './key-hash';

/** A write as remembered: its stamp, the expiry noted with it, and whether it deleted the key. */
export interface NotedWrite {
  wall: number;
  logical: number;
  nodeId: string;
  expiresAt: number | null;
  /**
   * A delete: no value read from memcached can be this write. One read while
   * the delete was still on its way to memcached (a peer's record is noted
   * before memcached runs it) is older, and must not be shipped under its stamp.
   */
  deleted: boolean;
}

/** A remembered write's stamp, copied out: the objects lastWriteOf and forEachNewerThan hand out are reused. */
export function stampOf(write: Readonly<NotedWrite>): Stamp {
  return { wall: write.wall, logical: write.logical, nodeId: write.nodeId };
}

export interface RecentWritesOptions {
  /** Hard bound on remembered keys (memory): past it the oldest are forgotten first. */
  maxEntries: number;
  /** Hard bound on the bytes of remembered entries (header and key); none if omitted. */
  maxBytes?: number;
  /** Entries whose stamp is this much older than the newest stamp seen are forgotten. */
  windowMs: number;
}

// A record in the log, little-endian, at any byte offset (DataView does not
// need alignment, and padding would cost memory).
const WALL = 0; // f64: any JS number round-trips
const LOGICAL = 8; // u32: the wire format's width (HLC_LOGICAL_MAX), what HybridClock issues
const HASH = 12; // u32: the key's hash, so index upkeep never rehashes key bytes
const KEY_LENGTH = 16; // u16: memcached keys are at most 250 bytes
const NODE = 18; // u16: index into nodeIds, or DEAD once the key was noted again
const EXPIRY = 20; // f64: the expiry noted with the stamp (touches), NaN for none
const DELETED = 28; // u8: 1 for a delete
const HEADER = 29; // then the key's bytes

const DEAD = 0xffff;
const MAX_KEY_LENGTH = 0xffff;
const MAX_NODE_IDS = DEAD; // ids 0..0xfffe

/** Small start (tests and idle nodes make many maps); both grow geometrically. */
const MIN_LOG_BYTES = 1024;
const MIN_INDEX_SLOTS = 16;
/** Index slots hold offset + 1 in an Int32Array. */
const MAX_LOG_BYTES = 2 ** 31 - 1;

/** ES2024's resizable ArrayBuffer: Node 20's V8 has it, TypeScript's ES2022 library does not describe it. */
interface ResizableArrayBuffer extends ArrayBuffer {
  resize(byteLength: number): void;
}
const ResizableArrayBuffer = ArrayBuffer as unknown as new (byteLength: number, options: { maxByteLength: number }) => ResizableArrayBuffer;

export class RecentWrites {
  private readonly maxEntries: number;
  private readonly maxBytes: number;
  /** While held, nothing is forgotten for its age (see hold); nor is anything stamped from keptFrom on (see keepFrom). */
  private held = false;
  private keptFrom = Infinity;
  private readonly windowMs: number;
  /** Largest HLC wall seen by note(): the map's notion of "now". */
  private newestWall = 0;
  private overflowCount = 0;

  /** The ring's memory: it grows and shrinks in place (see relayout). */
  private readonly ring: ResizableArrayBuffer;
  /** The ring of records. Data is [head, tail), or [head, wrapEnd) then [0, tail) once the tail wrapped. */
  private log: Buffer;
  /** The log's header fields: DataView reads compile to plain loads, Buffer.readXxx to byte shuffling. */
  private fields: DataView;
  private head = 0;
  private tail = 0;
  /** Where the data before the wrap ends (a record never straddles the ring's end), or -1 if not wrapped. */
  private wrapEnd = -1;
  /** Records in the log, live and dead, and their bytes. */
  private records = 0;
  private usedBytes = 0;
  private deadBytes = 0;
  /** Live records: the keys remembered. */
  private live = 0;

  /**
   * Slots hold a live record's offset + 1 (0: empty), so the log stays under
   * 2 GiB (a million keys of 250 bytes take 270 MB). Size a power of two.
   */
  private index = new Int32Array(MIN_INDEX_SLOTS);
  /** Per-map random seed (see keyHash). */
  private readonly seed = randomSeed();

  /** Node ids interned: records store their position here (there are two nodes in practice). */
  private readonly nodeIds: string[] = [];
  private readonly nodeNumbers = new Map<string, number>();

  /** lastWriteOf's answer, and the stamp compared with, reused: a lookup allocates nothing. */
  private readonly transient: NotedWrite = { wall: 0, logical: 0, nodeId: '', expiresAt: null, deleted: false };

  constructor(opts: RecentWritesOptions) {
    if (!Number.isSafeInteger(opts.maxEntries) || opts.maxEntries < 1) throw new RangeError(`maxEntries must be a positive integer, got ${opts.maxEntries}`);
    if (!(opts.windowMs >= 0)) throw new RangeError(`windowMs must be >= 0, got ${opts.windowMs}`);
    this.maxEntries = opts.maxEntries;
    this.maxBytes = opts.maxBytes ?? Infinity;
    this.windowMs = opts.windowMs;
    // The largest rewrite: 1.5 times the live bytes the bounds allow, plus the record being added.
    const live = Math.min(this.maxBytes, this.maxEntries * (HEADER + MAX_KEY_LENGTH));
    const largest = Math.ceil(1.5 * (Math.max(live, HEADER + MAX_KEY_LENGTH) + HEADER + MAX_KEY_LENGTH));
    // Address space only: pages are committed as the ring is written.
    this.ring = new ResizableArrayBuffer(MIN_LOG_BYTES, { maxByteLength: Math.min(MAX_LOG_BYTES, Math.max(MIN_LOG_BYTES, largest)) });
    this.log = Buffer.from(this.ring, 0, MIN_LOG_BYTES);
    this.fields = new DataView(this.ring, 0, MIN_LOG_BYTES);
  }

  /**
   * Remembers a write that took effect here: a client's (stamped by this
   * node's clock) or a peer's record that was applied. Keeps the newer stamp
   * if the key is already known. `expiresAt` (ms on this node's clock, null
   * for never) is kept with it for callers that need it (touches); `deleted`
   * for a delete.
   */
  note(key: Buffer, stamp: Stamp, expiresAt: number | null = null, deleted = false): void {
    if (stamp.wall > this.newestWall) this.newestWall = stamp.wall;
    // Already outside the window: it would only sit at the back of the FIFO
    // until pruned, and could not be pruned before the younger keys ahead of it.
    if (!this.held && stamp.wall < this.windowStart()) return;
    if (key.length > MAX_KEY_LENGTH) throw new RangeError(`key of ${key.length} bytes: at most ${MAX_KEY_LENGTH}`);
    const node = this.nodeNumber(stamp.nodeId); // before any change: it can throw
    const hash = this.hash(key, key.length);
    const slot = this.find(key, key.length, hash);
    if (slot >= 0) {
      const known = this.index[slot]! - 1;
      if (compareStamps(stamp, this.read(known, this.transient)) <= 0) {
        this.prune(0);
        return;
      }
      // Newer: the key moves to the back of the FIFO, as a new record.
      this.drop(slot, known);
    }
    // Evict before appending, so that a full ring makes room by dropping its
    // oldest record rather than by growing.
    this.prune(1, HEADER + key.length);
    this.append(key, hash, stamp, node, expiresAt, deleted);
  }

  /**
   * Forgets the key's write if it is still the one stamped `stamp`: a write
   * noted before it could be shipped (a read-back) that never was, and must
   * not keep older records and copies of the key out.
   */
  forget(key: Buffer, stamp: Stamp): void {
    const slot = this.find(key, key.length, this.hash(key, key.length));
    if (slot < 0) return;
    const known = this.index[slot]! - 1;
    if (compareStamps(stamp, this.read(known, this.transient)) === 0) this.drop(slot, known);
  }

  /** The live record at `known`, indexed at `slot`, becomes dead (freed when it reaches the front). */
  private drop(slot: number, known: number): void {
    this.unindex(slot);
    this.fields.setUint16(known + NODE, DEAD, true);
    this.deadBytes += HEADER + this.keyLength(known);
    this.live--;
  }

  /**
   * Should an incoming record with this stamp be applied? Yes if the key was
   * not written recently, or if the record is newer than the last write.
   * Both nodes answer the same way for the same pair of writes, which is what
   * makes them converge. The very stamp remembered is the same write sent
   * again (its first batch failed, maybe before reaching memcached, and the
   * link was reset): applied again, a state is harmless.
   */
  incomingWins(key: Buffer, stamp: Stamp): boolean {
    const slot = this.find(key, key.length, this.hash(key, key.length));
    return slot < 0 || compareStamps(stamp, this.read(this.index[slot]! - 1, this.transient)) >= 0;
  }

  /**
   * The write remembered for a key, if any. The object returned is reused,
   * and only valid until the next call on this map.
   */
  lastWriteOf(key: Uint8Array): Readonly<NotedWrite> | undefined {
    const slot = this.find(key, key.length, this.hash(key, key.length));
    return slot < 0 ? undefined : this.read(this.index[slot]! - 1, this.transient);
  }

  /**
   * Forgets entries older than `wall` (HLC wall time), for a caller that knows
   * no record stamped before it can arrive any more. Returns how many went.
   *
   * Works from the front of the FIFO and stops at the first younger entry:
   * notes do not arrive in exact stamp order, so an older entry behind it
   * stays a little longer (harmless: remembering longer is the safe side).
   */
  forgetBefore(wall: number): number {
    let forgotten = 0;
    for (;;) {
      const oldest = this.front();
      if (oldest < 0 || this.fields.getFloat64(oldest + WALL, true) >= wall) break;
      this.evictFront();
      forgotten++;
    }
    return forgotten;
  }

  /**
   * Calls `fn` for every key remembered with a stamp newer than `stamp`
   * (oldest first). `key` and the write are reused between calls: copy what
   * must outlive one.
   */
  forEachNewerThan(stamp: Stamp, fn: (key: Buffer, write: Readonly<NotedWrite>) => void): void {
    let offset = this.head;
    for (let n = this.records; n > 0; n--) {
      const size = HEADER + this.keyLength(offset);
      if (this.fields.getUint16(offset + NODE, true) !== DEAD && compareStamps(this.read(offset, this.transient), stamp) > 0) {
        fn(this.log.subarray(offset + HEADER, offset + size), this.transient);
      }
      offset += size;
      if (offset === this.wrapEnd) offset = 0;
    }
  }

  get size(): number {
    return this.live;
  }

  /**
   * Stops (or resumes) forgetting entries for their age. The node holds them
   * while its peer cannot have seen them (the link is down, or the peer's
   * backlog is still being replayed): a record that arrives after any delay
   * is then still judged by last writer wins. Only the size bounds apply
   * meanwhile, and what they force out is counted in `overflowed`.
   */
  hold(held: boolean): void {
    this.held = held;
    if (!held) this.prune(0);
  }

  /**
   * Entries stamped at or after `wall` (HLC wall time) are not forgotten for
   * their age: the peer has not acknowledged them for a whole window yet.
   */
  keepFrom(wall: number): void {
    this.keptFrom = wall;
  }

  /** Entries stamped before this may be forgotten (unless held). */
  private windowStart(): number {
    return Math.min(this.newestWall - this.windowMs, this.keptFrom);
  }

  /**
   * Entries forgotten because of a size bound while still needed (inside the
   * window, or while held): a conflict on them falls back to "incoming wins".
   */
  get overflowed(): number {
    return this.overflowCount;
  }

  /** Forgets what the bounds say to, leaving room for `adding` more keys of `addingBytes` within them. */
  private prune(adding: number, addingBytes = 0): void {
    const windowStart = this.windowStart();
    while (this.live > 0 && (this.live + adding > this.maxEntries || this.usedBytes - this.deadBytes + addingBytes > this.maxBytes)) {
      const oldest = this.front();
      if (this.held || this.fields.getFloat64(oldest + WALL, true) >= windowStart) this.overflowCount++;
      this.evictFront();
    }
    if (!this.held) this.forgetBefore(windowStart);
    // Most of the ring is free (the window passed over a burst of writes): give the memory back.
    if (this.log.length > MIN_LOG_BYTES && this.usedBytes * 8 < this.log.length) this.relayout(2 * (this.usedBytes - this.deadBytes));
  }

  /** Offset of the oldest live record (freeing dead ones in front of it), or -1 if none. */
  private front(): number {
    while (this.records > 0) {
      if (this.fields.getUint16(this.head + NODE, true) !== DEAD) return this.head;
      this.deadBytes -= HEADER + this.keyLength(this.head);
      this.popFront();
    }
    return -1;
  }

  /** Forgets the live record at the front (which front() just returned). */
  private evictFront(): void {
    const offset = this.head;
    const hash = this.fields.getUint32(offset + HASH, true);
    const mask = this.index.length - 1;
    let slot = hash & mask;
    while (this.index[slot] !== offset + 1) slot = (slot + 1) & mask;
    this.unindex(slot);
    this.live--;
    this.popFront();
  }

  private popFront(): void {
    const bytes = HEADER + this.keyLength(this.head);
    this.head += bytes;
    this.usedBytes -= bytes;
    this.records--;
    if (this.records === 0) {
      this.head = this.tail = 0;
      this.wrapEnd = -1;
    } else if (this.head === this.wrapEnd) {
      this.head = 0;
      this.wrapEnd = -1;
    }
  }

  /** Writes a live record for a key not in the index, and indexes it. */
  private append(key: Buffer, hash: number, stamp: Stamp, node: number, expiresAt: number | null, deleted: boolean): void {
    const bytes = HEADER + key.length;
    let offset = this.place(bytes);
    if (offset < 0) {
      // Full of live records, and of dead ones behind the oldest live one:
      // rewrite the ring without the dead ones, growing it unless that frees
      // a third of it (so that a rewrite is paid for by a third of a ring of
      // appends, and a ring is at most 1.5 times its live bytes after one).
      this.relayout(Math.ceil(1.5 * (this.usedBytes - this.deadBytes + bytes)));
      offset = this.place(bytes);
    }
    const fields = this.fields;
    fields.setFloat64(offset + WALL, stamp.wall, true);
    fields.setUint32(offset + LOGICAL, stamp.logical, true);
    fields.setUint32(offset + HASH, hash, true);
    fields.setUint16(offset + KEY_LENGTH, key.length, true);
    fields.setUint16(offset + NODE, node, true);
    fields.setFloat64(offset + EXPIRY, expiresAt ?? NaN, true);
    fields.setUint8(offset + DELETED, deleted ? 1 : 0);
    this.log.set(key, offset + HEADER);
    this.tail = offset + bytes;
    this.records++;
    this.usedBytes += bytes;
    this.live++;
    if (2 * this.live > this.index.length) this.reindex(2 * this.index.length);
    this.indexAt(offset, hash);
  }

  /** Where `bytes` more fit at the tail (wrapping to the start if need be), or -1 if they do not. */
  private place(bytes: number): number {
    if (this.wrapEnd >= 0) return this.tail + bytes <= this.head ? this.tail : -1;
    if (this.tail + bytes <= this.log.length) return this.tail;
    if (bytes <= this.head) {
      this.wrapEnd = this.tail;
      return 0;
    }
    return -1;
  }

  /**
   * Rewrites the ring in place at about `bytes` bytes (at least its live
   * records), without its dead records, and rebuilds the index for them.
   * Live records slide towards the start of their part of the ring; after a
   * wrap, the part before the wrap then goes to the ring's end, so the free
   * space lies between the tail and the head.
   */
  private relayout(bytes: number): void {
    // The live records before the wrap (or all of them), at firstAt; those after it, at 0.
    let first = this.wrapEnd >= 0 ? this.compact(this.head, this.wrapEnd, this.head) : this.compact(this.head, this.tail, 0);
    let firstAt = this.wrapEnd >= 0 ? this.head : 0;
    let second = this.wrapEnd >= 0 ? this.compact(0, this.tail, 0) : 0;
    if (first === 0) {
      [first, firstAt, second] = [second, 0, 0];
    } else if (second === 0 && firstAt > 0) {
      this.log.copyWithin(0, firstAt, firstAt + first);
      firstAt = 0;
    }
    const size = Math.max(MIN_LOG_BYTES, bytes, first + second);
    if (size > this.log.length) this.resize(size);
    // Still wrapped: the first part goes to the end, leaving the free space between tail and head.
    if (second > 0) this.log.copyWithin(size - first, firstAt, firstAt + first);
    if (size < this.log.length) this.resize(size);
    this.head = second > 0 ? size - first : 0;
    this.tail = second > 0 ? second : first;
    this.wrapEnd = second > 0 ? size : -1;
    this.records = this.live;
    this.usedBytes = first + second;
    this.deadBytes = 0;
    let slots = MIN_INDEX_SLOTS;
    while (slots < 2 * this.live) slots *= 2;
    if (slots === this.index.length) this.index.fill(0);
    else this.index = new Int32Array(slots);
    for (let at = this.head, n = this.records; n > 0; n--) {
      this.indexAt(at, this.fields.getUint32(at + HASH, true));
      at += HEADER + this.keyLength(at);
      if (at === this.wrapEnd) at = 0;
    }
  }

  /**
   * Moves the live records of [from, to) (whole records, in order) down to
   * start at `into` (at most `from`), dropping the dead ones; returns their bytes.
   */
  private compact(from: number, to: number, into: number): number {
    let moved = into;
    let runStart = from;
    let runEnd = from;
    for (let offset = from; offset < to;) {
      const size = HEADER + this.keyLength(offset);
      if (this.fields.getUint16(offset + NODE, true) !== DEAD) {
        if (offset !== runEnd) {
          this.log.copyWithin(moved, runStart, runEnd);
          moved += runEnd - runStart;
          runStart = offset;
        }
        runEnd = offset + size;
      }
      offset += size;
    }
    this.log.copyWithin(moved, runStart, runEnd);
    return moved + runEnd - runStart - into;
  }

  private resize(bytes: number): void {
    this.ring.resize(bytes);
    this.log = Buffer.from(this.ring, 0, bytes);
    this.fields = new DataView(this.ring, 0, bytes);
  }

  /** The index at `slots` slots, from the records it points to. */
  private reindex(slots: number): void {
    const old = this.index;
    this.index = new Int32Array(slots);
    for (const entry of old) if (entry !== 0) this.indexAt(entry - 1, this.fields.getUint32(entry - 1 + HASH, true));
  }

  /** The index slot of the key's live record, or -1. */
  private find(key: Uint8Array, length: number, hash: number): number {
    const index = this.index;
    const mask = index.length - 1;
    const fields = this.fields;
    for (let slot = hash & mask; ; slot = (slot + 1) & mask) {
      const entry = index[slot]!;
      if (entry === 0) return -1;
      const offset = entry - 1;
      if (
        fields.getUint32(offset + HASH, true) === hash &&
        fields.getUint16(offset + KEY_LENGTH, true) === length &&
        equalBytes(this.log, offset + HEADER, key, length)
      )
        return slot;
    }
  }

  private indexAt(offset: number, hash: number): void {
    const index = this.index;
    const mask = index.length - 1;
    let slot = hash & mask;
    while (index[slot] !== 0) slot = (slot + 1) & mask;
    index[slot] = offset + 1;
  }

  /**
   * Empties an index slot. Linear probing needs no tombstones: entries after
   * the hole that probed past it move back into it (Knuth's algorithm R).
   */
  private unindex(hole: number): void {
    const index = this.index;
    const mask = index.length - 1;
    index[hole] = 0;
    for (let slot = (hole + 1) & mask; index[slot] !== 0; slot = (slot + 1) & mask) {
      const entry = index[slot]!;
      const home = this.fields.getUint32(entry - 1 + HASH, true) & mask;
      // Movable unless its home lies cyclically in (hole, slot]: then a lookup starting there would miss it.
      if (((slot - home) & mask) >= ((slot - hole) & mask)) {
        index[hole] = entry;
        index[slot] = 0;
        hole = slot;
      }
    }
  }

  /** Fills `into` with the write noted in the record at `offset`. */
  private read(offset: number, into: NotedWrite): NotedWrite {
    into.wall = this.fields.getFloat64(offset + WALL, true);
    into.logical = this.fields.getUint32(offset + LOGICAL, true);
    into.nodeId = this.nodeIds[this.fields.getUint16(offset + NODE, true)]!;
    const expiresAt = this.fields.getFloat64(offset + EXPIRY, true);
    into.expiresAt = Number.isNaN(expiresAt) ? null : expiresAt;
    into.deleted = this.fields.getUint8(offset + DELETED) === 1;
    return into;
  }

  private keyLength(offset: number): number {
    return this.fields.getUint16(offset + KEY_LENGTH, true);
  }

  private nodeNumber(nodeId: string): number {
    let n = this.nodeNumbers.get(nodeId);
    if (n === undefined) {
      // Node ids come from configuration: a handful per process lifetime.
      if (this.nodeIds.length >= MAX_NODE_IDS) throw new RangeError(`more than ${MAX_NODE_IDS} node ids`);
      n = this.nodeIds.push(nodeId) - 1;
      this.nodeNumbers.set(nodeId, n);
    }
    return n;
  }

  private hash(key: Uint8Array, length: number): number {
    return keyHash(key, length, this.seed);
  }
}

function equalBytes(log: Buffer, at: number, key: Uint8Array, length: number): boolean {
  for (let i = 0; i < length; i++) if (log[at + i] !== key[i]) return false;
  return true;
}
