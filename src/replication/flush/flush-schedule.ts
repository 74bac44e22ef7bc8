/**
 * flush_all as memcached runs it, kept the same on both nodes.
 *
 * memcached holds one setting, oldest_live (proto_text.c,
 * process_flush_all_command; items.c, item_is_flushed): `flush_all` with no
 * delay (or one <= 0) empties the cache at once; `flush_all N` schedules the
 * moment N seconds on (N over 30 days is a unix time), and at that moment
 * every item stored before it goes, including those stored during the delay.
 * A later flush_all replaces a scheduled one: `flush_all 0` flushes now and
 * cancels it, and an absolute time before memcached started cancels it and
 * flushes nothing.
 *
 * Both nodes keep, in HLC time, the moment of the newest flush that has taken
 * effect (the floor: a record stamped before it was flushed on its origin or
 * will be, and must not come back) and the flush still scheduled, with the
 * command that scheduled it (a newer command replaces it, as in memcached).
 * A record written during a delay is still replicated: each memcached
 * flushes it when the moment comes.
 */
import { RELATIVE_EXPTIME_MAX } from '../../protocol/text/expiry';
import { compareStamps, type Hlc, type Stamp } from '../conflict/hlc';

/** A flush_all as the recorder normalised it: how long after its command it empties the cache. */
export type FlushTiming = { kind: 'now' } | { kind: 'delayed'; delayMs: number } | { kind: 'cancel' };

/** What the applier does with a peer's flush. */
export type FlushAction =
  | { kind: 'skip' }
  /** Schedule memcached's own delayed flush, at this moment. */
  | { kind: 'schedule'; at: Stamp }
  /** Cancel the scheduled flush without flushing anything. */
  | { kind: 'cancel' }
  /**
   * Flush now, but keep the writes stamped after `moment` (they reached this
   * node after the flush happened on its origin, where they survive), then
   * schedule again the newer delayed flush that was pending, at its moment `reschedule`.
   */
  | { kind: 'flush'; moment: Stamp; reschedule: Stamp | null };

/** A delayed flush memcached has scheduled: the command that scheduled it, and its moment. */
export interface PendingFlush {
  command: Stamp;
  at: Stamp;
}

/** What a restarted memrepl must know again (see FlushScheduleFile): the floor and the flush scheduled. */
export interface FlushMemory {
  floor: Stamp | null;
  pending: PendingFlush | null;
}

export interface FlushScheduleEvents {
  /** memcached's scheduled flush was set or replaced (null: none is, it was cancelled or a flush ran now). */
  pending(at: Stamp | null): void;
  /** The floor or the flush scheduled changed. */
  changed(memory: FlushMemory): void;
}

/** How long before its moment memcached may already show a scheduled flush done (its cut, and a margin). */
const CUT_LEAD_MS = 1100;
/** How long after its moment memcached has surely run a scheduled flush (its one-second clock, and a margin). */
const CUT_LAG_MS = 2000;

const NO_EVENTS: FlushScheduleEvents = { pending() {}, changed() {} };

export class FlushSchedule {
  private floor: Stamp | null = null;
  private pending: PendingFlush | null = null;
  /** The newest flush memcached answered here (see ran), and the newest scheduled one that came due. */
  private newestRan: Stamp | null = null;
  private newestDue: Stamp | null = null;

  constructor(
    private readonly wallClock: () => number = Date.now,
    private readonly events: FlushScheduleEvents = NO_EVENTS,
  ) {}

  /** A client's flush_all took effect here (its command is the newest this node knows). */
  local(command: Stamp, timing: FlushTiming): void {
    if (timing.kind === 'now') {
      this.flushed(command);
      this.ran(command);
    }
    this.setPending(timing.kind === 'delayed' ? { command, at: after(command, timing.delayMs) } : null);
  }

  /**
   * The peer's flush_all: `remainingMs` is what is left of its delay on this
   * node's clock (<= 0 when it came due on the way, or had no delay).
   */
  incoming(command: Stamp, timing: FlushTiming, remainingMs: number): FlushAction {
    const supersededBy = this.newerPending(command);
    if (timing.kind === 'cancel') {
      if (supersededBy) return { kind: 'skip' };
      this.setPending(null);
      return { kind: 'cancel' };
    }
    if (timing.kind === 'delayed' && remainingMs > 0) {
      if (supersededBy) return { kind: 'skip' };
      const at = after(command, timing.delayMs);
      this.setPending({ command, at });
      return { kind: 'schedule', at };
    }
    const moment = timing.kind === 'delayed' ? after(command, timing.delayMs) : command;
    this.promoteDue();
    if (this.floor !== null && compareStamps(moment, this.floor) <= 0) return { kind: 'skip' };
    this.flushed(moment);
    // memcached's flush_all replaces what it had scheduled: put back a newer schedule.
    const reschedule = supersededBy ? supersededBy.at : null;
    if (!supersededBy) this.setPending(null);
    return { kind: 'flush', moment, reschedule };
  }

