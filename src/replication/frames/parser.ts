/**
 * Streaming parser of the replication link (see messages.ts for the layout).
 * Pure: bytes in, typed frames out.
 *
 * The peer is another memrepl, but it may be another version, or something
 * else entirely answering on the port, so every field is checked: anything that
 * does not decode is a FrameError, never a RangeError from a Buffer read or a
 * silently wrong value. After a FrameError the stream has lost its framing;
 * the parser keeps throwing it and the link should close.
 */
import { ByteQueue } from '../../protocol/byte-queue';
import {
  FrameError,
  FrameType,
  PROTOCOL_MAGIC,
  PROTOCOL_VERSION,
  RECORD_FIXED_BYTES,
  RECORD_KEY_MAX_LENGTH,
  RECORD_OPS,
  TTL_UNCHANGED,
  type Frame,
  type FullResyncRequestFrame,
  type HelloFrame,
  type RecordFrame,
  type ResyncInfo,
} from './messages';

export interface FrameParserOptions {
  /**
   * Largest payload accepted (the frame's type byte and length header not
   * counted). Must exceed the largest RECORD: memcached's item size limit plus
   * the key and RECORD_FIXED_BYTES.
   */
  maxFrameBytes: number;
}

const TWO_32 = 0x1_0000_0000;
/** The high u32 of a u64 must stay below this for the value to be a safe integer (< 2^53). */
const SAFE_HIGH_LIMIT = 0x20_0000;

const utf8 = new TextDecoder('utf-8', { fatal: true });

function malformed(message: string): FrameError {
  return new FrameError('malformed', message);
}

export class FrameParser {
  private readonly queue = new ByteQueue();
  private readonly maxFrameBytes: number;
  private failure: FrameError | null = null;

  constructor(opts: FrameParserOptions) {
    if (!Number.isSafeInteger(opts.maxFrameBytes) || opts.maxFrameBytes < 1 || opts.maxFrameBytes > 0xffff_fffe) {
      throw new RangeError(`maxFrameBytes must be between 1 and 2^32-2, got ${opts.maxFrameBytes}`);
    }
    this.maxFrameBytes = opts.maxFrameBytes;
  }

  /**
   * Adds bytes from the socket. Call next() until it returns null after each
   * push: then the parser holds at most one incomplete frame, which is never
   * more than maxFrameBytes + 5 bytes (an announced length beyond that is
   * refused as soon as its 4 bytes arrive).
   */
  push(chunk: Buffer): void {
    if (this.failure) return;
    this.queue.push(chunk);
  }

  /** Bytes received but not yet returned as frames. */
  get buffered(): number {
    return this.queue.length;
  }

  /**
   * The next complete frame, or null until more bytes arrive. Throws
   * FrameError on a malformed frame (and on every call after it).
   *
   * A RECORD's key and value may share memory with the pushed chunks (no
   * copy); copy them if they are kept long after the record is applied.
   */
  next(): Frame | null {
    if (this.failure) throw this.failure;
    try {
      return this.read();
    } catch (err) {
      if (err instanceof FrameError) {
        this.failure = err;
        this.queue.skip(this.queue.length);
      }
      throw err;
    }
  }

  private read(): Frame | null {
    if (this.queue.length < 4) return null;
    const length = this.queue.peek(4).readUInt32BE(0);
    if (length === 0) throw malformed('frame length 0 (every frame has a type byte)');
    if (length - 1 > this.maxFrameBytes) {
      throw new FrameError('too-large', `frame of ${length - 1} bytes exceeds the limit of ${this.maxFrameBytes}`);
    }
    if (this.queue.length < 4 + length) return null;
    this.queue.skip(4);
    const body = this.queue.take(length);
    return decodeFrame(body[0], body.subarray(1));
  }
}

