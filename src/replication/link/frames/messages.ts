/**
 * Frames of the replication link (port 11212), as the parser yields them and
 * the serializer writes them. Modelled on node-postgres' pg-protocol: every
 * frame is
 *
 *     u32 BE length of what follows | u8 type | payload
 *
 * so a reader always knows how much to wait for, and can refuse an oversized
 * frame from its first four bytes. Type codes are ASCII letters so a frame is
 * recognisable in a packet capture.
 *
 * Control frames carry JSON (rare, and easier to extend); RECORD is the hot
 * path and is fixed binary. The handshake (HELLO) starts with a magic and a
 * version, so a peer that is not memrepl, or speaks another version, is named
 * as such instead of failing somewhere in the middle of a record.
 */
import type { Hlc } from '../../conflict/hlc';

export const PROTOCOL_MAGIC = Buffer.from('MREP', 'latin1');
/**
 * 2: an invalidate record carries the stale item whole (value, flags,
 * expiry), no longer only the mark; a version 1 peer would mark its own value.
 */
export const PROTOCOL_VERSION = 2;

/**
 * Where the header's fields sit from the frame's start. The u32 length counts
 * the bytes after itself (the type byte and the payload), so a whole frame is
 * FRAME_AT.type + length bytes.
 */
export const FRAME_AT = { length: 0, type: 4, payload: 5 } as const;
/** Bytes before the payload: the u32 length and the u8 type. */
export const FRAME_HEADER_BYTES = FRAME_AT.payload;

export const FrameType = {
  hello: 0x48, // 'H'
  record: 0x52, // 'R'
  ack: 0x41, // 'A'
  ping: 0x50, // 'P'
  resyncBegin: 0x42, // 'B'
  resyncEnd: 0x45, // 'E'
  fullCopyRequest: 0x46, // 'F'
  goodbye: 0x47, // 'G'
  auth: 0x55, // 'U'
} as const;
export type FrameTypeName = keyof typeof FrameType;

/** memcached's KEY_MAX_LENGTH, for text, meta and binary keys alike. */
export const RECORD_KEY_MAX_LENGTH = 250;

// ---------------------------------------------------------------- handshake

export interface Hello {
  /** Nodes of different clusters refuse each other (a mis-pointed -x). */
  cluster: string;
  nodeId: string;
  /** New per process start: records are numbered per run. */
  runId: string;
  /** The last record this node applied from the peer it is greeting, or null if none. */
  lastApplied: { runId: string; seq: number } | null;
  /** Challenge for the shared-secret proof (HEX_256_BITS). */
  nonce?: string;
  /** The sender's wall clock (ms): the first sample of the peer's clock offset, before any record can be late. */
  time?: number;
  /**
   * The sender's newest record (seq in its run). A full copy the peer sends
   * in answer starts only once it has applied that far, so the copy already
   * holds every write this node made before it asked.
   */
  lastSeq?: number;
  /**
   * The largest frame this node accepts (its memcached's item size limit plus
   * room for the record's fields): the peer sends nothing larger, so nodes
   * whose memcacheds run with different -I keep replicating.
   */
  maxFrameBytes?: number;
  /** This node applies records that replay a client's append, prepend, incr or decr (see RecordOp). */
  opRecords?: boolean;
  /**
   * This node reads PINGs that carry `inboundMs` (see PingFrame): the peer
   * adds it only then, so a node that predates it keeps its link.
   */
  pingInbound?: boolean;
}

/** Most characters a node id, cluster name or run id may have. */
export const IDENTIFIER_MAX_LENGTH = 128;
const IDENTIFIER_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:-]*$/;

/**
 * Why `value` cannot be a node id, cluster name or run id, or null if it can.
 * They are logged, shown in stats and bound into the handshake's proofs, so a
 * peer gets no room in them: letters, digits and . _ : - only (a hostname, or
 * host:port, the default node id; a UUID), starting with a letter or digit.
 */
export function identifierProblem(value: string): string | null {
  if (value.length === 0) return 'is empty';
  if (value.length > IDENTIFIER_MAX_LENGTH) return `is longer than ${IDENTIFIER_MAX_LENGTH} characters`;
  if (!IDENTIFIER_PATTERN.test(value)) return 'may hold only letters, digits and . _ : - and must start with a letter or digit';
  return null;
}

/** A HELLO nonce (32 random bytes) or an AUTH proof (an HMAC-SHA256) on the wire: 64 lowercase hex digits. */
export const HEX_256_BITS = /^[0-9a-f]{64}$/;

/**
 * Where a HELLO payload's fields sit: the magic, the u16 version, then the
 * JSON body (the Hello fields) up to the frame's end.
 */
export const HELLO_AT = { magic: 0, version: PROTOCOL_MAGIC.length, body: PROTOCOL_MAGIC.length + 2 } as const;

