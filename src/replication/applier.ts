/**
 * Applies the peer's records to the local memcached, in the order they
 * arrive, on a connection of its own. Writes made here are never recorded,
 * so they are never shipped back (loop prevention).
 *
 * Records are judged as they arrive and written as quiet meta commands
 * (`ms ... q`, `md ... q`, `flush_all noreply`) into one batch per tick,
 * closed by `mn`: memcached answers only what went wrong, and the whole
 * batch settles with one reply. A record costs no promise, no reply and no
 * socket write of its own: a copy is a million records back to back, and a
 * busy peer sends tens of thousands a second.
 *
 * Conflicts: a record loses to a newer write of the same key that already
 * took effect here (last writer by hybrid logical clock, ties by node id), so
 * concurrent writes on both nodes end the same on both.
 *
 * Expiry: the record says how long the item had left when it was sent; the
 * deadline is computed on this node's clock at arrival, so it does not grow
 * by the replication delay and the two hosts' clocks need not agree.
 */
import { copyRange } from '../protocol/bytes';
import type { ReplyPart } from '../protocol/text/reply-parser';
import { flushAll, metaDelete, metaInvalidate, metaKey, metaRead, metaTouch, textSafeKey } from '../protocol/text/serializer';
import { expiresAtFromTtl, FLUSH_CANCEL, type RecordFrame, type RecordOp } from './frames/messages';
import type { Contention } from './contention';
import { CANCEL_FLUSH_EXPTIME, RELATIVE_EXPTIME_MAX, type FlushAction, type FlushTiming } from './flush-schedule';
import { compareHlc, compareStamps, type Hlc, type HybridClock, type Stamp } from './hlc';
import type { LocalMemcached } from './local-memcached';
import type { ReplicationMetrics } from './metrics';
import type { LocalHistory } from './recorder';
import { recordFromReadBack } from './recorder';

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
  // memcached reads exptime as an int32: a deadline at its very end (2038) can round past it.
  return seconds <= RELATIVE_EXPTIME_MAX ? seconds : Math.min(Math.round(deadline / 1000), INT32_MAX);
}

const INT32_MAX = 0x7fff_ffff;

/**
 * Records on their way to memcached as one batch of quiet commands.
 */
interface Batch {
  /** Commands written so far, in `buf` up to `used`, then in `full` (earlier buffers). */
  full: Buffer[];
  buf: Buffer;
  used: number;
  /** Contention tickets of the records sent (they settle with the batch). */
  tickets: number[];
  /** Full-copy records it accounts for, stored or skipped as conflicts. */
  copies: number;
  /** The last live (numbered) record it accounts for; 0 for none. */
  lastSeq: number;
  /** Commands sent, by record op, for the applied counters. */
  sent: Map<RecordOp, number>;
  /** The live stream its records belong to (see newStream). */
  stream: number;
  /** A flush's batch: the keys read before it, to store back once it settled (see flushKeepingNewer). */
  keep?: { key: Buffer; stamp: Stamp }[];
}

/** What a batch settled: see Applier.onSettled. */
export interface Settled {
  copies: number;
  lastSeq: number;
}

