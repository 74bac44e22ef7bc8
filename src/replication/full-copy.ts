/**
 * Full resync, repcached's "marugoto": copy every item of the local memcached
 * to a peer that lost its data, without stopping traffic.
 *
 * The walk is `lru_crawler metadump all` on a connection of its own (memcached
 * refuses to pipeline anything else with it). Its keys are fetched on a
 * second connection in batches of quiet meta gets (`mg <key> v f t u k q`,
 * then `mn`): memcached answers hits only, each reply names its key, and the
 * MN closes the batch, so nothing is kept per item in flight. Keys no text
 * command can name (see binary-keys.ts) are fetched the same way in binary
 * (GetKQ, then NOOP) on a connection of their own, their remaining life taken
 * from the walk's line (binary replies do not tell it). Each hit is
 * written as a RECORD frame straight from the reply bytes into the buffer
 * that goes to the link (one write per reply chunk), outside the numbered
 * stream, interleaved with live records on the same link. The peer judges
 * each copy against the writes it knows of (see Applier.copyApplies), so a
 * key written or deleted live during the copy keeps its live state (no stale
 * overwrite, no resurrection). Items gone since the walk saw them (expired,
 * evicted, deleted) are simply not answered, and not copied.
 *
 * metadump is not a snapshot: an item that memcached's LRU maintainer moves
 * from one LRU queue to another while the crawler passes can be missed. So
 * the walk runs twice; the second pass sends only keys the first did not
 * (remembered in a Bloom filter of bounded size, see key-filter.ts).
 *
 * Bounded: the walk is paused while too many of its bytes wait to be read,
 * fetches stop while too many are in flight or the link pushes back, and an
 * optional rate limit keeps the sending memcached responsive to clients.
 */
import type * as net from 'node:net';
import type { Logger } from '../log';
import { newMetadumpLine, percentDecodeInto, scanMetadumpLine } from '../protocol/text/metadump';
import { MetaGetScanner, newFetchedValue } from '../protocol/text/meta-get-scanner';
import { copyRange } from '../protocol/bytes';
import { Status } from '../protocol/binary/messages';
import { META_BASE64_KEY_MAX, textSafeKey } from '../protocol/text/serializer';
import { connect, type UpstreamAddress } from '../proxy/upstream';
import { RECORD_KEY_MAX_LENGTH, RECORD_OP_CODES, recordFrameBytes, TTL_NEVER } from './frames/messages';
import { writeRecordFrame } from './frames/serializer';
import type { Hlc } from './hlc';
import { CHECKPOINT_KEY } from './inbox';
import { KeyFilter } from './key-filter';
import type { Link } from './link';
import { binaryFetch, flagsOf } from './binary-keys';
import { LocalMemcached, LocalMemcachedBinary } from './local-memcached';

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
  /** The largest frame the peer accepts (HELLO): a larger item is skipped, its memcached could not hold it. */
  peerMaxFrameBytes: number;
  /**
   * Local client writes: a mark taken when a batch of fetches leaves, and
   * whether a client of this node wrote a key after it. Such a write's own
   * record may leave before the copy record (replies arrive on different
   * connections), and a copy arriving after it would put the older value
   * back on the peer.
   */
  localWrites: { mark(): Hlc; writtenSince(key: Buffer, start: number, end: number, mark: Hlc): boolean };
}

export interface FullCopyProgress {
  items: number;
  bytes: number;
  skipped: number;
}

/** Walk bytes waiting to be read: the walk pauses above HIGH, resumes below LOW (~100 bytes a line). */
const WALK_HIGH = 1024 * 1024;
const WALK_LOW = 256 * 1024;
/** Buffers for fetch requests and for frames are carved from allocations of this size. */
const STAGING_BYTES = 256 * 1024;
/** The second pass's memory of the first, at most (see key-filter.ts). */
const FILTER_MAX_BYTES = 32 * 1024 * 1024;
/** Without a count from memcached, size the filter for this many keys. */
const FILTER_DEFAULT_KEYS = 1_000_000;
const CHECKPOINT = Buffer.from(CHECKPOINT_KEY);
const PASSES = 2;
const BUSY_RETRIES = 100;
const BUSY_RETRY_MS = 100;
const MG = Buffer.from('mg ');
const FETCH_FLAGS = Buffer.from(' v f t u k q\r\n');
const MN = Buffer.from('mn\r\n');
/** An mg line at most: a 250-byte key, or a 186-byte one in base64 with its opaque. */
const MG_LINE_MAX = 400;

