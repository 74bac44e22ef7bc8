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

/**
 * The walk: `hash` walks memcached's hash table (1.6.9 and later), `all` its
 * LRUs (which skips items being read at that instant).
 */
export function metadumpRequest(walk: 'hash' | 'all'): Buffer {
  return Buffer.from(`lru_crawler metadump ${walk}\r\n`, 'latin1');
}

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
  /** item: the item's CAS (0 when memcached runs with -C or the field is absent). */
  cas: number;
  /** item: when it expires, in unix seconds; -1 = never (also when the field is absent). */
  exp: number;
  /** error: the line as memcached sent it. */
  message: string;
}

/**
 * What an error line of a walk means (memcached's proto_text.c,
 * process_lru_crawler_command): `BUSY` another walk is running (try again),
 * `NOTSTARTED` nothing to crawl, `BADCLASS` this memcached does not know the
 * walk asked for (`hash` needs 1.6.9), `... not allowed` memcached runs with
 * -X (dumping disabled, for good); anything else is some other refusal.
 */
export type WalkRefusal = 'busy' | 'not_started' | 'bad_class' | 'not_allowed' | 'other';

export function walkRefusal(message: string): WalkRefusal {
  if (message.startsWith('BUSY')) return 'busy';
  if (message.startsWith('NOTSTARTED')) return 'not_started';
  if (message.startsWith('BADCLASS')) return 'bad_class';
  if (message.includes('not allowed')) return 'not_allowed';
  return 'other';
}

export function newMetadumpLine(): MetadumpLine {
  return { kind: 'end', keyStart: 0, keyEnd: 0, encoded: false, size: 0, cas: 0, exp: -1, message: '' };
}

const SPACE = 0x20;
const PERCENT = 0x25;
const KEY_PREFIX = Buffer.from('key=');
const SIZE_PREFIX = Buffer.from('size=');
const CAS_PREFIX = Buffer.from('cas=');
const EXP_PREFIX = Buffer.from('exp=');
const NEVER = Buffer.from('-1');
const END = Buffer.from('END');

/** Scans the line buf[start, end) (its LF excluded; a CR before it is ignored) into `out`. */
export function scanMetadumpLine(buf: Buffer, start: number, end: number, out: MetadumpLine): void {
  if (scanMetadumpKey(buf, start, end, out)) scanMetadumpFields(buf, end, out);
}

/**
 * The first half of scanMetadumpLine: the line's kind and, for an item, its
 * key. True when the line is an item whose other fields scanMetadumpFields
 * can read (a reader that wants only some keys skips that for the others).
 */
export function scanMetadumpKey(buf: Buffer, start: number, end: number, out: MetadumpLine): boolean {
  if (end > start && buf[end - 1] === 0x0d) end--;
  if (!startsWith(buf, start, end, KEY_PREFIX)) {
    if (end - start === END.length && startsWith(buf, start, end, END)) {
      out.kind = 'end';
      return false;
    }
    out.kind = 'error';
    out.message = buf.toString('latin1', start, end);
    return false;
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
    return false;
  }
  out.kind = 'item';
  out.keyStart = keyStart;
  out.keyEnd = at;
  out.encoded = encoded;
  return true;
}

/** The second half of scanMetadumpLine: size, cas and exp of the item line (ending at `end`) scanMetadumpKey read into `out`. */
export function scanMetadumpFields(buf: Buffer, end: number, out: MetadumpLine): void {
  if (end > out.keyEnd && buf[end - 1] === 0x0d) end--;
  out.size = 0;
  out.cas = 0;
  out.exp = -1;
  // In whatever order.
  let at = out.keyEnd;
  while (at < end) {
    at++;
    if (startsWith(buf, at, end, SIZE_PREFIX)) out.size = decimal(buf, at + SIZE_PREFIX.length, end);
    else if (startsWith(buf, at, end, CAS_PREFIX)) out.cas = decimal(buf, at + CAS_PREFIX.length, end);
    else if (startsWith(buf, at, end, EXP_PREFIX) && !startsWith(buf, at + EXP_PREFIX.length, end, NEVER)) {
      out.exp = decimal(buf, at + EXP_PREFIX.length, end);
    }
    while (at < end && buf[at] !== SPACE) at++;
  }
}

/** Digits up to the next non-digit. CAS values past 2^53 lose precision: that many writes do not happen. */
function decimal(buf: Buffer, start: number, end: number): number {
  let n = 0;
  for (let i = start; i < end && buf[i] >= 0x30 && buf[i] <= 0x39; i++) n = n * 10 + buf[i] - 0x30;
  return n;
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
