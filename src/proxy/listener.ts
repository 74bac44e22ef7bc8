/**
 * The client port: accepts connections, enforces the connection limit (-c,
 * answered like memcached does), picks the protocol from the first byte
 * (0x80 is the binary protocol's magic, as memcached auto-negotiates) and
 * hands the connection to a session.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import * as net from 'node:net';
import * as tls from 'node:tls';
import type { Logger } from '../log';
import type { ProxyMetrics } from './metrics';
import type { Dialect } from './exchange';
import { Session, SessionDeps } from './session';
import type { SharedUpstream } from './shared-upstream';
import type { Upstream } from './upstream';

export interface ListenerOptions {
  port: number;
  /** Address to bind; undefined = all interfaces, like memcached. */
  host?: string;
  maxConnections: number;
  /** Close a connection with nothing outstanding after this many ms without traffic (0 = never). */
  idleTimeoutMs: number;
  /** TLS on the client port, like memcached -Z (cert and key; a CA makes client certificates mandatory). */
  tls: { cert: Buffer; key: Buffer; ca: Buffer | null } | null;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyDialect = Dialect<any, { raw: Buffer }>;

export interface DialectFactory {
  text(): AnyDialect;
  binary(): AnyDialect;
}

const BINARY_MAGIC = 0x80;

export class Listener {
  private readonly server: net.Server;
  /** Open client connections and their session (null until the first byte names the protocol). */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  private readonly clients = new Map<net.Socket, Session<any, { raw: Buffer }> | null>();

  constructor(
    private options: ListenerOptions,
    private readonly dialects: DialectFactory,
    /**
     * memcached fixes a connection's protocol from its first byte, so text and
     * binary sessions share separate connections and draw from separate pools.
     */
    private readonly deps: Omit<SessionDeps, 'upstream' | 'shared'> & {
      upstreams: Record<'text' | 'binary', Upstream>;
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      shared: Record<'text' | 'binary', SharedUpstream<any>>;
      metrics: ProxyMetrics;
      log: Logger;
    },
  ) {
    const accept = (socket: net.Socket) => this.accept(socket);
    const secure = options.tls;
    this.server = secure
      ? tls.createServer({ ...secureContextOf(secure), requestCert: secure.ca !== null, rejectUnauthorized: secure.ca !== null }, accept)
      : net.createServer({ noDelay: true }, accept);
    // A failed TLS handshake never becomes a session; say why at -vv and move on.
    this.server.on('tlsClientError', (error: Error) => deps.log.debug(`client TLS handshake failed: ${error.message}`));
  }

  /**
   * A reload: new connections get the new idle timeout and TLS material (the
   * certificate rotated); open ones keep theirs. Turning TLS on or off needs a new listener.
   */
  update(live: Pick<ListenerOptions, 'idleTimeoutMs' | 'tls'>): void {
    if (live.tls && this.server instanceof tls.Server) {
      this.server.setSecureContext(secureContextOf(live.tls));
    }
    this.options = { ...this.options, idleTimeoutMs: live.idleTimeoutMs, tls: this.server instanceof tls.Server ? (live.tls ?? this.options.tls) : null };
  }

  listen(): Promise<net.AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.options.port, this.options.host, () => {
        this.server.removeListener('error', reject);
        this.server.on('error', (error) => this.deps.log.error(`client listener: ${error.message}`));
        resolve(this.server.address() as net.AddressInfo);
      });
    });
  }

  get connections(): number {
    return this.clients.size;
  }

  private accept(socket: net.Socket): void {
    const { metrics, log } = this.deps;
    if (this.clients.size >= this.options.maxConnections) {
      metrics.clientConnectionsRejected.inc();
      socket.on('error', () => {});
      socket.end('ERROR Too many open connections\r\n');
      return;
    }
    socket.setNoDelay(true);
    metrics.clientConnectionsTotal.inc();
    metrics.clientConnections.inc();
    this.clients.set(socket, null);
    log.debug(`<${socket.remotePort} new client connection`);
    socket.on('error', () => {}); // the session reports errors once it exists; before that there is nothing to lose
    socket.once('close', () => {
      this.clients.delete(socket);
      metrics.clientConnections.dec();
      log.debug(`<${socket.remotePort} connection closed.`);
    });
    if (this.options.idleTimeoutMs > 0) {
      // Node's socket timeout fires after no bytes moved either way; a client still owed a reply is not idle
      // (a silent memcached is --upstream-timeout's business), so only a connection with nothing outstanding is closed.
      socket.setTimeout(this.options.idleTimeoutMs, () => {
        if (this.clients.get(socket)?.busy) return;
        metrics.clientConnectionsIdleClosed.inc();
        log.debug(`<${socket.remotePort} idle for ${this.options.idleTimeoutMs / 1000} s: closing, like memcached's idle_timeout`);
        socket.destroy();
      });
    }
    socket.once('data', (first) => {
      const dialect = first[0] === BINARY_MAGIC ? this.dialects.binary() : this.dialects.text();
      const { upstreams, shared, ...rest } = this.deps;
      const session = new Session(socket, dialect, { ...rest, upstream: upstreams[dialect.name], shared: shared[dialect.name].pick() });
      if (this.clients.has(socket)) this.clients.set(socket, session);
      session.fromClient(first);
    });
  }

  /**
   * Graceful stop: no new connections, idle clients closed now, busy ones
   * once their replies are out or when `timeoutMs` runs out.
   */
  async close(timeoutMs: number): Promise<void> {
    this.server.close();
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      for (const [socket, session] of this.clients) if (!session?.busy) socket.end();
      if (this.clients.size === 0) return;
      await sleep(20);
    }
    for (const socket of this.clients.keys()) socket.destroy();
  }
}

/** The certificate, key and CA (if any) clients are served with: at start and on every reload. */
function secureContextOf(secure: NonNullable<ListenerOptions['tls']>): tls.SecureContextOptions {
  return { cert: secure.cert, key: secure.key, ca: secure.ca ?? undefined };
}
