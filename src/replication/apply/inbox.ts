/**
 * The peer's records as they arrive: numbered per peer run, applied in order,
 * each exactly once, and acknowledged cumulatively once memcached applied it.
 *
 * Where this node stands in the peer's stream (the peer's run id and the last
 * seq applied, once memcached has applied it) is saved as a checkpoint tied to
 * the local memcached (checkpoint-file.ts): a restarted proxy in front of a
 * memcached that kept its data resumes from there (partial resync), while a
 * memcached that restarted empty voids the checkpoint and so asks for a full
 * copy, as it must.
 */
import type { RecordFrame } from '../link/frames/messages';
import type { Applier, BatchAnswered } from './applier';
import type { ReplicationMetrics } from '../metrics';

const CHECKPOINT_EVERY_MS = 10;
/**
 * A full copy arrives faster than memcached can store it: the link is paused
 * above COPY_PAUSE_ABOVE copy records in flight and resumed below
 * COPY_RESUME_BELOW, so they cannot pile up in memory.
 */
export const COPY_PAUSE_ABOVE = 1024;
const COPY_RESUME_BELOW = 256;

export interface StreamPosition {
  runId: string;
  seq: number;
}

/** Where the position is kept between runs of the proxy (checkpoint-file.ts). */
export interface CheckpointStore {
  /** The position an earlier run saved, if it still holds for the local memcached. */
  load(): StreamPosition | null;
  /** False if it could not be saved (tried again with the next records applied). */
  save(position: StreamPosition): boolean;
  /** Nothing holds any more (a full copy is arriving). */
  clear(): void;
  /** The proxy stops: let go of the file. */
  close(): void;
}

export interface InboxEvents {
  /** The applied position advanced (send an ACK). */
  applied(seq: number): void;
  /** Few enough copy records are in flight to read more from the link. */
  copyDrained(): void;
  /** A record could not be applied: the link must be reset. */
  failed(reason: string): void;
}

export class Inbox {
  /** The peer run we are following, and the last seq applied / received from it. */
  private runId: string | null = null;
  private applied = 0;
  private received = 0;
  /** After a run change, the first record may start anywhere (the peer sends a full copy first). */
  private positionKnown = false;
  private checkpointDirty = false;
  /** A full copy from the peer is under way (or was cut short): this node's data is incomplete. */
  private copying = false;
  /** See `cold`. */
  private memcachedCold = true;
  private checkpointTimer: NodeJS.Timeout | null = null;
  /** whenApplied callers, resolved as the position moves. */
  private readonly waiters = new Set<{ seq: number; done(reached: boolean): void }>();

  /** Copy records sent to memcached and not answered yet. */
  copiesApplying = 0;

  constructor(
    private readonly applier: Applier,
    private readonly checkpoints: CheckpointStore,
    private readonly metrics: ReplicationMetrics,
    private readonly events: InboxEvents,
  ) {}

  /** A batch of records reached memcached (in the order they arrived), or failed to (see ApplierEvents.batchAnswered). */
  batchAnswered({ copies, lastSeq }: BatchAnswered, error?: Error): void {
    const before = this.copiesApplying;
    this.copiesApplying -= copies;
    if (error) {
      // The link resets and the peer sends again from the last record applied. Batches
      // still in flight must not move that position: one sent on a new connection could
      // succeed and claim records past the ones that just failed.
      this.received = this.applied;
      this.applier.newStream();
      this.events.failed(error.message);
    } else if (lastSeq > this.applied) {
      this.applied = lastSeq;
      this.events.applied(lastSeq);
      this.scheduleCheckpoint();
      this.wakeWaiters();
    }
    if (before > COPY_RESUME_BELOW && this.copiesApplying <= COPY_RESUME_BELOW) this.events.copyDrained();
  }

  /** Resumes from the checkpoint a previous run of this proxy saved, if it still holds. */
  loadCheckpoint(): void {
    const position = this.checkpoints.load();
    if (!position) return;
    this.follow(position.runId, position.seq);
    this.memcachedCold = false;
  }

  /** The last record applied, for our HELLO: the peer resumes after it (none while a copy is incomplete). */
  get position(): StreamPosition | null {
    return this.runId === null || this.copying ? null : { runId: this.runId, seq: this.applied };
  }

  /** The peer run this node followed so far (null before the first contact). */
  get followedRun(): string | null {
    return this.runId;
  }

  /** What to acknowledge to the peer: the last record of its current run applied here (copy or not). */
  get ackSeq(): number | null {
    return this.runId === null || !this.positionKnown ? null : this.applied;
  }

  get copyInProgress(): boolean {
    return this.copying;
  }

