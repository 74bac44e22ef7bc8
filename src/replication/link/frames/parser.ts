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
import { ByteQueue } from '../../../protocol/byte-queue';
import {
  FRAME_AT,
  FRAME_HEADER_BYTES,
  FrameError,
  FrameType,
  HELLO_AT,
  HEX_256_BITS,
  identifierProblem,
  isDelta,
  PING_INBOUND_PAYLOAD_BYTES,
  PROTOCOL_MAGIC,
  PROTOCOL_VERSION,
  RECORD_AFTER_KEY_AT,
  RECORD_AFTER_VALUE_AT,
  RECORD_AT,
  RECORD_FIXED_BYTES,
  RECORD_KEY_MAX_LENGTH,
  RECORD_OPS,
  TTL_NEVER,
  U64_PAYLOAD_BYTES,
  type Frame,
  type FullCopyRequestFrame,
  type HelloFrame,
  type PingFrame,
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

/** The header's u32 length: a frame is these bytes plus the length they announce. */
const LENGTH_BYTES = FRAME_AT.type;

const TWO_32 = 0x1_0000_0000;
/** The high u32 of a u64 must stay below this for the value to be a safe integer (< 2^53). */
const SAFE_HIGH_LIMIT = 0x20_0000;

const utf8 = new TextDecoder('utf-8', { fatal: true });

function malformed(message: string): FrameError {
  return new FrameError('malformed', message);
}

export class FrameParser {
  /** Bytes received and not yet returned as frames. */
  private queue = new ByteQueue();
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
        this.queue = new ByteQueue();
      }
      throw err;
    }
  }

  private read(): Frame | null {
    if (this.queue.length < LENGTH_BYTES) return null;
    const length = this.queue.peek(LENGTH_BYTES).readUInt32BE(FRAME_AT.length);
    if (length === 0) throw malformed('frame length 0 (every frame has a type byte)');
    if (length - 1 > this.maxFrameBytes) {
      throw new FrameError('too-large', `frame of ${length - 1} bytes exceeds the limit of ${this.maxFrameBytes}`);
    }
    if (this.queue.length < LENGTH_BYTES + length) return null;
    // A frame usually lies within one chunk: then it is a view of that chunk (a RECORD's key and value too), not a copy.
    const frame = this.queue.take(LENGTH_BYTES + length);
    const type = frame[FRAME_AT.type];
    return type === FrameType.record ? decodeRecordAt(frame, FRAME_HEADER_BYTES, frame.length) : decodeFrame(type, frame.subarray(FRAME_HEADER_BYTES));
  }
}

