/**
 * What a single-writer key may hold at the end of a fault run, replayed from
 * its writer's log (history.ts). Pure: attempts, flushes and kills in, the
 * set of possible final states out. The rules it implements are stated in
 * checker.ts ("The rules"); the constants below are their tolerances.
 *
 * The replay follows every history the log allows, as a set of branches:
 * an op without a reply forks (took effect / did not), a TTL near its
 * deadline forks (expired / not yet), a flush whose moment is uncertain
 * relative to an op forks (before / after). Acknowledged replies prune: an
 * append that said NOT_STORED keeps only the branches where the key was
 * absent. The set is bounded (MAX_BRANCHES); past it the key is only
 * checked for convergence.
 */
import type { Attempt, CopyWindow, Flush, Kill, Op, Stop } from './history';

/** memcached's clock ticks once a second and replication re-rounds TTLs: a deadline is known to about this. */
export const TTL_SLACK_MS = 2000;
/** An immediate flush and a write within this of each other may be ordered either way (their HLC stamps tie within a millisecond). */
export const FLUSH_MARGIN_MS = 50;
/** A delayed flush erases what was stored before its deadline, give or take memcached's one-second clock. */
export const DELAYED_FLUSH_SLACK_MS = 2500;
/**
 * memrepl puts the writes made around a delayed flush's moment where their
 * stamps say once memcached's own clock is past it (flush-edge.ts): until
 * then a key written near the moment may still be deleted, or stored back.
 */
export const FLUSH_EDGE_MS = 2000;
/**
 * How late a flush may reach the other node (a stalled link, a stopped
 * memcached): until then that node's clients may still see what it erases.
 */
export const FLUSH_TRANSIT_MS = 10_000;
/**
 * A write without a reply may still take effect this long after it was sent
 * (a memcached stopped with SIGSTOP runs what it had buffered when it
 * resumes); writers leave such a key alone for this long, so it is never
 * reordered with the writer's next op on the key.
 */
export const LATE_MS = 10_000;
/** Branches followed per key; past this the key's state is indeterminate (convergence only). */
export const MAX_BRANCHES = 128;

export interface Deadline {
  lo: number;
  hi: number;
}

/** A possible item; undefined fields are unknown (a reply proved the item exists but not what it holds). */
export interface Item {
  value: string | undefined;
  flags: number | undefined;
  /** null: never expires. */
  expires: Deadline | null | 'unknown';
}

/** What memcached holds for a key, as read at the end (ttl: remaining seconds, -1 = never). */
export interface Held {
  value: string;
  flags: number;
  ttl: number;
}

export interface Contradiction {
  attempt: Attempt;
  /** The states the log allowed just before it. */
  before: Array<Item | null>;
}

export interface Expectation {
  items: Array<Item | null>;
  /** Acknowledged replies that no allowed state explains (outside the aftermath of a kill on the writer's node). */
  contradictions: Contradiction[];
  /** The branches outgrew MAX_BRANCHES: anything the nodes agree on is accepted. */
  indeterminate: boolean;
}

export interface ModelOptions {
  /** Apply the kill allowances (loss window, unsettled aftermath); false gives the strict expectation. */
  lenient: boolean;
  lossWindowMs: number;
  /** When the nodes were read. */
  now: number;
  /** memcacheds stopped with SIGSTOP (either node: keys live on both). */
  stops?: readonly Stop[];
  /** Other faults than kills after which copies may run (see CopyWindow). */
  copyWindows?: readonly CopyWindow[];
}

/** memcached's clock catches up at its first tick after SIGCONT: within this of it. */
export const CLOCK_CATCH_UP_MS = 1000;

interface Branch {
  item: Item | null;
  /** The pending flush already happened on this branch. */
  flushed: boolean;
  /**
   * An item gone on this branch that may still come back until `until`:
   * one a delayed flush erased on memcached's own clock and memrepl's flush
   * edge may store back (its stamp says it came after the moment, see
   * FLUSH_EDGE_MS); or one that expired near its deadline on this node's
   * memcached while the other's, whose clock rounds apart, still holds it
   * and may copy it back for what is left of the slack.
   */
  ghost?: { item: Item; until: number };
}

interface Window {
  from: number;
  to: number;
  /** States a copy may bring back after the kill: any of those the loss window allows. */
  restorable: Branch[];
}

