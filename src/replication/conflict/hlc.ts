/**
 * A hybrid logical clock (Kulkarni et al., "Logical Physical Clocks", 2014):
 * stamps that stay close to wall-clock time, yet never go backwards and always
 * move past every stamp this node has seen from a peer.
 *
 * Why: two nodes writing the same key at about the same time must both pick the
 * same winner once the records have crossed (docs/design.md §7). Comparing
 * stamps makes that deterministic; the HLC makes the winner the write that a
 * human would call "last" whenever the writes were causally ordered (a node
 * that saw the peer's write before writing again always stamps its own write
 * later), while raw wall clocks would let a node with a slow clock lose writes
 * it made after seeing the peer's.
 *
 * Pure: the wall clock is injected.
 */

/** A stamp as carried in a RECORD frame: the node is known from the link. */
export interface Hlc {
  /** Milliseconds since the epoch (the largest wall time this clock has seen). */
  readonly wall: number;
  /** Counts events within the same `wall` millisecond. */
  readonly logical: number;
}

/** Older than any stamp a clock issues. */
export const HLC_ZERO: Hlc = Object.freeze({ wall: 0, logical: 0 });

/** What conflict resolution compares: an HLC plus the node that made it, so ties are impossible. */
export interface Stamp extends Hlc {
  readonly nodeId: string;
}

/** The RECORD frame stores `logical` as a u32. */
export const HLC_LOGICAL_MAX = 0xffff_ffff;

export class HybridClock {
  private wall = 0;
  private logical = 0;

  constructor(
    readonly nodeId: string,
    private readonly wallClock: () => number = Date.now,
  ) {}

  /** A stamp for a local event (a write), strictly greater than every stamp issued or observed before. */
  now(): Hlc {
    const physical = this.wallClock();
    if (physical > this.wall) {
      this.wall = physical;
      this.logical = 0;
    } else {
      // The wall clock stalled or went backwards: count instead.
      this.bumpLogical(this.logical);
    }
    return { wall: this.wall, logical: this.logical };
  }

  /** `now()` with this node's id attached. */
  stamp(): Stamp {
    const { wall, logical } = this.now();
    return { wall, logical, nodeId: this.nodeId };
  }

  /**
   * Takes in a peer's stamp (an applied record), so that every later local
   * stamp is greater than it.
   */
  observe(remote: Hlc): void {
    const physical = this.wallClock();
    const wall = Math.max(this.wall, remote.wall, physical);
    if (wall === this.wall && wall === remote.wall) {
      this.bumpLogical(Math.max(this.logical, remote.logical));
    } else if (wall === this.wall) {
      this.bumpLogical(this.logical);
    } else if (wall === remote.wall) {
      this.wall = wall;
      this.bumpLogical(remote.logical);
    } else {
      this.wall = wall;
      this.logical = 0;
    }
  }

  /** The last stamp issued or observed, without advancing the clock. */
  get last(): Hlc {
    return { wall: this.wall, logical: this.logical };
  }

  /**
   * logical = after + 1, but the wire field is a u32: past its end, borrow the
   * next millisecond instead (still monotonic, and it only runs ahead of the
   * wall clock by a millisecond per 4 billion events).
   */
  private bumpLogical(after: number): void {
    if (after >= HLC_LOGICAL_MAX) {
      this.wall += 1;
      this.logical = 0;
    } else {
      this.logical = after + 1;
    }
  }
}

/** Orders clock readings: negative if a is earlier. */
export function compareHlc(a: Hlc, b: Hlc): number {
  if (a.wall !== b.wall) return a.wall < b.wall ? -1 : 1;
  if (a.logical !== b.logical) return a.logical < b.logical ? -1 : 1;
  return 0;
}

/**
 * Total order of writes for conflict resolution: the HLC, then the node id
 * (compared as strings, by UTF-16 code units, so both nodes agree). Two
 * different nodes never produce equal stamps.
 */
export function compareStamps(a: Stamp, b: Stamp): number {
  const byClock = compareHlc(a, b);
  if (byClock !== 0) return byClock;
  if (a.nodeId === b.nodeId) return 0;
  return a.nodeId < b.nodeId ? -1 : 1;
}
