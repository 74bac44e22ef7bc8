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
import type { AuthFrame, Frame, Hello, HelloFrame } from './frames/messages';
import { FrameError } from './frames/messages';
import { FrameParser } from './frames/parser';
import { ClockOffset } from './clock-offset';
import { serializeAuth, serializeGoodbye, serializeHello, serializePing } from './frames/serializer';
import { newNonce, proof, verify, type AuthStatement } from './link-auth';

export interface LinkTimings {
  handshakeTimeoutMs: number;
  /** Heartbeat period; also how often the deadlines are checked. */
  pingIntervalMs: number;
  /** No frame at all from the peer for this long: the link is dead. */
  idleTimeoutMs: number;
}

/** How long a link that said goodbye waits for the peer to close before dropping the connection. */
const GOODBYE_LINGER_MS = 1000;

/** The shared secret, when the link must be authenticated. */
export interface LinkAuth {
  secret: Buffer;
  cluster: string;
  nodeId: string;
}

/** A peer's HELLO that can take part in an authenticated handshake. */
type ProvableHello = HelloFrame & { nonce: string };

/** Why a link closed, as a bounded metric label; the reason's words are for the log. */
export type LinkCloseCode =
  | 'connection' // the socket closed or failed
  | 'auth_failed'
  | 'bad_frame'
  | 'cluster_mismatch'
  | 'own_id' // the peer has this node's id
  | 'handshake_timeout'
  | 'peer_silent'
  | 'out_of_sequence'
  | 'apply_failed' // a record could not be applied here
  | 'internal_error'
  | 'duplicate' // both nodes dialled: one link is kept
  | 'peer_goodbye' // the peer closed on purpose and said why
  | 'shutdown';

/** Closes that are part of normal operation, not errors of the link. */
const ROUTINE_CLOSES: ReadonlySet<LinkCloseCode> = new Set(['duplicate', 'peer_goodbye', 'shutdown']);

export function isLinkError(code: LinkCloseCode): boolean {
  return !ROUTINE_CLOSES.has(code);
}

export interface LinkHandler {
  frame(link: Link, frame: Frame): void;
  /** The socket can take more bytes again. */
  writable(link: Link): void;
  closed(link: Link, code: LinkCloseCode, reason: string): void;
}

