/**
 * The header line of a meta reply (memcached 1.6 protocol.txt, "Meta
 * Commands"): a two-letter status, for VA the length of the data block that
 * follows, then the flags asked for, each a letter and its token
 * (`VA 3 f5 t100 kfoo`, `HD c42`, `EN`).
 *
 * Read from the bytes into a reused object: a full copy reads millions of
 * these, so the reader of a hot path pays no string or object per line.
 *
 * Pure: bytes in, fields out.
 */

export type MetaStatus = 'VA' | 'HD' | 'EN' | 'NF' | 'NS' | 'EX' | 'MN';

export interface MetaHeader {
  /** null: the line is no meta status line (an error, or anything else). */
  status: MetaStatus | null;
  /** VA: the data block's length; -1 when the line names none a reader could trust (and for other statuses). */
  length: number;
  /** Client flags (`f`): 0 if absent, -1 if not a number. */
  flags: number;
  /** Remaining life in seconds (`t`): -1 for never, null if absent or not a number. */
  ttl: number | null;
  /** The item's CAS (`c`): 0 if absent, -1 if not a number. */
  cas: number;
  /** The `O` flag's opaque token as a number, -1 if absent or not a number. */
  opaque: number;
  /** The `k` flag's key in the scanned buffer (keyStart === keyEnd when absent). */
  keyStart: number;
  keyEnd: number;
  /** The `b` flag: the key was stored in base64 (meta `b`), and `k` returns it so. */
  keyBase64: boolean;
  /** `X`: an `md … I` marked the item stale (it is still served). */
  stale: boolean;
  /** `W`: this read won the item's recache token (memcached gives it to the first read of a stale item). */
  won: boolean;
}

export function newMetaHeader(): MetaHeader {
  return { status: null, length: -1, flags: 0, ttl: null, cas: 0, opaque: -1, keyStart: 0, keyEnd: 0, keyBase64: false, stale: false, won: false };
}

const SPACE = 0x20;
const CR = 0x0d;

/** Reads the header line buf[start, end) (its LF excluded; a CR before it is ignored) into `out`. */
export function scanMetaHeader(buf: Buffer, start: number, end: number, out: MetaHeader): void {
  if (end > start && buf[end - 1] === CR) end--;
  out.status = statusOf(buf, start, end);
  out.length = -1;
  out.flags = 0;
  out.ttl = null;
  out.cas = 0;
  out.opaque = -1;
  out.keyStart = out.keyEnd = 0;
  out.keyBase64 = false;
  out.stale = out.won = false;
  if (out.status === null) return;
  let at = start + 2;
  if (out.status === 'VA') {
    at = valueLengthEnd(buf, at, end);
    if (at === -1) return;
    out.length = unsigned(buf, start + 3, at);
  }
  scanFlags(buf, at, end, out);
}

/** The header of a reply held whole (its first line in buf, up to its LF), as a new object: for readers off the hot paths. */
export function parseMetaHeader(buf: Buffer): MetaHeader {
  const out = newMetaHeader();
  const newline = buf.indexOf(0x0a);
  scanMetaHeader(buf, 0, newline === -1 ? buf.length : newline, out);
  return out;
}

/**
 * The data length a `VA <length> ...` line buf[start, end) announces; -1
 * when the line starts with `VA` but gives no length (no digits, or digits
 * not followed by a space or the end), null when it is no VA line. Readers
 * that need no flags (a proxy streaming replies) stop here.
 */
export function metaValueLength(buf: Buffer, start: number, end: number): number | null {
  if (end > start && buf[end - 1] === CR) end--;
  if (statusOf(buf, start, end) !== 'VA') return null;
  const lengthEnd = valueLengthEnd(buf, start + 2, end);
  return lengthEnd === -1 ? -1 : unsigned(buf, start + 3, lengthEnd);
}

/** The status of buf[start, end): two capitals followed by a space or the end of the line. */
function statusOf(buf: Buffer, start: number, end: number): MetaStatus | null {
  if (end - start < 2 || (end - start > 2 && buf[start + 2] !== SPACE)) return null;
  const a = buf[start];
  const b = buf[start + 1];
  if (a === 0x56 /* V */) return b === 0x41 /* A */ ? 'VA' : null;
  if (a === 0x48 /* H */) return b === 0x44 /* D */ ? 'HD' : null;
  if (a === 0x45 /* E */) return b === 0x4e /* N */ ? 'EN' : b === 0x58 /* X */ ? 'EX' : null;
  if (a === 0x4e /* N */) return b === 0x46 /* F */ ? 'NF' : b === 0x53 /* S */ ? 'NS' : null;
  if (a === 0x4d /* M */) return b === 0x4e /* N */ ? 'MN' : null;
  return null;
}

/** Where the digits of VA's length end (`at` is just after `VA`); -1 if there are none, or anything but a space follows them. */
function valueLengthEnd(buf: Buffer, at: number, end: number): number {
  if (at >= end) return -1;
  const digits = ++at; // past the space
  while (at < end && buf[at] >= 0x30 && buf[at] <= 0x39) at++;
  return at === digits || (at < end && buf[at] !== SPACE) ? -1 : at;
}

/** The flags from `at` (a space before each) to `end`: those memrepl asks for; others are passed over. */
function scanFlags(buf: Buffer, at: number, end: number, out: MetaHeader): void {
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
      out.ttl = ttlOf(buf, tokenStart, at);
    } else if (flag === 0x63 /* c */) {
      out.cas = unsigned(buf, tokenStart, at);
    } else if (flag === 0x4f /* O */) {
      out.opaque = unsigned(buf, tokenStart, at);
    } else if (at === tokenStart) {
      // Flags without a token.
      if (flag === 0x62 /* b */) out.keyBase64 = true;
      else if (flag === 0x58 /* X */) out.stale = true;
      else if (flag === 0x57 /* W */) out.won = true;
    }
  }
}

/** t's token: -1 (never) or the seconds left; null for anything else. */
function ttlOf(buf: Buffer, start: number, end: number): number | null {
  if (end - start === 2 && buf[start] === 0x2d /* - */ && buf[start + 1] === 0x31 /* 1 */) return -1;
  const seconds = unsigned(buf, start, end);
  return seconds === -1 ? null : seconds;
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
