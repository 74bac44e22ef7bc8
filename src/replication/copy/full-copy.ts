/**
 * Full copy, repcached's "marugoto": copy every item of the local memcached
 * to a peer that lost its data, without stopping traffic.
 *
 * The walk is `lru_crawler metadump hash` on a connection of its own
 * (memcached refuses to pipeline anything else with it): it walks the hash
 * table, so it lists every item, also those clients are reading at that
 * instant, which `metadump all` (a walk of the LRUs) skips. memcached before
 * 1.6.9 refuses `hash`; the copy then walks with `all`, and says so.
 *
 * The walk is read as fast as memcached writes it: memcached 1.6.9 to 1.6.18
 * hold an item lock while they wait for a slow reader of a hash walk, which
 * stalls every client touching that lock; later versions hold off hash table
 * growth instead. Its keys wait in a spool (key-spool.ts) for the fetches,
 * which are paced. The spool is bounded: each walk takes only the keys whose
 * hash lies in its range; when the spool fills, the range shrinks and the
 * keys above it are dropped, and the next walk starts where this one's range
 * ended. Small caches take one walk.
 *
 * Fetches go on a second connection in batches of quiet meta gets
 * (`mg <key> v f t u c k q`, then `mn`): memcached answers hits only, each
 * reply names its key, and the MN closes the batch, so nothing is kept per
 * item in flight. Keys no text command can name (see binary-keys.ts) are
 * fetched the same way in binary (GetKQ, then NOOP) on a connection of their
 * own, their remaining life taken from the walk's line, which the spool keeps
 * for them (binary replies do not tell it). Each hit is written as a RECORD
 * frame straight from the reply bytes into the buffer that goes to the link
 * (one write per reply chunk), outside the numbered stream, interleaved with
 * live records on the same link. The peer judges each copy against the
 * writes it knows of (see Applier.copyApplies), so a key written or deleted
 * live during the copy keeps its live state (no stale overwrite, no
 * resurrection). Items gone since the walk saw them (expired, evicted,
 * deleted) are simply not answered, and not copied.
 *
 * Before it declares the copy complete, the copy checks itself: one more
 * walk must find no item older than the copy (its CAS is at most that of a
 * mark stored when the copy began) that the copy did not account for (sent,
 * or passed over on purpose; remembered in a Bloom filter, key-filter.ts).
 * What such a walk finds is sent, and the walk repeats, a bounded number of
 * times; then the copy fails (`incomplete`) and the replicator retries it.
 *
 * Every failure carries a reason code (FullCopyError), for the replicator's
 * retries and metrics.
 */
import type * as net from 'node:net';
import type { Logger } from '../../log';
import { metadumpRequest, newMetadumpLine, percentDecodeInto, scanMetadumpFields, scanMetadumpKey, walkRefusal } from '../../protocol/text/metadump';
import { MetaGetScanner, newFetchedValue } from '../../protocol/text/meta-get-scanner';
import { TailCarry } from '../../protocol/tail-carry';
import { FetchPace } from './fetch-pace';
import type { LatencyCounts } from '../../proxy/client-latency';
import { Staging } from './staging';
import { Opcode, Status, type BinaryPacket } from '../../protocol/binary/messages';
import { remainingLifeMs } from '../../protocol/text/expiry';
import { parseMetaHeader } from '../../protocol/text/meta-header';
import {
  META_FETCH_BYTES_MAX,
  metaDelete,
  metaInvalidate,
  metaReadCas,
  metaSet,
  SENTINEL,
  textSafeKey,
  writeMetaFetch,
  writeMetaFetchBase64,
} from '../../protocol/text/serializer';
import { parseStats, STATS_REQUEST } from '../../protocol/text/stats';
import { connect, type UpstreamAddress } from '../../sockets';
import { RECORD_KEY_MAX_LENGTH, RECORD_OP_CODES, recordFrameBytes, TTL_NEVER } from '../link/frames/messages';
import { newRecordFrameFields, releaseRecordFrameFields, writeRecordFrame, type RecordFrameFields } from '../link/frames/serializer';
import { HLC_ZERO, type Hlc } from '../conflict/hlc';
import { KeyFilter } from './key-filter';
import { keyHash, randomSeed } from '../conflict/key-hash';
import { binaryFetch, flagsOf, needsBinary } from '../binary-keys';
import { type FetchBy, KeySpool, newSpooledKey } from './key-spool';
import type { Link } from '../link/link';
import { LocalMemcached, LocalMemcachedBinary } from '../local-memcached';