export interface HelloFrame extends Hello {
  type: 'hello';
  /** Always PROTOCOL_VERSION once parsed: other versions are a FrameError. */
  version: number;
}

// ---------------------------------------------------------------- records

/**
 * What a record does to its key. The last four replay a client's operation
 * instead of carrying the item: a node ships them only when it could not read
 * back the item such a write left (its memcached died right after answering
 * it), and only to a peer whose HELLO said `opRecords`. `value` holds the
 * appended bytes, or the delta's decimal digits.
 */
export type RecordOp = 'set' | 'add' | 'delete' | 'touch' | 'invalidate' | 'flush' | 'append' | 'prepend' | 'incr' | 'decr';

/** Wire codes of RecordOp. */
export const RECORD_OPS: readonly RecordOp[] = ['set', 'add', 'delete', 'touch', 'invalidate', 'flush', 'append', 'prepend', 'incr', 'decr'];
export const RECORD_OP_CODES: Readonly<Record<RecordOp, number>> = {
  set: 0,
  add: 1,
  delete: 2,
  touch: 3,
  invalidate: 4,
  flush: 5,
  append: 6,
  prepend: 7,
  incr: 8,
  decr: 9,
};

/** The ops that replay a client's operation (see RecordOp). */
export type ReplayedOp = 'append' | 'prepend' | 'incr' | 'decr';

export function isReplayed(op: RecordOp): op is ReplayedOp {
  return op === 'append' || op === 'prepend' || op === 'incr' || op === 'decr';
}

/** Whether `value` is an incr or decr's delta as memcached takes it: 1 to 20 decimal digits (a u64). */
export function isDelta(value: Uint8Array): boolean {
  if (value.length === 0 || value.length > 20) return false;
  for (const byte of value) if (byte < 0x30 || byte > 0x39) return false;
  return true;
}

/** A flush record's delay that means "cancel the scheduled flush". */
export const FLUSH_CANCEL = 0xffff_ffff;

/** ttlMs on the wire: the item never expires. */
export const TTL_NEVER = -1;
/** An item's expiry on the sender's clock: an absolute deadline in ms since the epoch, null for never. */
export type Expiry = number | null;

/** What every record has, whichever side of the wire it is on. */
export interface RecordFields {
  /** Per origin run, from 1; 0 = outside the numbered stream (full copy copies). */
  seq: number;
  /** The origin's clock when the write took effect; with the origin's node id it decides conflicts. */
  hlc: Hlc;
  /** invalidate: the item as set, then marked stale (md … I): the whole item, as a set carries it. */
  op: RecordOp;
  /** Empty for flush. Any bytes, up to 250. */
  key: Buffer;
  /** set/add/invalidate only. */
  flags: number;
  /** set/add/invalidate only; empty otherwise. */
  value: Buffer;
  /**
   * flush only: seconds from the flush's command to the moment it empties the
   * cache (0: at once), or FLUSH_CANCEL: it cancels a scheduled flush and
   * flushes nothing (see flush-schedule.ts).
   */
  delay: number;
}

/**
 * A record as the sender holds it: the deadline is absolute on the sender's
 * clock. The serializer turns it into remaining time when the frame is
 * written, so time spent waiting in the backlog is not added to the item's
 * life on the peer (docs/design.md §6) and the two hosts' clocks need not
 * agree.
 */
export interface OutgoingRecord extends RecordFields {
  expiresAt: Expiry;
}

/** A record as received. */
export interface RecordFrame extends RecordFields {
  type: 'record';
  /**
   * Milliseconds the item had left when the frame was written; 0 = it had
   * already expired; TTL_NEVER. See expiresAtFromTtl.
   */
  ttlMs: number;
  /**
   * The sender's wall clock when the frame was written. Not comparable to the
   * receiver's clock as such, but its difference to the arrival time, minus the
   * smallest such difference seen on the link, is how long this frame sat in
   * buffers and networks: time its item was not allowed to live longer.
   */
  sentAt: number;
}

/** Remaining life to write on the wire for a deadline on the sender's clock. */
export function ttlFromExpiresAt(expiresAt: Expiry, now: number): number {
  if (expiresAt === null) return TTL_NEVER;
  return Math.max(0, Math.ceil(expiresAt - now));
}

/**
 * The receiver's own deadline for a received ttlMs, on the receiver's clock
 * (`now` = when the frame arrived). A deadline <= now means the item expired
 * in transit: the receiver should treat it as gone, not store it forever
 * (memcached reads exptime 0 as "never").
 */
export function expiresAtFromTtl(ttlMs: number, now: number): Expiry {
  if (ttlMs === TTL_NEVER) return null;
  return now + ttlMs;
}

