/**
 * memcached turns a relative exptime into a deadline on its own clock, which
 * a timer moves once a second. A memcached that stood still (SIGSTOP, swapped
 * out, a long pause) runs the requests that waited for it before that timer
 * catches up, on a clock as old as the pause, so their items expire earlier
 * than the exptime says; and a read back then tells an item's remaining life
 * as long as the pause too long.
 *
 * The restart watch's poll (a `stats` on a connection of its own, always in
 * flight) tells the pause: one answered more than a tick after it was asked.
 * Every item whose expiry memcached set or told between that poll's question
 * and READ_AFTER_TICK_MS after its answer is then read again once memcached's
 * clock has ticked, and shipped with the expiry memcached really holds,
 * stamped as the write it corrects (Recorder.readAgain).
 * Between the question and the answer, memcached answered only what it ran
 * as it resumed (the burst the poll's answer came in, in any order), or what
 * it ran before it stopped (read again for nothing). Seed 31 (120 s): a set
 * sent 0.38 s before memcached resumed from 6.5 s stopped ran on its stale
 * clock, and lived 7 s less than on the peer: its own wait did not show it.
 *
 * A client's slow reply is no sign: a busy memcached answers late on a clock
 * that keeps ticking, and reading everything again then would add load to an
 * overloaded node.
 *
 * A read again is dropped if the watch's connection dropped meanwhile (it is
 * always open, so it sees every exit of memcached): memcached may have
 * restarted, and a new, empty memcached would answer a miss, shipped as a
 * delete. Seed 31 (600 s): memcached B was killed a second after it resumed
 * from a pause; B's reads again shipped deletes of B's own writes to A, and
 * A's refill of B could not bring them back.
 */
const STALE_CLOCK_AFTER_MS = 1000;
const READ_AFTER_TICK_MS = 1100;
/** Items answered lately that are remembered: the newest, those in the burst a pause ends with. */
const REMEMBERED = 4096;
/** Keys waiting for memcached to answer again (afterResume) at most: past it, the newest are not remembered. */
const AWAITING_RESUME = 4 * REMEMBERED;

export class StaleClock {
  /** When a poll last showed that memcached had stood still. */
  private stoodStillAt = -Infinity;
  /**
   * A ring of the keys answered lately (latin1, not the request's bytes: a
   * key sliced from a read would keep its whole chunk alive) and when (ms),
   * newest at `next - 1`.
   */
  private readonly keys: (string | undefined)[] = new Array<string | undefined>(REMEMBERED);
  private readonly times = new Float64Array(REMEMBERED);
  private next = 0;
  /** Keys to read again once memcached's clock has ticked. */
  private readonly rereads = new Set<string>();
  /** Keys to read again once memcached answers a poll asked after this time (ms). */
  private readonly awaitingResume = new Map<string, number>();

  /**
   * `readBack`: ships what memcached holds for the key now; `drops`: how many
   * times the restart watch's connection to memcached dropped.
   */
  constructor(
    private readonly readBack: (key: Buffer) => void,
    private readonly drops: () => number,
  ) {}

  /** memcached answered at `answeredAt` a poll asked at `askedAt`. */
  polled(askedAt: number, answeredAt: number): void {
    for (const [id, since] of this.awaitingResume) {
      if (since >= askedAt) continue;
      this.awaitingResume.delete(id);
      this.readAfterTick(id);
    }
    if (answeredAt - askedAt <= STALE_CLOCK_AFTER_MS) return;
    this.stoodStillAt = Math.max(this.stoodStillAt, answeredAt);
    for (let back = 1; back <= REMEMBERED; back++) {
      const at = (this.next - back + REMEMBERED) % REMEMBERED;
      const id = this.keys[at];
      if (id === undefined || this.times[at] < askedAt) break;
      this.keys[at] = undefined;
      this.readAfterTick(id);
    }
  }

  /**
   * A write of `key` was cut off unrun in a memcached that stood still past
   * the proxy's grace (its connection destroyed): memcached may still run it
   * once it resumes, after the read back that followed. So once memcached
   * answers a poll asked after now, and its clock has ticked, `key` is read
   * again. Seen in CI (session 17): memcached stopped 1 s, 1,206 sets cut off,
   * read back before they ran, never on the peer.
   */
  afterResume(key: Buffer, now = Date.now()): void {
    if (this.awaitingResume.size < AWAITING_RESUME) this.awaitingResume.set(key.toString('latin1'), now);
  }

  /** memcached answered a write that set `key`'s expiry, or told it (a read back), at `answeredAt`. */
  answered(key: Buffer, answeredAt: number): void {
    const id = key.toString('latin1');
    if (answeredAt - this.stoodStillAt < READ_AFTER_TICK_MS) return this.readAfterTick(id);
    this.keys[this.next] = id;
    this.times[this.next] = answeredAt;
    this.next = (this.next + 1) % REMEMBERED;
  }

  private readAfterTick(id: string): void {
    if (this.rereads.has(id)) return;
    this.rereads.add(id);
    const drops = this.drops();
    setTimeout(() => {
      this.rereads.delete(id);
      if (this.drops() === drops) this.readBack(Buffer.from(id, 'latin1'));
    }, READ_AFTER_TICK_MS).unref();
  }
}