export interface FullCopyOptions {
  /**
   * add: fill only what the peer lacks. set: the peer takes this node's value
   * for every key it does not remember writing since (see replicator.ts).
   */
  mode: 'add' | 'set';
  /** Items per second at most; 0 = no cap (see fetch-pace.ts). */
  ratePerSecond: number;
  /** This node's client latency: with it, the copy paces itself by it (see fetch-pace.ts). */
  clientLatency?: () => LatencyCounts;
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
  localWrites: {
    mark(): Hlc;
    writtenSince(key: Buffer, start: number, end: number, mark: Hlc): boolean;
    /** The stamp of the last write of the key this node remembers (its clients' or the peer's), if any. */
    stampOf(key: Buffer, start: number, end: number): Readonly<Hlc> | undefined;
    /** The stamp of an item whose last write is not remembered, as of a fetch leaving (see FlushSchedule.survivorStamp). */
    survivorStamp(): Hlc;
  };
  /** Keys spooled between the walk and the fetches, in bytes at most (tests make it small). */
  spoolMaxBytes?: number;
}

export interface FullCopyProgress {
  items: number;
  bytes: number;
  skipped: number;
  /** Walks of the cache so far (range walks and checks). */
  walks: number;
  /** Keys a check found that the walks before it had not sent. */
  repaired: number;
}

/** Why a copy stopped: metric labels and the replicator's decisions. */
export type FullCopyFailure =
  | 'aborted' // the replicator stopped it (link closed, new request, shutdown): not a failure of the copy
  | 'dump_disabled' // memcached -X: no copy can ever be made from this node
  | 'crawler_busy' // memcached's crawler stayed busy with another walk
  | 'walk_refused' // memcached answered the walk with an error
  | 'walk_closed' // memcached closed the walk's connection
  | 'bad_walk_line' // a walk line that cannot be read
  | 'fetch_failed' // the fetching connection closed or answered nonsense
  | 'memcached_unreachable'
  | 'incomplete'; // checks kept finding items the copy had not sent

export class FullCopyError extends Error {
  constructor(
    readonly reason: FullCopyFailure,
    message: string,
  ) {
    super(message);
  }
}

/** The keys waiting between the walk and the fetches, at most (~400k keys of 32 bytes). */
const SPOOL_MAX_BYTES = 16 * 1024 * 1024;
/** The checks' memory of what was sent, at most (see key-filter.ts). */
const FILTER_MAX_BYTES = 32 * 1024 * 1024;
/** Without a count from memcached, size the filter for this many keys. */
const FILTER_DEFAULT_KEYS = 1_000_000;
const HASH_SPACE = 2 ** 32;
/** Checks after the range walks: each must find nothing, or sends what it found and the next looks again. */
const CHECKS = 3;
/** An item expiring within this many seconds of a check is not asked for: the peer would not keep it either. */
const EXPIRY_SLACK_S = 2;
/** Stored when the copy begins, to learn memcached's CAS counter (see the header); deleted at once. */
const MARK = Buffer.from('memrepl:copy-mark');
/** How long the copy waits for memcached's crawler to finish another walk, and how often it asks. */
const BUSY_PATIENCE_MS = 10_000;
const BUSY_RETRY_MS = 100;
/** memcached writes metadump lines of at most 4 KiB: a longer one means the stream is broken. */
const WALK_LINE_MAX = 8 * 1024;
/** The mark's value: one byte, never read. */
const MARK_VALUE = Buffer.from('-');

/** One batch of fetches: its MN settles what was not answered (gone since the walk). */
interface FetchBatch {
  unanswered: number;
  bytes: number;
  /** Keys sent in base64 (bytes the text protocol cannot carry), by the opaque their reply names. */
  base64Keys: Buffer[] | null;
  /** localWrites.mark() and localWrites.survivorStamp() when the batch left. */
  mark: Hlc;
  survivor: Hlc;
}

/** A key no text command can name, fetched in binary, and its expiry as the walk read it (unix seconds, -1 never). */
interface BinaryFetch {
  key: Buffer;
  exp: number;
}

