/**
 * Writes replication frames (see messages.ts for the layout). Pure: values in,
 * buffers out.
 *
 * Bad arguments are programming errors of this node, not of the peer, so they
 * throw RangeError/TypeError rather than FrameError: the peer must never see a
 * frame its parser would refuse.
 */
import { copyRange } from '../../../protocol/bytes';
import {
  FRAME_AT,
  FRAME_HEADER_BYTES,
  FrameType,
  HELLO_AT,
  isDelta,
  PING_INBOUND_PAYLOAD_BYTES,
  PROTOCOL_MAGIC,
  PROTOCOL_VERSION,
  RECORD_AFTER_KEY_AT,
  RECORD_AFTER_VALUE_AT,
  RECORD_AT,
  RECORD_FIXED_BYTES,
  RECORD_KEY_MAX_LENGTH,
  RECORD_OP_CODES,
  recordFrameBytes,
  ttlFromExpiresAt,
  U64_PAYLOAD_BYTES,
  type FullCopyRequest,
  type Hello,
  type OutgoingRecord,
  type ResyncInfo,
} from './messages';

const TWO_32 = 0x1_0000_0000;
const U32_MAX = 0xffff_ffff;

/** u64 from a safe non-negative integer, as two u32 (no BigInt on the hot path). */
function writeU64(buf: Buffer, value: number, offset: number): void {
  buf.writeUInt32BE(Math.floor(value / TWO_32), offset);
  buf.writeUInt32BE(value >>> 0, offset + 4);
}

/** i64 from a safe integer (two's complement). */
function writeI64(buf: Buffer, value: number, offset: number): void {
  const high = Math.floor(value / TWO_32);
  buf.writeInt32BE(high, offset);
  buf.writeUInt32BE(value - high * TWO_32, offset + 4);
}

function checkU64(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`${name} must be a non-negative safe integer, got ${value}`);
}

function checkU32(name: string, value: number): void {
  if (!Number.isInteger(value) || value < 0 || value > U32_MAX) throw new RangeError(`${name} must be a u32, got ${value}`);
}

function frame(type: number, payloadLength: number): Buffer {
  const buf = Buffer.allocUnsafe(FRAME_HEADER_BYTES + payloadLength);
  buf.writeUInt32BE(payloadLength + 1, FRAME_AT.length);
  buf[FRAME_AT.type] = type;
  return buf;
}

function jsonFrame(type: number, body: object): Buffer {
  const json = Buffer.from(JSON.stringify(body), 'utf8');
  const buf = frame(type, json.length);
  json.copy(buf, FRAME_HEADER_BYTES);
  return buf;
}

/** JSON without undefined members, so optional fields are simply absent. */
function defined<T extends object>(body: T): T {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(body)) if (v !== undefined) out[k] = v;
  return out as T;
}

export function serializeHello(hello: Hello): Buffer {
  if (hello.lastApplied !== null) checkU64('lastApplied.seq', hello.lastApplied.seq);
  const json = Buffer.from(
    JSON.stringify(
      defined({
        cluster: hello.cluster,
        nodeId: hello.nodeId,
        runId: hello.runId,
        lastApplied: hello.lastApplied === null ? null : { runId: hello.lastApplied.runId, seq: hello.lastApplied.seq },
        nonce: hello.nonce,
        time: hello.time,
        lastSeq: hello.lastSeq,
        maxFrameBytes: hello.maxFrameBytes,
        opRecords: hello.opRecords,
        pingInbound: hello.pingInbound,
      }),
    ),
    'utf8',
  );
  const buf = frame(FrameType.hello, HELLO_AT.body + json.length);
  PROTOCOL_MAGIC.copy(buf, FRAME_HEADER_BYTES + HELLO_AT.magic);
  buf.writeUInt16BE(PROTOCOL_VERSION, FRAME_HEADER_BYTES + HELLO_AT.version);
  json.copy(buf, FRAME_HEADER_BYTES + HELLO_AT.body);
  return buf;
}

/**
 * The fields of a RECORD frame as writeRecordFrame takes them: the numbers as
 * they go on the wire, the key and the value as ranges of other buffers (a
 * full copy writes them straight from memcached's reply, without a Buffer per
 * item). Mutable on purpose: a writer of one frame per item refills one such
 * object (see newRecordFrameFields) instead of allocating one per frame.
 */
