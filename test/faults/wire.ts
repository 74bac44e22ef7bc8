/**
 * The fault suite's clients' side of memcached's three protocols: send a
 * request, wait (bounded) for its whole reply, parse it. A reply that does
 * not come, or comes cut, throws NoReply: the caller cannot know whether
 * the write took effect.
 */
import { HEADER_LENGTH, Opcode, RESPONSE_MAGIC } from '../../src/protocol/binary/messages';
import { encodeRequest } from '../../src/protocol/binary/serializer';
import { RawClient } from '../support/client';

/** No whole reply in time (or the connection closed): the request's outcome is unknown. */
export class NoReply extends Error {
  constructor(what: string, received: Buffer) {
    super(`${what}: no complete reply (${received.length} bytes: ${JSON.stringify(received.toString('latin1').slice(0, 80))})`);
  }
}

export interface TextValue {
  key: string;
  flags: number;
  value: string;
  cas?: string;
}

export interface MetaReply {
  /** The reply line: HD, NS, NF, EN, VA 3 f0 t-1, MN is not included. */
  line: string;
  value?: string;
}

export interface BinaryResponse {
  opcode: number;
  status: number;
  opaque: number;
  key: string;
  value: Buffer;
  cas: bigint;
}

const ERROR_LINE = /^(SERVER_ERROR|CLIENT_ERROR|ERROR)/;

export class Wire {
  private opaque = 1;

  private constructor(readonly raw: RawClient) {}

  static async open(port: number): Promise<Wire> {
    return new Wire(await RawClient.connect(port));
  }

  close(): void {
    this.raw.close();
  }

  /** A text command answered by one line (storage, delete, incr, touch, flush_all): the line without CRLF. */
  async line(request: string | Buffer, timeoutMs: number): Promise<string> {
    this.raw.send(request);
    const reply = await this.raw.read((b) => b.length >= 2 && b[b.length - 2] === 0x0d && b[b.length - 1] === 0x0a, timeoutMs);
    const text = reply.toString('latin1');
    if (!text.endsWith('\r\n') || text.indexOf('\r\n') !== text.length - 2) throw new NoReply(firstLine(request), reply);
    return text.slice(0, -2);
  }

  /** get/gets/gat/gats: the values up to END. An error line throws ReplyLine. */
  async values(request: string, timeoutMs: number): Promise<TextValue[]> {
    this.raw.send(request);
    const reply = await this.raw.read((b) => parseValues(b) !== null, timeoutMs);
    const parsed = parseValues(reply);
    if (parsed === null) throw new NoReply(firstLine(request), reply);
    if (typeof parsed === 'string') throw new ReplyLine(parsed);
    return parsed;
  }

  /** One meta command (or a few) then `mn`: every reply before MN. */
  async meta(request: string | Buffer, timeoutMs: number): Promise<MetaReply[]> {
    this.raw.send(Buffer.concat([typeof request === 'string' ? Buffer.from(request, 'latin1') : request, Buffer.from('mn\r\n')]));
    const reply = await this.raw.read((b) => parseMeta(b) !== null, timeoutMs);
    const parsed = parseMeta(reply);
    if (parsed === null) throw new NoReply(firstLine(request), reply);
    return parsed;
  }

  /** Binary requests then a NoOp: the responses before the NoOp's (quiet ones answer only failures). */
  async binary(requests: Buffer[], timeoutMs: number): Promise<BinaryResponse[]> {
    const opaque = this.opaque++;
    this.raw.send(Buffer.concat([...requests, encodeRequest({ opcode: Opcode.NoOp, opaque })]));
    const done = (b: Buffer) => {
      const packets = parseBinary(b);
      return packets !== null && packets.some((p) => p.opcode === Opcode.NoOp && p.opaque === opaque);
    };
    const reply = await this.raw.read(done, timeoutMs);
    const packets = parseBinary(reply);
    if (packets === null || !done(reply)) throw new NoReply(`binary 0x${requests[0]?.[1]?.toString(16)}`, reply);
    return packets.filter((p) => !(p.opcode === Opcode.NoOp && p.opaque === opaque));
  }
}

/** memcached answered an error line where values were expected. */
export class ReplyLine extends Error {
  constructor(readonly line: string) {
    super(line);
  }
}

function firstLine(request: string | Buffer): string {
  const text = typeof request === 'string' ? request : request.toString('latin1');
  return JSON.stringify(text.split('\r\n')[0].slice(0, 80));
}

/** VALUE blocks up to END; an error line as a string; null while incomplete. */
export function parseValues(bytes: Buffer): TextValue[] | string | null {
  const out: TextValue[] = [];
  let at = 0;
  for (;;) {
    const eol = bytes.indexOf('\r\n', at);
    if (eol === -1) return null;
    const line = bytes.toString('latin1', at, eol);
    if (line === 'END') return eol + 2 === bytes.length ? out : `trailing bytes after END: ${bytes.toString('latin1', eol + 2, eol + 60)}`;
    if (ERROR_LINE.test(line)) return line;
    const m = /^VALUE (\S+) (\d+) (\d+)(?: (\d+))?$/.exec(line);
    if (!m) return `unexpected line ${JSON.stringify(line.slice(0, 80))}`;
    const size = Number(m[3]);
    if (bytes.length < eol + 2 + size + 2) return null;
    if (bytes[eol + 2 + size] !== 0x0d || bytes[eol + 3 + size] !== 0x0a) return `value of ${m[1]} not followed by CRLF`;
    out.push({ key: m[1], flags: Number(m[2]), value: bytes.toString('latin1', eol + 2, eol + 2 + size), cas: m[4] });
    at = eol + 2 + size + 2;
  }
}

/** Meta replies up to MN (values read by their length); null while incomplete. */
export function parseMeta(bytes: Buffer): MetaReply[] | null {
  const out: MetaReply[] = [];
  let at = 0;
  for (;;) {
    const eol = bytes.indexOf('\r\n', at);
    if (eol === -1) return null;
    const line = bytes.toString('latin1', at, eol);
    if (line === 'MN') return out;
    const va = /^VA (\d+)/.exec(line);
    if (!va) {
      out.push({ line });
      at = eol + 2;
      continue;
    }
    const size = Number(va[1]);
    if (bytes.length < eol + 2 + size + 2) return null;
    out.push({ line, value: bytes.toString('latin1', eol + 2, eol + 2 + size) });
    at = eol + 2 + size + 2;
  }
}

/** Whole binary response packets; null while the last one is incomplete. */
export function parseBinary(bytes: Buffer): BinaryResponse[] | null {
  const out: BinaryResponse[] = [];
  let at = 0;
  while (at < bytes.length) {
    if (bytes.length - at < HEADER_LENGTH) return null;
    if (bytes[at] !== RESPONSE_MAGIC)
      throw new ReplyLine(`binary response with magic 0x${bytes[at].toString(16)}: ${JSON.stringify(bytes.toString('latin1', at, at + 40))}`);
    const keyLength = bytes.readUInt16BE(at + 2);
    const extrasLength = bytes[at + 4];
    const total = bytes.readUInt32BE(at + 8);
    if (bytes.length - at < HEADER_LENGTH + total) return null;
    const body = at + HEADER_LENGTH;
    out.push({
      opcode: bytes[at + 1],
      status: bytes.readUInt16BE(at + 6),
      opaque: bytes.readUInt32BE(at + 12),
      cas: bytes.readBigUInt64BE(at + 16),
      key: bytes.toString('latin1', body + extrasLength, body + extrasLength + keyLength),
      value: bytes.subarray(body + extrasLength + keyLength, body + total),
    });
    at = body + total;
  }
  return out;
}
