/**
 * A TCP relay between two replication ports, for fault tests: it can cut
 * every connection (mid-frame, at a random byte), stall traffic, or hold
 * what the dialled side sends for a while (a queue standing on the link).
 */
import * as net from 'node:net';

export class Relay {
  private readonly server: net.Server;
  private readonly pairs = new Set<[net.Socket, net.Socket]>();
  private stalled = false;
  /** How long bytes from the dialled side (the relay's target) are held before they go on. */
  private holdBackMs = 0;
  port = 0;

  constructor(targetPort: number) {
    this.server = net.createServer((inbound) => {
      const outbound = net.connect(targetPort, '127.0.0.1');
      const pair: [net.Socket, net.Socket] = [inbound, outbound];
      this.pairs.add(pair);
      const end = () => {
        inbound.destroy();
        outbound.destroy();
        this.pairs.delete(pair);
      };
      for (const [from, to] of [
        [inbound, outbound],
        [outbound, inbound],
      ] as const) {
        let lastRelease = 0;
        from.on('data', (chunk) => {
          if (this.stalled) from.pause();
          if (from !== outbound || this.holdBackMs === 0) return void to.write(chunk);
          // In order, each chunk at least holdBackMs after it came.
          lastRelease = Math.max(Date.now() + this.holdBackMs, lastRelease);
          setTimeout(() => to.write(chunk), lastRelease - Date.now());
        });
        from.on('error', end);
        from.on('close', end);
      }
    });
  }

  /** Listens on `port` (0: any free one), e.g. the port of a relay closed earlier, for a link that comes back. */
  start(port = 0): Promise<number> {
    return new Promise((resolve) => this.server.listen(port, '127.0.0.1', () => resolve((this.port = (this.server.address() as net.AddressInfo).port))));
  }

  /** Cuts every connection now (whatever frame is in flight is cut in the middle). */
  cutAll(): void {
    for (const [a, b] of this.pairs) {
      a.destroy();
      b.destroy();
    }
    this.pairs.clear();
  }

  get connections(): number {
    return this.pairs.size;
  }

  /** From now on, bytes the relay's target sends are held `ms` before they go on (0: at once again). */
  holdBack(ms: number): void {
    this.holdBackMs = ms;
  }

  /** Stops forwarding until resume(). */
  stall(): void {
    this.stalled = true;
    for (const [a, b] of this.pairs) {
      a.pause();
      b.pause();
    }
  }

  resume(): void {
    this.stalled = false;
    for (const [a, b] of this.pairs) {
      a.resume();
      b.resume();
    }
  }

  close(): void {
    this.cutAll();
    this.server.close();
  }
}

/**
 * A relay in front of memcached that, once muted, forwards the requests of
 * connections opened from then on but never their replies: memcached runs
 * them and the proxy never hears back, as when a memcached stalls right after
 * running a request. Connections open before (replication's own) are left
 * alone. Ends of stream pass both ways as they come, so a proxy that closes
 * its side learns when memcached has closed its own.
 */
/** Tracks a relayed connection's two sockets in `sockets`; when either closes, both go. */
function pairUp(sockets: Set<net.Socket>, inbound: net.Socket, outbound: net.Socket): void {
  for (const socket of [inbound, outbound]) {
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => {
      sockets.delete(socket);
      inbound.destroy();
      outbound.destroy();
    });
  }
}

export class MuteRelay {
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  private muted = false;
  port = 0;

  constructor(targetPort: number) {
    this.server = net.createServer({ allowHalfOpen: true }, (inbound) => {
      const outbound = net.connect({ port: targetPort, host: '127.0.0.1', allowHalfOpen: true });
      const mute = this.muted;
      pairUp(this.sockets, inbound, outbound);
      inbound.pipe(outbound);
      if (mute) outbound.on('data', () => {});
      else outbound.pipe(inbound);
      outbound.on('end', () => inbound.end());
    });
  }

  start(): Promise<number> {
    return new Promise((resolve) => this.server.listen(0, '127.0.0.1', () => resolve((this.port = (this.server.address() as net.AddressInfo).port))));
  }

  /** Connections opened from now on get no replies. */
  mute(): void {
    this.muted = true;
  }

  close(): void {
    for (const socket of this.sockets) socket.destroy();
    this.server.close();
  }
}

/**
 * A relay in front of memcached that, once told to die after some reply,
 * forwards replies until that one has gone to the proxy, then ends every
 * connection and takes no more: memcached as seen by a proxy when it dies
 * right after answering a write, before the proxy can read the item back.
 */
export class DyingRelay {
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  /** Once armed: the bytes that, in the replies forwarded since, end memcached's life. */
  private lastWords: string | null = null;
  private said = '';
  private dead = false;
  port = 0;

  constructor(targetPort: number) {
    this.server = net.createServer((inbound) => {
      if (this.dead) return void inbound.destroy();
      const outbound = net.connect(targetPort, '127.0.0.1');
      pairUp(this.sockets, inbound, outbound);
      inbound.on('data', (chunk: Buffer) => {
        if (!this.dead) outbound.write(chunk);
      });
      outbound.on('data', (chunk: Buffer) => {
        if (this.dead) return;
        inbound.write(chunk);
        if (this.lastWords === null) return;
        this.said += chunk.toString('latin1');
        if (this.said.includes(this.lastWords)) this.die();
      });
    });
  }

  start(): Promise<number> {
    return new Promise((resolve) => this.server.listen(0, '127.0.0.1', () => resolve((this.port = (this.server.address() as net.AddressInfo).port))));
  }

  /** memcached dies once replies sent from now on include `bytes`. */
  dieAfter(bytes: string): void {
    this.lastWords = bytes;
    this.said = '';
  }

  /** What was forwarded goes out first; then every connection ends, and new ones are refused. */
  private die(): void {
    this.dead = true;
    for (const socket of this.sockets) socket.end();
    this.server.close();
  }

  close(): void {
    for (const socket of this.sockets) socket.destroy();
    this.server.close();
  }
}
