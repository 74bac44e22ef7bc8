/**
 * How far the peer's clock is from ours, as seen through the link: the
 * smallest (arrival - sentAt) over recent frames is the clock offset plus the
 * link's fastest one-way delay. A frame whose difference is larger sat that
 * much longer in buffers or networks (a stalled link, a congested socket),
 * and its item's remaining life must shrink by as much.
 *
 * The minimum is kept over two rolling windows, so a clock step on either
 * host is forgotten within two windows instead of skewing every later TTL.
 *
 * Pure: times are passed in.
 */
export class ClockOffset {
  private current = Infinity;
  private previous = Infinity;
  private windowStart = -Infinity;

  constructor(private readonly windowMs = 10_000) {}

  /** A frame the peer stamped with its clock at `sentAt` arrived at our `arrivedAt`. */
  observe(sentAt: number, arrivedAt: number): void {
    if (arrivedAt - this.windowStart >= this.windowMs) {
      this.previous = this.current;
      this.current = Infinity;
      this.windowStart = arrivedAt;
    }
    this.current = Math.min(this.current, arrivedAt - sentAt);
  }

  /**
   * Starts from what the last link to the same peer had learnt (the hosts'
   * clocks did not move apart because a link was cut). A new link's first
   * frames are often a backlog replayed through full buffers: alone, their
   * minimum would take that queue for clock offset and lengthen every TTL
   * and flush delay by it. What is carried over ages out like any window.
   */
  carryOver(last: ClockOffset): void {
    this.previous = Math.min(this.previous, last.current, last.previous);
  }

  /** The moment the peer's `sentAt` corresponds to on our clock (never later than `arrivedAt`). */
  localTime(sentAt: number, arrivedAt: number): number {
    const offset = Math.min(this.current, this.previous);
    return Number.isFinite(offset) ? Math.min(arrivedAt, sentAt + offset) : arrivedAt;
  }
}
