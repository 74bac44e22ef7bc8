import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TextRequestParser } from '../protocol/text/request-parser';
import { planText } from './text-exchange';

function plan(line: string) {
  const parser = new TextRequestParser({ maxItemSize: 1024 * 1024, maxMultigetLine: 64 * 1024, reqsPerEvent: 20 });
  parser.push(Buffer.from(line, 'latin1'));
  const request = parser.next();
  assert.ok(request);
  return planText(request);
}

const keysOf = (line: string) => plan(line).writeKeys.map((key) => key.toString('latin1'));

test('the keys a request may write are watched in flight: every key of a gat, one key of a write, none of a read', () => {
  assert.deepEqual(keysOf('gat 100 a b c\r\n'), ['a', 'b', 'c']);
  assert.deepEqual(keysOf('gats 0 a\r\n'), ['a']);
  assert.deepEqual(keysOf('touch a 10\r\n'), ['a']);
  assert.deepEqual(keysOf('set a 0 0 1\r\nx\r\n'), ['a']);
  assert.deepEqual(keysOf('mg a T30 v\r\n'), ['a']);
  assert.deepEqual(keysOf('get a b\r\n'), []);
  assert.deepEqual(keysOf('get a\r\n'), []);
  assert.deepEqual(keysOf('mg a v\r\n'), []);
  // A gat whose expiry memcached refuses touches nothing.
  assert.deepEqual(keysOf('gat x a\r\n'), []);
});

test('only flush_all is a flush', () => {
  assert.deepEqual(plan('flush_all\r\n').flush, { delay: 0 });
  assert.deepEqual(plan('flush_all 10 noreply\r\n').flush, { delay: 10 });
  assert.equal(plan('set a 0 0 1\r\nx\r\n').flush, null);
});
