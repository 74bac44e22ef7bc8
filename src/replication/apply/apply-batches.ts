/**
 * The applier's records on their way to memcached. Judged records are written
 * as quiet meta commands (`ms ... q`, `md ... q`, `flush_all noreply`) into
 * one batch per tick, closed by `mn`: memcached answers only what went wrong,
 * and the whole batch settles with one reply. A record costs no promise, no
 * reply and no socket write of its own: a copy is a million records back to
 * back, and a busy peer sends tens of thousands a second.
 *
 * Keys no text command can name (see binary-keys.ts) go, in the same batch,
 * as quiet binary requests on a binary connection, closed by a NOOP. A key
 * always takes the same connection, and each is FIFO, so each key's records
 * apply in order; batches settle in the order they were sent, whichever
 * connection answers first. An immediate flush is a barrier across the two
 * (see send).
 */
import type { BinaryPacket } from '../../protocol/binary/messages';
import { exptimeFor } from '../../protocol/text/expiry';
import type { ReplyPart } from '../../protocol/text/reply-parser';
import { metaAppend, metaArithmetic, metaDelete, metaInvalidate, metaTouch } from '../../protocol/text/serializer';
import { binaryDelete, binaryRefusal, binaryReplay, binaryStore, binaryTouch, needsBinary } from '../binary-keys';
import { expiresAtFromTtl, isReplayed, type Expiry, type RecordFrame, type RecordOp } from '../link/frames/messages';
import type { Stored } from '../flush/flush-edge';
import type { Stamp } from '../conflict/hlc';
import type { LocalMemcached, LocalMemcachedBinary } from '../local-memcached';
import type { ReplicationMetrics } from '../metrics';
import type { LocalHistory } from '../send/recorder';
import type { ApplierEvents, BatchAnswered } from './applier';
import { BATCH_BYTES, CommandBatch } from './command-batch';
import type { Contention } from './contention';

/**
 * Records on their way to memcached as one batch of quiet commands.
 */
export interface Batch {
  commands: CommandBatch;
  /** Contention tickets of the records sent (they settle with the batch). */
  tickets: number[];
  /** Full-copy records it accounts for, stored or skipped as conflicts. */
  copies: number;
  /** The last live (numbered) record it accounts for; 0 for none. */
  lastSeq: number;
  /** The live stream its records belong to (see newStream). */
  stream: number;
  /** An immediate flush's batch (see sendFlush). */
  flush?: FlushInBatch;
  /** Writes to report once answered, while a delayed flush's moment is near (see flush-edge.ts). */
  nearFlush?: Array<{ key: Buffer; stamp: Stamp; stored: Stored | null }>;
}

/** What memcached answered a batch before its sentinels: the failures, or the reads of a flush's batch. */
export type Answers = [text: ReplyPart[], binary: BinaryPacket[]];
const NO_TEXT: Promise<ReplyPart[]> = Promise.resolve([]);
const NO_BINARY: Promise<BinaryPacket[]> = Promise.resolve([]);

/** An immediate flush's part in its batch of its own (see sendFlush). */
export interface FlushInBatch {
  /** Writes the flush's commands: only when its turn comes, once every batch before it was sent. */
  fill(commands: CommandBatch): Promise<void>;
  /**
   * memcached answered the batch; runs before any batch after it is sent.
   * Takes out of `answers` the replies that are no failure (its reads).
   */
  answered(answers: Answers): Promise<void>;
  /** The batch failed (its commands may not have run). */
  failed(): void;
}

/** Flow control (see APPLYING_PAUSE_ABOVE): the bytes of commands on their way to memcached. */
export interface ApplyingBytes {
  /** `bytes` of commands went to memcached. */
  sent(bytes: number): void;
  /** memcached answered `bytes` of commands sent (or they failed). */
  answered(bytes: number): void;
}

export class ApplyBatches {
  private batch: Batch | null = null;
  private currentStream = 0;
  /** Batches settle one after the other, in the order they were sent. */
  private settling: Promise<void> = Promise.resolve();
  /** An immediate flush in flight: batches judged after it wait until memcached ran it (see send). */
  private barrier: Promise<void> | null = null;

  constructor(
    private readonly local: LocalMemcached,
    /** For keys no text command can name. */
    private readonly binaryLocal: LocalMemcachedBinary,
    private readonly contention: Contention,
    private readonly history: Pick<LocalHistory, 'nearFlush' | 'expiries'>,
    private readonly metrics: ReplicationMetrics,
    private readonly events: Pick<ApplierEvents, 'batchAnswered' | 'refused'>,
    private readonly applying: ApplyingBytes,
  ) {}

  /** The live stream the batches judged now belong to (see newStream). */
  get stream(): number {
    return this.currentStream;
  }

