/**
 * Frames a client's byte stream into binary protocol requests exactly the way
 * memcached 1.6 reads them (proto_bin.c try_read_command_binary and
 * dispatch_bin_command). The proxy forwards each framed request as one unit,
 * so this must agree with memcached on where every request ends, including
 * for malformed ones:
 *
 * - memcached reads the 24-byte header, then waits for extras + key only;
 *   whether the rest of the body is read depends on the opcode. Stat, Touch
 *   and GAT never read beyond the key, so extra body bytes become the next
 *   request. An unknown opcode makes it discard `totalBodyLength` bytes
 *   *after* extras and key (over-reading by their length).
 * - A wrong magic closes the connection with no reply. So does a header whose
 *   extras + key cannot fit memcached's fixed 16 KiB read buffer, once more
 *   than a buffer's worth of it has arrived.
 * - Lengths that don't add up get "Unknown command" (keylen + extlen >
 *   bodylen) or "Invalid arguments" (key > 250 bytes, wrong extras for the
 *   opcode), and memcached closes the connection after the error.
 * - A value larger than the item limit gets "Too large." and is discarded as
 *   it arrives (never buffered here either).
 *
 * Pure: bytes in, typed requests out. Never throws on client input.
 */
import { ByteQueue } from '../byte-queue';
import { BinaryRequest, decodeRequestHeader, HEADER_LENGTH, loudOpcode, Opcode, REQUEST_MAGIC, RequestHeader, Status } from './messages';

/** memcached's KEY_MAX_LENGTH: longer binary keys are a protocol error. */
export const KEY_MAX_LENGTH = 250;
/**
 * memcached's READ_BUFFER_SIZE. In binary mode the read buffer never grows, so
 * a request whose header + extras + key is larger can never be parsed: once
 * the buffer is full and more bytes arrive, memcached reads into zero bytes of
 * space, takes the 0 for EOF and closes the connection.
 */
export const READ_BUFFER_SIZE = 16384;
const INT32_MAX = 0x7fffffff;

export interface BinaryParserLimits {
  /** memcached's item size limit (-I): a larger value is refused without buffering it. */
  maxItemSize: number;
}

/** What memcached does with a request once it has read its header, extras and key. */
export type Framing =
  /** Execute it: `valueLength` more bytes belong to the request. */
  | { kind: 'command'; valueLength: number }
  /** Answer with an error; then close, or discard `swallow` more bytes and go on. */
  | { kind: 'rejected'; status: number; close: boolean; swallow: number }
  /** Answer E2BIG and discard the value. */
  | { kind: 'too_large'; swallow: number; dropsOldItem: boolean };

/**
 * memcached passes swallow counts through a C `int` and only swallows when it
 * is positive: a body length of 2 GiB or more is not swallowed at all.
 */
function asSwallow(count: number): number {
  return count > 0 && count <= INT32_MAX ? count : 0;
}

