import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Opcode, Status } from '../protocol/binary/messages';
import { BinaryReplyParser } from '../protocol/binary/reply-parser';
import { encodeResponse, errorResponse } from '../protocol/binary/serializer';
import { binaryRefusal, KnownExpiries, needsBinary } from './binary-keys';

test('only keys no meta command can name take the binary path', () => {
  assert.equal(needsBinary(Buffer.from('k'.repeat(250))), false);
  assert.equal(needsBinary(Buffer.from(`a b${'k'.repeat(183)}`)), false); // 186 bytes: base64 fits in 250
  assert.equal(needsBinary(Buffer.from(`a b${'k'.repeat(184)}`)), true);
  assert.equal(needsBinary(Buffer.alloc(250)), true);
});

function packet(bytes: Buffer) {
  const parser = new BinaryReplyParser();
  parser.push(bytes);
  return parser.next()!;
}

test('misses, existing keys and hits are answers, errors are refusals', () => {
  for (const status of [Status.KeyNotFound, Status.KeyExists, Status.NotStored])
    assert.equal(binaryRefusal(packet(errorResponse(Opcode.Delete, 0, status))), null);
  assert.equal(binaryRefusal(packet(encodeResponse({ opcode: Opcode.Touch }))), null);
  assert.match(binaryRefusal(packet(errorResponse(Opcode.Set, 0, Status.OutOfMemory)))!, /status 0x82 Out of memory/);
  assert.match(binaryRefusal(packet(errorResponse(Opcode.Set, 0, Status.TooLarge)))!, /Too large/);
});

test('known expiries: last write wins, the oldest key is forgotten first', () => {
  const expiries = new KnownExpiries(2);
  const [a, b, c] = ['a\0', 'b\0', 'c\0'].map((k) => Buffer.from(k, 'latin1'));
  expiries.note(a, 1000);
  expiries.note(b, null);
  expiries.note(a, 2000); // a is now the most recent
  expiries.note(c, 3000);
  assert.equal(expiries.deadlineOf(a), 2000);
  assert.equal(expiries.deadlineOf(b), undefined);
  assert.equal(expiries.deadlineOf(c), 3000);
  expiries.forget(c);
  assert.equal(expiries.deadlineOf(c), undefined);
  assert.equal(expiries.size, 1);
});
