/**
 * The binary protocol as the session sees it: for each framed request, what
 * goes upstream, which response packets the client sees, and which writes
 * took effect.
 *
 * Quiet opcodes (GetQ, SetQ, ...) go upstream as their loud twin, so
 * memcached always answers exactly once and the proxy learns the outcome.
 * The answer is then silenced exactly when memcached would have stayed silent
 * for the quiet opcode (proto_bin.c: write_bin_response skips the reply under
 * noreply, except for get hits; misses of quiet gets are skipped; errors from
 * write_bin_error are always sent), and its opcode byte is set back to the
 * quiet opcode memcached would have echoed.
 *
 * Requests memcached rejects by their header alone (bad lengths, unknown
 * opcodes, values over the item limit) are answered here, byte for byte as
 * memcached would, so the upstream connection never sees a request that
 * makes memcached close it.
 */
import { NO_KEYS } from '../protocol/bytes';
import type { WriteEffect } from './write-sink';
import {
  BinaryPacket,
  BinaryRequest,
  CommandRequest,
  isQuiet,
  loudOpcode,
  Opcode,
  opcodeName,
  RejectedRequest,
  RequestHeader,
  Status,
  TooLargeRequest,
} from '../protocol/binary/messages';
import { BinaryReplyParser } from '../protocol/binary/reply-parser';
import { BinaryParserLimits, BinaryRequestParser } from '../protocol/binary/request-parser';
import { encodeRequest, encodeResponse, errorResponse, withOpcode } from '../protocol/binary/serializer';
import type { Dialect, Exchange, PartVerdict } from './exchange';

const FORWARD_END: PartVerdict = { forward: true, final: true };
const FORWARD_MORE: PartVerdict = { forward: true, final: false };
const SWALLOW_END: PartVerdict = { forward: false, final: true };

export function binaryDialect(limits: BinaryParserLimits): Dialect<BinaryRequest, BinaryPacket> {
  return {
    name: 'binary',
    requestParser: new BinaryRequestParser(limits),
    newReplyParser: () => new BinaryReplyParser(),
    plan: planBinary,
  };
}

export function planBinary(request: BinaryRequest): Exchange<BinaryPacket> {
  switch (request.type) {
    case 'command':
      return planCommand(request);
    case 'rejected':
      return planRejected(request);
    case 'too_large':
      return planTooLarge(request);
    case 'close':
      return local('binary:invalid', null, true, 'closed');
  }
}

/** memcached's stand-in for a failure of its own (SERVER_ERROR in text): "Out of memory" status with the reason as value. */
function serverError(header: RequestHeader, message: string): Buffer {
  return errorResponse(header.opcode, header.opaque, Status.OutOfMemory, message);
}

const commandLabel = (opcode: number): string => `binary:${opcodeName(opcode)}`;

/** An exchange the proxy answers itself. */
function local(command: string, reply: Buffer | null, closeAfter: boolean, outcome: string): Exchange<BinaryPacket> {
  return {
    command,
    writeKeys: NO_KEYS,
    flush: null,
    upstream: null,
    localReply: reply,
    closeAfter,
    streams: false,
    connection: 'shared',
    replyItems: 0,
    onPart: () => FORWARD_END,
    effects: () => [],
    outcome: () => outcome,
    errorReply: () => reply,
  };
}

function planRejected(request: RejectedRequest): Exchange<BinaryPacket> {
  const { header, status } = request;
  return local(commandLabel(header.opcode), errorResponse(header.opcode, header.opaque, status), request.close, statusLabel(status));
}

/**
 * memcached refuses the value and, for a Set, unlinks the old item so stale
 * data cannot outlive a failed overwrite. The proxy mirrors that with a
 * Delete upstream (its reply swallowed) and replicates the deletion.
 */
function planTooLarge(request: TooLargeRequest): Exchange<BinaryPacket> {
  const { header, key } = request;
  const reply = errorResponse(header.opcode, header.opaque, Status.TooLarge);
  const command = commandLabel(header.opcode);
  if (!request.dropsOldItem) return local(command, reply, false, 'too_large');
  let deleted = false;
  return {
    command,
    writeKeys: [key],
    flush: null,
    upstream: encodeRequest({ opcode: Opcode.Delete, key, opaque: header.opaque }),
    localReply: reply,
    closeAfter: false,
    streams: false,
    connection: 'shared',
    replyItems: 1,
    onPart(part) {
      deleted = part.header.status === Status.Success;
      return SWALLOW_END;
    },
    effects: () => (deleted ? [{ kind: 'delete', key }] : []),
    outcome: () => 'too_large',
    errorReply: (message) => serverError(header, message),
  };
}

function planCommand(request: CommandRequest): Exchange<BinaryPacket> {
  const { header } = request;
  const clientOpcode = header.opcode;
  const opcode = loudOpcode(clientOpcode);
  const quiet = isQuiet(clientOpcode);
  const command = commandLabel(clientOpcode);

  if (opcode === Opcode.Quit) {
    // Answered here: sending Quit would make memcached close the upstream connection.
    const reply = quiet ? null : encodeResponse({ opcode: clientOpcode, opaque: header.opaque });
    return local(command, reply, true, 'ok');
  }

  let status: number | null = null;
  return {
    command,
    writeKeys: WRITES.has(opcode) ? [Buffer.from(request.key)] : NO_KEYS,
    flush: opcode === Opcode.Flush ? { delay: flushDelay(request.extras) } : null,
    upstream: quiet ? withOpcode(request.raw, opcode) : request.raw,
    localReply: null,
    closeAfter: false,
    streams: false,
    // SASL authenticates the connection it runs on: never lend that to other clients.
    connection: SASL.has(opcode) ? 'pin' : 'shared',
    replyItems: 1,
    onPart(part) {
      status = part.header.status;
      if (opcode === Opcode.Stat) {
        // A stats reply is a series of packets ending with one without a key.
        return part.header.keyLength === 0 ? FORWARD_END : FORWARD_MORE;
      }
      if (!quiet) return FORWARD_END;
      if (silencedWhenQuiet(opcode, status)) return SWALLOW_END;
      // memcached echoes the opcode the client sent: put the quiet one back.
      part.raw[1] = clientOpcode;
      return FORWARD_END;
    },
    effects: () => (status === null ? [] : effectsOf(request, opcode, status)),
    outcome: () => (status === null ? 'none' : outcomeLabel(opcode, status)),
    errorReply: (message) => serverError(header, message),
  };
}

