/** Buffers for a copy's fetch requests and frames are carved from allocations of this size. */
const STAGING_BYTES = 256 * 1024;

/**
 * Bytes built for one socket in large allocations, handed out as slices. An
 * allocation is never reused (the socket may still hold a slice of it).
 */
export class Staging {
  buf: Buffer = Buffer.alloc(0);
  used = 0;
  private from = 0;
  private ready: Buffer[] = [];

  /** Makes room for `n` more bytes at `used`. */
  ensure(n: number): void {
    if (this.buf.length - this.used >= n) return;
    if (this.used > this.from) this.ready.push(this.buf.subarray(this.from, this.used));
    this.buf = Buffer.allocUnsafe(Math.max(STAGING_BYTES, n));
    this.used = this.from = 0;
  }

  /** Everything written since the last take, or null. */
  take(): Buffer | null {
    if (this.used > this.from) this.ready.push(this.buf.subarray(this.from, this.used));
    this.from = this.used;
    if (this.ready.length === 0) return null;
    const out = this.ready.length === 1 ? this.ready[0] : Buffer.concat(this.ready);
    this.ready = [];
    return out;
  }
}
