/**
 * The binary protocol through memrepl (docs/design.md §3): libmemcached's
 * conformance tool and a real client behave as against memcached, and the
 * same byte stream sent to a fresh memcached directly and through memrepl
 * gets byte-identical replies — quiet opcodes, NoOp-terminated batches and
 * malformed requests included.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import * as memjs from 'memjs';
import { HEADER_LENGTH, Opcode } from '../src/protocol/binary/messages';
import { READ_BUFFER_SIZE } from '../src/protocol/binary/request-parser';
import { arithmeticExtras, encodeRequest, encodeResponse, expiryExtras, RequestFields, storageExtras } from '../src/protocol/binary/serializer';
import { RawClient } from './support/client';
import { type SideBySide, startSideBySide } from './support/processes';

const MARKER_OPAQUE = 0xfeedface;
/** A NoOp the streams never use: its reply marks the end of the replies. */
const MARKER = encodeRequest({ opcode: Opcode.NoOp, opaque: MARKER_OPAQUE });
const MARKER_REPLY = encodeResponse({ opcode: Opcode.NoOp, opaque: MARKER_OPAQUE });

const req = (fields: RequestFields): Buffer => encodeRequest(fields);
const b = (s: string): Buffer => Buffer.from(s, 'latin1');
const noop = (opaque = 0): Buffer => req({ opcode: Opcode.NoOp, opaque });
const set = (opcode: number, key: string, value: string | Buffer, opaque = 0, flags = 0, exptime = 0, cas = 0n): Buffer =>
  req({ opcode, key: b(key), extras: storageExtras(flags, exptime), value: typeof value === 'string' ? b(value) : value, opaque, cas });
const get = (opcode: number, key: string, opaque = 0): Buffer => req({ opcode, key: b(key), opaque });
const arith = (opcode: number, key: string, delta: bigint, initial: bigint, exptime: number, opaque = 0): Buffer =>
  req({ opcode, key: b(key), extras: arithmeticExtras(delta, initial, exptime), opaque });
const touch = (opcode: number, key: string, exptime: number, opaque = 0): Buffer => req({ opcode, key: b(key), extras: expiryExtras(exptime), opaque });

/**
 * Sends `stream` (in `chunkSizes` pieces, then the rest) and reads the
 * replies: up to the marker's reply when `closes` is false, otherwise until
 * memcached closes the connection (no marker: memcached would leave it unread).
 */
async function run(port: number, stream: Buffer, closes: boolean, chunkSizes: number[] = []): Promise<Buffer> {
  const client = await RawClient.connect(port);
  try {
    let offset = 0;
    for (const size of chunkSizes) {
      if (offset >= stream.length) break;
      client.send(stream.subarray(offset, offset + size));
      offset += size;
      await new Promise((r) => setImmediate(r));
    }
    client.send(Buffer.concat([stream.subarray(offset), closes ? Buffer.alloc(0) : MARKER]));
    const reply = await client.read((bytes) => !closes && endsWith(bytes, MARKER_REPLY), 5000);
    return Buffer.concat([reply, b(client.closed ? '<closed>' : '')]);
  } finally {
    client.close();
  }
}

function endsWith(bytes: Buffer, tail: Buffer): boolean {
  return bytes.length >= tail.length && bytes.subarray(bytes.length - tail.length).equals(tail);
}