export class Link {
  private readonly parser: FrameParser;
  private lastHeard = Date.now();
  private readingPaused = false;
  private timer: NodeJS.Timeout;
  private closing = false;
  /** The peer's HELLO, once received (and, with a secret, once the peer proved it). */
  peer: Hello | null = null;
  /** A HELLO received from a peer that has not proved the secret yet. */
  private unproven: ProvableHello | null = null;
  private readonly nonce = newNonce();
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
    private readonly auth: LinkAuth | null,
  ) {
    this.parser = new FrameParser({ maxFrameBytes });
    socket.setNoDelay(true);
    socket.on('data', (chunk) => this.receive(chunk));
    socket.on('drain', () => handler.writable(this));
    socket.on('error', (error) => this.close('connection', error.message));
    socket.on('close', () => this.close('connection', 'connection closed by peer'));
    const startedAt = Date.now();
    this.timer = setInterval(() => this.tick(startedAt), timings.pingIntervalMs);
    this.timer.unref();
  }

  get open(): boolean {
    return !this.closing;
  }

  sendHello(hello: Hello): void {
    this.write(serializeHello({ ...hello, nonce: this.nonce }));
  }

  /** Writes bytes; false when the socket's buffer is full (wait for writable()). */
  write(bytes: Buffer): boolean {
    if (this.closing) return false;
    return this.socket.write(bytes);
  }

  /**
   * Stops reading the peer's frames while this node cannot apply them as fast
   * as they come: TCP then holds the peer's sender back, and its backlog keeps
   * the rest. Silence is not held against the peer meanwhile.
   */
  pauseReading(): void {
    if (this.readingPaused) return;
    this.readingPaused = true;
    this.socket.pause();
  }

  resumeReading(): void {
    if (!this.readingPaused) return;
    this.readingPaused = false;
    this.lastHeard = Date.now();
    this.socket.resume();
  }

  get congested(): boolean {
    return this.socket.writableNeedDrain;
  }

  /** Says goodbye (so the peer logs why) and closes. */
  goodbye(code: LinkCloseCode, reason: string): void {
    if (this.closing) return;
    this.socket.write(serializeGoodbye({ reason }));
    // Half-close, and read (and drop) whatever the peer still sends until it closes too: a socket destroyed
    // with unread bytes is reset by the kernel, and the GOODBYE can be lost with it. Bounded by GOODBYE_LINGER_MS.
    this.socket.end();
    this.socket.resume();
    setTimeout(() => this.socket.destroy(), GOODBYE_LINGER_MS).unref();
    this.finishClose(code, reason);
  }

  close(code: LinkCloseCode, reason: string): void {
    if (this.closing) return;
    this.socket.destroy();
    this.finishClose(code, reason);
  }

  private finishClose(code: LinkCloseCode, reason: string): void {
    this.closing = true;
    clearInterval(this.timer);
    this.handler.closed(this, code, reason);
  }

  private receive(chunk: Buffer): void {
    this.lastHeard = Date.now();
    try {
      this.parser.push(chunk);
      let frame: Frame | null;
      while (!this.closing && (frame = this.parser.next()) !== null) {
        if (frame.type === 'hello' || frame.type === 'auth') {
          this.handshake(frame);
          continue;
        }
        if (this.peer === null) return this.beforeOpen(frame);
        if (frame.type === 'ping') {
          this.peerClock.observe(frame.time, this.lastHeard);
          if (frame.inboundMs !== undefined) this.peerClock.observePeer(frame.inboundMs);
        }
        if (frame.type === 'record') this.peerClock.observe(frame.sentAt, this.lastHeard);
        this.handler.frame(this, frame);
      }
    } catch (error) {
      if (error instanceof FrameError) this.goodbye('bad_frame', `bad frame from peer: ${error.message}`);
      else this.goodbye('internal_error', `replication error: ${(error as Error).message}`);
    }
  }

  /**
   * HELLO both ways, then (with a secret) the dialler's AUTH and, once that
   * checks out, the acceptor's: only then is the link open to the node.
   */
  private handshake(frame: HelloFrame | AuthFrame): void {
    if (frame.type === 'hello') return this.helloReceived(frame);
    return this.authReceived(frame);
  }

  private helloReceived(hello: HelloFrame): void {
    if (this.peer !== null || this.unproven !== null) throw new FrameError('malformed', 'second HELLO on one link');
    if (hello.time !== undefined) this.peerClock.observe(hello.time, this.lastHeard);
    if (!this.auth) return this.opened(hello);
    const { nonce } = hello;
    if (!nonce) return this.authFailed('the peer sent no nonce (no shared secret configured there?)');
    const provable = { ...hello, nonce };
    const refusal = this.refusal(provable, this.auth);
    if (refusal !== null) return this.authFailed(refusal);
    this.unproven = provable;
    // The acceptor answers only after the dialler's proof checked out, so a stranger who dials in obtains no proof.
    if (this.dialled) this.sendProof(provable, this.auth);
  }

  private authReceived(auth: AuthFrame): void {
    // Without a secret of our own there is nothing to check.
    if (!this.auth) return;
    const hello = this.unproven;
    if (!hello || this.peer !== null) throw new FrameError('malformed', 'AUTH out of place');
    if (!verify(this.auth.secret, auth.proof, this.peerStatement(hello, this.auth))) {
      return this.authFailed('authentication failed: wrong shared secret or a replayed handshake');
    }
    this.unproven = null;
    if (!this.dialled) this.sendProof(hello, this.auth);
    this.opened(hello);
  }

  /** Why a peer's HELLO cannot start an authenticated handshake, or null. */
  private refusal(hello: ProvableHello, auth: LinkAuth): string | null {
    // Either would mean the peer is replaying this node's own words at it.
    if (hello.nonce === this.nonce) return "authentication refused: the peer sent back this link's own nonce";
    if (hello.nodeId === auth.nodeId)
      return `authentication refused: the peer claims this node's own id "${auth.nodeId}" (a reflected handshake, or two nodes with one --node-id)`;
    return null;
  }

  private sendProof(hello: ProvableHello, auth: LinkAuth): void {
    this.write(serializeAuth({ proof: proof(auth.secret, this.ourStatement(hello, auth)) }));
  }

  /** What our proof vouches for: this node, on its side of this connection, to the peer of `hello`. */
  private ourStatement(hello: ProvableHello, auth: LinkAuth): AuthStatement {
    return {
      role: this.dialled ? 'dialler' : 'acceptor',
      cluster: auth.cluster,
      prover: { nodeId: auth.nodeId, nonce: this.nonce },
      verifier: { nodeId: hello.nodeId, nonce: hello.nonce },
    };
  }

  /**
   * What the peer's proof must vouch for. Its cluster is the one it claims:
   * a peer of another cluster that knows the secret is refused by name
   * (cluster mismatch) once the link opens, not as a wrong secret.
   */
  private peerStatement(hello: ProvableHello, auth: LinkAuth): AuthStatement {
    return {
      role: this.dialled ? 'acceptor' : 'dialler',
      cluster: hello.cluster,
      prover: { nodeId: hello.nodeId, nonce: hello.nonce },
      verifier: { nodeId: auth.nodeId, nonce: this.nonce },
    };
  }

  /** A frame other than HELLO or AUTH before the handshake completed. */
  private beforeOpen(frame: Frame): void {
    if (!this.unproven) throw new FrameError('malformed', `expected HELLO first, got ${frame.type}`);
    // A peer refusing our proof says why; its words are quoted (and cut short), as it has proved nothing.
    if (frame.type === 'goodbye') return this.close('auth_failed', `authentication failed: the peer refused: ${JSON.stringify(frame.reason.slice(0, 200))}`);
    this.authFailed('the peer sent data before proving the shared secret');
  }

  private opened(hello: HelloFrame): void {
    this.peer = hello;
    this.openedAt = Date.now();
    this.handler.frame(this, hello);
  }

  private authFailed(reason: string): void {
    this.goodbye('auth_failed', reason);
  }

  private tick(startedAt: number): void {
    const now = Date.now();
    if (this.peer === null && now - startedAt > this.timings.handshakeTimeoutMs) {
      this.goodbye('handshake_timeout', 'handshake timed out');
      return;
    }
    if (!this.readingPaused && now - this.lastHeard > this.timings.idleTimeoutMs) {
      this.close('peer_silent', `peer silent for ${now - this.lastHeard} ms`);
      return;
    }
    if (this.peer !== null && !this.congested) this.write(serializePing(now, this.peer.pingInbound ? (this.peerClock.inbound() ?? undefined) : undefined));
  }
}
