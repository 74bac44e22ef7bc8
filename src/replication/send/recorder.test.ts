import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TextReplyParser, type ReplyPart } from '../../protocol/text/reply-parser';
import { recordFromReadBack } from './recorder';

const stamp = { wall: 1000, logical: 2, nodeId: 'a' };
const now = 1_700_000_000_000;
const key = Buffer.from('k');

function reply(text: string): ReplyPart[] {
  const parser = new TextReplyParser();
  parser.push(Buffer.from(text, 'latin1'));
  const parts: ReplyPart[] = [];
  for (let part = parser.next(); part !== null; part = parser.next()) parts.push(part);
  return parts;
}

test('a read-back that found the item ships its value, flags and the middle of its last second', () => {
  const record = recordFromReadBack(key, reply('VA 5 f7 t100\r\nhe\r\no\r\n'), stamp, now);
  assert.equal(record?.op, 'set');
  assert.equal(record.value.toString('latin1'), 'he\r\no');
  assert.equal(record.flags, 7);
  assert.equal(record.expiresAt, now + 99_500);
  assert.deepEqual(record.hlc, { wall: 1000, logical: 2 });
});

test('an item that never expires, a miss, and an error', () => {
  assert.equal(recordFromReadBack(key, reply('VA 1 f0 t-1\r\nx\r\n'), stamp, now)?.expiresAt, null);
  const gone = recordFromReadBack(key, reply('EN\r\n'), stamp, now);
  assert.deepEqual([gone?.op, gone?.expiresAt], ['delete', null]);
  assert.equal(recordFromReadBack(key, reply('SERVER_ERROR out of memory\r\n'), stamp, now), null);
});

test('a stale item (md … I) ships whole as an invalidate, so the peer marks this value, not its own', () => {
  const record = recordFromReadBack(key, reply('VA 2 f3 t50 c9 X W\r\nv0\r\n'), stamp, now);
  assert.deepEqual([record?.op, record?.value.toString(), record?.flags, record?.expiresAt], ['invalidate', 'v0', 3, now + 49_500]);
});