/** Readable form of a reply stream, so a failing comparison shows which packet differs. */
function describePackets(bytes: Buffer): string[] {
  const out: string[] = [];
  let at = 0;
  while (at + HEADER_LENGTH <= bytes.length && bytes[at] === 0x81) {
    const keyLength = bytes.readUInt16BE(at + 2);
    const extrasLength = bytes[at + 4];
    const end = at + HEADER_LENGTH + bytes.readUInt32BE(at + 8);
    const body = bytes.subarray(at + HEADER_LENGTH, end);
    out.push(
      `op=${bytes[at + 1].toString(16)} status=${bytes.readUInt16BE(at + 6).toString(16)} opaque=${bytes.readUInt32BE(at + 12).toString(16)} ` +
        `cas=${bytes.readBigUInt64BE(at + 16)} extras=${body.subarray(0, extrasLength).toString('hex')} ` +
        `key=${JSON.stringify(body.subarray(extrasLength, extrasLength + keyLength).toString('latin1'))} ` +
        `value=${JSON.stringify(
          body
            .subarray(extrasLength + keyLength)
            .toString('latin1')
            .slice(0, 80),
        )}`,
    );
    at = end;
  }
  if (at < bytes.length) out.push(`rest=${JSON.stringify(bytes.subarray(at).toString('latin1').slice(0, 200))}`);
  return out;
}

function assertSameReplies(actual: Buffer, expected: Buffer, context = ''): void {
  assert.deepEqual(describePackets(actual), describePackets(expected), context);
  assert.ok(actual.equals(expected), `replies differ byte-wise ${context}`);
}

const KEY_2MB_VALUE = Buffer.alloc(2 * 1024 * 1024, 0x76);

