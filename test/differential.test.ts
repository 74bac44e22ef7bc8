/**
 * Transparency (docs/design.md §3): the same byte stream sent to a fresh memcached
 * directly and to a fresh memcached through memrepl must get byte-identical
 * replies. Hand-written edge cases first, then seeded random streams.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { RawClient } from './support/client';
import { type SideBySide, startSideBySide } from './support/processes';

/** A request whose reply cannot appear anywhere else in a test stream: it marks the end of the replies. */
const END_MARKER = 'set __end 0 0 1\r\nE\r\nget __end\r\n';
const END_REPLY = 'VALUE __end 0 1\r\nE\r\nEND\r\n';

/** Reads until the end marker's reply, the connection closes, or time runs out. */
async function run(port: number, stream: Buffer, chunkSizes: number[] = []): Promise<string> {
  const client = await RawClient.connect(port);
  try {
    let offset = 0;
    for (const size of chunkSizes) {
      if (offset >= stream.length) break;
      client.send(stream.subarray(offset, offset + size));
      offset += size;
      await new Promise((r) => setImmediate(r));
    }
    client.send(stream.subarray(offset));
    client.send(END_MARKER);
    const reply = await client.read((b) => b.toString('latin1').endsWith(END_REPLY), 3000);
    return reply.toString('latin1') + (client.closed ? '<closed>' : '');
  } finally {
    client.close();
  }
}

const CASES: Array<[string, string]> = [
  [
    'storage and retrieval',
    'set a 5 0 3\r\nabc\r\nget a\r\ngets a\r\nadd a 0 0 1\r\nx\r\nreplace zz 0 0 1\r\nx\r\nappend a 0 0 2\r\nde\r\nprepend a 0 0 1\r\nZ\r\nget a zz a\r\n',
  ],
  ['cas', 'set c 0 0 1\r\n1\r\ngets c\r\ncas c 0 0 1 999\r\n2\r\ncas c 0 0 1 1\r\n3\r\ncas nope 0 0 1 1\r\n3\r\nget c\r\n'],
  [
    'noreply is silent and still applied',
    'set n 0 0 2 noreply\r\nhi\r\nadd n 0 0 1 noreply\r\nx\r\nget n\r\nincr n 1 noreply\r\ndelete n noreply\r\nget n\r\ndelete n 0 noreply\r\n',
  ],
  [
    'arithmetic',
    'set i 0 0 2\r\n10\r\nincr i 5\r\ndecr i 100\r\nincr i 18446744073709551615\r\nincr nope 1\r\nincr i abc\r\nset s 0 0 3\r\nabc\r\nincr s 1\r\n',
  ],
  [
    'touch, gat, delete',
    'set t 0 0 1\r\nx\r\ntouch t 100\r\ntouch nope 1\r\ngat 200 t nope\r\ngats 0 t\r\ndelete t\r\ndelete t\r\ndelete t 5\r\ndelete t 0\r\n',
  ],
  [
    'meta commands',
    'ms m 3 T0 F5\r\nabc\r\nmg m v f t s k O123\r\nmg nope v\r\nmg nope v q\r\nmg m v q k\r\nma m\r\nms ctr 1\r\n5\r\nma ctr D10 v\r\nma ctr MD D100 v\r\nmd m q\r\nmd m\r\nmd m q\r\nmn\r\nme ctr\r\n',
  ],
  ['meta quiet batch', 'ms q1 1 q\r\na\r\nms q2 1 q MR\r\nb\r\nmg q1 v q\r\nmg q2 v q\r\nmg q3 v q k\r\nmn\r\nma q9 q\r\nma q1 q\r\n'],
  [
    'meta base64 and modes',
    'ms Zm9v 3 b\r\nbar\r\nmg Zm9v b v k\r\nmg foo v\r\nms foo 3 MA\r\nbaz\r\nmg foo v\r\nms foo 1 ME\r\nx\r\nms foo 1 MP\r\n<\r\nmg foo v\r\nms foo 1 Mx\r\nx\r\nmd Zm9v b I T30\r\nmg foo v c\r\n',
  ],
  ['meta errors', 'mg\r\nmg k q q\r\nmg k zz\r\nms k\r\nms k abc\r\nx\r\nms k 2 Q\r\nab\r\nmg k v v\r\nma k Dx\r\nmd k C\r\nmz k\r\nms k 1 T10 T5\r\nz\r\n'],
  ['flush_all', 'set f 0 0 1\r\nx\r\nflush_all 0\r\nget f\r\nflush_all noreply\r\nflush_all 0 noreply\r\nflush_all bad\r\nflush_all 1 2 3\r\n'],
  [
    'malformed lines',
    '\r\n\n \r\nx\r\nfoo bar\r\nget\r\nset\r\nset k 0 0\r\nset k 0 0 x\r\nincr\r\ntouch k\r\nverbosity\r\nverbosity 1\r\nverbosity 1 noreply\r\n',
  ],
  ['bad data chunks', 'set k 0 0 3\r\nabcdef\r\nset k 0 0 3\r\nab\r\n\r\nget k\r\nset k 0 0 3 noreply\r\nabcde\r\nget k\r\n'],
  [
    'odd numbers',
    'set k -1 0 1\r\nx\r\nset k 4294967296 0 1\r\nx\r\nget k\r\nset k 0 0 -1\r\nset k 0 +5 1\r\ny\r\nset k 0 0 4294967297\r\nz\r\nget k\r\nset k 007 0 1\r\nq\r\nget k\r\n',
  ],
  [
    'key length limit',
    `set ${'k'.repeat(250)} 0 0 1\r\nx\r\nget ${'k'.repeat(250)}\r\nset ${'k'.repeat(251)} 0 0 1\r\nx\r\nmg ${'k'.repeat(251)} v\r\ndelete ${'k'.repeat(251)}\r\n`,
  ],
  // Alone, because memcached's error path for it also discards replies still queued for earlier requests.
  ['get with a key over 250 bytes', `get a ${'k'.repeat(251)}\r\n`],
  ['too many tokens', `get ${Array.from({ length: 40 }, (_, i) => `k${i}`).join(' ')}\r\nset a b c d e f g h i j k l m n o p q r s t u v w x y z\r\n`],
  ['version and stats variants', 'version\r\nstats nonsense\r\nstats detail on\r\nstats detail dump\r\nstats detail off\r\n'],
  [
    'oversized value is refused and old value dropped',
    `set big 0 0 1\r\nx\r\nset big 0 0 2000000\r\n${'v'.repeat(2000000)}\r\nget big\r\nset big 0 0 2000000 noreply\r\n${'v'.repeat(2000000)}\r\nget big\r\n`,
  ],
  // memcached closes at once and drops replies it had not written yet; alone on a connection the two agree.
  ['HTTP request line closes the connection', 'GET / HTTP/1.1\r\n'],
  ['NUL bytes and tabs', 'get a\0junk\r\nset\tk 0 0 1\r\nx\r\nget k\r\n'],
  ['quit ends the session', 'set q 0 0 1\r\nx\r\nget q\r\nquit\r\nget q\r\n'],
];

