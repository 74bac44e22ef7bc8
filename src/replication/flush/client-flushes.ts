/**
 * Clients' own flush_all, one at a time, each ordered with the peer's
 * records and other clients' writes (see send/client-sink.ts), and each
 * replicated if it ran, also when its client never learnt that it did.
 *
 * A flush whose reply never comes (memcached stood still past the reply
 * timeout, the connection failed) may still have run: memcached reads what
 * reached its socket before it sees the connection close. The session says
 * so once memcached is done with that connection (see retire), and memcached's
 * own count of flushes, read before the flush went and again then, tells
 * whether it ran. Running the flush again instead would not do: memcached
 * flushes what is older than a flush's moment, and the moment of a second
 * flush, later, would take the writes made in between.
 *
 * One at a time, so that a count that moved is this flush's: the applier's
 * flushes wait meanwhile (Applier.pauseForLocalFlush), and two clients'
 * flushes one after the other cost memcached no more than together.
 */
import type { FlushCount } from '../../protocol/text/stats';
import type { FlushTurn } from '../../proxy/write-sink';

export interface ClientFlushesDeps {
  /** Holds the applier and other client writes back; resolves once those on their way landed. */
  hold(): Promise<void>;
  /** The flush was noted (or failed): what hold() held back goes; resolves when it has. */
  release(): Promise<void>;
  /** memcached's flush count now. */
  count(): Promise<FlushCount>;
  /** An unanswered flush ran: replicate it. */
  ran(delay: number): void;
  /** Whether an unanswered flush ran cannot be told. */
  unknown(reason: string): void;
  /**
   * How long a flush may wait for its turn and its count (the reply timeout):
   * past it, it is refused unsent, as a request to a silent memcached fails.
   */
  waitLimitMs: number;
}

export class ClientFlushes {
  /** Resolves once the latest turn ended. */
  private last: Promise<void> = Promise.resolve();

  constructor(private readonly deps: ClientFlushesDeps) {}

  turn(): FlushTurn {
    const previous = this.last;
    let done!: () => void;
    this.last = new Promise((resolve) => (done = resolve));
    // Held at once, not at its turn: the client writes admitted after this flush wait behind it
    // in their sessions, and must not be counted as on their way to memcached.
    const held = Promise.all([this.deps.hold(), previous]);
    const before = held.then(() => this.deps.count());
    let refused = false;
    const ready = new Promise<boolean>((resolve) => {
      // A count that never comes (memcached stopped) would hold the flush, and every client write behind it, unbounded.
      const timer = setTimeout(() => {
        refused = true;
        resolve(false);
      }, this.deps.waitLimitMs);
      const go = () => {
        clearTimeout(timer);
        resolve(true);
      };
      before.then(go, go);
    });
    let ended = false;
    return {
      ready,
      ended: (unanswered) => {
        if (ended) return;
        ended = true;
        // Refused, it never went: what it holds goes now, not once memcached answers.
        const checked = refused ? Promise.resolve() : held.then(() => (unanswered ? this.check(before, unanswered.delay) : undefined));
        void checked
          .catch(() => {})
          .then(() => this.deps.release())
          .then(done, done);
      },
    };
  }

  private async check(before: Promise<FlushCount | null>, delay: number): Promise<void> {
    const start = await before.catch(() => null);
    if (!start) return this.deps.unknown('a flush_all got no reply, and its count before it was not read');
    let now: FlushCount;
    try {
      now = await this.deps.count();
    } catch (error) {
      return this.deps.unknown(`a flush_all got no reply, and memcached's flush count could not be read: ${(error as Error).message}`);
    }
    // Restarted since: its items went anyway, the flush's with them.
    if (now.pid !== start.pid) return;
    if (now.flushes > start.flushes) this.deps.ran(delay);
  }
}
