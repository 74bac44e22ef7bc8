/**
 * `lru_crawler metadump` output (memcached 1.6): one line per item,
 * `key=<url-encoded> exp=<unix time or -1> la=... cas=... fetch=... cls=... size=<bytes>`,
 * ended by `END`. Lines end with a bare LF (only END has CRLF).
 *
 * Read straight from the socket's bytes: a full copy walks millions of
 * lines, and a string and a Map per line cost more than fetching the item.
 *
 * Pure: bytes in, fields out.
 */

/** One line, as scanMetadumpLine fills it in (one object reused for every line). */
export interface MetadumpLine {
  kind: 'item' | 'end' | 'error';
  /** item: where the key's encoded bytes are in the scanned buffer. */
  keyStart: number;
  keyEnd: number;
  /** item: the key holds %XX escapes (decode with percentDecode); else its bytes are the key. */
  encoded: boolean;
  /** item: size in memcached (header included): a budget estimate, not the value length. */
  size: number;
  /** item: when it expires, unix seconds on memcached's clock; -1 never; null when the line does not say. */
  exp: number | null;
  /** error: the line as memcached sent it. */
  message: string;
}

export function newMetadumpLine(): MetadumpLine {
  return { kind: 'end', keyStart: 0, keyEnd: 0, encoded: false, size: 0, exp: null, message: '' };
}

const SPACE = 0x20;
const PERCENT = 0x25;
const KEY_PREFIX = Buffer.from('key=');
const SIZE_PREFIX = Buffer.from('size=');
const EXP_PREFIX = Buffer.from('exp=');
const END = Buffer.from('END');

/** Scans the line buf[start, end) (its LF excluded; a CR before it is ignored) into `out`. */
export function scanMetadumpLine(buf: Buffer, start: number, end: number, out: MetadumpLine): void {
  if (end > start && buf[end - 1] === 0x0d) end--;
  if (!startsWith(buf, start, end, KEY_PREFIX)) {
    if (end - start === END.length && startsWith(buf, start, end, END)) {
      out.kind = 'end';
      return;
    }
    out.kind = 'error';
    out.message = buf.toString('latin1', start, end);
    return;
  }
  const keyStart = start + KEY_PREFIX.length;
  let at = keyStart;
  let encoded = false;
  while (at < end && buf[at] !== SPACE) {
    if (buf[at] === PERCENT) encoded = true;
    at++;
  }
  if (at === keyStart) {
    out.kind = 'error';
    out.message = `undecodable metadump line: ${buf.toString('latin1', start, Math.min(end, start + 100))}`;
    return;
  }
  out.kind = 'item';
  out.keyStart = keyStart;
  out.keyEnd = at;
  out.encoded = encoded;
  out.size = 0;
  // memcached 1.6 writes exp right after the key.
  out.exp = startsWith(buf, at + 1, end, EXP_PREFIX) ? signedDecimal(buf, at + 1 + EXP_PREFIX.length, end) : null;
  // memcached 1.6 writes size last: look there first.
  let last = end;
  while (last > at && buf[last - 1] !== SPACE) last--;
  if (startsWith(buf, last, end, SIZE_PREFIX)) {
    out.size = decimal(buf, last + SIZE_PREFIX.length, end);
    return;
  }
  // The other fields, in whatever order: only size matters here.
  while (at < end) {
    at++;
    if (startsWith(buf, at, end, SIZE_PREFIX)) out.size = decimal(buf, at + SIZE_PREFIX.length, end);
    while (at < end && buf[at] !== SPACE) at++;
  }
}

function decimal(buf: Buffer, start: number, end: number): number {
  let n = 0;
  for (let i = start; i < end && buf[i] >= 0x30 && buf[i] <= 0x39; i++) n = n * 10 + buf[i] - 0x30;
  return n;
}

function signedDecimal(buf: Buffer, start: number, end: number): number | null {
  const negative = start < end && buf[start] === 0x2d;
  const from = negative ? start + 1 : start;
  if (from >= end || buf[from] < 0x30 || buf[from] > 0x39) return null;
  const n = decimal(buf, from, end);
  return negative ? -n : n;
}

function startsWith(buf: Buffer, start: number, end: number, prefix: Buffer): boolean {
  if (end - start < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (buf[start + i] !== prefix[i]) return false;
  return true;
}

/** %XX escapes in buf[start, end) to bytes; anything else as is. Null if an escape is malformed. */
export function percentDecode(buf: Buffer, start = 0, end = buf.length): Buffer | null {
  const out = Buffer.allocUnsafe(end - start);
  const n = percentDecodeInto(buf, start, end, out);
  return n < 0 ? null : out.subarray(0, n);
}

/**
 * percentDecode into `out` (at least end - start bytes), without an
 * allocation per key: returns the decoded length, or -1 if an escape is
 * malformed.
 */
export function percentDecodeInto(buf: Buffer, start: number, end: number, out: Buffer): number {
  let n = 0;
  for (let i = start; i < end; i++) {
    const c = buf[i];
    if (c !== PERCENT) {
      out[n++] = c;
      continue;
    }
    const high = i + 2 < end ? hexValue(buf[i + 1]) : -1;
    const low = high < 0 ? -1 : hexValue(buf[i + 2]);
    if (low < 0) return -1;
    out[n++] = high * 16 + low;
    i += 2;
  }
  return n;
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  return -1;
}
