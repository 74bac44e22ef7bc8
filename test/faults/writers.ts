/**
 * The single-writer workloads: each writer owns its keys (so their final
 * state follows from its log, see model.ts) and writes them through one
 * client connection, one request at a time, on one node.
 *
 *   set     the original workload: set and delete over text, 10% with a 3 s TTL
 *   store   set/add/replace/cas/delete over text, TTLs and flags
 *   append  append/prepend on strings, incr/decr on counters, over text
 *   touch   touch/gat/gats changing TTLs (short, long, none) over text
 *   meta    ms (modes S E R A P), md (with I and T), ma (with N/J), mg T; q and b flags
 *   binary  every write opcode and its quiet twin, binary-unsafe keys
 *
 * Keys go up to 250 bytes; meta and binary writers also own keys with
 * spaces, CR, LF and NUL (up to 186 bytes: what memrepl can replicate, see
 * README "Status and limits"). Values are pieces ending with ';' that name
 * their writer, so any value can be split back into pieces someone sent.
 *
 * A key whose write got no reply is left alone for LATE_MS: the write may
 * still take effect that late, and must not be reordered with the next.
 */
import { sleep } from '../support/ports';
import { History, type NodeName, type Op, showKey } from './history';
import { LATE_MS } from './model';
import { carries, type Form, OddReply, perform, type Protocol, via } from './protocols';
import { between, pick, random, streamSeed } from './random';
import { Wire } from './wire';

export interface WorkloadContext {
  history: History;
  seed: number;
  /** The client port of a node's memrepl now. */
  port(node: NodeName): number;
  running(): boolean;
}

/** A writer's keys, and which of them must be left alone for now. */
export class KeyPool {
  private readonly resting = new Map<string, number>();

  constructor(readonly keys: readonly string[]) {}

  /** A key that is not resting, or null after a few tries. */
  pick(draw: () => number): string | null {
    for (let i = 0; i < 8; i++) {
      const key = pick(draw, this.keys);
      if (!this.isResting(key)) return key;
    }
    return null;
  }

  isResting(key: string): boolean {
    return (this.resting.get(key) ?? 0) > Date.now();
  }

  rest(key: string, ms = LATE_MS): void {
    this.resting.set(key, Date.now() + ms);
  }
}

export type KeyShape = 'short' | 'long' | 'binary';

/** A key of `shape`: `<category>.<writer>.<s|c><n>`, padded to up to 250 bytes, or with binary-unsafe bytes. */
export function makeKey(category: string, writer: string, n: number, shape: KeyShape, counter: boolean, draw: () => number): string {
  const base = `${category}.${writer}.${counter ? 'c' : 's'}${n}`;
  if (shape === 'short') return base;
  if (shape === 'long') return `${base}.`.padEnd(between(draw, 100, 250), 'k');
  // Spaces, CR, LF and NUL: only meta (b flag) and binary can carry these.
  const tail = ` \r\n\0${String.fromCharCode(between(draw, 1, 31))} bin`;
  return `${base}${tail}`.padEnd(between(draw, 20, 186), '\0');
}

/** A writer's keys: mostly short, some 100-250 bytes, some binary-unsafe if the writer's protocols carry them. */
export function keysFor(
  category: string,
  writer: string,
  count: number,
  options: { binary: boolean; counters: number },
  draw: () => number,
): Array<{ key: string; counter: boolean }> {
  const out: Array<{ key: string; counter: boolean }> = [];
  for (let n = 0; n < count; n++) {
    const roll = draw();
    const shape: KeyShape = roll < 0.7 ? 'short' : roll < 0.85 || !options.binary ? 'long' : 'binary';
    const counter = draw() < options.counters;
    out.push({ key: makeKey(category, writer, n, shape, counter, draw), counter });
  }
  return out;
}

/** A value piece naming its writer; some are a few KB. */
export function makePiece(writer: string, n: number, draw: () => number): string {
  const pad = draw() < 0.1 ? `-${'x'.repeat(between(draw, 100, 4000))}` : '';
  return `${writer}.${n}${pad};`;
}

/** 0 (never) mostly, else a short TTL that expires during the run or a long one that does not. */
export function drawTtl(draw: () => number, shortShare = 0.1, longShare = 0.1): number {
  const roll = draw();
  if (roll < shortShare) return between(draw, 2, 4);
  if (roll < shortShare + longShare) return between(draw, 1000, 3000);
  return 0;
}

