/**
 * The keys a full copy's walk chose and has not fetched yet, first in first
 * out (see full-copy.ts). The copy reads memcached's crawler as fast as it
 * writes, so the walk runs far ahead of the paced fetches and its keys wait
 * here: as bytes in slabs, no object per key, and counted in bytes so the
 * copy can bound them.
 *
 * Each key carries a hash: when the spool is too full the copy narrows the
 * hash range its walk takes and drops the keys above it (dropFrom), which a
 * later walk takes instead.
 *
 * Pure: bytes in, bytes out.
 */

/** One key as shift() hands it out: valid until the next call. */
export interface SpooledKey {
  buf: Buffer;
  start: number;
  end: number;
  hash: number;
  /** The item's size in memcached (a budget estimate for fetches in flight). */
  size: number;
  /** Bytes the text protocol cannot carry: fetch it in base64. */
  binary: boolean;
}

export function newSpooledKey(): SpooledKey {
  return { buf: Buffer.alloc(0), start: 0, end: 0, hash: 0, size: 0, binary: false };
}

/** hash u32, size u32, key length u8, binary u8, then the key. */
const HEADER = 10;
/** Keys longer than a length byte holds are not spooled (memcached's keys are 250 bytes at most). */
export const SPOOL_KEY_MAX = 255;
const SLAB_BYTES = 64 * 1024;

export class KeySpool {
  /** Slabs in order; the first is read from `readAt`, the last written at `writeAt`. */
  private slabs: Buffer[] = [];
  /** Bytes used in each slab. */
  private used: number[] = [];
  private readAt = 0;
  /** Keys waiting. */
  count = 0;
  /** Bytes of the keys waiting, headers included (what the copy bounds). */
  bytes = 0;

  /** Appends buf[start, end); false (nothing spooled) if the key is longer than SPOOL_KEY_MAX. */
  push(hash: number, size: number, buf: Buffer, start: number, end: number, binary: boolean): boolean {
    const length = end - start;
    if (length > SPOOL_KEY_MAX) return false;
    const entry = HEADER + length;
    let last = this.slabs.length - 1;
    if (last < 0 || this.used[last] + entry > this.slabs[last].length) {
      this.slabs.push(Buffer.allocUnsafe(SLAB_BYTES));
      this.used.push(0);
      last++;
    }
    const slab = this.slabs[last];
    let at = this.used[last];
    slab.writeUInt32LE(hash >>> 0, at);
    slab.writeUInt32LE(Math.min(size, 0xffffffff) >>> 0, at + 4);
    slab[at + 8] = length;
    slab[at + 9] = binary ? 1 : 0;
    at += HEADER;
    buf.copy(slab, at, start, end);
    this.used[last] = at + length;
    this.count++;
    this.bytes += entry;
    return true;
  }

  /** Takes the oldest key into `out`; false when empty. */
  shift(out: SpooledKey): boolean {
    if (this.count === 0) return false;
    while (this.readAt >= this.used[0]) {
      this.slabs.shift();
      this.used.shift();
      this.readAt = 0;
    }
    const slab = this.slabs[0];
    const at = this.readAt;
    const length = slab[at + 8];
    out.buf = slab;
    out.hash = slab.readUInt32LE(at);
    out.size = slab.readUInt32LE(at + 4);
    out.binary = slab[at + 9] === 1;
    out.start = at + HEADER;
    out.end = out.start + length;
    this.readAt = out.end;
    this.count--;
    this.bytes -= HEADER + length;
    // Nothing left in this slab: let it go now rather than on the next shift (out.buf still holds it).
    if (this.readAt >= this.used[0] && this.slabs.length > 1) {
      this.slabs.shift();
      this.used.shift();
      this.readAt = 0;
    }
    return true;
  }

  /**
   * Drops every waiting key whose hash is `hi` or more; returns how many.
   * In place: the keys kept move towards the front (a key never moves past
   * where it was read from), so dropping needs no second copy of the spool.
   */
  dropFrom(hi: number): number {
    if (this.count === 0) return 0;
    let dropped = 0;
    let toSlab = 0;
    let to = this.readAt;
    for (let from = 0; from < this.slabs.length; from++) {
      const slab = this.slabs[from];
      for (let at = from === 0 ? this.readAt : 0; at < this.used[from]; ) {
        const entry = HEADER + slab[at + 8];
        if (slab.readUInt32LE(at) >= hi) {
          dropped++;
          this.bytes -= entry;
        } else {
          if (to + entry > this.slabs[toSlab].length) [toSlab, to] = [toSlab + 1, 0];
          slab.copy(this.slabs[toSlab], to, at, at + entry);
          to += entry;
        }
        at += entry;
      }
    }
    this.count -= dropped;
    this.used[toSlab] = to;
    this.slabs.length = this.used.length = toSlab + 1;
    return dropped;
  }

  clear(): void {
    this.slabs = [];
    this.used = [];
    this.readAt = 0;
    this.count = 0;
    this.bytes = 0;
  }
}