  /**
   * What an earlier run of memrepl knew (see FlushScheduleFile). Returns the
   * flush still to come that it restored (memcached may have lost it), if any.
   */
  restore(memory: FlushMemory): PendingFlush | null {
    if (memory.floor) {
      this.flushed(memory.floor);
      this.ran(memory.floor);
    }
    const { pending } = memory;
    if (!pending || pending.at.wall <= this.wallClock() || this.newerPending(pending.command)) return null;
    this.setPending(pending);
    return pending;
  }

  /**
   * Was a record with this stamp written before a flush that has emptied
   * this cache, or before the scheduled one, which memcached may already
   * show done (it cuts within the second before the moment, see
   * memcached-clock.ts)? Applied now, such a record would show, for a
   * moment, an item its origin's clients already see gone.
   */
  erases(stamp: Stamp): boolean {
    this.promoteDue();
    if (this.floor !== null && compareStamps(stamp, this.floor) <= 0) return true;
    const pending = this.pending;
    return pending !== null && this.wallClock() >= pending.at.wall - CUT_LEAD_MS && compareStamps(stamp, pending.at) <= 0;
  }

  /** memcached answered the flush_all of this moment (the peer's, as the applier sent it): it has run. */
  ran(moment: Stamp): void {
    if (this.newestRan === null || compareStamps(moment, this.newestRan) > 0) this.newestRan = moment;
  }

  /**
   * Just after the newest flush memcached has surely run here. A full copy
   * stamps with it an item whose last write this node no longer remembers:
   * the item outlived that flush here, and goes on the peer with any later
   * flush the peer has run and this node not yet (as it will here once this
   * node runs it). Stamped when it was read instead, such an item read before
   * this node ran the peer's newest flush came back on the peer for good.
   * With no flush ever run here: the oldest stamp that is not 0 (0 marks a
   * copy from a memrepl that did not stamp them, see Applier.applyCopy).
   */
  survivorStamp(): Hlc {
    this.promoteDue();
    let newest = this.newestRan;
    const due = this.newestDue;
    if (due !== null && this.wallClock() >= due.wall + CUT_LAG_MS && (newest === null || compareStamps(due, newest) > 0)) newest = due;
    return newest === null ? { wall: 1, logical: 0 } : { wall: newest.wall, logical: newest.logical + 1 };
  }

  /** The newest flush done (a due one counts as done) and the moment still scheduled, if any. */
  get state(): { floor: Stamp | null; pendingAt: Stamp | null } {
    this.promoteDue();
    return { floor: this.floor, pendingAt: this.pending?.at ?? null };
  }

  private setPending(pending: PendingFlush | null): void {
    this.pending = pending;
    this.events.pending(pending?.at ?? null);
    this.events.changed({ floor: this.floor, pending });
  }

  private newerPending(command: Stamp): PendingFlush | null {
    return this.pending !== null && compareStamps(this.pending.command, command) > 0 ? this.pending : null;
  }

  /** The scheduled flush's moment has come: memcached has flushed (not a change of schedule for events.pending). */
  private promoteDue(): void {
    if (this.pending === null || this.pending.at.wall > this.wallClock()) return;
    const { at } = this.pending;
    this.pending = null;
    this.newestDue = at;
    this.flushed(at);
  }

  private flushed(moment: Stamp): void {
    if (this.floor !== null && compareStamps(moment, this.floor) <= 0) return;
    this.floor = moment;
    this.events.changed({ floor: moment, pending: this.pending });
  }
}

function after(stamp: Stamp, ms: number): Stamp {
  return { wall: stamp.wall + ms, logical: stamp.logical, nodeId: stamp.nodeId };
}

/**
 * flush_all's argument as memcached reads it, against the unix time now and
 * the time the local memcached started (both in seconds).
 */
export function flushTiming(exptime: number, nowSeconds: number, memcachedStarted: number): FlushTiming {
  if (exptime <= 0) return { kind: 'now' };
  if (exptime <= RELATIVE_EXPTIME_MAX) return { kind: 'delayed', delayMs: exptime * 1000 };
  if (exptime <= memcachedStarted) return { kind: 'cancel' };
  if (exptime <= nowSeconds) return { kind: 'now' };
  return { kind: 'delayed', delayMs: (exptime - nowSeconds) * 1000 };
}

/**
 * A flush_all argument that cancels a scheduled flush and flushes nothing on
 * any memcached: an absolute time (over 30 days) long before it started.
 */
export const CANCEL_FLUSH_EXPTIME = RELATIVE_EXPTIME_MAX + 1;