/** What the current walk takes: the keys whose hash is in a range, or (a check) what the copy has not accounted for. */
type Pass = RangePass | { kind: 'check'; round: number; found: number };

/**
 * Keys whose hash is in [lo, hi). hi shrinks when the spool fills. Until the
 * range is sized (shrunk once, or sized from an earlier walk) nothing is
 * fetched: a key fetched and then dropped from the range is sent again by the
 * next walk.
 */
interface RangePass {
  kind: 'range';
  lo: number;
  hi: number;
  sized: boolean;
  /** Items the walk listed so far, in the range or not. */
  listed: number;
  /** Spool bytes of the keys it took in the range. */
  bytes: number;
}

/** The part of the spool a range is sized to fill, so that an estimate a little short does not overflow it. */
const RANGE_FILL = 0.7;

function rangePass(lo: number, hi: number, sized: boolean): RangePass {
  return { kind: 'range', lo, hi, sized, listed: 0, bytes: 0 };
}

export class FullCopy {
  readonly progress: FullCopyProgress = { items: 0, bytes: 0, skipped: 0, walks: 0, repaired: 0 };
  private walker: net.Socket | null = null;
  /** The start of a walk line whose end has not arrived yet. */
  private readonly walkReader = new TailCarry();
  private readonly line = newMetadumpLine();
  private keyScratch = Buffer.allocUnsafe(256);
  private walkDone = false;
  private walkMode: 'hash' | 'all' = 'hash';
  private pass: Pass = rangePass(0, HASH_SPACE, false);
  /** memcached's item count when the copy began (to size the ranges). */
  private cacheItems = 0;
  private readonly hashSeed = randomSeed();
  private readonly spool = new KeySpool();
  private readonly spoolMaxBytes: number;
  private readonly spooled = newSpooledKey();
  /** memcached's CAS counter when the copy began (0: memcached runs with -C, and the copy cannot check itself). */
  private markCas = 0;
  /** When the crawler first answered BUSY to this walk (0: it did not). */
  private busySince = 0;
  private fetcher: net.Socket | null = null;
  /** Fetches of keys no text command can name (see fetchBinary); it connects on its first batch. */
  private binaryFetcher: LocalMemcachedBinary | null = null;
  /** For giving back recache tokens (see giveBackToken), opened on the first. */
  private tokenConnection: LocalMemcached | null = null;
  private tokenRequests: Promise<unknown> = Promise.resolve();
  /** localWrites.mark() when the current walk began: every spooled key was read from that walk, after it. */
  private walkMark: Hlc = HLC_ZERO;
  private readonly scanner = new MetaGetScanner();
  private readonly fetched = newFetchedValue();
  private readonly batches: FetchBatch[] = [];
  private readonly requests = new Staging();
  private readonly frames = new Staging();
  /** Every key the copy accounted for: sent, or passed over on purpose. */
  private accounted: KeyFilter | null = null;
  private inFlight = 0;
  private inFlightBytes = 0;
  private readonly pace: FetchPace;
  private finished = false;
  /** One object, refilled for every item copied: a copy allocates nothing per item for its frames. */
  private readonly frameFields: RecordFrameFields = newRecordFrameFields();
  /** The op of every item this copy sends (its mode), but a stale one's in a set-mode copy. */
  private readonly modeOpCode: number;
  private settle!: { resolve: (p: FullCopyProgress) => void; reject: (e: FullCopyError) => void };
  private readonly done: Promise<FullCopyProgress>;

  constructor(
    private readonly upstream: UpstreamAddress,
    private readonly link: Link,
    private readonly options: FullCopyOptions,
    private readonly log: Logger,
  ) {
    // Copies are outside the numbered stream (seq 0) and are no flushes (delay 0); each item fills in the rest.
    this.frameFields.seq = 0;
    this.frameFields.delay = 0;
    this.modeOpCode = RECORD_OP_CODES[options.mode];
    this.spoolMaxBytes = options.spoolMaxBytes ?? SPOOL_MAX_BYTES;
    this.pace = new FetchPace({ cap: options.ratePerSecond, clientLatency: options.clientLatency }, () => this.drive());
    this.done = new Promise<FullCopyProgress>((resolve, reject) => (this.settle = { resolve, reject }));
    // Aborted before run(): the rejection waits for run()'s caller instead of going unhandled.
    this.done.catch(() => {});
  }

