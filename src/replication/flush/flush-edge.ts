/**
 * Writes around a delayed flush's moment, made to end as the pair agrees.
 *
 * Both nodes know the moment of a scheduled flush_all as one HLC stamp (see
 * flush-schedule.ts), and agree that a write stamped before it is flushed
 * and one stamped after it stays. memcached does not flush at that stamp:
 * it flushes at a tick of its own one-second clock, up to two seconds before
 * it (the moment in whole seconds, less one: proto_text.c, items.c
 * item_is_flushed; never after it: see memcached-clock.ts). And a
 * memcached that stood still (SIGSTOP, a long pause)
 * runs the requests that waited on a clock as old as the pause, so it stores
 * before the moment, and flushes, writes made well after it. Each node then
 * holds a different subset of the writes made around the moment.
 *
 * So while a moment is near, each node notes the keys whose writes memcached
 * answered, its clients' and the peer's alike. Once memcached's own clock
 * (`stats` time) is past the moment, it reads each back and puts it where the
 * stamps say: an item stamped before the moment and still held is deleted
 * (only if unchanged since the read: a CAS-conditional delete), one stamped
 * after it and flushed is stored back (only if no newer write came since:
 * an add; only a stalled memcached flushes those). Both nodes do it with the
 * same stamps, so they end the same.
 *
 * Keys only the binary protocol can name are not checked (binary reads tell
 * no CAS or expiry); a write read back as a changed state (an append) is
 * noted twice: as it goes, with nothing to store back, then with the state
 * its read found (Recorder.readNow).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { exptimeFor } from '../../protocol/text/expiry';
import { parseMetaHeader } from '../../protocol/text/meta-header';
import { metaDelete, metaRead, metaSet } from '../../protocol/text/serializer';
import { parseStats, STATS_REQUEST } from '../../protocol/text/stats';
import { needsBinary } from '../binary-keys';
import { compareStamps, type Stamp } from '../conflict/hlc';
import type { LocalMemcached } from '../local-memcached';
import type { RecentWrites } from '../conflict/recent-writes';

/** What a write stored, to store it back if memcached flushed it after its moment. */
export interface Stored {
  value: Buffer;
  flags: number;
  /** Its deadline on this node's clock (ms), null for none. */
  expiresAt: number | null;
}

interface Noted {
  stamp: Stamp;
  /** null: a delete, or a state this node did not see whole. */
  stored: Stored | null;
}

/** memcached's flush comes up to two seconds before the moment's stamp (whole seconds, less one tick); and a margin. */
const EARLIEST_FLUSH_MS = 3000;
/** Writes judged this long before the earliest flush are collected too (they may be answered within it). */
const ARM_LEAD_MS = 1000;
/** Writes answered this long after memcached's clock was seen past the moment are still checked (other threads, replies in flight). */
const GRACE_MS = 200;
/** How often memcached's clock is asked, and for how long at most, before giving up (memcached stalled for good). */
const CLOCK_POLL_MS = 300;
const CLOCK_WAIT_MAX_MS = 120_000;
/** The longest delay setTimeout takes (a longer one fires at once). */
const TIMER_MAX_MS = 0x7fff_ffff;
/** Past this many keys noted for one moment, the rest are not checked (and that is logged). */
const NOTED_MAX = 500_000;
/** How long putting writes in place waits for client writes in flight (a stalled memcached must not stop it), as the applier's flush does. */
const CLIENT_WRITES_WAIT_MS = 2000;

/** What the edge waits for before it reads and fixes keys: writes on other connections that could race it. */
export interface FlushEdgeWrites {
  /** Resolves once the applier's batches judged so far are answered. */
  applierIdle(): Promise<void>;
  /**
   * Resolves once the client writes in flight are answered (and noted), and
   * holds new ones back until releaseClientWrites (Contention.holdClientWrites):
   * a client's delete answered between the edge's read and its store back
   * would otherwise be undone by it.
   */
  holdClientWrites(timeoutMs: number): Promise<void>;
  releaseClientWrites(): void;
}

export interface FlushEdgeEvents {
  /** The check of a moment is done: how many keys it read, deleted and stored back, and how many it could not note. */
  checked(counts: { read: number; deleted: number; storedBack: number; unnoted: number }): void;
  failed(reason: string): void;
}