export interface RecordFrameFields {
  /** Per origin run; 0 outside the numbered stream (full copies). */
  seq: number;
  /** The record's hlc. */
  wall: number;
  logical: number;
  /** RECORD_OP_CODES[op]. */
  opCode: number;
  flags: number;
  /** Remaining life, or TTL_NEVER (see ttlFromExpiresAt). */
  ttlMs: number;
  /** Flushes only; 0 otherwise. */
  delay: number;
  /** The sender's clock when the frame is written. */
  sentAt: number;
  /** The key is keySource[keyStart, keyEnd). */
  keySource: Buffer;
  keyStart: number;
  keyEnd: number;
  /** The value is valueSource[valueStart, valueEnd). */
  valueSource: Buffer;
  valueStart: number;
  valueEnd: number;
}

const EMPTY = Buffer.alloc(0);

/** A RecordFrameFields to refill for each frame: zeros, an empty key and value. */
export function newRecordFrameFields(): RecordFrameFields {
  return {
    seq: 0,
    wall: 0,
    logical: 0,
    opCode: 0,
    flags: 0,
    ttlMs: 0,
    delay: 0,
    sentAt: 0,
    keySource: EMPTY,
    keyStart: 0,
    keyEnd: 0,
    valueSource: EMPTY,
    valueStart: 0,
    valueEnd: 0,
  };
}

/**
 * Drops a RecordFrameFields' references to the buffers its key and value
 * came from, once the frame is written: a kept object would otherwise keep a
 * whole socket read or backlog slab alive until its next frame.
 */
export function releaseRecordFrameFields(fields: RecordFrameFields): void {
  fields.keySource = EMPTY;
  fields.keyStart = fields.keyEnd = 0;
  fields.valueSource = EMPTY;
  fields.valueStart = fields.valueEnd = 0;
}

/** One object, refilled for every record written: serializing a record allocates nothing but its frame. */
const RECORD_FIELDS = newRecordFrameFields();

/** Writes one RECORD frame at `offset`; returns the offset after it. */
function writeRecord(buf: Buffer, offset: number, record: OutgoingRecord, now: number): number {
  const { key, value } = record;
  if (key.length > RECORD_KEY_MAX_LENGTH) throw new RangeError(`record key is ${key.length} bytes, the limit is ${RECORD_KEY_MAX_LENGTH}`);
  if (value.length > U32_MAX) throw new RangeError('record value too large');
  // hasOwn: an op like 'constructor' must not find Object.prototype's.
  const op = Object.hasOwn(RECORD_OP_CODES, record.op) ? RECORD_OP_CODES[record.op] : undefined;
  if (op === undefined) throw new TypeError(`unknown record op ${String(record.op)}`);
  if ((record.op === 'incr' || record.op === 'decr') && !isDelta(value)) {
    throw new RangeError(`${record.op} delta must be 1 to 20 decimal digits`);
  }
  checkU64('seq', record.seq);
  checkU64('hlc.wall', record.hlc.wall);
  checkU32('hlc.logical', record.hlc.logical);
  checkU32('flags', record.flags);
  checkU32('delay', record.delay);
  const ttl = ttlFromExpiresAt(record.expiresAt, now);
  if (!Number.isSafeInteger(ttl)) throw new RangeError(`expiresAt ${String(record.expiresAt)} at now=${now} gives no valid ttl`);

  const fields = RECORD_FIELDS;
  fields.seq = record.seq;
  fields.wall = record.hlc.wall;
  fields.logical = record.hlc.logical;
  fields.opCode = op;
  fields.flags = record.flags;
  fields.ttlMs = ttl;
  fields.delay = record.delay;
  fields.sentAt = now;
  fields.keySource = key;
  fields.keyStart = 0;
  fields.keyEnd = key.length;
  fields.valueSource = value;
  fields.valueStart = 0;
  fields.valueEnd = value.length;
  const end = writeRecordFrame(buf, offset, fields);
  releaseRecordFrameFields(fields);
  return end;
}

/**
 * Writes one RECORD frame at `at` from its fields (the key and the value
 * being ranges of other buffers) and returns the offset after it. The caller
 * checks the values (see writeRecord); only the key length, which would
 * corrupt the framing, is checked here.
 */