/** dispatch_bin_command's decision, as a pure function of the header. */
export function memcachedFraming(header: RequestHeader, limits: BinaryParserLimits): Framing {
  const { keyLength: key, extrasLength: ext, totalBodyLength: body } = header;
  const protocolError: Framing = { kind: 'rejected', status: Status.InvalidArguments, close: true, swallow: 0 };
  const command = (valueLength = 0): Framing => ({ kind: 'command', valueLength });
  // A value must fit in an item together with its trailing \r\n.
  const fits = (valueLength: number): boolean => valueLength + 2 <= limits.maxItemSize;

  if (key > body || key + ext > body) return { kind: 'rejected', status: Status.UnknownCommand, close: true, swallow: 0 };
  if (key > KEY_MAX_LENGTH) return protocolError;

  const onlyHeader = ext === 0 && key === 0 && body === 0;
  switch (loudOpcode(header.opcode)) {
    case Opcode.Version:
    case Opcode.NoOp:
    case Opcode.Quit:
    case Opcode.SASLListMechs:
      return onlyHeader ? command() : protocolError;
    case Opcode.Flush:
      return key === 0 && body === ext && (ext === 0 || ext === 4) ? command() : protocolError;
    case Opcode.Set:
    case Opcode.Add:
    case Opcode.Replace: {
      if (!(ext === 8 && key !== 0 && body >= key + 8)) return protocolError;
      const valueLength = body - key - ext;
      if (fits(valueLength)) return command(valueLength);
      return { kind: 'too_large', swallow: valueLength, dropsOldItem: loudOpcode(header.opcode) === Opcode.Set };
    }
    case Opcode.Append:
    case Opcode.Prepend: {
      if (!(key > 0 && ext === 0)) return protocolError;
      const valueLength = body - key;
      return fits(valueLength) ? command(valueLength) : { kind: 'too_large', swallow: valueLength, dropsOldItem: false };
    }
    case Opcode.Get:
    case Opcode.GetK:
      return ext === 0 && body === key && key > 0 ? command() : protocolError;
    case Opcode.Delete:
      return key > 0 && ext === 0 && body === key ? command() : protocolError;
    case Opcode.Increment:
    case Opcode.Decrement:
      return key > 0 && ext === 20 && body === key + ext ? command() : protocolError;
    case Opcode.Stat:
      // memcached checks only the extras; the body past the key is not read.
      return ext === 0 ? command() : protocolError;
    case Opcode.Touch:
    case Opcode.GAT:
    case Opcode.GATK:
      // Likewise: the body length is not checked, nothing past the key is read.
      return ext === 4 && key !== 0 ? command() : protocolError;
    case Opcode.SASLAuth:
    case Opcode.SASLStep: {
      if (!(ext === 0 && key !== 0)) return protocolError;
      // Forwarded (memcached may have SASL). One too big to buffer gets what a
      // memcached without SASL answers.
      const valueLength = body - key;
      if (fits(valueLength)) return command(valueLength);
      return { kind: 'rejected', status: Status.UnknownCommand, close: false, swallow: asSwallow(valueLength) };
    }
    default:
      return { kind: 'rejected', status: Status.UnknownCommand, close: false, swallow: asSwallow(body) };
  }
}

export class BinaryRequestParser {
  private readonly queue = new ByteQueue();
  /** memcached would have closed the connection: nothing after this is read. */
  private closed = false;

  constructor(private readonly limits: BinaryParserLimits) {}

  push(chunk: Buffer): void {
    if (this.closed) return;
    this.queue.push(chunk);
  }

  /** Bytes held while waiting for the rest of a request. */
  get buffered(): number {
    return this.queue.length;
  }

  /** The next complete request, or null until more bytes arrive. */
  next(): BinaryRequest | null {
    if (this.closed || this.queue.discardPending || this.queue.length < HEADER_LENGTH) return null;
    const header = decodeRequestHeader(this.queue.peek(HEADER_LENGTH));
    if (header.magic !== REQUEST_MAGIC) return this.close('invalid magic');

    const prefixLength = HEADER_LENGTH + header.extrasLength + header.keyLength;
    if (prefixLength > READ_BUFFER_SIZE) {
      return this.queue.length > READ_BUFFER_SIZE ? this.close('extras and key larger than the read buffer') : null;
    }
    if (this.queue.length < prefixLength) return null;

    const framing = memcachedFraming(header, this.limits);
    switch (framing.kind) {
      case 'command':
        return this.takeCommand(header, prefixLength + framing.valueLength);
      case 'rejected':
        if (framing.close) this.close('protocol error');
        else this.queue.discard(prefixLength + framing.swallow);
        return { type: 'rejected', header, status: framing.status, close: framing.close };
      case 'too_large': {
        const key = this.queue.peek(prefixLength).subarray(HEADER_LENGTH + header.extrasLength);
        const request: BinaryRequest = { type: 'too_large', header, key: Buffer.from(key), dropsOldItem: framing.dropsOldItem };
        this.queue.discard(prefixLength + framing.swallow);
        return request;
      }
    }
  }

  private takeCommand(header: RequestHeader, frameLength: number): BinaryRequest | null {
    if (this.queue.length < frameLength) return null;
    const raw = this.queue.take(frameLength);
    const keyStart = HEADER_LENGTH + header.extrasLength;
    const valueStart = keyStart + header.keyLength;
    return {
      type: 'command',
      header,
      extras: raw.subarray(HEADER_LENGTH, keyStart),
      key: raw.subarray(keyStart, valueStart),
      value: raw.subarray(valueStart),
      raw,
    };
  }

  private close(reason: string): BinaryRequest {
    this.closed = true;
    this.queue.skip(this.queue.length);
    return { type: 'close', reason };
  }
}
