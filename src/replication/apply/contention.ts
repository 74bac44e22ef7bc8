/**
 * Races between a client's write and a peer's record for the same key.
 *
 * A client write and an applied record travel to memcached on different
 * connections; when both are in flight at once, the order memcached applies
 * them in is not the order of their clocks, and the two nodes could each keep
 * the other's value. So whenever the two overlap for a key, once both have
 * ended the key is read back and shipped again as a fresh local write:
 * whatever this memcached ended with wins on both nodes.
 *
 * Applies in flight are counted per hash bucket, not per key: a full copy
 * puts a thousand records in flight at a time, a million in all, and a string
 * and a Map entry for each (the Map growing and shrinking as batches come and
 * go) was most of what the receiving node's heap promoted during a copy. A
 * bucket shared by two keys can only make a repair happen when none was
 * needed, or a little later (once the other key's apply ended), never not
 * at all. Client writes in flight are few and keep their exact keys.
 *
 * A full copy's record is another matter: it is the peer's old state of the
 * key, and any client write here since the copy began is newer and must end
 * on top of it (see Applier.copyApplies). A repair would keep whichever
 * landed last. So the two never overlap: a copy's record is dropped while a
 * client write of its key is in flight, and a client write waits (see
 * localStarted) while a copy's record of its bucket is in flight.
 *
 * An immediate flush is the same for every key at once. From the peer: client
 * writes already on their way must be answered first (they land before it
 * and the flush keeps them, see Applier.flushKeepingNewer), and the ones that
 * come meanwhile wait until it ran (see holdClientWrites). A client's own
 * flush_all waits the same way (see send/client-sink.ts). The recorder's read
 * backs (an append's result, a read again after a tick) count as client
 * writes here, from their note to their answer (see Recorder.readBack).
 *
 * Two clients' writes of one key race too: sessions reach memcached on
 * different connections (binary ones on their own), and each write is
 * stamped when its reply comes, so memcached may apply them in one order and
 * the peer order them the other way (fault suite, seed 21: a binary set and a
 * text gats of one key, a kept the set's value, b lost it). Overlapping
 * writes of a key from two sessions are repaired the same way. One session's
 * are not: it keeps them in order (see proxy/session.ts, send). Nor is a read
 * back such a write: it is stamped before it is sent, so whatever it finds is
 * older than any write answered after it, and it is what repairs the others.
 *
 * Pure bookkeeping: the caller supplies the repair.
 */
import { keyHash, randomSeed } from '../conflict/key-hash';

const BUCKETS = 1 << 16;

export class Contention {
  /** Client writes and read backs in flight per key (latin1), and per bucket (to skip making a string when none can match). */
  private readonly local = new Map<string, InFlight>();
  private readonly localBuckets = new Int32Array(BUCKETS);
  /** Peer records in flight per bucket, and full-copy records among them. */
  private readonly applying = new Int32Array(BUCKETS);
  private readonly copying = new Int32Array(BUCKETS);
  /** Client writes waiting for a bucket's copy records to settle (see localStarted). */
  private readonly waiting = new Map<number, Array<() => void>>();
  /** Client writes counted (sent, or waiting to be), and those a flush holds back (see holdClientWrites). */
  private localCount = 0;
  /** Flushes holding client writes back (a peer's and clients' own may overlap). */
  private holds = 0;
  private held: Array<() => void> = [];
  private quiet: Array<() => void> = [];
  /** Keys that had a client write and a record in flight together: key → its bucket. */
  private readonly contended = new Map<string, number>();
  repairs = 0;

  /** `seed`: keyHash's, random unless a test needs buckets it can predict. */
  constructor(
    private readonly repair: (key: Buffer) => void,
    private readonly seed = randomSeed(),
  ) {}

  /**
   * A client write of `key` is about to go to memcached. Returns a promise
   * when a full copy's record of its bucket is in flight: send the write
   * once it resolves (at most one round trip to memcached), so that it lands
   * after the copy's older state. `writer`: the session sending it, or null
   * for the recorder reading the key back (see the top of this file).
   */
  localStarted(key: Buffer, writer: Writer): Promise<void> | null {
    const bucket = this.bucketOf(key);
    const id = key.toString('latin1');
    let inFlight = this.local.get(id);
    if (inFlight === undefined) this.local.set(id, (inFlight = { all: 0, readBacks: 0, writer: null }));
    const racing = writer !== null && inFlight.all > inFlight.readBacks && inFlight.writer !== writer;
    if (racing || this.applying[bucket]! > this.copying[bucket]!) this.contended.set(id, bucket);
    inFlight.all++;
    if (writer === null) inFlight.readBacks++;
    else inFlight.writer = writer;
    this.localBuckets[bucket]++;
    this.localCount++;
    if (this.holds > 0) return new Promise((resolve) => this.held.push(() => resolve(this.copyGate(bucket) ?? undefined)));
    return this.copyGate(bucket);
  }