/** A counter key's next op (meta and binary alike); draws in the same order for both. */
function counterOp(draw: () => number, roll: number, ttl: number): Op {
  const create = draw() < 0.3 ? { initial: BigInt(between(draw, 0, 500)), ttl: drawTtl(draw, 0, 0.3) } : undefined;
  const delta = BigInt(between(draw, 1, 100));
  return roll < 0.15
    ? { kind: 'set', value: String(between(draw, 0, 1000)), flags: 0, ttl }
    : roll < 0.55
      ? { kind: 'incr', delta, create }
      : roll < 0.85
        ? { kind: 'decr', delta, create }
        : { kind: 'delete' };
}

export interface Plan {
  op: Op;
  protocol: Protocol;
  form: Form;
}

/** What a writer does next to `key` (counter: it holds a number). */
export type Planner = (draw: () => number, key: string, counter: boolean, piece: () => string) => Plan;

const LOUD: Form = { quiet: false, variant: 0 };

export const PLANNERS: Record<'store' | 'append' | 'touch' | 'meta' | 'binary', Planner> = {
  store(draw, _key, _counter, piece) {
    const roll = draw();
    const [ttl, flags] = [drawTtl(draw), draw() < 0.2 ? between(draw, 0, 0xffffffff) : 0];
    const kind = roll < 0.3 ? 'set' : roll < 0.45 ? 'add' : roll < 0.6 ? 'replace' : roll < 0.75 ? 'cas' : null;
    const op: Op = kind ? { kind, value: piece(), flags, ttl } : { kind: 'delete' };
    return { op, protocol: 'text', form: LOUD };
  },
  append(draw, _key, counter, piece) {
    const roll = draw();
    if (counter) {
      const delta = BigInt(between(draw, 1, 100));
      const op: Op =
        roll < 0.15
          ? { kind: 'set', value: String(between(draw, 0, 1000)), flags: 0, ttl: 0 }
          : roll < 0.55
            ? { kind: 'incr', delta }
            : roll < 0.85
              ? { kind: 'decr', delta }
              : roll < 0.93
                ? { kind: 'delete' }
                : { kind: 'touch', ttl: drawTtl(draw, 0, 0.5) };
      return { op, protocol: 'text', form: LOUD };
    }
    const op: Op =
      roll < 0.2
        ? { kind: 'set', value: piece(), flags: 3, ttl: drawTtl(draw, 0.05) }
        : roll < 0.6
          ? { kind: 'append', piece: piece() }
          : roll < 0.85
            ? { kind: 'prepend', piece: piece() }
            : { kind: 'delete' };
    return { op, protocol: 'text', form: LOUD };
  },
  touch(draw, _key, _counter, piece) {
    const roll = draw();
    const ttl = drawTtl(draw, 0.35, 0.35);
    const op: Op = roll < 0.3 ? { kind: 'set', value: piece(), flags: 1, ttl } : roll < 0.85 ? { kind: 'touch', ttl } : { kind: 'delete' };
    return { op, protocol: 'text', form: { quiet: false, variant: between(draw, 0, 2) } };
  },
  meta(draw, _key, counter, piece) {
    const roll = draw();
    const form: Form = { quiet: draw() < 0.3, variant: 0 };
    const ttl = drawTtl(draw);
    if (counter) return { op: counterOp(draw, roll, ttl), protocol: 'meta', form };
    const storage = (['set', 'add', 'replace'] as const)[between(draw, 0, 2)];
    const op: Op =
      roll < 0.3
        ? { kind: storage, value: piece(), flags: between(draw, 0, 9), ttl }
        : roll < 0.5
          ? { kind: draw() < 0.5 ? 'append' : 'prepend', piece: piece() }
          : roll < 0.65
            ? { kind: 'delete' }
            : roll < 0.8
              ? { kind: 'invalidate', ttl: draw() < 0.5 ? null : drawTtl(draw, 0.3, 0.4) }
              : { kind: 'touch', ttl: drawTtl(draw, 0.3, 0.4) };
    return { op, protocol: 'meta', form };
  },
  binary(draw, _key, counter, piece) {
    const roll = draw();
    const form: Form = { quiet: draw() < 0.4, variant: between(draw, 0, 2) };
    const ttl = drawTtl(draw);
    if (counter) return { op: counterOp(draw, roll, ttl), protocol: 'binary', form };
    const storage = (['set', 'add', 'replace'] as const)[between(draw, 0, 2)];
    const op: Op =
      roll < 0.3
        ? { kind: storage, value: piece(), flags: between(draw, 0, 0xffffffff), ttl }
        : roll < 0.55
          ? { kind: draw() < 0.5 ? 'append' : 'prepend', piece: piece() }
          : roll < 0.7
            ? { kind: 'delete' }
            : { kind: 'touch', ttl: drawTtl(draw, 0.3, 0.4) };
    return { op, protocol: 'binary', form };
  },
};