  /** Walks and sends everything; resolves when the last item is on the link; rejects with a FullCopyError. */
  run(): Promise<FullCopyProgress> {
    if (!this.finished) this.start().catch((error: Error) => this.fail('memcached_unreachable', error.message));
    return this.done;
  }

  /** The link can take more bytes. */
  writable(): void {
    this.drive();
  }

  abort(reason: string): void {
    this.fail('aborted', reason);
  }

  private async start(): Promise<void> {
    this.cacheItems = await this.begin();
    this.accounted = new KeyFilter(Math.ceil(Math.max(1, this.cacheItems) * 1.25), FILTER_MAX_BYTES);
    if (this.finished) return;
    const fetcher = await connect(this.upstream, this.options.connectTimeoutMs);
    if (this.finished) return void fetcher.destroy();
    this.fetcher = fetcher;
    fetcher.on('data', (chunk: Buffer) => this.received(chunk));
    fetcher.on('error', () => {});
    fetcher.on('close', () => this.fail('fetch_failed', 'fetching items for the copy: memcached closed the connection'));
    this.binaryFetcher = new LocalMemcachedBinary(this.upstream, this.options.connectTimeoutMs);
    await this.startWalk();
  }

  /**
   * How many items memcached holds (to size the filter and the ranges), and its CAS counter
   * now: an item whose CAS is higher was written after this, and its own
   * record (a local client's, or the peer's) carries it.
   */
  private async begin(): Promise<number> {
    const connection = new LocalMemcached(this.upstream, this.options.connectTimeoutMs);
    try {
      const count = Number(parseStats(await connection.request(STATS_REQUEST)).get('curr_items'));
      this.markCas = await this.casNow(connection);
      return Number.isSafeInteger(count) && count >= 0 ? count : FILTER_DEFAULT_KEYS;
    } finally {
      connection.close();
    }
  }

  /** Stores the mark and reads its CAS, then deletes it; 0 (and says why) if that cannot be done. */
  private async casNow(connection: LocalMemcached): Promise<number> {
    const storeReply = await connection.request(metaSet(MARK, MARK_VALUE, { clientFlags: null, exptime: 10, mode: null, quiet: false }));
    const storeAnswer = storeReply[storeReply.length - 1];
    const stored = storeAnswer !== undefined && parseMetaHeader(storeAnswer.raw).status === 'HD';
    const [reply] = stored ? await connection.request(metaReadCas(MARK)) : [];
    await connection.quietBatch(metaDelete(MARK, true));
    const cas = reply ? Math.max(0, parseMetaHeader(reply.raw).cas) : 0;
    if (cas === 0) {
      const why = stored ? 'memcached gives items no CAS (-C)' : `memcached refused to store its mark (${storeAnswer?.line ?? ''})`;
      this.log.warn(`replication: the full copy cannot check that it sent everything: ${why}`);
    }
    return cas;
  }

  private async startWalk(): Promise<void> {
    if (this.finished) return;
    const socket = await connect(this.upstream, this.options.connectTimeoutMs);
    if (this.finished) return void socket.destroy();
    this.walker = socket;
    this.walkReader.clear();
    this.walkDone = false;
    this.walkMark = this.options.localWrites.mark();
    socket.on('data', (chunk: Buffer) => {
      if (this.walker === socket) this.walkData(chunk);
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      // Closed by us after its END (or a BUSY), it is no longer the walker.
      if (this.walker === socket) this.fail('walk_closed', 'memcached closed the walk connection');
    });
    socket.write(metadumpRequest(this.walkMode));
  }

  /** A chunk of the walk: every complete line is taken at once (the walk is never paused, see the header). */
  private walkData(chunk: Buffer): void {
    const walk = this.walkReader;
    walk.push(chunk);
    const { buf } = walk;
    for (let newline = buf.indexOf(0x0a, walk.pos); newline !== -1; newline = buf.indexOf(0x0a, walk.pos)) {
      const start = walk.pos;
      walk.pos = newline + 1;
      if (!this.walkLine(buf, start, newline)) return;
    }
    if (walk.buffered > WALK_LINE_MAX) return this.fail('bad_walk_line', 'a metadump line without its end');
    this.drive();
  }

