/**
 * Full resync, repcached's "marugoto": copy every item of the local memcached
 * to a peer that lost its data, without stopping traffic.
 *
 * The walk is `lru_crawler metadump all` on a connection of its own (memcached
 * refuses to pipeline anything else with it), each key is fetched with a
 * pipelined `mg <key> v f t` on a second connection, and sent as an `add`
 * record outside the numbered stream, interleaved with live records on the
 * same link. The peer stores a copy only if the key is absent and no newer
 * write of it is known there, so a key written or deleted live during the
 * copy keeps its live state (no stale overwrite, no resurrection).
 *
 * metadump is not a snapshot: an item that memcached's LRU maintainer moves
 * from one LRU queue to another while the crawler passes can be missed. So
 * the walk runs twice; the second pass sends only keys the first did not
 * (remembered as 32-bit hashes: a collision can only hide a key that both
 * passes would have to miss).
 *
 * Bounded: the walk is paused while too many keys wait to be fetched, fetches
 * stop while too many are in flight or the link pushes back, and an optional
 * rate limit keeps the sending memcached responsive to clients.
 */
import type * as net from 'node:net';
import type { Logger } from '../log';
import { metaKeyFits, metaRead } from '../protocol/text/serializer';
import { parseMetadumpLine, type DumpedItem } from '../protocol/text/metadump';
import { connect, type UpstreamAddress } from '../proxy/upstream';
import type { Hlc } from './hlc';
import { CHECKPOINT_KEY } from './inbox';
import type { Link } from './link';
import { LocalMemcached } from './local-memcached';
import { serializeRecord } from './frames/serializer';
import { recordFromReadBack } from './recorder';

export interface FullCopyOptions {
  /**
   * add: fill only what the peer lacks. set: the peer takes this node's value
   * for every key it does not remember writing since (see replicator.ts).
   */
  mode: 'add' | 'set';
  /** Items per second; 0 = as fast as the link takes them. */
  ratePerSecond: number;
  connectTimeoutMs: number;
  /** Fetches in flight at most, and their estimated bytes. */
  maxInFlight: number;
  maxInFlightBytes: number;
}

export interface FullCopyProgress {
  items: number;
  bytes: number;
  skipped: number;
}

/** Keys waiting between the walk and the fetches: the walk pauses above HIGH, resumes below LOW. */
const QUEUE_HIGH = 10_000;
const QUEUE_LOW = 1_000;
const CHECKPOINT = Buffer.from(CHECKPOINT_KEY);
const PASSES = 2;
const BUSY_RETRIES = 100;
const BUSY_RETRY_MS = 100;

/** FNV-1a, 32 bits: cheap enough to run on every walked key. */
function hashKey(key: Buffer): number {
  let h = 0x811c9dc5;
  for (const byte of key) h = Math.imul(h ^ byte, 0x01000193);
  return h >>> 0;
}

export class FullCopy {
  readonly progress: FullCopyProgress = { items: 0, bytes: 0, skipped: 0 };
  private walker: net.Socket | null = null;
  private readonly fetcher: LocalMemcached;
  private readonly queue: DumpedItem[] = [];
  private queueHead = 0;
  private walkDone = false;
  private pass = 1;
  private busyRetries = 0;
  /** Hashes of the keys sent so far (used by the second pass). */
  private readonly sent = new Set<number>();
  private inFlight = 0;
  private inFlightBytes = 0;
  private tokens = 0;
  private lastRefill = Date.now();
  private waitTimer: NodeJS.Timeout | null = null;
  private finished = false;
  private linkCorked = false;
  private settle!: { resolve: (p: FullCopyProgress) => void; reject: (e: Error) => void };

  constructor(
    private readonly upstream: UpstreamAddress,
    private readonly link: Link,
    /** Stamp of every copy: older than any write the receiver remembers. */
    private readonly stamp: Hlc,
    private readonly options: FullCopyOptions,
    private readonly log: Logger,
  ) {
    this.fetcher = new LocalMemcached(upstream, options.connectTimeoutMs);
  }

  /** Walks and sends everything; resolves when the last item is on the link. */
  run(): Promise<FullCopyProgress> {
    const done = new Promise<FullCopyProgress>((resolve, reject) => (this.settle = { resolve, reject }));
    this.startWalk().catch((error: Error) => this.fail(error));
    return done;
  }

  /** The link can take more bytes. */
  writable(): void {
    this.drive();
  }

  abort(reason: string): void {
    this.fail(new Error(reason));
  }

