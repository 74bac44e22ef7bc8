/**
 * A full copy's walk (see full-copy.ts) is `lru_crawler metadump hash` on a
 * connection of its own (memcached refuses to pipeline anything else with
 * it): it walks the hash table, so it lists every item, also those clients
 * are reading at that instant, which `metadump all` (a walk of the LRUs)
 * skips. memcached before 1.6.9 refuses `hash`; the copy then walks with
 * `all`, and says so.
 *
 * The walk is read as fast as memcached writes it: memcached 1.6.9 to 1.6.18
 * hold an item lock while they wait for a slow reader of a hash walk, which
 * stalls every client touching that lock; later versions hold off hash table
 * growth instead. Its keys wait in a spool (key-spool.ts) for the fetches
 * (copy-fetch.ts), which are paced. The spool is bounded: each walk takes
 * only the keys whose hash lies in its range; when the spool fills, the range
 * shrinks and the keys above it are dropped, and the next walk starts where
 * this one's range ended. Small caches take one walk.
 *
 * Before it declares the copy complete, the copy checks itself: one more
 * walk must find no item older than the copy (its CAS is at most that of a
 * mark stored when the copy began) that the copy did not account for (sent,
 * or passed over on purpose; remembered in a Bloom filter, key-filter.ts).
 * What such a walk finds is sent, and the walk repeats, a bounded number of
 * times; then the copy fails (`incomplete`) and the replicator retries it.
 */
import type * as net from 'node:net';
import type { Logger } from '../../log';
import { metadumpRequest, newMetadumpLine, percentDecodeInto, scanMetadumpFields, scanMetadumpKey, walkRefusal } from '../../protocol/text/metadump';
import { TailCarry } from '../../protocol/tail-carry';
import { parseMetaHeader } from '../../protocol/text/meta-header';
import { metaDelete, metaReadCas, metaSet, textSafeKey } from '../../protocol/text/serializer';
import { connect, type UpstreamAddress } from '../../sockets';
import { RECORD_KEY_MAX_LENGTH } from '../link/frames/messages';
import { HLC_ZERO, type Hlc } from '../conflict/hlc';
import type { KeyFilter } from './key-filter';
import { keyHash, randomSeed } from '../conflict/key-hash';
import { needsBinary } from '../binary-keys';
import type { FetchBy, KeySpool } from './key-spool';
import type { LocalMemcached } from '../local-memcached';
import type { FullCopyFailure, FullCopyOptions, FullCopyProgress } from './full-copy';

/**
 * The keys waiting between the walk and the fetches, at most (~1.4M keys of
 * 32 bytes): memory traded for walks. Every walk lists every item, and under
 * client load the walks, not the paced fetches, are what the clients feel
 * (they cannot be slowed, see the header). 1M items behind a node under load
 * (npm run bench): with 16 MiB, five walks, the clients' p99 5.6× and their
 * throughput -59% during the copy; with 64 MiB, two walks (one range, one
 * check), 2.7× and -27%, for 11 MiB more peak RSS.
 */
const SPOOL_MAX_BYTES = 64 * 1024 * 1024;
const HASH_SPACE = 2 ** 32;
/** The part of the spool a range is sized to fill, so that an estimate a little short does not overflow it. */
const RANGE_FILL = 0.7;
/**
 * A first walk's range is sized once it listed this share of the cache's
 * items (at least SIZE_AFTER_MIN): its keys so far tell how many bytes the
 * whole range would spool. Sized then, not at its end, the fetches run
 * alongside the rest of the walk (1M items: the walk takes about a second).
 */
const SIZE_AFTER_SHARE = 0.01;
const SIZE_AFTER_MIN = 10_000;
/** Checks after the range walks: each must find nothing, or sends what it found and the next looks again. */
const CHECKS = 3;
/** An item expiring within this many seconds of a check is not asked for: the peer would not keep it either. */
const EXPIRY_SLACK_S = 2;
/** Stored when the copy begins, to learn memcached's CAS counter (see the header); deleted at once. */
const MARK = Buffer.from('memrepl:copy-mark');
/** The mark's value: one byte, never read. */
const MARK_VALUE = Buffer.from('-');
/** How long the copy waits for memcached's crawler to finish another walk, and how often it asks. */
const BUSY_PATIENCE_MS = 10_000;
const BUSY_RETRY_MS = 100;
/** memcached writes metadump lines of at most 4 KiB: a longer one means the stream is broken. */
const WALK_LINE_MAX = 8 * 1024;