export interface WriterSpec {
  category: string;
  /** Unique label, also the prefix of its pieces: "append/a0". */
  name: string;
  node: NodeName;
  keys: Array<{ key: string; counter: boolean }>;
  planner: Planner;
}

/** Registers the writer's keys as owned, then writes until the run stops. */
export async function singleWriter(ctx: WorkloadContext, spec: WriterSpec): Promise<void> {
  const { history } = ctx;
  for (const { key, counter } of spec.keys) history.own(key, { category: spec.category, writer: spec.name, node: spec.node, counter });
  const counters = new Map(spec.keys.map((k) => [k.key, k.counter]));
  const pool = new KeyPool(spec.keys.map((k) => k.key));
  const draw = random(streamSeed(ctx.seed, spec.name));
  let n = 0;
  const piece = () => makePiece(spec.name, n++, draw);
  let wire: Wire | null = null;
  while (ctx.running()) {
    const key = pool.pick(draw);
    if (key === null) {
      await sleep(20);
      continue;
    }
    const plan = spec.planner(draw, key, counters.get(key)!, piece);
    if (!carries(plan.protocol, plan.op, key)) continue;
    try {
      wire ??= await Wire.open(ctx.port(spec.node));
    } catch {
      await sleep(50);
      continue;
    }
    const attempt = history.begin(key, plan.op, via(plan.protocol, plan.op, plan.form), spec.node, spec.name);
    try {
      history.settle(attempt, await perform(wire, plan.protocol, key, plan.op, plan.form));
    } catch (error) {
      if (error instanceof OddReply) history.odd(spec.category, `${spec.name} ${attempt.via} ${showKey(key)}: ${error.message}`);
      pool.rest(key);
      wire.close();
      wire = null;
      await sleep(50);
    }
  }
  wire?.close();
}

/**
 * The original workload (`--workload set`), unchanged but for resting a key
 * after an unanswered write: four writers, two per node, sets and deletes of
 * their own 200 keys, 10% of sets with a 3 s TTL.
 */
export async function classicWriter(ctx: WorkloadContext, id: number): Promise<void> {
  const node: NodeName = id % 2 === 0 ? 'a' : 'b';
  const name = `w${id}`;
  const keys = Array.from({ length: CLASSIC_KEYS }, (_, i) => `w${id}:${i}`);
  for (const key of keys) ctx.history.own(key, { category: 'set', writer: name, node, counter: false });
  const pool = new KeyPool(keys);
  const draw = random(ctx.seed * 31 + id + 1);
  let wire: Wire | null = null;
  let n = 0;
  while (ctx.running()) {
    try {
      wire ??= await Wire.open(ctx.port(node));
    } catch {
      await sleep(50);
      continue;
    }
    const key = `w${id}:${Math.floor(draw() * CLASSIC_KEYS)}`;
    const roll = draw();
    const del = roll < 0.15;
    const ttl = roll > 0.9 ? CLASSIC_TTL_SECONDS : 0;
    const value = `${id}.${n++}`;
    if (pool.isResting(key)) continue;
    const op: Op = del ? { kind: 'delete' } : { kind: 'set', value, flags: 0, ttl };
    const attempt = ctx.history.begin(key, op, `text ${op.kind}`, node, name);
    try {
      const reply = await wire.line(del ? `delete ${key}\r\n` : `set ${key} 0 ${ttl} ${value.length}\r\n${value}\r\n`, 2000);
      if (reply === 'STORED' || reply === 'DELETED') ctx.history.settle(attempt, { effect: 'applied' });
      // As the original checker did: the key is gone, whatever it held before (the newer workloads read more into replies).
      else if (reply === 'NOT_FOUND' && del) ctx.history.settle(attempt, { effect: 'done' });
      else throw new Error(`unexpected reply ${reply.slice(0, 40)}`);
    } catch {
      pool.rest(key);
      wire.close();
      wire = null;
      await sleep(50);
    }
  }
  wire?.close();
}

export const CLASSIC_KEYS = 200;
export const CLASSIC_TTL_SECONDS = 3;