describe('memrepl is byte-for-byte transparent (text and meta protocols)', () => {
  let rig: SideBySide;
  before(async () => {
    rig = await startSideBySide();
  });
  after(() => rig?.stop());

  for (const [name, stream] of CASES) {
    it(name, async () => {
      const bytes = Buffer.from(stream, 'latin1');
      const expected = await run(rig.direct.port, bytes);
      const actual = await run(rig.proxy.port, bytes);
      assert.equal(actual, expected);
    });
  }

  it('pipelined, split at arbitrary byte boundaries', async () => {
    const stream = Buffer.from(
      CASES.slice(0, 9)
        .map(([, s]) => s)
        .join(''),
      'latin1',
    );
    for (const size of [1, 2, 3, 7, 64]) {
      const chunks = Array.from({ length: Math.ceil(stream.length / size) }, () => size);
      const expected = await run(rig.direct.port, stream);
      const actual = await run(rig.proxy.port, stream, chunks);
      assert.ok(expected.includes('STORED'));
      assert.equal(actual, expected, `chunk size ${size}`);
    }
  });

  it('random command streams (seeded)', async () => {
    const key = fc.constantFrom('a', 'b', 'ctr', 'k 2', '');
    const value = fc.string({ maxLength: 8 }).map((s) => s.replace(/[\r\n]/g, '_'));
    const num = fc.oneof(fc.integer({ min: -5, max: 100 }).map(String), fc.constantFrom('x', '', '99999999999', '-0', '+3'));
    const command = fc.oneof(
      fc
        .tuple(fc.constantFrom('set', 'add', 'replace', 'append', 'prepend'), key, num, num, value, fc.boolean(), fc.integer({ min: -2, max: 2 }))
        .map(([c, k, f, e, v, nr, skew]) => `${c} ${k} ${f} ${e} ${Math.max(0, v.length + skew)}${nr ? ' noreply' : ''}\r\n${v}\r\n`),
      fc.tuple(fc.constantFrom('get', 'gets', 'gat 10', 'gats 0'), fc.array(key, { maxLength: 3 })).map(([c, ks]) => `${c} ${ks.join(' ')}\r\n`),
      fc.tuple(fc.constantFrom('incr', 'decr'), key, num, fc.boolean()).map(([c, k, n, nr]) => `${c} ${k} ${n}${nr ? ' noreply' : ''}\r\n`),
      fc
        .tuple(fc.constantFrom('delete', 'touch'), key, fc.constantFrom('', ' 0', ' 10', ' noreply', ' 0 noreply'))
        .map(([c, k, rest]) => `${c} ${k}${rest}\r\n`),
      fc
        .tuple(fc.constantFrom('mg', 'md', 'ma'), key, fc.subarray(['v', 'q', 'k', 'f', 't', 'T30', 'O9', 'N10', 'I', 'MD', 'D3', 'zz', 'c', 's']))
        .map(([c, k, fl]) => `${c} ${k} ${fl.join(' ')}\r\n`),
      fc
        .tuple(key, value, fc.subarray(['q', 'T10', 'F3', 'MA', 'MP', 'ME', 'MR', 'I', 'k', 'O1', 'c']))
        .map(([k, v, fl]) => `ms ${k} ${v.length} ${fl.join(' ')}\r\n${v}\r\n`),
      fc.constantFrom('mn\r\n', 'version\r\n', 'flush_all\r\n', 'bogus\r\n', '\r\n', 'verbosity 0 noreply\r\n'),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(command, { minLength: 1, maxLength: 30 }), async (commands) => {
        const stream = Buffer.from(commands.join(''), 'latin1');
        const expected = await run(rig.direct.port, stream);
        const actual = await run(rig.proxy.port, stream);
        assert.equal(actual, expected, `stream: ${JSON.stringify(commands.join(''))}`);
      }),
      { seed: 42, numRuns: 150 },
    );
  });
});
