/**
 * One write (history.ts's Op) on each of memcached's protocols: the bytes to
 * send, and what the reply says about its outcome. Quiet forms (noreply,
 * meta q, binary ...Q) are followed by `mn` / NoOp when the client waits, so
 * their silence is an answer too.
 */
import { Opcode, Status } from '../../src/protocol/binary/messages';
import { arithmeticExtras, encodeRequest, expiryExtras, storageExtras } from '../../src/protocol/binary/serializer';
import { metaKey, textSafeKey } from '../../src/protocol/text/serializer';
import type { Op, Outcome } from './history';
import { NoReply, ReplyLine, type Wire } from './wire';

export type Protocol = 'text' | 'meta' | 'binary';

/** How long a client waits for a reply before it counts the write as unknown. */
export const REPLY_TIMEOUT_MS = 2000;
/** binary incr/decr extras: do not create a missing item. */
const NO_CREATE = 0xffffffff;

/** A reply no rule expected (the caller counts it; the write's outcome is unknown). */
export class OddReply extends Error {}

/** Whether `protocol` can carry `op` on `key` (text keys have no space or control byte; text has no invalidate). */
export function carries(protocol: Protocol, op: Op, key: string): boolean {
  const bytes = Buffer.from(key, 'latin1');
  if (protocol === 'text') return textSafeKey(bytes) && op.kind !== 'invalidate' && !('create' in op && op.create);
  if (protocol === 'meta') return metaKey(bytes).token.length <= 250 && op.kind !== 'cas';
  return op.kind !== 'invalidate' && op.kind !== 'cas';
}

/** The form of the command sent, for reports and for picking among equivalents (touch/gat/gats, Touch/GAT/GATK). */
export interface Form {
  quiet: boolean;
  /** Which of the equivalent commands: 0, 1, 2. */
  variant: number;
}

/** Sends `op` on `key` and waits for its outcome. Throws NoReply (unknown outcome) or OddReply. */
export async function perform(wire: Wire, protocol: Protocol, key: string, op: Op, form: Form): Promise<Outcome> {
  switch (protocol) {
    case 'text':
      return text(wire, key, op, form);
    case 'meta': {
      const request = metaRequest(key, op, form.quiet);
      return decodeMeta(op, request, form.quiet, await wire.meta(request, REPLY_TIMEOUT_MS));
    }
    case 'binary':
      return decodeBinary(op, form, await wire.binary([binaryRequest(key, op, form)], REPLY_TIMEOUT_MS));
  }
}

/** A short name of the command as sent: "text append", "meta ms MA q", "binary AppendQ". */
export function via(protocol: Protocol, op: Op, form: Form): string {
  if (protocol === 'text') {
    if (op.kind === 'touch') return `text ${['touch', 'gat', 'gats'][form.variant % 3]}`;
    return `text ${op.kind}${form.quiet ? ' noreply' : ''}`;
  }
  if (protocol === 'meta') return `meta ${metaVerb(op)}${form.quiet ? ' q' : ''}`;
  return `binary ${binaryName(op, form)}`;
}

/** The bytes of a fire-and-forget form of `op` (noreply, q, quiet opcode), for pipelines nobody waits on. */
export function quietBytes(protocol: Protocol, key: string, op: Op): Buffer {
  if (protocol === 'text') return textRequest(key, op, { quiet: true, variant: 0 }, '0');
  if (protocol === 'meta') return metaRequest(key, op, true);
  return binaryRequest(key, op, { quiet: true, variant: 0 });
}

// ------------------------------------------------------------------ text

function textRequest(key: string, op: Op, form: Form, casUnique: string): Buffer {
  const noreply = form.quiet ? ' noreply' : '';
  switch (op.kind) {
    case 'set':
    case 'add':
    case 'replace':
    case 'cas': {
      const cas = op.kind === 'cas' ? ` ${casUnique}` : '';
      return Buffer.from(`${op.kind} ${key} ${op.flags} ${op.ttl} ${Buffer.byteLength(op.value, 'latin1')}${cas}${noreply}\r\n${op.value}\r\n`, 'latin1');
    }
    case 'append':
    case 'prepend':
      return Buffer.from(`${op.kind} ${key} 0 0 ${op.piece.length}${noreply}\r\n${op.piece}\r\n`, 'latin1');
    case 'incr':
    case 'decr':
      return Buffer.from(`${op.kind} ${key} ${op.delta}${noreply}\r\n`, 'latin1');
    case 'delete':
      return Buffer.from(`delete ${key}${noreply}\r\n`, 'latin1');
    case 'touch':
      return Buffer.from(`touch ${key} ${op.ttl}${noreply}\r\n`, 'latin1');
    case 'invalidate':
      throw new Error('text has no invalidate');
  }
}