/**
 * The RECORD payload, big-endian (its layout is written down here only; the
 * parser and the serializer both take it from these three objects):
 *
 *     seq u64 | wall u64 | logical u32 | op u8 | keyLength u16 | key
 *     | flags u32 | ttlMs i64 | valueLength u32 | value
 *     | delay u32 | sentAt u64
 *
 * The key and the value vary in length, so the fields come as three runs,
 * each counted from where its run starts: the payload's start (RECORD_AT),
 * the key's end (RECORD_AFTER_KEY_AT), the value's end (RECORD_AFTER_VALUE_AT).
 * The last member of each run is where what follows it begins.
 */
export const RECORD_AT = { seq: 0, wall: 8, logical: 16, op: 20, keyLength: 21, key: 23 } as const;
/** From the key's end: the fields between the key and the value, then the value. */
export const RECORD_AFTER_KEY_AT = { flags: 0, ttlMs: 4, valueLength: 12, value: 16 } as const;
/** From the value's end: the fields after the value, then the payload's end. */
export const RECORD_AFTER_VALUE_AT = { delay: 0, sentAt: 4, end: 12 } as const;

/** Fixed part of a RECORD payload: everything but the key and the value (51 bytes). */
export const RECORD_FIXED_BYTES = RECORD_AT.key + RECORD_AFTER_KEY_AT.value + RECORD_AFTER_VALUE_AT.end;

/** Size of a RECORD frame on the wire, header included (what the outbox counts). */
export function recordFrameBytes(keyLength: number, valueLength: number): number {
  return FRAME_HEADER_BYTES + RECORD_FIXED_BYTES + keyLength + valueLength;
}

// ---------------------------------------------------------------- control frames

/** ACK and PING payloads: one u64 (the ACK's seq, the PING's time) at offset 0. */
export const U64_PAYLOAD_BYTES = 8;

export interface AckFrame {
  type: 'ack';
  /** Every record of the peer's current run up to this seq has been applied. */
  seq: number;
}

export interface PingFrame {
  type: 'ping';
  /** The sender's wall clock (ms since the epoch) when it sent the ping. */
  time: number;
  /**
   * The sender's view of the other direction: the smallest (arrival on its
   * clock - sentAt on ours) over its recent frames, in ms (see
   * clock-offset.ts). Only to a peer whose HELLO said `pingInbound`.
   */
  inboundMs?: number;
}

/** A PING's payload: its time, then (optionally) its inboundMs as an i64. */
export const PING_INBOUND_PAYLOAD_BYTES = 16;

export interface ResyncInfo {
  reason?: string;
  /** Items the sender expects to copy / copied. */
  items?: number;
  /**
   * RESYNC_BEGIN: the receiver's records up to this seq (its HELLO's or
   * FULL_COPY_REQUEST's lastSeq) were in the sender's memcached before the
   * copy read it (see Applier.copyCovers). Absent from older peers.
   */
  covers?: number;
}

export interface ResyncBeginFrame extends ResyncInfo {
  type: 'resyncBegin';
}
export interface ResyncEndFrame extends ResyncInfo {
  type: 'resyncEnd';
}

export interface FullCopyRequest {
  reason: string;
  /** As Hello.lastSeq: the requester's newest record when it asked. */
  lastSeq?: number;
  /**
   * Copy with set, not by node id: the sender's state wins over the
   * requester's, except where the requester wrote since (a requester whose
   * memcached holds only a mirror of the sender's state). Absent: false.
   */
  overwrite?: boolean;
}

export interface FullCopyRequestFrame extends FullCopyRequest {
  type: 'fullCopyRequest';
}

export interface GoodbyeFrame {
  type: 'goodbye';
  reason: string;
}

/** Proof of the shared secret over both HELLOs' node ids and nonces (see link-auth.ts). */
export interface AuthFrame {
  type: 'auth';
  /** HEX_256_BITS. */
  proof: string;
}

export type Frame = HelloFrame | RecordFrame | AckFrame | PingFrame | ResyncBeginFrame | ResyncEndFrame | FullCopyRequestFrame | GoodbyeFrame | AuthFrame;

// ---------------------------------------------------------------- errors

export type FrameErrorCode =
  /** The first bytes are not a memrepl HELLO: not our protocol at all. */
  | 'bad-magic'
  /** A memrepl peer of another protocol version. */
  | 'unsupported-version'
  /** The length header announces more than maxFrameBytes. */
  | 'too-large'
  /** Anything else that does not decode. */
  | 'malformed';

/**
 * A frame the parser cannot accept. The stream is unusable after it (framing
 * may be lost), so the link reports the message and closes.
 */
export class FrameError extends Error {
  override readonly name = 'FrameError';
  constructor(
    readonly code: FrameErrorCode,
    message: string,
    /** For 'unsupported-version': the version the peer announced. */
    readonly peerVersion?: number,
  ) {
    super(message);
  }
}
