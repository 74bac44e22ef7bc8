/**
 * Applies the peer's records to the local memcached, in the order they
 * arrive, pipelined on a connection of its own. Writes made here are never
 * recorded, so they are never shipped back (loop prevention).
 *
 * Conflicts: a record loses to a newer write of the same key that already
 * took effect here (last writer by hybrid logical clock, ties by node id), so
 * concurrent writes on both nodes end the same on both.
 *
 * Expiry: the record says how long the item had left when it was sent; the
 * deadline is computed on this node's clock at arrival, so it does not grow
 * by the replication delay and the two hosts' clocks need not agree.
 */
import type { ReplyPart } from '../protocol/text/reply-parser';
import { flushAll, metaDelete, metaInvalidate, metaKey, metaSet, metaTouch } from '../protocol/text/serializer';
import { expiresAtFromTtl, type RecordFrame } from './frames/messages';
import type { Contention } from './contention';
import { compareHlc, type Hlc, type HybridClock, type Stamp } from './hlc';
import type { LocalMemcached } from './local-memcached';
import type { ReplicationMetrics } from './metrics';
import type { RecentWrites } from './recent-writes';

/** memcached reads an exptime above 30 days as a unix timestamp. */
const RELATIVE_EXPTIME_MAX = 60 * 60 * 24 * 30;

/**
 * memcached's exptime for a deadline on this node's clock, or null when the
 * item is already dead. Relative, to the nearest second: memcached expires an
 * item T ticks of its once-a-second clock after storing it, just as the
 * original expired T ticks after its write. (Absolute times would be worse:
 * memcached converts them against a wall clock that can sit a second off the
 * monotonic clock it ticks with.)
 */
export function exptimeFor(deadline: number | null, now: number): number | null {
  if (deadline === null) return 0;
  const seconds = Math.round((deadline - now) / 1000);
  if (seconds <= 0) return null;
  return seconds <= RELATIVE_EXPTIME_MAX ? seconds : Math.round(deadline / 1000);
}

export type ApplyOutcome = 'applied' | 'conflict' | 'refused';

/**
 * Full-copy records waiting to go to memcached as one batch of quiet
 * commands. A copy is a million records arriving back to back: one promise,
 * one reply and one buffer each cost more than memcached took to store them.
 */
interface CopyBatch {
  /** Commands written so far, in `buf` up to `used`, then in `full` (earlier buffers). */
  full: Buffer[];
  buf: Buffer;
  used: number;
  /** Contention tickets of the records sent (they settle with the batch). */
  tickets: number[];
  /** Copy records it accounts for, stored or skipped as conflicts. */
  records: number;
  sets: number;
  adds: number;
}

/** A batch goes to memcached at the end of the tick, or once its commands reach this size. */
const COPY_BATCH_BYTES = 64 * 1024;
const CRLF = Buffer.from('\r\n');

export class Applier {
  /**
   * This node's clock when it last told the peer where its own stream ends
   * (HELLO, or a request for a full copy). The peer starts a copy only after
   * applying this node's records up to there, so a copy holds every local
   * write stamped before this; later ones it may predate.
   */
  copyCovers: Hlc = { wall: 0, logical: 0 };

  constructor(
    private readonly local: LocalMemcached,
    private readonly clock: HybridClock,
    private readonly recent: RecentWrites,
    private readonly contention: Contention,
    private readonly metrics: ReplicationMetrics,
    private readonly nodeId: string,
  ) {}

  private copyBatch: CopyBatch | null = null;
  /**
   * Full-copy records (see applyCopy) were settled: `count` of them, which
   * memcached stored (or refused, counted and logged), or all failed to reach
   * memcached (`error`: the link must reset).
   */
  onCopiesSettled: (count: number, error?: Error) => void = () => {};

  /**
   * Applies a full copy's record (seq 0): judged at once, written to memcached
   * with the next batch of quiet commands (see CopyBatch); onCopiesSettled
   * reports it once memcached answered.
   */
  applyCopy(record: RecordFrame, origin: string, sentAt: number): void {
    if (record.op !== 'set' && record.op !== 'add') {
      // Not something a full copy sends today: the general path, one at a time.
      this.apply(record, origin, sentAt).then(
        () => this.onCopiesSettled(1),
        (error: Error) => this.onCopiesSettled(1, error),
      );
      return;
    }
    this.clock.observe(record.hlc);
    const batch = (this.copyBatch ??= this.newCopyBatch());
    batch.records++;
    if (!this.copyApplies(record)) {
      this.metrics.recordsSkipped.labels('conflict').inc();
      return;
    }
    if (record.op === 'set') batch.sets++;
    else batch.adds++;
    batch.tickets.push(this.contention.applyStarted(record.key));
    this.writeCopy(batch, record, sentAt);
    if (batch.full.length * COPY_BATCH_BYTES + batch.used >= COPY_BATCH_BYTES) this.flushCopies();
  }

