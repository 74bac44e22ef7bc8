/**
 * One client connection: requests are parsed as they arrive and forwarded to
 * memcached at once (pipelining is preserved, never turned into round trips),
 * replies come back in order and are streamed to the client part by part.
 *
 * Ordering: every request gets a slot in `pending`, in client order. Requests
 * that go upstream wait in `queued` until they are sent, then in `inFlight`
 * until answered. Requests the proxy answers itself (quit, refused oversize
 * values, ...) complete at once but are delivered only when every earlier
 * reply has been.
 *
 * Which connection: a session normally sends on a connection shared with
 * other sessions (shared-upstream.ts), which saves socket calls. It moves to
 * a connection of its own, taken from the pool (upstream.ts), for a request
 * that must not share one (exchange.connection), for a reply that may be
 * large (a multi-get of many keys), when it has many requests in flight (a
 * pipelining client batches by itself), or when its client is not reading.
 * It moves back once that connection has nothing in flight, unless a request
 * changed the connection's state (watch, SASL): then it stays. Requests are
 * sent on the new connection only once the old one has answered everything,
 * so replies stay in order across a move.
 *
 * Backpressure: a shared connection is never paused, so what a session may
 * have in flight on it is bounded (SHARED_REPLY_ITEMS), and a client that
 * stops reading stops being read. On a connection of its own, a client that
 * stops reading pauses that connection (memcached stops sending) as before.
 * Either way memory per session stays bounded and other clients are not
 * stalled.
 */
import type * as net from 'node:net';
import type { FlushTurn, WriteSink } from './write-sink';
import type { Logger } from '../log';
import type { ProxyMetrics } from './metrics';
import type { Dialect, Exchange } from './exchange';
import type { SharedConnection, SharedTarget } from './shared-upstream';
import type { Upstream, UpstreamConnection, UpstreamOwner } from './upstream';

export interface SessionOptions {
  /** Pause reading from a client with this many requests awaiting replies. */
  maxPendingRequests: number;
}

export interface SessionDeps<Part = { raw: Buffer }> {
  /** The pool connections of a session's own come from. */
  upstream: Upstream;
  /** The shared connection this session uses. */
  shared: SharedConnection<Part>;
  sink: WriteSink;
  metrics: ProxyMetrics;
  log: Logger;
  options: SessionOptions;
}

/**
 * Reply items (values) one session may have in flight on a shared connection.
 * A shared connection is never paused, so this is what a client that stops
 * reading can make the proxy buffer: at most this many items (each at most
 * memcached's item size limit).
 */
export const SHARED_REPLY_ITEMS = 16;
/** Gathered reply bytes up to this are copied into one buffer for one write; more go corked, uncopied. */
const GATHER_COPY_MAX = 16 * 1024;

type Lane = 'shared' | 'own';

interface Slot<Part> {
  exchange: Exchange<Part>;
  done: boolean;
  /** Parts received while an earlier reply was still being delivered. */
  held: Buffer[];
  /** Some of this reply already reached the client. */
  started: boolean;
  sentAt: number;
  /** Held back until replication lets it go (see WriteSink.writing). */
  waiting: boolean;
  /** A flush_all's place in replication's order (see WriteSink.flushing). */
  flushTurn: FlushTurn | null;
}

export class Session<Request, Part extends { raw: Buffer }> implements UpstreamOwner, SharedTarget<Part> {
  private readonly pending: Slot<Part>[] = [];
  /** Planned but not sent yet: waiting for the connection they need. */
  private readonly queued: Slot<Part>[] = [];
  /** Sent on `lane`, oldest first. */
  private readonly inFlight: Slot<Part>[] = [];
  private lane: Lane = 'shared';
  /** Reply items in flight on the shared connection. */
  private sharedItems = 0;
  /** A connection of the session's own (lane 'own'), with its reply parser. */
  private own: UpstreamConnection | null = null;
  private acquiring = false;
  private replyParser: ReturnType<Dialect<Request, Part>['newReplyParser']>;
  /** A request changed the state of the session's own connection: never share again. */
  private pinned = false;
  private readingPaused = false;
  /** The client's socket refused more (write returned false) and has not drained yet. */
  private clientBlocked = false;
  /**
   * Reply bytes gathered while one read of memcached's replies is handed out,
   * written at its end in one write (see flushClient): a get's reply is three
   * parts, and one write of their few hundred bytes costs less than a corked
   * stream's writev of three.
   */
  private gathering = false;
  private gathered: Buffer[] = [];
  private gatheredBytes = 0;
  private ending = false;
  private streaming = false;
  private clientGone = false;