const ANY: Item = { value: undefined, flags: undefined, expires: 'unknown' };
const U64 = 1n << 64n;

/**
 * The possible final states of one key. `attempts`: the key's log in the
 * order its (only) writer sent them; `flushes`: every flush of the run;
 * `kills`: every kill of the run (only those on `node`, the writer's, matter
 * to the key's own writes; a flush's node matters to the flush).
 */
export function expectation(attempts: readonly Attempt[], node: string, flushes: readonly Flush[], kills: readonly Kill[], options: ModelOptions): Expectation {
  const replay = new Replay(options, kills);
  const events = timeline(flushes, node, kills, options);
  let next = 0;
  const advance = (to: number) => {
    while (next < events.length && events[next].time < to) replay.event(events[next++]);
  };
  for (const attempt of attempts) {
    advance(attempt.sentAt);
    // A flush starting while the op was in flight (or, without a reply, could still take effect) may come before it as well.
    // With several, the op may also fall between two of them: what the key held before a later one starts (which
    // ends the one pending) is kept for the op (seed 21, 600 s, session 16: a replace without a reply, sent while
    // b's memcached stood still across a's delayed flush, found the item on b's stale clock and was stamped after
    // the flush; a's next flush, 12 s later but inside the replace's window, had erased that branch first).
    const effectEnd = effectEndOf(attempt, options.stops);
    const between: Branch[] = [];
    while (next < events.length && events[next].kind === 'flush-start' && events[next].time <= effectEnd) {
      // A write stamped after the pending flush outlives it where its stamp decides: on the other node, or at a delayed flush's edge.
      const ending = replay.pending;
      if (ending && (ending.lagging || ending.delayed)) between.push(...replay.branches);
      replay.event(events[next++]);
    }
    replay.attempt(attempt, between);
    if (replay.failed) break;
  }
  advance(options.now);
  // Read after the pair settled: every flush has crossed the link by now, however late it could have been seen.
  for (; next < events.length; next++) if (events[next].kind === 'flush-end') replay.event(events[next]);
  replay.expire(options.now);
  return { items: replay.items(), contradictions: replay.contradictions, indeterminate: replay.indeterminate };
}

type Event =
  | { time: number; kind: 'flush-start'; id: number; delayed: boolean; lagging: boolean; localEnd: number; certain: boolean }
  | { time: number; kind: 'flush-end'; id: number; certain: boolean }
  | { time: number; kind: 'kill'; settledAt: number };

/**
 * The flushes as a key on `node` sees them: from `lo` the flush may have
 * happened; by `hi` it has on its own node; a key written on the other node
 * ("lagging") may still show what the flush erases until the flush has
 * crossed the link (FLUSH_TRANSIT_MS later), but writes made there after the
 * flush (hi) must survive its arrival.
 */
function timeline(flushes: readonly Flush[], node: string, kills: readonly Kill[], options: ModelOptions): Event[] {
  const events: Event[] = [];
  for (const [id, flush] of flushes.entries()) {
    // A flush acknowledged just before a kill on its node may not have left it: then the peer never ran it,
    // and the reconciling copies bring back what it erased. Leniently, such a flush may or may not happen.
    const mayBeLost = options.lenient && kills.some((k) => k.node === flush.node && k.at >= flush.at && k.at - flush.at < options.lossWindowMs);
    const end = flush.acked ? flush.at : flush.sentAt + LATE_MS;
    let [lo, hi] =
      flush.delay > 0
        ? [flush.sentAt + flush.delay * 1000 - DELAYED_FLUSH_SLACK_MS, end + flush.delay * 1000 + DELAYED_FLUSH_SLACK_MS + FLUSH_EDGE_MS]
        : [flush.sentAt - FLUSH_MARGIN_MS, end + FLUSH_MARGIN_MS];
    // A memcached stopped around a delayed flush's moment stamps what it stores as it resumes with its stale
    // clock, at or before the moment: those writes go with the flush too (see Stop).
    // And the client's own memcached, stopped while the command waited for it, counts the delay from its stale
    // clock when it resumes: from the moment it stopped.
    for (const stop of flush.delay > 0 ? (options.stops ?? []) : []) {
      if (lo <= stop.until + CLOCK_CATCH_UP_MS && hi >= stop.at) hi = Math.max(hi, stop.until + CLOCK_CATCH_UP_MS + FLUSH_EDGE_MS);
      if (stop.node === flush.node && flush.sentAt <= stop.until + CLOCK_CATCH_UP_MS && end >= stop.at)
        lo = Math.min(lo, stop.at + flush.delay * 1000 - DELAYED_FLUSH_SLACK_MS);
    }
    const lagging = flush.node !== node;
    const certain = flush.acked && !mayBeLost;
    events.push(
      { time: lo, kind: 'flush-start', id, delayed: flush.delay > 0, lagging, localEnd: hi, certain },
      { time: lagging ? hi + FLUSH_TRANSIT_MS : hi, kind: 'flush-end', id, certain },
    );
  }
  if (options.lenient) for (const kill of kills) if (kill.node === node) events.push({ time: kill.at, kind: 'kill', settledAt: kill.settledAt });
  return events.sort((x, y) => x.time - y.time);
}