  private newCopyBatch(): CopyBatch {
    // Live records and anything else this node sends must not overtake the copies before them.
    process.nextTick(() => this.flushCopies());
    return { full: [], buf: Buffer.allocUnsafe(COPY_BATCH_BYTES), used: 0, tickets: [], records: 0, sets: 0, adds: 0 };
  }

  /** `ms <key> <len>[ b] F<flags> T<exptime> M<E|S> q` and the value, or a quiet md when it expired in transit. */
  private writeCopy(batch: CopyBatch, record: RecordFrame, sentAt: number): void {
    const deadline = expiresAtFromTtl(record.ttlMs, sentAt);
    const exptime = deadline === 'unchanged' ? null : exptimeFor(deadline, Date.now());
    const { key, value } = record;
    if (exptime === null || !textSafe(key)) {
      const { token, flag } = metaKey(key);
      const line = exptime === null ? `md ${token}${flag} q\r\n` : `ms ${token} ${value.length}${flag} F${record.flags} T${exptime} M${record.op === 'add' ? 'E' : 'S'} q\r\n`;
      this.copyBytes(batch, Buffer.concat([Buffer.from(line, 'latin1'), exptime === null ? EMPTY : value, exptime === null ? EMPTY : CRLF]));
      return;
    }
    // Written in place, without a string per record: `ms ` key ` ` len ` F` flags ` T` exptime ` M` mode ` q\r\n` value `\r\n`.
    const size = key.length + value.length + 60;
    if (batch.used + size > batch.buf.length) {
      if (batch.used > 0) batch.full.push(batch.buf.subarray(0, batch.used));
      batch.buf = Buffer.allocUnsafe(Math.max(COPY_BATCH_BYTES, size));
      batch.used = 0;
    }
    const buf = batch.buf;
    let at = batch.used;
    buf[at++] = 0x6d; // m
    buf[at++] = 0x73; // s
    buf[at++] = 0x20;
    at = copyRange(key, buf, at);
    buf[at++] = 0x20;
    at = writeDecimal(buf, at, value.length);
    buf[at++] = 0x20;
    buf[at++] = 0x46; // F
    at = writeDecimal(buf, at, record.flags);
    buf[at++] = 0x20;
    buf[at++] = 0x54; // T
    at = writeDecimal(buf, at, exptime);
    buf[at++] = 0x20;
    buf[at++] = 0x4d; // M
    buf[at++] = record.op === 'add' ? 0x45 : 0x53; // E or S
    buf[at++] = 0x20;
    buf[at++] = 0x71; // q
    buf[at++] = 0x0d;
    buf[at++] = 0x0a;
    at = copyRange(value, buf, at);
    buf[at++] = 0x0d;
    buf[at++] = 0x0a;
    batch.used = at;
  }

  private copyBytes(batch: CopyBatch, bytes: Buffer): void {
    if (batch.used > 0) batch.full.push(batch.buf.subarray(0, batch.used));
    batch.full.push(bytes);
    batch.buf = batch.buf.subarray(batch.used);
    batch.used = 0;
  }

  /** Sends the pending copy batch (before anything else goes to memcached on this connection). */
  flushCopies(): void {
    const batch = this.copyBatch;
    if (!batch) return;
    this.copyBatch = null;
    if (batch.tickets.length === 0) {
      this.onCopiesSettled(batch.records);
      return;
    }
    const commands = Buffer.concat([...batch.full, batch.buf.subarray(0, batch.used)]);
    this.local.quietBatch(commands).then(
      (failures) => this.copiesAnswered(batch, failures),
      (error: Error) => {
        this.contention.appliesSettled(batch.tickets);
        this.onCopiesSettled(batch.records, error);
      },
    );
  }

  /** memcached answered only what did not go well: NS (an add of a key it has) and NF (a delete of one it lacks) are fine. */
  private copiesAnswered(batch: CopyBatch, failures: ReplyPart[]): void {
    this.contention.appliesSettled(batch.tickets);
    let refused = 0;
    for (const { line } of failures) {
      if (!isRefusal(line)) continue;
      refused++;
      this.onRefused(`memcached refused a replicated copy: ${line}`);
    }
    if (refused > 0) this.metrics.recordsSkipped.labels('refused').inc(refused);
    // Refusals are not told apart by op: count them against the sets first.
    const sets = Math.max(0, batch.sets - refused);
    const adds = batch.adds - Math.max(0, refused - batch.sets);
    if (sets > 0) this.metrics.recordsApplied.labels('set').inc(sets);
    if (adds > 0) this.metrics.recordsApplied.labels('add').inc(adds);
    this.onCopiesSettled(batch.records);
  }