async function text(wire: Wire, key: string, op: Op, form: Form): Promise<Outcome> {
  if (op.kind === 'touch' && form.variant % 3 !== 0) {
    const values = await wire.values(`${form.variant % 3 === 1 ? 'gat' : 'gats'} ${op.ttl} ${key}\r\n`, REPLY_TIMEOUT_MS).catch(rethrowLine);
    if (values.length === 0) return { effect: 'none', because: 'absent' };
    if (values.length !== 1 || values[0].key !== key) throw new OddReply(`gat ${key} answered for ${values.map((v) => v.key).join(',')}`);
    return { effect: 'applied' };
  }
  let unique = '0';
  if (op.kind === 'cas') {
    const values = await wire.values(`gets ${key}\r\n`, REPLY_TIMEOUT_MS).catch(rethrowLine);
    // Missing: a made-up unique, which memcached answers NOT_FOUND.
    unique = values[0]?.cas ?? '1';
  }
  const line = await wire.line(textRequest(key, op, form, unique), REPLY_TIMEOUT_MS);
  return decodeTextLine(op, line);
}

function rethrowLine(error: unknown): never {
  if (error instanceof ReplyLine) throw error.line.startsWith('SERVER_ERROR') ? new NoReply(error.line, Buffer.alloc(0)) : new OddReply(error.line);
  throw error;
}

function decodeTextLine(op: Op, line: string): Outcome {
  if (line === 'STORED' || line === 'DELETED' || line === 'TOUCHED') return { effect: 'applied' };
  if (line === 'NOT_STORED') return { effect: 'none', because: op.kind === 'add' ? 'present' : 'absent' };
  if (line === 'EXISTS') return { effect: 'none', because: 'present' };
  if (line === 'NOT_FOUND') return { effect: 'none', because: 'absent' };
  if ((op.kind === 'incr' || op.kind === 'decr') && /^\d+$/.test(line)) return { effect: 'applied', result: BigInt(line) };
  if (line.startsWith('CLIENT_ERROR cannot increment or decrement non-numeric value')) return { effect: 'none', because: 'non-numeric' };
  if (line.startsWith('SERVER_ERROR')) throw new NoReply(line, Buffer.alloc(0));
  throw new OddReply(`${op.kind}: ${line}`);
}

// ------------------------------------------------------------------ meta

function metaVerb(op: Op): string {
  switch (op.kind) {
    case 'set':
    case 'add':
    case 'replace':
    case 'append':
    case 'prepend':
      return `ms M${MS_MODE[op.kind]}`;
    case 'incr':
    case 'decr':
      return `ma M${op.kind === 'incr' ? 'I' : 'D'}${op.create ? ' N J' : ''}`;
    case 'delete':
      return 'md';
    case 'invalidate':
      return `md I${op.ttl === null ? '' : ' T'}`;
    case 'touch':
      return 'mg T';
    case 'cas':
      return 'ms C';
  }
}

const MS_MODE = { set: 'S', add: 'E', replace: 'R', append: 'A', prepend: 'P' } as const;