/** Decodes one frame's payload given its type byte. Throws FrameError. */
export function decodeFrame(type: number, payload: Buffer): Frame {
  switch (type) {
    case FrameType.record:
      return decodeRecord(payload);
    case FrameType.ack:
      return { type: 'ack', seq: decodeU64Payload('ACK', payload) };
    case FrameType.ping:
      return decodePing(payload);
    case FrameType.hello:
      return decodeHello(payload);
    case FrameType.resyncBegin:
      return { type: 'resyncBegin', ...resyncInfo(json('RESYNC_BEGIN', payload)) };
    case FrameType.resyncEnd:
      return { type: 'resyncEnd', ...resyncInfo(json('RESYNC_END', payload)) };
    case FrameType.fullCopyRequest: {
      const body = json('FULL_COPY_REQUEST', payload);
      const request: FullCopyRequestFrame = { type: 'fullCopyRequest', reason: requiredString('FULL_COPY_REQUEST', body, 'reason') };
      if (body.lastSeq !== undefined) {
        if (!isCount(body.lastSeq)) throw malformed('FULL_COPY_REQUEST lastSeq is not a non-negative integer');
        request.lastSeq = body.lastSeq;
      }
      if (body.overwrite !== undefined) {
        if (typeof body.overwrite !== 'boolean') throw malformed('FULL_COPY_REQUEST overwrite is not a boolean');
        request.overwrite = body.overwrite;
      }
      return request;
    }
    case FrameType.goodbye: {
      const body = json('GOODBYE', payload);
      return { type: 'goodbye', reason: requiredString('GOODBYE', body, 'reason') };
    }
    case FrameType.auth: {
      const body = json('AUTH', payload);
      return { type: 'auth', proof: hex256('AUTH proof', requiredString('AUTH', body, 'proof')) };
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
  if (payload.length !== U64_PAYLOAD_BYTES) throw malformed(`${frame} payload is ${payload.length} bytes, expected ${U64_PAYLOAD_BYTES}`);
  return readU64(`${frame} value`, payload, 0);
}

/** A PING: its time alone (U64_PAYLOAD_BYTES), or with the sender's inbound delay (PING_INBOUND_PAYLOAD_BYTES). */
function decodePing(payload: Buffer): PingFrame {
  if (payload.length === U64_PAYLOAD_BYTES) return { type: 'ping', time: readU64('PING time', payload, 0) };
  if (payload.length !== PING_INBOUND_PAYLOAD_BYTES) {
    throw malformed(`PING payload is ${payload.length} bytes, expected ${U64_PAYLOAD_BYTES} or ${PING_INBOUND_PAYLOAD_BYTES}`);
  }
  const high = payload.readInt32BE(U64_PAYLOAD_BYTES);
  const inboundMs = high * TWO_32 + payload.readUInt32BE(U64_PAYLOAD_BYTES + 4);
  if (!Number.isSafeInteger(inboundMs)) throw malformed('PING inbound delay is beyond 2^53');
  return { type: 'ping', time: readU64('PING time', payload, 0), inboundMs };
}

function decodeRecord(payload: Buffer): RecordFrame {
  return decodeRecordAt(payload, 0, payload.length);
}

/** A RECORD payload at buf[start, end): its key and value are views of buf. */
function decodeRecordAt(buf: Buffer, start: number, end: number): RecordFrame {
  const length = end - start;
  if (length < RECORD_FIXED_BYTES) {
    throw malformed(`RECORD payload is ${length} bytes, shorter than its fixed fields (${RECORD_FIXED_BYTES})`);
  }
  const seq = readU64('RECORD seq', buf, start + RECORD_AT.seq);
  const wall = readU64('RECORD hlc wall', buf, start + RECORD_AT.wall);
  const logical = buf.readUInt32BE(start + RECORD_AT.logical);
  const opCode = buf[start + RECORD_AT.op];
  const op = RECORD_OPS[opCode];
  if (op === undefined) throw malformed(`RECORD op ${opCode} is unknown`);
  const keyLength = buf.readUInt16BE(start + RECORD_AT.keyLength);
  if (keyLength > RECORD_KEY_MAX_LENGTH) throw malformed(`RECORD key of ${keyLength} bytes exceeds ${RECORD_KEY_MAX_LENGTH}`);
  // Check before reading past the key: the value length sits after it.
  if (length < RECORD_FIXED_BYTES + keyLength) {
    throw malformed(`RECORD key of ${keyLength} bytes does not fit its ${length}-byte payload`);
  }
  const keyStart = start + RECORD_AT.key;
  const afterKey = keyStart + keyLength;
  // Lengths first: when they are off, every field after the key is misread,
  // and "lengths do not add up" is the message that points at the cause.
  const valueLength = buf.readUInt32BE(afterKey + RECORD_AFTER_KEY_AT.valueLength);
  if (length !== RECORD_FIXED_BYTES + keyLength + valueLength) {
    throw malformed(`RECORD lengths (key ${keyLength}, value ${valueLength}) do not add up to its ${length}-byte payload`);
  }
  const key = buf.subarray(keyStart, afterKey);
  const flags = buf.readUInt32BE(afterKey + RECORD_AFTER_KEY_AT.flags);
  const ttlAt = afterKey + RECORD_AFTER_KEY_AT.ttlMs;
  const ttlHigh = buf.readInt32BE(ttlAt);
  if (ttlHigh >= SAFE_HIGH_LIMIT || ttlHigh < -1) throw malformed('RECORD ttl out of range');
  const ttlMs = ttlHigh * TWO_32 + buf.readUInt32BE(ttlAt + 4);
  if (ttlMs < TTL_NEVER) throw malformed(`RECORD ttl ${ttlMs} is negative (only -1, never, is defined)`);
  const valueStart = afterKey + RECORD_AFTER_KEY_AT.value;
  const afterValue = valueStart + valueLength;
  const value = buf.subarray(valueStart, afterValue);
  if ((op === 'incr' || op === 'decr') && !isDelta(value)) throw malformed(`RECORD ${op} delta is not 1 to 20 decimal digits`);
  const delay = buf.readUInt32BE(afterValue + RECORD_AFTER_VALUE_AT.delay);
  const sentAt = readU64('RECORD sentAt', buf, afterValue + RECORD_AFTER_VALUE_AT.sentAt);
  return { type: 'record', seq, hlc: { wall, logical }, op, key, flags, ttlMs, value, delay, sentAt };
}

// ---------------------------------------------------------------- handshake and JSON frames

function decodeHello(payload: Buffer): HelloFrame {
  const magicEnd = HELLO_AT.magic + PROTOCOL_MAGIC.length;
  if (payload.length < magicEnd || !payload.subarray(HELLO_AT.magic, magicEnd).equals(PROTOCOL_MAGIC)) {
    throw new FrameError('bad-magic', 'peer is not a memrepl replication node (bad HELLO magic)');
  }
  if (payload.length < HELLO_AT.body) throw malformed('HELLO ends before its protocol version');
  const version = payload.readUInt16BE(HELLO_AT.version);
  if (version !== PROTOCOL_VERSION) {
    throw new FrameError('unsupported-version', `peer speaks protocol version ${version}, this node speaks version ${PROTOCOL_VERSION}`, version);
  }
  const body = json('HELLO', payload.subarray(HELLO_AT.body));
  const hello: HelloFrame = {
    type: 'hello',
    version,
    cluster: identifier('HELLO', body, 'cluster'),
    nodeId: identifier('HELLO', body, 'nodeId'),
    runId: identifier('HELLO', body, 'runId'),
    lastApplied: lastApplied(body.lastApplied),
  };
  const nonce = optionalString('HELLO', body, 'nonce');
  if (nonce !== undefined) hello.nonce = hex256('HELLO nonce', nonce);
  const time = body.time;
  if (time !== undefined) {
    if (typeof time !== 'number' || !Number.isSafeInteger(time) || time < 0) throw malformed('HELLO time is not a timestamp');
    hello.time = time;
  }
  if (body.lastSeq !== undefined) {
    if (!isCount(body.lastSeq)) throw malformed('HELLO lastSeq is not a non-negative integer');
    hello.lastSeq = body.lastSeq;
  }
  if (body.maxFrameBytes !== undefined) {
    if (!isCount(body.maxFrameBytes) || body.maxFrameBytes === 0) throw malformed('HELLO maxFrameBytes is not a positive integer');
    hello.maxFrameBytes = body.maxFrameBytes;
  }
  if (body.opRecords !== undefined) {
    if (typeof body.opRecords !== 'boolean') throw malformed('HELLO opRecords is not a boolean');
    hello.opRecords = body.opRecords;
  }
  if (body.pingInbound !== undefined) {
    if (typeof body.pingInbound !== 'boolean') throw malformed('HELLO pingInbound is not a boolean');
    hello.pingInbound = body.pingInbound;
  }
  return hello;
}

function lastApplied(value: unknown): HelloFrame['lastApplied'] {
  if (value === null || value === undefined) return null;
  if (!isObject(value)) throw malformed('HELLO lastApplied is not an object');
  const runId = identifier('HELLO lastApplied', value, 'runId');
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
  if (body.covers !== undefined) {
    if (!isCount(body.covers)) throw malformed('RESYNC covers is not a non-negative integer');
    info.covers = body.covers;
  }
  return info;
}

function json(frame: string, payload: Buffer): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(utf8.decode(payload));
  } catch (err) {
    // JSON.parse's message may quote the input: escaped, so a peer cannot write lines into the log.
    throw malformed(`${frame} payload is not UTF-8 JSON: ${JSON.stringify((err as Error).message)}`);
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

/** A node id, cluster name or run id: refused unless strictly well-formed (the value itself is not echoed). */
function identifier(frame: string, body: Record<string, unknown>, field: string): string {
  const value = requiredString(frame, body, field);
  const problem = identifierProblem(value);
  if (problem !== null) throw malformed(`${frame} ${field} ${problem}`);
  return value;
}

/** A nonce or proof. */
function hex256(what: string, value: string): string {
  if (!HEX_256_BITS.test(value)) throw malformed(`${what} is not 64 lowercase hex digits`);
  return value;
}

function optionalString(frame: string, body: Record<string, unknown>, field: string): string | undefined {
  const value = body[field];
  if (value === undefined) return undefined;
  if (typeof value !== 'string') throw malformed(`${frame} ${field} is not a string`);
  return value;
}
