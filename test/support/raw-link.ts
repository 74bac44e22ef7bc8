/** A replication link spoken by hand, for tests that play a peer (hostile or not). */
import * as net from 'node:net';
import type { Frame } from '../../src/replication/link/frames/messages';
import { FrameParser } from '../../src/replication/link/frames/parser';
import { sleep } from './ports';

/** One connection to a replication port: the test speaks frames by hand and sees every frame the node sends. */
export class RawLink {
  readonly frames: Frame[] = [];
  private isClosed = false;
  private readonly parser = new FrameParser({ maxFrameBytes: 1 << 20 });

  constructor(private readonly socket: net.Socket) {
    socket.on('data', (chunk) => {
      try {
        this.parser.push(chunk);
        for (let frame = this.parser.next(); frame !== null; frame = this.parser.next()) this.frames.push(frame);
      } catch {
        socket.destroy();
      }
    });
    socket.on('close', () => (this.isClosed = true));
    socket.on('error', () => {});
  }

  static open(port: number): Promise<RawLink> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1', () => resolve(new RawLink(socket)));
      socket.once('error', reject);
    });
  }

  send(...frames: Buffer[]): void {
    for (const bytes of frames) this.socket.write(bytes);
  }

  /** The first frame of `type` the node sent, waiting up to `timeoutMs`; null if none came. */
  async first<T extends Frame['type']>(type: T, timeoutMs: number): Promise<Extract<Frame, { type: T }> | null> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.frames.find((frame): frame is Extract<Frame, { type: T }> => frame.type === type);
      if (found) return found;
      if (this.isClosed || Date.now() > deadline) return null;
      await sleep(10);
    }
  }

  /** Waits until the node closes the connection, or `timeoutMs` passed. */
  async closed(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.isClosed && Date.now() < deadline) await sleep(10);
  }

  close(): void {
    this.socket.destroy();
  }
}
