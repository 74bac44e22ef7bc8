/**
 * Full copy, repcached's "marugoto": copy every item of the local memcached
 * to a peer that lost its data, without stopping traffic.
 *
 * A walk of the cache (copy-walk.ts) spools the keys of its items; the
 * fetches (copy-fetch.ts) read them back in paced batches and send them to
 * the peer as RECORD frames, interleaved with live records on the same link;
 * then walks that check the copy find what it missed. This file runs them:
 * it learns what memcached holds when the copy begins, sends fetches whenever
 * the walk spooled keys, replies came in, the pace allows or the link drains,
 * walks on once every key spooled is answered, and ends the copy.
 *
 * Every failure carries a reason code (FullCopyError), for the replicator's
 * retries and metrics.
 */
import type { Logger } from '../../log';
import { FetchPace } from './fetch-pace';
import type { LatencySnapshot } from '../../proxy/client-latency';
import { parseStats, STATS_REQUEST } from '../../protocol/text/stats';
import { connect, type UpstreamAddress } from '../../sockets';
import type { Hlc } from '../conflict/hlc';
import { KeyFilter } from './key-filter';
import { KeySpool } from './key-spool';
import type { Link } from '../link/link';
import { LocalMemcached } from '../local-memcached';
import { CopyFetch } from './copy-fetch';
import { casNow, CopyWalk } from './copy-walk';

export interface FullCopyOptions {
  /**
   * add: fill only what the peer lacks. set: the peer takes this node's value
   * for every key it does not remember writing since (see replicator.ts).
   */
  mode: 'add' | 'set';
  /** Items per second at most; 0 = no cap (see fetch-pace.ts). */
  ratePerSecond: number;
  /** This node's client latency: with it, the copy paces itself by it (see fetch-pace.ts). */
  clientLatency?: () => LatencySnapshot;
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
    /** The stamp of the last write of the key this node remembers (its clients' or the peer's), if any, and whether it was a delete. */
    stampOf(key: Buffer, start: number, end: number): Readonly<Hlc & { deleted?: boolean }> | undefined;
    /** The stamp of an item whose last write is not remembered, as of a fetch leaving (see FlushSchedule.survivorStamp). */
    survivorStamp(): Hlc;
  };
  /** Keys spooled between the walk and the fetches, in bytes at most (tests make it small). */
  spoolMaxBytes?: number;
}

export interface FullCopyProgress {
  items: number;
  /** memcached's item count when the copy began (null until read, or if it did not say). */
  expected: number | null;
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

/** The checks' memory of what was sent, at most (see key-filter.ts). */
const FILTER_MAX_BYTES = 32 * 1024 * 1024;
/** Without a count from memcached, size the filter for this many keys. */
const FILTER_DEFAULT_KEYS = 1_000_000;

export class FullCopy {
  readonly progress: FullCopyProgress = { items: 0, expected: null, bytes: 0, skipped: 0, walks: 0, repaired: 0 };
  private readonly spool = new KeySpool();
  /** Made with the copy, before its first request: its baseline is the clients' latency before the copy (see fetch-pace.ts). */
  private readonly pace: FetchPace;
  private walk: CopyWalk | null = null;
  private fetch: CopyFetch | null = null;
  private finished = false;
  private settle!: { resolve: (p: FullCopyProgress) => void; reject: (e: FullCopyError) => void };
  private readonly done: Promise<FullCopyProgress>;

  constructor(
    private readonly upstream: UpstreamAddress,
    private readonly link: Link,
    private readonly options: FullCopyOptions,
    private readonly log: Logger,
  ) {
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
    const { count, markCas } = await this.begin();
    this.progress.expected = count;
    const items = count ?? FILTER_DEFAULT_KEYS;
    const accounted = new KeyFilter(Math.ceil(Math.max(1, items) * 1.25), FILTER_MAX_BYTES);
    if (this.finished) return;
    const { upstream, link, options, log, spool, pace, progress } = this;
    const fetcher = await connect(upstream, options.connectTimeoutMs);
    if (this.finished) return void fetcher.destroy();
    const drive = () => this.drive();
    const fail = (reason: FullCopyFailure, message: string) => this.fail(reason, message);
    this.fetch = new CopyFetch(fetcher, { upstream, link, options, spool, pace, accounted, progress, drive, fail });
    this.walk = new CopyWalk({
      upstream,
      connectTimeoutMs: options.connectTimeoutMs,
      localWrites: options.localWrites,
      cacheItems: items,
      markCas,
      spool,
      spoolMaxBytes: options.spoolMaxBytes,
      accounted,
      progress,
      log,
      drive,
      finish: () => this.finish(),
      fail,
    });
    await this.walk.start();
  }

  /**
   * How many items memcached holds (to size the filter and the ranges), and its CAS counter
   * now: an item whose CAS is higher was written after this, and its own
   * record (a local client's, or the peer's) carries it.
   */
  private async begin(): Promise<{ count: number | null; markCas: number }> {
    const connection = new LocalMemcached(this.upstream, this.options.connectTimeoutMs);
    try {
      const count = Number(parseStats(await connection.request(STATS_REQUEST)).get('curr_items'));
      const markCas = await casNow(connection, this.log);
      return { count: Number.isSafeInteger(count) && count >= 0 ? count : null, markCas };
    } finally {
      connection.close();
    }
  }

  /** Sends what the walk spooled, as far as the bounds allow; once every fetch is answered, the walk may go on. */
  private drive(): void {
    const { walk, fetch } = this;
    if (this.finished || !walk || !fetch) return;
    if (walk.fetchable) fetch.send(walk.mark);
    if (fetch.idle) walk.fetchesDone();
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
    this.walk?.stop();
    this.fetch?.stop();
    this.spool.clear();
  }
}
