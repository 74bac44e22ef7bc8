/**
 * Frames memcached's binary responses on an upstream connection. Each packet
 * is one reply part (a Stat reply is several packets; everything else is
 * one), kept byte for byte so it can be forwarded untouched.
 *
 * Pure: bytes in, typed packets out.
 */
import { ByteQueue } from '../byte-queue';
import { BinaryPacket, decodeResponseHeader, HEADER_LENGTH, RESPONSE_MAGIC } from './messages';

export class BinaryReplyParser {
  private readonly queue = new ByteQueue();

  push(chunk: Buffer): void {
    this.queue.push(chunk);
  }

  get buffered(): number {
    return this.queue.length;
  }

  /** The next complete packet, or null until more bytes arrive. Throws on bytes memcached could not have sent. */
  next(): BinaryPacket | null {
    if (this.queue.length < HEADER_LENGTH) return null;
    const header = decodeResponseHeader(this.queue.peek(HEADER_LENGTH));
    if (header.magic !== RESPONSE_MAGIC) {
      throw new Error(`upstream sent a binary response with magic 0x${header.magic.toString(16)}`);
    }
    if (header.extrasLength + header.keyLength > header.totalBodyLength) {
      throw new Error('upstream sent a binary response whose extras and key exceed its body');
    }
    const total = HEADER_LENGTH + header.totalBodyLength;
    if (this.queue.length < total) return null;
    const raw = this.queue.take(total);
    const keyStart = HEADER_LENGTH + header.extrasLength;
    const valueStart = keyStart + header.keyLength;
    return {
      header,
      extras: raw.subarray(HEADER_LENGTH, keyStart),
      key: raw.subarray(keyStart, valueStart),
      value: raw.subarray(valueStart),
      raw,
    };
  }
}
