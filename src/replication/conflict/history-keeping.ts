/**
 * How long the conflict maps (recent-writes.ts) remember this node's writes.
 *
 * Held, they forget nothing for its age: the peer may still send records
 * older than the window (the link is down, or its backlog is being
 * replayed), and a partition of any length must still be decided by last
 * writer wins. If their size bounds force entries out meanwhile, last writer
 * wins cannot decide every key, and the next handshake reconciles with copies
 * instead (overflowedWhileHeld). Not held, they forget what the peer
 * acknowledged a whole window ago (acknowledged-window.ts).
 */
import { AcknowledgedWindow } from './acknowledged-window';
import type { RecentWrites } from './recent-writes';

export class HistoryKeeping {
  private held = false;
  private overflowedWhenHeld = 0;
  private readonly window: AcknowledgedWindow;

  constructor(
    private readonly maps: readonly RecentWrites[],
    windowMs: number,
  ) {
    this.window = new AcknowledgedWindow(windowMs);
  }

  hold(held: boolean): void {
    if (held && !this.held) this.overflowedWhenHeld = this.overflowed;
    this.held = held;
    for (const map of this.maps) map.hold(held);
  }

  /** Entries the maps' size bounds forced out, in all. */
  get overflowed(): number {
    return this.maps.reduce((sum, map) => sum + map.overflowed, 0);
  }

  /** The size bounds forced entries out since the maps were last held. */
  get overflowedWhileHeld(): boolean {
    return this.overflowed > this.overflowedWhenHeld;
  }

  /**
   * A record of this node's went out, `unacknowledged` records now out. With
   * no acknowledgement in the window the maps may be forgetting by age alone;
   * not once records are unacknowledged.
   */
  recorded(now: number, unacknowledged: number): void {
    if (this.window.empty) this.forget(now, unacknowledged);
  }

  /** The peer acknowledged, at `now`, the records up to one stamped `wall` (see AcknowledgedWindow). */
  acknowledged(now: number, wall: number | undefined, unacknowledged: number): void {
    this.window.acknowledged(now, wall);
    this.forget(now, unacknowledged);
  }

  private forget(now: number, unacknowledged: number): void {
    const keepFrom = this.window.keepFrom(now, unacknowledged);
    for (const map of this.maps) map.keepFrom(keepFrom);
  }
}
