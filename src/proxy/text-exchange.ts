/**
 * The text and meta protocols as the session sees them: for each framed
 * request, what goes upstream, which reply parts the client sees, and which
 * writes took effect.
 *
 * To learn the outcome of a `noreply` write or a quiet (`q`) meta command,
 * the flag is stripped upstream and the reply is swallowed exactly when
 * memcached itself would have stayed silent (proto_text.c: text noreply
 * silences every reply; meta q silences only the nominal one).
 */
import { NO_KEYS } from '../protocol/bytes';
import type { WriteEffect } from './write-sink';
import { parseInt32, parseUint32, parseUint64 } from '../protocol/numbers';
import type { MetaRequest, TextRequest } from '../protocol/text/messages';
import type { ReplyPart } from '../protocol/text/reply-parser';
import { TextReplyParser } from '../protocol/text/reply-parser';
import { serializeStats } from '../protocol/text/stats';
import { RequestParserLimits, TextRequestParser } from '../protocol/text/request-parser';
import { lineWithout, metaDelete, metaWithoutQuiet, SENTINEL, SENTINEL_REPLY, serverError, TOO_LARGE } from '../protocol/text/serializer';
import type { Dialect, Exchange, PartVerdict } from './exchange';

const FORWARD_END: PartVerdict = { forward: true, final: true };
const FORWARD_MORE: PartVerdict = { forward: true, final: false };
const SWALLOW_END: PartVerdict = { forward: false, final: true };
const SWALLOW_MORE: PartVerdict = { forward: false, final: false };

/** Meta replies memcached elides in quiet mode. */
const QUIET_ELIDES: Record<string, ReadonlySet<string>> = {
  mg: new Set(['EN']),
  ms: new Set(['HD']),
  md: new Set(['HD']),
  ma: new Set(['HD', 'VA']),
};

/** The proxy's own `stats <group>` answers (e.g. `stats replication`), by group. */
export type ProxyStats = Record<string, () => Array<[string, string | number]>>;

export function textDialect(limits: RequestParserLimits, proxyStats: ProxyStats = {}): Dialect<TextRequest, ReplyPart> {
  return {
    name: 'text',
    requestParser: new TextRequestParser(limits),
    newReplyParser: () => new TextReplyParser(),
    plan: (request) => planProxyStats(request, proxyStats) ?? planText(request),
  };
}

/** `stats replication` and friends describe the proxy, not memcached: answered here, in memcached's format. */
function planProxyStats(request: TextRequest, proxyStats: ProxyStats): Exchange<ReplyPart> | null {
  if (request.type !== 'other') return null;
  const words = request.raw.toString('latin1').trim().split(/ +/);
  if (words.length !== 2 || words[0] !== 'stats' || !Object.hasOwn(proxyStats, words[1])) return null;
  return exchange('stats', null, { localReply: serializeStats(proxyStats[words[1]]()), outcome: () => words[1] });
}

const forwardUntilEnd = (part: ReplyPart): PartVerdict => (part.kind === 'end' ? FORWARD_END : FORWARD_MORE);
const noEffects = (): WriteEffect[] => [];
const outcomeOk = (): string => 'ok';

/**
 * Shared shape of the exchanges below; each request type fills in what
 * differs. Built field by field (not by spreading `rest` over defaults): one
 * is made per request, and a fixed object shape keeps the session's calls on
 * it fast.
 */
function exchange(command: string, upstream: Buffer | null, rest: Partial<Exchange<ReplyPart>> = {}): Exchange<ReplyPart> {
  return {
    command,
    upstream,
    writeKeys: rest.writeKeys ?? NO_KEYS,
    flush: rest.flush ?? null,
    localReply: rest.localReply ?? null,
    closeAfter: rest.closeAfter ?? false,
    streams: rest.streams ?? false,
    connection: rest.connection ?? 'shared',
    replyItems: rest.replyItems ?? 1,
    onPart: rest.onPart ?? forwardUntilEnd,
    effects: rest.effects ?? noEffects,
    outcome: rest.outcome ?? outcomeOk,
    errorReply: rest.errorReply ?? serverError,
  };
}

/** The first word of a status line: STORED, VA, CLIENT_ERROR, ... */
const statusOf = (line: string): string => line.split(' ', 1)[0];

