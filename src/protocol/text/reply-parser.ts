/**
 * Frames memcached's replies on an upstream connection into parts the proxy
 * can stream to the client one by one: a VALUE line with its data block, a
 * STAT/ITEM line, or the line that ends the reply. Streaming by part keeps a
 * huge multi-get reply from being held whole in the proxy's memory.
 *
 * Pure: bytes in, typed reply parts out.
 */
import { ByteQueue } from '../byte-queue';
import { metaValueLength } from './meta-header';

export type ReplyPartKind =
  /** `VALUE key flags bytes [cas]` and its data block: more parts follow. */
  | 'value'
  /** A line of a listing (stats, cachedump, metadump): more parts follow. */
  | 'listing'
  /** The part that ends a reply: END, STORED, VA + data, an error line, ... */
  | 'end';

export interface ReplyPart {
  kind: ReplyPartKind;
  /** The bytes memcached sent, forwarded untouched. */
  raw: Buffer;
  /** The first line without its \r\n (latin1). */
  line: string;
}

const LISTING_PREFIXES = ['STAT ', 'ITEM ', 'PREFIX ', 'key=', 'mg '];

/** A reply longer than this without a newline means the upstream is not speaking memcached. */
export const REPLY_LINE_MAX = 64 * 1024;

export class TextReplyParser {
  private readonly queue = new ByteQueue();

  push(chunk: Buffer): void {
    this.queue.push(chunk);
  }

  get buffered(): number {
    return this.queue.length;
  }

  /** The next complete part, or null until more bytes arrive. Throws on a reply memcached could not have sent. */
  next(): ReplyPart | null {
    const newline = this.queue.indexOf(0x0a);
    if (newline === -1) {
      if (this.queue.length > REPLY_LINE_MAX) throw new Error('upstream reply line too long');
      return null;
    }
    const head = this.queue.peek(newline + 1);
    const lineEnd = newline > 0 && head[newline - 1] === 0x0d ? newline - 1 : newline;
    const line = head.toString('latin1', 0, lineEnd);
    const block = dataBlockLength(line, head, lineEnd);
    if (block !== null) {
      const total = newline + 1 + block + 2;
      if (this.queue.length < total) return null;
      const kind = line.startsWith('VALUE ') ? 'value' : 'end';
      return { kind, raw: this.queue.take(total), line };
    }
    const kind = isListing(line) ? 'listing' : 'end';
    return { kind, raw: this.queue.take(newline + 1), line };
  }
}

/** Most replies are END, STORED, ...: the first character rules out the listing prefixes without comparing each. */
function isListing(line: string): boolean {
  const first = line.charCodeAt(0);
  if (first !== 0x53 /* S */ && first !== 0x49 /* I */ && first !== 0x50 /* P */ && first !== 0x6b /* k */ && first !== 0x6d /* m */) return false;
  return LISTING_PREFIXES.some((p) => line.startsWith(p));
}

/** Length of the data block announced by a VALUE or VA line (`line`, head[0, lineEnd)), or null if none follows. */
function dataBlockLength(line: string, head: Buffer, lineEnd: number): number | null {
  let n: number;
  if (line.startsWith('VALUE ')) {
    const field = spaceField(line, 3);
    n = field === undefined ? NaN : Number(field);
  } else if (line.startsWith('VA ')) {
    n = metaValueLength(head, 0, lineEnd) ?? NaN;
  } else {
    return null;
  }
  if (!Number.isInteger(n) || n < 0) throw new Error(`upstream sent a malformed value header: ${line.slice(0, 80)}`);
  return n;
}

/** `line.split(' ')[index]` without building the array (this runs for every VALUE line). */
export function spaceField(line: string, index: number): string | undefined {
  let start = 0;
  for (let i = 0; i < index; i++) {
    const space = line.indexOf(' ', start);
    if (space === -1) return undefined;
    start = space + 1;
  }
  const end = line.indexOf(' ', start);
  return end === -1 ? line.slice(start) : line.slice(start, end);
}