/** One batch of fetches: its MN settles what was not answered (gone since the walk). */
interface FetchBatch {
  unanswered: number;
  bytes: number;
  /** Keys sent in base64 (bytes the text protocol cannot carry), by the opaque their reply names. */
  binaryKeys: Buffer[] | null;
  /** localWrites.mark() when the batch left. */
  mark: Hlc;
}

/** A key no text command can name, to fetch in binary, and its expiry as the walk read it (see MetadumpLine.exp). */
interface BinaryFetch {
  key: Buffer;
  exp: number | null;
}

/**
 * Bytes built for one socket in large allocations, handed out as slices. An
 * allocation is never reused (the socket may still hold a slice of it).
 */
class Staging {
  buf: Buffer = Buffer.alloc(0);
  used = 0;
  private from = 0;
  private ready: Buffer[] = [];

  /** Makes room for `n` more bytes at `used`. */
  ensure(n: number): void {
    if (this.buf.length - this.used >= n) return;
    if (this.used > this.from) this.ready.push(this.buf.subarray(this.from, this.used));
    this.buf = Buffer.allocUnsafe(Math.max(STAGING_BYTES, n));
    this.used = this.from = 0;
  }

  /** Everything written since the last take, or null. */
  take(): Buffer | null {
    if (this.used > this.from) this.ready.push(this.buf.subarray(this.from, this.used));
    this.from = this.used;
    if (this.ready.length === 0) return null;
    const out = this.ready.length === 1 ? this.ready[0] : Buffer.concat(this.ready);
    this.ready = [];
    return out;
  }
}

export class FullCopy {
  readonly progress: FullCopyProgress = { items: 0, bytes: 0, skipped: 0 };
  private walker: net.Socket | null = null;
  /** Walk bytes received and not read yet: chunks, reading from walkPos in the first. */
  private walkChunks: Buffer[] = [];
  private walkPos = 0;
  private walkBuffered = 0;
  private readonly line = newMetadumpLine();
  /** The buffer the last line was read from. */
  private lineBuf: Buffer = Buffer.alloc(0);
  private keyScratch = Buffer.allocUnsafe(256);
  private walkDone = false;
  private pass = 1;
  private busyRetries = 0;
  private fetcher: net.Socket | null = null;
  /** Fetches of keys no text command can name (see fetchBinary). */
  private binaryFetcher: LocalMemcachedBinary | null = null;
  private readonly scanner = new MetaGetScanner();
  private readonly fetched = newFetchedValue();
  private readonly batches: FetchBatch[] = [];
  private readonly requests = new Staging();
  private readonly frames = new Staging();
  private filter: KeyFilter | null = null;
  private inFlight = 0;
  private inFlightBytes = 0;
  private tokens = 0;
  private lastRefill = Date.now();
  private waitTimer: NodeJS.Timeout | null = null;
  private finished = false;
  private readonly opCode: number;
  private settle!: { resolve: (p: FullCopyProgress) => void; reject: (e: Error) => void };
  private readonly done: Promise<FullCopyProgress>;

  constructor(
    private readonly upstream: UpstreamAddress,
    private readonly link: Link,
    /** Stamp of every copy: older than any write the receiver remembers. */
    private readonly stamp: Hlc,
    private readonly options: FullCopyOptions,
    private readonly log: Logger,
  ) {
    this.opCode = RECORD_OP_CODES[options.mode];
    this.done = new Promise<FullCopyProgress>((resolve, reject) => (this.settle = { resolve, reject }));
    // Aborted before run(): the rejection waits for run()'s caller instead of going unhandled.
    this.done.catch(() => {});
  }

  /** Walks and sends everything; resolves when the last item is on the link (rejects at once if aborted already). */
  run(): Promise<FullCopyProgress> {
    if (!this.finished) this.start().catch((error: Error) => this.fail(error));
    return this.done;
  }

  /** The link can take more bytes. */
  writable(): void {
    this.drive();
  }

  abort(reason: string): void {
    this.fail(new Error(reason));
  }

  private async start(): Promise<void> {
    this.filter = new KeyFilter(Math.ceil((await this.cacheItems()) * 1.25), FILTER_MAX_BYTES);
    if (this.finished) return;
    const fetcher = await connect(this.upstream, this.options.connectTimeoutMs);
    if (this.finished) return void fetcher.destroy();
    this.fetcher = fetcher;
    fetcher.on('data', (chunk: Buffer) => this.received(chunk));
    fetcher.on('error', () => {});
    fetcher.on('close', () => this.fail(new Error('fetching items for the copy: memcached closed the connection')));
    this.binaryFetcher = new LocalMemcachedBinary(this.upstream, this.options.connectTimeoutMs);
    await this.startWalk();
  }

