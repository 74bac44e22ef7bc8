/**
 * Paces a full copy's fetches. With the node's client latency to go by, the
 * copy paces itself: it runs as fast as it can while clients are idle, and
 * while they are busy it halves its rate whenever, over the last tenth of a
 * second, their p99 was over 1.5 times what it was before the copy or this
 * process's event loop kept callbacks waiting over half that p99 (a request
 * waiting to be read is not in the first measure), and raises it by a tenth
 * otherwise (never below MIN_RATE: the copy always progresses). The margins
 * keep clients within twice their p99, the target, on a loaded machine.
 * `--resync-rate` caps it either way; without the latency (the tests), the
 * cap alone paces.
 *
 * A token per fetch, refilled continuously, with bursts of a tenth of a
 * second at most.
 */
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { latencyBetween, type LatencyCounts } from '../../proxy/client-latency';

export interface PaceOptions {
  /** Items per second at most; 0: no cap. */
  cap: number;
  /** Counts of this node's client latency so far (ClientLatency.snapshot). */
  clientLatency?: () => LatencyCounts;
}

/** How often the rate is adjusted to the clients' latency. */
const ADJUST_MS = 100;
/** Replies in an interval below this: the clients are idle. */
const BUSY_REPLIES = 20;
/** The rate a self-paced copy starts at, and the least it goes down to. */
const START_RATE = 20_000;
const MIN_RATE = 1_000;
/** Above this, a copy without a cap is not paced at all. */
const UNPACED_ABOVE = 1_000_000;
/** A p99 before the copy below this counts as this: sub-millisecond noise must not stall a copy. */
const BASELINE_FLOOR_US = 250;
const QUANTILE = 0.99;
/** The clients' p99 over the baseline, and the loop's delay over it, past which the copy slows; how much faster it goes otherwise. */
const SLOWER_ABOVE = 1.5;
const LOOP_DELAY_ABOVE = 0.5;
const FASTER_BY = 1.1;
/** How often the event loop's delay is sampled during a self-paced copy. */
const LOOP_DELAY_RESOLUTION_MS = 5;

export class FetchPace {
  /** Items per second now; Infinity: unpaced. */
  rate: number;
  private tokens = 0;
  private lastRefill: number;
  private timer: NodeJS.Timeout | null = null;
  private adjuster: NodeJS.Timeout | null = null;
  private readonly cap: number;
  private baselineUs = 0;
  private last: LatencyCounts | null = null;
  private loopDelay: IntervalHistogram | null = null;

  constructor(
    options: PaceOptions,
    /** Called once a token is due after take() found none. */
    private readonly wake: () => void,
    private readonly now: () => number = Date.now,
  ) {
    this.cap = options.cap > 0 ? options.cap : Infinity;
    this.lastRefill = now();
    const latency = options.clientLatency;
    if (!latency) {
      this.rate = this.cap;
      return;
    }
    this.rate = Math.min(this.cap, START_RATE);
    this.last = latency();
    this.baselineUs = Math.max(BASELINE_FLOOR_US, latencyBetween(new Float64Array(this.last.length), this.last, QUANTILE).quantileUs);
    this.loopDelay = monitorEventLoopDelay({ resolution: LOOP_DELAY_RESOLUTION_MS });
    this.loopDelay.enable();
    this.adjuster = setInterval(() => {
      const loopDelayUs = this.loopDelay!.percentile(QUANTILE * 100) / 1000;
      this.loopDelay!.reset();
      this.adjust(latency(), loopDelayUs);
    }, ADJUST_MS);
    this.adjuster.unref();
  }

  /** Takes a token for one fetch; false when there is none yet (then `wake` runs once there should be). */
  take(): boolean {
    const rate = this.rate;
    if (rate === Infinity) return true;
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

  /** One interval's verdict (exposed for tests): the clients' latency since the last one, and how long the event loop kept callbacks waiting. */
  adjust(counts: LatencyCounts, loopDelayUs = 0): void {
    const { count, quantileUs } = latencyBetween(this.last ?? counts, counts, QUANTILE);
    this.last = counts;
    const before = this.rate;
    if (count < BUSY_REPLIES) this.rate = this.rate * 2;
    else if (quantileUs > SLOWER_ABOVE * this.baselineUs || loopDelayUs > LOOP_DELAY_ABOVE * this.baselineUs)
      this.rate = Math.max(MIN_RATE, Math.min(this.rate, UNPACED_ABOVE) / 2);
    else this.rate = this.rate * FASTER_BY;
    this.rate = Math.min(this.cap, this.rate > UNPACED_ABOVE ? Infinity : this.rate);
    // A copy that waited for a token goes on at once when the rate went up.
    if (this.rate > before && this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
      this.wake();
    }
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.adjuster) clearInterval(this.adjuster);
    this.loopDelay?.disable();
    this.timer = this.adjuster = null;
  }
}
