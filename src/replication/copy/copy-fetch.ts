/**
 * A full copy's fetches (see full-copy.ts): the keys the walk spooled
 * (copy-walk.ts), read back from memcached and sent to the peer.
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
 */
import type * as net from 'node:net';
import { MetaGetScanner, newFetchedValue } from '../../protocol/text/meta-get-scanner';
import type { FetchPace } from './fetch-pace';
import { Staging } from './staging';
import { Opcode, Status, type BinaryPacket } from '../../protocol/binary/messages';
import { remainingLifeMs } from '../../protocol/text/expiry';
import { META_FETCH_BYTES_MAX, metaInvalidate, SENTINEL, writeMetaFetch, writeMetaFetchBase64 } from '../../protocol/text/serializer';
import type { UpstreamAddress } from '../../sockets';
import { RECORD_OP_CODES, recordFrameBytes, TTL_NEVER } from '../link/frames/messages';
import { newRecordFrameFields, releaseRecordFrameFields, writeRecordFrame, type RecordFrameFields } from '../link/frames/serializer';
import type { Hlc } from '../conflict/hlc';
import type { KeyFilter } from './key-filter';
import { binaryFetch, flagsOf } from '../binary-keys';
import { type KeySpool, newSpooledKey } from './key-spool';
import type { Link } from '../link/link';
import { LocalMemcached, LocalMemcachedBinary } from '../local-memcached';
import type { FullCopyFailure, FullCopyOptions, FullCopyProgress } from './full-copy';

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

export interface CopyFetchDeps {
  upstream: UpstreamAddress;
  link: Link;
  options: Pick<FullCopyOptions, 'mode' | 'connectTimeoutMs' | 'maxInFlight' | 'maxInFlightBytes' | 'peerMaxFrameBytes' | 'localWrites'>;
  spool: KeySpool;
  pace: FetchPace;
  /** Every key the copy accounted for: sent, or passed over on purpose. */
  accounted: KeyFilter;
  progress: FullCopyProgress;
  /** Replies came in: more fetches may leave, or the walk go on. */
  drive(): void;
  fail(reason: FullCopyFailure, message: string): void;
}

export class CopyFetch {
  /** Fetches of keys no text command can name (see fetchBinary); it connects on its first batch. */
  private readonly binaryFetcher: LocalMemcachedBinary;
  /** For giving back recache tokens (see giveBackToken), opened on the first. */
  private tokenConnection: LocalMemcached | null = null;
  private tokenRequests: Promise<unknown> = Promise.resolve();
  private readonly spooled = newSpooledKey();
  private readonly scanner = new MetaGetScanner();
  private readonly fetched = newFetchedValue();
  private readonly batches: FetchBatch[] = [];
  private readonly requests = new Staging();
  private readonly frames = new Staging();
  private inFlight = 0;
  private inFlightBytes = 0;
  /** One object, refilled for every item copied: a copy allocates nothing per item for its frames. */
  private readonly frameFields: RecordFrameFields = newRecordFrameFields();
  /** The op of every item this copy sends (its mode), but a stale one's in a set-mode copy. */
  private readonly modeOpCode: number;
  private stopped = false;

  constructor(
    private readonly fetcher: net.Socket,
    private readonly deps: CopyFetchDeps,
  ) {
    // Copies are outside the numbered stream (seq 0) and are no flushes (delay 0); each item fills in the rest.
    this.frameFields.seq = 0;
    this.frameFields.delay = 0;
    this.modeOpCode = RECORD_OP_CODES[deps.options.mode];
    fetcher.on('data', (chunk: Buffer) => this.received(chunk));
    fetcher.on('error', () => {});
    fetcher.on('close', () => deps.fail('fetch_failed', 'fetching items for the copy: memcached closed the connection'));
    this.binaryFetcher = new LocalMemcachedBinary(deps.upstream, deps.options.connectTimeoutMs);
  }

  get idle(): boolean {
    return this.inFlight === 0 && this.batches.length === 0;
  }

  /** Sends one batch of fetches, as large as the bounds allow, from the spooled keys; `walkMark`: see fetchBinary. */
  send(walkMark: Hlc): void {
    const { link, spool, pace } = this.deps;
    const { maxInFlight, maxInFlightBytes, localWrites } = this.deps.options;
    const requests = this.requests;
    const entry = this.spooled;
    let count = 0;
    let bytes = 0;
    let base64Keys: Buffer[] | null = null;
    let binaryFetches: BinaryFetch[] | null = null;
    let binaryBytes = 0;
    const fetches = () => count + (binaryFetches?.length ?? 0);
    while (this.inFlight + fetches() < maxInFlight && this.inFlightBytes + bytes + binaryBytes < maxInFlightBytes && link.open && !link.congested) {
      if (spool.count === 0 || !pace.take() || !spool.shift(entry)) break;
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
      this.batches.push({ unanswered: count, bytes, base64Keys, mark: localWrites.mark(), survivor: localWrites.survivorStamp() });
      this.inFlight += count;
      this.inFlightBytes += bytes;
      this.fetcher.write(requests.take()!);
    }
    if (binaryFetches) this.fetchBinary(binaryFetches, binaryBytes, walkMark);
  }

  stop(): void {
    this.stopped = true;
    this.fetcher.destroy();
    this.binaryFetcher.close();
    const tokens = this.tokenConnection;
    if (tokens) void this.tokenRequests.then(() => tokens.close());
  }