/** What the current walk takes: the keys whose hash is in a range, or (a check) what the copy has not accounted for. */
type Pass = RangePass | { kind: 'check'; round: number; found: number };

/**
 * Keys whose hash is in [lo, hi). hi shrinks when the spool fills. Until the
 * range is sized (from the first lines of its walk, or from an earlier walk)
 * nothing is fetched: a key fetched and then dropped from the range is sent
 * again by the next walk.
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

function rangePass(lo: number, hi: number, sized: boolean): RangePass {
  return { kind: 'range', lo, hi, sized, listed: 0, bytes: 0 };
}

export interface CopyWalkDeps {
  upstream: UpstreamAddress;
  connectTimeoutMs: number;
  localWrites: Pick<FullCopyOptions['localWrites'], 'mark'>;
  /** memcached's item count when the copy began (to size the ranges). */
  cacheItems: number;
  /** memcached's CAS counter when the copy began (0: memcached runs with -C, and the copy cannot check itself; see casNow). */
  markCas: number;
  spool: KeySpool;
  /** The spool's bound in bytes; SPOOL_MAX_BYTES if not given. */
  spoolMaxBytes?: number;
  /** Every key the copy accounted for: sent, or passed over on purpose. */
  accounted: KeyFilter;
  progress: FullCopyProgress;
  log: Logger;
  /** Keys were spooled, or a walk ended. */
  drive(): void;
  /** The last pass is done: the copy is complete. */
  finish(): void;
  fail(reason: FullCopyFailure, message: string): void;
}

export class CopyWalk {
  private walker: net.Socket | null = null;
  /** The start of a walk line whose end has not arrived yet. */
  private readonly walkReader = new TailCarry();
  private readonly line = newMetadumpLine();
  private keyScratch = Buffer.allocUnsafe(256);
  private walkDone = false;
  private walkMode: 'hash' | 'all' = 'hash';
  private pass: Pass = rangePass(0, HASH_SPACE, false);
  private readonly hashSeed = randomSeed();
  private readonly spoolMaxBytes: number;
  /** When the crawler first answered BUSY to this walk (0: it did not). */
  private busySince = 0;
  private walkMark: Hlc = HLC_ZERO;
  private stopped = false;

  /** Lines a first walk lists before its range is sized (see SIZE_AFTER_SHARE). */
  private readonly sizeAfter: number;

  constructor(private readonly deps: CopyWalkDeps) {
    this.spoolMaxBytes = deps.spoolMaxBytes ?? SPOOL_MAX_BYTES;
    this.sizeAfter = Math.max(SIZE_AFTER_MIN, Math.ceil(deps.cacheItems * SIZE_AFTER_SHARE));
  }

  /** localWrites.mark() when the current walk began: every spooled key was read from that walk, after it. */
  get mark(): Hlc {
    return this.walkMark;
  }

  /** Whether the spooled keys may be fetched: not while the range they are in is still to be sized (see RangePass). */
  get fetchable(): boolean {
    return this.pass.kind !== 'range' || this.pass.sized || this.walkDone;
  }

  async start(): Promise<void> {
    if (this.stopped) return;
    const socket = await connect(this.deps.upstream, this.deps.connectTimeoutMs);
    if (this.stopped) return void socket.destroy();
    this.walker = socket;
    this.walkReader.clear();
    this.walkDone = false;
    this.walkMark = this.deps.localWrites.mark();
    socket.on('data', (chunk: Buffer) => {
      if (this.walker === socket) this.walkData(chunk);
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      // Closed by us after its END (or a BUSY), it is no longer the walker.
      if (this.walker === socket) this.deps.fail('walk_closed', 'memcached closed the walk connection');
    });
    socket.write(metadumpRequest(this.walkMode));
  }

