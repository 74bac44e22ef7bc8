import { test } from 'node:test';
import assert from 'node:assert/strict';
import { flushCount, parseStats, parseStatsText, serializeStats, startedAt } from './stats';
import type { ReplyPart } from './reply-parser';

const part = (line: string): ReplyPart => ({ kind: line === 'END' ? 'end' : 'listing', raw: Buffer.from(`${line}\r\n`), line });

test('parseStats reads STAT lines and ignores the rest', () => {
  const stats = parseStats(['STAT pid 42', 'STAT version 1.6.18', 'STAT libevent 2.1.12-stable', 'END'].map(part));
  assert.equal(stats.get('pid'), '42');
  assert.equal(stats.get('libevent'), '2.1.12-stable');
  assert.equal(stats.size, 3);
});

test('startedAt is time minus uptime, null when either is missing', () => {
  assert.equal(startedAt(parseStats(['STAT uptime 100', 'STAT time 1700000100'].map(part))), 1700000000);
  assert.equal(startedAt(parseStats(['STAT uptime 100'].map(part))), null);
});

test('parseStatsText reads the same from the reply as text', () => {
  const text = 'STAT pid 42\r\nSTAT version 1.6.18\r\nSTAT libevent 2.1.12-stable\r\nSTAT verbosity 0 x\r\nEND\r\n';
  const stats = parseStatsText(text);
  assert.deepEqual(
    [...stats],
    [
      ['pid', '42'],
      ['version', '1.6.18'],
      ['libevent', '2.1.12-stable'],
      ['verbosity', '0 x'],
    ],
  );
});

test('serializeStats writes what parseStats reads, closed by END', () => {
  const reply = serializeStats([
    ['role', 'active'],
    ['lag', 3],
  ]);
  assert.equal(reply.toString('latin1'), 'STAT role active\r\nSTAT lag 3\r\nEND\r\n');
  assert.deepEqual(
    [...parseStatsText(reply.toString('latin1'))],
    [
      ['role', 'active'],
      ['lag', '3'],
    ],
  );
  assert.equal(serializeStats([]).toString('latin1'), 'END\r\n');
});

test("flushCount is memcached's cmd_flush and pid; a reply without cmd_flush is an error, not zero", () => {
  assert.deepEqual(flushCount(parseStats(['STAT pid 42', 'STAT cmd_flush 7', 'END'].map(part))), { pid: '42', flushes: 7 });
  assert.throws(() => flushCount(parseStats(['STAT pid 42', 'END'].map(part))), /cmd_flush/);
});
