/**
 * Frames a client's byte stream into text/meta protocol requests exactly the
 * way memcached 1.6 does (proto_text.c): same line rules, same tokenizer, same
 * decision of whether a data block follows. The proxy forwards each framed
 * request as one unit, so if this agreed with memcached only "usually", a
 * malformed request would desynchronise replies from requests.
 *
 * It also follows which replies memcached would still hold unsent when it
 * reached each request (unsent-replies.ts), for the requests memcached refuses
 * then (OtherRequest.behindUnsentReplies).
 *
 * Pure: bytes in, typed requests out.
 */
import { ByteQueue } from '../byte-queue';
import { NO_KEYS } from '../bytes';
import { parseInt32, parseUint32, parseUint64 } from '../numbers';
import type { MetaCommand, MetaRequest, StorageCommand, TextRequest } from './messages';
import { type ReplyEffect, UnsentReplies } from './unsent-replies';

export const KEY_MAX_LENGTH = 250;
/** memcached closes a connection whose line has no newline after this many bytes (unless it is a get). */
export const LINE_MAX_WITHOUT_NEWLINE = 2048;
/** memcached's MAX_TOKENS: 23 tokens, then the rest of the line is one unparsed remainder. */
const MAX_TOKENS = 24;
/** memcached's MFLAG_MAX_OPT_LENGTH for meta commands. */
const META_MAX_TOKENS = 20;
const INT_MAX = 2147483647;

export interface RequestParserLimits {
  /** memcached's item size limit (-I): a data block larger than this is refused without buffering it. */
  maxItemSize: number;
  /** memcached accepts unbounded multi-get lines; the proxy does not. */
  maxMultigetLine: number;
  /** memcached's -R (read from `stats settings`): requests it handles in one go before sending their replies. */
  reqsPerEvent: number;
}

const STORAGE: ReadonlySet<string> = new Set(['set', 'add', 'replace', 'append', 'prepend', 'cas']);
const RETRIEVAL: ReadonlySet<string> = new Set(['get', 'gets', 'gat', 'gats', 'bget']);

/** Splits like memcached's tokenize_command: on single spaces, empty tokens dropped. */
export function tokenize(line: string): string[] {
  return line.split(' ').filter((t) => t.length > 0);
}

/** memcached's `ntokens`: tokens it looked at, plus its terminating empty token. */
function memcachedTokenCount(tokens: string[]): number {
  return Math.min(tokens.length, MAX_TOKENS - 1) + 1;
}

export class TextRequestParser {
  private readonly queue = new ByteQueue();
  /** A storage line whose data block has not fully arrived yet. */
  private pendingLine: { line: Buffer; blockLength: number; build: (line: Buffer, block: Buffer) => TextRequest } | null = null;
  /** Bytes of the stream pushed so far: with the queue's length, where in the stream parsing stands. */
  private received = 0;
  private readonly unsent: UnsentReplies;
  /** The request being framed sends memcached's queued replies at once (mn). */
  private sendsReplies = false;
  /** Where the data block of the request being framed ends, if memcached reads it apart (past what it had read). */
  private blockReadApart: number | null = null;

  constructor(private readonly limits: RequestParserLimits) {
    this.unsent = new UnsentReplies(() => limits.reqsPerEvent);
  }

  push(chunk: Buffer): void {
    this.received += chunk.length;
    this.queue.push(chunk);
  }

  /** Stream offset of the first byte not framed yet (bytes being discarded count as framed). */
  private get offset(): number {
    return this.received - this.queue.length;
  }

  /** Bytes held while waiting for the rest of a request. */
  get buffered(): number {
    return this.queue.length + (this.pendingLine?.line.length ?? 0);
  }

  /** The next complete request, or null until more bytes arrive. */
  next(): TextRequest | null {
    return this.handled(this.frame());
  }

  private frame(): TextRequest | null {
    if (this.queue.discardPending) return null;
    if (this.pendingLine) return this.readBlock();

    const newline = this.queue.indexOf(0x0a);
    if (newline === -1) return this.checkLongLine();

    const start = this.offset;
    const lineWithNewline = this.queue.take(newline + 1);
    this.unsent.line(start, this.offset);
    let end = newline;
    if (end > 1 && lineWithNewline[end - 1] === 0x0d) end--;
    let text = lineWithNewline.toString('latin1', 0, end);
    const nul = text.indexOf('\0');
    if (nul !== -1) text = text.slice(0, nul); // memcached works on a C string
    return this.parseLine(lineWithNewline, text);
  }

  /** Follows what memcached does with its queued replies as it handles `request` (or waits for more bytes). */
  private handled(request: TextRequest | null): TextRequest | null {
    if (request === null) {
      this.unsent.waiting(this.offset);
      return null;
    }
    const behind = this.unsent.handled(replyEffect(request, this.sendsReplies), this.blockReadApart);
    if (request.type === 'other') request.behindUnsentReplies = behind;
    this.sendsReplies = false;
    this.blockReadApart = null;
    return request;
  }

