/**
 * Turns writes that took effect locally into numbered records in the outbox
 * (the WriteSink the proxy reports to).
 *
 * Records carry state, not operations (docs/design.md §4): a set carries the item;
 * an append, incr or ma is read back from memcached first, because the reply
 * does not carry the resulting item. Read-backs are asynchronous, so records
 * wait in `queue` and enter the outbox strictly in the order their writes took
 * effect. A read-back that lands after a later write of the same key simply
 * ships the newer state in the older slot: state records converge anyway.
 */
import { Status, type BinaryPacket } from '../../protocol/binary/messages';
import type { Replay, WriteEffect, WriteSink } from '../../proxy/write-sink';
import { RELATIVE_EXPTIME_MAX, remainingLifeMs } from '../../protocol/text/expiry';
import { parseMetaHeader } from '../../protocol/text/meta-header';
import { metaInvalidate, metaRead } from '../../protocol/text/serializer';
import type { ReplyPart } from '../../protocol/text/reply-parser';
import { parseStats, startedAt, STATS_REQUEST } from '../../protocol/text/stats';
import { FLUSH_CANCEL } from '../link/frames/messages';
import type { FlushEdge, Stored } from '../flush/flush-edge';
import { flushTiming, type FlushSchedule, type FlushTiming } from '../flush/flush-schedule';
import { compareStamps, type HybridClock, type Stamp } from '../conflict/hlc';
import { binaryRead, flagsOf, needsBinary, type KnownExpiries } from '../binary-keys';
import type { LocalMemcached, LocalMemcachedBinary } from '../local-memcached';
import type { NewRecord, Outbox } from './outbox';
import { stampOf, type RecentWrites } from '../conflict/recent-writes';
import type { Contention } from '../apply/contention';
import type { StaleClock } from './stale-clock';

/** An exptime as memcached reads it, as an absolute deadline on this node's clock (ms). */
export function deadlineOf(exptime: number, now: number): number | null {
  if (exptime === 0) return null;
  if (exptime < 0) return now; // already expired
  if (exptime <= RELATIVE_EXPTIME_MAX) return now + exptime * 1000;
  return exptime * 1000;
}

/** The key of a write that set an expiry memcached may have got wrong on a stale clock (see stale-clock.ts); else null. */
function staleClockKey(effect: WriteEffect): Buffer | null {
  if (effect.kind !== 'set' && effect.kind !== 'touch') return null;
  // Keys only the binary protocol can name cannot be read back with their expiry (see binary-keys.ts).
  if (needsBinary(effect.key)) return null;
  return effect.exptime > 0 && effect.exptime <= RELATIVE_EXPTIME_MAX ? effect.key : null;
}

interface Pending {
  record: NewRecord | null;
  ready: boolean;
}

export interface RecorderEvents {
  /** Records were appended to the outbox. */
  appended(): void;
  /** A write took effect but its state could not be read: only a full copy can repair the peer. */
  lost(reason: string): void;
  /** A write's state could not be read, and the write itself was shipped for the peer to run (see readNow). */
  replayed(reason: string): void;
  /**
   * A key only the binary protocol can name was read back but its expiry is
   * not known here (see KnownExpiries): the peer gets a delete of the key.
   */
  expiryUnknown(key: Buffer): void;
}

/** Read backs wait as client writes do, and count as in flight (Contention.localStarted/localEnded). */
export type ReadBackGate = Pick<Contention, 'localStarted' | 'localEnded'>;

/** What the recorder remembers of local writes, for the applier to judge the peer's records by. */
export interface LocalHistory {
  /** Writes of a value (set, delete, append, ...): last writer wins. */
  values: RecentWrites;
  /** Touches (touch, gat, mg T): they change only the expiry, never the value. */
  touches: RecentWrites;
  flushes: FlushSchedule;
  /** Writes answered around a delayed flush's moment, checked once memcached's clock is past it (see flush-edge.ts). */
  nearFlush: Pick<FlushEdge, 'armed' | 'answered' | 'touched'>;
  /** Expiries of the keys only the binary protocol can name (its replies do not tell them). */
  expiries: KnownExpiries;
}

export class Recorder implements Pick<WriteSink, 'written'> {
  private readonly queue: Pending[] = [];
  /** Resolves once the last flush reported is noted in history.flushes (or could not be told). */
  flushNoted: Promise<void> = Promise.resolve();

