/**
 * A running full copy as operators read it: items sent of what memcached
 * held when it began, the rate so far and the time left at that rate. The
 * count is memcached's `curr_items` at the start, so the end is approximate:
 * items expire, are evicted or written meanwhile.
 */

export interface CopyProgress {
  /** Items sent so far. */
  sent: number;
  /** memcached's item count when the copy began (null: not known yet). */
  expected: number | null;
  /** Items per second since the copy began (0 before a second's worth). */
  rate: number;
  /** Seconds left at that rate (null: not known). */
  etaSeconds: number | null;
}

export function copyProgress(sent: number, expected: number | null, elapsedMs: number): CopyProgress {
  const rate = elapsedMs > 0 ? Math.round((sent * 1000) / elapsedMs) : 0;
  const etaSeconds = expected === null || rate === 0 ? null : Math.ceil(Math.max(0, expected - sent) / rate);
  return { sent, expected, rate, etaSeconds };
}

/** For the `marugoto` log lines: "120000 of about 1000000 items (12%), 95000 items/s, about 10 s left". */
export function describeCopyProgress({ sent, expected, rate, etaSeconds }: CopyProgress): string {
  if (expected === null) return `${sent} items, ${rate} items/s`;
  const percent = expected > 0 ? Math.min(100, Math.floor((100 * sent) / expected)) : 100;
  const left = etaSeconds === null ? '' : `, about ${etaSeconds} s left`;
  return `${sent} of about ${expected} items (${percent}%), ${rate} items/s${left}`;
}