/** Ops whose result a flush must not erase when it reaches the other node later than they were made (they carry the state). */
const REWRITES: ReadonlySet<Op['kind']> = new Set(['set', 'add', 'replace', 'cas', 'append', 'prepend', 'incr', 'decr']);

class Replay {
  branches: Branch[] = [{ item: null, flushed: false }];
  readonly contradictions: Contradiction[] = [];
  indeterminate = false;
  /** Strict replay only: an acknowledged reply contradicted every branch. */
  failed = false;
  private pendingFlush: (Event & { kind: 'flush-start' }) | null = null;
  /** The flush that may or may not have happened yet, if any. */
  get pending(): Readonly<Event & { kind: 'flush-start' }> | null {
    return this.pendingFlush;
  }
  private readonly snapshots: Array<{ time: number; branches: Branch[] }> = [{ time: -Infinity, branches: this.branches }];
  private readonly windows: Window[] = [];
  /**
   * What writes without a reply would have stored, while they may still take
   * effect (until: see effectEndOf). A flush starting before then may come
   * before the write, which memrepl stamps when its reply arrives: the item
   * outlives that flush. The flushes right after the write are ordered with it
   * in expectation(); these are the ones after an earlier flush's end.
   */
  private late: Array<{ items: Item[]; until: number }> = [];

  constructor(
    private readonly options: ModelOptions,
    /** Kills of either node: copies run from each until the pair settled. */
    private readonly kills: readonly Kill[] = [],
  ) {}

  /** Whether a full copy may have run between `from` and `to` (they run after kills and copy windows, until the pair settled). */
  private copyMayRun(from: number, to: number): boolean {
    const during = (w: { at: number; settledAt: number }) => w.at <= to && w.settledAt >= from;
    return this.kills.some(during) || (this.options.copyWindows ?? []).some(during);
  }

  items(): Array<Item | null> {
    return unique(this.branches).flatMap((b) => this.statesOf(b, this.options.now));
  }

  event(event: Event): void {
    switch (event.kind) {
      case 'flush-start':
        // The flush client starts a flush once the last one is over on its own node; one still crossing to this
        // node's side is taken as arrived (the new flush erases the same and more).
        if (this.pendingFlush) this.flushDone(this.pendingFlush.certain);
        // From here on the flush may already have happened, before the next op or after it (see attempt()).
        this.pendingFlush = event;
        this.addFlushedBranch(false);
        this.landLate(event.time);
        return;
      case 'flush-end':
        if (this.pendingFlush?.id === event.id) this.flushDone(event.certain);
        return;
      case 'kill':
        this.kill(event.time, event.settledAt);
    }
  }

  /**
   * The pending flush has happened on every branch now (unless it may not
   * have happened at all). A branch it had already happened to keeps its
   * ghost: that item came after the flush, which does not erase it.
   */
  private flushDone(certain: boolean): void {
    this.pendingFlush = null;
    this.branches = unique(
      this.branches.map((b): Branch => {
        if (!b.flushed && certain) return { item: null, flushed: false };
        return b.ghost === undefined ? { item: b.item, flushed: false } : { item: b.item, flushed: false, ghost: b.ghost };
      }),
    );
  }

  /** Writes without a reply that may still land after a flush starting at `t`: their items, flushed already. */
  private landLate(t: number): void {
    this.late = this.late.filter((late) => late.until >= t);
    const landed = this.late.flatMap((late) => late.items.map((item): Branch => ({ item, flushed: true })));
    if (landed.length > 0) this.branches = this.bounded(unique([...this.branches, ...landed]));
  }