/** A batch goes to memcached at the end of the tick, or once its commands reach this size. */
const BATCH_BYTES = 64 * 1024;
/** Flow control: above this many bytes sent to memcached and not answered, the link stops being read; below the second, it is read again. */
export const APPLYING_PAUSE_ABOVE = 8 * 1024 * 1024;
const APPLYING_RESUME_BELOW = 2 * 1024 * 1024;
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
    private readonly history: LocalHistory,
    private readonly contention: Contention,
    private readonly metrics: ReplicationMetrics,
    private readonly nodeId: string,
  ) {}

  private batch: Batch | null = null;
  private stream = 0;
  /** Bytes of commands sent to memcached and not answered yet (see APPLYING_PAUSE_ABOVE). */
  bytesApplying = 0;
  /** bytesApplying fell below the resume mark. */
  onDrained: () => void = () => {};
  /**
   * A batch settled: memcached stored its records (or refused some, counted
   * and logged), or they all failed to reach it (`error`: the link must
   * reset). Batches settle in the order they were sent, so `lastSeq` is the
   * live stream's applied position.
   */
  onSettled: (settled: Settled, error?: Error) => void = () => {};

  /**
   * A full copy's record (seq 0): the peer's state of a key when it read it.
   * It stands unless this node's clients wrote the key since (see copyApplies).
   */
  applyCopy(record: RecordFrame, sentAt: number): void {
    this.clock.observe(record.hlc);
    const batch = this.openBatch();
    batch.copies++;
    if (!this.copyApplies(record)) {
      this.metrics.recordsSkipped.labels('conflict').inc();
      return;
    }
    this.write(batch, record, sentAt);
  }

  /**
   * A live record (seq > 0): it loses to a newer write of the key that took
   * effect here (last writer by hybrid logical clock, ties by node id).
   */
  applyLive(record: RecordFrame, origin: string, sentAt: number): void {
    this.clock.observe(record.hlc);
    const batch = this.openBatch();
    batch.lastSeq = record.seq;
    const stamp: Stamp = { wall: record.hlc.wall, logical: record.hlc.logical, nodeId: origin };
    if (record.op === 'flush') return this.applyFlush(batch, record, stamp, sentAt);
    if (this.history.flushes.erases(stamp)) return this.skipped();
    const { values, touches } = this.history;
    if (record.op === 'touch') {
      // A touch changes only the expiry: it loses to any newer write of the key, value or expiry.
      if (!values.incomingWins(record.key, stamp) || !touches.incomingWins(record.key, stamp)) return this.skipped();
      touches.note(record.key, stamp, deadlineOf(record, sentAt));
      this.write(batch, record, sentAt);
      return;
    }
    if (!values.incomingWins(record.key, stamp)) return this.skipped();
    values.note(record.key, stamp);
    // A newer touch of the key here (or from the peer) keeps its expiry over the older value's.
    const touch = record.op === 'set' ? touches.lastWriteOf(record.key) : undefined;
    const expiresAt = touch && compareStamps(touch, stamp) > 0 ? touch.expiresAt : undefined;
    this.write(batch, record, sentAt, expiresAt);
  }

  private skipped(): void {
    this.metrics.recordsSkipped.labels('conflict').inc();
  }

  /** The peer's flush_all, run the way memcached would have run it here (see flush-schedule.ts). */
  private applyFlush(batch: Batch, record: RecordFrame, command: Stamp, sentAt: number): void {
    const timing: FlushTiming = record.delay === FLUSH_CANCEL ? { kind: 'cancel' } : record.delay === 0 ? { kind: 'now' } : { kind: 'delayed', delayMs: record.delay * 1000 };
    const at = expiresAtFromTtl(record.ttlMs, sentAt);
    const remainingMs = typeof at === 'number' ? at - Date.now() : 0;
    const action = this.history.flushes.incoming(command, timing, remainingMs);
    switch (action.kind) {
      case 'skip':
        return this.skipped();
      case 'cancel':
        return this.command(batch, flushAll(CANCEL_FLUSH_EXPTIME, true), 'flush');
      case 'schedule':
        return this.command(batch, flushAll(flushExptime(action.seconds), true), 'flush');
      case 'flush':
        return this.flushKeepingNewer(batch, action);
    }
  }

  /**
   * Flushes, but keeps the keys written here after the flush's moment: on the
   * flush's origin they were applied after it and survive, so they must
   * survive here too. They are read in the same batch, before the flush, and
   * stored back (add: a client write since wins) once the batch settles,
   * unless written again meanwhile.
   */
  private flushKeepingNewer(batch: Batch, action: Extract<FlushAction, { kind: 'flush' }>): void {
    const keep: { key: Buffer; stamp: Stamp }[] = [];
    this.history.values.forEachNewerThan(action.moment, (key, write) => keep.push({ key: Buffer.from(key), stamp: { wall: write.wall, logical: write.logical, nodeId: write.nodeId } }));
    // In a batch of its own, so that memcached's answers before its MN are exactly these reads'.
    const lastSeq = batch.lastSeq;
    batch.lastSeq = 0;
    this.flush();
    const own = this.openBatch();
    own.lastSeq = lastSeq;
    for (const { key } of keep) this.command(own, metaRead(key), null);
    this.command(own, flushAll(0, true), 'flush');
    if (action.reschedule !== null) this.command(own, flushAll(flushExptime(action.reschedule), true), null);
    if (keep.length > 0) own.keep = keep;
    this.flush();
  }

  /**
   * Stores back what flushKeepingNewer read, as adds (a client write since
   * the flush is newer) and only for keys not written again since it read
   * them. Sent on the same connection, ahead of anything judged later.
   */
  private restore(keep: readonly { key: Buffer; stamp: Stamp }[], reads: ReplyPart[]): void {
    const batch = this.newBatch();
    const now = this.local.lastReceivedAt;
    keep.forEach(({ key, stamp }, i) => {
      const read = reads[i];
      const last = this.history.values.lastWriteOf(key);
      if (!read || !last || compareStamps(last, stamp) !== 0) return;
      const item = recordFromReadBack(key, [read], stamp, now);
      if (item?.op !== 'set') return;
      const exptime = exptimeFor(item.expiresAt === 'unchanged' ? null : item.expiresAt, Date.now());
      if (exptime !== null) this.store(batch, { op: 'add', key, value: item.value, flags: item.flags }, exptime);
    });
    if (batch.used === 0 && batch.full.length === 0) return;
    void this.local.quietBatch(Buffer.concat([...batch.full, batch.buf.subarray(0, batch.used)])).catch(() => {});
  }

  /**
   * The inbox follows another stream (the peer's new run, or a restart of its
   * copy), or must not trust the batches in flight (one failed): batches sent
   * before now report no live position when they settle.
   */
  newStream(): void {
    this.flush();
    this.stream++;
  }

  private openBatch(): Batch {
    if (this.batch) return this.batch;
    // Sent at the end of the tick: everything judged in this tick goes out in one write.
    process.nextTick(() => this.flush());
    this.batch = this.newBatch();
    return this.batch;
  }

  private newBatch(): Batch {
    return { full: [], buf: Buffer.allocUnsafe(BATCH_BYTES), used: 0, tickets: [], copies: 0, lastSeq: 0, sent: new Map(), stream: this.stream };
  }

  /** The record's quiet command into the batch, its key counted in flight for Contention. */
  private write(batch: Batch, record: RecordFrame, sentAt: number, expiresAt?: number | null): void {
    batch.tickets.push(this.contention.applyStarted(record.key));
    const deadline = expiresAt !== undefined ? expiresAt : expiresAtFromTtl(record.ttlMs, sentAt);
    const exptime = deadline === 'unchanged' ? null : exptimeFor(deadline, Date.now());
    switch (record.op) {
      case 'set':
        // Expired in transit: what the origin holds now is no item at all.
        if (exptime === null) this.command(batch, metaDelete(record.key, true), record.op);
        else this.store(batch, record, exptime);
        break;
      case 'add':
        // An add only fills a key this node lacks: one that expired on the way fills nothing, and deletes nothing here.
        if (exptime !== null) this.store(batch, record, exptime);
        break;
      case 'touch':
        this.command(batch, exptime === null ? metaDelete(record.key, true) : metaTouch(record.key, exptime, true), record.op);
        break;
      case 'invalidate':
        this.command(batch, metaInvalidate(record.key, deadline === 'unchanged' ? null : (exptime ?? -1), true), record.op);
        break;
      case 'delete':
      case 'flush':
        this.command(batch, metaDelete(record.key, true), record.op);
        break;
    }
    if (batch.full.length * BATCH_BYTES + batch.used >= BATCH_BYTES) this.flush();
  }

  /** `ms <key> <len> F<flags> T<exptime> M<E|S> q` and the value, written in place (no string per record). */
  private store(batch: Batch, record: Pick<RecordFrame, 'op' | 'key' | 'value' | 'flags'>, exptime: number): void {
    const { key, value } = record;
    const mode = record.op === 'add' ? 'E' : 'S';
    if (!textSafeKey(key)) {
      const { token, flag } = metaKey(key);
      const line = `ms ${token} ${value.length}${flag} F${record.flags} T${exptime} M${mode} q\r\n`;
      this.command(batch, Buffer.concat([Buffer.from(line, 'latin1'), value, CRLF]), record.op);
      return;
    }
    count(batch.sent, record.op);
    const size = key.length + value.length + 60;
    if (batch.used + size > batch.buf.length) {
      if (batch.used > 0) batch.full.push(batch.buf.subarray(0, batch.used));
      batch.buf = Buffer.allocUnsafe(Math.max(BATCH_BYTES, size));
      batch.used = 0;
    }
    const buf = batch.buf;
    let at = batch.used;
    buf[at++] = 0x6d; // m
    buf[at++] = 0x73; // s
    buf[at++] = 0x20;
    at = copyRange(key, 0, key.length, buf, at);
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
    buf[at++] = mode.charCodeAt(0);
    buf[at++] = 0x20;
    buf[at++] = 0x71; // q
    buf[at++] = 0x0d;
    buf[at++] = 0x0a;
    at = copyRange(value, 0, value.length, buf, at);
    buf[at++] = 0x0d;
    buf[at++] = 0x0a;
    batch.used = at;
  }

  /** A command built elsewhere, appended as is; `op` null for one that applies no record. */
  private command(batch: Batch, bytes: Buffer, op: RecordOp | null): void {
    if (op !== null) count(batch.sent, op);
    if (batch.used > 0) batch.full.push(batch.buf.subarray(0, batch.used));
    batch.full.push(bytes);
    batch.buf = batch.buf.subarray(batch.used);
    batch.used = 0;
  }

  /**
   * Sends the pending batch. One that accounts for live records goes even
   * with no command in it (all were conflicts): its `mn` keeps the applied
   * position from passing records still in flight before it.
   */
  flush(): void {
    const batch = this.batch;
    if (!batch) return;
    this.batch = null;
    if (batch.sent.size === 0 && batch.lastSeq === 0) {
      this.onSettled({ copies: batch.copies, lastSeq: 0 });
      return;
    }
    const commands = Buffer.concat([...batch.full, batch.buf.subarray(0, batch.used)]);
    const settled = (): Settled => {
      this.answered(commands.length);
      return { copies: batch.copies, lastSeq: batch.stream === this.stream ? batch.lastSeq : 0 };
    };
    this.bytesApplying += commands.length;
    this.local.quietBatch(commands).then(
      (failures) => {
        if (batch.keep) this.restore(batch.keep, failures.splice(0, batch.keep.length));
        this.contention.appliesSettled(batch.tickets);
        this.countOutcomes(batch.sent, failures);
        this.onSettled(settled());
      },
      (error: Error) => {
        this.contention.appliesSettled(batch.tickets);
        this.onSettled(settled(), error);
      },
    );
  }

  private answered(bytes: number): void {
    const before = this.bytesApplying;
    this.bytesApplying -= bytes;
    if (before > APPLYING_RESUME_BELOW && this.bytesApplying <= APPLYING_RESUME_BELOW) this.onDrained();
  }

  /**
   * memcached answered only what did not go well. NS (an add of a key it has),
   * NF (a delete or touch of a key it lacks) and HD (a touch that hit: mg's q
   * hides only misses) are fine; an error is a record memcached refuses (out
   * of memory, too large for this memcached's -I), which would be refused
   * again on every retry, so it is counted and logged instead of wedging the
   * link.
   */
  private countOutcomes(sent: Map<RecordOp, number>, failures: ReplyPart[]): void {
    let refused = 0;
    for (const { line } of failures) {
      if (!isRefusal(line)) continue;
      refused++;
      this.onRefused(`memcached refused a replicated record: ${line}`);
    }
    if (refused > 0) this.metrics.recordsSkipped.labels('refused').inc(refused);
    // Refusals are not told apart by op: count them against the largest first.
    for (const [op, n] of [...sent].sort((a, b) => b[1] - a[1])) {
      const taken = Math.min(n, refused);
      refused -= taken;
      if (n > taken) this.metrics.recordsApplied.labels(op).inc(n - taken);
    }
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
    const last = this.history.values.lastWriteOf(record.key);
    return !last || last.nodeId !== this.nodeId || compareHlc(last, this.copyCovers) <= 0;
  }

  /** Reports a refused record (the node logs it). */
  onRefused: (reason: string) => void = () => {};
}

/** The expiry a record's item ends with here, as a deadline on this node's clock. */
function deadlineOf(record: RecordFrame, sentAt: number): number | null {
  const deadline = expiresAtFromTtl(record.ttlMs, sentAt);
  return deadline === 'unchanged' ? null : deadline;
}

/** flush_all's argument for a delay in seconds: relative up to 30 days, else a unix time. */
function flushExptime(seconds: number): number {
  return seconds <= RELATIVE_EXPTIME_MAX ? seconds : Math.round(Date.now() / 1000) + seconds;
}

function count(map: Map<RecordOp, number>, op: RecordOp): void {
  map.set(op, (map.get(op) ?? 0) + 1);
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

function isRefusal(status: string): boolean {
  return status.startsWith('SERVER_ERROR') || status.startsWith('CLIENT_ERROR') || status === 'ERROR';
}
