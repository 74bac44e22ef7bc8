import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import fc from 'fast-check';
import { spaceField, TextReplyParser } from './reply-parser';

test('spaceField picks the same field as split(" ")', () => {
  const line = fc.array(fc.constantFrom(' ', 'a', '1', 'VALUE', ''), { maxLength: 12 }).map((parts) => parts.join(''));
  fc.assert(
    fc.property(line, fc.nat(5), (text, index) => {
      assert.equal(spaceField(text, index), text.split(' ')[index]);
    }),
  );
});

test('frames VALUE, VA and listing parts', () => {
  const parser = new TextReplyParser();
  parser.push(Buffer.from('VALUE k 0 3\r\nabc\r\nEND\r\nVA 2 t\r\nhi\r\nSTAT pid 1\r\nVALUE k 0 \r\n\r\n'));
  const parts = [];
  for (let part; (part = parser.next()) !== null;) parts.push([part.kind, part.raw.toString()]);
  assert.deepEqual(parts, [
    ['value', 'VALUE k 0 3\r\nabc\r\n'],
    ['end', 'END\r\n'],
    ['end', 'VA 2 t\r\nhi\r\n'],
    ['listing', 'STAT pid 1\r\n'],
    ['value', 'VALUE k 0 \r\n\r\n'],
  ]);
  parser.push(Buffer.from('VALUE k 0 x\r\n'));
  assert.throws(() => parser.next(), /malformed value header/);
});

test('a VA line without a length memcached could have sent', () => {
  for (const line of ['VA x', 'VA 3x', 'VA -1', 'VA ']) {
    const parser = new TextReplyParser();
    parser.push(Buffer.from(`${line}\r\nabc\r\n`));
    assert.throws(() => parser.next(), /malformed value header/, line);
  }
});
