/**
 * Typed packets of memcached's binary protocol (deprecated since 1.6.0, still
 * served), as the parsers frame them and the serializer builds them.
 *
 * Every packet is a 24-byte header followed by a body of extras, key and value
 * (in that order). Multi-byte fields are big-endian. memcached echoes the
 * request's opcode and opaque in its response, which is what lets a client
 * match replies to pipelined requests.
 *
 * Packets keep their raw bytes so the proxy can forward exactly what it got.
 */

export const REQUEST_MAGIC = 0x80;
export const RESPONSE_MAGIC = 0x81;
export const HEADER_LENGTH = 24;

/** Opcodes memcached 1.6 dispatches (proto_bin.c dispatch_bin_command); every other opcode is "Unknown command". */
export const Opcode = {
  Get: 0x00,
  Set: 0x01,
  Add: 0x02,
  Replace: 0x03,
  Delete: 0x04,
  Increment: 0x05,
  Decrement: 0x06,
  Quit: 0x07,
  Flush: 0x08,
  GetQ: 0x09,
  NoOp: 0x0a,
  Version: 0x0b,
  GetK: 0x0c,
  GetKQ: 0x0d,
  Append: 0x0e,
  Prepend: 0x0f,
  Stat: 0x10,
  SetQ: 0x11,
  AddQ: 0x12,
  ReplaceQ: 0x13,
  DeleteQ: 0x14,
  IncrementQ: 0x15,
  DecrementQ: 0x16,
  QuitQ: 0x17,
  FlushQ: 0x18,
  AppendQ: 0x19,
  PrependQ: 0x1a,
  /** In the spec but not served by memcached 1.6: it answers "Unknown command". */
  Verbosity: 0x1b,
  Touch: 0x1c,
  GAT: 0x1d,
  GATQ: 0x1e,
  SASLListMechs: 0x20,
  SASLAuth: 0x21,
  SASLStep: 0x22,
  GATK: 0x23,
  GATKQ: 0x24,
} as const;

export const Status = {
  Success: 0x00,
  KeyNotFound: 0x01,
  KeyExists: 0x02,
  TooLarge: 0x03,
  InvalidArguments: 0x04,
  NotStored: 0x05,
  NonNumeric: 0x06,
  AuthError: 0x20,
  AuthContinue: 0x21,
  UnknownCommand: 0x81,
  OutOfMemory: 0x82,
} as const;

/** The text memcached puts in an error response's value when it has no better one (write_bin_error). */
export const STATUS_MESSAGES: Readonly<Record<number, string>> = {
  [Status.OutOfMemory]: 'Out of memory',
  [Status.UnknownCommand]: 'Unknown command',
  [Status.KeyNotFound]: 'Not found',
  [Status.InvalidArguments]: 'Invalid arguments',
  [Status.KeyExists]: 'Data exists for key.',
  [Status.TooLarge]: 'Too large.',
  [Status.NonNumeric]: 'Non-numeric server-side value for incr or decr',
  [Status.NotStored]: 'Not stored.',
  [Status.AuthError]: 'Auth failure.',
};

/**
 * Quiet opcode → its non-quiet twin. memcached runs the twin with replies
 * silenced (c->noreply); the proxy sends the twin upstream so it always gets
 * one reply and learns the outcome, then silences it the way memcached would.
 */
export const LOUD_TWIN: ReadonlyMap<number, number> = new Map([
  [Opcode.GetQ, Opcode.Get],
  [Opcode.GetKQ, Opcode.GetK],
  [Opcode.SetQ, Opcode.Set],
  [Opcode.AddQ, Opcode.Add],
  [Opcode.ReplaceQ, Opcode.Replace],
  [Opcode.DeleteQ, Opcode.Delete],
  [Opcode.IncrementQ, Opcode.Increment],
  [Opcode.DecrementQ, Opcode.Decrement],
  [Opcode.QuitQ, Opcode.Quit],
  [Opcode.FlushQ, Opcode.Flush],
  [Opcode.AppendQ, Opcode.Append],
  [Opcode.PrependQ, Opcode.Prepend],
  [Opcode.GATQ, Opcode.GAT],
  [Opcode.GATKQ, Opcode.GATK],
]);