function metaRequest(key: string, op: Op, quiet: boolean): Buffer {
  const { token, flag } = metaKey(Buffer.from(key, 'latin1'));
  const q = quiet ? ' q' : '';
  switch (op.kind) {
    case 'set':
    case 'add':
    case 'replace':
      return Buffer.from(`ms ${token} ${op.value.length}${flag} T${op.ttl} F${op.flags} M${MS_MODE[op.kind]}${q}\r\n${op.value}\r\n`, 'latin1');
    case 'append':
    case 'prepend':
      return Buffer.from(`ms ${token} ${op.piece.length}${flag} M${MS_MODE[op.kind]}${q}\r\n${op.piece}\r\n`, 'latin1');
    case 'incr':
    case 'decr': {
      const create = op.create ? ` N${op.create.ttl} J${op.create.initial}` : '';
      // v returns the new value; quiet asks for nothing (q would hide only the success anyway).
      return Buffer.from(`ma ${token}${flag} M${op.kind === 'incr' ? 'I' : 'D'} D${op.delta}${create}${quiet ? ' q' : ' v'}\r\n`, 'latin1');
    }
    case 'delete':
      return Buffer.from(`md ${token}${flag}${q}\r\n`, 'latin1');
    case 'invalidate':
      return Buffer.from(`md ${token}${flag} I${op.ttl === null ? '' : ` T${op.ttl}`}${q}\r\n`, 'latin1');
    case 'touch':
      return Buffer.from(`mg ${token}${flag} T${op.ttl}${q}\r\n`, 'latin1');
    case 'cas':
      throw new Error('the suite sends cas on text only');
  }
}

function decodeMeta(op: Op, request: Buffer, quiet: boolean, replies: Array<{ line: string; value?: string }>): Outcome {
  if (replies.length > 1)
    throw new OddReply(`${request.toString('latin1').split('\r\n')[0]}: ${replies.length} replies ${JSON.stringify(replies.map((r) => r.line))}`);
  const line = replies[0]?.line;
  if (line === undefined) {
    // Quiet: ms/md/ma are silent on success; mg (touch) is silent on a miss.
    if (!quiet) throw new OddReply(`${request.toString('latin1').split('\r\n')[0]}: no reply before MN`);
    return op.kind === 'touch' ? { effect: 'none', because: 'absent' } : { effect: 'applied' };
  }
  if (line === 'HD' || line.startsWith('HD ')) return { effect: 'applied' };
  if (line.startsWith('VA ')) {
    if (op.kind === 'incr' || op.kind === 'decr') return { effect: 'applied', result: BigInt(replies[0].value!.trimEnd()) };
    return { effect: 'applied' };
  }
  if (line === 'NS' || line.startsWith('NS ')) return { effect: 'none', because: op.kind === 'add' ? 'present' : 'absent' };
  if (line === 'NF' || line.startsWith('NF ') || line === 'EN' || line.startsWith('EN ')) return { effect: 'none', because: 'absent' };
  if (line.startsWith('CLIENT_ERROR cannot increment or decrement non-numeric value')) return { effect: 'none', because: 'non-numeric' };
  if (line.startsWith('SERVER_ERROR')) throw new NoReply(line, Buffer.alloc(0));
  throw new OddReply(`${request.toString('latin1').split('\r\n')[0].slice(0, 60)}: ${line}`);
}

// ------------------------------------------------------------------ binary

const LOUD: Record<Exclude<Op['kind'], 'invalidate' | 'cas'>, number> = {
  set: Opcode.Set,
  add: Opcode.Add,
  replace: Opcode.Replace,
  append: Opcode.Append,
  prepend: Opcode.Prepend,
  incr: Opcode.Increment,
  decr: Opcode.Decrement,
  delete: Opcode.Delete,
  touch: Opcode.Touch,
};
const QUIET: Record<number, number> = {
  [Opcode.Set]: Opcode.SetQ,
  [Opcode.Add]: Opcode.AddQ,
  [Opcode.Replace]: Opcode.ReplaceQ,
  [Opcode.Append]: Opcode.AppendQ,
  [Opcode.Prepend]: Opcode.PrependQ,
  [Opcode.Increment]: Opcode.IncrementQ,
  [Opcode.Decrement]: Opcode.DecrementQ,
  [Opcode.Delete]: Opcode.DeleteQ,
  [Opcode.GAT]: Opcode.GATQ,
  [Opcode.GATK]: Opcode.GATKQ,
};

function binaryOpcode(op: Op, form: Form): number {
  if (op.kind === 'invalidate' || op.kind === 'cas') throw new Error(`binary has no ${op.kind}`);
  // touch: Touch, GAT or GATK (Touch has no quiet twin).
  const loud = op.kind === 'touch' ? [Opcode.Touch, Opcode.GAT, Opcode.GATK][form.variant % 3] : LOUD[op.kind];
  return form.quiet ? (QUIET[loud] ?? loud) : loud;
}

