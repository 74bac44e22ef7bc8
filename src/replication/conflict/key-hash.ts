/**
 * The 32-bit hash of a key's bytes that the replication side's tables use
 * (RecentWrites' index, Contention's buckets): FNV-1a from a per-table seed,
 * so keys chosen to collide on one node do not collide on another, nor after
 * a restart, then murmur3's finaliser, because the tables use the low bits,
 * which FNV alone mixes poorly. The key is key[start, start + length).
 */
export function keyHash(key: Uint8Array, length: number, seed: number, start = 0): number {
  let h = FNV_OFFSET ^ seed;
  for (let i = start; i < start + length; i++) h = Math.imul(h ^ key[i]!, FNV_PRIME);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** A seed for keyHash, one per table. */
export function randomSeed(): number {
  return (Math.random() * 0x1_0000_0000) >>> 0;
}

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;