  /** How many items memcached holds now (to size the second pass's filter). */
  private async cacheItems(): Promise<number> {
    const connection = new LocalMemcached(this.upstream, this.options.connectTimeoutMs);
    try {
      const parts = await connection.request(Buffer.from('stats\r\n'));
      const line = parts.find((p) => p.line.startsWith('STAT curr_items '));
      const count = line ? Number(line.line.slice('STAT curr_items '.length)) : NaN;
      return Number.isSafeInteger(count) && count > 0 ? count : FILTER_DEFAULT_KEYS;
    } finally {
      connection.close();
    }
  }

  private async startWalk(): Promise<void> {
    if (this.finished) return;
    const socket = await connect(this.upstream, this.options.connectTimeoutMs);
    if (this.finished) return void socket.destroy();
    this.walker = socket;
    this.walkChunks = [];
    this.walkPos = 0;
    this.walkBuffered = 0;
    socket.on('data', (chunk: Buffer) => {
      if (this.walker !== socket) return;
      this.walkChunks.push(chunk);
      this.walkBuffered += chunk.length;
      if (this.walkBuffered > WALK_HIGH) socket.pause();
      this.drive();
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      // Closed by us after its END (or a BUSY), it is no longer the walker.
      if (this.walker === socket) this.fail(new Error('memcached closed the walk connection'));
    });
    socket.write('lru_crawler metadump all\r\n');
  }

  /** Reads the next complete line of the walk into `line` (from `lineBuf`); false until more bytes arrive. */
  private nextLine(): boolean {
    while (this.walkChunks.length > 0) {
      const chunk = this.walkChunks[0];
      const newline = chunk.indexOf(0x0a, this.walkPos);
      if (newline !== -1) {
        scanMetadumpLine(chunk, this.walkPos, newline, this.line);
        this.lineBuf = chunk;
        this.walkBuffered -= newline + 1 - this.walkPos;
        this.walkPos = newline + 1;
        if (this.walkPos >= chunk.length) {
          this.walkChunks.shift();
          this.walkPos = 0;
        }
        return true;
      }
      if (this.walkChunks.length < 2) return false;
      // The line goes on in the next chunk: join the two.
      this.walkChunks.splice(0, 2, Buffer.concat([chunk.subarray(this.walkPos), this.walkChunks[1]]));
      this.walkPos = 0;
    }
    return false;
  }

  /** Sends one batch of fetches, as large as the bounds allow, from the walk's next lines. */
  private drive(): void {
    const fetcher = this.fetcher;
    if (this.finished || !fetcher) return;
    const { maxInFlight, maxInFlightBytes } = this.options;
    const requests = this.requests;
    let count = 0;
    let bytes = 0;
    let binaryKeys: Buffer[] | null = null;
    let binaryFetches: BinaryFetch[] | null = null;
    let binaryBytes = 0;
    const fetches = () => count + (binaryFetches?.length ?? 0);
    while (this.inFlight + fetches() < maxInFlight && this.inFlightBytes + bytes + binaryBytes < maxInFlightBytes && this.link.open && !this.link.congested) {
      if (!this.tokenAvailable() || !this.nextLine()) break;
      const line = this.line;
      if (line.kind === 'end') {
        this.walkEnded();
        break;
      }
      if (line.kind === 'error') return this.walkRefused(line.message);
      let key = this.lineBuf;
      let start = line.keyStart;
      let end = line.keyEnd;
      let binary = false;
      if (line.encoded) {
        // Metadump lines are short: a scratch buffer holds any of their keys decoded.
        if (this.keyScratch.length < end - start) this.keyScratch = Buffer.allocUnsafe(end - start);
        const length = percentDecodeInto(key, start, end, this.keyScratch);
        if (length <= 0) return this.fail(new Error(`undecodable metadump line: ${key.toString('latin1', start, Math.min(end, start + 100))}`));
        [key, start, end] = [this.keyScratch, 0, length];
        binary = !textSafeKey(key, length);
      }
      if (end - start === CHECKPOINT.length && key.compare(CHECKPOINT, 0, CHECKPOINT.length, start, end) === 0) continue;
      if (this.pass > 1 && this.filter!.mayHave(key, start, end)) continue;
      this.tokens--;
      if (end - start > RECORD_KEY_MAX_LENGTH) {
        this.progress.skipped++;
        continue;
      }
      if (binary && end - start > META_BASE64_KEY_MAX) {
        (binaryFetches ??= []).push({ key: Buffer.from(key.subarray(start, end)), exp: line.exp });
        binaryBytes += line.size;
        continue;
      }
      requests.ensure(MG_LINE_MAX + MN.length);
      if (binary) {
        binaryKeys ??= [];
        const token = key.toString('base64', start, end);
        requests.used += requests.buf.write(`mg ${token} b v f t u O${binaryKeys.length} q\r\n`, requests.used, 'latin1');
        binaryKeys.push(Buffer.from(key.subarray(start, end)));
      } else {
        requests.used = copyRange(MG, 0, MG.length, requests.buf, requests.used);
        requests.used = copyRange(key, start, end, requests.buf, requests.used);
        requests.used = copyRange(FETCH_FLAGS, 0, FETCH_FLAGS.length, requests.buf, requests.used);
      }
      count++;
      bytes += line.size;
    }
    if (count > 0) {
      requests.used += MN.copy(requests.buf, requests.used);
      this.batches.push({ unanswered: count, bytes, binaryKeys, mark: this.options.localWrites.mark() });
      this.inFlight += count;
      this.inFlightBytes += bytes;
      fetcher.write(requests.take()!);
    }
    if (binaryFetches) this.fetchBinary(binaryFetches, binaryBytes);
    if (this.walker?.isPaused() && this.walkBuffered < WALK_LOW) this.walker.resume();
    this.checkDone();
  }