  constructor(
    private readonly outbox: Outbox,
    private readonly clock: HybridClock,
    private readonly history: LocalHistory,
    private readonly local: LocalMemcached,
    /** For keys only the binary protocol can name (see binary-keys.ts). */
    private readonly binaryLocal: LocalMemcachedBinary,
    /** Orders read backs with the peer's records and flushes, as client writes are (see readBack). */
    private readonly gate: ReadBackGate,
    /** Told of every expiry memcached set or told, it has items read again after a pause (see stale-clock.ts). */
    private readonly staleClock: Pick<StaleClock, 'answered' | 'afterResume'>,
    private readonly events: RecorderEvents,
    /** False while this node's memcached may have lost what it held: a dropped connection not yet looked into, a cold memcached (Inbox.cold). */
    private readonly memcachedWhole: () => boolean,
  ) {}

  /** Never throws into the proxy: a write that cannot be recorded is reported lost. */
  written(effect: WriteEffect, receivedAt: number): void {
    try {
      this.record(effect, receivedAt);
      const expiring = staleClockKey(effect);
      if (expiring) this.staleClock.answered(expiring, receivedAt);
    } catch (error) {
      this.events.lost(`could not record a ${effect.kind}: ${(error as Error).message}`);
    }
  }

  private record(effect: WriteEffect, receivedAt: number): void {
    if (effect.kind === 'readback') {
      if (effect.mayRunLater) this.staleClock.afterResume(effect.key);
      return this.readBack(effect.key, effect.answered !== false, effect.replay);
    }
    const stamp = this.clock.stamp();
    if (effect.kind === 'flush') return this.recordFlush(effect.delay, stamp, receivedAt);
    const { nearFlush } = this.history;
    if (effect.kind === 'touch') {
      const deadline = deadlineOf(effect.exptime, receivedAt);
      this.history.touches.note(effect.key, stamp, deadline);
      if (nearFlush.armed) nearFlush.touched(effect.key, stamp, deadline);
    } else this.noteValueWrite(effect.key, stamp, storedBy(effect, receivedAt), effect.kind === 'delete');
    const binary = needsBinary(effect.key);
    const record = recordOf(effect, stamp, receivedAt);
    if (binary) this.noteExpiry(record);
    this.enqueue({ record, ready: true });
    if (effect.kind === 'touch' && !binary) this.shipTouchedItem(effect.key);
  }

  private noteValueWrite(key: Buffer, stamp: Stamp, stored: Stored | null, deleted = false): void {
    this.history.values.note(key, stamp, null, deleted);
    if (this.history.nearFlush.armed) this.history.nearFlush.answered(key, stamp, stored);
  }

  /**
   * Ships the state memcached holds for `key` (an append, an incr, a write
   * whose outcome is unknown), stamped as a write made when the read goes.
   * The read counts as a client write in flight (gate): the peer's immediate
   * flush waits for it to be answered before it collects the keys to keep,
   * and one that comes while a flush is put in place waits until the kept
   * keys are back. Seed 21 (600 s): a read again after a tick, noted and run
   * while B put A's flush in place, made B skip storing a decr's value back,
   * then read a miss and shipped a delete: the decr, answered after the
   * flush, was lost on both nodes.
   *
   * A write whose reply said it took effect (`answered`) is noted as written
   * at once, before the read waits: a peer's flush that waited for it keeps
   * the keys noted newer than itself, and this one must be among them. Noted
   * only at the read, an append answered while the flush waited was flushed,
   * and its read, let go after, shipped a delete (seed 41, 600 s, session 16).
   */
  private readBack(key: Buffer, answered: boolean, replay?: Replay): void {
    if (answered) this.noteValueWrite(key, this.clock.stamp(), null);
    // The read's connection as memcached answered the write: one that dropped since tells memcached may have died.
    const drops = this.readBackConnection(key).drops;
    this.gated(key, () => this.readNow(key, drops, answered, answered ? replay : undefined), `could not read back ${key.toString('latin1').slice(0, 60)}`);
  }

  private readBackConnection(key: Buffer): LocalMemcached | LocalMemcachedBinary {
    return needsBinary(key) ? this.binaryLocal : this.local;
  }

  /** Runs `read` once the gate lets a write of `key` go, counted in flight until it is answered. */
  private gated(key: Buffer, read: () => Promise<NewRecord | null>, failure: string): void {
    const gate = this.gate.localStarted(key, null);
    let record: Promise<NewRecord | null>;
    try {
      record = gate ? gate.then(read) : read();
    } catch (error) {
      record = Promise.reject(error as Error); // still ended below: a write counted in flight for good would hold every flush
    }
    this.later(
      record.finally(() => this.gate.localEnded(key, true)),
      (made) => made,
      failure,
    );
  }