  /** Null, or a promise that resolves once the bucket has no copy record in flight. */
  private copyGate(bucket: number): Promise<void> | null {
    if (this.copying[bucket] === 0) return null;
    return new Promise((resolve) => {
      const list = this.waiting.get(bucket);
      if (list) list.push(resolve);
      else this.waiting.set(bucket, [resolve]);
    });
  }

  /**
   * An immediate flush is about to run: from now on client writes wait
   * (localStarted returns a promise) until releaseClientWrites. The promise
   * resolves once the writes sent before are answered, or after `timeoutMs`
   * if given (a stalled memcached must not stop replication).
   */
  holdClientWrites(timeoutMs?: number): Promise<void> {
    this.holds++;
    return new Promise((resolve) => {
      const timer = timeoutMs === undefined ? null : setTimeout(done, timeoutMs);
      const quiet = this.quiet;
      function done(): void {
        if (timer) clearTimeout(timer);
        const at = quiet.indexOf(done);
        if (at >= 0) quiet.splice(at, 1);
        resolve();
      }
      quiet.push(done);
      this.checkQuiet();
    });
  }

  /** A flush ran (or failed): once none holds them, the client writes held go. */
  releaseClientWrites(): void {
    this.holds = Math.max(0, this.holds - 1);
    if (this.holds > 0) return;
    const held = this.held;
    this.held = [];
    for (const go of held) go();
  }

  private checkQuiet(): void {
    // A held write whose client left is ended without being released: hence <=.
    if (this.quiet.length > 0 && this.localCount - this.held.length <= 0) for (const done of [...this.quiet]) done();
  }

  /** Pairs with localStarted (`readBack`: its writer was null). */
  localEnded(key: Buffer, readBack = false): void {
    const bucket = this.bucketOf(key);
    const id = key.toString('latin1');
    const inFlight = this.local.get(id);
    if (inFlight !== undefined) {
      if (--inFlight.all === 0) this.local.delete(id);
      else if (readBack) inFlight.readBacks--;
    }
    this.localBuckets[bucket]--;
    this.localCount--;
    this.tryRepair(id, bucket);
    this.checkQuiet();
  }

  /**
   * A peer's live record for `key` was sent to memcached; pass the ticket to
   * appliesEnded. (A copy's: copyStarted.)
   */
  applyStarted(key: Uint8Array): number {
    const bucket = this.bucketOf(key);
    const id = this.localIdIn(bucket, key);
    if (id !== null) this.contended.set(id, bucket);
    this.applying[bucket]++;
    return bucket;
  }

  /**
   * A full copy's record for `key` is about to go to memcached: its ticket
   * for appliesEnded, or null when a client write of the key is on its way
   * (newer than the copy: the record must be dropped, not sent).
   */
  copyStarted(key: Uint8Array): number | null {
    const bucket = this.bucketOf(key);
    if (this.localIdIn(bucket, key) !== null) return null;
    this.applying[bucket]++;
    this.copying[bucket]++;
    return -1 - bucket;
  }

  /** The key as `local` holds it, if a client write of it is in flight (the bucket count spares the string otherwise). */
  private localIdIn(bucket: number, key: Uint8Array): string | null {
    if (this.localBuckets[bucket] === 0) return null;
    const id = Buffer.from(key.buffer, key.byteOffset, key.length).toString('latin1');
    return this.local.has(id) ? id : null;
  }

  /** Peer records reached memcached (the applier settles them a batch at a time). */
  appliesEnded(tickets: readonly number[]): void {
    for (const ticket of tickets) {
      const bucket = ticket < 0 ? -1 - ticket : ticket;
      this.applying[bucket]--;
      if (ticket < 0 && --this.copying[bucket]! === 0) this.release(bucket);
    }
    if (this.contended.size > 0) for (const [id, bucket] of this.contended) this.tryRepair(id, bucket);
  }

  private release(bucket: number): void {
    const list = this.waiting.get(bucket);
    if (!list) return;
    this.waiting.delete(bucket);
    for (const resolve of list) resolve();
  }

  private tryRepair(id: string, bucket: number): void {
    if (this.applying[bucket]! > 0 || this.local.has(id) || !this.contended.delete(id)) return;
    this.repairs++;
    this.repair(Buffer.from(id, 'latin1'));
  }

  private bucketOf(key: Uint8Array): number {
    return keyHash(key, key.length, this.seed) & (BUCKETS - 1);
  }
}

/** Who sends a write: a client's session (its writes reach memcached in order), or null for a read back. */
export type Writer = object | null;

/** A key's client writes and read backs on their way to memcached. */
interface InFlight {
  all: number;
  readBacks: number;
  /** The session of the latest client write among them. */
  writer: Writer;
}