/** Streams that leave the connection open; each is answered fully before the marker. */
const CASES: Array<[string, Buffer]> = [
  [
    'storage and retrieval',
    Buffer.concat([
      set(Opcode.Set, 'a', 'abc', 1, 5, 0),
      get(Opcode.Get, 'a', 2),
      get(Opcode.GetK, 'a', 3),
      get(Opcode.Get, 'missing', 4),
      get(Opcode.GetK, 'missing', 5),
      set(Opcode.Add, 'a', 'x', 6),
      set(Opcode.Replace, 'zz', 'x', 7),
      set(Opcode.Replace, 'a', 'replaced', 8, 0xffffffff),
      req({ opcode: Opcode.Append, key: b('a'), value: b('-tail'), opaque: 9 }),
      req({ opcode: Opcode.Prepend, key: b('a'), value: b('head-'), opaque: 10 }),
      req({ opcode: Opcode.Append, key: b('nope'), value: b('x'), opaque: 11 }),
      get(Opcode.GetK, 'a', 12),
      req({ opcode: Opcode.Delete, key: b('a'), opaque: 13 }),
      req({ opcode: Opcode.Delete, key: b('a'), opaque: 14 }),
    ]),
  ],
  [
    'a quiet multi-get batch ended by NoOp',
    Buffer.concat([
      set(Opcode.SetQ, 'q1', 'one', 1),
      set(Opcode.SetQ, 'q2', 'two', 2),
      get(Opcode.GetQ, 'q1', 3),
      get(Opcode.GetQ, 'nope', 4),
      get(Opcode.GetKQ, 'q2', 5),
      get(Opcode.GetKQ, 'nope2', 6),
      noop(7),
      get(Opcode.GetKQ, 'nope3', 8),
      noop(9),
    ]),
  ],
  [
    'quiet writes stay silent on success and always report errors',
    Buffer.concat([
      set(Opcode.SetQ, 'w', '1', 1),
      set(Opcode.AddQ, 'w', 'x', 2),
      set(Opcode.ReplaceQ, 'nope', 'x', 3),
      set(Opcode.ReplaceQ, 'w', '5', 4),
      req({ opcode: Opcode.AppendQ, key: b('w'), value: b('0'), opaque: 5 }),
      req({ opcode: Opcode.PrependQ, key: b('nope'), value: b('x'), opaque: 6 }),
      arith(Opcode.IncrementQ, 'w', 1n, 0n, 0, 7),
      set(Opcode.SetQ, 'text', 'abc', 8),
      arith(Opcode.DecrementQ, 'text', 1n, 0n, 0, 9),
      req({ opcode: Opcode.DeleteQ, key: b('w'), opaque: 10 }),
      req({ opcode: Opcode.DeleteQ, key: b('w'), opaque: 11 }),
      noop(12),
    ]),
  ],
  [
    'cas mismatches',
    Buffer.concat([
      set(Opcode.Set, 'c', 'v', 1),
      set(Opcode.Set, 'c', 'w', 2, 0, 0, 999999n),
      set(Opcode.SetQ, 'c', 'w', 3, 0, 0, 999999n),
      set(Opcode.Replace, 'nope', 'w', 4, 0, 0, 5n),
      req({ opcode: Opcode.Delete, key: b('c'), cas: 999999n, opaque: 5 }),
      arith(Opcode.Increment, 'c', 1n, 0n, 0, 6),
      get(Opcode.Get, 'c', 7),
    ]),
  ],
  [
    'arithmetic',
    Buffer.concat([
      arith(Opcode.Increment, 'n', 5n, 10n, 0, 1),
      arith(Opcode.Increment, 'n', 5n, 10n, 0, 2),
      arith(Opcode.Decrement, 'n', 100n, 0n, 0, 3),
      arith(Opcode.Increment, 'n', 0xffffffffffffffffn, 0n, 0, 4),
      arith(Opcode.Increment, 'n', 2n, 0n, 0, 5),
      arith(Opcode.Increment, 'none', 1n, 0n, 0xffffffff, 6),
      arith(Opcode.IncrementQ, 'none2', 1n, 0n, 0xffffffff, 7),
      get(Opcode.Get, 'n', 8),
    ]),
  ],
  [
    'touch and get-and-touch',
    Buffer.concat([
      set(Opcode.Set, 't', 'value', 1, 77, 0),
      touch(Opcode.Touch, 't', 1000, 2),
      touch(Opcode.Touch, 'nope', 1000, 3),
      touch(Opcode.GAT, 't', 0, 4),
      touch(Opcode.GATK, 't', 0xffffffff, 5),
      touch(Opcode.GATQ, 'nope', 10, 6),
      touch(Opcode.GATKQ, 't', 0, 7),
      touch(Opcode.GATKQ, 'nope', 0, 8),
      noop(9),
      touch(Opcode.GAT, 't', 2592001, 10),
      get(Opcode.Get, 't', 11),
    ]),
  ],
  [
    'flush',
    Buffer.concat([
      set(Opcode.Set, 'f', 'x', 1),
      req({ opcode: Opcode.FlushQ, opaque: 2 }),
      get(Opcode.GetQ, 'f', 3),
      noop(4),
      set(Opcode.Set, 'f', 'y', 5),
      req({ opcode: Opcode.Flush, extras: expiryExtras(0), opaque: 6 }),
      get(Opcode.Get, 'f', 7),
    ]),
  ],
  [
    'stats without volatile values, version, NoOp',
    Buffer.concat([
      req({ opcode: Opcode.Stat, key: b('reset'), opaque: 1 }),
      req({ opcode: Opcode.Stat, key: b('bogus'), opaque: 2 }),
      req({ opcode: Opcode.Stat, key: b('detail off'), opaque: 3 }),
      req({ opcode: Opcode.Version, opaque: 4 }),
      noop(5),
    ]),
  ],
  [
    'SASL without SASL is an unknown command',
    Buffer.concat([
      req({ opcode: Opcode.SASLListMechs, opaque: 1 }),
      req({ opcode: Opcode.SASLAuth, key: b('PLAIN'), value: b('\0u\0p'), opaque: 2 }),
      req({ opcode: Opcode.SASLStep, key: b('PLAIN'), value: b('x'), opaque: 3 }),
      noop(4),
    ]),
  ],
  [
    'unknown opcodes, and memcached swallowing their body after extras and key',
    Buffer.concat([
      req({ opcode: Opcode.Verbosity, opaque: 1 }),
      req({ opcode: 0x42, value: b('0123456789'), opaque: 2 }),
      req({ opcode: 0x30, opaque: 3 }),
      // Verbosity with 4 bytes of extras: memcached discards 4 more bytes after them.
      req({ opcode: Opcode.Verbosity, extras: expiryExtras(1), opaque: 4 }),
      b('JUNK'),
      noop(5),
    ]),
  ],
  [
    'Stat and Touch read nothing past the key',
    Buffer.concat([
      set(Opcode.Set, 'p', 'x', 1),
      req({ opcode: Opcode.Touch, key: b('p'), extras: expiryExtras(0), totalBodyLength: 5 + HEADER_LENGTH, opaque: 2 }),
      noop(3),
      req({ opcode: Opcode.Stat, key: b('reset'), totalBodyLength: 5 + HEADER_LENGTH, opaque: 4 }),
      noop(5),
    ]),
  ],
  [
    'values over the item limit are refused; a refused Set drops the old item',
    Buffer.concat([
      set(Opcode.Set, 'big', 'old', 1),
      set(Opcode.SetQ, 'big', KEY_2MB_VALUE, 2),
      get(Opcode.Get, 'big', 3),
      set(Opcode.Set, 'big2', 'old', 4),
      set(Opcode.Add, 'big2', KEY_2MB_VALUE, 5),
      req({ opcode: Opcode.AppendQ, key: b('big2'), value: KEY_2MB_VALUE, opaque: 6 }),
      get(Opcode.Get, 'big2', 7),
      // Under the proxy's limit but over memcached's once item overhead is added: memcached refuses it itself.
      set(Opcode.Set, 'big2', Buffer.alloc(1024 * 1024 - 8, 0x77), 8),
      get(Opcode.Get, 'big2', 9),
    ]),
  ],
  [
    'binary keys',
    Buffer.concat([
      set(Opcode.Set, 'key with spaces\r\n', 'v', 1),
      set(Opcode.Set, '\0\xff\x80', 'w', 2),
      get(Opcode.GetK, 'key with spaces\r\n', 3),
      get(Opcode.GetK, '\0\xff\x80', 4),
      set(Opcode.Set, 'k'.repeat(250), 'long', 5),
      get(Opcode.GetK, 'k'.repeat(250), 6),
    ]),
  ],
];