  /**
   * Reads `key` again once memcached's clock has ticked after a pause (see
   * stale-clock.ts), and ships what memcached holds stamped as the write it
   * corrects, not as a new one: the last write of the key remembered here, a
   * touch if that is newer than the value's. The peer takes it only where that
   * write is still its last of the key (an equal stamp wins there), so it
   * corrects the write's expiry, or its loss to memcached's own stale-clock
   * flush, and never undoes a newer write of either node. Stamped as a new
   * write, a read again of a memcached that had not yet stored the peer's
   * latest write of the key would put the older value back on both nodes.
   * Keys whose last write was the peer's, or is forgotten, need nothing here.
   * Waits as read backs do (gate, see readBack).
   */
  readAgain(key: Buffer): void {
    const me = this.clock.nodeId;
    const valueWrite = this.history.values.lastWriteOf(key);
    const touchWrite = this.history.touches.lastWriteOf(key);
    const value = valueWrite ? stampOf(valueWrite) : null;
    const touch = touchWrite ? stampOf(touchWrite) : null;
    const touchIsLast = touch !== null && (value === null || compareStamps(touch, value) > 0);
    const corrected = touchIsLast ? touch : value;
    if (corrected === null || corrected.nodeId !== me) return;
    const read = async (): Promise<NewRecord | null> => {
      const item = this.itemRead(key, await this.local.request(metaRead(key, { cas: true })), corrected);
      // A touch corrects an expiry only: a value gone since has its own record (or goes with the value's correction).
      if (touchIsLast) return item?.op === 'set' ? newRecord(corrected, 'touch', key, item.expiresAt) : null;
      return item;
    };
    this.gated(key, read, `could not read again ${key.toString('latin1').slice(0, 60)}`);
  }

  /**
   * Notes `key` as written now and reads it: the record of what memcached
   * answered (null: nothing to ship).
   *
   * What memcached answers is the write's outcome only if memcached kept what
   * it held. A read whose connection dropped since memcached answered the
   * write (`drops`: its count then; memcached died, and may have restarted
   * empty or been refilled with older items), or one that finds the key gone
   * while this node's memcached may have lost items (a drop not yet looked
   * into, or a memcached cold until a copy from the peer ends, see
   * Inbox.cold), tells nothing of the write:
   * shipped, an absent key would delete the peer's value for good, the one the
   * refill is to bring back (resync test, "a write refused while the local
   * memcached is down…"). Such a read, and one that fails after memcached
   * answered the write, ships `replay` instead, the write as an operation for
   * the peer to run, where there is one. Without one, a key found gone ships
   * nothing (the write, if memcached answered it, is lost), and an item found
   * ships as read. A refill alone does not make an item found untrue:
   * replays then would run on the peer's values, which a reconciling copy may
   * find different (fault suite, seed 21: thousands of them during copies).
   */
  private readNow(key: Buffer, drops: number, answered: boolean, replay?: Replay): Promise<NewRecord | null> {
    // Noted before the read, so that an older record of the key meanwhile loses to it.
    const stamp = this.clock.stamp();
    this.noteValueWrite(key, stamp, null);
    const connection = this.readBackConnection(key);
    const read: Promise<NewRecord | null> =
      connection === this.binaryLocal
        ? this.binaryLocal.request(binaryRead(key)).then(([packet]) => this.fromBinaryReadBack(key, packet, stamp))
        : this.local.request(metaRead(key, { cas: true })).then((parts) => this.fromReadBack(key, parts, stamp));
    // If nothing can be shipped, nothing was written as far as the pair knows (the peer's value of the key must come back).
    const unnote = () => this.history.values.forget(key, stamp);
    const untold = (why: string): NewRecord | null => {
      const what = `${key.toString('latin1').slice(0, 60)}`;
      if (replay) {
        this.events.replayed(`could not read back ${what} after its ${replay.op} (${why}): the peer runs the ${replay.op} itself`);
        return newRecord(stamp, replay.op, key, null, 0, replay.value);
      }
      unnote();
      if (answered) this.events.lost(`could not read back ${what}: ${why}`);
      return null;
    };
    return read.then(
      (record) => {
        // An item found may be the refill's, from before the write: the replay is the write whatever memcached holds.
        // Without one, what memcached holds is shipped: a drop may be a stall's timeout, not a restart (CI, commands-
        // replication "writes that timed out in a stalled memcached…": 1,700 of 2,000 sets shipped nothing).
        if (connection.drops !== drops && replay) return untold('memcached may have restarted since it answered the write');
        if (record?.op === 'delete' && !this.memcachedWhole()) return untold('memcached may have restarted, and is not refilled yet');
        if (record === null) unnote();
        // Near a delayed flush, the flush edge learns what the write left, to store it back if memcached flushes
        // it after the moment (fault suite, seed 21: an append that b's memcached flushed late, kept on a). A copy:
        // the value is a view of the reply's chunk, and the edge keeps it for seconds.
        else if (record.op === 'set' && this.history.nearFlush.armed) {
          this.history.nearFlush.answered(key, stamp, { value: Buffer.from(record.value), flags: record.flags, expiresAt: record.expiresAt });
        }
        return record;
      },
      (error: Error) => {
        if (replay) return untold(error.message);
        unnote();
        throw error;
      },
    );
  }