/** Decodes one frame's payload given its type byte. Throws FrameError. */
export function decodeFrame(type: number, payload: Buffer): Frame {
  switch (type) {
    case FrameType.record: return decodeRecord(payload);
    case FrameType.ack: return { type: 'ack', seq: decodeU64Payload('ACK', payload) };
    case FrameType.ping: return { type: 'ping', time: decodeU64Payload('PING', payload) };
    case FrameType.hello: return decodeHello(payload);
    case FrameType.resyncBegin: return { type: 'resyncBegin', ...resyncInfo(json('RESYNC_BEGIN', payload)) };
    case FrameType.resyncEnd: return { type: 'resyncEnd', ...resyncInfo(json('RESYNC_END', payload)) };
    case FrameType.fullResyncRequest: {
      const body = json('FULL_RESYNC_REQUEST', payload);
      const request: FullResyncRequestFrame = { type: 'fullResyncRequest', reason: requiredString('FULL_RESYNC_REQUEST', body, 'reason') };
      if (body.lastSeq !== undefined) {
        if (!isCount(body.lastSeq)) throw malformed('FULL_RESYNC_REQUEST lastSeq is not a non-negative integer');
        request.lastSeq = body.lastSeq;
      }
      return request;
    }
    case FrameType.goodbye: {
      const body = json('GOODBYE', payload);
      return { type: 'goodbye', reason: requiredString('GOODBYE', body, 'reason') };
    }
    case FrameType.auth: {
      const body = json('AUTH', payload);
      return { type: 'auth', proof: requiredString('AUTH', body, 'proof') };
    }
    default:
      throw malformed(`unknown frame type 0x${type.toString(16).padStart(2, '0')}`);
  }
}

// ---------------------------------------------------------------- binary fields

function readU64(what: string, buf: Buffer, offset: number): number {
  const high = buf.readUInt32BE(offset);
  if (high >= SAFE_HIGH_LIMIT) throw malformed(`${what} is beyond 2^53`);
  return high * TWO_32 + buf.readUInt32BE(offset + 4);
}

function decodeU64Payload(frame: string, payload: Buffer): number {
  if (payload.length !== 8) throw malformed(`${frame} payload is ${payload.length} bytes, expected 8`);
  return readU64(`${frame} value`, payload, 0);
}

function decodeRecord(payload: Buffer): RecordFrame {
  if (payload.length < RECORD_FIXED_BYTES) {
    throw malformed(`RECORD payload is ${payload.length} bytes, shorter than its fixed fields (${RECORD_FIXED_BYTES})`);
  }
  const seq = readU64('RECORD seq', payload, 0);
  const wall = readU64('RECORD hlc wall', payload, 8);
  const logical = payload.readUInt32BE(16);
  const op = RECORD_OPS[payload[20]];
  if (op === undefined) throw malformed(`RECORD op ${payload[20]} is unknown`);
  const keyLength = payload.readUInt16BE(21);
  if (keyLength > RECORD_KEY_MAX_LENGTH) throw malformed(`RECORD key of ${keyLength} bytes exceeds ${RECORD_KEY_MAX_LENGTH}`);
  // Check before reading past the key: the value length sits after it.
  if (payload.length < RECORD_FIXED_BYTES + keyLength) {
    throw malformed(`RECORD key of ${keyLength} bytes does not fit its ${payload.length}-byte payload`);
  }
  // Lengths first: when they are off, every field after the key is misread,
  // and "lengths do not add up" is the message that points at the cause.
  const valueLength = payload.readUInt32BE(23 + keyLength + 4 + 8);
  if (payload.length !== RECORD_FIXED_BYTES + keyLength + valueLength) {
    throw malformed(`RECORD lengths (key ${keyLength}, value ${valueLength}) do not add up to its ${payload.length}-byte payload`);
  }
  let at = 23;
  const key = payload.subarray(at, at + keyLength); at += keyLength;
  const flags = payload.readUInt32BE(at); at += 4;
  const ttlHigh = payload.readInt32BE(at);
  if (ttlHigh >= SAFE_HIGH_LIMIT || ttlHigh < -1) throw malformed('RECORD ttl out of range');
  const ttlMs = ttlHigh * TWO_32 + payload.readUInt32BE(at + 4); at += 8;
  if (ttlMs < TTL_UNCHANGED) throw malformed(`RECORD ttl ${ttlMs} is negative (only -1 never and -2 unchanged are defined)`);
  at += 4; // value length, checked above
  const value = payload.subarray(at, at + valueLength); at += valueLength;
  const delay = payload.readUInt32BE(at); at += 4;
  const sentAt = readU64('RECORD sentAt', payload, at);
  return { type: 'record', seq, hlc: { wall, logical }, op, key, flags, ttlMs, value, delay, sentAt };
}

