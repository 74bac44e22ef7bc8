/**
 * Dialling the peer given with -x, and dialling again after a failure or a
 * closed link: capped exponential backoff with jitter, so two nodes do not
 * retry in lockstep. The node given no -x never dials; it waits for the peer.
 */
import type * as net from 'node:net';
import type { Logger } from '../../log';
import { formatAddress, type UpstreamAddress } from '../../sockets';
import { dialReplication, type TlsMaterial } from './transport';

export interface PeerDialerOptions {
  peer: UpstreamAddress | null;
  connectTimeoutMs: number;
  tls: TlsMaterial | null;
  /** Backoff: first delay and cap. */
  backoffMinMs: number;
  backoffMaxMs: number;
}

export class PeerDialer {
  private dialing = false;
  private attempts = 0;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(
    /** Read at each dial: a reload may renew the TLS material. */
    private readonly options: () => PeerDialerOptions,
    /** Whether a link is up (no dialling then). */
    private readonly linked: () => boolean,
    /** A connection to the peer is open: `label` names the peer for the log. */
    private readonly connected: (socket: net.Socket, label: string) => void,
    private readonly log: Logger,
  ) {}

  /** Dials now, unless there is no peer to dial, a link is up, or a dial is under way or waiting. */
  dial(): void {
    const { peer, connectTimeoutMs, tls } = this.options();
    if (!peer || this.stopped || this.dialing || this.linked() || this.timer) return;
    this.dialing = true;
    const label = formatAddress(peer);
    dialReplication(peer, connectTimeoutMs, tls).then(
      (socket) => {
        this.dialing = false;
        if (this.stopped) return socket.destroy();
        this.log.info(`replication: connect (peer=${label})`);
        this.connected(socket, label);
      },
      (error: Error) => {
        this.dialing = false;
        this.log.debug(`replication: cannot connect to ${label}: ${error.message}`);
        this.later();
      },
    );
  }

  /** Dials after the next backoff delay (a failed dial, a closed link). */
  later(): void {
    const { peer, backoffMinMs, backoffMaxMs } = this.options();
    if (!peer || this.stopped || this.timer) return;
    const base = Math.min(backoffMaxMs, backoffMinMs * 2 ** Math.min(this.attempts, 20));
    this.attempts++;
    this.timer = setTimeout(
      () => {
        this.timer = null;
        this.dial();
      },
      base / 2 + Math.random() * (base / 2),
    );
    this.timer.unref();
  }

  /** A link is up: the next failure backs off from the first delay again. */
  succeeded(): void {
    this.attempts = 0;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