  constructor(
    private readonly client: net.Socket,
    private readonly dialect: Dialect<Request, Part>,
    private readonly deps: SessionDeps<Part>,
  ) {
    this.replyParser = dialect.newReplyParser();
    client.on('data', (chunk) => this.fromClient(chunk));
    client.on('drain', () => {
      this.clientBlocked = false;
      this.own?.socket.resume();
      this.resumeReading();
    });
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
      if (this.own && !this.own.write(chunk)) this.pauseReading();
      return;
    }
    const parser = this.dialect.requestParser;
    parser.push(chunk);
    const own = this.own;
    own?.socket.cork();
    try {
      let request: Request | null;
      while (!this.ending && (request = parser.next()) !== null) this.admit(this.dialect.plan(request));
    } finally {
      own?.socket.uncork();
    }
    this.deliver();
    if (this.pending.length >= this.deps.options.maxPendingRequests) this.pauseReading();
  }

  private admit(exchange: Exchange<Part>): void {
    const slot: Slot<Part> = { exchange, done: false, held: [], started: false, sentAt: 0, waiting: false, flushTurn: null };
    this.pending.push(slot);
    if (exchange.closeAfter) this.ending = true;
    if (exchange.upstream === null) {
      this.finish(slot);
      return;
    }
    if (exchange.flush) slot.flushTurn = this.deps.sink.flushing();
    const wait = slot.flushTurn ? slot.flushTurn.ready : this.writing(exchange.writeKeys);
    if (wait) {
      slot.waiting = true;
      void wait.then((go) => {
        slot.waiting = false;
        if (go === false) this.refuse(slot);
        this.send();
      });
    }
    this.queued.push(slot);
    this.send();
  }

  /** A queued request replication could not get ready for in time: it fails unsent, as on a silent memcached. */
  private refuse(slot: Slot<Part>): void {
    const at = this.queued.indexOf(slot);
    if (at < 0) return; // failed meanwhile
    this.queued.splice(at, 1);
    this.fail([slot], 'upstream unavailable', 'memcached did not answer in time to prepare the request', null);
  }

  /** Where the next request goes: the shared connection unless something rules it out. */
  private laneFor(exchange: Exchange<Part>): Lane {
    if (this.pinned || exchange.connection !== 'shared') return 'own';
    // A busy connection of its own keeps the session: moving would mean waiting for it to drain.
    if (this.lane === 'own' && this.inFlight.length > 0) return 'own';
    if (this.clientBlocked) return 'own';
    const items = this.lane === 'shared' ? this.sharedItems : 0;
    return items + exchange.replyItems > SHARED_REPLY_ITEMS ? 'own' : 'shared';
  }

  /** Sends queued requests in order, moving between connections when the old one has answered everything. */
  private send(): void {
    while (this.queued.length > 0) {
      const slot = this.queued[0];
      if (slot.waiting) return; // sent again once let go
      // memcached must find nothing else on the connection (see Exchange.connection): sent once the rest is answered.
      if (slot.exchange.connection === 'own' && this.inFlight.length > 0) return;
      const lane = this.laneFor(slot.exchange);
      if (lane !== this.lane) {
        if (this.inFlight.length > 0) return; // sent again from the reply path once they are answered
        if (this.lane === 'own') this.releaseOwn(this.replyParser.buffered === 0);
        this.lane = lane;
      }
      if (lane === 'own' && !this.own) {
        this.connectOwn();
        return;
      }
      this.queued.shift();
      const { exchange } = slot;
      slot.sentAt = performance.now();
      this.inFlight.push(slot);
      if (exchange.connection === 'pin') this.pinned = true;
      if (lane === 'shared') {
        this.sharedItems += exchange.replyItems;
        this.deps.shared.send(this, exchange.upstream!);
      } else if (!this.own!.write(exchange.upstream!)) {
        this.pauseReading();
      }
    }
  }

  private connectOwn(): void {
    if (this.acquiring) return;
    this.acquiring = true;
    this.deps.upstream.acquire().then(
      (connection) => {
        this.acquiring = false;
        if (this.clientGone && this.queued.length === 0) {
          this.deps.upstream.release(connection, true);
          return;
        }
        this.own = connection;
        this.replyParser = this.dialect.newReplyParser();
        connection.attach(this);
        connection.socket.on('drain', this.resumeReading);
        if (this.clientBlocked) connection.socket.pause();
        connection.socket.cork();
        this.send();
        connection.socket.uncork();
      },
      (error: Error) => {
        this.acquiring = false;
        this.failQueued('upstream unavailable', error.message || 'timed out waiting for a connection');
      },
    );
  }

  /** SharedTarget: a reply part from the shared connection. */
  sharedPart(part: Part): boolean {
    this.gathering = true;
    return this.takePart(part);
  }

  /** SharedTarget: the end of one read from the shared connection. */
  sharedFlush(): void {
    this.flushClient();
    this.afterReplies();
  }

  /** SharedTarget: the shared connection died with requests of this session on it. */
  sharedLost(label: string, reason: string, settled: Promise<boolean>): void {
    this.sharedItems = 0;
    this.failInFlight(label, reason, settled);
    this.send();
  }

  /** UpstreamOwner: bytes from the session's own connection. */
  data(chunk: Buffer): void {
    if (this.streaming) {
      this.writeClient(chunk);
      return;
    }
    this.replyParser.push(chunk);
    this.gathering = true;
    try {
      let part: Part | null;
      while (!this.streaming && (part = this.nextPart()) !== null) {
        if (this.inFlight.length === 0) {
          this.dropOwn('memcached sent a reply nobody asked for');
          return;
        }
        this.takePart(part);
      }
    } finally {
      this.flushClient();
    }
    this.afterReplies();
  }

  /** Hands a part to the oldest request in flight; true when that request's reply is complete. */
  private takePart(part: Part): boolean {
    const slot = this.inFlight[0];
    if (!slot) return true; // cannot happen: a shared connection only carries parts for requests it was given
    const verdict = slot.exchange.onPart(part);
    if (verdict.forward) this.forwardPart(slot, part.raw);
    if (slot.exchange.streams) {
      this.inFlight.shift();
      this.streaming = true;
      this.finish(slot);
      return true;
    }
    if (!verdict.final) return false;
    this.inFlight.shift();
    if (this.lane === 'shared') this.sharedItems -= slot.exchange.replyItems;
    const seconds = (performance.now() - slot.sentAt) / 1000;
    this.deps.metrics.upstreamLatency.observe(seconds);
    this.deps.metrics.clientLatency.observe(seconds);
    this.finish(slot);
    return true;
  }

  private afterReplies(): void {
    if (this.clientGone) {
      this.deliver();
      this.send();
      // Its requests are answered and their writes reported: the connection can go back to the pool.
      if (this.inFlight.length === 0 && this.queued.length === 0) this.releaseOwn(this.replyParser.buffered === 0);
      return;
    }
    this.deliver();
    this.send();
    if (this.readingPaused && this.pending.length < this.deps.options.maxPendingRequests / 2) this.resumeReading();
  }

  private nextPart(): Part | null {
    try {
      return this.replyParser.next();
    } catch (error) {
      this.dropOwn((error as Error).message);
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
    if (this.gathering) {
      this.gathered.push(bytes);
      this.gatheredBytes += bytes.length;
      return;
    }
    this.writeNow(bytes);
  }

  /** Writes what was gathered, in one write unless it is large (then corked: no copy of big values). */
  private flushClient(): void {
    this.gathering = false;
    const parts = this.gathered;
    if (parts.length === 0) return;
    const bytes = this.gatheredBytes;
    this.gathered = [];
    this.gatheredBytes = 0;
    if (this.clientGone) return;
    if (parts.length === 1) return this.writeNow(parts[0]);
    if (bytes <= GATHER_COPY_MAX) return this.writeNow(Buffer.concat(parts, bytes));
    this.client.cork();
    for (const part of parts) this.writeNow(part);
    this.client.uncork();
  }

  private writeNow(bytes: Buffer): void {
    if (this.client.write(bytes)) return;
    // The client is not keeping up: read no more of its requests until it drains, and
    // (on a connection of its own) let memcached hold the rest of the replies.
    this.clientBlocked = true;
    this.pauseReading();
    this.own?.socket.pause();
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
    if (exchange.upstream) this.ended(slot);
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
        this.flushClient();
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
    if (!this.readingPaused || this.clientBlocked || this.pending.length >= this.deps.options.maxPendingRequests) return;
    this.readingPaused = false;
    this.client.resume();
  };

  /** UpstreamOwner: the session's own connection to memcached is gone. */
  closed(reason: string): void {
    const settled = this.own?.retire() ?? Promise.resolve(true);
    this.releaseOwn(false);
    if (this.streaming) {
      this.client.destroy();
      return;
    }
    this.failInFlight('upstream connection lost', reason, settled);
    this.send();
  }

  /** UpstreamOwner: no bytes moved on the session's own connection for the reply timeout. */
  idle(): void {
    if (this.inFlight.length === 0) return;
    this.dropOwn('memcached did not answer in time');
  }

  private dropOwn(reason: string): void {
    this.deps.log.warn(`upstream: ${reason}; closing that connection`);
    this.closed(reason);
  }

  private releaseOwn(clean: boolean): void {
    const connection = this.own;
    this.own = null;
    if (!connection) return;
    connection.socket.removeListener('drain', this.resumeReading);
    this.deps.upstream.release(connection, clean);
  }

  /**
   * Every request still waiting on memcached gets the protocol's SERVER_ERROR.
   * A reply already half-sent cannot be finished honestly, so that client is
   * disconnected instead.
   */
  private failInFlight(label: string, reason: string, settled: Promise<boolean>): void {
    this.fail(this.inFlight.splice(0), label, reason, settled);
  }

  /** Requests that could not be sent (no connection to be had) fail the same way, in order. */
  private failQueued(label: string, reason: string): void {
    this.fail(this.queued.splice(0), label, reason, null);
  }

  /** `settled`: they reached memcached, which may run them, and it resolves once memcached has or never will, or was cut off (see retire). */
  private fail(failed: Slot<Part>[], label: string, reason: string, settled: Promise<boolean> | null): void {
    if (failed.length === 0) return;
    this.deps.log.debug(`upstream: ${label}: ${reason}`);
    this.deps.metrics.upstreamErrors.labels(label).inc(failed.length);
    let halfSent = false;
    for (const slot of failed) {
      this.abandon(slot, settled);
      halfSent ||= slot.started;
      if (halfSent) continue;
      const reply = slot.exchange.errorReply(label);
      slot.held = reply ? [reply] : [];
      slot.done = true;
      this.deps.metrics.commandCounts.add(this.dialect.name, slot.exchange.command, 'upstream_error');
    }
    if (halfSent) this.client.destroy();
    else this.deliver();
  }

  /**
   * A request whose reply will never be read. If it reached memcached, then
   * once memcached is done with its connection (`settled`), its writes are
   * read back and its flush checked, so that the peer gets whatever memcached
   * holds. Read earlier, memcached might run the request after the read. A
   * memcached cut off before it was done (stopped past the grace) may still
   * run it: then the key is read again once memcached answers again.
   */
  private abandon(slot: Slot<Part>, settled: Promise<boolean> | null): void {
    if (!settled) return this.ended(slot, false);
    void settled.then((ran) => {
      for (const key of slot.exchange.writeKeys) {
        this.deps.sink.written(ran ? { kind: 'readback', key, answered: false } : { kind: 'readback', key, answered: false, mayRunLater: true }, Date.now());
      }
      this.ended(slot, true);
    });
  }

  /** Pairs with the writing()/flushing() of admit. `unanswered`: it reached memcached, and its reply never came. */
  private ended(slot: Slot<Part>, unanswered = false): void {
    const { exchange } = slot;
    for (const key of exchange.writeKeys) this.deps.sink.writeEnded(key);
    slot.flushTurn?.ended(unanswered ? (exchange.flush ?? undefined) : undefined);
  }

  /** Tells replication which keys the request may write; a promise when it must wait (see WriteSink.writing). */
  private writing(keys: readonly Buffer[]): Promise<unknown> | null {
    if (keys.length === 1) return this.deps.sink.writing(keys[0], this);
    const waits = keys.map((key) => this.deps.sink.writing(key, this)).filter((wait) => wait !== null);
    return waits.length === 0 ? null : Promise.all(waits);
  }

  /**
   * memcached runs every request a client sent before it hung up (it reads
   * what arrived to the end before it sees the close), so the proxy sends
   * the ones still queued too, and reads every reply to learn which writes
   * took effect; then the connection goes back (afterReplies). Only a stream
   * (watch) is dropped: nobody would ever end it.
   */
  private onClientClosed(): void {
    this.clientGone = true;
    if (this.streaming) {
      this.releaseOwn(false);
      return;
    }
    for (const slot of this.queued.filter(({ exchange }) => exchange.streams)) {
      this.queued.splice(this.queued.indexOf(slot), 1);
      slot.done = true;
      this.abandon(slot, null);
    }
    this.own?.socket.resume(); // paused if the client had stopped reading
    this.afterReplies();
  }
}
