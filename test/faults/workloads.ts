/**
 * The workload parts that are not a plain single writer (writers.ts):
 *
 *   flush          flush_all, with and without delay, text and binary, rarely (one at a time)
 *   noreply-close  pipelines of 17-40 noreply / q / quiet writes, then the connection closed at once
 *   disconnect     requests cut mid-way (never to take effect), and whole ones closed before the reply
 *   shared         four writers, two per node, on the same keys through every protocol
 *
 * Readers are in readers.ts.
 */
import * as net from 'node:net';
import { Opcode } from '../../src/protocol/binary/messages';
import { encodeRequest, storageExtras } from '../../src/protocol/binary/serializer';
import { sleep } from '../support/ports';
import type { Flush, NodeName, Op } from './history';
import { DELAYED_FLUSH_SLACK_MS, LATE_MS } from './model';
import { carries, flush, OddReply, perform, type Protocol, quietBytes, via } from './protocols';
import { between, pick, random, streamSeed } from './random';
import { Wire } from './wire';
import { KeyPool, keysFor, makePiece, PLANNERS, type Plan, type WorkloadContext } from './writers';

const NODES: NodeName[] = ['a', 'b'];

/** Sleeps up to `ms`, waking early when the run stops. */
async function pause(ctx: WorkloadContext, ms: number): Promise<void> {
  const until = Date.now() + ms;
  while (ctx.running() && Date.now() < until) await sleep(Math.min(100, until - Date.now()));
}

/**
 * One flush every 6-14 s on a random node: text `flush_all [N] [noreply]`
 * or binary Flush/FlushQ, 40% with a 2-5 s delay. The next waits until this
 * one's moment is surely past (the model follows one pending flush at a time).
 */
export async function flushWriter(ctx: WorkloadContext): Promise<void> {
  const draw = random(streamSeed(ctx.seed, 'flush'));
  while (ctx.running()) {
    await pause(ctx, between(draw, 6000, 14_000));
    if (!ctx.running()) return;
    const node = pick(draw, NODES);
    const protocol = draw() < 0.6 ? 'text' : 'binary';
    const delay = draw() < 0.4 ? between(draw, 2, 5) : 0;
    const quiet = draw() < 0.25;
    const record: Flush = {
      node,
      writer: 'flush',
      via: `${protocol} flush${delay ? ` ${delay}` : ''}${quiet ? ' quiet' : ''}`,
      delay,
      sentAt: Date.now(),
      at: 0,
      acked: false,
    };
    record.at = record.sentAt;
    ctx.history.flushes.push(record);
    let wire: Wire | null = null;
    try {
      wire = await Wire.open(ctx.port(node));
      record.sentAt = Date.now();
      await flush(wire, protocol, delay, quiet);
      record.acked = true;
      record.at = Date.now();
    } catch (error) {
      if (error instanceof OddReply) ctx.history.odd('flush', error.message);
    } finally {
      wire?.close();
    }
    // Not `pause`: even when the run stops, the checker must not read before this flush's moment is past.
    await sleep((record.acked ? record.at : record.sentAt + LATE_MS) + delay * 1000 + DELAYED_FLUSH_SLACK_MS + 1000 - Date.now());
  }
}

/**
 * Pipelines of more than 16 fire-and-forget writes (the proxy moves such a
 * client to a connection of its own) written in one go, then the connection
 * closed without reading: at once, after a FIN, or a few ms later. Every
 * write's outcome is unknown; between pipelines a few acknowledged writes
 * pin the keys down again.
 */