  /**
   * A branch's states before an op at `t`: its item, or its ghost if that may have come back by then. One that came
   * back before `until` is still there after it, unless it has expired since (seed 21, 600 s, session 15: an append
   * the flush edge stored back at about 263 s, found 4 ms after its `until`).
   */
  private statesOf(b: Branch, t: number): Array<Item | null> {
    const ghost = b.ghost;
    if (ghost === undefined) return [b.item];
    const expires = ghost.item.expires;
    const expired = expires !== null && expires !== 'unknown' && t > expires.hi;
    return t <= ghost.until || !expired ? [b.item, ghost.item] : [b.item];
  }

  /**
   * A kill on the writer's node: what it acknowledged in the loss window may
   * not have left, so the key may revert to its state at any point of the
   * window. Until the pair settles, its memcached may also be empty (or
   * overwritten by a copy) under its clients' ops.
   */
  private kill(at: number, settledAt: number): void {
    const from = at - this.options.lossWindowMs;
    let before = this.snapshots[0];
    const inWindow: Branch[] = [];
    for (const s of this.snapshots) {
      if (s.time < from) before = s;
      else if (s.time <= at) inWindow.push(...s.branches);
    }
    const restorable = unique([...before.branches, ...inWindow, ...this.branches]);
    this.branches = this.bounded(restorable);
    this.windows.push({ from: at, to: settledAt, restorable: this.branches });
  }

  /** `between`: earlier states the op may also have found, with flushes starting after it (see expectation()). */
  attempt(attempt: Attempt, between: readonly Branch[] = []): void {
    this.expire(attempt.sentAt);
    const effectEnd = effectEndOf(attempt, this.options.stops);
    const window = this.windows.find((w) => attempt.sentAt >= w.from && attempt.sentAt <= w.to);
    let pre = this.branches;
    if (window) pre = unique([...pre, ...window.restorable, { item: null, flushed: false }]);
    let out: Branch[] = [];
    const lateItems: Item[] = [];
    const flush = this.pendingFlush;
    const inTransit = flush !== null && flush.lagging && attempt.sentAt > flush.localEnd;
    // The other node's flush runs here as flush_all then a store back of the keys written after it
    // (Applier.flushKeepingNewer), and a delayed one's edge stores back too (flush-edge.ts): those items get a new
    // CAS unique, so a gets/cas across that is refused although nobody wrote the key.
    const outcome = attempt.outcome;
    const casRefusedByStoreBack =
      flush !== null && (flush.lagging || flush.delayed) && attempt.op.kind === 'cas' && outcome.effect === 'none' && outcome.because === 'present';
    for (const b of pre) {
      if (casRefusedByStoreBack && b.item !== null) out.push(b);
      for (const before of this.statesOf(b, attempt.sentAt))
        for (const next of transitions(before, attempt, effectEnd)) {
          const item = next === before ? next : this.frozenClocks(next, attempt);
          const rewrote = item !== before && REWRITES.has(attempt.op.kind);
          if (rewrote && item !== null && outcome.effect === 'unknown') lateItems.push(item);
          // An op that found the ghost's branch empty and left it so: the ghost may still come back, until `until`.
          const ghost = before === b.item && item === before && b.ghost !== undefined && attempt.sentAt <= b.ghost.until ? b.ghost : undefined;
          if (!flush || b.flushed || !rewrote) out.push(ghost === undefined ? { item, flushed: b.flushed } : { item, flushed: b.flushed, ghost });
          // On the other node: a write made after the flush (stamped after it) survives its late arrival...
          else if (inTransit) out.push({ item, flushed: true });
          // ... and one made about the same time may be stamped either side of it.
          else if (flush.lagging) out.push({ item, flushed: false }, { item, flushed: true });
          else out.push({ item, flushed: false });
        }
    }
    // Found such an earlier state: what it wrote is stamped at its reply, after that flush, and outlives it; the
    // flush pending now may have started before the reply or after.
    for (const b of unique(between))
      for (const before of this.statesOf(b, attempt.sentAt))
        for (const next of transitions(before, attempt, effectEnd)) {
          if (next === before || next === null || !REWRITES.has(attempt.op.kind)) continue;
          const item = this.frozenClocks(next, attempt)!;
          if (outcome.effect === 'unknown') lateItems.push(item);
          out.push({ item, flushed: false }, { item, flushed: true });
        }
    // Unsettled: an op that did nothing leaves whatever was there, or what the copy brings back later.
    if (window && attempt.outcome.effect !== 'applied') out.push(...this.branches, ...window.restorable);
    if (out.length === 0) {
      if (!window) this.contradictions.push({ attempt, before: this.branches.map((b) => b.item) });
      if (!this.options.lenient) {
        this.failed = true;
        this.branches = [];
        return;
      }
      out = implied(attempt).map((item) => ({ item, flushed: false }));
    }
    this.branches = this.bounded(unique(out));
    if (flush) this.addFlushedBranch(!inTransit && flush.delayed);
    if (lateItems.length > 0) this.late.push({ items: lateItems, until: effectEnd });
    this.snapshots.push({ time: attempt.at, branches: this.branches });
  }

