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
 * A queue that stands on the link for longer than both windows (a peer whose
 * memcached is slow to store a backlog) would pass for clock offset, and
 * every record after it would keep the life it had when it was sent. The
 * other direction tells them apart: the peer's pings carry its own smallest
 * (arrival - sentAt) the other way (inboundMs), which bounds the offset from
 * below as ours bounds it from above; the two differ by the round trip. A
 * queue widens that gap, a clock step moves both bounds. While the gap is
 * narrow (SETTLED_WITHIN_MS) the offset is our bound, and is remembered as
 * settled; while it is wide, the settled offset stands, kept within the
 * bounds. A peer that sends no inboundMs (an older memrepl) leaves the
 * estimate as our bound alone.
 *
 * Pure: times are passed in.
 */

/** Bounds closer than this are a link without a standing queue either way (a round trip is far shorter). */
export const SETTLED_WITHIN_MS = 1000;

export class ClockOffset {
  private current = Infinity;
  private previous = Infinity;
  private windowStart = -Infinity;
  /** The peer's latest inboundMs: the lower bound of the offset is minus it. */
  private peerInbound: number | null = null;
  /** The offset last seen with both bounds close together (see the header). */
  private settled: number | null = null;

  constructor(private readonly windowMs = 10_000) {}

  /** A frame the peer stamped with its clock at `sentAt` arrived at our `arrivedAt`. */
  observe(sentAt: number, arrivedAt: number): void {
    if (arrivedAt - this.windowStart >= this.windowMs) {
      this.previous = this.current;
      this.current = Infinity;
      this.windowStart = arrivedAt;
    }
    this.current = Math.min(this.current, arrivedAt - sentAt);
    this.settle();
  }

  /** The peer's PING said its smallest (arrival - sentAt) the other way is `inboundMs`. */
  observePeer(inboundMs: number): void {
    this.peerInbound = inboundMs;
    this.settle();
  }

  /** Our smallest (arrival - sentAt) over the windows, whole ms, for our PINGs (null before any frame). */
  inbound(): number | null {
    const smallest = Math.min(this.current, this.previous);
    return Number.isFinite(smallest) ? Math.round(smallest) : null;
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
    this.settled ??= last.settled;
  }

  /** The moment the peer's `sentAt` corresponds to on our clock (never later than `arrivedAt`). */
  localTime(sentAt: number, arrivedAt: number): number {
    const offset = this.offset();
    return offset === null ? arrivedAt : Math.min(arrivedAt, sentAt + offset);
  }

  private offset(): number | null {
    const upper = Math.min(this.current, this.previous);
    if (!Number.isFinite(upper)) return null;
    if (this.peerInbound === null) return upper;
    const lower = -this.peerInbound;
    if (upper - lower <= SETTLED_WITHIN_MS) return upper;
    return Math.max(lower, Math.min(upper, this.settled ?? upper));
  }

  /** Remembers the offset while the bounds are narrow (or crossed, for a moment after a clock step): no queue stands either way. */
  private settle(): void {
    const upper = Math.min(this.current, this.previous);
    if (this.peerInbound !== null && Number.isFinite(upper) && upper + this.peerInbound <= SETTLED_WITHIN_MS) this.settled = upper;
  }
}