export async function noreplyCloseWriter(ctx: WorkloadContext, node: NodeName): Promise<void> {
  const name = `noreply-close/${node}`;
  const draw = random(streamSeed(ctx.seed, name));
  const keys = keysFor('noreply-close', node, 60, { binary: true, counters: 0.2 }, draw);
  for (const { key, counter } of keys) ctx.history.own(key, { category: 'noreply-close', writer: name, node, counter });
  const counters = new Map(keys.map((k) => [k.key, k.counter]));
  const pool = new KeyPool(keys.map((k) => k.key));
  let n = 0;
  const piece = () => makePiece(name, n++, draw);
  const plan = (protocol: Protocol, key: string): Plan => {
    const planned = PLANNERS[protocol === 'text' ? 'append' : protocol](draw, key, counters.get(key)!, piece);
    return { ...planned, protocol };
  };
  while (ctx.running()) {
    const protocol = pick(draw, ['text', 'meta', 'binary'] as const);
    const count = between(draw, 17, 40);
    const parts: Buffer[] = [];
    for (let i = 0; i < count * 3 && parts.length < count; i++) {
      const key = pool.pick(draw);
      if (key === null) break;
      const { op } = plan(protocol, key);
      if (!carries(protocol, op, key) || op.kind === 'cas') continue;
      parts.push(quietBytes(protocol, key, op));
      ctx.history.begin(key, op, `${via(protocol, op, { quiet: true, variant: 0 })} (pipeline of ${count}, closed)`, node, name);
      pool.rest(key);
    }
    if (parts.length > 16) await sendAndClose(ctx.port(node), Buffer.concat(parts), between(draw, 0, 2), draw);
    // A few acknowledged writes, so the keys do not stay unknown for the rest of the run.
    let wire: Wire | null = null;
    try {
      wire = await Wire.open(ctx.port(node));
      for (let i = 0; i < 6 && ctx.running(); i++) {
        const key = pool.pick(draw);
        if (key === null) break;
        const p = plan('text', key);
        if (!carries('text', p.op, key)) continue;
        const attempt = ctx.history.begin(key, p.op, via('text', p.op, p.form), node, name);
        try {
          ctx.history.settle(attempt, await perform(wire, 'text', key, p.op, p.form));
        } catch (error) {
          if (error instanceof OddReply) ctx.history.odd('noreply-close', error.message);
          pool.rest(key);
          throw error;
        }
      }
    } catch {
      await sleep(50);
    } finally {
      wire?.close();
    }
    await pause(ctx, between(draw, 50, 300));
  }
}

/** Writes `bytes` on a new connection and closes it without reading: 0 destroy at once, 1 end (FIN), 2 destroy a few ms later. */
async function sendAndClose(port: number, bytes: Buffer, how: number, draw: () => number): Promise<void> {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => {});
  await new Promise<void>((resolve) => {
    socket.once('connect', resolve);
    socket.once('error', () => resolve());
    setTimeout(resolve, 1000);
  });
  if (socket.destroyed) return;
  socket.write(bytes);
  if (how === 1) socket.end();
  else if (how === 2) await sleep(between(draw, 1, 20));
  if (how !== 1) socket.destroy();
  else setTimeout(() => socket.destroy(), 1000).unref();
}

/**
 * Clients that vanish mid-request. A request cut before its end (a set
 * without all its data, a binary packet without its body, a command line
 * without its newline) must never take effect: its value is recorded as a
 * cut piece, and the model does not know the request at all. A whole request
 * closed before its reply is an attempt of unknown outcome.
 */
export async function disconnectWriter(ctx: WorkloadContext, node: NodeName): Promise<void> {
  const name = `disconnect/${node}`;
  const draw = random(streamSeed(ctx.seed, name));
  const keys = keysFor('disconnect', node, 40, { binary: false, counters: 0 }, draw);
  for (const { key, counter } of keys) ctx.history.own(key, { category: 'disconnect', writer: name, node, counter });
  const pool = new KeyPool(keys.map((k) => k.key));
  let n = 0;
  const piece = () => makePiece(name, n++, draw);
  let wire: Wire | null = null;
  while (ctx.running()) {
    const key = pool.pick(draw);
    if (key === null) {
      await sleep(20);
      continue;
    }
    // First give the key something to lose.
    const op: Op = draw() < 0.5 ? { kind: 'set', value: piece(), flags: 5, ttl: 0 } : { kind: 'append', piece: piece() };
    try {
      wire ??= await Wire.open(ctx.port(node));
      const attempt = ctx.history.begin(key, op, via('text', op, { quiet: false, variant: 0 }), node, name);
      try {
        ctx.history.settle(attempt, await perform(wire, 'text', key, op, { quiet: false, variant: 0 }));
      } catch (error) {
        pool.rest(key);
        throw error;
      }
    } catch (error) {
      if (error instanceof OddReply) ctx.history.odd('disconnect', error.message);
      wire?.close();
      wire = null;
      await sleep(50);
      continue;
    }
    await cutRequest(ctx, node, name, key, draw, piece);
    pool.rest(key);
    await pause(ctx, between(draw, 20, 150));
  }
  wire?.close();
}

