/**
 * `lru_crawler metadump` behind other pipelined requests (memcached's
 * t/lru-crawler.t): memcached refuses it with "ERROR cannot pipeline other
 * commands before metadump" when it still holds unsent replies to earlier
 * requests of the connection. The same bytes, written the same way, sent to a
 * memcached directly and to one behind memrepl get the same replies (but for
 * the dump's item lines: metadump is no snapshot, an item moving between LRU
 * queues is missed now and then, and times differ between two memcacheds).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { RawClient } from './support/client';
import { sleep } from './support/ports';
import { type SideBySide, startSideBySide } from './support/processes';

const DUMP = 'lru_crawler metadump all\r\n';
const REFUSED = 'ERROR cannot pipeline other commands before metadump\r\n';
/** Long enough for memcached (and memrepl) to have read one write before the next arrives. */
const WRITE_GAP_MS = 250;
const mgs = (n: number) => 'mg foo v\r\n'.repeat(n);
const sets = (n: number, size: number) => Array.from({ length: n }, (_, i) => `set s${i} 0 0 ${size}\r\n${'x'.repeat(size)}\r\n`).join('');
/** A reply ends with the dump's end, or with an error line. */
const COMPLETE = /(?:^|\n)END\r\n$|ERROR[^\n]*\r\n$|BUSY[^\n]*\r\n$/;

/** Sends each write apart (memcached and memrepl read them apart), then reads until the replies are complete and quiet. */
async function exchange(port: number, writes: string[]): Promise<string> {
  const client = await RawClient.connect(port);
  try {
    for (const [i, bytes] of writes.entries()) {
      if (i > 0) await sleep(WRITE_GAP_MS);
      client.send(bytes);
    }
    let reply = '';
    const deadline = Date.now() + 5000;
    for (;;) {
      const more = (await client.settle(150)).toString('latin1');
      reply += more;
      if ((more === '' && COMPLETE.test(reply)) || Date.now() > deadline) return reply;
    }
  } finally {
    client.close();
  }
}

/** Without the dump's item lines. */
const normalized = (reply: string) => reply.replace(/key=[^\n]*\n/g, '');

/**
 * memcached's reply and memrepl's, which must be the same, and memcached's
 * must be the one expected: if it is not, memcached was too busy to read two
 * writes apart (a loaded machine), so try again.
 */
async function sameReplies(rig: SideBySide, writes: string[], refused: boolean): Promise<void> {
  let direct = '';
  for (let attempt = 0; attempt < 3; attempt++) {
    direct = normalized(await exchange(rig.direct.port, writes));
    if (direct.endsWith(REFUSED) === refused) break;
  }
  assert.equal(direct.endsWith(REFUSED), refused, `memcached's own reply: ${JSON.stringify(direct.slice(-200))}`);
  assert.equal(normalized(await exchange(rig.proxy.port, writes)), direct);
}

// [name, the writes, whether memcached refuses the dump]
const CASES: Array<[string, string[], boolean]> = [
  ['metadump alone', [DUMP], false],
  ['behind a meta get in the same write (t/lru-crawler.t)', [mgs(1) + DUMP], true],
  ['behind a noreply set: a silent reply still counts', ['set n 0 0 1 noreply\r\nx\r\n' + DUMP], true],
  ['behind a get, which sends its reply at once', ['get foo\r\n' + DUMP], false],
  ['behind mn, which sends every queued reply', [mgs(2) + 'mn\r\n' + DUMP], false],
  ['behind a meta get after a get', ['get foo\r\n' + mgs(1) + DUMP], true],
  ['the meta get in an earlier write', [mgs(1), DUMP], false],
  ['the dump line split over two writes', [mgs(1) + 'lru_cra', 'wler metadump all\r\n'], false],
  ["a meta get completed by the dump's write", [mgs(1) + 'mg fo', 'o v\r\n' + DUMP], true],
  ['20 meta gets: memcached handles 21 requests per read before sending', [mgs(20) + DUMP], true],
  ['21 meta gets: sent before the dump', [mgs(21) + DUMP], false],
  ['22 meta gets', [mgs(22) + DUMP], true],
  ['41 meta gets: then 20 per go', [mgs(41) + DUMP], false],
  ["a value finished in the dump's write: memcached read it apart and replied", ['set big 0 0 10\r\n12345', '67890\r\n' + DUMP], false],
  ['a meta get after such a value', ['set big 0 0 10\r\n12345', '67890\r\n' + mgs(1) + DUMP], true],
  ['16 KiB of sets in one write: all read at once', [sets(16, 1000) + DUMP], true],
  ['past 16 KiB: memcached reads the value that crosses it apart', [sets(17, 1000) + DUMP], false],
  ['past 16 KiB, then another set', [sets(18, 1000) + DUMP], true],
  ["the dump line crossing 16 KiB: memcached sends the set's reply before it reads the rest", [`set w 0 0 16350\r\n${'x'.repeat(16350)}\r\n` + DUMP], false],
  ['a meta get before it, the dump line still crossing 16 KiB', [`set w 0 0 16350\r\n${'x'.repeat(16350)}\r\n` + mgs(1) + DUMP], false],
  ['a meta get crossing 16 KiB, then the dump', [`set w 0 0 16361\r\n${'x'.repeat(16361)}\r\n` + mgs(1) + DUMP], true],
  ['a refused dump is a reply like any other', [mgs(1) + DUMP + DUMP], true],
  ['lru_crawler metadump without a class, behind a request', [mgs(1) + 'lru_crawler metadump\r\n'], false],
  ['lru_crawler metadump with a slab class, behind a request', [mgs(1) + 'lru_crawler metadump 1\r\n'], true],
];

describe('lru_crawler metadump pipelined behind other requests, as memcached answers it', () => {
  let rig: SideBySide;
  before(async () => {
    rig = await startSideBySide();
    for (const port of [rig.direct.port, rig.proxy.port]) await exchange(port, ['set foo 0 0 1\r\nx\r\n']);
  });
  after(() => rig?.stop());

  for (const [name, writes, refused] of CASES) {
    it(name, () => sameReplies(rig, writes, refused));
  }
});

describe('lru_crawler metadump pipelined, memcached run with -R 5', () => {
  let rig: SideBySide;
  before(async () => {
    rig = await startSideBySide(['-R', '5']);
    for (const port of [rig.direct.port, rig.proxy.port]) await exchange(port, ['set foo 0 0 1\r\nx\r\n']);
  });
  after(() => rig?.stop());

  for (const [count, refused] of [
    [5, true],
    [6, false],
    [7, true],
    [11, false],
  ] as const) {
    it(`${count} meta gets before it`, () => sameReplies(rig, [mgs(count) + DUMP], refused));
  }
});
