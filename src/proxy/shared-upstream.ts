/**
 * Upstream connections shared by many client sessions (twemproxy's server
 * connections): requests from every session using a connection are written
 * in the order they arrive, batched per event-loop turn, and memcached's
 * in-order replies are handed back through a FIFO with one entry per request.
 *
 * Why: a connection per client costs four socket calls per request (client
 * read, upstream write, upstream read, client write); on a shared connection
 * the upstream read and write carry many requests each.
 *
 * What a shared connection never does is stop reading: a session whose
 * client falls behind must not stall the others, so sessions bound what they
 * put here (session.ts) and move to a connection of their own instead.
 */
import * as net from 'node:net';
import type { Logger } from '../log';
import { formatAddress, UpstreamAddress } from '../sockets';
import { retireUpstream } from './upstream';

/** A session as a shared connection sees it. */
export interface SharedTarget<Part> {
  /** A reply part for this session's oldest request on the connection; true when it ends that reply. */
  sharedPart(part: Part): boolean;
  /** The end of a batch of parts (one socket read): flush what was written to the client. */
  sharedFlush(): void;
  /**
   * The connection failed: every request this session had on it gets no reply.
   * `settled` resolves once each of them has run or never will (see retire).
   */
  sharedLost(label: string, reason: string, settled: Promise<boolean>): void;
}

export interface SharedOptions {
  /** Shared connections per protocol; sessions are spread over them and stick to one. */
  connections: number;
  connectTimeoutMs: number;
  /** Requests in flight and no bytes from memcached for this long: the connection is declared dead. */
  replyTimeoutMs: number;
}

interface ReplyParser<Part> {
  push(chunk: Buffer): void;
  next(): Part | null;
}

/** A queue with O(1) shift, for the FIFO of requests in flight. */
class Fifo<T> {
  private items: (T | undefined)[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(item: T): void {
    this.items.push(item);
  }

  peek(): T | undefined {
    return this.items[this.head];
  }

  shift(): T | undefined {
    const item = this.items[this.head];
    this.items[this.head++] = undefined;
    if (this.head === this.items.length) {
      this.items = [];
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }

  drain(): T[] {
    const out = this.items.slice(this.head) as T[];
    this.items = [];
    this.head = 0;
    return out;
  }
}

/**
 * One shared connection. The object lives as long as the proxy; its socket is
 * dialled on first use and again after it dies, so sessions keep their
 * reference across memcached restarts.
 */
export class SharedConnection<Part> {
  private socket: net.Socket | null = null;
  private connected = false;
  private parser: ReplyParser<Part>;
  private readonly waiting = new Fifo<SharedTarget<Part>>();
  private corked: net.Socket | null = null;

  constructor(
    private readonly address: UpstreamAddress,
    private readonly options: SharedOptions,
    private readonly newParser: () => ReplyParser<Part>,
    private readonly log: Logger,
  ) {
    this.parser = newParser();
  }

  /** Requests in flight on this connection. */
  get inFlight(): number {
    return this.waiting.length;
  }

  /** Sends one request for `target`; its reply comes back through target.sharedPart. */
  send(target: SharedTarget<Part>, bytes: Buffer): void {
    const socket = this.socket ?? this.dial();
    if (this.corked === null) {
      // Everything sessions send during this turn of the event loop goes out in one write.
      this.corked = socket;
      socket.cork();
      setImmediate(this.uncork);
    }
    this.waiting.push(target);
    socket.write(bytes);
  }

  private readonly uncork = (): void => {
    const socket = this.corked;
    this.corked = null;
    socket?.uncork();
  };

  private dial(): net.Socket {
    const { address, options } = this;
    // Writes made before the connection is up are buffered by the socket and sent on connect.
    const socket = 'path' in address ? net.createConnection(address.path) : net.createConnection(address.port, address.host);
    socket.setNoDelay(true);
    this.socket = socket;
    this.connected = false;
    this.parser = this.newParser();
    let lastError = '';
    const connectTimer = setTimeout(() => {
      // Never connected: nothing sent on it reached memcached.
      this.lost(socket, `connect to ${formatAddress(address)} timed out`, Promise.resolve(true));
      socket.destroy();
    }, options.connectTimeoutMs);
    socket.once('connect', () => {
      clearTimeout(connectTimer);
      if (this.socket === socket) this.connected = true;
      // From here on a silent memcached is the reply timeout's business (connecting was the connect timeout's).
      socket.setTimeout(options.replyTimeoutMs, () => {
        if (this.socket !== socket || this.waiting.length === 0) return;
        this.log.warn('upstream: memcached did not answer in time; closing a shared connection');
        this.giveUp(socket, 'memcached did not answer in time');
      });
    });
    socket.on('data', (chunk: Buffer) => this.fromMemcached(socket, chunk));
    socket.on('error', (error) => (lastError ||= error.message));
    socket.on('close', () => {
      clearTimeout(connectTimer);
      this.lost(socket, lastError || 'memcached closed the connection', Promise.resolve(true));
    });
    return socket;
  }

  private fromMemcached(socket: net.Socket, chunk: Buffer): void {
    if (this.socket !== socket) return;
    this.parser.push(chunk);
    const touched = new Set<SharedTarget<Part>>();
    try {
      let part: Part | null;
      while ((part = this.parser.next()) !== null) {
        const target = this.waiting.peek();
        if (!target) throw new Error('memcached sent a reply nobody asked for');
        touched.add(target);
        if (target.sharedPart(part)) this.waiting.shift();
      }
    } catch (error) {
      this.log.warn(`upstream: ${(error as Error).message}; closing a shared connection`);
      this.giveUp(socket, (error as Error).message);
    }
    for (const target of touched) target.sharedFlush();
  }

  /**
   * A connection that failed while connected is closed so that memcached
   * finishes with what it got (see retire), and forgotten at once (not at its
   * 'close'), so nothing more is sent on it.
   */
  private giveUp(socket: net.Socket, reason: string): void {
    this.lost(socket, reason, retireUpstream(socket, this.options.replyTimeoutMs));
  }

  /** The socket is gone: fail what was in flight on it; the next send dials a new one. */
  private lost(socket: net.Socket, reason: string, settled: Promise<boolean>): void {
    if (this.socket !== socket) return;
    const label = this.connected ? 'upstream connection lost' : 'upstream unavailable';
    this.socket = null;
    this.connected = false;
    if (this.corked === socket) this.corked = null;
    const failed = new Set(this.waiting.drain());
    if (failed.size > 0) this.log.debug(`upstream: ${label} (${reason}): failing the requests of ${failed.size} sessions`);
    for (const target of failed) target.sharedLost(label, reason, settled);
  }

  close(): void {
    this.socket?.destroy();
  }
}

/** The shared connections of one protocol; each new session is given the next one in turn. */
export class SharedUpstream<Part> {
  private readonly connections: SharedConnection<Part>[];
  private next = 0;

  constructor(address: UpstreamAddress, options: SharedOptions, newParser: () => ReplyParser<Part>, log: Logger) {
    this.connections = Array.from({ length: Math.max(1, options.connections) }, () => new SharedConnection(address, options, newParser, log));
  }

  pick(): SharedConnection<Part> {
    const connection = this.connections[this.next];
    this.next = (this.next + 1) % this.connections.length;
    return connection;
  }

  close(): void {
    for (const connection of this.connections) connection.close();
  }
}