  /** A chunk of replies to the fetches: frames for the hits, one link write for all of them. */
  private received(chunk: Buffer): void {
    if (this.finished) return;
    // Remaining lives count from when memcached answered, not from when a busy event loop got here.
    const now = Date.now();
    this.scanner.push(chunk);
    try {
      for (let kind = this.scanner.next(this.fetched); kind !== null; kind = this.scanner.next(this.fetched)) {
        const batch = this.batches[0];
        if (!batch) throw new Error('memcached sent a reply nobody asked for');
        if (kind === 'value') this.copyFetched(batch, now);
        else if (kind === 'sentinel') this.batchDone();
        // 'other': an error for one fetch; its item counts as unanswered.
      }
    } catch (error) {
      return this.fail(new Error(`fetching items for the copy: ${(error as Error).message}`));
    }
    const frames = this.frames.take();
    if (frames) this.link.write(frames);
    this.drive();
  }

  /** One batch of binary fetches: GetKQ answers hits only, each with its place in `fetches` as its opaque. */
  private fetchBinary(fetches: BinaryFetch[], bytes: number): void {
    const mark = this.options.localWrites.mark();
    this.inFlight += fetches.length;
    this.inFlightBytes += bytes;
    const requests = Buffer.concat(fetches.map(({ key }, i) => binaryFetch(key, i)));
    this.binaryFetcher!.quietBatch(requests).then(
      (hits) => {
        if (this.finished) return;
        const now = Date.now();
        let answered = 0;
        for (const hit of hits) {
          const fetch = fetches[hit.header.opaque];
          // An error for one fetch leaves its item unanswered, as on the text path.
          if (!fetch || hit.header.status !== Status.Success) continue;
          answered++;
          const ttlMs = ttlFromWalk(fetch.exp, now);
          if (ttlMs === null) this.progress.skipped++;
          else this.copyItem(mark, fetch.key, 0, fetch.key.length, flagsOf(hit), ttlMs, now, hit.value, 0, hit.value.length);
        }
        this.inFlight -= fetches.length;
        this.inFlightBytes -= bytes;
        this.progress.skipped += fetches.length - answered;
        const frames = this.frames.take();
        if (frames) this.link.write(frames);
        this.drive();
      },
      (error: Error) => this.fail(new Error(`fetching items for the copy: ${error.message}`)),
    );
  }