  /**
   * A touch replicates as an expiry (so that it never undoes a newer value on
   * the peer), which finds nothing to extend on a peer whose copy of the item
   * expired while the link lagged. So the touched item goes too, as an add
   * stamped with its value's write (the one this node remembers, else as
   * having outlived the newest flush, as a full copy stamps it): the peer
   * stores it only if it lacks the key and wrote nothing newer there (a
   * delete or a flush there since wins, as it does here when it arrives).
   * Keys only the binary protocol can name are not read back with their
   * expiry: their touches go as before.
   */
  private shipTouchedItem(key: Buffer): void {
    const written = this.history.values.lastWriteOf(key);
    // The key's last write a delete: a peer's, noted as its record arrived and not yet run here (the touch found
    // the older item). That item under the delete's stamp would be taken by the peer for its own write.
    if (written?.deleted) return;
    const valueStamp = written ? stampOf(written) : { ...this.history.flushes.survivorStamp(), nodeId: '' };
    // Not a lost write if it cannot be read: the touch's own record went.
    const read = this.local.request(metaRead(key, { cas: true })).catch(() => null);
    this.later(read, (parts) => (parts ? this.touchedItem(key, parts, valueStamp) : null), 'could not read back a touched item');
  }

  private touchedItem(key: Buffer, parts: ReplyPart[], valueStamp: Stamp): NewRecord | null {
    const item = this.itemRead(key, parts, valueStamp);
    // Gone since (its delete has its record) or stale (an invalidation's record carries it): nothing to add.
    return item?.op === 'set' ? { ...item, op: 'add' } : null;
  }

  private fromReadBack(key: Buffer, parts: ReplyPart[], stamp: Stamp): NewRecord | null {
    const answeredAt = this.local.lastReceivedAt;
    this.staleClock.answered(key, answeredAt);
    return this.itemRead(key, parts, stamp);
  }

  /** metaRead's reply as a record stamped `stamp`. */
  private itemRead(key: Buffer, parts: ReplyPart[], stamp: Stamp): NewRecord | null {
    const header = parseMetaHeader(parts[parts.length - 1].raw);
    // memcached gives a stale item's recache token to the first read, and this one was no client's.
    if (header.won) this.giveBackToken(key, header.cas);
    return recordFromReadBack(key, parts, stamp, this.local.lastReceivedAt, header);
  }

  /**
   * An `md … I` again clears the token for the next client's read. Only if
   * the item is still the one read (its CAS): a client's new value since is
   * no longer stale, and must not become so.
   */
  private giveBackToken(key: Buffer, cas: number): void {
    this.local.request(metaInvalidate(key, false, cas)).catch(() => {});
  }

  private noteExpiry(record: NewRecord): void {
    const { expiries } = this.history;
    if (record.op === 'delete') expiries.forget(record.key);
    else expiries.note(record.key, record.expiresAt);
  }

  /** GetK answered the item (its expiry as last written here) or a miss (gone since: ship the delete). */
  private fromBinaryReadBack(key: Buffer, packet: BinaryPacket, stamp: Stamp): NewRecord | null {
    if (packet.header.status === Status.KeyNotFound) return newRecord(stamp, 'delete', key, null);
    if (packet.header.status !== Status.Success) return null;
    const expiresAt = this.history.expiries.deadlineOf(key);
    if (expiresAt === undefined) {
      // Better no item on the peer than one that outlives this one.
      this.events.expiryUnknown(key);
      return newRecord(stamp, 'delete', key, null);
    }
    return newRecord(stamp, 'set', key, expiresAt, flagsOf(packet), packet.value);
  }