  /**
   * The deadline `attempt` gave an item, as memcacheds stopped by SIGSTOP
   * keep it (see Stop): an item due during a stop lives until the clock
   * catches up, and one stored as the stop ends may be due as much earlier
   * as the stop was long. On the other node the item is stored when its
   * record arrives (up to FLUSH_TRANSIT_MS later), and a copy may bring that
   * deadline back to the writer's node. A record that waited in front of the
   * other node's stopped memcached keeps the remaining life it was sent with,
   * counted from when memcached ran it: due up to the rest of the stop later.
   */
  private frozenClocks(item: Item | null, attempt: Attempt): Item | null {
    const expires = item?.expires;
    if (!item || !expires || expires === 'unknown' || !this.options.stops?.length) return item;
    let { lo, hi } = expires;
    for (const stop of this.options.stops) {
      const caughtUp = stop.until + CLOCK_CATCH_UP_MS;
      if (lo <= caughtUp && hi >= stop.at) hi = Math.max(hi, caughtUp + TTL_SLACK_MS);
      const stored = stop.node === attempt.node ? attempt.at : attempt.at + FLUSH_TRANSIT_MS;
      if (attempt.sentAt <= caughtUp && stored >= stop.at) lo -= stop.until - stop.at;
      // The record reached the other node while its memcached stood still: the remaining life it was sent with is
      // counted from when memcached ran it, up to the rest of the stop later (and a copy may bring that back here).
      if (stop.node !== attempt.node && attempt.at <= stop.until && stored >= stop.at) hi += stop.until - Math.max(stop.at, attempt.at);
    }
    return lo === expires.lo && hi === expires.hi ? item : { ...item, expires: { lo, hi } };
  }

  /** Items whose deadline has passed at `t` are gone; near it, maybe. */
  expire(t: number): void {
    const out: Branch[] = [];
    for (const b of this.branches) {
      const expires = b.item?.expires;
      if (!b.item || expires === null || expires === undefined || (expires !== 'unknown' && t < expires.lo)) {
        out.push(b);
        continue;
      }
      if (expires === 'unknown' || t <= expires.hi) out.push(b);
      // Expired here near its deadline, it may still come back from the other node (a copy) until the slack is over,
      // and one more: the copy reads what is left there on a clock that may lag as much again.
      const until = expires !== 'unknown' && this.copyMayRun(expires.lo, expires.hi) ? expires.hi + TTL_SLACK_MS : -Infinity;
      out.push(t <= until ? { item: null, flushed: b.flushed, ghost: { item: b.item, until } } : { item: null, flushed: b.flushed });
    }
    this.branches = this.bounded(unique(out));
  }

  /**
   * The flush may happen here, to any branch it has not happened to yet.
   * `again`: also to those it has: a delayed flush is no instant in
   * memcached, which from its deadline's second on treats every item stored
   * up to that second as gone, so a write acknowledged within that second
   * vanishes too.
   */
  private addFlushedBranch(again: boolean): void {
    if (!again && !this.branches.some((b) => !b.flushed)) return;
    // A delayed flush's edge may store back what memcached's clock erased: the erased item stays a ghost until the flush is over.
    const until = this.pendingFlush?.localEnd ?? 0;
    const erased = again
      ? this.branches.filter((b) => b.item !== null).map((b): Branch => ({ item: null, flushed: true, ghost: { item: b.item!, until } }))
      : [];
    this.branches = unique([...this.branches, { item: null, flushed: true }, ...erased]);
  }

