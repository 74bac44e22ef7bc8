/**
 * One client connection: requests are parsed as they arrive and forwarded to
 * memcached at once (pipelining is preserved, never turned into round trips),
 * replies come back in order and are streamed to the client part by part.
 *
 * Ordering: every request gets a slot in `pending`, in client order. Requests
 * that go upstream also wait in `inFlight`; memcached answers those in order
 * on the session's own upstream connection. Requests the proxy answers itself
 * (quit, refused oversize values, ...) complete at once but are delivered only
 * when every earlier reply has been.
 *
 * Backpressure: a client that stops reading pauses the upstream connection
 * (memcached stops sending), and a client that floods requests without reading
 * is paused once too many are pending. Memory per session stays bounded.
 */
import type * as net from 'node:net';
import type { WriteSink } from '../protocol/effects';
import type { Logger } from '../log';
import type { ProxyMetrics } from '../metrics';
import type { Dialect, Exchange } from './exchange';
import type { Upstream, UpstreamConnection, UpstreamOwner } from './upstream';

export interface SessionOptions {
  /** Pause reading from a client with this many requests awaiting replies. */
  maxPendingRequests: number;
}

export interface SessionDeps {
  upstream: Upstream;
  sink: WriteSink;
  metrics: ProxyMetrics;
  log: Logger;
  options: SessionOptions;
}

interface Slot<Part> {
  exchange: Exchange<Part>;
  done: boolean;
  /** Parts received while an earlier reply was still being delivered. */
  held: Buffer[];
  /** Some of this reply already reached the client. */
  started: boolean;
  sentAt: number;
}

export class Session<Request, Part extends { raw: Buffer }> implements UpstreamOwner {
  private readonly pending: Slot<Part>[] = [];
  private readonly inFlight: Slot<Part>[] = [];
  private connection: UpstreamConnection | null = null;
  private acquiring = false;
  /** Upstream bytes waiting for a connection. */
  private unsent: Buffer[] = [];
  private replyParser: ReturnType<Dialect<Request, Part>['newReplyParser']>;
  private readingPaused = false;
  private ending = false;
  private streaming = false;
  private clientGone = false;

  constructor(
    private readonly client: net.Socket,
    private readonly dialect: Dialect<Request, Part>,
    private readonly deps: SessionDeps,
  ) {
    this.replyParser = dialect.newReplyParser();
    client.on('data', (chunk) => this.fromClient(chunk));
    client.on('drain', () => this.connection?.socket.resume());
    client.on('error', (error) => deps.log.debug(`client ${client.remoteAddress}:${client.remotePort} error: ${error.message}`));
    client.on('close', () => this.onClientClosed());
  }

  /** Requests still awaiting a reply (used for graceful shutdown). */
  get busy(): boolean {
    return this.pending.length > 0;
  }

  fromClient(chunk: Buffer): void {
    if (this.ending) return;
    if (this.streaming) {
      this.sendUpstream(chunk);
      return;
    }
    const parser = this.dialect.requestParser;
    parser.push(chunk);
    this.connection?.socket.cork();
    try {
      let request: Request | null;
      while (!this.ending && (request = parser.next()) !== null) this.admit(this.dialect.plan(request));
    } finally {
      this.connection?.socket.uncork();
    }
    this.deliver();
    if (this.pending.length >= this.deps.options.maxPendingRequests) this.pauseReading();
  }

  private admit(exchange: Exchange<Part>): void {
    const slot: Slot<Part> = { exchange, done: false, held: [], started: false, sentAt: 0 };
    this.pending.push(slot);
    if (exchange.closeAfter) this.ending = true;
    if (exchange.upstream === null) {
      this.finish(slot);
      return;
    }
    slot.sentAt = performance.now();
    this.inFlight.push(slot);
    if (exchange.writeKey) this.deps.sink.writing(exchange.writeKey);
    this.sendUpstream(exchange.upstream);
  }

  private sendUpstream(bytes: Buffer): void {
    if (this.connection) {
      if (!this.connection.write(bytes)) this.pauseReading();
      return;
    }
    this.unsent.push(bytes);
    this.connectUpstream();
  }

  private connectUpstream(): void {
    if (this.acquiring || this.clientGone) return;
    this.acquiring = true;
    this.deps.upstream.acquire().then(
      (connection) => {
        this.acquiring = false;
        if (this.clientGone) {
          this.deps.upstream.release(connection, true);
          return;
        }
        this.connection = connection;
        connection.attach(this);
        connection.socket.on('drain', this.resumeReading);
        const bytes = this.unsent;
        this.unsent = [];
        connection.socket.cork();
        for (const chunk of bytes) connection.write(chunk);
        connection.socket.uncork();
      },
      (error: Error) => {
        this.acquiring = false;
        this.failInFlight(`upstream unavailable`, error.message || 'timed out waiting for a connection');
      },
    );
  }

