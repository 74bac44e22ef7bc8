/**
 * Reads the replies to a pipeline of quiet meta gets (`mg <key> v f t k q`,
 * ended by `mn`) as they stream in: `VA <len> <flags...>` with its data
 * block, the MN that ends a batch, or any other line (an error).
 *
 * Bulk work (a full copy fetches millions of items): fields are read from the
 * bytes and handed out as offsets into one buffer, so a caller can copy the
 * key and value straight to where they go, without a string, a Buffer view
 * or an object per item.
 *
 * Pure: bytes in, fields out.
 */

export interface FetchedValue {
  /** Holds the reply line and its data block (valid until the next push). */
  buf: Buffer;
  /** The `k` flag's key, if returned (keyStart === keyEnd when not). */
  keyStart: number;
  keyEnd: number;
  /** The reply carries the `b` flag: the key was stored in base64 (meta `b`), and `k` returns it so. */
  keyBase64: boolean;
  /** The `O` flag's opaque token as a number, -1 if absent or not a number. */
  opaque: number;
  /** Client flags (`f`), 0 if absent. */
  flags: number;
  /** Remaining life in seconds (`t`): -1 for never, null if absent. */
  ttl: number | null;
  valueStart: number;
  valueEnd: number;
  /** 'other': the line as memcached sent it. */
  line: string;
}

export type ScanKind = 'value' | 'sentinel' | 'other';

export function newFetchedValue(): FetchedValue {
  return { buf: EMPTY, keyStart: 0, keyEnd: 0, keyBase64: false, opaque: -1, flags: 0, ttl: null, valueStart: 0, valueEnd: 0, line: '' };
}

const EMPTY = Buffer.alloc(0);
const LF = 0x0a;
const CR = 0x0d;
const SPACE = 0x20;
/** A line longer than this without LF means the upstream is not speaking memcached. */
export const SCAN_LINE_MAX = 64 * 1024;

export class MetaGetScanner {
  private buf: Buffer = EMPTY;
  private pos = 0;

  /** Adds bytes from the socket. Only an incomplete reply is carried over (copied) into the next chunk. */
  push(chunk: Buffer): void {
    this.buf = this.pos >= this.buf.length ? chunk : Buffer.concat([this.buf.subarray(this.pos), chunk]);
    this.pos = 0;
  }

  get buffered(): number {
    return this.buf.length - this.pos;
  }

  /** The next complete reply into `out`, or null until more bytes arrive. Throws on bytes memcached could not have sent. */
  next(out: FetchedValue): ScanKind | null {
    const buf = this.buf;
    const start = this.pos;
    const newline = buf.indexOf(LF, start);
    if (newline === -1) {
      if (buf.length - start > SCAN_LINE_MAX) throw new Error('memcached reply line too long');
      return null;
    }
    const end = newline > start && buf[newline - 1] === CR ? newline - 1 : newline;
    if (end - start === 2 && buf[start] === 0x4d && buf[start + 1] === 0x4e) {
      this.pos = newline + 1;
      return 'sentinel';
    }
    if (end - start < 4 || buf[start] !== 0x56 || buf[start + 1] !== 0x41 || buf[start + 2] !== SPACE) {
      out.line = buf.toString('latin1', start, end);
      this.pos = newline + 1;
      return 'other';
    }
    let at = start + 3;
    let length = 0;
    const digits = at;
    for (; at < end && buf[at] >= 0x30 && buf[at] <= 0x39; at++) length = length * 10 + buf[at] - 0x30;
    if (at === digits || (at < end && buf[at] !== SPACE)) throw new Error(`malformed VA line: ${buf.toString('latin1', start, Math.min(end, start + 100))}`);
    const valueStart = newline + 1;
    const valueEnd = valueStart + length;
    if (buf.length < valueEnd + 2) return null;
    if (buf[valueEnd] !== CR || buf[valueEnd + 1] !== LF) throw new Error('VA data block not terminated by CRLF');
    out.buf = buf;
    out.keyStart = out.keyEnd = 0;
    out.keyBase64 = false;
    out.opaque = -1;
    out.flags = 0;
    out.ttl = null;
    while (at < end) {
      at++; // the space
      const flag = buf[at];
      const tokenStart = at + 1;
      while (at < end && buf[at] !== SPACE) at++;
      if (flag === 0x6b /* k */) {
        out.keyStart = tokenStart;
        out.keyEnd = at;
      } else if (flag === 0x66 /* f */) {
        out.flags = unsigned(buf, tokenStart, at);
      } else if (flag === 0x74 /* t */) {
        out.ttl = buf[tokenStart] === 0x2d ? -unsigned(buf, tokenStart + 1, at) : unsigned(buf, tokenStart, at);
      } else if (flag === 0x4f /* O */) {
        out.opaque = unsigned(buf, tokenStart, at);
      } else if (flag === 0x62 /* b */ && at === tokenStart) {
        out.keyBase64 = true;
      }
    }
    out.valueStart = valueStart;
    out.valueEnd = valueEnd;
    this.pos = valueEnd + 2;
    return 'value';
  }
}

/** Decimal digits of buf[start, end); -1 if there are none or anything else is there. */
function unsigned(buf: Buffer, start: number, end: number): number {
  if (start >= end) return -1;
  let n = 0;
  for (let i = start; i < end; i++) {
    const d = buf[i] - 0x30;
    if (d < 0 || d > 9) return -1;
    n = n * 10 + d;
  }
  return n;
}