  /** Batches sent before now report no live position when they settle (see Applier.newStream). */
  newStream(): void {
    this.flush();
    this.currentStream++;
  }

  /** Resolves once every batch sent so far, and the pending one, settled (see Applier.idle). Never rejects. */
  idle(): Promise<void> {
    this.flush();
    return this.settling;
  }

  /** The batch records judged in this tick go into. */
  open(): Batch {
    if (this.batch) return this.batch;
    // Sent at the end of the tick: everything judged in this tick goes out in one write.
    process.nextTick(() => this.flush());
    this.batch = { commands: new CommandBatch(), tickets: [], copies: 0, lastSeq: 0, stream: this.currentStream };
    return this.batch;
  }

  /** The record's quiet command into the batch, its key counted in flight for Contention. Returns the deadline it gave the item. */
  write(batch: Batch, record: RecordFrame, sentAt: number, expiresAt?: number | null): Expiry {
    if (record.seq > 0) batch.tickets.push(this.contention.applyStarted(record.key));
    const deadline = expiresAt !== undefined ? expiresAt : expiresAtFromTtl(record.ttlMs, sentAt);
    const exptime = exptimeFor(deadline, Date.now());
    if (needsBinary(record.key)) this.writeBinary(batch, record, deadline, exptime);
    else this.writeText(batch, record, exptime);
    if (batch.commands.size >= BATCH_BYTES) this.flush();
    return deadline;
  }

  private writeText(batch: Batch, record: RecordFrame, exptime: number): void {
    switch (record.op) {
      case 'set':
      case 'add':
        batch.commands.store(record, exptime);
        break;
      case 'touch':
        batch.commands.command(metaTouch(record.key, exptime, true), record.op);
        break;
      case 'invalidate':
        // The item as the peer holds it, then the mark: the peer's value, not this node's one, is stale.
        batch.commands.store(record, exptime);
        batch.commands.command(metaInvalidate(record.key, true), null);
        break;
      case 'delete':
      case 'flush':
        batch.commands.command(metaDelete(record.key, true), record.op);
        break;
      case 'append':
      case 'prepend':
        batch.commands.command(metaAppend(record.key, record.value, record.op), record.op);
        break;
      case 'incr':
      case 'decr':
        batch.commands.command(metaArithmetic(record.key, record.op, record.value), record.op);
        break;
    }
  }

  /** The binary twin of writeText, remembering the expiry it writes (the binary protocol cannot read it back). */
  private writeBinary(batch: Batch, record: RecordFrame, deadline: number | null, exptime: number): void {
    const { key } = record;
    const { expiries } = this.history;
    if (record.op === 'invalidate') {
      // Only meta commands invalidate, and none can name this key: no memrepl sends this.
      this.metrics.recordsSkipped.labels('refused').inc();
      this.events.refused('memcached has no binary command to invalidate a key no text command can name');
      return;
    }
    if (record.op === 'delete' || record.op === 'flush') {
      expiries.forget(key);
      batch.commands.binaryCommand(binaryDelete(key), record.op);
      return;
    }
    if (isReplayed(record.op)) {
      // An append or incr keeps the item's expiry, as noted.
      batch.commands.binaryCommand(binaryReplay(record.op, key, record.value), record.op);
      return;
    }
    switch (record.op) {
      case 'set':
      case 'add':
        // An add that finds the key stored leaves that item's expiry as it was.
        if (record.op === 'set' || expiries.deadlineOf(key) === undefined) expiries.note(key, deadline);
        batch.commands.binaryCommand(binaryStore(record.op, key, record.value, record.flags, exptime), record.op);
        return;
      case 'touch':
        expiries.note(key, deadline);
        batch.commands.binaryCommand(binaryTouch(key, exptime), record.op);
        return;
    }
  }

  /**
   * An immediate flush: `batch` (the pending one, whose last record is the
   * flush's) is sent first, and the flush follows in a batch of its own, a
   * barrier (see send), that accounts for the flush's place in the stream.
   */
  sendFlush(batch: Batch, flush: FlushInBatch): void {
    // In a batch of its own, so that memcached's answers before its sentinels are exactly its reads'.
    const lastSeq = batch.lastSeq;
    batch.lastSeq = 0;
    this.flush();
    const own = this.open();
    own.lastSeq = lastSeq;
    own.flush = flush;
    this.flush(true);
  }