  /**
   * One batch of binary fetches: GetKQ answers hits only, each with its place
   * in `fetches` as its opaque; the NOOP closes the batch. Their expiry is the
   * walk's, so a local write since the walk (not only since the fetch) makes
   * the copy stale: the live record of that write carries value and expiry.
   */
  private fetchBinary(fetches: BinaryFetch[], bytes: number, walkMark: Hlc): void {
    const survivor = this.deps.options.localWrites.survivorStamp();
    this.inFlight += fetches.length;
    this.inFlightBytes += bytes;
    const requests = Buffer.concat(fetches.map(({ key }, i) => binaryFetch(key, i)));
    const fetcher = this.binaryFetcher;
    fetcher.quietBatch(requests).then(
      (hits) => this.binaryFetched(fetches, bytes, walkMark, survivor, hits, fetcher.lastReceivedAt),
      (error: Error) => this.deps.fail('fetch_failed', `fetching items for the copy in binary: ${error.message}`),
    );
  }

  /** A binary batch's hits as frames; what it did not answer is gone since the walk saw it, as on the text path. */
  private binaryFetched(fetches: BinaryFetch[], bytes: number, mark: Hlc, survivor: Hlc, hits: BinaryPacket[], now: number): void {
    if (this.stopped) return;
    let answered = 0;
    for (const hit of hits) {
      const fetch = fetches[hit.header.opaque];
      // An error for one fetch leaves its item unanswered, as on the text path.
      if (!fetch || hit.header.opcode !== Opcode.GetKQ || hit.header.status !== Status.Success) continue;
      answered++;
      const ttlMs = ttlFromWalk(fetch.exp, now);
      if (ttlMs === null) {
        // Dead by now: the check passes over it too (see CopyWalk's takeUnaccounted).
        this.deps.accounted.add(fetch.key, 0, fetch.key.length);
        this.deps.progress.skipped++;
      } else {
        this.frameFields.opCode = this.modeOpCode;
        this.copyItem(mark, survivor, fetch.key, 0, fetch.key.length, flagsOf(hit), ttlMs, now, hit.value, 0, hit.value.length);
      }
    }
    this.inFlight -= fetches.length;
    this.inFlightBytes -= bytes;
    this.deps.progress.skipped += fetches.length - answered;
    this.sendFrames();
  }

  /** A chunk of replies to the fetches: frames for the hits, one link write for all of them. */
  private received(chunk: Buffer): void {
    if (this.stopped) return;
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
      return this.deps.fail('fetch_failed', `fetching items for the copy: ${(error as Error).message}`);
    }
    this.sendFrames();
  }

  private sendFrames(): void {
    const frames = this.frames.take();
    if (frames) this.deps.link.write(frames);
    this.deps.drive();
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
    this.frameFields.opCode = v.stale && this.deps.options.mode === 'set' ? RECORD_OP_CODES.invalidate : this.modeOpCode;
    this.copyItem(batch.mark, batch.survivor, key, start, end, v.flags, ttlMs, now, v.buf, v.valueStart, v.valueEnd);
  }

  /**
   * The fetch read a stale item and won its recache token, which memcached
   * gives to the first read: the copy is no client, so `md … I C<cas>` clears
   * the token again for the next client's read (only if the item is still
   * the one read: a client's newer value is not stale), as a read back does.
   */
  private giveBackToken(key: Buffer, cas: number): void {
    this.tokenConnection ??= new LocalMemcached(this.deps.upstream, this.deps.options.connectTimeoutMs);
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
    const { localWrites, peerMaxFrameBytes } = this.deps.options;
    const progress = this.deps.progress;
    this.deps.accounted.add(key, start, end);
    if (localWrites.writtenSince(key, start, end, mark)) {
      progress.skipped++; // the live record carries the newer state
      return;
    }
    const size = recordFrameBytes(end - start, valueEnd - valueStart);
    if (size > peerMaxFrameBytes) {
      progress.skipped++;
      return;
    }
    const frames = this.frames;
    frames.ensure(size);
    const written = localWrites.stampOf(key, start, end);
    // A delete as the key's last write, and yet an item: the delete (a peer's record, noted as it arrives) had not
    // reached memcached when the fetch read it. That item is older than the stamp it would carry, and a peer that
    // made the delete would take it for its own write and store it back (fault suite, seed 21). The peer has the
    // delete, or gets its record.
    if (written?.deleted) {
      progress.skipped++;
      return;
    }
    // Stamped with its last write this node remembers, else as having outlived the newest flush memcached had run
    // here when it was fetched (FlushSchedule.survivorStamp): the receiver judges it against a flush's moment by
    // that, not by when it was read (an item read after the moment may still be one this node's flush edge is about
    // to delete, or one of this node's flush has yet to reach). Not against writes: see Applier.copyApplies.
    const fields = this.frameFields;
    const stamp = written ?? survivor;
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
    progress.items++;
    progress.bytes += size;
  }

  /** A batch's MN: what it did not answer is gone since the walk saw it (expired, evicted, deleted). */
  private batchDone(): void {
    const batch = this.batches.shift()!;
    this.inFlight -= batch.unanswered;
    this.inFlightBytes -= batch.bytes;
    this.deps.progress.skipped += batch.unanswered;
  }
}

/** A record's ttlMs from a walk line's exp (unix seconds on memcached's clock, -1 for never), or null for an item dead by now. */
function ttlFromWalk(exp: number, now: number): number | null {
  if (exp === -1) return TTL_NEVER;
  const ttlMs = remainingLifeMs(exp - Math.floor(now / 1000));
  return ttlMs > 0 ? ttlMs : null;
}