/** Forwards or swallows a single-line reply and remembers its status for effects and metrics. */
function singleReply(
  command: string,
  upstream: Buffer,
  silent: boolean,
  writeKey: Buffer | null,
  effectOf: (status: string) => WriteEffect | null,
): Exchange<ReplyPart> {
  let status = '';
  return exchange(command, upstream, {
    writeKeys: writeKey ? [writeKey] : NO_KEYS,
    onPart(part) {
      status = statusOf(part.line);
      return silent ? SWALLOW_END : FORWARD_END;
    },
    effects() {
      const effect = effectOf(status);
      return effect ? [effect] : [];
    },
    outcome: () => outcomeLabel(status),
    errorReply: (message) => (silent ? null : serverError(message)),
  });
}

function outcomeLabel(status: string): string {
  if (/^\d+$/.test(status)) return 'ok';
  return status === '' ? 'none' : status.toLowerCase();
}

export function planText(request: TextRequest): Exchange<ReplyPart> {
  switch (request.type) {
    case 'storage': {
      const { command, key, value, flags, exptime, noreply } = request;
      const upstream = noreply ? lineWithout(request.tokens, request.tokens.length - 1, request.raw, value) : request.raw;
      return singleReply(command, upstream, noreply, key, (status) => {
        if (status !== 'STORED') return null;
        // Copied: the value is a view of a socket chunk, and the replay is kept until the read back is answered.
        if (command === 'append' || command === 'prepend') return { kind: 'readback', key, replay: { op: command, value: Buffer.from(value) } };
        return { kind: 'set', key, value, flags, exptime };
      });
    }
    case 'arithmetic': {
      const { key, noreply } = request;
      const upstream = noreply ? lineWithout(request.tokens, request.tokens.length - 1, request.raw, null) : request.raw;
      return singleReply(request.command, upstream, noreply, key, (status) => {
        if (!/^\d+$/.test(status)) return null;
        return { kind: 'readback', key, replay: { op: request.command, value: Buffer.from(String(request.delta), 'latin1') } };
      });
    }
    case 'touch': {
      const { key, exptime, noreply } = request;
      const upstream = noreply ? lineWithout(request.tokens, request.tokens.length - 1, request.raw, null) : request.raw;
      return singleReply('touch', upstream, noreply, key, (status) => (status === 'TOUCHED' ? { kind: 'touch', key, exptime } : null));
    }
    case 'delete': {
      const { key, noreply } = request;
      const upstream = noreply ? lineWithout(request.tokens, request.tokens.length - 1, request.raw, null) : request.raw;
      return singleReply('delete', upstream, noreply, key, (status) =>
        status === 'DELETED' ? { kind: 'delete', key } : status === 'NOT_FOUND' ? { kind: 'delete', key, missed: true } : null,
      );
    }
    case 'flush_all': {
      const { delay, noreply } = request;
      const upstream = noreply ? lineWithout(request.tokens, request.tokens.length - 1, request.raw, null) : request.raw;
      return { ...singleReply('flush_all', upstream, noreply, null, (status) => (status === 'OK' ? { kind: 'flush', delay } : null)), flush: { delay } };
    }
    case 'retrieval':
      return planRetrieval(request.command, request.raw, request.exptime, request.touches);
    case 'meta':
      return planMeta(request);
    case 'too_large': {
      // memcached refuses the item and, for a plain set, drops the old one so no stale value survives.
      const reply = request.noreply ? null : TOO_LARGE;
      if (!request.dropsOldItem) return exchange(request.command, null, { localReply: reply, outcome: () => 'too_large' });
      const drop = singleReply(request.command, metaDelete(request.key), true, request.key, (status) =>
        status === 'HD' ? { kind: 'delete', key: request.key } : null,
      );
      return { ...drop, localReply: reply, outcome: () => 'too_large' };
    }
    case 'refused':
      return exchange('refused', null, { localReply: Buffer.from(request.reply, 'latin1'), outcome: () => 'client_error' });
    case 'other':
      if (request.streams) return exchange('watch', request.raw, { streams: true, connection: 'pin' });
      if (request.mayBeSilent) return planSilentMaybe(request.raw);
      if (isDump(request.raw)) return planDump(request.raw, request.behindUnsentReplies);
      return exchange(commandLabel(request.raw), request.raw, { outcome: () => 'forwarded' });
    case 'quit':
      return exchange('quit', null, { closeAfter: true });
    case 'close':
      return exchange('close', null, { closeAfter: true, outcome: () => request.reason.replace(/ /g, '_') });
  }
}