  private async startWalk(): Promise<void> {
    if (this.finished) return;
    const socket = await connect(this.upstream, this.options.connectTimeoutMs);
    if (this.finished) return void socket.destroy();
    this.walker = socket;
    let pending = '';
    /** This walk saw its END (the socket's close is then expected). */
    let ended = false;
    socket.on('data', (chunk: Buffer) => {
      pending += chunk.toString('latin1');
      let newline: number;
      while ((newline = pending.indexOf('\n')) !== -1) {
        const line = parseMetadumpLine(pending.slice(0, newline));
        pending = pending.slice(newline + 1);
        if (line.type === 'item') {
          if (!line.item.key.equals(CHECKPOINT) && !(this.pass > 1 && this.sent.has(hashKey(line.item.key)))) this.queue.push(line.item);
        } else if (line.type === 'end') {
          ended = true;
          this.walkDone = true;
          socket.destroy();
        } else if (line.message.startsWith('BUSY') && this.busyRetries++ < BUSY_RETRIES) {
          // The crawler is still finishing another walk (ours, or an operator's): try again shortly.
          ended = true;
          socket.destroy();
          setTimeout(() => this.startWalk().catch((error: Error) => this.fail(error)), BUSY_RETRY_MS).unref();
          return;
        } else {
          const hint = line.message.includes('not allowed') ? ' (memcached was started with -X: dumping disabled)' : '';
          this.fail(new Error(`memcached refused the walk: ${line.message}${hint}`));
          return;
        }
      }
      if (this.queue.length - this.queueHead > QUEUE_HIGH) socket.pause();
      this.drive();
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      if (!ended) this.fail(new Error('memcached closed the walk connection'));
    });
    socket.write('lru_crawler metadump all\r\n');
  }

  /** Starts as many fetches as the bounds allow. */
  private drive(): void {
    if (this.finished) return;
    while (this.queueHead < this.queue.length && this.inFlight < this.options.maxInFlight && this.inFlightBytes < this.options.maxInFlightBytes) {
      if (this.link.congested || !this.link.open) return;
      if (!this.takeToken()) return;
      const item = this.queue[this.queueHead++];
      if (!metaKeyFits(item.key)) {
        this.progress.skipped++;
        continue;
      }
      this.fetch(item);
    }
    this.compactQueue();
    if (this.walker?.isPaused() && this.queue.length - this.queueHead < QUEUE_LOW) this.walker.resume();
    if (this.walkDone && this.queueHead >= this.queue.length && this.inFlight === 0) {
      if (this.pass >= PASSES) return this.finish();
      this.pass++;
      this.walkDone = false;
      this.startWalk().catch((error: Error) => this.fail(error));
    }
  }

  private fetch(item: DumpedItem): void {
    this.inFlight++;
    this.inFlightBytes += item.size;
    this.fetcher.request(metaRead(item.key)).then(
      (parts) => {
        this.inFlight--;
        this.inFlightBytes -= item.size;
        const now = Date.now();
        // The remaining life counts from when memcached answered, not from when this callback ran.
        const record = recordFromReadBack(item.key, parts, { ...this.stamp, nodeId: '' }, this.fetcher.lastReceivedAt);
        // Gone since the walk saw it (expired, evicted, deleted): nothing to copy.
        if (record && record.op === 'set') {
          if (this.pass < PASSES) this.sent.add(hashKey(item.key));
          const frame = serializeRecord({ ...record, op: this.options.mode, seq: 0 }, now);
          this.batchLinkWrites();
          this.link.write(frame);
          this.progress.items++;
          this.progress.bytes += frame.length;
        } else {
          this.progress.skipped++;
        }
        this.drive();
      },
      (error: Error) => this.fail(new Error(`fetching items for the copy: ${error.message}`)),
    );
  }

  /** Frames of one tick (one reply chunk holds hundreds of items) leave in one write. */
  private batchLinkWrites(): void {
    if (this.linkCorked) return;
    this.linkCorked = true;
    const socket = this.link.socket;
    socket.cork();
    process.nextTick(() => {
      this.linkCorked = false;
      socket.uncork();
    });
  }

  /** Token bucket for ratePerSecond; schedules a retry when empty. */
  private takeToken(): boolean {
    const rate = this.options.ratePerSecond;
    if (rate <= 0) return true;
    const now = Date.now();
    this.tokens = Math.min(rate / 10, this.tokens + ((now - this.lastRefill) * rate) / 1000);
    this.lastRefill = now;
    if (this.tokens >= 1) {
      this.tokens--;
      return true;
    }
    if (!this.waitTimer) {
      this.waitTimer = setTimeout(() => {
        this.waitTimer = null;
        this.drive();
      }, Math.ceil(1000 / rate));
    }
    return false;
  }

  private compactQueue(): void {
    if (this.queueHead > 4096 && this.queueHead * 2 > this.queue.length) {
      this.queue.splice(0, this.queueHead);
      this.queueHead = 0;
    }
  }

  private finish(): void {
    if (this.finished) return;
    this.cleanup();
    this.settle.resolve(this.progress);
  }

  private fail(error: Error): void {
    if (this.finished) return;
    this.cleanup();
    this.log.debug(`replication: copy stopped: ${error.message}`);
    this.settle.reject(error);
  }

  private cleanup(): void {
    this.finished = true;
    if (this.waitTimer) clearTimeout(this.waitTimer);
    this.walker?.destroy();
    this.fetcher.close();
  }
}
