/**
 * Whether memcached, reaching a request, would still hold unsent replies to
 * earlier requests of the connection. It refuses `lru_crawler metadump` then
 * ("ERROR cannot pipeline other commands before metadump", proto_text.c's
 * resp_has_stack). memrepl sends a client's requests on connections of its
 * own choosing, so it works out from the client's byte stream what memcached
 * would have seen had the client talked to it directly.
 *
 * memcached 1.6 (memcached.c, drive_machine) reads up to READ_BUFFER_SIZE
 * bytes, handles every complete request in them and queues their replies,
 * even empty ones (noreply, quiet mode). It sends what it queued when
 *  - it has no complete request left (it reads again);
 *  - a request sends at once: get, gets, gat, gats, bget, mn;
 *  - it has handled reqs_per_event requests (-R, 20) in one go and yields to
 *    other connections (the first go after a read handles one more);
 *  - a data block runs past what it read: it reads the rest of the block
 *    straight from the socket, replies, and reads anew after it.
 * A request line that runs past what it read is handled after a new read
 * that starts with that line.
 *
 * Pure: stream offsets in, a yes or no out.
 */

/** memcached's READ_BUFFER_SIZE: the most one read takes (memcached.h). */
export const READ_BUFFER_SIZE = 16384;

/** What handling a request does to the replies memcached holds. */
export type ReplyEffect =
  /** Adds its own (the usual case). */
  | 'queues'
  /** Sends everything queued, its own included (get and friends, mn). */
  | 'sends'
  /** Drops everything queued, then queues its own (a get with a key over 250 bytes: conn_release_items). */
  | 'drops';

export class UnsentReplies {
  private unsent = 0;
  /** Requests handled since memcached last yielded or read. */
  private handledInGo = 0;
  /** The first go after a read handles one request more than reqs_per_event. */
  private extraInGo = 1;
  /** Stream offset where memcached's current read began. */
  private readStart = 0;

  constructor(private readonly reqsPerEvent: () => number) {}

  /** memcached has no complete request before stream offset `offset`: it sends its replies and reads again from there. */
  waiting(offset: number): void {
    // While the rest of a data block is read or discarded, the block's end (set by handled()) is where reading resumes.
    this.newRead(Math.max(offset, this.readStart));
  }

  /** A request line in the stream at [start, end). */
  line(start: number, end: number): void {
    if (end > this.readStart + READ_BUFFER_SIZE) this.newRead(start);
  }

  /** Whether a data block ending at `end` runs past what memcached had read (`received`: bytes of the stream that arrived). */
  blockPastRead(end: number, received: number): boolean {
    return end > Math.min(this.readStart + READ_BUFFER_SIZE, received);
  }

  /**
   * memcached handled a request; returns whether replies to earlier ones were
   * still unsent when it reached it. `readAfter`: its data block ran past what
   * memcached had read, so it reads anew from that stream offset.
   */
  handled(effect: ReplyEffect, readAfter: number | null): boolean {
    const behind = this.unsent > 0;
    this.unsent = effect === 'sends' ? 0 : effect === 'drops' ? 1 : this.unsent + 1;
    if (readAfter !== null) {
      this.newRead(readAfter);
    } else if (++this.handledInGo >= this.reqsPerEvent() + this.extraInGo) {
      this.unsent = 0;
      this.handledInGo = 0;
      this.extraInGo = 0;
    }
    return behind;
  }

  private newRead(start: number): void {
    this.unsent = 0;
    this.handledInGo = 0;
    this.extraInGo = 1;
    this.readStart = start;
  }
}