/** get/gets/gat/gats: VALUE parts stream through; gat hits are touches. */
function planRetrieval(command: string, raw: Buffer, exptime: number | null, touches: readonly Buffer[]): Exchange<ReplyPart> {
  const touched: Buffer[] = [];
  let hits = 0;
  let status = '';
  return exchange(command, raw, {
    writeKeys: touches,
    replyItems: tokenCount(raw) - (exptime === null ? 1 : 2),
    onPart(part) {
      if (part.kind === 'value') {
        hits++;
        if (exptime !== null) touched.push(Buffer.from(part.line.split(' ')[1], 'latin1'));
        return FORWARD_MORE;
      }
      status = statusOf(part.line);
      return part.kind === 'end' ? FORWARD_END : FORWARD_MORE;
    },
    effects: () => (exptime === null ? [] : touched.map((key) => ({ kind: 'touch', key, exptime }) as WriteEffect)),
    outcome: () => (status !== 'END' ? outcomeLabel(status) : hits > 0 ? 'hit' : 'miss'),
  });
}

/**
 * A request memcached may or may not answer (a noreply/q it honours on a line
 * the proxy does not model): follow it with `mn`, so every part before `MN`
 * is this request's reply and the `MN` itself is swallowed. `effectOf` gets
 * the status of the reply, or null when memcached stayed silent.
 */
function planSilentMaybe(raw: Buffer, effectOf: (status: string | null) => WriteEffect | null = () => null): Exchange<ReplyPart> {
  let status: string | null = null;
  return exchange(commandLabel(raw), Buffer.concat([raw, SENTINEL]), {
    onPart(part) {
      if (part.line === SENTINEL_REPLY) return SWALLOW_END;
      status ??= statusOf(part.line);
      return FORWARD_MORE;
    },
    effects() {
      const effect = effectOf(status);
      return effect ? [effect] : [];
    },
    outcome: () => (status === null ? 'quiet' : outcomeLabel(status)),
  });
}

function planMeta(request: MetaRequest): Exchange<ReplyPart> {
  const { command, key, flags, quiet } = request;
  // A quiet ma that may create the item (N) answers only when it did, so the
  // reply cannot be predicted from the stripped request: ask memcached itself.
  if (quiet && command === 'ma' && flagValue(flags, 'N') !== undefined) {
    const plan = planSilentMaybe(request.raw, (status) => (status === null || status === 'HD' || status === 'VA' ? { kind: 'readback', key } : null));
    return { ...plan, writeKeys: [key] };
  }
  const upstream = quiet ? metaWithoutQuiet(request) : request.raw;
  const elided = QUIET_ELIDES[command];
  let status = '';
  return exchange(command, upstream, {
    // mg writes only with T (touch) or N (vivify).
    writeKeys: command !== 'mg' || flagValue(flags, 'T') !== undefined || flagValue(flags, 'N') !== undefined ? [key] : NO_KEYS,
    onPart(part) {
      status = statusOf(part.line);
      return { forward: !(quiet && elided.has(status)), final: true };
    },
    effects() {
      const effect = metaEffect(command, key, flags, request.value, status);
      return effect ? [effect] : [];
    },
    outcome: () => outcomeLabel(status),
  });
}

function flagValue(flags: string[], letter: string): string | undefined {
  return flags.find((f) => f[0] === letter)?.slice(1);
}

/**
 * A meta flag's number as memcached reads it (T with safe_strtol into int32, F
 * with safe_strtoul into uint32, wrapping alike); `fallback` when the flag is
 * absent, null when memcached would not have taken it (then the item is read back).
 */
function flagNumber(flags: string[], letter: 'T' | 'F', fallback: number | null): number | null {
  const token = flagValue(flags, letter);
  if (token === undefined) return fallback;
  return letter === 'T' ? parseInt32(token) : parseUint32(token);
}

