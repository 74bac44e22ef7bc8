/**
 * Paces a full copy's fetches. With the node's client latency to go by, the
 * copy paces itself: it runs as fast as it can while clients are idle, and
 * while they are busy it halves its rate whenever, over the last second,
 * their p99 was over 1.5 times what it was before the copy, or the event loop
 * ran late by more than it did before plus half that p99 (a request waiting
 * to be read is not in the first measure; the two add up to twice the p99,
 * the target). Otherwise it raises the rate by a tenth every tenth of a
 * second (never below MIN_RATE: the copy always progresses). Clients that
 * go idle let it double every tenth of a second; when they come back it
 * returns to the rate it had while they were busy (clients that pause
 * between bursts met a copy sped up a hundredfold). After a cut
 * the window starts over: it is judged again once it spans JUDGED_AFTER
 * adjustments, on replies that all came after the cut.
 *
 * The window is a second, not the tenth of a second between adjustments: the
 * p99 of a tenth's few hundred replies swings by itself, and with a cut on
 * every swing a copy under light load crawled at MIN_RATE (session 17).
 * `--resync-rate` caps it either way; without the latency (the tests), the
 * cap alone paces.
 *
 * A token per fetch, refilled continuously, with bursts of a tenth of a
 * second at most.
 */
import { latencyBetween, type LatencySnapshot } from '../../proxy/client-latency';

export interface PaceOptions {
  /** Items per second at most; 0: no cap. */
  cap: number;
  /** This node's client latency so far (ClientLatency.snapshot). */
  clientLatency?: () => LatencySnapshot;
}

/** How often the rate is adjusted to the clients' latency. */
const ADJUST_MS = 100;
/** The adjustments a window spans: the latency is judged over the last WINDOW * ADJUST_MS. */
const WINDOW = 10;
/** After a cut (and at the start), the adjustments that pass before the clients' latency is judged again. */
const JUDGED_AFTER = 3;
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
/** The clients' p99 over the baseline past which the copy slows, and the event loop's extra lateness (in baseline p99s); how much faster it goes otherwise. */
const SLOWER_ABOVE = 1.5;
const LOOP_LATER_BY = 0.5;
const FASTER_BY = 1.1;

export class FetchPace {
  /** Items per second now; Infinity: unpaced. */
  rate: number;
  private tokens = 0;
  private lastRefill: number;
  private timer: NodeJS.Timeout | null = null;
  private adjuster: NodeJS.Timeout | null = null;
  private readonly cap: number;
  /** The clients' p99 and the loop's lateness p99 before the copy (µs). */
  private baselineUs = 0;
  private loopBaselineUs = 0;
  /** The snapshots of the last WINDOW adjustments and the one before them, oldest first. */
  private readonly window: LatencySnapshot[] = [];
  /** While the clients are idle: the rate they were last busy at, which they come back to. */
  private busyRate: number | null = null;

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
    const before = latency();
    const zero = new Float64Array(before.replies.length);
    this.baselineUs = Math.max(BASELINE_FLOOR_US, latencyBetween(zero, before.replies, QUANTILE).quantileUs);
    this.loopBaselineUs = latencyBetween(zero, before.loop, QUANTILE).quantileUs;
    this.window.push(before);
    this.adjuster = setInterval(() => this.adjust(latency()), ADJUST_MS);
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

  /** One interval's verdict (exposed for tests), from the latency so far. */
  adjust(latest: LatencySnapshot): void {
    const previous = this.window[this.window.length - 1] ?? latest;
    this.window.push(latest);
    if (this.window.length > WINDOW + 1) this.window.shift();
    const before = this.rate;
    if (latencyBetween(previous.replies, latest.replies, QUANTILE).count < BUSY_REPLIES) {
      this.busyRate ??= this.rate;
      this.rate = this.rate * 2;
    } else if (this.busyRate !== null) {
      // Back from idle: at the rate that suited them busy, not at what the copy sped up to meanwhile.
      this.rate = Math.min(this.rate, this.busyRate);
      this.busyRate = null;
      this.window.splice(0, this.window.length - 1); // what came at the faster rate is no measure of this one
    } else if (this.window.length - 1 < JUDGED_AFTER) {
      return; // too few replies since the last cut to tell
    } else if (this.slowed(this.window[0], latest)) {
      this.rate = Math.max(MIN_RATE, Math.min(this.rate, UNPACED_ABOVE) / 2);
      this.window.splice(0, this.window.length - 1); // judged again on what comes after the cut
    } else this.rate = this.rate * FASTER_BY;
    this.rate = Math.min(this.cap, this.rate > UNPACED_ABOVE ? Infinity : this.rate);
    // A copy that waited for a token goes on at once when the rate went up.
    if (this.rate > before && this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
      this.wake();
    }
  }

  /** Whether the clients waited longer over the window than the copy may make them. */
  private slowed(from: LatencySnapshot, to: LatencySnapshot): boolean {
    if (latencyBetween(from.replies, to.replies, QUANTILE).quantileUs > SLOWER_ABOVE * this.baselineUs) return true;
    const loop = latencyBetween(from.loop, to.loop, QUANTILE);
    return loop.count > 0 && loop.quantileUs > this.loopBaselineUs + LOOP_LATER_BY * this.baselineUs;
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.adjuster) clearInterval(this.adjuster);
    this.timer = this.adjuster = null;
  }
}
