/**
 * Reads the replies to a pipeline of quiet meta gets (`mg <key> v f t k q`,
 * ended by `mn`) as they stream in: `VA <len> <flags...>` with its data
 * block, the MN that ends a batch, or any other line (an error).
 *
 * Bulk work (a full copy fetches millions of items): fields are read from the
 * bytes and handed out as offsets into one buffer, so a caller can copy the
 * key and value straight to where they go, without a string, a Buffer view
 * or an object per item.
 *
 * Pure: bytes in, fields out.
 */
import { TailCarry } from '../tail-carry';
import { newMetaHeader, scanMetaHeader, type MetaHeader } from './meta-header';

export interface FetchedValue extends MetaHeader {
  /** Holds the reply line and its data block (valid until the next push); the header's key offsets point into it. */
  buf: Buffer;
  valueStart: number;
  valueEnd: number;
  /** 'other': the line as memcached sent it. */
  line: string;
}

export type ScanKind = 'value' | 'sentinel' | 'other';

export function newFetchedValue(): FetchedValue {
  return { ...newMetaHeader(), buf: EMPTY, valueStart: 0, valueEnd: 0, line: '' };
}

const EMPTY = Buffer.alloc(0);
const LF = 0x0a;
const CR = 0x0d;
/** A line longer than this without LF means the upstream is not speaking memcached. */
export const SCAN_LINE_MAX = 64 * 1024;

export class MetaGetScanner {
  private readonly reader = new TailCarry();

  /** Adds bytes from the socket. Only an incomplete reply is carried over (copied) into the next chunk. */
  push(chunk: Buffer): void {
    this.reader.push(chunk);
  }

  get buffered(): number {
    return this.reader.buffered;
  }

  /** The next complete reply into `out`, or null until more bytes arrive. Throws on bytes memcached could not have sent. */
  next(out: FetchedValue): ScanKind | null {
    const reader = this.reader;
    const { buf, pos: start } = reader;
    const newline = buf.indexOf(LF, start);
    if (newline === -1) {
      if (buf.length - start > SCAN_LINE_MAX) throw new Error('memcached reply line too long');
      return null;
    }
    const end = newline > start && buf[newline - 1] === CR ? newline - 1 : newline;
    scanMetaHeader(buf, start, end, out);
    if (out.status === 'MN') {
      reader.pos = newline + 1;
      return 'sentinel';
    }
    if (out.status !== 'VA') {
      out.line = buf.toString('latin1', start, end);
      reader.pos = newline + 1;
      return 'other';
    }
    if (out.length < 0) throw new Error(`malformed VA line: ${buf.toString('latin1', start, Math.min(end, start + 100))}`);
    const valueStart = newline + 1;
    const valueEnd = valueStart + out.length;
    if (buf.length < valueEnd + 2) return null;
    if (buf[valueEnd] !== CR || buf[valueEnd + 1] !== LF) throw new Error('VA data block not terminated by CRLF');
    out.buf = buf;
    out.valueStart = valueStart;
    out.valueEnd = valueEnd;
    reader.pos = valueEnd + 2;
    return 'value';
  }
}