  /** One line of the walk; false once the walk is over (ended, refused, failed). */
  private walkLine(buf: Buffer, start: number, end: number): boolean {
    const line = this.line;
    if (!scanMetadumpKey(buf, start, end, line)) {
      if (line.kind === 'end') {
        this.walkEnded();
        this.drive();
      } else {
        this.walkRefused(line.message);
      }
      return false;
    }
    const pass = this.pass;
    let hash = 0;
    if (pass.kind === 'range') {
      // Most lines of a range walk are outside its range: they cost a hash of the key as memcached wrote it, no more.
      pass.listed++;
      hash = keyHash(buf, line.keyEnd - line.keyStart, this.hashSeed, line.keyStart);
      if (hash < pass.lo || hash >= pass.hi) return true;
    }
    scanMetadumpFields(buf, end, line);
    if (this.keyScratch.length < line.keyEnd - line.keyStart) this.keyScratch = Buffer.allocUnsafe(line.keyEnd - line.keyStart);
    const key = this.keyScratch;
    const length = percentDecodeInto(buf, line.keyStart, line.keyEnd, key);
    if (length <= 0) {
      this.fail('bad_walk_line', `undecodable metadump line: ${buf.toString('latin1', start, Math.min(end, start + 100))}`);
      return false;
    }
    if (isOwnKey(key, length)) return true;
    if (pass.kind === 'range') this.takeInRange(pass, key, length, hash);
    else this.takeUnaccounted(pass, key, length);
    return true;
  }

  private takeInRange(pass: RangePass, key: Buffer, length: number, hash: number): void {
    const before = this.spool.bytes;
    this.spoolKey(key, length, hash);
    pass.bytes += this.spool.bytes - before;
    if (this.spool.bytes > this.spoolMaxBytes) this.narrow(pass);
  }

  /**
   * Too many keys wait: this walk keeps the lower part of its range, sized
   * from how many keys its part of the walk so far brought, and the next walk
   * takes the rest.
   */
  private narrow(pass: RangePass): void {
    const expected = pass.bytes * Math.max(1, this.cacheItems / Math.max(1, pass.listed));
    let hi = pass.lo + Math.max(1, Math.floor((pass.hi - pass.lo) * Math.min(1, (RANGE_FILL * this.spoolMaxBytes) / expected)));
    for (;;) {
      pass.hi = hi;
      const before = this.spool.bytes;
      this.spool.dropFrom(hi);
      pass.bytes -= before - this.spool.bytes;
      // An estimate short of the mark: halve until the spool is within bounds.
      if (this.spool.bytes <= this.spoolMaxBytes || hi - pass.lo <= 1) break;
      hi = pass.lo + Math.floor((hi - pass.lo) / 2);
    }
    pass.sized = true;
  }

  /** A check: an item older than the copy that the copy did not account for was missed; send it now. */
  private takeUnaccounted(pass: { found: number }, key: Buffer, length: number): void {
    const line = this.line;
    if (line.cas > this.markCas || this.accounted!.mayHave(key, 0, length)) return;
    if (line.exp !== -1 && line.exp * 1000 <= Date.now() + EXPIRY_SLACK_S * 1000) return;
    pass.found++;
    // Past the bound, the next check finds it again.
    if (this.spool.bytes < this.spoolMaxBytes) this.spoolKey(key, length, 0);
  }

  private spoolKey(key: Buffer, length: number, hash: number): void {
    if (length > RECORD_KEY_MAX_LENGTH) {
      this.progress.skipped++;
      this.accounted!.add(key, 0, length);
      return;
    }
    this.spool.push(hash, this.line.size, key, 0, length, fetchBy(this.line.encoded, key, length), this.line.exp);
  }