  /** Every fetch sent is answered: once the walk has ended and its keys are fetched, the next pass, or the copy is complete. */
  fetchesDone(): void {
    if (!this.walkDone || this.walker || this.deps.spool.count > 0 || this.stopped) return;
    const pass = this.pass;
    if (pass.kind === 'check' && pass.found > 0) {
      this.deps.progress.repaired += pass.found;
      this.deps.log.info(`replication: marugoto check ${pass.round} found ${pass.found} items the copy had not sent, and sent them`);
      if (pass.round >= CHECKS) {
        return this.deps.fail('incomplete', `${CHECKS} checks in a row found items the copy had not sent (${pass.found} in the last)`);
      }
    }
    const next = this.nextPass(pass);
    if (next === null) return this.deps.finish();
    this.pass = next;
    this.walkDone = false;
    this.start().catch((error: Error) => this.deps.fail('memcached_unreachable', error.message));
  }

  stop(): void {
    this.stopped = true;
    this.closeWalker();
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
    if (walk.buffered > WALK_LINE_MAX) return this.deps.fail('bad_walk_line', 'a metadump line without its end');
    this.deps.drive();
  }

  /** One line of the walk; false once the walk is over (ended, refused, failed). */
  private walkLine(buf: Buffer, start: number, end: number): boolean {
    const line = this.line;
    if (!scanMetadumpKey(buf, start, end, line)) {
      if (line.kind === 'end') {
        this.walkEnded();
        this.deps.drive();
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
      if (!pass.sized && pass.listed >= this.sizeAfter) this.size(pass);
      hash = keyHash(buf, line.keyEnd - line.keyStart, this.hashSeed, line.keyStart);
      if (hash < pass.lo || hash >= pass.hi) return true;
    }
    scanMetadumpFields(buf, end, line);
    if (this.keyScratch.length < line.keyEnd - line.keyStart) this.keyScratch = Buffer.allocUnsafe(line.keyEnd - line.keyStart);
    const key = this.keyScratch;
    const length = percentDecodeInto(buf, line.keyStart, line.keyEnd, key);
    if (length <= 0) {
      this.deps.fail('bad_walk_line', `undecodable metadump line: ${buf.toString('latin1', start, Math.min(end, start + 100))}`);
      return false;
    }
    if (isOwnKey(key, length)) return true;
    if (pass.kind === 'range') this.takeInRange(pass, key, length, hash);
    else this.takeUnaccounted(pass, key, length);
    return true;
  }

  private takeInRange(pass: RangePass, key: Buffer, length: number, hash: number): void {
    const spool = this.deps.spool;
    const before = spool.bytes;
    this.spoolKey(key, length, hash);
    pass.bytes += spool.bytes - before;
    if (spool.bytes > this.spoolMaxBytes) this.narrow(pass);
  }

  /**
   * Enough of the walk is seen to tell how many bytes of keys its range
   * holds: the range stays whole if they fit the spool, else it narrows now
   * rather than once the spool is full.
   */
  private size(pass: RangePass): void {
    if (this.expectedBytes(pass) > RANGE_FILL * this.spoolMaxBytes) this.narrow(pass);
    else pass.sized = true;
  }

  /** The spool bytes the whole range would take, from what its walk brought so far. */
  private expectedBytes(pass: RangePass): number {
    return pass.bytes * Math.max(1, this.deps.cacheItems / Math.max(1, pass.listed));
  }

  /**
   * Too many keys wait: this walk keeps the lower part of its range, sized
   * from how many keys its part of the walk so far brought, and the next walk
   * takes the rest.
   */
  private narrow(pass: RangePass): void {
    const spool = this.deps.spool;
    const expected = this.expectedBytes(pass);
    let hi = pass.lo + Math.max(1, Math.floor((pass.hi - pass.lo) * Math.min(1, (RANGE_FILL * this.spoolMaxBytes) / expected)));
    for (;;) {
      pass.hi = hi;
      const before = spool.bytes;
      spool.dropFrom(hi);
      pass.bytes -= before - spool.bytes;
      // An estimate short of the mark: halve until the spool is within bounds.
      if (spool.bytes <= this.spoolMaxBytes || hi - pass.lo <= 1) break;
      hi = pass.lo + Math.floor((hi - pass.lo) / 2);
    }
    pass.sized = true;
  }

  /** A check: an item older than the copy that the copy did not account for was missed; send it now. */
  private takeUnaccounted(pass: { found: number }, key: Buffer, length: number): void {
    const line = this.line;
    if (line.cas > this.deps.markCas || this.deps.accounted.mayHave(key, 0, length)) return;
    if (line.exp !== -1 && line.exp * 1000 <= Date.now() + EXPIRY_SLACK_S * 1000) return;
    pass.found++;
    // Past the bound, the next check finds it again.
    if (this.deps.spool.bytes < this.spoolMaxBytes) this.spoolKey(key, length, 0);
  }

  private spoolKey(key: Buffer, length: number, hash: number): void {
    if (length > RECORD_KEY_MAX_LENGTH) {
      this.deps.progress.skipped++;
      this.deps.accounted.add(key, 0, length);
      return;
    }
    this.deps.spool.push(hash, this.line.size, key, 0, length, fetchBy(this.line.encoded, key, length), this.line.exp);
  }

  private walkEnded(): void {
    this.walkDone = true;
    this.busySince = 0;
    this.deps.progress.walks++;
    this.walkReader.clear();
    this.closeWalker();
  }

  private walkRefused(message: string): void {
    switch (walkRefusal(message)) {
      case 'busy':
        this.busySince ||= Date.now();
        if (Date.now() - this.busySince >= BUSY_PATIENCE_MS) {
          return this.deps.fail('crawler_busy', `memcached's LRU crawler stayed busy with another walk for ${BUSY_PATIENCE_MS / 1000} s`);
        }
        // The crawler is still finishing another walk (ours, or an operator's): try again shortly.
        return this.walkAgain(BUSY_RETRY_MS);
      case 'not_started':
        // Nothing to crawl: the walk lists nothing.
        this.walkEnded();
        return this.deps.drive();
      case 'bad_class':
        if (this.walkMode !== 'hash') break;
        this.walkMode = 'all';
        this.deps.log.warn(
          'replication: memcached refuses lru_crawler metadump hash (it needs memcached 1.6.9 or later); walking its LRUs instead ' +
            '(metadump all), which skips items being read at that instant: under read load the copy may miss some',
        );
        return this.walkAgain(0);
      case 'not_allowed':
        return this.deps.fail('dump_disabled', `memcached refused the walk: ${message} (memcached was started with -X: dumping disabled)`);
    }
    this.deps.fail('walk_refused', `memcached refused the walk: ${message}`);
  }

  private walkAgain(delayMs: number): void {
    this.closeWalker();
    setTimeout(() => this.start().catch((error: Error) => this.deps.fail('memcached_unreachable', error.message)), delayMs).unref();
  }

  /** What the walk after `pass` takes, or null when the copy is complete. */
  private nextPass(pass: Pass): Pass | null {
    if (pass.kind === 'range') {
      if (pass.hi < HASH_SPACE) {
        // Sized like the walk that ended: its range held pass.bytes of keys.
        const width = Math.floor((RANGE_FILL * this.spoolMaxBytes * (pass.hi - pass.lo)) / Math.max(1, pass.bytes));
        return rangePass(pass.hi, Math.min(HASH_SPACE, pass.hi + Math.max(1, width)), true);
      }
      return this.deps.markCas > 0 ? { kind: 'check', round: 1, found: 0 } : null;
    }
    return pass.found === 0 ? null : { kind: 'check', round: pass.round + 1, found: 0 };
  }

  /** It stops being the walker before it closes: a close we caused is no failure (see start). */
  private closeWalker(): void {
    const walker = this.walker;
    this.walker = null;
    walker?.destroy();
  }
}

/** memcached's CAS counter now, for the checks (see the header): stores the mark and reads its CAS, then deletes it; 0 (and says why) if that cannot be done. */
export async function casNow(connection: LocalMemcached, log: Logger): Promise<number> {
  const storeReply = await connection.request(metaSet(MARK, MARK_VALUE, { clientFlags: null, exptime: 10, mode: null, quiet: false }));
  const storeAnswer = storeReply[storeReply.length - 1];
  const stored = storeAnswer !== undefined && parseMetaHeader(storeAnswer.raw).status === 'HD';
  const [reply] = stored ? await connection.request(metaReadCas(MARK)) : [];
  await connection.quietBatch(metaDelete(MARK, true));
  const cas = reply ? Math.max(0, parseMetaHeader(reply.raw).cas) : 0;
  if (cas === 0) {
    const why = stored ? 'memcached gives items no CAS (-C)' : `memcached refused to store its mark (${storeAnswer?.line ?? ''})`;
    log.warn(`replication: the full copy cannot check that it sent everything: ${why}`);
  }
  return cas;
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