/** Streams after which memcached closes the connection (each starts with a flush-forcing NoOp, see below). */
const CLOSING: Array<[string, Buffer]> = [
  ['wrong magic', b('get foo bar baz quux quuux\r\n')],
  ['a key over 250 bytes', get(Opcode.Get, 'k'.repeat(251), 1)],
  ['key and extras longer than the body', req({ opcode: Opcode.Get, key: b('abc'), totalBodyLength: 2, opaque: 1 })],
  ['extras a Get does not take', req({ opcode: Opcode.GetQ, key: b('a'), extras: expiryExtras(1), opaque: 1 })],
  ['a Set without extras', req({ opcode: Opcode.SetQ, key: b('a'), value: b('v'), opaque: 1 })],
  ['a NoOp with a body', req({ opcode: Opcode.NoOp, value: b('v'), opaque: 1 })],
  ['quit', req({ opcode: Opcode.Quit, opaque: 1 })],
  ['quiet quit', req({ opcode: Opcode.QuitQ, opaque: 1 })],
  [
    "extras and key that cannot fit memcached's read buffer",
    Buffer.concat([
      // memcached closes once more than its 16 KiB read buffer's worth has arrived.
      encodeRequest({ opcode: Opcode.Get, keyLength: 0xffff, totalBodyLength: 0xffff }),
      Buffer.alloc(READ_BUFFER_SIZE - HEADER_LENGTH + 1, 0x61),
    ]),
  ],
];

