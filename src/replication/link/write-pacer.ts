/**
 * Paces writes to the link: at most one per `everyMs` while there is more to
 * write, at once after a quiet spell. Each write is a system call on both
 * nodes, and with few clients each turn of the event loop has one record (or
 * one acknowledgement) to write: batched over a millisecond instead, a pair
 * under load makes several times fewer of them. An idle pair's lag does not
 * grow: the first write after a quiet spell goes at the end of its turn.
 */
export class WritePacer {
  private scheduled = false;
  private lastWriteAt = -Infinity;

  /** `write`: writes what is pending, and calls wrote() if it wrote anything. */
  constructor(
    private readonly everyMs: number,
    private readonly write: () => void,
  ) {}

  /** Something is pending: write it at the end of this turn, or `everyMs` after the last write. */
  schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    const wait = this.lastWriteAt + this.everyMs - performance.now();
    if (wait > 0) setTimeout(this.run, wait);
    else setImmediate(this.run);
  }

  /** A write went out (on schedule or not: a drained socket writes at once). */
  wrote(): void {
    this.lastWriteAt = performance.now();
  }

  private readonly run = (): void => {
    this.scheduled = false;
    this.write();
  };
}
