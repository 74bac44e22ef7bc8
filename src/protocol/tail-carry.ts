/**
 * The reader of a bulk stream that scans each chunk in place: a full copy
 * reads millions of small messages (metadump lines, replies to quiet meta
 * gets), hundreds per chunk, and hands out offsets into the chunk rather than
 * a Buffer per message. Only a chunk's incomplete tail is kept, joined to the
 * next chunk as it arrives. (Parsers of request and reply streams, which take
 * whole messages, use ByteQueue.)
 *
 * Pure: bytes in, a buffer and a position out.
 */
const EMPTY = Buffer.alloc(0);

export class TailCarry {
  /** The bytes to scan, from `pos`; valid until the next push. */
  buf: Buffer = EMPTY;
  pos = 0;

  push(chunk: Buffer): void {
    this.buf = this.pos >= this.buf.length ? chunk : Buffer.concat([this.buf.subarray(this.pos), chunk]);
    this.pos = 0;
  }

  /** Bytes received and not yet consumed. */
  get buffered(): number {
    return this.buf.length - this.pos;
  }

  clear(): void {
    this.buf = EMPTY;
    this.pos = 0;
  }
}
