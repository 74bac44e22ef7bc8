/**
 * The replication seam: what a client write did to the local memcached. The
 * proxy reports to a WriteSink; replication is one (its recorder), and a
 * proxy without a peer discards.
 *
 * The proxy produces these only for writes that took effect (memcached said
 * so). Replication ships *state*, not operations (docs/design.md §4): an effect either
 * carries the resulting item, or says the item must be read back because the
 * reply did not carry it (append, incr, ...).
 */

/** Expiry as memcached's `exptime` field: 0 never, <= 30 days relative, else absolute unix time. */
export type Exptime = number;

export type WriteEffect =
  /** The item now holds exactly this. */
  | { kind: 'set'; key: Buffer; value: Buffer; flags: number; exptime: Exptime }
  /**
   * The item changed in a way the reply does not show (append, incr, ma, md I
   * ...): read it back, with whether an md I left it stale. `answered: false`:
   * no reply said a write took effect (a request whose reply never came, a
   * repair), so the key is not taken as written before the read finds it.
   * `mayRunLater`: memcached was cut off with the request unrun and may run
   * it once it resumes: read again after that. `replay`: the write as an
   * operation the peer can run itself, shipped if the read back fails (a
   * memcached that died right after answering); only where it is exact.
   */
  | { kind: 'readback'; key: Buffer; answered?: false; mayRunLater?: true; replay?: Replay }
  /** Only the expiry changed (touch, gat, mg T). */
  | { kind: 'touch'; key: Buffer; exptime: Exptime }
  /**
   * `missed`: memcached answered "not found". Replicated all the same: the key
   * may be absent here only because this memcached lost it (restarted, not yet
   * noticed) or its copy has not arrived yet, and the client's delete must win
   * over the peer's value either way (a logged-out session must not come back).
   */
  | { kind: 'delete'; key: Buffer; missed?: boolean }
  | { kind: 'flush'; delay: number };

/** An append or prepend (`value`: the bytes added), an incr or decr (`value`: the delta's decimal digits). */
export interface Replay {
  op: 'append' | 'prepend' | 'incr' | 'decr';
  value: Buffer;
}

/** One client flush_all, from flushing() to its end. */
export interface FlushTurn {
  /**
   * Send the flush_all once this resolves true (null: at once); false: do not
   * send it, replication could not get ready in time (memcached silent).
   */
  ready: Promise<boolean> | null;
  /**
   * Its reply is in and its effect reported to written(), or it never reached
   * memcached. `unanswered`: it reached memcached, its reply will never be
   * read, and memcached has since run or dropped every request sent with it
   * (see retire): replication finds out which, and replicates it if it ran.
   */
  ended(unanswered?: { delay: number }): void;
}

/** Where the proxy reports writes. Replication implements it. */
export interface WriteSink {
  /**
   * A request that may write `key` is about to go to memcached. A promise
   * means: send it once the promise resolves (replication has something of
   * this key in flight that the write must land after). `writer`: the
   * session, which keeps its own writes in order.
   */
  writing(key: Buffer, writer: object): Promise<void> | null;
  /** That request's reply is in (or it failed): pairs with writing(). */
  writeEnded(key: Buffer): void;
  /**
   * A client's flush_all is about to go to memcached: replication orders it
   * with the peer's records and other clients' writes, which reach memcached
   * on other connections, and learns what became of it (see FlushTurn).
   */
  flushing(): FlushTurn;
  /** A write took effect; memcached answered `receivedAt`. */
  written(effect: WriteEffect, receivedAt: number): void;
}

const NO_TURN: FlushTurn = { ready: null, ended() {} };

export const discardWrites: WriteSink = { writing: () => null, writeEnded() {}, flushing: () => NO_TURN, written() {} };