  private copyFetched(batch: FetchBatch, now: number): void {
    const v = this.fetched;
    let key = v.buf;
    let start = v.keyStart;
    let end = v.keyEnd;
    if (v.opaque >= 0 && batch.binaryKeys && v.opaque < batch.binaryKeys.length) {
      key = batch.binaryKeys[v.opaque];
      [start, end] = [0, key.length];
    }
    // Answered means not missing: an answer without its key or fields is memcached misbehaving; skip it.
    if (end === start || v.flags < 0 || v.ttl === null || v.ttl < -1) return;
    batch.unanswered--;
    this.inFlight--;
    // memcached counts whole seconds on a clock that ticks once a second: the true
    // remaining life is anywhere in [t-1, t+1); aim at the middle, not the top.
    const ttlMs = v.ttl === -1 ? TTL_NEVER : Math.max(0, v.ttl * 1000 - 500);
    this.copyItem(batch.mark, key, start, end, v.flags, ttlMs, now, v.buf, v.valueStart, v.valueEnd);
  }

  /** A fetched item as a RECORD frame for the link, unless a local write since `mark` supersedes it or the peer could not hold it. */
  private copyItem(mark: Hlc, key: Buffer, start: number, end: number, flags: number, ttlMs: number, now: number, value: Buffer, valueStart: number, valueEnd: number): void {
    if (this.options.localWrites.writtenSince(key, start, end, mark)) {
      this.progress.skipped++; // the live record carries the newer state (and the second walk may look again)
      return;
    }
    if (this.pass < PASSES) this.filter!.add(key, start, end);
    const size = recordFrameBytes(end - start, valueEnd - valueStart);
    if (size > this.options.peerMaxFrameBytes) {
      this.progress.skipped++;
      return;
    }
    const frames = this.frames;
    frames.ensure(size);
    frames.used = writeRecordFrame(
      frames.buf, frames.used, 0, this.stamp.wall, this.stamp.logical, this.opCode, flags, ttlMs, 0, now,
      key, start, end, value, valueStart, valueEnd,
    );
    this.progress.items++;
    this.progress.bytes += size;
  }

  /** A batch's MN: what it did not answer is gone since the walk saw it (expired, evicted, deleted). */
  private batchDone(): void {
    const batch = this.batches.shift()!;
    this.inFlight -= batch.unanswered;
    this.inFlightBytes -= batch.bytes;
    this.progress.skipped += batch.unanswered;
  }

  private walkEnded(): void {
    this.walkDone = true;
    const walker = this.walker;
    this.walker = null;
    this.walkChunks = [];
    this.walkBuffered = 0;
    walker?.destroy();
  }

  private walkRefused(message: string): void {
    if (message.startsWith('BUSY') && this.busyRetries++ < BUSY_RETRIES) {
      // The crawler is still finishing another walk (ours, or an operator's): try again shortly.
      this.walkEnded();
      this.walkDone = false;
      setTimeout(() => this.startWalk().catch((error: Error) => this.fail(error)), BUSY_RETRY_MS).unref();
      return;
    }
    const hint = message.includes('not allowed') ? ' (memcached was started with -X: dumping disabled)' : '';
    this.fail(new Error(`memcached refused the walk: ${message}${hint}`));
  }

  private checkDone(): void {
    if (!this.walkDone || this.inFlight > 0 || this.batches.length > 0 || this.finished) return;
    if (this.pass >= PASSES) return this.finish();
    this.pass++;
    this.walkDone = false;
    this.startWalk().catch((error: Error) => this.fail(error));
  }

  /** Token bucket for ratePerSecond (a token is taken per fetch); schedules a retry when empty. */
  private tokenAvailable(): boolean {
    const rate = this.options.ratePerSecond;
    if (rate <= 0) return true;
    const now = Date.now();
    this.tokens = Math.min(rate / 10, this.tokens + ((now - this.lastRefill) * rate) / 1000);
    this.lastRefill = now;
    if (this.tokens >= 1) return true;
    if (!this.waitTimer) {
      this.waitTimer = setTimeout(() => {
        this.waitTimer = null;
        this.drive();
      }, Math.ceil(1000 / rate));
    }
    return false;
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
    const walker = this.walker;
    this.walker = null;
    walker?.destroy();
    this.fetcher?.destroy();
    this.binaryFetcher?.close();
  }
}

/**
 * A record's ttlMs from a walk line's exp (unix seconds on memcached's clock,
 * -1 for never), or null for an item dead by now or a line without exp.
 * memcached's clock ticks once a second: aim at the middle of the second, as
 * for mg's t.
 */
function ttlFromWalk(exp: number | null, now: number): number | null {
  if (exp === -1) return TTL_NEVER;
  if (exp === null) return null;
  const ttlMs = (exp - Math.floor(now / 1000)) * 1000 - 500;
  return ttlMs > 0 ? ttlMs : null;
}
