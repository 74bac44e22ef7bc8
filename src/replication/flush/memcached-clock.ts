/**
 * Where the local memcached's one-second clock stands against the wall
 * clock, to give it a delayed flush that cuts where the flush's origin did.
 *
 * memcached's clock (`stats` time) counts whole seconds and ticks at its own
 * phase: it can read up to a second behind or ahead of the wall clock (its
 * start time is the wall clock's whole second, its ticks the monotonic
 * clock's). `flush_all T` (an absolute time) flushes what memcached stored
 * while its clock read before T, and shows it gone from when it reads T-1.
 * On the flush's origin, `flush_all N` cuts within the second before the
 * moment, whatever the phase (it counts from memcached's own clock). To cut
 * in that same second on the peer, T must account for the peer's phase: it
 * is measured by watching `stats` time change, right before scheduling (the
 * phase drifts as memcached's timer is re-armed every tick).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { parseStats, STATS_REQUEST } from '../../protocol/text/stats';
import type { LocalMemcached } from '../local-memcached';

/** How often `stats` is asked while watching for a tick, and for how long at most. */
const POLL_MS = 20;
const WATCH_MAX_MS = 1500;
/** Kept between the cut and the moment: the tick is known to within about a poll. */
const MARGIN_MS = 50;

/**
 * The wall time (ms) at which memcached's clock read 0: it reads
 * floor((t - epoch) / 1000) at wall time t. null if no tick was seen in time
 * (memcached stalled, or not answering).
 */
export async function memcachedClockEpoch(local: LocalMemcached, now: () => number = Date.now): Promise<number | null> {
  const giveUpAt = now() + WATCH_MAX_MS;
  let before: { time: number; at: number } | null = null;
  while (now() < giveUpAt) {
    const time = Number(parseStats(await local.request(STATS_REQUEST)).get('time'));
    const at = now();
    if (!Number.isFinite(time)) return null;
    // It ticked between the last answer and this one: take the middle.
    if (before && time > before.time) return (before.at + at) / 2 - time * 1000;
    before = { time, at };
    await sleep(POLL_MS);
  }
  return null;
}

/**
 * flush_all's unix time for a flush at `momentMs`, given memcached's clock
 * epoch: it cuts within the second before the moment, as on the origin.
 * Without an epoch, a second earlier still, so that it never flushes a
 * write made after the moment (and may show the flush up to three seconds
 * before it).
 */
export function flushTimeFor(momentMs: number, epochMs: number | null): number {
  if (epochMs === null) return Math.floor(momentMs / 1000) - 1;
  return Math.floor((momentMs - MARGIN_MS - epochMs) / 1000);
}