  /** Sends one batch of fetches, as large as the bounds allow, from the spooled keys. */
  private drive(): void {
    const fetcher = this.fetcher;
    if (this.finished || !fetcher) return;
    const { maxInFlight, maxInFlightBytes } = this.options;
    if (this.pass.kind === 'range' && !this.pass.sized && !this.walkDone) return;
    const requests = this.requests;
    const entry = this.spooled;
    let count = 0;
    let bytes = 0;
    let base64Keys: Buffer[] | null = null;
    let binaryFetches: BinaryFetch[] | null = null;
    let binaryBytes = 0;
    const fetches = () => count + (binaryFetches?.length ?? 0);
    while (this.inFlight + fetches() < maxInFlight && this.inFlightBytes + bytes + binaryBytes < maxInFlightBytes && this.link.open && !this.link.congested) {
      if (this.spool.count === 0 || !this.pace.take() || !this.spool.shift(entry)) break;
      if (entry.by === 'binary') {
        (binaryFetches ??= []).push({ key: Buffer.from(entry.buf.subarray(entry.start, entry.end)), exp: entry.exp });
        binaryBytes += entry.size;
        continue;
      }
      requests.ensure(META_FETCH_BYTES_MAX + SENTINEL.length);
      if (entry.by === 'base64') {
        base64Keys ??= [];
        requests.used = writeMetaFetchBase64(requests.buf, requests.used, entry.buf, entry.start, entry.end, base64Keys.length);
        base64Keys.push(Buffer.from(entry.buf.subarray(entry.start, entry.end)));
      } else {
        requests.used = writeMetaFetch(requests.buf, requests.used, entry.buf, entry.start, entry.end);
      }
      count++;
      bytes += entry.size;
    }
    if (count > 0) {
      requests.used += SENTINEL.copy(requests.buf, requests.used);
      this.batches.push({ unanswered: count, bytes, base64Keys, mark: this.options.localWrites.mark(), survivor: this.options.localWrites.survivorStamp() });
      this.inFlight += count;
      this.inFlightBytes += bytes;
      fetcher.write(requests.take()!);
    }
    if (binaryFetches) this.fetchBinary(binaryFetches, binaryBytes);
    this.checkDone();
  }

  /**
   * One batch of binary fetches: GetKQ answers hits only, each with its place
   * in `fetches` as its opaque; the NOOP closes the batch. Their expiry is the
   * walk's, so a local write since the walk (not only since the fetch) makes
   * the copy stale: the live record of that write carries value and expiry.
   */
  private fetchBinary(fetches: BinaryFetch[], bytes: number): void {
    const mark = this.walkMark;
    const survivor = this.options.localWrites.survivorStamp();
    this.inFlight += fetches.length;
    this.inFlightBytes += bytes;
    const requests = Buffer.concat(fetches.map(({ key }, i) => binaryFetch(key, i)));
    const fetcher = this.binaryFetcher!;
    fetcher.quietBatch(requests).then(
      (hits) => this.binaryFetched(fetches, bytes, mark, survivor, hits, fetcher.lastReceivedAt),
      (error: Error) => this.fail('fetch_failed', `fetching items for the copy in binary: ${error.message}`),
    );
  }