  /** Notes whether memcached reads the data block of the line just taken apart (see unsent-replies.ts). */
  private blockFollows(blockLength: number): void {
    const end = this.offset + blockLength;
    this.blockReadApart = this.unsent.blockPastRead(end, this.received) ? end : null;
  }

  private checkLongLine(): TextRequest | null {
    if (this.queue.length <= LINE_MAX_WITHOUT_NEWLINE) return null;
    // memcached only lets a long line grow when it is a multi-get.
    const head = this.queue.peek(Math.min(this.queue.length, 110)).toString('latin1');
    const spaces = head.length - head.trimStart().length;
    const rest = head.slice(spaces);
    const isMultiget = spaces <= 100 && (rest.startsWith('get ') || rest.startsWith('gets '));
    if (!isMultiget) return { type: 'close', reason: 'line too long' };
    if (this.queue.length > this.limits.maxMultigetLine) return { type: 'close', reason: 'multi-get line too long' };
    return null;
  }

  private readBlock(): TextRequest | null {
    const pending = this.pendingLine!;
    if (this.queue.length < pending.blockLength) return null;
    this.pendingLine = null;
    return pending.build(pending.line, this.queue.take(pending.blockLength));
  }

  private parseLine(line: Buffer, text: string): TextRequest | null {
    // The commonest request, `get <key>` with a single space: the tokenizer
    // would find exactly ['get', key], so skip it (same result, no arrays).
    if (text.startsWith('get ') && text.length > 4 && text.length - 4 <= KEY_MAX_LENGTH && text.indexOf(' ', 4) === -1) {
      return { type: 'retrieval', raw: line, command: 'get', exptime: null, touches: NO_KEYS };
    }
    const tokens = tokenize(text);
    const ntokens = memcachedTokenCount(tokens);
    const other = (): TextRequest => ({
      type: 'other',
      raw: line,
      mayBeSilent: tokens.some((t) => t === 'noreply'),
      streams: false,
      behindUnsentReplies: false,
    });
    if (ntokens < 2 || tokens[0].length < 2) return other();
    const command = tokens[0];

    if (command.length === 2 && command[0] === 'm') return this.parseMeta(line, tokens, ntokens);
    if (RETRIEVAL.has(command)) {
      if (ntokens < 3) return other();
      const gat = command === 'gat' || command === 'gats';
      // A too-long key makes memcached drop every reply it has queued (conn_release_items).
      if (tokens.slice(gat ? 2 : 1).some((key) => key.length > KEY_MAX_LENGTH) && (!gat || parseInt32(tokens[1]) !== null)) {
        return { type: 'refused', reply: 'CLIENT_ERROR bad command line format\r\n' };
      }
      const exptime = gat ? parseInt32(tokens[1]) : null;
      return {
        type: 'retrieval',
        raw: line,
        command: command as 'get',
        exptime,
        touches: exptime === null ? NO_KEYS : tokens.slice(2).map((key) => Buffer.from(key, 'latin1')),
      };
    }
    if (STORAGE.has(command)) {
      const storage = this.parseStorage(line, tokens, ntokens, command as StorageCommand);
      return storage === undefined ? other() : storage;
    }

    const noreply = tokens[ntokens - 2] === 'noreply';
    const key = tokens[1] === undefined ? null : Buffer.from(tokens[1], 'latin1');
    const keyOk = key !== null && key.length <= KEY_MAX_LENGTH;
    switch (command) {
      case 'incr':
      case 'decr': {
        const delta = ntokens === 4 || ntokens === 5 ? parseUint64(tokens[2]) : null;
        if (keyOk && delta !== null) return { type: 'arithmetic', raw: line, command, tokens, key: key!, noreply, delta };
        return other();
      }
      case 'touch': {
        const exptime = tokens[2] === undefined ? null : parseInt32(tokens[2]);
        if ((ntokens === 4 || ntokens === 5) && keyOk && exptime !== null) {
          return { type: 'touch', raw: line, tokens, key: key!, exptime, noreply };
        }
        return other();
      }
      case 'delete': {
        if (ntokens < 3 || ntokens > 5) return other();
        // memcached looks for noreply only when delete has more than a key.
        const silent = ntokens > 3 && noreply;
        const holdIsZero = tokens[2] === '0';
        const valid = ntokens === 3 || (ntokens === 4 && (holdIsZero || silent)) || (ntokens === 5 && holdIsZero && silent);
        if (valid && keyOk) return { type: 'delete', raw: line, tokens, key: key!, noreply: silent };
        return other();
      }
      case 'flush_all': {
        if (ntokens < 2 || ntokens > 4) return other();
        let delay: number | null = 0;
        if (ntokens !== (noreply ? 3 : 2)) delay = parseInt32(tokens[1]);
        if (delay === null) return other();
        return { type: 'flush_all', raw: line, tokens, delay, noreply };
      }
      case 'quit':
        return { type: 'quit' };
      case 'watch':
        return { type: 'other', raw: line, mayBeSilent: false, streams: true, behindUnsentReplies: false };
      default:
        if (!DISPATCHED_BY_FIRST_CHAR.includes(command[0]) && !KNOWN_COMMANDS.has(command) && tokens[ntokens - 2]?.startsWith('HTTP/')) {
          return { type: 'close', reason: 'HTTP request on the memcached port' };
        }
        return other();
    }
  }