  /**
   * Sends the pending batch (`barrier`: a flush's, see send). One that
   * accounts for live records goes even with no command in it (all were
   * conflicts): its `mn` keeps the applied position from passing records
   * still in flight before it.
   */
  flush(barrier = false): void {
    const batch = this.batch;
    if (!batch) return;
    this.batch = null;
    const { flush } = batch;
    if (batch.commands.sent.size === 0 && batch.lastSeq === 0 && !flush) {
      this.events.batchAnswered({ copies: batch.copies, lastSeq: 0 });
      return;
    }
    let bytes = 0;
    const commands = (): [Buffer, Buffer[]] => {
      const text = batch.commands.text();
      bytes = text.length + batch.commands.binaryBytes;
      this.applying.sent(bytes);
      return [text, batch.commands.binary];
    };
    const answered = (): BatchAnswered => {
      this.applying.answered(bytes);
      return { copies: batch.copies, lastSeq: batch.stream === this.currentStream ? batch.lastSeq : 0 };
    };
    const answers = flush
      ? this.send(
          () => flush.fill(batch.commands).then(commands),
          barrier,
          (got) => flush.answered(got),
        )
      : this.send(commands(), barrier);
    if (flush) answers.catch(() => flush.failed());
    const settle = () =>
      answers.then(
        ([failures, binaryFailures]) => {
          this.contention.appliesEnded(batch.tickets);
          for (const { key, stamp, stored } of batch.nearFlush ?? []) this.history.nearFlush.answered(key, stamp, stored);
          this.countOutcomes(batch.commands.sent, [...failures.map(refusalOf), ...binaryFailures.map(binaryRefusal)]);
          this.events.batchAnswered(answered());
        },
        (error: Error) => {
          this.contention.appliesEnded(batch.tickets);
          this.events.batchAnswered(answered(), error);
        },
      );
    this.settling = this.settling.then(settle, settle);
  }

  /**
   * Sends a batch's text commands (with `mn`, unless it has only binary ones)
   * and its binary requests (with a NOOP). Each connection keeps its order,
   * which keeps each key's. An immediate flush (`barrier`) must also fall
   * between the binary requests sent before it and after it: its batch sends
   * its binary part first (reads of keys to keep, or just the NOOP: answered
   * after every binary request sent before) and its text part once memcached
   * answered that, and batches sent after it wait until memcached ran it. (A
   * delayed flush and a cancel need no barrier: memcached flushes what was
   * stored before the moment, whenever the command ran.)
   */
  private send(
    commands: [Buffer, Buffer[]] | (() => Promise<[Buffer, Buffer[]]>),
    barrier: boolean,
    beforeRelease?: (answers: Answers) => Promise<void>,
  ): Promise<Answers> {
    const run = async (): Promise<Answers> => {
      const [text, binary] = typeof commands === 'function' ? await commands() : commands;
      const sendText = () => (text.length > 0 || binary.length === 0 ? this.local.quietBatch(text) : NO_TEXT);
      const sendBinary = () => (binary.length > 0 || barrier ? this.binaryLocal.quietBatch(Buffer.concat(binary)) : NO_BINARY);
      if (!barrier) return Promise.all([sendText(), sendBinary()]);
      const packets = await sendBinary();
      return [await sendText(), packets];
    };
    const ran = this.barrier ? this.barrier.then(run) : run();
    const answers = beforeRelease ? ran.then(async (got) => (await beforeRelease(got), got)) : ran;
    if (barrier) {
      const done = answers.then(
        () => {},
        () => {},
      );
      this.barrier = done;
      void done.then(() => {
        if (this.barrier === done) this.barrier = null;
      });
    }
    return answers;
  }

  /**
   * memcached answered only what did not go well. NS (an add of a key it has),
   * NF (a delete or touch of a key it lacks) and HD (a touch that hit: mg's q
   * hides only misses) are fine; an error is a record memcached refuses (out
   * of memory, too large for this memcached's -I), which would be refused
   * again on every retry, so it is counted and logged instead of wedging the
   * link.
   */
  private countOutcomes(sent: Map<RecordOp, number>, refusals: Array<string | null>): void {
    let refused = 0;
    for (const refusal of refusals) {
      if (refusal === null) continue;
      refused++;
      this.events.refused(`memcached refused a replicated record: ${refusal}`);
    }
    if (refused > 0) this.metrics.recordsSkipped.labels('refused').inc(refused);
    // Refusals are not told apart by op: count them against the largest first.
    for (const [op, n] of [...sent].sort((a, b) => b[1] - a[1])) {
      const taken = Math.min(n, refused);
      refused -= taken;
      if (n > taken) this.metrics.recordsApplied.labels(op).inc(n - taken);
    }
  }
}

/** A record with the item whole (an add's may not be stored). */
export function carriesItem(op: RecordOp): boolean {
  return op === 'set' || op === 'invalidate';
}

/** A text answer that means memcached refused the record, as a line for the log; null for one that is fine. */
function refusalOf({ line }: ReplyPart): string | null {
  return line.startsWith('SERVER_ERROR') || line.startsWith('CLIENT_ERROR') || line === 'ERROR' ? line : null;
}
