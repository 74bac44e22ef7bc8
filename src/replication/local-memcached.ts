/**
 * A private, pipelined connection from replication to the local memcached
 * (reading items back, applying peer records, walking the cache). Requests
 * are written at once and their replies matched in order, so a stream of
 * records costs one round trip, not one per record.
 *
 * Writes made in one tick leave in one socket write (they are staged and
 * joined at the end of the tick): a peer's records arrive a chunk at a time,
 * hundreds per chunk, and one syscall per record cost more than memcached
 * took to apply them.
 *
 * Not pooled with client connections: replication must keep working (and
 * keep its order) whatever clients do.
 */
import type * as net from 'node:net';
import { TextReplyParser, type ReplyPart } from '../protocol/text/reply-parser';
import { SENTINEL, SENTINEL_REPLY } from '../protocol/text/serializer';
import { connect, type UpstreamAddress } from '../proxy/upstream';

interface Waiter {
  parts: ReplyPart[];
  /** The reply ends with memcached's MN (a batch of quiet commands), not with its first 'end' part. */
  untilSentinel: boolean;
  resolve(parts: ReplyPart[]): void;
  reject(error: Error): void;
}

export class LocalMemcached {
  private socket: net.Socket | null = null;
  private connecting: Promise<net.Socket> | null = null;
  private parser = new TextReplyParser();
  private waiting: Waiter[] = [];
  /** Requests of this tick not yet handed to the socket. */
  private staged: Buffer[] = [];
  private flushScheduled = false;
  /**
   * When the latest reply bytes arrived. Times derived from a reply (an item's
   * remaining life) are taken from here, not from when a callback got to run
   * on a busy event loop.
   */
  lastReceivedAt = 0;
  /** Called when the connection drops (memcached may have restarted). */
  onDisconnect: (reason: string) => void = () => {};

  constructor(private readonly address: UpstreamAddress, private readonly connectTimeoutMs: number) {}

  /** Requests awaiting replies. */
  get inFlight(): number {
    return this.waiting.length;
  }

  /**
   * Sends one request and resolves with its reply parts (a multi-part reply
   * ends with its 'end' part). Rejects if memcached is unreachable or the
   * connection drops before the reply.
   */
  request(bytes: Buffer): Promise<ReplyPart[]> {
    return this.send(bytes, false);
  }

  /**
   * Sends quiet commands (meta `q`: memcached answers only what went wrong)
   * followed by `mn`, and resolves with every line memcached answered before
   * its MN: the failures, in order (empty when all went well).
   */
  async quietBatch(bytes: Buffer): Promise<ReplyPart[]> {
    const parts = await this.send(Buffer.concat([bytes, SENTINEL]), true);
    parts.pop();
    return parts;
  }

  private async send(bytes: Buffer, untilSentinel: boolean): Promise<ReplyPart[]> {
    if (!this.socket) await this.open();
    return new Promise((resolve, reject) => {
      this.waiting.push({ parts: [], untilSentinel, resolve, reject });
      this.stage(bytes);
    });
  }

  private stage(bytes: Buffer): void {
    this.staged.push(bytes);
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    process.nextTick(() => {
      this.flushScheduled = false;
      const staged = this.staged;
      this.staged = [];
      // Dropped in between: the waiters of these requests were rejected already.
      this.socket?.write(staged.length === 1 ? staged[0] : Buffer.concat(staged));
    });
  }

  /** The status word of a single-line reply (HD, NF, OK, ...). */
  async status(bytes: Buffer): Promise<string> {
    const parts = await this.request(bytes);
    return parts[parts.length - 1].line.split(' ', 1)[0];
  }

  /** Resolves once the socket's buffered writes have been handed to the kernel (flow control for bulk work). */
  drained(): Promise<void> {
    const socket = this.socket;
    if (!socket || !socket.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve) => {
      socket.once('drain', resolve);
      socket.once('close', resolve);
    });
  }

  private open(): Promise<net.Socket> {
    this.connecting ??= connect(this.address, this.connectTimeoutMs).then(
      (socket) => {
        this.connecting = null;
        this.socket = socket;
        this.parser = new TextReplyParser();
        socket.on('data', (chunk) => this.receive(chunk));
        socket.on('error', () => {});
        socket.on('close', () => this.dropped('memcached closed the connection'));
        return socket;
      },
      (error: Error) => {
        this.connecting = null;
        throw error;
      },
    );
    return this.connecting;
  }

  private receive(chunk: Buffer): void {
    this.lastReceivedAt = Date.now();
    this.parser.push(chunk);
    let part: ReplyPart | null;
    try {
      while ((part = this.parser.next()) !== null) {
        const waiter = this.waiting[0];
        if (!waiter) throw new Error('memcached sent a reply nobody asked for');
        waiter.parts.push(part);
        if (part.kind === 'end' && (!waiter.untilSentinel || part.line === SENTINEL_REPLY)) {
          this.waiting.shift();
          waiter.resolve(waiter.parts);
        }
      }
    } catch (error) {
      this.socket?.destroy();
      this.dropped((error as Error).message);
    }
  }

  private dropped(reason: string): void {
    if (!this.socket) return;
    this.socket = null;
    this.staged = [];
    const waiting = this.waiting.splice(0);
    for (const waiter of waiting) waiter.reject(new Error(reason));
    this.onDisconnect(reason);
  }

  close(): void {
    this.socket?.destroy();
  }
}
