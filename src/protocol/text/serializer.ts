/**
 * Builds text/meta protocol bytes: client requests rewritten for upstream (a
 * `noreply` or `q` stripped so the proxy learns the outcome), the proxy's own
 * error lines, and the meta commands replication uses to apply and read items.
 *
 * Replication uses meta commands, with base64 keys (`b` flag) where a key's
 * bytes would not survive the text tokenizer (keys written through the
 * binary protocol can hold any bytes).
 */
import { copyRange, writeDecimal } from '../bytes';
import type { MetaRequest } from './messages';

const CRLF = '\r\n';
const SPACE = 0x20;
const CR = 0x0d;
const LF = 0x0a;

/** Appended after a request memcached might not answer: everything up to its `MN` belongs to the request. */
export const SENTINEL = Buffer.from('mn\r\n');
export const SENTINEL_REPLY = 'MN';

/**
 * A command line from its tokens minus the one at `skip`, followed by the
 * client's data block untouched (even a malformed one: memcached must still
 * see it and answer "bad data chunk"). memcached splits on spaces, so
 * re-joining the tokens is equivalent to the client's line.
 */
export function lineWithout(tokens: string[], skip: number, raw: Buffer, value: Buffer | null): Buffer {
  const line = Buffer.from(tokens.filter((_, i) => i !== skip).join(' ') + CRLF, 'latin1');
  if (value === null) return line;
  return Buffer.concat([line, raw.subarray(raw.length - value.length - 2)]);
}

/** The meta request without its `q` flag (flags start after the key, or after the length for ms). */
export function metaWithoutQuiet(request: MetaRequest): Buffer {
  const quietAt = request.tokens.findIndex((t, i) => i >= 2 && t[0] === 'q');
  return lineWithout(request.tokens, quietAt, request.raw, request.value);
}

export function serverError(message: string): Buffer {
  return Buffer.from(`SERVER_ERROR ${message}${CRLF}`);
}

export const TOO_LARGE = Buffer.from('SERVER_ERROR object too large for cache\r\n');

/**
 * A key as meta commands take it: `token` as is when memcached's tokenizer
 * keeps it intact (no space, CR, LF or NUL), else base64 with the `b` flag
 * (` b`, to be placed among the flags: after the data length for ms).
 * Base64 grows a key by a third and memcached checks the encoded length
 * against 250, so no meta command can name a binary-unsafe key longer than
 * 186 bytes (replication uses the binary protocol for those).
 */
export function metaKey(key: Buffer): { token: string; flag: string } {
  return textSafeKey(key) ? { token: key.toString('latin1'), flag: '' } : { token: key.toString('base64'), flag: ' b' };
}

/** True when memcached's tokenizer keeps key[0, length) intact: no space, CR, LF or NUL. */
export function textSafeKey(key: Uint8Array, length = key.length): boolean {
  for (let i = 0; i < length; i++) {
    const c = key[i];
    if (c === 0x20 || c === 0x0d || c === 0x0a || c === 0x00) return false;
  }
  return true;
}

/** Longest key metaKey can express whatever its bytes. */
export const META_BASE64_KEY_MAX = 186;

export function metaKeyFits(key: Buffer): boolean {
  return metaKey(key).flag === '' || key.length <= META_BASE64_KEY_MAX;
}

/** `<cmd> <key>[ b]`: the start of every keyed meta command but ms. */
function keyed(command: string, key: Buffer): string {
  const { token, flag } = metaKey(key);
  return `${command} ${token}${flag}`;
}

/**
 * `quiet`: with memcached's q flag, so only a failure answers (replication's
 * batches). `cas`: only if the item still has this CAS (else EX).
 */
export function metaDelete(key: Buffer, quiet = false, cas: number | null = null): Buffer {
  return Buffer.from(`${keyed('md', key)}${cas === null ? '' : ` C${cas}`}${quiet ? ' q' : ''}${CRLF}`, 'latin1');
}

/** A replayed append or prepend (`ms … MA|MP`, without F or T: the item keeps its own), quiet; `data`: the bytes added. */
export function metaAppend(key: Buffer, data: Buffer, mode: 'append' | 'prepend'): Buffer {
  const { token, flag } = metaKey(key);
  const head = Buffer.from(`ms ${token} ${data.length}${flag} M${mode === 'append' ? 'A' : 'P'} q${CRLF}`, 'latin1');
  return Buffer.concat([head, data, Buffer.from(CRLF, 'latin1')]);
}

/** A replayed incr or decr (`ma … MI|MD D<delta>`), quiet; a missing item stays missing. */
export function metaArithmetic(key: Buffer, op: 'incr' | 'decr', delta: Buffer): Buffer {
  return Buffer.from(`${keyed('ma', key)} M${op === 'incr' ? 'I' : 'D'} D${delta.toString('latin1')} q${CRLF}`, 'latin1');
}

/** Marks the item stale, keeping its value and TTL; `quiet` and `cas` as for metaDelete. */
export function metaInvalidate(key: Buffer, quiet = false, cas: number | null = null): Buffer {
  return Buffer.from(`${keyed('md', key)} I${cas === null ? '' : ` C${cas}`}${quiet ? ' q' : ''}${CRLF}`, 'latin1');
}

export function metaTouch(key: Buffer, ttlSeconds: number, quiet = false): Buffer {
  return Buffer.from(`${keyed('mg', key)} T${ttlSeconds}${quiet ? ' q' : ''}${CRLF}`, 'latin1');
}

/** mg's flags for reading an item to replicate it: value, client flags and remaining TTL, without bumping it in the LRU. */
const READ_FLAGS = ' v f t u';