  /**
   * Past MAX_BRANCHES the item is anything, but whether the pending flush may
   * already have happened is kept: a later op that finds the key gone tells
   * that it has, and what it writes then must outlive the flush's end.
   */
  private bounded(branches: Branch[]): Branch[] {
    if (branches.length <= MAX_BRANCHES) return branches;
    this.indeterminate = true;
    const flushed = [...new Set(branches.map((b) => b.flushed))];
    return flushed.flatMap((f) => [
      { item: ANY, flushed: f },
      { item: null, flushed: f },
    ]);
  }
}

/**
 * The latest moment `attempt` may take effect: its reply, or for a write
 * without one LATE_MS after it was sent, or later while its node's memcached
 * was stopped (SIGSTOP) in between: memcached runs what it had buffered, and
 * the proxy sends what it had queued, once it resumes (stops may follow each
 * other closer than LATE_MS apart).
 */
export function effectEndOf(attempt: Attempt, stops: readonly Stop[] = []): number {
  if (attempt.outcome.effect !== 'unknown') return attempt.at;
  let end = attempt.sentAt + LATE_MS;
  for (const stop of [...stops].sort((x, y) => x.at - y.at)) {
    if (stop.node === attempt.node && stop.at <= end && stop.until >= attempt.sentAt) end = Math.max(end, stop.until + CLOCK_CATCH_UP_MS);
  }
  return end;
}

/** The states `item` may be in after `attempt`, given what its reply said (`effectEnd`: see effectEndOf). */
export function transitions(item: Item | null, attempt: Attempt, effectEnd = effectEndOf(attempt)): Array<Item | null> {
  const { outcome } = attempt;
  const effects = effectsOf(item, attempt.op, attempt.sentAt, effectEnd);
  switch (outcome.effect) {
    case 'unknown':
      return [item, ...effects.filter((e) => e.applied).map((e) => e.item)];
    case 'done':
      return effects.map((e) => (e.applied ? e.item : item));
    case 'none':
      return effects.some((e) => !e.applied && e.because === outcome.because) ? [item] : [];
    case 'applied': {
      const out: Array<Item | null> = [];
      for (const e of effects) {
        if (!e.applied) continue;
        if (outcome.result === undefined || e.result === undefined) {
          // A counter's reply tells its value even when the log could not.
          out.push(outcome.result !== undefined && e.item ? { ...e.item, value: String(outcome.result) } : e.item);
        } else if (e.result === outcome.result) out.push(e.item);
      }
      return out;
    }
  }
}

type Effect = { applied: true; item: Item | null; result?: bigint } | { applied: false; because: 'absent' | 'present' | 'non-numeric' };

/** What memcached does with `op` on `item`, as the alternatives it has (one, or two when the value is unknown). */
function effectsOf(item: Item | null, op: Op, from: number, to: number): Effect[] {
  const fresh = (value: string, flags: number, ttl: number): Item | null => {
    if (ttl < 0) return null; // memcached stores it already expired
    return { value, flags, expires: deadline(ttl, from, to) };
  };
  switch (op.kind) {
    case 'set':
      return [{ applied: true, item: fresh(op.value, op.flags, op.ttl) }];
    case 'add':
      return item ? [{ applied: false, because: 'present' }] : [{ applied: true, item: fresh(op.value, op.flags, op.ttl) }];
    case 'replace':
    case 'cas':
      return item ? [{ applied: true, item: fresh(op.value, op.flags, op.ttl) }] : [{ applied: false, because: 'absent' }];
    case 'append':
    case 'prepend': {
      if (!item) return [{ applied: false, because: 'absent' }];
      // memcached keeps the old item's flags and expiry.
      const value = item.value === undefined ? undefined : op.kind === 'append' ? item.value + op.piece : op.piece + item.value;
      return [{ applied: true, item: { ...item, value } }];
    }
    case 'incr':
    case 'decr':
      return arithmetic(item, op, fresh);
    case 'delete':
      return item ? [{ applied: true, item: null }] : [{ applied: false, because: 'absent' }];
    case 'touch':
      return item
        ? [{ applied: true, item: { ...item, expires: op.ttl < 0 ? { lo: from, hi: to } : deadline(op.ttl, from, to) } }]
        : [{ applied: false, because: 'absent' }];
    case 'invalidate':
      if (!item) return [{ applied: false, because: 'absent' }];
      return [{ applied: true, item: op.ttl === null ? item : { ...item, expires: deadline(op.ttl, from, to) } }];
  }
}

