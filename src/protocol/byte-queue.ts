/**
 * A FIFO of received bytes that avoids copying: chunks are kept as they came
 * off the socket and only joined when a caller takes a whole message.
 * Every parser that takes whole messages from a stream reads through it (text
 * and binary requests and replies, the replication link's frames); readers
 * that scan a bulk stream in place use TailCarry.
 */
export class ByteQueue {
  private chunks: Buffer[] = [];
  private offset = 0; // consumed bytes of chunks[0]
  /** Bytes still to drop as they arrive (see discard). */
  private discarding = 0;
  length = 0;

  push(chunk: Buffer): void {
    if (this.discarding > 0) {
      const dropped = Math.min(this.discarding, chunk.length);
      this.discarding -= dropped;
      chunk = chunk.subarray(dropped);
    }
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  /** Index (relative to the front) of the first `byte` at or after `from`, or -1. */
  indexOf(byte: number, from = 0): number {
    let base = 0;
    for (let i = 0; i < this.chunks.length; i++) {
      const chunk = this.chunks[i];
      const start = i === 0 ? this.offset : 0;
      const size = chunk.length - start;
      if (base + size > from) {
        const at = chunk.indexOf(byte, start + Math.max(0, from - base));
        if (at !== -1) return base + at - start;
      }
      base += size;
    }
    return -1;
  }

  /** The first `n` bytes without consuming them (n <= length). */
  peek(n: number): Buffer {
    const first = this.chunks[0];
    if (first && first.length - this.offset >= n) return first.subarray(this.offset, this.offset + n);
    const out = Buffer.allocUnsafe(n);
    let written = 0;
    for (let i = 0; written < n; i++) {
      const chunk = this.chunks[i];
      const start = i === 0 ? this.offset : 0;
      const count = Math.min(chunk.length - start, n - written);
      chunk.copy(out, written, start, start + count);
      written += count;
    }
    return out;
  }

  /** Removes and returns the first `n` bytes (n <= length). */
  take(n: number): Buffer {
    const out = this.peek(n);
    this.skip(n);
    return out;
  }

  /**
   * Drops the next `n` bytes, those held now and the rest as they arrive,
   * without ever buffering them (a refused oversized value).
   */
  discard(n: number): void {
    this.discarding = n - this.skip(n);
  }

  /** True while bytes announced by discard() have yet to arrive. */
  get discardPending(): boolean {
    return this.discarding > 0;
  }

  /** Discards up to `n` bytes; returns how many were discarded. */
  skip(n: number): number {
    const count = Math.min(n, this.length);
    let left = count;
    while (left > 0) {
      const available = this.chunks[0].length - this.offset;
      if (available > left) {
        this.offset += left;
        left = 0;
      } else {
        left -= available;
        this.chunks.shift();
        this.offset = 0;
      }
    }
    this.length -= count;
    return count;
  }
}
