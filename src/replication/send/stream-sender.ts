/**
 * Sending this node's numbered records to the peer on the active link: from
 * where the peer said it stands, as soon as they are appended, while the
 * socket takes them (one cork per burst). A record larger than the peer
 * accepts goes as a delete of its key, so the stream keeps its numbering.
 */
import type { Logger } from '../../log';
import { isReplayed } from '../link/frames/messages';
import { serializeRecord } from '../link/frames/serializer';
import type { Link } from '../link/link';
import { WritePacer } from '../link/write-pacer';
import type { ReplicationMetrics } from '../metrics';
import { SEND_EVERY_MS } from '../options';
import type { Outbox, OutboxCursor, OutboxRecord } from './outbox';

/** A warning repeated for every record would flood the log: at most one per this long. */
const WARN_EVERY_MS = 10_000;
const EMPTY_VALUE = Buffer.alloc(0);

export class StreamSender {
  private cursor: OutboxCursor | null = null;
  private readonly pacer = new WritePacer(SEND_EVERY_MS, () => this.pump());
  private lastDeleteInsteadLog = 0;

  constructor(
    private readonly outbox: Outbox,
    /** The link records go to, if one is up. */
    private readonly link: () => Link | null,
    /** The peer fell further behind than the backlog holds: only a full copy can bring it up to date. */
    private readonly fellBehind: () => void,
    private readonly metrics: ReplicationMetrics,
    private readonly log: Logger,
  ) {}

  /** Sends what follows record `seq` from now on; false if the backlog no longer holds all of it (a gap). */
  startAfter(seq: number): boolean {
    const cursor = this.outbox.cursor(seq);
    this.cursor = cursor === 'gap' ? null : cursor;
    this.schedule();
    return cursor !== 'gap';
  }

  /** Records waiting to be sent (after startAfter). */
  get pending(): number {
    return this.cursor?.pending ?? 0;
  }

  /** The link closed: nothing is sent until the next startAfter. */
  stop(): void {
    this.cursor = null;
  }

  /** Sends soon: at the end of this turn of the event loop, or SEND_EVERY_MS after the last write. */
  schedule(): void {
    this.pacer.schedule();
  }

  /** Sends records from the cursor until caught up or the socket pushes back. */
  pump(): void {
    const link = this.link();
    const cursor = this.cursor;
    this.updateGauges();
    if (!link || !cursor) return;
    const now = Date.now();
    const peerLimit = link.peer?.maxFrameBytes ?? Infinity;
    let sent = 0;
    link.socket.cork();
    while (!link.congested) {
      const record = cursor.next();
      if (record === null) break;
      if (record === 'gap') {
        this.fellBehind();
        this.cursor = this.outbox.cursor(this.outbox.oldestSeq - 1) as OutboxCursor;
        break;
      }
      link.write(serializeRecord(this.forPeer(record, link, peerLimit), now));
      sent++;
    }
    link.socket.uncork();
    if (sent > 0) this.pacer.wrote();
    this.metrics.recordsSent.inc(sent);
  }

  /**
   * The peer applied our records up to `seq`: their lag is measured, the
   * backlog may drop them. False if that acknowledges nothing new.
   */
  acknowledged(seq: number, now: number): boolean {
    const before = this.outbox.acknowledgedSeq;
    if (seq <= before || seq > this.outbox.lastSeq) return false;
    for (let s = before + 1; s <= seq; s++) {
      const appendedAt = this.outbox.appendedAt(s);
      if (appendedAt !== undefined) this.metrics.lag.observe((now - appendedAt) / 1000);
    }
    this.metrics.recordsAcked.inc(seq - before);
    this.outbox.acknowledge(seq);
    this.updateGauges();
    return true;
  }

  /** The backlog's gauges, as they stand (after appends, sends and acknowledgements). */
  updateGauges(): void {
    this.metrics.backlogBytes.set(this.outbox.bytes);
    this.metrics.backlogRecords.set(this.outbox.length);
    this.metrics.unackedRecords.set(this.outbox.unacknowledged);
  }

  /** The record as the peer can take it (see tooLargeForPeer and notUnderstood). */
  private forPeer(record: OutboxRecord, link: Link, peerLimit: number): OutboxRecord {
    if (record.bytes > peerLimit) return this.tooLargeForPeer(record, peerLimit);
    return isReplayed(record.op) && !link.peer?.opRecords ? this.notUnderstood(record) : record;
  }

  /**
   * A replayed write (see RecordOp) for a peer that predates them: its parser
   * would refuse the frame and reset the link, forever. The key's value there
   * is older than the write, and this node's memcached, which held the newer
   * one, is gone: the peer drops the key.
   */
  private notUnderstood(record: OutboxRecord): OutboxRecord {
    return this.deleteInstead(record, 'not_understood_by_peer', `the peer cannot run a replayed ${record.op} (an older memrepl)`);
  }

  /**
   * A record whose frame the peer would refuse (its memcached runs with a
   * smaller -I): it would reset the link and come again forever. The peer
   * gets a delete of the key in its place, which is what its memcached does
   * with a set it cannot hold.
   */
  private tooLargeForPeer(record: OutboxRecord, peerLimit: number): OutboxRecord {
    const what = `${record.op} of ${record.value.length} bytes is larger than the peer accepts (${peerLimit}-byte frames)`;
    return this.deleteInstead(record, 'too_large_for_peer', what);
  }

  /** A delete of the record's key in its place, counted under `reason`, and said at most every WARN_EVERY_MS. */
  private deleteInstead(record: OutboxRecord, reason: string, what: string): OutboxRecord {
    this.metrics.recordsSkipped.labels(reason).inc();
    const now = Date.now();
    if (now - this.lastDeleteInsteadLog >= WARN_EVERY_MS) {
      this.lastDeleteInsteadLog = now;
      this.log.warn(
        `replication: ${what} under "${record.key.toString('latin1').slice(0, 60)}"; the peer deletes the key instead (counted in memrepl_replication_records_skipped_total{reason="${reason}"})`,
      );
    }
    return { ...record, op: 'delete', value: EMPTY_VALUE, flags: 0, expiresAt: null };
  }
}
