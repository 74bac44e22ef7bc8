import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TailCarry } from './tail-carry';

test('a chunk read whole is scanned in place; an incomplete tail is joined to the next chunk', () => {
  const reader = new TailCarry();
  const first = Buffer.from('one\ntw');
  reader.push(first);
  assert.equal(reader.buf, first, 'nothing carried: the chunk itself');
  reader.pos = 4; // "one\n" consumed
  assert.equal(reader.buffered, 2);
  reader.push(Buffer.from('o\nthree\n'));
  assert.equal(reader.buf.toString(), 'two\nthree\n');
  assert.equal(reader.pos, 0);
  reader.pos = reader.buf.length;
  const next = Buffer.from('four');
  reader.push(next);
  assert.equal(reader.buf, next, 'all consumed: the next chunk itself');
  reader.clear();
  assert.equal(reader.buffered, 0);
});