  /** A binary batch's hits as frames; what it did not answer is gone since the walk saw it, as on the text path. */
  private binaryFetched(fetches: BinaryFetch[], bytes: number, mark: Hlc, survivor: Hlc, hits: BinaryPacket[], now: number): void {
    if (this.finished) return;
    let answered = 0;
    for (const hit of hits) {
      const fetch = fetches[hit.header.opaque];
      // An error for one fetch leaves its item unanswered, as on the text path.
      if (!fetch || hit.header.opcode !== Opcode.GetKQ || hit.header.status !== Status.Success) continue;
      answered++;
      const ttlMs = ttlFromWalk(fetch.exp, now);
      if (ttlMs === null) {
        // Dead by now: the check passes over it too (see takeUnaccounted).
        this.accounted!.add(fetch.key, 0, fetch.key.length);
        this.progress.skipped++;
      } else {
        this.frameFields.opCode = this.modeOpCode;
        this.copyItem(mark, survivor, fetch.key, 0, fetch.key.length, flagsOf(hit), ttlMs, now, hit.value, 0, hit.value.length);
      }
    }
    this.inFlight -= fetches.length;
    this.inFlightBytes -= bytes;
    this.progress.skipped += fetches.length - answered;
    const frames = this.frames.take();
    if (frames) this.link.write(frames);
    this.drive();
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
      return this.fail('fetch_failed', `fetching items for the copy: ${(error as Error).message}`);
    }
    const frames = this.frames.take();
    if (frames) this.link.write(frames);
    this.drive();
  }

  private copyFetched(batch: FetchBatch, now: number): void {
    const v = this.fetched;
    let key = v.buf;
    let start = v.keyStart;
    let end = v.keyEnd;
    if (v.opaque >= 0 && batch.base64Keys && v.opaque < batch.base64Keys.length) {
      key = batch.base64Keys[v.opaque];
      [start, end] = [0, key.length];
    } else if (v.keyBase64) {
      // Asked for in text, but stored in base64 (a client's meta b): k answers in base64.
      key = Buffer.from(key.toString('latin1', start, end), 'base64');
      [start, end] = [0, key.length];
    }
    // Answered means not missing: an answer without its key or fields is memcached misbehaving; skip it.
    if (end === start || v.flags < 0 || v.ttl === null) return;
    batch.unanswered--;
    this.inFlight--;
    if (v.won) this.giveBackToken(Buffer.from(key.subarray(start, end)), v.cas);
    const ttlMs = v.ttl === -1 ? TTL_NEVER : Math.max(0, remainingLifeMs(v.ttl));
    // A set-mode copy carries a stale item's mark; an add-mode one leaves the receiver's item as it is, mark and all.
    this.frameFields.opCode = v.stale && this.options.mode === 'set' ? RECORD_OP_CODES.invalidate : this.modeOpCode;
    this.copyItem(batch.mark, batch.survivor, key, start, end, v.flags, ttlMs, now, v.buf, v.valueStart, v.valueEnd);
  }

  /**
   * The fetch read a stale item and won its recache token, which memcached
   * gives to the first read: the copy is no client, so `md … I C<cas>` clears
   * the token again for the next client's read (only if the item is still
   * the one read: a client's newer value is not stale), as a read back does.
   */
  private giveBackToken(key: Buffer, cas: number): void {
    this.tokenConnection ??= new LocalMemcached(this.upstream, this.options.connectTimeoutMs);
    const given = this.tokenConnection.request(metaInvalidate(key, false, cas)).catch(() => {});
    this.tokenRequests = Promise.all([this.tokenRequests, given]);
  }

  /**
   * A fetched item, accounted for, as a RECORD frame for the link; unless a
   * local write since `mark` supersedes it or the peer could not hold it.
   * `survivor`: its stamp if its last write is not remembered, as of the fetch leaving.
   */
  private copyItem(
    mark: Hlc,
    survivor: Hlc,
    key: Buffer,
    start: number,
    end: number,
    flags: number,
    ttlMs: number,
    now: number,
    value: Buffer,
    valueStart: number,
    valueEnd: number,
  ): void {
    this.accounted!.add(key, start, end);
    if (this.options.localWrites.writtenSince(key, start, end, mark)) {
      this.progress.skipped++; // the live record carries the newer state
      return;
    }
    const size = recordFrameBytes(end - start, valueEnd - valueStart);
    if (size > this.options.peerMaxFrameBytes) {
      this.progress.skipped++;
      return;
    }
    const frames = this.frames;
    frames.ensure(size);
    // Stamped with its last write this node remembers, else as having outlived the newest flush memcached had run
    // here when it was fetched (FlushSchedule.survivorStamp): the receiver judges it against a flush's moment by
    // that, not by when it was read (an item read after the moment may still be one this node's flush edge is about
    // to delete, or one of this node's flush has yet to reach). Not against writes: see Applier.copyApplies.
    const fields = this.frameFields;
    const stamp = this.options.localWrites.stampOf(key, start, end) ?? survivor;
    fields.wall = stamp.wall;
    fields.logical = stamp.logical;
    fields.flags = flags;
    fields.ttlMs = ttlMs;
    fields.sentAt = now;
    fields.keySource = key;
    fields.keyStart = start;
    fields.keyEnd = end;
    fields.valueSource = value;
    fields.valueStart = valueStart;
    fields.valueEnd = valueEnd;
    frames.used = writeRecordFrame(frames.buf, frames.used, fields);
    releaseRecordFrameFields(fields); // not to keep the reply chunk alive
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
    this.busySince = 0;
    this.progress.walks++;
    const walker = this.walker;
    this.walker = null;
    this.walkReader.clear();
    walker?.destroy();
  }

  private walkRefused(message: string): void {
    switch (walkRefusal(message)) {
      case 'busy':
        this.busySince ||= Date.now();
        if (Date.now() - this.busySince >= BUSY_PATIENCE_MS) {
          return this.fail('crawler_busy', `memcached's LRU crawler stayed busy with another walk for ${BUSY_PATIENCE_MS / 1000} s`);
        }
        // The crawler is still finishing another walk (ours, or an operator's): try again shortly.
        return this.walkAgain(BUSY_RETRY_MS);
      case 'not_started':
        // Nothing to crawl: the walk lists nothing.
        this.walkEnded();
        return this.drive();
      case 'bad_class':
        if (this.walkMode !== 'hash') break;
        this.walkMode = 'all';
        this.log.warn(
          'replication: memcached refuses lru_crawler metadump hash (it needs memcached 1.6.9 or later); walking its LRUs instead ' +
            '(metadump all), which skips items being read at that instant: under read load the copy may miss some',
        );
        return this.walkAgain(0);
      case 'not_allowed':
        return this.fail('dump_disabled', `memcached refused the walk: ${message} (memcached was started with -X: dumping disabled)`);
    }
    this.fail('walk_refused', `memcached refused the walk: ${message}`);
  }

  private walkAgain(delayMs: number): void {
    const walker = this.walker;
    this.walker = null;
    walker?.destroy();
    setTimeout(() => this.startWalk().catch((error: Error) => this.fail('memcached_unreachable', error.message)), delayMs).unref();
  }

  private checkDone(): void {
    if (!this.walkDone || this.walker || this.spool.count > 0 || this.inFlight > 0 || this.batches.length > 0 || this.finished) return;
    const pass = this.pass;
    if (pass.kind === 'check' && pass.found > 0) {
      this.progress.repaired += pass.found;
      this.log.info(`replication: marugoto check ${pass.round} found ${pass.found} items the copy had not sent, and sent them`);
      if (pass.round >= CHECKS) {
        return this.fail('incomplete', `${CHECKS} checks in a row found items the copy had not sent (${pass.found} in the last)`);
      }
    }
    const next = this.nextPass(pass);
    if (next === null) return this.finish();
    this.pass = next;
    this.walkDone = false;
    this.startWalk().catch((error: Error) => this.fail('memcached_unreachable', error.message));
  }

  /** What the walk after `pass` takes, or null when the copy is complete. */
  private nextPass(pass: Pass): Pass | null {
    if (pass.kind === 'range') {
      if (pass.hi < HASH_SPACE) {
        // Sized like the walk that ended: its range held pass.bytes of keys.
        const width = Math.floor((RANGE_FILL * this.spoolMaxBytes * (pass.hi - pass.lo)) / Math.max(1, pass.bytes));
        return rangePass(pass.hi, Math.min(HASH_SPACE, pass.hi + Math.max(1, width)), true);
      }
      return this.markCas > 0 ? { kind: 'check', round: 1, found: 0 } : null;
    }
    return pass.found === 0 ? null : { kind: 'check', round: pass.round + 1, found: 0 };
  }

  private finish(): void {
    if (this.finished) return;
    this.cleanup();
    this.settle.resolve(this.progress);
  }

  private fail(reason: FullCopyFailure, message: string): void {
    if (this.finished) return;
    this.cleanup();
    this.log.debug(`replication: copy stopped (${reason}): ${message}`);
    this.settle.reject(new FullCopyError(reason, message));
  }

  private cleanup(): void {
    this.finished = true;
    this.pace.stop();
    const walker = this.walker;
    this.walker = null;
    walker?.destroy();
    this.fetcher?.destroy();
    this.binaryFetcher?.close();
    const tokens = this.tokenConnection;
    if (tokens) void this.tokenRequests.then(() => tokens.close());
    this.spool.clear();
  }
}

/** memrepl's own key: the copy's mark. */
function isOwnKey(key: Buffer, length: number): boolean {
  return length === MARK.length && key.compare(MARK, 0, MARK.length, 0, length) === 0;
}

/** How the copy names key[0, length) to fetch it; `encoded`: the walk's line escaped some of its bytes. */
function fetchBy(encoded: boolean, key: Buffer, length: number): FetchBy {
  // A key the walk wrote without escapes holds no byte the text tokenizer splits on.
  if (!encoded || textSafeKey(key, length)) return 'text';
  return needsBinary(key.subarray(0, length)) ? 'binary' : 'base64';
}

/** A record's ttlMs from a walk line's exp (unix seconds on memcached's clock, -1 for never), or null for an item dead by now. */
function ttlFromWalk(exp: number, now: number): number | null {
  if (exp === -1) return TTL_NEVER;
  const ttlMs = remainingLifeMs(exp - Math.floor(now / 1000));
  return ttlMs > 0 ? ttlMs : null;
}