async function cutRequest(ctx: WorkloadContext, node: NodeName, name: string, key: string, draw: () => number, piece: () => string): Promise<void> {
  const value = piece();
  const data = Buffer.from(value, 'latin1');
  const half = Math.max(1, Math.floor(data.length / 2));
  const k = Buffer.from(key, 'latin1');
  const variant = between(draw, 0, 6);
  const cut = (bytes: Buffer) => {
    ctx.history.cut(key, value);
    return sendAndClose(ctx.port(node), bytes, between(draw, 0, 2), draw);
  };
  switch (variant) {
    case 0: // a set whose data stops half-way
      return cut(Buffer.concat([Buffer.from(`set ${key} 9 0 ${data.length}\r\n`, 'latin1'), data.subarray(0, half)]));
    case 1: // all the data but not the CRLF after it
      return cut(Buffer.concat([Buffer.from(`set ${key} 9 0 ${data.length}\r\n`, 'latin1'), data]));
    case 2: // a meta set cut in its data
      return cut(Buffer.concat([Buffer.from(`ms ${key} ${data.length} F9 T0\r\n`, 'latin1'), data.subarray(0, half)]));
    case 3: {
      // a binary Set without the end of its body
      const packet = encodeRequest({ opcode: Opcode.Set, key: k, extras: storageExtras(9, 0), value: data });
      return cut(packet.subarray(0, packet.length - Math.max(1, half)));
    }
    case 4: // a delete line without its newline: must not delete
      return sendAndClose(ctx.port(node), Buffer.from(`delete ${key}`, 'latin1'), between(draw, 0, 2), draw);
    case 5: {
      // a whole append, closed before its reply: may or may not have happened
      const op: Op = { kind: 'append', piece: value };
      ctx.history.begin(key, op, 'text append (closed before the reply)', node, name);
      return sendAndClose(
        ctx.port(node),
        Buffer.concat([Buffer.from(`append ${key} 0 0 ${data.length}\r\n`, 'latin1'), data, Buffer.from('\r\n')]),
        between(draw, 0, 2),
        draw,
      );
    }
    default: {
      // a whole binary AppendQ then a multi-get cut while its reply streams
      const op: Op = { kind: 'append', piece: value };
      ctx.history.begin(key, op, 'binary AppendQ (closed before the NoOp)', node, name);
      const packet = encodeRequest({ opcode: Opcode.AppendQ, key: k, value: data });
      return sendAndClose(ctx.port(node), Buffer.concat([packet, encodeRequest({ opcode: Opcode.NoOp })]), between(draw, 0, 2), draw);
    }
  }
}

/** The shared keyspace: 30 string keys (some binary-unsafe) and 10 counters every shared writer writes. */
export function sharedKeys(seed: number): Array<{ key: string; counter: boolean }> {
  const draw = random(streamSeed(seed, 'shared-keys'));
  return [...keysFor('shared', 'all', 30, { binary: true, counters: 0 }, draw), ...keysFor('shared', 'num', 10, { binary: false, counters: 1 }, draw)];
}

/**
 * Two writers per node on the same keys, any protocol, any write: nothing
 * about the final value is predicted, only that both nodes agree and that it
 * is made of pieces someone wrote (checker.ts).
 */
export async function sharedWriter(ctx: WorkloadContext, node: NodeName, index: number, keys: Array<{ key: string; counter: boolean }>): Promise<void> {
  const name = `shared/${node}${index}`;
  for (const { key, counter } of keys) ctx.history.shared.set(key, { counter });
  const counters = new Map(keys.map((k) => [k.key, k.counter]));
  const draw = random(streamSeed(ctx.seed, name));
  let n = 0;
  const piece = () => makePiece(name, n++, draw);
  const wires = new Map<Protocol, Wire>();
  while (ctx.running()) {
    // Shared keys never rest: nothing about them is predicted, so no write needs to stay unreordered.
    const key = pick(draw, keys).key;
    const protocol = pick(draw, ['text', 'meta', 'binary'] as const);
    const counter = counters.get(key)!;
    // Only the append planner keeps a text counter numeric (store and touch set string values).
    const textPlanner = counter ? 'append' : pick(draw, ['store', 'append', 'touch'] as const);
    const planned = PLANNERS[protocol === 'text' ? textPlanner : protocol](draw, key, counter, piece);
    const plan = { ...planned, protocol };
    if (!carries(protocol, plan.op, key)) continue;
    try {
      const wire = wires.get(protocol) ?? (await Wire.open(ctx.port(node)));
      wires.set(protocol, wire);
      const attempt = ctx.history.begin(key, plan.op, via(protocol, plan.op, plan.form), node, name);
      ctx.history.settle(attempt, await perform(wire, protocol, key, plan.op, plan.form));
    } catch (error) {
      if (error instanceof OddReply) ctx.history.odd('shared', error.message);
      wires.get(protocol)?.close();
      wires.delete(protocol);
      await sleep(50);
    }
  }
  for (const wire of wires.values()) wire.close();
}