  /** Bytes from memcached: frame them into parts and hand each to the request it answers. */
  data(chunk: Buffer): void {
    if (this.streaming) {
      this.writeClient(chunk);
      return;
    }
    this.replyParser.push(chunk);
    this.client.cork();
    try {
      let part: Part | null;
      while ((part = this.nextPart()) !== null) {
        const slot = this.inFlight[0];
        if (!slot) {
          this.dropUpstream('memcached sent a reply nobody asked for');
          return;
        }
        const verdict = slot.exchange.onPart(part);
        if (verdict.forward) this.forwardPart(slot, part.raw);
        if (slot.exchange.streams) {
          this.inFlight.shift();
          this.streaming = true;
          this.finish(slot);
          return;
        }
        if (verdict.final) {
          this.inFlight.shift();
          this.deps.metrics.upstreamLatency.observe((performance.now() - slot.sentAt) / 1000);
          this.finish(slot);
        }
      }
    } finally {
      this.client.uncork();
    }
    this.deliver();
    if (this.readingPaused && this.pending.length < this.deps.options.maxPendingRequests / 2) this.resumeReading();
  }

  private nextPart(): Part | null {
    try {
      return this.replyParser.next();
    } catch (error) {
      this.dropUpstream((error as Error).message);
      return null;
    }
  }

  private forwardPart(slot: Slot<Part>, raw: Buffer): void {
    if (this.pending[0] === slot) {
      slot.started = true;
      this.writeClient(raw);
    } else {
      slot.held.push(raw);
    }
  }

  private writeClient(bytes: Buffer): void {
    if (this.clientGone) return;
    if (!this.client.write(bytes)) this.connection?.socket.pause();
  }

  /** The reply is complete: report what took effect and count it. */
  private finish(slot: Slot<Part>): void {
    slot.done = true;
    const { exchange } = slot;
    const now = Date.now();
    for (const effect of exchange.effects()) {
      if (!(effect.kind === 'delete' && effect.missed)) this.deps.metrics.writesTookEffect.labels(effect.kind).inc();
      this.deps.sink.written(effect, now);
    }
    if (exchange.upstream && exchange.writeKey) this.deps.sink.settled(exchange.writeKey);
    this.deps.metrics.commandCounts.add(this.dialect.name, exchange.command, exchange.outcome());
  }

  /** Writes every finished reply at the head of the queue, in order. */
  private deliver(): void {
    while (this.pending.length > 0) {
      const head = this.pending[0];
      for (const raw of head.held) this.writeClient(raw);
      if (head.held.length > 0) head.started = true;
      head.held = [];
      if (!head.done) return;
      this.pending.shift();
      if (head.exchange.localReply) this.writeClient(head.exchange.localReply);
      if (head.exchange.closeAfter) {
        this.client.end();
        return;
      }
    }
  }

  private pauseReading(): void {
    if (this.readingPaused) return;
    this.readingPaused = true;
    this.client.pause();
  }

  private readonly resumeReading = (): void => {
    if (!this.readingPaused || this.pending.length >= this.deps.options.maxPendingRequests) return;
    this.readingPaused = false;
    this.client.resume();
  };

  /** UpstreamOwner: the connection to memcached is gone. */
  closed(reason: string): void {
    this.releaseConnection(false);
    this.replyParser = this.dialect.newReplyParser();
    if (this.streaming) {
      this.client.destroy();
      return;
    }
    this.failInFlight('upstream connection lost', reason);
  }

  /** UpstreamOwner: no bytes moved for the reply timeout. */
  idle(): void {
    if (this.inFlight.length === 0) return;
    this.dropUpstream('memcached did not answer in time');
  }

  private dropUpstream(reason: string): void {
    this.deps.log.warn(`upstream: ${reason}; closing that connection`);
    this.closed(reason);
  }

  private releaseConnection(clean: boolean): void {
    const connection = this.connection;
    this.connection = null;
    if (!connection) return;
    connection.socket.removeListener('drain', this.resumeReading);
    this.deps.upstream.release(connection, clean);
  }

  /**
   * Every request still waiting on memcached gets the protocol's SERVER_ERROR.
   * A reply already half-sent cannot be finished honestly, so that client is
   * disconnected instead.
   */
  private failInFlight(label: string, reason: string): void {
    const failed = this.inFlight.splice(0);
    this.unsent = [];
    if (failed.length === 0) return;
    this.deps.log.debug(`upstream: ${label}: ${reason}`);
    this.deps.metrics.upstreamErrors.labels(label).inc(failed.length);
    for (const slot of failed) {
      if (slot.started) {
        this.client.destroy();
        return;
      }
      const reply = slot.exchange.errorReply(label);
      slot.held = reply ? [reply] : [];
      slot.done = true;
      if (slot.exchange.writeKey) this.deps.sink.settled(slot.exchange.writeKey);
      this.deps.metrics.commandCounts.add(this.dialect.name, slot.exchange.command, 'upstream_error');
    }
    this.deliver();
  }

  private onClientClosed(): void {
    this.clientGone = true;
    // Only a connection with nothing in flight can serve another client.
    this.releaseConnection(this.inFlight.length === 0 && !this.streaming && this.replyParser.buffered === 0);
  }
}
