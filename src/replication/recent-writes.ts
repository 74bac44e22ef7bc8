/**
 * The bounded conflict map of DESIGN.md §3: keys written recently (by a client
 * here, or by an applied peer record) and the stamp of their last write.
 *
 * memcached keeps no version per item and the proxy cannot afford one per key,
 * but it does not need one: an incoming record can only conflict with a local
 * write that the peer had not seen when it wrote, that is, a write younger
 * than the replication delay. So: remember recent writes, and let an incoming
 * record for a key that is not remembered win.
 *
 * Forgetting is only safe once no older record can still arrive. The window
 * bounds that by time (records delayed longer than it, e.g. a backlog replayed
 * after a long partition, fall back to "incoming wins"); the link can forget
 * sooner and more precisely with forgetBefore() when it knows every peer's
 * stream has moved past a time (a PING after the records, a caught-up ACK).
 *
 * Pruning is FIFO: a Map finds a key's entry, and an array in the order of
 * notes (a key noted again is queued again, its old place going stale) says
 * which entry is oldest. Not the Map's own insertion order: V8 leaves deleted
 * slots at the front of a Map until it rehashes, so taking its first entry
 * again and again after deletions scans them all, and pruning turns
 * quadratic. Every call here is O(1) amortised.
 */
import { compareStamps, type Stamp } from './hlc';

export interface RecentWritesOptions {
  /** Hard bound on remembered keys (memory): past it the oldest are forgotten first. */
  maxEntries: number;
  /** Entries whose stamp is this much older than the newest stamp seen are forgotten. */
  windowMs: number;
}

/** A remembered write, and its place in the FIFO (stale once its key is noted again). */
class Entry implements Stamp {
  constructor(
    readonly id: string,
    readonly wall: number,
    readonly logical: number,
    readonly nodeId: string,
  ) {}
}

/** Compact the FIFO once this many of its slots are dead (and they are the majority). */
const COMPACT_AFTER = 1024;

export class RecentWrites {
  private readonly entries = new Map<string, Entry>();
  /** Entries in the order they were noted, from `head`; may hold stale ones. */
  private fifo: Array<Entry | undefined> = [];
  private head = 0;
  private staleInFifo = 0;
  private readonly maxEntries: number;
  private readonly windowMs: number;
  /** Largest HLC wall seen by note(): the map's notion of "now". */
  private newestWall = 0;
  private overflowCount = 0;
  private flushFloor: Stamp | null = null;

  constructor(opts: RecentWritesOptions) {
    if (!Number.isSafeInteger(opts.maxEntries) || opts.maxEntries < 1) throw new RangeError(`maxEntries must be a positive integer, got ${opts.maxEntries}`);
    if (!(opts.windowMs >= 0)) throw new RangeError(`windowMs must be >= 0, got ${opts.windowMs}`);
    this.maxEntries = opts.maxEntries;
    this.windowMs = opts.windowMs;
  }

  /**
   * Remembers a write that took effect here: a client's (stamped by this
   * node's clock) or a peer's record that was applied. Keeps the newer stamp
   * if the key is already known.
   */
  note(key: Buffer, stamp: Stamp): void {
    if (stamp.wall > this.newestWall) this.newestWall = stamp.wall;
    // Already outside the window: it would only sit at the back of the FIFO
    // until pruned, and could not be pruned before the younger keys ahead of it.
    if (stamp.wall < this.newestWall - this.windowMs) return;
    const id = key.toString('latin1');
    const known = this.entries.get(id);
    if (known === undefined || compareStamps(stamp, known) > 0) {
      const entry = new Entry(id, stamp.wall, stamp.logical, stamp.nodeId);
      this.entries.set(id, entry);
      this.fifo.push(entry);
      if (known !== undefined) this.staleInFifo++;
    }
    this.prune();
  }

  /**
   * Should an incoming record with this stamp be applied? Yes if the key was
   * not written recently, or if the record is newer than the last write (and
   * than the last flush, see noteFlush). Both nodes answer the same way for
   * the same pair of writes, which is what makes them converge.
   */
  incomingWins(key: Buffer, stamp: Stamp): boolean {
    if (this.flushFloor !== null && compareStamps(stamp, this.flushFloor) <= 0) return false;
    const known = this.entries.get(key.toString('latin1'));
    return known === undefined || compareStamps(stamp, known) > 0;
  }

