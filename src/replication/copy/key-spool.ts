/**
 * The keys a full copy's walk chose and has not fetched yet, first in first
 * out (see copy-walk.ts). The copy reads memcached's crawler as fast as it
 * writes, so the walk runs far ahead of the paced fetches and its keys wait
 * here: as bytes in slabs, no object per key, and counted in bytes so the
 * copy can bound them.
 *
 * Each key carries a hash: when the spool is too full the copy narrows the
 * hash range its walk takes and drops the keys above it (dropFrom), which a
 * later walk takes instead. A key fetched over the binary protocol also
 * carries its expiry as the walk read it (binary replies do not tell it), in
 * four more bytes that only such keys take.
 *
 * Pure: bytes in, bytes out.
 */

/**
 * How the copy names a key to fetch it: as it is in a meta command; in
 * base64 (bytes the text tokenizer would split); or over the binary protocol,
 * when no text command can name it (see binary-keys.ts).
 */
export type FetchBy = 'text' | 'base64' | 'binary';

/** One key as shift() hands it out: valid until the next call. */
export interface SpooledKey {
  buf: Buffer;
  start: number;
  end: number;
  hash: number;
  /** The item's size in memcached (a budget estimate for fetches in flight). */
  size: number;
  by: FetchBy;
  /** Fetched by binary: its expiry as the walk read it (unix seconds, -1 for never); -1 for the others. */
  exp: number;
}

export function newSpooledKey(): SpooledKey {
  return { buf: Buffer.alloc(0), start: 0, end: 0, hash: 0, size: 0, by: 'text', exp: -1 };
}

/** hash u32, size u32, key length u8, fetched by u8, then (fetched by binary) exp u32, then the key. */
const HEADER = 10;
const EXP_BYTES = 4;
const BY_CODES: Record<FetchBy, number> = { text: 0, base64: 1, binary: 2 };
const BY_NAMES: FetchBy[] = ['text', 'base64', 'binary'];
/** exp u32 for never (-1); a real expiry that far (the year 2106) reads back as never. */
const EXP_NEVER = 0xffffffff;
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

  /**
   * Appends buf[start, end), fetched `by`, with `exp` (kept for a key fetched
   * by binary only); false (nothing spooled) if the key is longer than SPOOL_KEY_MAX.
   */
  push(hash: number, size: number, buf: Buffer, start: number, end: number, by: FetchBy = 'text', exp = -1): boolean {
    const length = end - start;
    if (length > SPOOL_KEY_MAX) return false;
    const withExp = by === 'binary';
    const entry = HEADER + (withExp ? EXP_BYTES : 0) + length;
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
    slab[at + 9] = BY_CODES[by];
    at += HEADER;
    if (withExp) {
      slab.writeUInt32LE(exp < 0 ? EXP_NEVER : Math.min(exp, EXP_NEVER - 1), at);
      at += EXP_BYTES;
    }
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
    const entry = entryBytes(slab, at);
    out.buf = slab;
    out.hash = slab.readUInt32LE(at);
    out.size = slab.readUInt32LE(at + 4);
    out.by = BY_NAMES[slab[at + 9]];
    const exp = out.by === 'binary' ? slab.readUInt32LE(at + HEADER) : EXP_NEVER;
    out.exp = exp === EXP_NEVER ? -1 : exp;
    out.end = at + entry;
    out.start = out.end - slab[at + 8];
    this.readAt = out.end;
    this.count--;
    this.bytes -= entry;
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
      for (let at = from === 0 ? this.readAt : 0; at < this.used[from];) {
        const entry = entryBytes(slab, at);
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

/** The whole entry at `at`: header, expiry if it has one, key. */
function entryBytes(slab: Buffer, at: number): number {
  return HEADER + (slab[at + 9] === BY_CODES.binary ? EXP_BYTES : 0) + slab[at + 8];
}
