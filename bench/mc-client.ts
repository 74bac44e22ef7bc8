/**
 * Just enough of memcached's text protocol for the bench's own probes: one
 * connection, pipelined requests, replies matched to requests in order. Not
 * used for throughput figures (memcaslap does that); only for the replication
 * check and the paced load that measures replication lag.
 */
import * as net from 'node:net';

export type Reply = { kind: 'value'; data: Buffer; flags: number } | { kind: 'miss' } | { kind: 'line'; line: string };

export class McConnection {
  private readonly socket: net.Socket;
  private buffer: Buffer = Buffer.alloc(0);
  private readonly waiting: Array<{ resolve: (r: Reply) => void; reject: (e: Error) => void }> = [];
  private failure: Error | null = null;
  /** A get reply's VALUE line and data when the END has not arrived yet. */
  private pendingValue: { data: Buffer; flags: number } | null = null;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    const fail = (error: Error) => {
      this.failure ??= error;
      for (const w of this.waiting.splice(0)) w.reject(this.failure);
    };
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('connection closed')));
  }

  static connect(port: number, timeoutMs = 3000): Promise<McConnection> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1');
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`connect to 127.0.0.1:${port} timed out`));
      }, timeoutMs);
      socket.once('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
      socket.once('connect', () => {
        clearTimeout(timer);
        resolve(new McConnection(socket));
      });
    });
  }

  get inFlight(): number {
    return this.waiting.length;
  }

  /** Sends one request (without waiting for earlier replies) and resolves with its reply. */
  send(request: string | Buffer): Promise<Reply> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.socket.write(request);
    });
  }

  get(key: string): Promise<Reply> {
    return this.send(`get ${key}\r\n`);
  }

  set(key: string, value: Buffer | string, exptime = 0): Promise<Reply> {
    const data = typeof value === 'string' ? Buffer.from(value) : value;
    return this.send(Buffer.concat([Buffer.from(`set ${key} 0 ${exptime} ${data.length}\r\n`), data, Buffer.from('\r\n')]));
  }

  close(): void {
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    for (;;) {
      const eol = this.buffer.indexOf('\r\n');
      if (eol < 0) return;
      const line = this.buffer.subarray(0, eol).toString('latin1');
      if (line.startsWith('VALUE ')) {
        // VALUE <key> <flags> <bytes> [<cas>]
        const fields = line.split(' ');
        const bytes = Number(fields[3]);
        const end = eol + 2 + bytes + 2;
        if (this.buffer.length < end) return;
        this.pendingValue = { data: Buffer.from(this.buffer.subarray(eol + 2, eol + 2 + bytes)), flags: Number(fields[2]) };
        this.buffer = this.buffer.subarray(end);
        continue;
      }
      this.buffer = this.buffer.subarray(eol + 2);
      let reply: Reply;
      if (line === 'END') {
        reply = this.pendingValue ? { kind: 'value', ...this.pendingValue } : { kind: 'miss' };
        this.pendingValue = null;
      } else {
        reply = { kind: 'line', line };
      }
      this.waiting.shift()?.resolve(reply);
    }
  }
}

export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/**
 * `stats [group]` on a fresh connection: memcached's own (curr_items...) or,
 * on a memrepl client port, `stats replication`. Bounded in time.
 */
export function stats(port: number, group = '', timeoutMs = 3000): Promise<Map<string, string>> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let text = '';
    const timer = setTimeout(() => finish(new Error(`stats ${group} on 127.0.0.1:${port} timed out`)), timeoutMs);
    const finish = (error: Error | null) => {
      clearTimeout(timer);
      socket.destroy();
      if (error) return reject(error);
      const out = new Map<string, string>();
      for (const line of text.split('\r\n')) {
        const m = /^STAT (\S+) ?(.*)$/.exec(line);
        if (m) out.set(m[1], m[2]);
      }
      resolve(out);
    };
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      text += chunk;
      if (text.endsWith('END\r\n')) finish(null);
      else if (/(^|\r\n)(ERROR|CLIENT_ERROR|SERVER_ERROR)[^\r\n]*\r\n$/.test(text)) finish(new Error(`stats ${group}: ${text.trim().slice(-200)}`));
    });
    socket.on('error', (error) => finish(error));
    socket.on('close', () => finish(new Error(`stats ${group} on 127.0.0.1:${port}: connection closed`)));
    socket.on('connect', () => socket.write(`stats${group ? ` ${group}` : ''}\r\n`));
  });
}