function arithmetic(item: Item | null, op: Op & { kind: 'incr' | 'decr' }, fresh: (value: string, flags: number, ttl: number) => Item | null): Effect[] {
  if (!item) {
    if (!op.create) return [{ applied: false, because: 'absent' }];
    return [{ applied: true, item: fresh(String(op.create.initial), 0, op.create.ttl), result: op.create.initial }];
  }
  if (item.value === undefined)
    return [
      { applied: true, item: { ...item, value: undefined } },
      { applied: false, because: 'non-numeric' },
    ];
  const n = counterValue(item.value);
  if (n === null) return [{ applied: false, because: 'non-numeric' }];
  // incr wraps at 2^64; decr stops at 0 (memcached's rules).
  const result = op.kind === 'incr' ? (n + op.delta) % U64 : n > op.delta ? n - op.delta : 0n;
  return [{ applied: true, item: { ...item, value: String(result) }, result }];
}

/** A value incr/decr accept: decimal digits (memcached may pad a shrunk number with spaces). */
export function counterValue(value: string): bigint | null {
  const digits = value.trimEnd();
  if (!/^\d{1,20}$/.test(digits)) return null;
  const n = BigInt(digits);
  return n < U64 ? n : null;
}

/** A relative TTL set at some moment in [from, to]: 0 never expires. */
function deadline(ttl: number, from: number, to: number): Deadline | null {
  if (ttl === 0) return null;
  return { lo: from + ttl * 1000 - TTL_SLACK_MS, hi: to + ttl * 1000 + TTL_SLACK_MS };
}

/**
 * After a reply no branch explains (reported as a contradiction, or allowed
 * in the aftermath of a kill): the states the reply itself implies.
 */
function implied(attempt: Attempt): Array<Item | null> {
  const { op, outcome } = attempt;
  if (outcome.effect === 'none') return outcome.because === 'absent' ? [null] : [ANY];
  if (outcome.effect === 'unknown' || outcome.effect === 'done') return [ANY, null];
  const known = transitions(null, attempt).concat(transitions(ANY, attempt));
  if (op.kind === 'delete') return [null];
  return known.length > 0 ? known : [ANY];
}

function unique(branches: readonly Branch[]): Branch[] {
  const seen = new Map<string, Branch>();
  for (const b of branches) {
    const show = (item: Item | null | undefined) => (item === undefined ? '' : item === null ? '-' : JSON.stringify([item.value, item.flags, item.expires]));
    const id = `${b.flushed ? 1 : 0}${show(b.item)}|${show(b.ghost?.item)}${b.ghost?.until ?? ''}`;
    if (!seen.has(id)) seen.set(id, b);
  }
  return [...seen.values()];
}

/** Whether what a node holds is this possible state, read at `now`. */
export function matches(item: Item | null, held: Held | null, now: number): boolean {
  if (item === null || held === null) return item === held;
  if (item.value !== undefined && held.value !== item.value) {
    // memcached pads a number that shrank under decr with spaces.
    if (counterValue(item.value) === null || held.value.trimEnd() !== item.value) return false;
  }
  if (item.flags !== undefined && held.flags !== item.flags) return false;
  const expires = item.expires;
  if (expires === 'unknown') return true;
  if (expires === null) return held.ttl === -1;
  return held.ttl !== -1 && held.ttl >= Math.floor((expires.lo - now) / 1000) - 1 && held.ttl <= Math.ceil((expires.hi - now) / 1000) + 1;
}

/** A possible state in a report line. */
export function showItem(item: Item | null, now: number): string {
  if (item === null) return 'absent';
  const value = item.value === undefined ? '?' : JSON.stringify(item.value.length > 40 ? `${item.value.slice(0, 30)}...` : item.value);
  const ttl =
    item.expires === 'unknown'
      ? 't?'
      : item.expires === null
        ? 't-1'
        : `t${Math.round((item.expires.lo - now) / 1000)}..${Math.round((item.expires.hi - now) / 1000)}`;
  return `${value} f${item.flags ?? '?'} ${ttl}`;
}
