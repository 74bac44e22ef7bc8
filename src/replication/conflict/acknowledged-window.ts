/**
 * When the conflict maps may forget a write of this node (recent-writes.ts
 * keepFrom): once the peer acknowledged it a whole conflict window ago, not
 * once it is a window old. A record the peer made before it had seen the
 * write travels ahead of (or just behind) that acknowledgement, so however
 * long the link stalled, it arrives while the write is remembered. With
 * nothing unacknowledged and no recent acknowledgement, only the window's
 * age counts.
 */

/** Acknowledgements closer than this share one mark. */
const ACK_MARK_MS = 100;

export class AcknowledgedWindow {
  /** The acknowledgements of the last window: [arrival, HLC wall of the record acked], oldest first. */
  private readonly marks: Array<[at: number, wall: number]> = [];
  /** The wall of the newest record acknowledged a whole window ago. */
  private longAgo = -Infinity;

  constructor(private readonly windowMs: number) {}

  /** No acknowledgement in the window (the maps may be forgetting by age alone). */
  get empty(): boolean {
    return this.marks.length === 0;
  }

  /** The peer acknowledged, at `now`, the records up to one stamped `wall` (undefined: no longer in the backlog). */
  acknowledged(now: number, wall: number | undefined): void {
    const last = this.marks[this.marks.length - 1];
    // One mark per ACK_MARK_MS: a later arrival for a mark only makes its writes remembered longer.
    if (last && now - last[0] < ACK_MARK_MS) last[0] = now;
    else this.marks.push([now, 0]);
    if (wall !== undefined) this.marks[this.marks.length - 1][1] = wall;
  }

  /** The HLC wall below which the conflict maps may forget, at `now` with `unacknowledged` records out (Infinity: by age alone). */
  keepFrom(now: number, unacknowledged: number): number {
    while (this.marks.length > 0 && this.marks[0][0] <= now - this.windowMs) this.longAgo = this.marks.shift()![1];
    return this.marks.length === 0 && unacknowledged === 0 ? Infinity : this.longAgo;
  }
}
