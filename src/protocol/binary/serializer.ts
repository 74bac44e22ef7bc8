/**
 * Builds binary protocol packets: requests (the proxy's rewritten or own
 * requests upstream, and tests' traffic), responses the proxy answers itself
 * exactly as memcached would, and the extras layouts of the opcodes.
 */
import { HEADER_LENGTH, REQUEST_MAGIC, RESPONSE_MAGIC, STATUS_MESSAGES } from './messages';

const EMPTY = Buffer.alloc(0);

export interface PacketFields {
  opcode: number;
  extras?: Buffer;
  key?: Buffer;
  value?: Buffer;
  opaque?: number;
  cas?: bigint;
  dataType?: number;
}

export interface RequestFields extends PacketFields {
  vbucket?: number;
  /** Overrides for building malformed packets (tests): header fields that disagree with the body. */
  magic?: number;
  keyLength?: number;
  extrasLength?: number;
  totalBodyLength?: number;
}

export interface ResponseFields extends PacketFields {
  status?: number;
}

function encode(magic: number, fields: RequestFields, statusOrVbucket: number): Buffer {
  const extras = fields.extras ?? EMPTY;
  const key = fields.key ?? EMPTY;
  const value = fields.value ?? EMPTY;
  const header = Buffer.alloc(HEADER_LENGTH);
  header[0] = fields.magic ?? magic;
  header[1] = fields.opcode;
  header.writeUInt16BE(fields.keyLength ?? key.length, 2);
  header[4] = fields.extrasLength ?? extras.length;
  header[5] = fields.dataType ?? 0;
  header.writeUInt16BE(statusOrVbucket, 6);
  header.writeUInt32BE(fields.totalBodyLength ?? extras.length + key.length + value.length, 8);
  header.writeUInt32BE(fields.opaque ?? 0, 12);
  header.writeBigUInt64BE(fields.cas ?? 0n, 16);
  return Buffer.concat([header, extras, key, value]);
}

export function encodeRequest(fields: RequestFields): Buffer {
  return encode(REQUEST_MAGIC, fields, fields.vbucket ?? 0);
}

export function encodeResponse(fields: ResponseFields): Buffer {
  const { opcode, extras, key, value, opaque, cas, dataType } = fields;
  return encode(RESPONSE_MAGIC, { opcode, extras, key, value, opaque, cas, dataType }, fields.status ?? 0);
}

/**
 * An error response shaped like memcached's write_bin_error: the request's
 * opcode and opaque, no extras or key, CAS 0, and the status's text (or
 * `message`) as the value.
 */
export function errorResponse(opcode: number, opaque: number, status: number, message = STATUS_MESSAGES[status] ?? ''): Buffer {
  return encodeResponse({ opcode, opaque, status, value: Buffer.from(message, 'latin1') });
}

/** A copy of `packet` with its opcode byte replaced (quiet ↔ loud twins). */
export function withOpcode(packet: Buffer, opcode: number): Buffer {
  const copy = Buffer.from(packet);
  copy[1] = opcode;
  return copy;
}

/** Set/Add/Replace extras: flags, expiration. */
export function storageExtras(flags: number, exptime: number): Buffer {
  const extras = Buffer.alloc(8);
  extras.writeUInt32BE(flags >>> 0, 0);
  extras.writeUInt32BE(exptime >>> 0, 4);
  return extras;
}

/** Increment/Decrement extras: delta, initial value, expiration (0xffffffff: don't create a missing item). */
export function arithmeticExtras(delta: bigint, initial: bigint, exptime: number): Buffer {
  const extras = Buffer.alloc(20);
  extras.writeBigUInt64BE(delta, 0);
  extras.writeBigUInt64BE(initial, 8);
  extras.writeUInt32BE(exptime >>> 0, 16);
  return extras;
}

/** Touch/GAT extras (expiration) and Flush extras (delay). */
export function expiryExtras(seconds: number): Buffer {
  const extras = Buffer.alloc(4);
  extras.writeUInt32BE(seconds >>> 0, 0);
  return extras;
}