function binaryName(op: Op, form: Form): string {
  const code = binaryOpcode(op, form);
  return Object.entries(Opcode).find(([, c]) => c === code)?.[0] ?? `0x${code.toString(16)}`;
}

function binaryRequest(key: string, op: Op, form: Form): Buffer {
  const opcode = binaryOpcode(op, form);
  const k = Buffer.from(key, 'latin1');
  switch (op.kind) {
    case 'set':
    case 'add':
    case 'replace':
      return encodeRequest({ opcode, key: k, extras: storageExtras(op.flags, op.ttl), value: Buffer.from(op.value, 'latin1') });
    case 'append':
    case 'prepend':
      return encodeRequest({ opcode, key: k, value: Buffer.from(op.piece, 'latin1') });
    case 'incr':
    case 'decr':
      return encodeRequest({ opcode, key: k, extras: arithmeticExtras(op.delta, op.create?.initial ?? 0n, op.create ? op.create.ttl : NO_CREATE) });
    case 'delete':
      return encodeRequest({ opcode, key: k });
    case 'touch':
      return encodeRequest({ opcode, key: k, extras: expiryExtras(op.ttl) });
    default:
      throw new Error(`binary has no ${op.kind}`);
  }
}

function decodeBinary(op: Op, form: Form, responses: Array<{ opcode: number; status: number; value: Buffer }>): Outcome {
  const isGat = op.kind === 'touch' && form.variant % 3 !== 0;
  if (responses.length > 1) throw new OddReply(`binary ${op.kind}: ${responses.length} responses`);
  const response = responses[0];
  if (!response) {
    if (!form.quiet || QUIET[binaryOpcode(op, { ...form, quiet: false })] === undefined) throw new OddReply(`binary ${op.kind}: no response before NoOp`);
    // Quiet writes answer only failures; GATQ/GATKQ only hits.
    return isGat ? { effect: 'none', because: 'absent' } : { effect: 'applied' };
  }
  switch (response.status) {
    case Status.Success:
      if ((op.kind === 'incr' || op.kind === 'decr') && response.value.length === 8) return { effect: 'applied', result: response.value.readBigUInt64BE(0) };
      return { effect: 'applied' };
    case Status.KeyExists:
      return { effect: 'none', because: 'present' };
    case Status.KeyNotFound:
    case Status.NotStored:
      return { effect: 'none', because: op.kind === 'add' ? 'present' : 'absent' };
    case Status.NonNumeric:
      return { effect: 'none', because: 'non-numeric' };
    case Status.OutOfMemory:
      throw new NoReply(`binary ${op.kind}: out of memory`, Buffer.alloc(0));
    default:
      throw new OddReply(`binary ${op.kind}: status 0x${response.status.toString(16)} ${response.value.toString('latin1').slice(0, 60)}`);
  }
}

/** What a client sends to flush, in each form the suite uses (all acknowledged: quiet ones are followed by mn / NoOp). */
export async function flush(wire: Wire, protocol: 'text' | 'binary', delay: number, quiet: boolean): Promise<void> {
  if (protocol === 'text') {
    const line = `flush_all${delay > 0 || quiet ? ` ${delay}` : ''}${quiet ? ' noreply' : ''}\r\n`;
    if (quiet) {
      if ((await wire.meta(line, REPLY_TIMEOUT_MS)).length !== 0) throw new OddReply('flush_all noreply answered');
      return;
    }
    const reply = await wire.line(line, REPLY_TIMEOUT_MS);
    if (reply !== 'OK') throw reply.startsWith('SERVER_ERROR') ? new NoReply(reply, Buffer.alloc(0)) : new OddReply(`flush_all: ${reply}`);
    return;
  }
  const opcode = quiet ? Opcode.FlushQ : Opcode.Flush;
  const responses = await wire.binary([encodeRequest({ opcode, extras: delay > 0 ? expiryExtras(delay) : undefined })], REPLY_TIMEOUT_MS);
  if (responses.length !== (quiet ? 0 : 1) || responses.some((r) => r.status !== Status.Success)) {
    throw new OddReply(`binary flush: ${JSON.stringify(responses.map((r) => r.status))}`);
  }
}