  /**
   * An absolute flush time already past means "flush now" or "cancel the
   * scheduled flush" depending on when memcached started: ask it.
   */
  private recordFlush(exptime: number, stamp: Stamp, receivedAt: number): void {
    const nowSeconds = Math.floor(receivedAt / 1000);
    const noted = (timing: FlushTiming): NewRecord => {
      this.history.flushes.local(stamp, timing);
      return flushRecord(stamp, timing, receivedAt);
    };
    if (exptime <= RELATIVE_EXPTIME_MAX || exptime > nowSeconds) {
      this.enqueue({ record: noted(flushTiming(exptime, nowSeconds, 0)), ready: true });
      return;
    }
    const stats = this.local.request(STATS_REQUEST);
    this.flushNoted = stats.then(
      () => {},
      () => {},
    );
    this.later(
      stats,
      (parts) => noted(flushTiming(exptime, nowSeconds, startedAt(parseStats(parts)) ?? 0)),
      'could not tell a past flush_all time from a cancel',
    );
  }

  /** A record that needs a reply from memcached first keeps its place in the order. */
  private later<Reply>(reply: Promise<Reply>, toRecord: (reply: Reply) => NewRecord | null, failure: string): void {
    const pending: Pending = { record: null, ready: false };
    this.enqueue(pending);
    reply.then(
      (answer) => {
        pending.record = toRecord(answer);
        pending.ready = true;
        this.flush();
      },
      (error: Error) => {
        pending.ready = true;
        this.events.lost(`${failure}: ${error.message}`);
        this.flush();
      },
    );
  }

  private enqueue(pending: Pending): void {
    this.queue.push(pending);
    if (pending.ready && this.queue.length === 1) this.flush();
  }

  private flush(): void {
    let appended = false;
    while (this.queue.length > 0 && this.queue[0].ready) {
      const { record } = this.queue.shift()!;
      if (record) {
        this.outbox.append(record);
        appended = true;
      }
    }
    if (appended) this.events.appended();
  }
}

/** What a write stored, for a check around a flush's moment to store back (see flush-edge.ts). */
function storedBy(effect: WriteEffect, now: number): Stored | null {
  return effect.kind === 'set' ? { value: effect.value, flags: effect.flags, expiresAt: deadlineOf(effect.exptime, now) } : null;
}

/**
 * One record, every field in the same order: one is made per replicated
 * write, and spreading a shared base into each (as this once did) cost A a
 * few percent of its busy time under sets.
 */
function newRecord(stamp: Stamp, op: NewRecord['op'], key: Buffer, expiresAt: NewRecord['expiresAt'], flags = 0, value: Buffer = EMPTY, delay = 0): NewRecord {
  return { hlc: { wall: stamp.wall, logical: stamp.logical }, op, key, flags, value, delay, expiresAt };
}

const EMPTY = Buffer.alloc(0);

function recordOf(effect: Exclude<WriteEffect, { kind: 'readback' | 'flush' }>, stamp: Stamp, now: number): NewRecord {
  switch (effect.kind) {
    case 'set':
      return newRecord(stamp, 'set', effect.key, deadlineOf(effect.exptime, now), effect.flags, effect.value);
    case 'touch':
      return newRecord(stamp, 'touch', effect.key, deadlineOf(effect.exptime, now));
    case 'delete':
      return newRecord(stamp, 'delete', effect.key, null);
  }
}

/**
 * A flush carries its delay in seconds from its command (FLUSH_CANCEL for a
 * cancel) and, as its expiry, the moment it empties the cache: the serializer
 * sends what is left of it, so time in the backlog shortens the delay.
 */
function flushRecord(stamp: Stamp, timing: FlushTiming, now: number): NewRecord {
  if (timing.kind === 'cancel') return newRecord(stamp, 'flush', EMPTY, null, 0, EMPTY, FLUSH_CANCEL);
  const delayMs = timing.kind === 'delayed' ? timing.delayMs : 0;
  return newRecord(stamp, 'flush', EMPTY, now + delayMs, 0, EMPTY, delayMs / 1000);
}

/** metaRead's mg answered VA (the item now: a set, or an invalidate if it is stale) or EN (gone since: ship the delete). */
export function recordFromReadBack(
  key: Buffer,
  parts: ReplyPart[],
  stamp: Stamp,
  now: number,
  header = parseMetaHeader(parts[parts.length - 1].raw),
): NewRecord | null {
  const head = parts[parts.length - 1];
  if (header.status === 'EN') return newRecord(stamp, 'delete', key, null);
  if (header.status !== 'VA') return null;
  const { length, flags, ttl } = header;
  const expiresAt = ttl === null || ttl === -1 ? null : now + remainingLifeMs(ttl);
  const value = head.raw.subarray(head.raw.length - length - 2, head.raw.length - 2);
  return newRecord(stamp, header.stale ? 'invalidate' : 'set', key, expiresAt, flags, value);
}