const SASL: ReadonlySet<number> = new Set([Opcode.SASLListMechs, Opcode.SASLAuth, Opcode.SASLStep]);

const READS: ReadonlySet<number> = new Set([Opcode.Get, Opcode.GetK, Opcode.GAT, Opcode.GATK]);

/**
 * Whether memcached sends nothing for the quiet twin of `opcode` answered
 * with `status`: quiet reads are silent on a miss (hits always go out), quiet
 * writes are silent on success, and errors are always sent.
 */
export function silencedWhenQuiet(opcode: number, status: number): boolean {
  if (READS.has(opcode)) return status === Status.KeyNotFound;
  return status === Status.Success;
}

const STORES: ReadonlySet<number> = new Set([Opcode.Set, Opcode.Add, Opcode.Replace]);
const READBACKS: ReadonlySet<number> = new Set([Opcode.Append, Opcode.Prepend, Opcode.Increment, Opcode.Decrement]);
const TOUCHES: ReadonlySet<number> = new Set([Opcode.Touch, Opcode.GAT, Opcode.GATK]);
/** Opcodes that may write their key (replication watches them while in flight). */
const WRITES: ReadonlySet<number> = new Set([...STORES, ...READBACKS, ...TOUCHES, Opcode.Delete]);

/** Writes that took effect, by the executed (loud) opcode and memcached's status. */
function effectsOf(request: CommandRequest, opcode: number, status: number): WriteEffect[] {
  const { extras } = request;
  // Copies: the request's bytes are a view into a socket chunk the outbox should not pin.
  const key = Buffer.from(request.key);
  if (opcode === Opcode.Delete && status === Status.KeyNotFound) return [{ kind: 'delete', key, missed: true }];
  if (status !== Status.Success) {
    // A Set memcached could not allocate (too large, out of memory) has
    // unlinked the old item: the peer must drop it too.
    const droppedOld = opcode === Opcode.Set && (status === Status.TooLarge || status === Status.OutOfMemory);
    return droppedOld ? [{ kind: 'delete', key }] : [];
  }
  if (STORES.has(opcode)) {
    return [{ kind: 'set', key, value: Buffer.from(request.value), flags: extras.readUInt32BE(0), exptime: extras.readUInt32BE(4) }];
  }
  if (opcode === Opcode.Append || opcode === Opcode.Prepend) {
    return [{ kind: 'readback', key, replay: { op: opcode === Opcode.Append ? 'append' : 'prepend', value: Buffer.from(request.value) } }];
  }
  if (opcode === Opcode.Increment || opcode === Opcode.Decrement) {
    // Extras: the delta (u64), then the initial value and expiry memcached creates a missing item with.
    const delta = extras.length >= 8 ? extras.readBigUInt64BE(0) : 0n;
    return [{ kind: 'readback', key, replay: { op: opcode === Opcode.Increment ? 'incr' : 'decr', value: Buffer.from(String(delta), 'latin1') } }];
  }
  if (opcode === Opcode.Delete) return [{ kind: 'delete', key }];
  if (TOUCHES.has(opcode)) return [{ kind: 'touch', key, exptime: extras.readUInt32BE(0) }];
  if (opcode === Opcode.Flush) return [{ kind: 'flush', delay: flushDelay(extras) }];
  return [];
}

/** Flush's optional extras: its delay. */
function flushDelay(extras: Buffer): number {
  return extras.length === 4 ? extras.readUInt32BE(0) : 0;
}

function outcomeLabel(opcode: number, status: number): string {
  if (READS.has(opcode)) {
    if (status === Status.Success) return 'hit';
    if (status === Status.KeyNotFound) return 'miss';
  }
  if (status !== Status.Success) return statusLabel(status);
  if (STORES.has(opcode) || opcode === Opcode.Append || opcode === Opcode.Prepend) return 'stored';
  if (opcode === Opcode.Delete) return 'deleted';
  if (opcode === Opcode.Touch) return 'touched';
  return 'ok';
}

const STATUS_LABELS: Readonly<Record<number, string>> = {
  [Status.Success]: 'ok',
  [Status.KeyNotFound]: 'not_found',
  [Status.KeyExists]: 'exists',
  [Status.TooLarge]: 'too_large',
  [Status.InvalidArguments]: 'invalid_arguments',
  [Status.NotStored]: 'not_stored',
  [Status.NonNumeric]: 'non_numeric',
  [Status.AuthError]: 'auth_error',
  [Status.AuthContinue]: 'auth_continue',
  [Status.UnknownCommand]: 'unknown_command',
  [Status.OutOfMemory]: 'out_of_memory',
};

function statusLabel(status: number): string {
  return STATUS_LABELS[status] ?? 'error';
}