  /**
   * This node's memcached may lack items the pair holds, so a key found
   * missing there says nothing (see Recorder.readNow): it restarted empty
   * (forget), or this proxy started with no checkpoint of it (a first start,
   * or one after a copy was cut short), and no full copy from the peer has
   * ended since. A copy that reconciles a memcached that kept its data (the
   * peer restarted, or this proxy did) leaves it warm: a key missing there
   * was deleted (fault suite, seed 57: a restarted proxy's read back during
   * such a copy found a key a peer's delete had just removed, shipped
   * nothing, and the peer kept the value).
   */
  get cold(): boolean {
    return this.memcachedCold;
  }

  /**
   * The peer said hello: a new run of it means a fresh numbering. For the same
   * run, records received but still being applied stay counted: the peer
   * re-sends from our last *applied* one and those copies are dropped here.
   * After an unfinished copy the peer starts over and may resume anywhere.
   */
  peerRun(runId: string): void {
    if (runId !== this.runId || this.copying) this.follow(runId, 0, false);
  }

  /**
   * The local memcached lost its data: our position means nothing any more.
   * Until a full copy has arrived we claim none (the next HELLO asks for a
   * copy) and accept the live stream from wherever it continues.
   */
  forget(): void {
    this.memcachedCold = true;
    this.copying = true;
    this.positionKnown = false;
    this.checkpointDirty = false;
  }

  /** The peer starts a full copy: until it ends, our position must not be saved or claimed. */
  copyStarted(): void {
    this.copying = true;
    this.checkpointDirty = false;
    this.checkpoints.clear();
  }

  copyFinished(): void {
    this.copying = false;
    this.memcachedCold = false;
    this.checkpointDirty = true;
    this.saveCheckpoint();
  }

  /** A live (numbered) record; returns false if it breaks the sequence (the link must be reset). */
  receive(record: RecordFrame, origin: string, sentAt: number): boolean {
    if (record.seq === 0) {
      this.copiesApplying++;
      this.applier.applyCopy(record, sentAt);
      return true;
    }
    if (this.positionKnown && record.seq <= this.received) {
      this.metrics.recordsSkipped.labels('duplicate').inc();
      return true;
    }
    if (this.positionKnown && record.seq !== this.received + 1) return false;
    if (!this.positionKnown) {
      this.positionKnown = true;
      this.applied = record.seq - 1;
      this.wakeWaiters();
    }
    this.received = record.seq;
    this.applier.applyLive(record, origin, sentAt);
    return true;
  }

  /**
   * Resolves true once the followed run's records through `seq` are applied
   * here, false if that takes longer than `timeoutMs` (the caller goes on:
   * waiting forever on a peer that will not send them helps nobody).
   */
  whenApplied(seq: number, timeoutMs: number): Promise<boolean> {
    if (seq === 0 || this.reached(seq)) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => waiter.done(false), timeoutMs);
      const waiter = {
        seq,
        done: (reached: boolean) => {
          clearTimeout(timer);
          this.waiters.delete(waiter);
          resolve(reached);
        },
      };
      this.waiters.add(waiter);
    });
  }

  /**
   * Once a copy has arrived after forget(), the position claimed in HELLO
   * (`applied`) is where the peer resumes: reached even before the peer's
   * next record confirms it. An idle peer's copy request waited 30 s on it.
   */
  private reached(seq: number): boolean {
    return (this.positionKnown || !this.copying) && this.applied >= seq;
  }

  private wakeWaiters(): void {
    for (const waiter of this.waiters) if (this.reached(waiter.seq)) waiter.done(true);
  }

  private follow(runId: string, seq: number, known = true): void {
    this.runId = runId;
    this.applied = seq;
    this.received = seq;
    this.positionKnown = known;
    this.wakeWaiters();
    // Records of the stream followed until now that are still on their way to memcached must not move the new position.
    this.applier.newStream();
  }

  /**
   * Saves the position at most every CHECKPOINT_EVERY_MS, once memcached has
   * applied the records it covers. A proxy killed in between resumes from a
   * slightly older record (re-applied states are harmless), or needs a full
   * copy if it had saved none yet.
   */
  private scheduleCheckpoint(): void {
    this.checkpointDirty = true;
    if (this.checkpointTimer) return;
    this.checkpointTimer = setTimeout(() => {
      this.checkpointTimer = null;
      this.saveCheckpoint();
    }, CHECKPOINT_EVERY_MS);
    this.checkpointTimer.unref();
  }

  saveCheckpoint(): void {
    if (!this.checkpointDirty || this.runId === null || this.copying) return;
    this.checkpointDirty = !this.checkpoints.save({ runId: this.runId, seq: this.applied });
  }

  stop(): void {
    if (this.checkpointTimer) clearTimeout(this.checkpointTimer);
    this.checkpointTimer = null;
    this.checkpoints.close();
    for (const waiter of this.waiters) waiter.done(false);
  }
}