/** The opcode memcached actually executes for `opcode` (itself unless quiet). */
export function loudOpcode(opcode: number): number {
  return LOUD_TWIN.get(opcode) ?? opcode;
}

export function isQuiet(opcode: number): boolean {
  return LOUD_TWIN.has(opcode);
}

const NAMES: ReadonlyMap<number, string> = new Map(Object.entries(Opcode).map(([name, code]) => [code, name.toLowerCase()]));

/** "get", "setq", "gatkq", ... or "unknown" (metric labels, logs). */
export function opcodeName(opcode: number): string {
  return NAMES.get(opcode) ?? 'unknown';
}

/** Header fields common to requests and responses. */
interface HeaderBase {
  magic: number;
  opcode: number;
  keyLength: number;
  extrasLength: number;
  dataType: number;
  /** extras + key + value. */
  totalBodyLength: number;
  /** Client-chosen tag memcached echoes back untouched. */
  opaque: number;
  cas: bigint;
}

export interface RequestHeader extends HeaderBase {
  /** Bytes 6-7 of a request: ignored by memcached. */
  vbucket: number;
}

export interface ResponseHeader extends HeaderBase {
  /** Bytes 6-7 of a response. */
  status: number;
}

/** A response packet from memcached: one part of a reply. */
export interface BinaryPacket {
  header: ResponseHeader;
  extras: Buffer;
  key: Buffer;
  value: Buffer;
  /** The packet exactly as memcached sent it. */
  raw: Buffer;
}

/** A request memcached will execute: forwarded (quiet opcodes turned loud). */
export interface CommandRequest {
  type: 'command';
  header: RequestHeader;
  extras: Buffer;
  key: Buffer;
  /** The bytes memcached reads as the value (empty for commands that take none). */
  value: Buffer;
  /**
   * The bytes memcached consumes for this request. Usually header + body, but
   * for Stat, Touch and GAT memcached reads only header + extras + key and
   * parses any further body bytes as the next request; raw mirrors that.
   */
  raw: Buffer;
}

/**
 * memcached answers this request with an error of its own without touching
 * any item (lengths that don't add up, an unknown opcode): the proxy answers
 * the same way without asking it.
 */
export interface RejectedRequest {
  type: 'rejected';
  header: RequestHeader;
  status: number;
  /** memcached closes the connection after this error (protocol errors do; "Unknown command" does not). */
  close: boolean;
}

/** A value larger than the item size limit: memcached answers E2BIG and discards the value. */
export interface TooLargeRequest {
  type: 'too_large';
  header: RequestHeader;
  key: Buffer;
  /** A refused Set (or SetQ) also unlinks the key's old item, so stale data can't persist. */
  dropsOldItem: boolean;
}

/** memcached would close the connection without a reply (wrong magic, header larger than its read buffer). */
export interface CloseRequest {
  type: 'close';
  reason: string;
}

export type BinaryRequest = CommandRequest | RejectedRequest | TooLargeRequest | CloseRequest;

/** Decodes the 24-byte header; the caller checks the magic. */
export function decodeRequestHeader(bytes: Buffer): RequestHeader {
  return {
    magic: bytes[0],
    opcode: bytes[1],
    keyLength: bytes.readUInt16BE(2),
    extrasLength: bytes[4],
    dataType: bytes[5],
    vbucket: bytes.readUInt16BE(6),
    totalBodyLength: bytes.readUInt32BE(8),
    opaque: bytes.readUInt32BE(12),
    cas: bytes.readBigUInt64BE(16),
  };
}

export function decodeResponseHeader(bytes: Buffer): ResponseHeader {
  return {
    magic: bytes[0],
    opcode: bytes[1],
    keyLength: bytes.readUInt16BE(2),
    extrasLength: bytes[4],
    dataType: bytes[5],
    status: bytes.readUInt16BE(6),
    totalBodyLength: bytes.readUInt32BE(8),
    opaque: bytes.readUInt32BE(12),
    cas: bytes.readBigUInt64BE(16),
  };
}
