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