  /** A storage request, null while its data block is incomplete, undefined if memcached will reject the line. */
  private parseStorage(line: Buffer, tokens: string[], ntokens: number, command: StorageCommand): TextRequest | null | undefined {
    const isCas = command === 'cas';
    if (isCas ? ntokens !== 7 && ntokens !== 8 : ntokens !== 6 && ntokens !== 7) return undefined;
    const key = Buffer.from(tokens[1], 'latin1');
    if (key.length > KEY_MAX_LENGTH) return undefined;
    const flags = parseUint32(tokens[2]);
    const exptime = parseInt32(tokens[3]);
    const length = parseInt32(tokens[4]);
    if (flags === null || exptime === null || length === null) return undefined;
    if (isCas && parseUint64(tokens[5]) === null) return undefined;
    if (length < 0 || length > INT_MAX - 2) return undefined;
    const noreply = tokens[ntokens - 2] === 'noreply';
    const blockLength = length + 2;
    this.blockFollows(blockLength);
    if (blockLength > this.limits.maxItemSize) {
      this.queue.discard(blockLength);
      return { type: 'too_large', meta: false, command, key, binaryKey: false, dropsOldItem: command === 'set', noreply };
    }
    this.pendingLine = {
      line,
      blockLength,
      build: (l, block) => ({
        type: 'storage',
        raw: Buffer.concat([l, block]),
        command,
        tokens,
        key,
        flags,
        exptime,
        value: block.subarray(0, length),
        noreply,
      }),
    };
    return this.readBlock();
  }

  private parseMeta(line: Buffer, tokens: string[], ntokens: number): TextRequest | null {
    const command = tokens[0] as MetaCommand;
    const other = (mayBeSilent = false): TextRequest => ({ type: 'other', raw: line, mayBeSilent, streams: false, behindUnsentReplies: false });
    this.sendsReplies = command === 'mn';
    if (!['mg', 'ms', 'md', 'ma'].includes(command)) return other();
    if (ntokens < 3) return other();
    const keyToken = tokens[1];
    if (keyToken.length > KEY_MAX_LENGTH || ntokens > META_MAX_TOKENS) return other();
    const isSet = command === 'ms';
    if (isSet && ntokens === 3) return other();
    const flags = tokens.slice(isSet ? 3 : 2, ntokens - 1);
    const quietFlags = flags.filter((f) => f[0] === 'q').length;
    const binaryKey = flags.some((f) => f[0] === 'b');
    const key = binaryKey ? Buffer.from(keyToken, 'base64') : Buffer.from(keyToken, 'latin1');
    // Two q flags make memcached answer "duplicate flag", which it always sends.
    const quiet = quietFlags === 1;
    const build = (raw: Buffer, value: Buffer | null): MetaRequest => ({
      type: 'meta',
      raw,
      command,
      tokens,
      key,
      flags,
      value,
      quiet,
    });
    if (!isSet) return build(line, null);

    const length = parseInt32(tokens[2]);
    if (length === null || length < 0 || length > INT_MAX - 2) return other();
    const blockLength = length + 2;
    this.blockFollows(blockLength);
    if (blockLength > this.limits.maxItemSize) {
      this.queue.discard(blockLength);
      const mode = flags.find((f) => f[0] === 'M');
      return {
        type: 'too_large',
        meta: true,
        command: 'ms',
        key,
        binaryKey,
        dropsOldItem: mode === undefined || mode === 'MS' || mode === 'Ms',
        noreply: false,
      };
    }
    this.pendingLine = {
      line,
      blockLength,
      build: (l, block) => build(Buffer.concat([l, block]), block.subarray(0, length)),
    };
    return this.readBlock();
  }
}

/** What memcached does with the replies it holds as it handles a request. */
function replyEffect(request: TextRequest, sendsReplies: boolean): ReplyEffect {
  if (request.type === 'retrieval' || sendsReplies) return 'sends';
  return request.type === 'refused' ? 'drops' : 'queues';
}

/**
 * memcached dispatches on the first character for these, answering ERROR for
 * unknown words; only a line that falls through all of its dispatch reaches
 * the "HTTP/" check that closes the connection.
 */
const DISPATCHED_BY_FIRST_CHAR = 'gsacidt';
const KNOWN_COMMANDS: ReadonlySet<string> = new Set([
  'replace',
  'prepend',
  'bget',
  'flush_all',
  'version',
  'quit',
  'lru_crawler',
  'watch',
  'verbosity',
  'lru',
  'extstore',
  'refresh_certs',
]);