  /**
   * Sends the record's write to memcached; resolves when memcached answered
   * (the record is then applied, or deliberately skipped), rejects if
   * memcached could not be reached.
   */
  apply(record: RecordFrame, origin: string, sentAt: number): Promise<ApplyOutcome> {
    this.flushCopies();
    this.clock.observe(record.hlc);
    const stamp: Stamp = { wall: record.hlc.wall, logical: record.hlc.logical, nodeId: origin };
    if (record.op === 'flush') {
      const at: Stamp = { ...stamp, wall: stamp.wall + record.delay * 1000 };
      if (!this.recent.incomingFlushWins(at)) return this.skip('conflict');
      this.recent.noteFlush(at);
      return this.send(flushAll(record.delay), record.op);
    }
    if (record.seq === 0 ? !this.copyApplies(record) : !this.recent.incomingWins(record.key, stamp)) return this.skip('conflict');
    if (record.seq !== 0) this.recent.note(record.key, stamp);
    const ticket = this.contention.applyStarted(record.key);
    return this.send(this.commandFor(record, sentAt), record.op).finally(() => this.contention.applySettled(ticket));
  }

  /**
   * A full copy's records (seq 0) are not stamped writes but the peer's state
   * when it read the key, and are never remembered. That state includes every
   * write of this node the copy covers (see copyCovers) and every earlier
   * write of the peer (the peer drops a key its own clients wrote after it
   * read it). So a copy stands unless this node's clients wrote the key after
   * the covered point: that write is here and on its way to the peer, and is
   * newer. Otherwise add or set decides, in memcached (see replicator.ts).
   */
  private copyApplies(record: RecordFrame): boolean {
    const last = this.recent.lastWriteOf(record.key);
    return !last || last.nodeId !== this.nodeId || compareHlc(last, this.copyCovers) <= 0;
  }

  /** `sentAt`: when the peer sent the record, on this node's clock. */
  private commandFor(record: RecordFrame, sentAt: number): Buffer {
    const deadline = expiresAtFromTtl(record.ttlMs, sentAt);
    const exptime = deadline === 'unchanged' ? null : exptimeFor(deadline, Date.now());
    switch (record.op) {
      case 'set':
      case 'add':
        // Expired in transit: what the origin holds now is no item at all.
        if (exptime === null) return metaDelete(record.key);
        return metaSet(record.key, record.value, record.flags, exptime, record.op === 'add' ? 'E' : 'S');
      case 'touch':
        return exptime === null ? metaDelete(record.key) : metaTouch(record.key, exptime);
      case 'invalidate':
        return metaInvalidate(record.key, deadline === 'unchanged' ? null : (exptime ?? -1));
      case 'delete':
      case 'flush':
        return metaDelete(record.key);
    }
  }

  /**
   * Rejects only when memcached cannot be reached (the link then resets and
   * the record comes again). A record memcached refuses (out of memory, too
   * large for this memcached's -I) would be refused again on every retry, so
   * it is counted and passed over instead of wedging the link.
   */
  private async send(command: Buffer, op: string): Promise<ApplyOutcome> {
    const parts: ReplyPart[] = await this.local.request(command);
    const status = parts[parts.length - 1].line;
    if (isRefusal(status)) {
      this.onRefused(`memcached refused a replicated ${op}: ${status}`);
      return this.skip('refused');
    }
    this.metrics.recordsApplied.labels(op).inc();
    return 'applied';
  }

  /** Reports a refused record (the node logs it). */
  onRefused: (reason: string) => void = () => {};

  private skip(reason: 'conflict' | 'refused'): Promise<ApplyOutcome> {
    this.metrics.recordsSkipped.labels(reason).inc();
    return Promise.resolve(reason);
  }
}

const EMPTY = Buffer.alloc(0);

/** True when the text tokenizer keeps the key intact (no space, CR, LF or NUL): see metaKey. */
function textSafe(key: Buffer): boolean {
  for (let i = 0; i < key.length; i++) {
    const c = key[i];
    if (c === 0x20 || c === 0x0d || c === 0x0a || c === 0x00) return false;
  }
  return true;
}

/** A non-negative integer's decimal digits at `at`; returns the offset after them. */
function writeDecimal(buf: Buffer, at: number, n: number): number {
  if (n < 10) {
    buf[at] = 0x30 + n;
    return at + 1;
  }
  const digits = String(n);
  for (let i = 0; i < digits.length; i++) buf[at + i] = digits.charCodeAt(i);
  return at + digits.length;
}

/** A whole buffer's bytes at `at` (TypedArray set: a memcpy, without Buffer.copy's argument handling and view). */
function copyRange(src: Buffer, dst: Buffer, at: number): number {
  dst.set(src, at);
  return at + src.length;
}

function isRefusal(status: string): boolean {
  return status.startsWith('SERVER_ERROR') || status.startsWith('CLIENT_ERROR') || status === 'ERROR';
}
