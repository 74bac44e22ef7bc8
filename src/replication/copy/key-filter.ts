/**
 * The keys a full copy accounted for, for the walk that checks it (see
 * copy-walk.ts): a Bloom filter in one typed array, sized to the cache when
 * the copy starts and capped, so its memory is bounded whatever the cache
 * holds (a Set of 32-bit hashes took ~28 MB per million keys, unbounded).
 *
 * mayHave() never says no for a key that was added. It may say yes for one
 * that was not (a false positive): the check would then pass over a key the
 * copy missed. With 20 to 40 bits per key (BITS_PER_KEY rounded up to a
 * power of two) that happens for one such key in 10,000 to 100,000, which
 * the walks already had to miss; more keys than the filter was sized
 * for, or than its byte cap holds (about 13 million keys in 32 MB), make it
 * more frequent.
 *
 * Pure: bytes in, answers out.
 */
import { keyHash } from '../conflict/key-hash';

/** Bits per expected key, at least. */
const BITS_PER_KEY = 20;
const MIN_BITS = 1 << 16;

export class KeyFilter {
  private readonly words: Int32Array;
  private readonly mask: number;
  private readonly hashes: number;

  /** `expectedKeys`: about how many keys will be added; `maxBytes`: the filter's memory at most. */
  constructor(expectedKeys: number, maxBytes: number) {
    // A power of two (so a hash maps to a bit with a mask): at least BITS_PER_KEY per key, within maxBytes.
    const cap = 2 ** Math.floor(Math.log2(Math.max(MIN_BITS, maxBytes * 8)));
    const bits = Math.min(cap, 2 ** Math.ceil(Math.log2(Math.max(MIN_BITS, Math.max(1, expectedKeys) * BITS_PER_KEY))));
    this.words = new Int32Array(bits / 32);
    this.mask = bits - 1;
    // Probes cost a cache miss each: 5 at most (at 32 bits per key that still gives ~5e-5).
    this.hashes = Math.max(1, Math.min(5, Math.round((bits / Math.max(1, expectedKeys)) * Math.LN2)));
  }

  get bytes(): number {
    return this.words.byteLength;
  }

  add(buf: Buffer, start = 0, end = buf.length): void {
    const [first, h2] = hashPair(buf, start, end);
    let h1 = first;
    for (let i = 0; i < this.hashes; i++) {
      const bit = h1 & this.mask;
      this.words[bit >>> 5] |= 1 << (bit & 31);
      h1 = (h1 + h2) | 0;
    }
  }

  mayHave(buf: Buffer, start = 0, end = buf.length): boolean {
    const [first, h2] = hashPair(buf, start, end);
    let h1 = first;
    for (let i = 0; i < this.hashes; i++) {
      const bit = h1 & this.mask;
      if ((this.words[bit >>> 5] & (1 << (bit & 31))) === 0) return false;
      h1 = (h1 + h2) | 0;
    }
    return true;
  }
}

const pair: [number, number] = [0, 0];
/** The seeds of the two hashes: any two different ones make them independent enough for double hashing. */
const SEED_1 = 0;
const SEED_2 = 0x9e3779b9;

/**
 * Two independent 32-bit hashes (keyHash from two seeds); the filter probes
 * h1 + i*h2 (double hashing). h2 is odd so the probes of one key never
 * collapse onto one bit.
 */
function hashPair(buf: Buffer, start: number, end: number): [number, number] {
  pair[0] = keyHash(buf, end - start, SEED_1, start);
  pair[1] = keyHash(buf, end - start, SEED_2, start) | 1;
  return pair;
}
