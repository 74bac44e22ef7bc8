/**
 * Paces a full copy's fetches to `--resync-rate` items per second (0: as
 * fast as the bounds on fetches in flight allow): a token per fetch, refilled
 * continuously, with bursts of a tenth of a second at most.
 */
export class FetchPace {
  private tokens = 0;
  private lastRefill: number;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly ratePerSecond: number,
    /** Called once a token is due after take() found none. */
    private readonly wake: () => void,
    private readonly now: () => number = Date.now,
  ) {
    this.lastRefill = now();
  }

  /** Takes a token for one fetch; false when there is none yet (then `wake` runs once there should be). */
  take(): boolean {
    const rate = this.ratePerSecond;
    if (rate <= 0) return true;
    const now = this.now();
    this.tokens = Math.min(rate / 10, this.tokens + ((now - this.lastRefill) * rate) / 1000);
    this.lastRefill = now;
    if (this.tokens >= 1) {
      this.tokens--;
      return true;
    }
    this.timer ??= setTimeout(
      () => {
        this.timer = null;
        this.wake();
      },
      Math.ceil(1000 / rate),
    );
    return false;
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