  /** The stamp remembered for a key, if any. */
  lastWrite(key: Buffer): Stamp | undefined {
    const known = this.entries.get(key.toString('latin1'));
    return known && { wall: known.wall, logical: known.logical, nodeId: known.nodeId };
  }

  /** lastWrite by the key's latin1 string, without a copy (bulk callers that have the string already). */
  lastWriteOf(id: string): Readonly<Stamp> | undefined {
    return this.entries.get(id);
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
      if (oldest === undefined || oldest.wall >= wall) break;
      this.popFront();
      forgotten++;
    }
    return forgotten;
  }

  /**
   * A flush_all took effect (here or applied from a peer). A flush is a write
   * to every key at once, so an incoming record stamped before it must lose
   * like it would to a write of its key: otherwise a set that crossed a flush
   * on the wire survives on one side only. Pass the moment the flush empties
   * the cache (for flush_all with a delay, the stamp's wall plus the delay).
   *
   * One stamp, kept forever (newer flushes replace it): unlike per-key
   * entries it costs nothing, and it stays exact for records delayed past the
   * window. Older entries need no clearing: the floor already beats them.
   */
  noteFlush(stamp: Stamp): void {
    if (this.flushFloor === null || compareStamps(stamp, this.flushFloor) > 0) {
      this.flushFloor = { wall: stamp.wall, logical: stamp.logical, nodeId: stamp.nodeId };
    }
  }

  /**
   * Should an incoming flush be applied? Not if a newer flush already was:
   * the older one is subsumed, and running it now would also wipe the writes
   * made since the newer one. (Stamp it the way noteFlush is stamped.)
   */
  incomingFlushWins(stamp: Stamp): boolean {
    return this.flushFloor === null || compareStamps(stamp, this.flushFloor) > 0;
  }

  /** The latest flush noted, if any. */
  get lastFlush(): Stamp | null {
    return this.flushFloor;
  }

  get size(): number {
    return this.entries.size;
  }

  /**
   * Entries forgotten because of maxEntries while still inside the window: a
   * conflict on them falls back to "incoming wins". Worth a metric: if it
   * grows, maxEntries is too small for the write rate.
   */
  get overflowed(): number {
    return this.overflowCount;
  }

  private prune(): void {
    while (this.entries.size > this.maxEntries) {
      const oldest = this.front()!;
      if (oldest.wall >= this.newestWall - this.windowMs) this.overflowCount++;
      this.popFront();
    }
    this.forgetBefore(this.newestWall - this.windowMs);
    // A hot key noted over and over leaves a stale slot per note: rebuild the
    // FIFO when they outnumber the live ones, so its length stays O(size).
    if (this.staleInFifo > COMPACT_AFTER && this.staleInFifo * 2 > this.fifo.length - this.head) {
      const live: Entry[] = [];
      for (let i = this.head; i < this.fifo.length; i++) {
        const entry = this.fifo[i]!;
        if (this.entries.get(entry.id) === entry) live.push(entry);
      }
      this.fifo = live;
      this.head = 0;
      this.staleInFifo = 0;
    }
  }

  /** The oldest live entry, dropping stale slots in front of it. */
  private front(): Entry | undefined {
    while (this.head < this.fifo.length) {
      const entry = this.fifo[this.head]!;
      if (this.entries.get(entry.id) === entry) return entry;
      this.advance();
      this.staleInFifo--;
    }
    return undefined;
  }

  /** Forgets the front entry (which front() just returned). */
  private popFront(): void {
    const entry = this.fifo[this.head]!;
    this.entries.delete(entry.id);
    this.advance();
  }

  private advance(): void {
    this.fifo[this.head] = undefined;
    this.head++;
    if (this.head >= COMPACT_AFTER && this.head * 2 >= this.fifo.length) {
      this.fifo = this.fifo.slice(this.head);
      this.head = 0;
    }
  }
}