/** Reads an item's value, client flags and remaining TTL (and `cas`: its CAS) without bumping it in the LRU. */
export function metaRead(key: Buffer, { cas = false } = {}): Buffer {
  return Buffer.from(`${keyed('mg', key)}${READ_FLAGS}${cas ? ' c' : ''}${CRLF}`, 'latin1');
}

/** Reads an item's CAS only. */
export function metaReadCas(key: Buffer): Buffer {
  return Buffer.from(`${keyed('mg', key)} c${CRLF}`, 'latin1');
}

const FETCH_HEAD = Buffer.from('mg ', 'latin1');
/** A full copy's: c too, since its read of a stale item may win the recache token, given back only if the item is still the one read. */
const FETCH_FLAGS = `${READ_FLAGS} c`;
const FETCH_TAIL = Buffer.from(`${FETCH_FLAGS} k q${CRLF}`, 'latin1');
/** The bytes of a full copy's fetch at most: a 250-byte key, or a 186-byte one in base64 with its opaque. */
export const META_FETCH_BYTES_MAX = 400;

/**
 * A full copy's fetch of key[start, end), a key memcached's tokenizer keeps
 * intact, written at buf[at] (room: META_FETCH_BYTES_MAX); returns the offset
 * after it. `mg <key> v f t u c k q`: memcached answers hits only (q), each
 * naming its key (k).
 */
export function writeMetaFetch(buf: Buffer, at: number, key: Buffer, start: number, end: number): number {
  at = copyRange(FETCH_HEAD, 0, FETCH_HEAD.length, buf, at);
  at = copyRange(key, start, end, buf, at);
  return copyRange(FETCH_TAIL, 0, FETCH_TAIL.length, buf, at);
}

/**
 * writeMetaFetch for a key that must travel in base64:
 * `mg <base64> b v f t u c O<opaque> q`. Its reply names it by the opaque, not
 * by k (which would answer the key in base64).
 */
export function writeMetaFetchBase64(buf: Buffer, at: number, key: Buffer, start: number, end: number, opaque: number): number {
  return at + buf.write(`mg ${key.toString('base64', start, end)} b${FETCH_FLAGS} O${opaque} q${CRLF}`, at, 'latin1');
}

/** ms's M flag: E stores only a key memcached lacks (add), S any (set). */
export type MetaSetMode = 'E' | 'S';

export interface MetaSetFields {
  /** F: the client flags; left out when null. */
  clientFlags: number | null;
  /** T: the exptime, as memcached reads it. */
  exptime: number;
  /** M: left out (memcached's default, set) when null. */
  mode: MetaSetMode | null;
  /** q: memcached answers only a failure (replication's batches). */
  quiet: boolean;
}

/** The bytes of an ms command at most beyond its key's token and its data block. */
const META_SET_OVERHEAD_MAX = 60;

/** Room writeMetaSet needs at most; `textSafe`: what textSafeKey(key) says, when the caller knows already. */
export function metaSetBytesMax(key: Buffer, valueLength: number, textSafe = textSafeKey(key)): number {
  const token = textSafe ? key.length : Math.ceil(key.length / 3) * 4 + 2;
  return token + valueLength + META_SET_OVERHEAD_MAX;
}

/**
 * `ms <key> <length>[ b][ F<flags>] T<exptime>[ M<mode>][ q]` and the data
 * block, written at buf[at] (room: metaSetBytesMax); returns the offset after
 * it. The key goes in base64 (b) when memcached's tokenizer would split it
 * (see metaKey). Written in place, byte by byte: the applier writes one per
 * replicated record into its batch, with no string or buffer per record.
 */
export function writeMetaSet(buf: Buffer, at: number, key: Buffer, value: Buffer, fields: MetaSetFields): number {
  const base64 = !textSafeKey(key);
  buf[at++] = 0x6d; // m
  buf[at++] = 0x73; // s
  buf[at++] = SPACE;
  at = base64 ? at + buf.write(key.toString('base64'), at, 'latin1') : copyRange(key, 0, key.length, buf, at);
  buf[at++] = SPACE;
  at = writeDecimal(buf, at, value.length);
  if (base64) at = writeFlag(buf, at, 0x62); // b
  if (fields.clientFlags !== null) at = writeDecimal(buf, writeFlag(buf, at, 0x46), fields.clientFlags); // F
  at = writeDecimal(buf, writeFlag(buf, at, 0x54), fields.exptime); // T
  if (fields.mode !== null) {
    at = writeFlag(buf, at, 0x4d); // M
    buf[at++] = fields.mode.charCodeAt(0);
  }
  if (fields.quiet) at = writeFlag(buf, at, 0x71); // q
  buf[at++] = CR;
  buf[at++] = LF;
  at = copyRange(value, 0, value.length, buf, at);
  buf[at++] = CR;
  buf[at++] = LF;
  return at;
}

/** writeMetaSet into a buffer of its own. */
export function metaSet(key: Buffer, value: Buffer, fields: MetaSetFields): Buffer {
  const buf = Buffer.allocUnsafe(metaSetBytesMax(key, value.length));
  return buf.subarray(0, writeMetaSet(buf, 0, key, value, fields));
}

/** ` <flag>` at buf[at]; returns the offset after it. */
function writeFlag(buf: Buffer, at: number, flag: number): number {
  buf[at] = SPACE;
  buf[at + 1] = flag;
  return at + 2;
}

export function flushAll(delay: number, noreply = false): Buffer {
  return Buffer.from(`flush_all${delay > 0 ? ` ${delay}` : ''}${noreply ? ' noreply' : ''}${CRLF}`, 'latin1');
}
