import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TextRequestParser } from './request-parser';

const DUMP = 'lru_crawler metadump all\r\n';

/** Feeds the chunks as separate reads; returns behindUnsentReplies of the last request framed (the dump). */
function dumpBehind(chunks: string[], reqsPerEvent = 20): boolean {
  const parser = new TextRequestParser({ maxItemSize: 1024 * 1024, maxMultigetLine: 4 * 1024 * 1024, reqsPerEvent });
  let last = null;
  for (const chunk of chunks) {
    parser.push(Buffer.from(chunk, 'latin1'));
    for (let request = parser.next(); request !== null; request = parser.next()) last = request;
  }
  assert.equal(last?.type, 'other');
  return last.type === 'other' && last.behindUnsentReplies;
}

const mgs = (n: number) => 'mg foo v\r\n'.repeat(n);
const sets = (n: number, size: number) => Array.from({ length: n }, (_, i) => `set s${i} 0 0 ${size}\r\n${'x'.repeat(size)}\r\n`).join('');

test('replies queued earlier in the same read put a request behind them', () => {
  assert.equal(dumpBehind([DUMP]), false);
  assert.equal(dumpBehind([mgs(1) + DUMP]), true);
  assert.equal(dumpBehind(['set n 0 0 1 noreply\r\nx\r\n' + DUMP]), true, 'silent replies count');
  assert.equal(dumpBehind(['ms n 1 q\r\nx\r\n' + DUMP]), true, 'quiet ones too');
  assert.equal(dumpBehind([mgs(1) + DUMP + DUMP]), true, 'a refused dump is a reply');
});

test('memcached sends what it queued when it reads again, after get and mn, and after reqs_per_event requests', () => {
  assert.equal(dumpBehind([mgs(1), DUMP]), false);
  assert.equal(dumpBehind([mgs(1) + 'lru_cra', 'wler metadump all\r\n']), false);
  assert.equal(dumpBehind([mgs(1) + 'mg fo', 'o v\r\n' + DUMP]), true);
  assert.equal(dumpBehind(['get foo\r\n' + DUMP]), false);
  assert.equal(dumpBehind(['gat 10 foo bar\r\n' + DUMP]), false);
  assert.equal(dumpBehind([mgs(3) + 'mn\r\n' + DUMP]), false);
  assert.equal(dumpBehind(['get foo\r\n' + mgs(1) + DUMP]), true);
  assert.equal(dumpBehind([`get ${'k'.repeat(251)}\r\n` + DUMP]), true, 'its error stays queued');
  for (const [count, behind] of [
    [20, true],
    [21, false],
    [22, true],
    [40, true],
    [41, false],
    [61, false],
  ] as const) {
    assert.equal(dumpBehind([mgs(count) + DUMP]), behind, `${count} meta gets`);
  }
  for (const [count, behind] of [
    [5, true],
    [6, false],
    [10, true],
    [11, false],
  ] as const) {
    assert.equal(dumpBehind([mgs(count) + DUMP], 5), behind, `${count} meta gets, -R 5`);
  }
});

test('a data block past what memcached read is read apart: its reply is sent before the next request', () => {
  assert.equal(dumpBehind(['set big 0 0 10\r\n12345', '67890\r\n' + DUMP]), false);
  assert.equal(dumpBehind(['set big 0 0 10\r\n12345', '67890\r\n' + mgs(1) + DUMP]), true);
  assert.equal(dumpBehind(['ms big 10\r\n12345', '67890\r\n' + DUMP]), false);
  // memcached reads 16 KiB at a time: the 17th 1000-byte value crosses it.
  assert.equal(dumpBehind([sets(16, 1000) + DUMP]), true);
  assert.equal(dumpBehind([sets(17, 1000) + DUMP]), false);
  assert.equal(dumpBehind([sets(18, 1000) + DUMP]), true);
  // A value over the item size limit is discarded the same way.
  assert.equal(dumpBehind([`set huge 0 0 2000000\r\n${'v'.repeat(2_000_000)}\r\n` + DUMP]), false);
});

test("a line crossing memcached's read is handled after a new read from its start", () => {
  // 17 + 16352 bytes: the dump line starts at 16369 and crosses the first 16 KiB read.
  const set = `set w 0 0 16350\r\n${'x'.repeat(16350)}\r\n`;
  assert.equal(dumpBehind([set + DUMP]), false);
  assert.equal(dumpBehind([set + mgs(1) + DUMP]), false, 'the meta get still fits: the dump crosses');
  // 17 + 16363 bytes: the meta get crosses, and its reply is queued when the dump is reached.
  assert.equal(dumpBehind([`set w 0 0 16361\r\n${'x'.repeat(16361)}\r\n` + mgs(1) + DUMP]), true);
});
