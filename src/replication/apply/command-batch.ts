/**
 * The quiet commands of one applier batch, built in place: meta commands into
 * large buffers (no string or Buffer per record on the hot path), binary
 * requests (keys no text command can name) apart, and how many commands each
 * record op sent, for the applied counters.
 */
import { metaSet, metaSetBytesMax, textSafeKey, writeMetaSet, type MetaSetFields } from '../../protocol/text/serializer';
import type { RecordFrame, RecordOp } from '../link/frames/messages';

/** A batch is sent once its commands reach this size (and at the end of every tick). */
export const BATCH_BYTES = 64 * 1024;

export class CommandBatch {
  /** Text commands written so far: in `buf` up to `used`, then in `full` (earlier buffers). */
  private full: Buffer[] = [];
  private buf = Buffer.allocUnsafe(BATCH_BYTES);
  private used = 0;
  /** Binary requests, and their bytes. */
  readonly binary: Buffer[] = [];
  binaryBytes = 0;
  /** Commands sent, by record op. */
  readonly sent = new Map<RecordOp, number>();

  /** Roughly the bytes written: enough to tell a batch due to be sent. */
  get size(): number {
    return this.full.length * BATCH_BYTES + this.used + this.binaryBytes;
  }

  /** A set or an add as a quiet ms. */
  store(record: Pick<RecordFrame, 'op' | 'key' | 'value' | 'flags'>, exptime: number): void {
    const { key, value } = record;
    const fields = storeFields(record, exptime);
    if (!textSafeKey(key)) {
      this.command(metaSet(key, value, fields), record.op);
      return;
    }
    this.count(record.op);
    const size = metaSetBytesMax(key, value.length, true);
    if (this.used + size > this.buf.length) {
      if (this.used > 0) this.full.push(this.buf.subarray(0, this.used));
      this.buf = Buffer.allocUnsafe(Math.max(BATCH_BYTES, size));
      this.used = 0;
    }
    this.used = writeMetaSet(this.buf, this.used, key, value, fields);
  }

  /** A text command built elsewhere, appended as is; `op` null for one that applies no record. */
  command(bytes: Buffer, op: RecordOp | null): void {
    if (op !== null) this.count(op);
    if (this.used > 0) this.full.push(this.buf.subarray(0, this.used));
    this.full.push(bytes);
    this.buf = this.buf.subarray(this.used);
    this.used = 0;
  }

  /** A binary request; `op` null for one that applies no record. */
  binaryCommand(packet: Buffer, op: RecordOp | null): void {
    if (op !== null) this.count(op);
    this.binary.push(packet);
    this.binaryBytes += packet.length;
  }

  /** The text commands, joined. */
  text(): Buffer {
    return Buffer.concat([...this.full, this.buf.subarray(0, this.used)]);
  }

  private count(op: RecordOp): void {
    this.sent.set(op, (this.sent.get(op) ?? 0) + 1);
  }
}

/** One object, refilled for every record stored: the applier's hot path allocates nothing per record. */
const STORE_FIELDS: MetaSetFields = { clientFlags: 0, exptime: 0, mode: 'S', quiet: true };

function storeFields(record: Pick<RecordFrame, 'op' | 'flags'>, exptime: number): MetaSetFields {
  STORE_FIELDS.clientFlags = record.flags;
  STORE_FIELDS.exptime = exptime;
  STORE_FIELDS.mode = record.op === 'add' ? 'E' : 'S';
  return STORE_FIELDS;
}