describe('binary protocol through memrepl: clients', () => {
  let rig: SideBySide;
  before(async () => {
    rig = await startSideBySide();
  });
  after(() => rig?.stop());

  it('memccapable -b passes through memrepl exactly as against memcached', async () => {
    const capable = (port: number) =>
      new Promise<string>((resolve) => {
        execFile('memccapable', ['-h', '127.0.0.1', '-p', String(port), '-b', '-t', '5'], { timeout: 60000 }, (error, stdout, stderr) => {
          resolve(`${stdout}${stderr}${error ? `\nexit: ${error.code ?? error.signal}` : ''}`);
        });
      });
    const expected = await capable(rig.direct.port);
    assert.match(expected, /All tests passed/);
    const actual = await capable(rig.proxy.port);
    assert.equal(actual, expected);
  });

  it('memjs: every operation behaves as against memcached', async () => {
    const scenario = async (port: number): Promise<unknown[]> => {
      const client = memjs.Client.create(`127.0.0.1:${port}`, { retries: 0, timeout: 3, logger: { log() {} } });
      const results: unknown[] = [];
      const step = async (name: string, op: () => Promise<unknown>) => {
        try {
          const value = await op();
          results.push([name, normalise(value)]);
        } catch (error) {
          results.push([name, 'error', (error as Error).message]);
        }
      };
      try {
        // flush answers per server address, which differs between the two runs.
        await step('flush', async () => Object.values(await client.flush()));
        await step('set', () => client.set('k', 'hello', { expires: 0 }));
        await step('get', () => client.get('k'));
        await step('add existing', () => client.add('k', 'x'));
        await step('add new', () => client.add('k2', 'v2', { expires: 1000 }));
        await step('replace missing', () => client.replace('nope', 'x'));
        await step('replace', () => client.replace('k2', 'replaced'));
        await step('append', () => client.append('k', ' world'));
        await step('prepend', () => client.prepend('k', '>> ')); // memjs 1.3.2 sends Append (0x0e) for prepend
        await step('get appended', () => client.get('k'));
        await step('append missing', () => client.append('nope', 'x'));
        await step('increment new', () => client.increment('ctr', 5, { initial: 10 }));
        await step('increment', () => client.increment('ctr', 5));
        await step('decrement', () => client.decrement('ctr', 3, {}));
        await step('decrement below zero', () => client.decrement('ctr', 100, {}));
        await step('increment non-numeric', () => client.increment('k', 1));
        await step('touch', () => client.touch('k2', 500));
        await step('touch missing', () => client.touch('nope', 500));
        await step('delete', () => client.delete('k2'));
        await step('delete missing', () => client.delete('k2'));
        await step('get deleted', () => client.get('k2'));
        await step('flush again', async () => Object.values(await client.flush()));
        await step('get flushed', () => client.get('k'));
        return results;
      } finally {
        client.close();
      }
    };
    const expected = await scenario(rig.direct.port);
    const actual = await scenario(rig.proxy.port);
    assert.deepEqual(actual, expected);
    const result = (name: string) => expected.find((r) => (r as unknown[])[0] === name);
    assert.deepEqual(result('get'), ['get', { value: 'hello', flags: '00000000' }]);
    assert.deepEqual(result('decrement'), ['decrement', { success: true, value: 12 }]);
    assert.deepEqual(result('get flushed'), ['get flushed', { value: null, flags: null }]);
  });

  // TODO(lead): the upstream pool hands a connection memcached has fixed to
  it('text and binary clients can take turns on one memrepl', async () => {
    // memcached picks a connection's protocol from its first byte, for good:
    // an upstream connection must never serve both.
    for (let i = 0; i < 3; i++) {
      const text = await RawClient.connect(rig.proxy.port);
      assert.match(await text.request('version\r\n'), /^VERSION /);
      text.close();
      const binary = await RawClient.connect(rig.proxy.port);
      binary.send(req({ opcode: Opcode.Version, opaque: i }));
      const reply = await binary.read((bytes) => bytes.length >= HEADER_LENGTH && bytes.length >= HEADER_LENGTH + bytes.readUInt32BE(8));
      binary.close();
      assert.equal(reply[0], 0x81, `binary reply ${reply.toString('latin1')}`);
      assert.equal(reply.readUInt32BE(12), i);
    }
  });
});