// ---------------------------------------------------------------- handshake and JSON frames

function decodeHello(payload: Buffer): HelloFrame {
  const magicLength = PROTOCOL_MAGIC.length;
  if (payload.length < magicLength || !payload.subarray(0, magicLength).equals(PROTOCOL_MAGIC)) {
    throw new FrameError('bad-magic', 'peer is not a memrepl replication node (bad HELLO magic)');
  }
  if (payload.length < magicLength + 2) throw malformed('HELLO ends before its protocol version');
  const version = payload.readUInt16BE(magicLength);
  if (version !== PROTOCOL_VERSION) {
    throw new FrameError(
      'unsupported-version',
      `peer speaks protocol version ${version}, this node speaks version ${PROTOCOL_VERSION}`,
      version,
    );
  }
  const body = json('HELLO', payload.subarray(magicLength + 2));
  const hello: HelloFrame = {
    type: 'hello',
    version,
    cluster: requiredString('HELLO', body, 'cluster'),
    nodeId: requiredString('HELLO', body, 'nodeId'),
    runId: requiredString('HELLO', body, 'runId'),
    lastApplied: lastApplied(body.lastApplied),
  };
  const nonce = optionalString('HELLO', body, 'nonce');
  if (nonce !== undefined) hello.nonce = nonce;
  const proof = optionalString('HELLO', body, 'proof');
  if (proof !== undefined) hello.proof = proof;
  const wants = body.wantsFullResync;
  if (wants !== undefined) {
    if (typeof wants !== 'boolean') throw malformed('HELLO wantsFullResync is not a boolean');
    hello.wantsFullResync = wants;
  }
  const time = body.time;
  if (time !== undefined) {
    if (typeof time !== 'number' || !Number.isSafeInteger(time) || time < 0) throw malformed('HELLO time is not a timestamp');
    hello.time = time;
  }
  if (body.lastSeq !== undefined) {
    if (!isCount(body.lastSeq)) throw malformed('HELLO lastSeq is not a non-negative integer');
    hello.lastSeq = body.lastSeq;
  }
  return hello;
}

function lastApplied(value: unknown): HelloFrame['lastApplied'] {
  if (value === null || value === undefined) return null;
  if (!isObject(value)) throw malformed('HELLO lastApplied is not an object');
  const runId = requiredString('HELLO lastApplied', value, 'runId');
  const seq = value.seq;
  if (!isCount(seq)) throw malformed('HELLO lastApplied.seq is not a non-negative integer');
  return { runId, seq };
}

function resyncInfo(body: Record<string, unknown>): ResyncInfo {
  const info: ResyncInfo = {};
  const reason = optionalString('RESYNC', body, 'reason');
  if (reason !== undefined) info.reason = reason;
  if (body.items !== undefined) {
    if (!isCount(body.items)) throw malformed('RESYNC items is not a non-negative integer');
    info.items = body.items;
  }
  return info;
}

function json(frame: string, payload: Buffer): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(utf8.decode(payload));
  } catch (err) {
    throw malformed(`${frame} payload is not UTF-8 JSON: ${(err as Error).message}`);
  }
  if (!isObject(parsed)) throw malformed(`${frame} payload is not a JSON object`);
  return parsed;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function requiredString(frame: string, body: Record<string, unknown>, field: string): string {
  const value = body[field];
  if (typeof value !== 'string') throw malformed(`${frame} ${field} is missing or not a string`);
  return value;
}

function optionalString(frame: string, body: Record<string, unknown>, field: string): string | undefined {
  const value = body[field];
  if (value === undefined) return undefined;
  if (typeof value !== 'string') throw malformed(`${frame} ${field} is not a string`);
  return value;
}
