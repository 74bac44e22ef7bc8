/**
 * Readers: one client per node looping get/gets (up to 24 keys, so some go
 * past the proxy's 16-key limit for shared connections), mg and binary
 * GetK/GetKQ pipelines over the keys the writers write, while faults, full
 * copies and resyncs run. A reply must answer the keys asked, in order, each
 * with a value made of pieces someone wrote to that very key; anything else
 * is a finding (category "readers"). Timeouts and SERVER_ERROR are expected
 * under faults and only counted.
 */
import { Opcode, Status } from '../../src/protocol/binary/messages';
import { encodeRequest } from '../../src/protocol/binary/serializer';
import { metaKey, textSafeKey } from '../../src/protocol/text/serializer';
import { sleep } from '../support/ports';
import { type History, type NodeName, showKey, showValue } from './history';
import { REPLY_TIMEOUT_MS } from './protocols';
import { between, pick, random, streamSeed } from './random';
import { NoReply, ReplyLine, Wire } from './wire';
import type { WorkloadContext } from './writers';

export async function reader(ctx: WorkloadContext, node: NodeName, keys: () => string[]): Promise<void> {
  const draw = random(streamSeed(ctx.seed, `reader/${node}`));
  const wires = new Map<string, Wire>();
  const history = ctx.history;
  while (ctx.running()) {
    const all = keys();
    if (all.length === 0) {
      await sleep(50);
      continue;
    }
    const kind = pick(draw, ['get', 'gets', 'mg', 'binary'] as const);
    const protocol = kind === 'binary' ? 'binary' : 'text';
    try {
      const wire = wires.get(protocol) ?? (await Wire.open(ctx.port(node)));
      wires.set(protocol, wire);
      if (kind === 'binary')
        await binaryRead(
          wire,
          history,
          node,
          Array.from({ length: between(draw, 1, 20) }, () => pick(draw, all)),
          draw() < 0.5,
        );
      else if (kind === 'mg') await metaRead(wire, history, node, pick(draw, all));
      else {
        const textKeys = Array.from({ length: between(draw, 1, 24) }, () => pick(draw, all)).filter((k) => textSafeKey(Buffer.from(k, 'latin1')));
        if (textKeys.length > 0) await textRead(wire, history, node, kind, textKeys);
      }
    } catch (error) {
      // Timeouts, SERVER_ERROR and refused connections come with the faults; anything else is odd.
      const expected = error instanceof NoReply || (error instanceof ReplyLine && error.line.startsWith('SERVER_ERROR')) || 'code' in (error as object);
      if (!expected) history.odd('readers', `${node} ${kind}: ${(error as Error).message}`);
      wires.get(protocol)?.close();
      wires.delete(protocol);
      await sleep(50);
    }
  }
  for (const wire of wires.values()) wire.close();
}

function counterKey(history: History, key: string): boolean {
  return history.owners.get(key)?.counter ?? history.shared.get(key)?.counter ?? false;
}

function checkValue(history: History, node: NodeName, command: string, key: string, value: string): void {
  if (!history.legitimate(key, value, counterKey(history, key))) {
    const cut = [...(history.cutPieces.get(key) ?? [])].some((p) => value.includes(p));
    history.find(
      'readers',
      `node ${node} ${command}: ${showKey(key)} read ${showValue(value)}, ${cut ? 'the value of a request cut mid-way' : 'which nobody wrote to this key'}`,
    );
  }
}

async function textRead(wire: Wire, history: History, node: NodeName, command: 'get' | 'gets', keys: string[]): Promise<void> {
  const values = await wire.values(`${command} ${keys.join(' ')}\r\n`, REPLY_TIMEOUT_MS);
  // Hits come in the order asked (a repeated key answers each time).
  let at = 0;
  for (const v of values) {
    while (at < keys.length && keys[at] !== v.key) at++;
    if (at === keys.length) {
      history.find(
        'readers',
        `node ${node} ${command} of ${keys.length} keys: VALUE ${showKey(v.key)} was not asked for at that place (asked ${keys.map(showKey).join(' ').slice(0, 200)})`,
      );
      return;
    }
    at++;
    if (command === 'gets' && v.cas === undefined) history.find('readers', `node ${node} gets: VALUE ${showKey(v.key)} without a cas unique`);
    checkValue(history, node, `${command} (${keys.length} keys)`, v.key, v.value);
  }
}

async function metaRead(wire: Wire, history: History, node: NodeName, key: string): Promise<void> {
  const { token, flag } = metaKey(Buffer.from(key, 'latin1'));
  const replies = await wire.meta(`mg ${token}${flag} v f t\r\n`, REPLY_TIMEOUT_MS);
  if (replies.length !== 1) {
    history.find('readers', `node ${node} mg ${showKey(key)}: ${replies.length} replies ${JSON.stringify(replies.map((r) => r.line))}`);
    return;
  }
  const [reply] = replies;
  if (reply.line === 'EN') return;
  if (reply.line.startsWith('SERVER_ERROR')) throw new ReplyLine(reply.line);
  if (!reply.line.startsWith('VA ') || reply.value === undefined) {
    history.find('readers', `node ${node} mg ${showKey(key)}: ${reply.line.slice(0, 80)}`);
    return;
  }
  checkValue(history, node, 'mg', key, reply.value);
}

async function binaryRead(wire: Wire, history: History, node: NodeName, keys: string[], quiet: boolean): Promise<void> {
  const opcode = quiet ? Opcode.GetKQ : Opcode.GetK;
  const requests = keys.map((key, i) => encodeRequest({ opcode, key: Buffer.from(key, 'latin1'), opaque: 0x1000 + i }));
  const responses = await wire.binary(requests, REPLY_TIMEOUT_MS);
  const what = `binary ${quiet ? 'GetKQ' : 'GetK'} x${keys.length}`;
  let last = -1;
  for (const r of responses) {
    // GetK answers with the key asked, under the request's opaque, in order.
    const i = r.opaque - 0x1000;
    const keyed = r.status === Status.Success || r.status === Status.KeyNotFound;
    if (i <= last || i >= keys.length || (keyed && r.key !== keys[i])) {
      history.find('readers', `node ${node} ${what}: response #${i} for ${showKey(r.key)} (asked ${showKey(keys[i] ?? '?')}), after #${last}`);
      return;
    }
    last = i;
    if (r.status === Status.KeyNotFound && !quiet) continue;
    if (r.status !== Status.Success) {
      if (r.status !== Status.OutOfMemory) history.odd('readers', `node ${node} ${what}: status 0x${r.status.toString(16)} for ${showKey(keys[i])}`);
      continue;
    }
    checkValue(history, node, what, keys[i], r.value.toString('latin1'));
  }
  if (!quiet && responses.length !== keys.length) history.find('readers', `node ${node} ${what}: ${responses.length} responses to ${keys.length} requests`);
}
