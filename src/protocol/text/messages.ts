/**
 * Typed requests of memcached's text and meta protocols, as the request parser
 * frames them. Every request keeps its raw bytes so the proxy can forward
 * exactly what the client sent; the parsed fields are what the proxy needs to
 * learn whether a write took effect.
 *
 * A request is "well-formed" here when memcached will attempt it (right token
 * count, key within 250 bytes, numbers that parse). Only well-formed writes get
 * their `noreply` / `q` stripped upstream: for anything else memcached answers
 * with an error, and the proxy forwards it untouched.
 */

export type StorageCommand = 'set' | 'add' | 'replace' | 'append' | 'prepend' | 'cas';
export type RetrievalCommand = 'get' | 'gets' | 'gat' | 'gats' | 'bget';
export type MetaCommand = 'mg' | 'ms' | 'md' | 'ma' | 'me' | 'mn';

interface Base {
  /** The request exactly as the client sent it (line and data block). */
  raw: Buffer;
}

export interface StorageRequest extends Base {
  type: 'storage';
  command: StorageCommand;
  /** Tokens of the command line, as memcached split them (latin1, lossless). */
  tokens: string[];
  key: Buffer;
  flags: number;
  exptime: number;
  /** The data block without its trailing \r\n (the client's bytes, even if malformed). */
  value: Buffer;
  noreply: boolean;
}

export interface ArithmeticRequest extends Base {
  type: 'arithmetic';
  command: 'incr' | 'decr';
  tokens: string[];
  key: Buffer;
  /** The delta as memcached reads it (a sign, wrapped around as memcached does). */
  delta: bigint;
  noreply: boolean;
}

export interface TouchRequest extends Base {
  type: 'touch';
  tokens: string[];
  key: Buffer;
  exptime: number;
  noreply: boolean;
}

export interface DeleteRequest extends Base {
  type: 'delete';
  tokens: string[];
  key: Buffer;
  noreply: boolean;
}

export interface FlushRequest extends Base {
  type: 'flush_all';
  tokens: string[];
  delay: number;
  noreply: boolean;
}

export interface RetrievalRequest extends Base {
  type: 'retrieval';
  command: RetrievalCommand;
  /** New expiry for gat/gats, null for plain gets. */
  exptime: number | null;
  /** The keys a gat/gats may touch (empty for plain gets). */
  touches: readonly Buffer[];
}

export interface MetaRequest extends Base {
  type: 'meta';
  command: MetaCommand;
  tokens: string[];
  /** The key as memcached stores it (base64-decoded when the `b` flag is set). */
  key: Buffer;
  /** Flag tokens after the key (and after the data length, for ms). */
  flags: string[];
  /** ms only: the data block without its trailing \r\n. */
  value: Buffer | null;
  /** Has the `q` flag; the parser only sets it when the flag can be stripped safely. */
  quiet: boolean;
}

/** The data block is larger than memcached's item limit: memcached would refuse it and discard the bytes. */
export interface TooLargeRequest {
  type: 'too_large';
  meta: boolean;
  command: StorageCommand | 'ms';
  key: Buffer;
  /** ms with a base64 key: the key token is not the stored key. */
  binaryKey: boolean;
  /** Only a plain set (or ms in set mode) makes memcached drop the old item. */
  dropsOldItem: boolean;
  noreply: boolean;
}

/**
 * A request memcached refuses with an error the proxy can give just as well,
 * and must: memcached's error path for it would also discard replies still
 * queued for earlier pipelined requests, which would desynchronise the proxy.
 */
export interface RefusedRequest {
  type: 'refused';
  reply: string;
}

/** Anything else memcached understands or rejects on its own: forwarded untouched. */
export interface OtherRequest extends Base {
  type: 'other';
  /** memcached might send no reply at all (a `noreply` or `q` it honours, on a line we did not parse). */
  mayBeSilent: boolean;
  /** `watch`: memcached turns the connection into an endless log stream. */
  streams: boolean;
  /**
   * memcached would reach this line still holding unsent replies to earlier
   * requests of the connection (see unsent-replies.ts): it refuses
   * `lru_crawler metadump` then.
   */
  behindUnsentReplies: boolean;
}

export interface QuitRequest {
  type: 'quit';
}

/** memcached would close the connection without a reply (line too long, HTTP request line). */
export interface CloseRequest {
  type: 'close';
  reason: string;
}

export type TextRequest =
  | StorageRequest
  | ArithmeticRequest
  | TouchRequest
  | DeleteRequest
  | FlushRequest
  | RetrievalRequest
  | MetaRequest
  | TooLargeRequest
  | RefusedRequest
  | OtherRequest
  | QuitRequest
  | CloseRequest;
