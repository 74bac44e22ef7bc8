/**
 * memcached's rules for time: how it reads an exptime, and what its
 * once-a-second clock means for the remaining life it reports.
 */

/** memcached reads an exptime above this many seconds as a unix timestamp (REALTIME_MAXDELTA in memcached.c). */
export const RELATIVE_EXPTIME_MAX = 60 * 60 * 24 * 30;

/**
 * An item's remaining life in ms from the whole seconds memcached reports
 * (mg's t, or a metadump line's exp minus the unix time now). memcached
 * counts whole seconds on a clock that ticks once a second: the true
 * remaining life is anywhere in [t-1, t+1); aim at the middle, not the top.
 */
export function remainingLifeMs(seconds: number): number {
  return seconds * 1000 - 500;
}

/**
 * memcached's exptime for a deadline on this node's clock. Relative, to the
 * nearest second: memcached expires an item T ticks of its once-a-second
 * clock after storing it, just as the original expired T ticks after its
 * write. (Absolute times would be worse: memcached converts them against a
 * wall clock that can sit a second off the monotonic clock it ticks with.)
 *
 * A deadline already past (the item expired in transit) gets the shortest
 * life memcached has, one tick, not a delete: the origin held the item until
 * that deadline, so a touch its client made before then may be right behind
 * on the link, and must find the item here as it found it there.
 */
export function exptimeFor(deadline: number | null, now: number): number {
  if (deadline === null) return 0;
  const seconds = Math.round((deadline - now) / 1000);
  if (seconds <= 0) return SHORTEST_EXPTIME;
  // memcached reads exptime as an int32: a deadline at its very end (2038) can round past it.
  return seconds <= RELATIVE_EXPTIME_MAX ? seconds : Math.min(Math.round(deadline / 1000), INT32_MAX);
}

const SHORTEST_EXPTIME = 1;
const INT32_MAX = 0x7fff_ffff;
