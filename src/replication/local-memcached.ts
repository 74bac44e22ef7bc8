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
 * Text (meta commands) for every key a text command can name; binary
 * (LocalMemcachedBinary) for the keys no text command can (see
 * binary-keys.ts). memcached fixes a connection's protocol at its first byte,
 * so each protocol has connections of its own.
 *
 * Not pooled with client connections: replication must keep working (and
 * keep its order) whatever clients do.
 */
import type * as net from 'node:net';
import { Opcode, type BinaryPacket } from '../protocol/binary/messages';
import { BinaryReplyParser } from '../protocol/binary/reply-parser';
import { encodeRequest } from '../protocol/binary/serializer';
import { TextReplyParser, type ReplyPart } from '../protocol/text/reply-parser';
import { SENTINEL, SENTINEL_REPLY } from '../protocol/text/serializer';
import { connect, type UpstreamAddress } from '../sockets';

/** How replies of one protocol are framed and where a reply, or a quiet batch, ends. */
interface Framing<Part> {
  parser(): { push(chunk: Buffer): void; next(): Part | null };
  /** Appended to a batch of quiet commands: memcached always answers it, after everything before it. */
  sentinel: Buffer;
  /** Whether `part` ends the reply awaited (`untilSentinel`: a quiet batch, which ends with the sentinel's reply). */
  ends(part: Part, untilSentinel: boolean): boolean;
}

const TEXT: Framing<ReplyPart> = {
  parser: () => new TextReplyParser(),
  sentinel: SENTINEL,
  ends: (part, untilSentinel) => part.kind === 'end' && (!untilSentinel || part.line === SENTINEL_REPLY),
};

/** The NOOP closing a binary batch: memcached answers it, and every quiet command's failure before it. */
const NOOP_OPAQUE = 0x6d6e6f70;

const BINARY: Framing<BinaryPacket> = {
  parser: () => new BinaryReplyParser(),
  sentinel: encodeRequest({ opcode: Opcode.NoOp, opaque: NOOP_OPAQUE }),
  // Every binary request but Stat answers with one packet (quiet ones with none, or one on failure).
  ends: (part, untilSentinel) => !untilSentinel || (part.header.opcode === Opcode.NoOp && part.header.opaque === NOOP_OPAQUE),
};

interface Waiter<Part> {
  parts: Part[];
  /** The reply ends with the sentinel's (a batch of quiet commands), not with its first part that ends a reply. */
  untilSentinel: boolean;
  resolve(parts: Part[]): void;
  reject(error: Error): void;
}

class MemcachedConnection<Part> {
  private socket: net.Socket | null = null;
  private connecting: Promise<net.Socket> | null = null;
  private parser: { push(chunk: Buffer): void; next(): Part | null };
  private waiting: Waiter<Part>[] = [];
  /** Requests of this tick not yet handed to the socket. */
  private staged: Buffer[] = [];
  private flushScheduled = false;
  /** close() was called: for good, also for a connection still being dialled. */
  private closed = false;
  /**
   * When the latest reply bytes arrived. Times derived from a reply (an item's
   * remaining life) are taken from here, not from when a callback got to run
   * on a busy event loop.
   */
  lastReceivedAt = 0;
  /** How many times the connection dropped: memcached may have restarted since (see StaleClock). */
  drops = 0;

  /** `onDisconnect`: the connection dropped (memcached may have restarted). */
  constructor(
    private readonly framing: Framing<Part>,
    private readonly address: UpstreamAddress,
    private readonly connectTimeoutMs: number,
    private readonly onDisconnect: (reason: string) => void = () => {},
  ) {
    this.parser = framing.parser();
  }

  /** Requests awaiting replies. */
  get inFlight(): number {
    return this.waiting.length;
  }

  /**
   * Sends one request and resolves with its reply parts (a multi-part reply
   * ends with its 'end' part). Rejects if memcached is unreachable or the
   * connection drops before the reply.
   */
  request(bytes: Buffer): Promise<Part[]> {
    return this.send(bytes, false);
  }

  /**
   * Sends quiet commands (meta `q`, binary quiet opcodes: memcached answers
   * only what went wrong) followed by the sentinel (`mn`, NOOP), and resolves
   * with every part memcached answered before the sentinel's reply: the
   * failures, in order (empty when all went well).
   */
  async quietBatch(bytes: Buffer): Promise<Part[]> {
    const parts = await this.send(Buffer.concat([bytes, this.framing.sentinel]), true);
    parts.pop();
    return parts;
  }

  private async send(bytes: Buffer, untilSentinel: boolean): Promise<Part[]> {
    if (this.closed) throw new Error('the connection to memcached was closed');
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
        if (this.closed) {
          // Closed while dialling: nobody would ever close this socket.
          socket.destroy();
          throw new Error('the connection to memcached was closed');
        }
        this.socket = socket;
        this.parser = this.framing.parser();
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
    let part: Part | null;
    try {
      while ((part = this.parser.next()) !== null) {
        const waiter = this.waiting[0];
        if (!waiter) throw new Error('memcached sent a reply nobody asked for');
        waiter.parts.push(part);
        if (this.framing.ends(part, waiter.untilSentinel)) {
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
    this.drops++;
    this.staged = [];
    const waiting = this.waiting.splice(0);
    for (const waiter of waiting) waiter.reject(new Error(reason));
    this.onDisconnect(reason);
  }

  close(): void {
    this.closed = true;
    this.socket?.destroy();
  }
}

/** Meta and classic text commands. */
export class LocalMemcached extends MemcachedConnection<ReplyPart> {
  constructor(address: UpstreamAddress, connectTimeoutMs: number, onDisconnect?: (reason: string) => void) {
    super(TEXT, address, connectTimeoutMs, onDisconnect);
  }
}

/** Binary protocol requests, for keys no text command can name. */
export class LocalMemcachedBinary extends MemcachedConnection<BinaryPacket> {
  constructor(address: UpstreamAddress, connectTimeoutMs: number, onDisconnect?: (reason: string) => void) {
    super(BINARY, address, connectTimeoutMs, onDisconnect);
  }
}

/**
 * Replication's own connections to the local memcached, one per job so that
 * each keeps its order whatever the others wait for: applying the peer's
 * records, reading back local writes (each in text and in binary), and
 * watching memcached (restarts, stats, the copy's checks).
 */
export class LocalConnections {
  readonly applier: LocalMemcached;
  readonly readback: LocalMemcached;
  readonly applierBinary: LocalMemcachedBinary;
  readonly readbackBinary: LocalMemcachedBinary;
  readonly monitor: LocalMemcached;

  /** `onDisconnect`: any of them dropped (memcached may have restarted). */
  constructor(address: UpstreamAddress, connectTimeoutMs: number, onDisconnect: (reason: string) => void) {
    this.applier = new LocalMemcached(address, connectTimeoutMs, onDisconnect);
    this.readback = new LocalMemcached(address, connectTimeoutMs, onDisconnect);
    this.applierBinary = new LocalMemcachedBinary(address, connectTimeoutMs, onDisconnect);
    this.readbackBinary = new LocalMemcachedBinary(address, connectTimeoutMs, onDisconnect);
    this.monitor = new LocalMemcached(address, connectTimeoutMs, onDisconnect);
  }

  close(): void {
    for (const connection of [this.applier, this.readback, this.applierBinary, this.readbackBinary, this.monitor]) connection.close();
  }
}