export class FlushEdge {
  private moment: Stamp | null = null;
  private noted = new Map<string, Noted>();
  private unnoted = 0;
  /** memcached's clock was seen past the moment at this time (0: not yet); writes answered after GRACE_MS are not noted. */
  private pastAt = 0;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly local: LocalMemcached,
    private readonly values: RecentWrites,
    private readonly writes: FlushEdgeWrites,
    private readonly events: FlushEdgeEvents,
    private readonly wallClock: () => number = Date.now,
  ) {}

  /** The moment of memcached's scheduled flush (see FlushScheduleEvents.pending); null: none any more. */
  scheduled(at: Stamp | null): void {
    this.clear();
    this.moment = at;
    if (at !== null) this.checkAt(at);
  }

  /** Checks at the moment; a moment days away (flush_all takes up to 30, or a unix time) waits in steps a timer can take. */
  private checkAt(at: Stamp): void {
    const delay = Math.max(0, at.wall - this.wallClock());
    this.timer = setTimeout(() => (delay > TIMER_MAX_MS ? this.checkAt(at) : void this.check(at)), Math.min(delay, TIMER_MAX_MS)).unref();
  }

  /**
   * Whether writes judged now may need noting once answered: a moment is
   * near (a write judged earlier is stamped well before it, and flushed
   * however memcached's clock stood when it ran it). A flush scheduled days
   * ahead costs nothing per write until then.
   */
  get armed(): boolean {
    return this.moment !== null && this.wallClock() >= this.moment.wall - EARLIEST_FLUSH_MS - ARM_LEAD_MS;
  }

  /** memcached answered a write of `key` stamped `stamp` (see the class comment). */
  answered(key: Buffer, stamp: Stamp, stored: Stored | null): void {
    const moment = this.moment;
    if (moment === null || needsBinary(key)) return;
    const now = this.wallClock();
    if (now < moment.wall - EARLIEST_FLUSH_MS || (this.pastAt > 0 && now > this.pastAt + GRACE_MS)) return;
    const id = key.toString('latin1');
    const before = this.noted.get(id);
    if (before && compareStamps(before.stamp, stamp) > 0) return;
    if (!before && this.noted.size >= NOTED_MAX) {
      this.unnoted++;
      return;
    }
    this.noted.set(id, { stamp, stored });
  }

  /**
   * memcached answered a touch of `key` (touch, gat, mg T): a noted item it
   * would store back gets the touch's deadline. The write's stamp still
   * decides (a touch is no write); the peer stores back the same, from the
   * touched item the touch ships (stamped with the value's write, with the
   * touch's expiry). Seed 21 (600 s): a store back after a gat kept the set's
   * "never", and the item outlived its expiry on one node only.
   */
  touched(key: Buffer, stamp: Stamp, expiresAt: number | null): void {
    const noted = this.noted.get(key.toString('latin1'));
    if (noted?.stored && compareStamps(stamp, noted.stamp) > 0) noted.stored = { ...noted.stored, expiresAt };
  }

  stop(): void {
    this.clear();
    this.moment = null;
  }

  private clear(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.noted = new Map();
    this.unnoted = 0;
    this.pastAt = 0;
  }

  private async check(moment: Stamp): Promise<void> {
    const current = () => this.moment === moment;
    try {
      if (!(await this.clockPast(moment, current))) return;
      this.pastAt = this.wallClock();
      await sleep(GRACE_MS, undefined, { ref: false });
      await this.writes.applierIdle();
      if (!current()) return;
      const noted = this.noted;
      const unnoted = this.unnoted;
      this.stop();
      this.events.checked({ ...(await this.putInPlace(moment, noted)), unnoted });
    } catch (error) {
      if (current()) this.stop();
      this.events.failed(`could not check the writes around a delayed flush_all's moment: ${(error as Error).message}`);
    }
  }

  /**
   * Waits until memcached's own clock (stats `time`) is a whole second past
   * the moment's second: it has flushed, and stores anything after with a
   * later time. false if the moment was replaced meanwhile.
   */
  private async clockPast(moment: Stamp, current: () => boolean): Promise<boolean> {
    const giveUpAt = this.wallClock() + CLOCK_WAIT_MAX_MS;
    const pastSecond = Math.floor(moment.wall / 1000) + 1;
    while (current()) {
      const time = Number(parseStats(await this.local.request(STATS_REQUEST)).get('time'));
      if (time >= pastSecond) return current();
      if (this.wallClock() > giveUpAt) throw new Error(`memcached's clock did not pass it in ${CLOCK_WAIT_MAX_MS / 1000} s`);
      await sleep(CLOCK_POLL_MS, undefined, { ref: false });
    }
    return false;
  }

  private async putInPlace(moment: Stamp, noted: Map<string, Noted>): Promise<{ read: number; deleted: number; storedBack: number }> {
    await this.writes.holdClientWrites(CLIENT_WRITES_WAIT_MS);
    try {
      return await this.readAndFix(moment, noted);
    } finally {
      this.writes.releaseClientWrites();
    }
  }

  private async readAndFix(moment: Stamp, noted: Map<string, Noted>): Promise<{ read: number; deleted: number; storedBack: number }> {
    const writes = [...noted].map(([id, write]) => ({ key: Buffer.from(id, 'latin1'), ...write }));
    const replies = await Promise.all(writes.map(({ key }) => this.local.request(metaRead(key, { cas: true }))));
    const fixes: Buffer[] = [];
    let deleted = 0;
    let storedBack = 0;
    const now = this.wallClock();
    writes.forEach(({ key, stamp, stored }, i) => {
      // A newer write of the key than the one noted decides on its own.
      const last = this.values.lastWriteOf(key);
      if (last !== undefined && compareStamps(last, stamp) > 0) return;
      const header = parseMetaHeader(replies[i][replies[i].length - 1].raw);
      const flushedByStamp = compareStamps(stamp, moment) <= 0;
      if (flushedByStamp && header.status === 'VA' && header.cas > 0) {
        fixes.push(metaDelete(key, true, header.cas));
        deleted++;
      } else if (!flushedByStamp && header.status === 'EN' && stored !== null) {
        // Expired meanwhile on its own: nothing to store back.
        if (stored.expiresAt !== null && stored.expiresAt <= now) return;
        fixes.push(metaSet(key, stored.value, { clientFlags: stored.flags, exptime: exptimeFor(stored.expiresAt, now), mode: 'E', quiet: true }));
        storedBack++;
      }
    });
    if (fixes.length > 0) await this.local.quietBatch(Buffer.concat(fixes));
    return { read: writes.length, deleted, storedBack };
  }
}
