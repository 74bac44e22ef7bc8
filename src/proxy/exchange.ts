/**
 * One request and what to do with its reply: the contract between a protocol
 * (text or binary) and the protocol-agnostic session.
 *
 * The session sends `upstream` to the local memcached, then feeds each reply
 * part to `onPart` in order; a part is forwarded to the client only when
 * `onPart` says so, which is how `noreply` and quiet modes stay invisible
 * while the proxy still learns the outcome. When the last part arrived, the
 * session writes `localReply` (if any) and hands `effects()` to replication.
 */
import type { WriteEffect } from './write-sink';

export interface PartVerdict {
  /** Send this part to the client. */
  forward: boolean;
  /** This part ends the reply to this request. */
  final: boolean;
}

export interface Exchange<Part> {
  /** Bytes for memcached, or null when the proxy answers by itself. */
  upstream: Buffer | null;
  /** Metric label: the command name ("get", "ms", "binary:set", ...). */
  command: string;
  /**
   * The keys this request may write (a gat touches each key it finds; most
   * writes have one key, reads none): replication watches writes in flight so
   * a peer's record for the same key cannot race them unseen.
   */
  writeKeys: readonly Buffer[];
  /** A flush_all, with its delay as sent: it writes every key (see WriteSink.flushing). */
  flush: { delay: number } | null;
  onPart(part: Part): PartVerdict;
  /** Written to the client once the reply is complete (or at once when upstream is null). */
  localReply: Buffer | null;
  /** Writes that took effect, known once the reply is complete. */
  effects(): WriteEffect[];
  /** Close the client connection after this exchange (quit, line too long, ...). */
  closeAfter: boolean;
  /** memcached turns the connection into an endless stream after this (watch). */
  streams: boolean;
  /**
   * Which upstream connection this request may use. 'shared': any, its reply
   * is at most `replyItems` items long. 'own': a connection with nothing else
   * on it while it runs (memcached refuses to pipeline `lru_crawler metadump`
   * behind other commands). 'pin': it changes the connection's state for good
   * (watch, SASL), so the session keeps a connection of its own from then on.
   */
  connection: 'shared' | 'own' | 'pin';
  /** How many items the reply may carry (keys of a multi-get; 1 otherwise): bounds what a slow reader can cost. */
  replyItems: number;
  /** Metric label for the outcome, known once the reply is complete ("hit", "stored", "error", ...). */
  outcome(): string;
  /** What the client gets instead of memcached's reply when memcached cannot be reached (null: it expects no reply). */
  errorReply(message: string): Buffer | null;
}

/** A protocol as the session sees it. */
export interface Dialect<Request, Part extends { raw: Buffer }> {
  readonly name: 'text' | 'binary';
  requestParser: { push(chunk: Buffer): void; next(): Request | null; readonly buffered: number };
  newReplyParser(): { push(chunk: Buffer): void; next(): Part | null; readonly buffered: number };
  plan(request: Request): Exchange<Part>;
}