export function writeRecordFrame(buf: Buffer, at: number, fields: Readonly<RecordFrameFields>): number {
  const keyLength = fields.keyEnd - fields.keyStart;
  const valueLength = fields.valueEnd - fields.valueStart;
  if (keyLength > RECORD_KEY_MAX_LENGTH) throw new RangeError(`record key is ${keyLength} bytes, the limit is ${RECORD_KEY_MAX_LENGTH}`);
  buf.writeUInt32BE(RECORD_FIXED_BYTES + keyLength + valueLength + 1, at + FRAME_AT.length);
  buf[at + FRAME_AT.type] = FrameType.record;
  const payload = at + FRAME_HEADER_BYTES;
  writeU64(buf, fields.seq, payload + RECORD_AT.seq);
  writeU64(buf, fields.wall, payload + RECORD_AT.wall);
  buf.writeUInt32BE(fields.logical, payload + RECORD_AT.logical);
  buf[payload + RECORD_AT.op] = fields.opCode;
  buf.writeUInt16BE(keyLength, payload + RECORD_AT.keyLength);
  const afterKey = copyRange(fields.keySource, fields.keyStart, fields.keyEnd, buf, payload + RECORD_AT.key);
  buf.writeUInt32BE(fields.flags, afterKey + RECORD_AFTER_KEY_AT.flags);
  writeI64(buf, fields.ttlMs, afterKey + RECORD_AFTER_KEY_AT.ttlMs);
  buf.writeUInt32BE(valueLength, afterKey + RECORD_AFTER_KEY_AT.valueLength);
  const afterValue = copyRange(fields.valueSource, fields.valueStart, fields.valueEnd, buf, afterKey + RECORD_AFTER_KEY_AT.value);
  buf.writeUInt32BE(fields.delay, afterValue + RECORD_AFTER_VALUE_AT.delay);
  writeU64(buf, fields.sentAt, afterValue + RECORD_AFTER_VALUE_AT.sentAt);
  return afterValue + RECORD_AFTER_VALUE_AT.end;
}

/**
 * One RECORD frame. `now` is the sender's clock at the moment of writing:
 * the frame carries expiresAt - now, the item's remaining life.
 */
export function serializeRecord(record: OutgoingRecord, now: number): Buffer {
  const buf = Buffer.allocUnsafe(recordFrameBytes(record.key.length, record.value.length));
  writeRecord(buf, 0, record, now);
  return buf;
}

/** Several RECORD frames in one buffer (one socket write for a batch from the backlog). */
export function serializeRecords(records: readonly OutgoingRecord[], now: number): Buffer {
  let size = 0;
  for (const r of records) size += recordFrameBytes(r.key.length, r.value.length);
  const buf = Buffer.allocUnsafe(size);
  let at = 0;
  for (const r of records) at = writeRecord(buf, at, r, now);
  return buf;
}

export function serializeAck(seq: number): Buffer {
  checkU64('ack seq', seq);
  const buf = frame(FrameType.ack, U64_PAYLOAD_BYTES);
  writeU64(buf, seq, FRAME_HEADER_BYTES);
  return buf;
}

/** A PING; with `inboundMs` only to a peer whose HELLO said `pingInbound`. */
export function serializePing(time: number, inboundMs?: number): Buffer {
  checkU64('ping time', time);
  if (inboundMs === undefined) {
    const buf = frame(FrameType.ping, U64_PAYLOAD_BYTES);
    writeU64(buf, time, FRAME_HEADER_BYTES);
    return buf;
  }
  if (!Number.isSafeInteger(inboundMs)) throw new RangeError(`ping inbound delay must be a safe integer, got ${inboundMs}`);
  const buf = frame(FrameType.ping, PING_INBOUND_PAYLOAD_BYTES);
  writeU64(buf, time, FRAME_HEADER_BYTES);
  writeI64(buf, inboundMs, FRAME_HEADER_BYTES + U64_PAYLOAD_BYTES);
  return buf;
}

function checkResyncInfo(info: ResyncInfo): void {
  if (info.items !== undefined) checkU64('items', info.items);
  if (info.covers !== undefined) checkU64('covers', info.covers);
}

export function serializeResyncBegin(info: ResyncInfo = {}): Buffer {
  checkResyncInfo(info);
  return jsonFrame(FrameType.resyncBegin, defined({ reason: info.reason, items: info.items, covers: info.covers }));
}

export function serializeResyncEnd(info: ResyncInfo = {}): Buffer {
  checkResyncInfo(info);
  return jsonFrame(FrameType.resyncEnd, defined({ reason: info.reason, items: info.items }));
}

export function serializeFullCopyRequest(request: FullCopyRequest): Buffer {
  if (request.lastSeq !== undefined) checkU64('lastSeq', request.lastSeq);
  return jsonFrame(FrameType.fullCopyRequest, defined({ reason: request.reason, lastSeq: request.lastSeq, overwrite: request.overwrite }));
}

export function serializeGoodbye(goodbye: { reason: string }): Buffer {
  return jsonFrame(FrameType.goodbye, { reason: goodbye.reason });
}

export function serializeAuth(auth: { proof: string }): Buffer {
  return jsonFrame(FrameType.auth, { proof: auth.proof });
}
