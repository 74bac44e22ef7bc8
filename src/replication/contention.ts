/**
 * Races between a client's write and a peer's record for the same key.
 *
 * A client write and an applied record travel to memcached on different
 * connections; when both are in flight at once, the order memcached applies
 * them in is not the order of their clocks, and the two nodes could each keep
 * the other's value. So whenever the two overlap for a key, once both have
 * settled the key is read back and shipped again as a fresh local write:
 * whatever this memcached ended with wins on both nodes.
 *
 * Applies in flight are counted per hash bucket, not per key: a full copy
 * puts a thousand records in flight at a time, a million in all, and a string
 * and a Map entry for each (the Map growing and shrinking as batches come and
 * go) was most of what the receiving node's heap promoted during a copy. A
 * bucket shared by two keys can only make a repair happen when none was
 * needed, or a little later (once the other key's apply settled), never not
 * at all. Client writes in flight are few and keep their exact keys.
 *
 * Pure bookkeeping: the caller supplies the repair.
 */
import { keyHash, randomSeed } from './key-hash';

const BUCKETS = 1 << 16;

export class Contention {
  /** Client writes in flight per key (latin1), and per bucket (to skip making a string when none can match). */
  private readonly local = new Map<string, number>();
  private readonly localBuckets = new Int32Array(BUCKETS);
  /** Peer records in flight per bucket. */
  private readonly applying = new Int32Array(BUCKETS);
  /** Keys that had a client write and a record in flight together: key → its bucket. */
  private readonly contended = new Map<string, number>();
  repairs = 0;

  /** `seed`: keyHash's, random unless a test needs buckets it can predict. */
  constructor(
    private readonly repair: (key: Buffer) => void,
    private readonly seed = randomSeed(),
  ) {}

  /** A client write of `key` was sent to memcached. */
  localStarted(key: Buffer): void {
    const bucket = this.bucketOf(key);
    const id = key.toString('latin1');
    if (this.applying[bucket]! > 0) this.contended.set(id, bucket);
    this.local.set(id, (this.local.get(id) ?? 0) + 1);
    this.localBuckets[bucket]++;
  }

  localSettled(key: Buffer): void {
    const bucket = this.bucketOf(key);
    const id = key.toString('latin1');
    const count = (this.local.get(id) ?? 1) - 1;
    if (count === 0) this.local.delete(id);
    else this.local.set(id, count);
    this.localBuckets[bucket]--;
    this.tryRepair(id, bucket);
  }

  /** A peer's record for `key` was sent to memcached; pass the ticket to appliesSettled. */
  applyStarted(key: Uint8Array): number {
    const bucket = this.bucketOf(key);
    if (this.localBuckets[bucket]! > 0) {
      const id = Buffer.from(key.buffer, key.byteOffset, key.length).toString('latin1');
      if (this.local.has(id)) this.contended.set(id, bucket);
    }
    this.applying[bucket]++;
    return bucket;
  }

  /** Peer records reached memcached (the applier settles them a batch at a time). */
  appliesSettled(tickets: readonly number[]): void {
    for (const ticket of tickets) this.applying[ticket]--;
    if (this.contended.size > 0) for (const [id, bucket] of this.contended) this.tryRepair(id, bucket);
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
