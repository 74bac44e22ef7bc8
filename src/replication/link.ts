/**
 * One replication connection (port 11212): frames in and out, the handshake
 * deadline, heartbeats and the idle deadline. It knows nothing of records'
 * meaning; the node (replicator.ts) decides what to send and what to do with
 * what arrives.
 *
 * Anything the peer sends that is not a well-formed frame of our protocol
 * closes this link with a clear reason; the node keeps serving clients and
 * reconnects.
 */
import type * as net from 'node:net';
import type { Frame, Hello } from './frames/messages';
import { FrameError } from './frames/messages';
import { FrameParser } from './frames/parser';
import { ClockOffset } from './clock-offset';
import { serializeGoodbye, serializeHello, serializePing } from './frames/serializer';

export interface LinkTimings {
  handshakeTimeoutMs: number;
  /** Heartbeat period; also how often the deadlines are checked. */
  pingIntervalMs: number;
  /** No frame at all from the peer for this long: the link is dead. */
  idleTimeoutMs: number;
}

export interface LinkHandler {
  frame(link: Link, frame: Frame): void;
  /** The socket can take more bytes again. */
  writable(link: Link): void;
  closed(link: Link, reason: string, error: boolean): void;
}

export class Link {
  private readonly parser: FrameParser;
  private lastHeard = Date.now();
  private timer: NodeJS.Timeout;
  private closing = false;
  /** The peer's HELLO, once received. */
  peer: Hello | null = null;
  /** When the link opened (handshake completed), for logs and stats. */
  openedAt = 0;
  /** The peer's clock as seen through this link (from PING and RECORD timestamps). */
  readonly peerClock = new ClockOffset();

  constructor(
    readonly socket: net.Socket,
    /** Which side dialled: the deterministic tie-break when both nodes dial each other. */
    readonly dialled: boolean,
    readonly label: string,
    maxFrameBytes: number,
    private readonly timings: LinkTimings,
    private readonly handler: LinkHandler,
  ) {
    this.parser = new FrameParser({ maxFrameBytes });
    socket.setNoDelay(true);
    socket.on('data', (chunk) => this.receive(chunk));
    socket.on('drain', () => handler.writable(this));
    socket.on('error', (error) => this.close(error.message, true));
    socket.on('close', () => this.close('connection closed by peer', true));
    const startedAt = Date.now();
    this.timer = setInterval(() => this.tick(startedAt), timings.pingIntervalMs);
    this.timer.unref();
  }

  get open(): boolean {
    return !this.closing;
  }

  sendHello(hello: Hello): void {
    this.write(serializeHello(hello));
  }

  /** Writes bytes; false when the socket's buffer is full (wait for writable()). */
  write(bytes: Buffer): boolean {
    if (this.closing) return false;
    return this.socket.write(bytes);
  }

  get congested(): boolean {
    return this.socket.writableNeedDrain;
  }

  /** Says goodbye (so the peer logs why) and closes. */
  goodbye(reason: string, error = false): void {
    if (this.closing) return;
    this.socket.write(serializeGoodbye({ reason }));
    this.socket.end();
    this.close(reason, error);
  }

  close(reason: string, error: boolean): void {
    if (this.closing) return;
    this.closing = true;
    clearInterval(this.timer);
    this.socket.destroy();
    this.handler.closed(this, reason, error);
  }

  private receive(chunk: Buffer): void {
    this.lastHeard = Date.now();
    try {
      this.parser.push(chunk);
      let frame: Frame | null;
      while (!this.closing && (frame = this.parser.next()) !== null) {
        if (this.peer === null && frame.type !== 'hello') throw new FrameError('malformed', `expected HELLO first, got ${frame.type}`);
        if (frame.type === 'hello') {
          if (this.peer !== null) throw new FrameError('malformed', 'second HELLO on one link');
          this.peer = frame;
          this.openedAt = Date.now();
          if (frame.time !== undefined) this.peerClock.observe(frame.time, this.lastHeard);
        }
        if (frame.type === 'ping') this.peerClock.observe(frame.time, this.lastHeard);
        if (frame.type === 'record') this.peerClock.observe(frame.sentAt, this.lastHeard);
        this.handler.frame(this, frame);
      }
    } catch (error) {
      const reason = error instanceof FrameError ? `bad frame from peer: ${error.message}` : `replication error: ${(error as Error).message}`;
      this.goodbye(reason, true);
    }
  }

  private tick(startedAt: number): void {
    const now = Date.now();
    if (this.peer === null && now - startedAt > this.timings.handshakeTimeoutMs) {
      this.goodbye('handshake timed out', true);
      return;
    }
    if (now - this.lastHeard > this.timings.idleTimeoutMs) {
      this.close(`peer silent for ${now - this.lastHeard} ms`, true);
      return;
    }
    if (this.peer !== null && !this.congested) this.write(serializePing(now));
  }
}
