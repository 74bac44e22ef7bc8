/** Seeded randomness for the fault suite: one stream per writer and one for the faults, so a seed replays the same choices. */

/** Small seeded PRNG (mulberry32): uniform in [0, 1). */
export function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** An integer in [min, max]. */
export function between(draw: () => number, min: number, max: number): number {
  return min + Math.floor(draw() * (max - min + 1));
}

export function pick<T>(draw: () => number, items: readonly T[]): T {
  return items[Math.floor(draw() * items.length)];
}

/** A stable number for a name, to derive a writer's stream from the run's seed. */
export function streamSeed(seed: number, name: string): number {
  let h = seed * 31 + 7;
  for (let i = 0; i < name.length; i++) h = (Math.imul(h, 33) + name.charCodeAt(i)) >>> 0;
  return h;
}
