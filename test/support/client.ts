/** A raw byte-level client: tests see exactly the bytes a server sent. */
import * as net from 'node:net';

export class RawClient {
  /**
   * What arrived and was not taken yet: buffer[0, length). The buffer grows by
   * doubling; concatenating on every chunk made reading a reply of megabytes
   * quadratic, slow enough that a test reading two memcacheds at once read
   * the second seconds after the first (and saw its TTLs seconds lower).
   */
  private buffer = Buffer.alloc(0);
  private length = 0;
  private waiters: Array<() => void> = [];
  closed = false;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      if (this.length + chunk.length > this.buffer.length) {
        const grown = Buffer.allocUnsafe(Math.max(2 * this.buffer.length, this.length + chunk.length, 4096));
        this.buffer.copy(grown, 0, 0, this.length);
        this.buffer = grown;
      }
      chunk.copy(this.buffer, this.length);
      this.length += chunk.length;
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => {});
  }

  /** A TCP port on `host`, or a unix socket path. */
  static connect(port: number | string, host = '127.0.0.1', timeoutMs = 5000): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const connected = () => {
        clearTimeout(timer);
        resolve(new RawClient(socket));
      };
      const socket = typeof port === 'string' ? net.connect(port, connected) : net.connect(port, host, connected);
      // A listener that does not accept (a stopped process, a full backlog) would leave connect waiting on SYN retries for minutes.
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`no connection to ${host}:${port} within ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
    });
  }

  private wake(): void {
    for (const waiter of this.waiters.splice(0)) waiter();
  }

  send(bytes: Buffer | string): void {
    this.socket.write(typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes);
  }

  /** Waits until the received bytes satisfy `done` (or the socket closes / time runs out), then takes them all. */
  async read(done: (bytes: Buffer) => boolean, timeoutMs = 3000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (!done(this.received()) && !this.closed && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    const out = this.received();
    // The next bytes go to a new buffer: `out` keeps the old one.
    this.buffer = Buffer.alloc(0);
    this.length = 0;
    return out;
  }

  private received(): Buffer {
    return this.buffer.subarray(0, this.length);
  }

  /** Sends and reads until the reply ends with `terminator`. */
  async request(bytes: Buffer | string, terminator = '\r\n', timeoutMs = 3000): Promise<string> {
    this.send(bytes);
    const reply = await this.read((b) => b.toString('latin1').endsWith(terminator), timeoutMs);
    return reply.toString('latin1');
  }

  /** Reads whatever arrives within `ms` (for replies whose end is not known). */
  settle(ms: number): Promise<Buffer> {
    return this.read(() => false, ms);
  }

  close(): void {
    this.socket.destroy();
  }
}

/** A number from `stats` on `port` (a memcached's, or a memrepl's, which forwards it); throws if it is absent. */
export async function memcachedStat(port: number, name: string): Promise<number> {
  const client = await RawClient.connect(port);
  try {
    const match = new RegExp(`STAT ${name} (\\d+)\r\n`).exec(await client.request('stats\r\n', 'END\r\n'));
    if (!match) throw new Error(`no ${name} in the stats of port ${port}`);
    return Number(match[1]);
  } finally {
    client.close();
  }
}

/**
 * One client per port, each running `round` over and over until stop(),
 * which resolves with the rounds run in all (background load for a test).
 */
export function clientLoops(
  ports: number[],
  round: (client: RawClient, clientIndex: number, roundIndex: number) => Promise<void>,
): { stop(): Promise<number> } {
  let running = true;
  let rounds = 0;
  const loops = ports.map(async (port, n) => {
    const client = await RawClient.connect(port);
    try {
      for (let i = 0; running; i++) {
        await round(client, n, i);
        rounds++;
      }
    } finally {
      client.close();
    }
  });
  return {
    async stop() {
      running = false;
      await Promise.all(loops);
      return rounds;
    },
  };
}
