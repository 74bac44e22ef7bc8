/**
 * Connections to the local memcached, pooled with generic-pool.
 *
 * A client session holds one upstream connection while it is connected, so
 * memcached's in-order replies map onto that client's requests with no
 * re-sequencing, and a client that stops reading only ever stalls its own
 * upstream connection (backpressure reaches memcached, not other clients).
 * When the session ends cleanly the connection goes back to the pool.
 */
import * as net from 'node:net';
import { createPool, Pool } from 'generic-pool';
import { parseStatsText } from '../protocol/text/stats';
import { connect, retire, type UpstreamAddress } from '../sockets';

export interface UpstreamOwner {
  data(chunk: Buffer): void;
  /** The connection closed or was destroyed; `reason` says why. */
  closed(reason: string): void;
  /** No bytes moved for the reply timeout. */
  idle(): void;
}

/**
 * Closes a connection to memcached given up on (see retire). memcached may
 * take two reply timeouts to close its side: silent for one, it may answer
 * soon after.
 */
export function retireUpstream(socket: net.Socket, replyTimeoutMs: number): Promise<boolean> {
  return retire(socket, 2 * replyTimeoutMs);
}

export class UpstreamConnection {
  private owner: UpstreamOwner | null = null;
  private lastError = '';
  private retiring: Promise<boolean> | null = null;
  closed = false;

  constructor(
    readonly socket: net.Socket,
    private readonly replyTimeoutMs: number,
  ) {
    socket.on('data', (chunk) => this.owner?.data(chunk));
    socket.on('error', (error) => (this.lastError = error.message));
    socket.on('close', () => {
      this.closed = true;
      this.owner?.closed(this.lastError || 'memcached closed the connection');
    });
    socket.setTimeout(replyTimeoutMs, () => this.owner?.idle());
  }

  attach(owner: UpstreamOwner): void {
    this.owner = owner;
  }

  detach(): void {
    this.owner = null;
    if (this.socket.isPaused()) this.socket.resume();
  }

  write(bytes: Buffer): boolean {
    return this.socket.write(bytes);
  }

  /** Closed for good; resolves once every request sent on it has run or never will, or memcached was cut off (false; see retire). */
  retire(): Promise<boolean> {
    return (this.retiring ??= retireUpstream(this.socket, this.replyTimeoutMs));
  }
}

export interface UpstreamOptions {
  maxConnections: number;
  connectTimeoutMs: number;
  /** How long a request may wait for a connection before the client gets SERVER_ERROR. */
  acquireTimeoutMs: number;
  /** A connection with requests in flight and no bytes moving for this long is declared dead. */
  replyTimeoutMs: number;
}

export class Upstream {
  private readonly pool: Pool<UpstreamConnection>;

  constructor(
    readonly address: UpstreamAddress,
    private readonly options: UpstreamOptions,
  ) {
    this.pool = createPool<UpstreamConnection>(
      {
        create: async () => new UpstreamConnection(await connect(address, options.connectTimeoutMs), options.replyTimeoutMs),
        // Not awaited: the pool need not count a connection while memcached finishes with it.
        destroy: async (connection) => void connection.retire(),
        validate: async (connection) => !connection.closed,
      },
      { max: options.maxConnections, min: 0, testOnBorrow: true, acquireTimeoutMillis: options.acquireTimeoutMs },
    );
    // A failed connect is reported to whoever waits (acquire times out); nothing else to do here.
    this.pool.on('factoryCreateError', () => {});
  }

  acquire(): Promise<UpstreamConnection> {
    return this.pool.acquire();
  }

  /** Back to the pool if it is clean, otherwise closed. */
  release(connection: UpstreamConnection, clean: boolean): void {
    connection.detach();
    if (clean && !connection.closed) void this.pool.release(connection).catch(() => {});
    else void this.pool.destroy(connection).catch(() => {});
  }

  get poolStats(): { size: number; available: number; borrowed: number; pending: number } {
    return { size: this.pool.size, available: this.pool.available, borrowed: this.pool.borrowed, pending: this.pool.pending };
  }

  /** Asks memcached for one command's reply on a connection of its own (health checks, settings). */
  async ask(command: string, terminator: RegExp, timeoutMs = this.options.connectTimeoutMs): Promise<string> {
    const socket = await connect(this.address, timeoutMs);
    try {
      return await new Promise<string>((resolve, reject) => {
        let text = '';
        const timer = setTimeout(() => reject(new Error(`memcached did not answer "${command}"`)), timeoutMs);
        socket.on('data', (chunk) => {
          text += chunk.toString('latin1');
          if (terminator.test(text)) {
            clearTimeout(timer);
            resolve(text);
          }
        });
        socket.on('error', (error) => {
          clearTimeout(timer);
          reject(error);
        });
        socket.on('close', () => {
          clearTimeout(timer);
          reject(new Error('memcached closed the connection'));
        });
        socket.write(`${command}\r\n`);
      });
    } finally {
      socket.destroy();
    }
  }

  /** `stats` or `stats settings` as a map. */
  async stats(kind = ''): Promise<Map<string, string>> {
    return parseStatsText(await this.ask(kind ? `stats ${kind}` : 'stats', /(^|\r\n)END\r\n$/));
  }

  async close(): Promise<void> {
    await this.pool.drain();
    await this.pool.clear();
  }
}