/** JSON-friendly memjs results (Buffers as text or hex). */
function normalise(value: unknown): unknown {
  if (Buffer.isBuffer(value)) return value.toString('latin1');
  if (value && typeof value === 'object' && 'value' in value) {
    const { value: v, flags } = value as { value: unknown; flags?: unknown };
    const out: Record<string, unknown> = { ...(value as object), value: normalise(v) };
    if (Buffer.isBuffer(flags)) out.flags = flags.toString('hex');
    return out;
  }
  return value;
}

/**
 * memcached rewrites a counter in place (padding it with spaces when it got
 * shorter) only while nothing else holds a reference to the item. Its LRU
 * background threads take such references at moments of their choosing, so
 * the two memcacheds compared here run without them.
 */
const DETERMINISTIC = ['-o', 'no_lru_crawler,no_lru_maintainer'];

describe('binary protocol through memrepl is byte-for-byte transparent', () => {
  let rig: SideBySide;
  before(async () => {
    rig = await startSideBySide(DETERMINISTIC);
  });
  after(() => rig?.stop());

  for (const [name, stream] of CASES) {
    it(name, async () => {
      const expected = await run(rig.direct.port, stream, false);
      const actual = await run(rig.proxy.port, stream, false);
      assert.ok(endsWith(expected, MARKER_REPLY), 'memcached answered the whole stream');
      assertSameReplies(actual, expected);
    });
  }

  for (const [name, request] of CLOSING) {
    it(`closes like memcached: ${name}`, async () => {
      // The NoOp makes memcached write its queued replies before the request
      // that closes the connection; without it, memcached would drop replies
      // still queued from the same read (a timing accident not worth copying).
      const stream = Buffer.concat([set(Opcode.SetQ, 'x', 'y', 1), get(Opcode.GetK, 'x', 2), noop(3), request]);
      const expected = await run(rig.direct.port, stream, true);
      const actual = await run(rig.proxy.port, stream, true);
      assert.ok(expected.toString('latin1').endsWith('<closed>'), 'memcached closed the connection');
      assertSameReplies(actual, expected);
    });
  }

  it('pipelined, split at arbitrary byte boundaries', async () => {
    const stream = Buffer.concat(CASES.slice(0, 11).map(([, s]) => s));
    for (const size of [1, 2, 3, 7, 24, 25, 64]) {
      const chunks = Array.from({ length: Math.ceil(stream.length / size) }, () => size);
      // Both sides get every stream, so their CAS counters stay in step.
      const expected = await run(rig.direct.port, stream, false);
      const actual = await run(rig.proxy.port, stream, false, chunks);
      assertSameReplies(actual, expected, `chunk size ${size}`);
    }
  });

  it('random request streams (seeded)', async () => {
    // memcached rewrites a counter in place (padding it with spaces when it
    // got shorter) only if nothing else holds the item; a get or touch reply
    // not yet written does. Whether it was written depends on how the stream
    // arrived, so counters are kept apart from keys that are read or touched.
    const readKey = fc.constantFrom('a', 'b', 'sp ace\r\n', '\0\xff');
    const counterKey = fc.constantFrom('n', 'ctr');
    const key = fc.oneof(readKey, counterKey);
    const value = fc.oneof(fc.constantFrom('10', '0', '18446744073709551615', ''), fc.string({ maxLength: 12 }));
    const exptime = fc.constantFrom(0, 1000, 2592001, 0xffffffff);
    const opaque = fc.integer({ min: 0, max: 0xfffffff0 });
    const cas = fc.oneof({ weight: 4, arbitrary: fc.constant(0n) }, { weight: 1, arbitrary: fc.bigInt({ min: 1n, max: 50n }) });
    const pick = (...opcodes: number[]) => fc.constantFrom(...opcodes);

    const request: fc.Arbitrary<Buffer> = fc.oneof(
      fc.tuple(pick(Opcode.Get, Opcode.GetQ, Opcode.GetK, Opcode.GetKQ), readKey, opaque).map(([op, k, o]) => get(op, k, o)),
      fc
        .tuple(
          pick(Opcode.Set, Opcode.SetQ, Opcode.Add, Opcode.AddQ, Opcode.Replace, Opcode.ReplaceQ),
          key,
          value,
          opaque,
          fc.integer({ min: 0, max: 0xffffffff }),
          exptime,
          cas,
        )
        .map(([op, k, v, o, f, e, c]) => set(op, k, v, o, f, e, c)),
      fc
        .tuple(pick(Opcode.Append, Opcode.AppendQ, Opcode.Prepend, Opcode.PrependQ), key, value, opaque, cas)
        .map(([op, k, v, o, c]) => req({ opcode: op, key: b(k), value: b(v), opaque: o, cas: c })),
      fc.tuple(pick(Opcode.Delete, Opcode.DeleteQ), key, opaque, cas).map(([op, k, o, c]) => req({ opcode: op, key: b(k), opaque: o, cas: c })),
      fc
        .tuple(pick(Opcode.Increment, Opcode.IncrementQ, Opcode.Decrement, Opcode.DecrementQ), counterKey, fc.bigUintN(64), fc.bigUintN(64), exptime, opaque)
        .map(([op, k, d, i, e, o]) => arith(op, k, d, i, e, o)),
      fc.tuple(pick(Opcode.Touch, Opcode.GAT, Opcode.GATQ, Opcode.GATK, Opcode.GATKQ), readKey, exptime, opaque).map(([op, k, e, o]) => touch(op, k, e, o)),
      fc
        .tuple(fc.array(readKey, { minLength: 1, maxLength: 5 }), opaque)
        .map(([ks, o]) => Buffer.concat([...ks.map((k, i) => get(Opcode.GetKQ, k, o + i)), noop(o)])),
      fc
        .tuple(pick(Opcode.Flush, Opcode.FlushQ), fc.boolean(), opaque)
        .map(([op, delay, o]) => req({ opcode: op, extras: delay ? expiryExtras(0) : undefined, opaque: o })),
      fc.tuple(fc.constantFrom('reset', 'bogus', 'detail off'), opaque).map(([k, o]) => req({ opcode: Opcode.Stat, key: b(k), opaque: o })),
      fc
        .tuple(pick(Opcode.NoOp, Opcode.Version, Opcode.SASLListMechs, Opcode.Verbosity, 0x25, 0x42, 0xff), opaque)
        .map(([op, o]) => req({ opcode: op, opaque: o })),
      // Bodies memcached does not read: the extra bytes are a whole NoOp.
      fc
        .tuple(readKey, opaque)
        .map(([k, o]) =>
          Buffer.concat([
            req({ opcode: Opcode.Touch, key: b(k), extras: expiryExtras(0), totalBodyLength: 4 + b(k).length + HEADER_LENGTH, opaque: o }),
            noop(o),
          ]),
        ),
      // An unknown opcode's over-swallow, padded so the stream stays in step.
      fc
        .tuple(fc.integer({ min: 0, max: 8 }), opaque)
        .map(([n, o]) => Buffer.concat([req({ opcode: 0x42, extras: Buffer.alloc(n), value: b('v'), opaque: o }), Buffer.alloc(n, 0x2e)])),
    );
    const terminal = fc.option(fc.constantFrom(...CLOSING.map(([, r]) => r)), { freq: 4 });

    await fc.assert(
      fc.asyncProperty(
        fc.array(request, { minLength: 1, maxLength: 25 }),
        terminal,
        fc.array(fc.integer({ min: 1, max: 40 }), { maxLength: 30 }),
        async (requests, last, chunks) => {
          const closes = last !== null;
          const stream = Buffer.concat([...requests, ...(closes ? [noop(1), last] : [])]);
          const expected = await run(rig.direct.port, stream, closes);
          const actual = await run(rig.proxy.port, stream, closes, chunks);
          assertSameReplies(actual, expected, `stream: ${stream.toString('hex').slice(0, 2000)}`);
        },
      ),
      { seed: 6, numRuns: 150 },
    );
  });
});