function metaEffect(command: string, key: Buffer, flags: string[], value: Buffer | null, status: string): WriteEffect | null {
  const ttl = flagValue(flags, 'T');
  const exptime = flagNumber(flags, 'T', null);
  switch (command) {
    case 'mg':
      // N (vivify) may have created the item; T changed its expiry.
      if (status !== 'VA' && status !== 'HD' && status !== 'EN') return null;
      if (flagValue(flags, 'N') !== undefined) return { kind: 'readback', key };
      if (status === 'EN' || ttl === undefined) return null;
      return exptime === null ? { kind: 'readback', key } : { kind: 'touch', key, exptime };
    case 'ms': {
      if (status !== 'HD') return null;
      const mode = flagValue(flags, 'M') ?? 'S';
      const plain = ['S', 's', 'E', 'e', 'R', 'r'].includes(mode) && flagValue(flags, 'I') === undefined;
      const itemFlags = flagNumber(flags, 'F', 0);
      const storedExptime = flagNumber(flags, 'T', 0);
      const appends = ['A', 'a', 'P', 'p'].includes(mode) && flagValue(flags, 'I') === undefined && value !== null;
      if (appends) return { kind: 'readback', key, replay: { op: 'Aa'.includes(mode) ? 'append' : 'prepend', value: Buffer.from(value) } };
      if (!plain || value === null || itemFlags === null || storedExptime === null) return { kind: 'readback', key };
      return { kind: 'set', key, value, flags: itemFlags, exptime: storedExptime };
    }
    case 'md':
      if (status === 'NF') return { kind: 'delete', key, missed: true };
      if (status !== 'HD') return null;
      // An invalidation keeps the item, marked stale: the peer needs this node's value with the mark (not its own value marked).
      return flagValue(flags, 'I') !== undefined ? { kind: 'readback', key } : { kind: 'delete', key };
    case 'ma': {
      if (status !== 'HD' && status !== 'VA') return null;
      const delta = parseUint64(flagValue(flags, 'D') ?? '1');
      const mode = flagValue(flags, 'M') ?? 'I';
      if (delta === null || mode.length !== 1 || !'IiDd+-'.includes(mode)) return { kind: 'readback', key };
      return { kind: 'readback', key, replay: { op: 'Ii+'.includes(mode) ? 'incr' : 'decr', value: Buffer.from(String(delta), 'latin1') } };
    }
    default:
      return null;
  }
}

/** Space-separated tokens on a request line (a multi-get's key count, without allocating). */
function tokenCount(line: Buffer): number {
  let count = 0;
  let inToken = false;
  for (let i = 0; i < line.length; i++) {
    const byte = line[i];
    if (byte === 0x0d || byte === 0x0a) break;
    const space = byte === 0x20;
    if (!space && !inToken) count++;
    inToken = !space;
  }
  return count;
}

/**
 * `lru_crawler metadump|mgdump`. memcached answers "ERROR cannot pipeline
 * other commands before metadump" when it still holds unsent replies to
 * earlier requests of the connection, so it goes on a connection with nothing
 * else in flight. When the client's requests before it would have left
 * replies unsent on a connection of its own (`behind`, see
 * unsent-replies.ts), a `version` goes just before it, in the same write,
 * and its reply is swallowed: memcached then refuses, or not, by its own
 * rules (crawler enabled, dumping allowed, the command's form), and the
 * client sees what memcached would have answered it.
 */
function planDump(raw: Buffer, behind: boolean): Exchange<ReplyPart> {
  if (!behind) return exchange(commandLabel(raw), raw, { outcome: () => 'forwarded', connection: 'own' });
  let versionAnswered = false;
  return exchange(commandLabel(raw), Buffer.concat([VERSION, raw]), {
    connection: 'own',
    onPart(part) {
      if (versionAnswered) return forwardUntilEnd(part);
      versionAnswered = true;
      return SWALLOW_MORE;
    },
    outcome: () => 'forwarded',
  });
}

const VERSION = Buffer.from('version\r\n');

function isDump(raw: Buffer): boolean {
  const words = raw.toString('latin1', 0, Math.min(raw.length, 40)).split(/[ \r\n]+/);
  return words[0] === 'lru_crawler' && (words[1] === 'metadump' || words[1] === 'mgdump');
}

/** A bounded metric label for a forwarded line: its command word if it is a known one. */
function commandLabel(raw: Buffer): string {
  const word = raw.toString('latin1', 0, Math.min(raw.length, 32)).split(/[ \r\n]/, 1)[0];
  return LABELLED.has(word) ? word : 'other';
}

const LABELLED: ReadonlySet<string> = new Set([
  'stats',
  'version',
  'verbosity',
  'lru_crawler',
  'lru',
  'slabs',
  'cache_memlimit',
  'shutdown',
  'mn',
  'me',
  'set',
  'add',
  'replace',
  'append',
  'prepend',
  'cas',
  'incr',
  'decr',
  'touch',
  'delete',
  'flush_all',
  'get',
  'gets',
  'gat',
  'gats',
  'mg',
  'ms',
  'md',
  'ma',
]);
