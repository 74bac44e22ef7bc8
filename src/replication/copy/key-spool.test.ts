import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type FetchBy, KeySpool, newSpooledKey, SPOOL_KEY_MAX } from './key-spool';

function drain(spool: KeySpool): Array<[string, number, number, FetchBy, number]> {
  const out: Array<[string, number, number, FetchBy, number]> = [];
  const key = newSpooledKey();
  while (spool.shift(key)) out.push([key.buf.toString('latin1', key.start, key.end), key.hash, key.size, key.by, key.exp]);
  return out;
}

test('keys come out in the order they went in, with their hash, size and how they are fetched', () => {
  const spool = new KeySpool();
  const line = Buffer.from('xxkey:1yy');
  spool.push(7, 100, line, 2, 7, 'text');
  spool.push(0xffffffff, 2 ** 20, Buffer.from('a b'), 0, 3, 'base64', 1795883024);
  assert.equal(spool.count, 2);
  // Only a key fetched by binary keeps the walk's expiry.
  assert.deepEqual(drain(spool), [
    ['key:1', 7, 100, 'text', -1],
    ['a b', 0xffffffff, 2 ** 20, 'base64', -1],
  ]);
  assert.equal(spool.count, 0);
  assert.equal(spool.bytes, 0);
});

test("a key fetched by binary keeps the walk's expiry (never, or unix seconds), in four more bytes than the others take", () => {
  const spool = new KeySpool();
  const long = Buffer.from(`a b ${'k'.repeat(200)}`);
  spool.push(1, 10, long, 0, long.length, 'text');
  const textBytes = spool.bytes;
  spool.push(2, 20, long, 0, long.length, 'binary', 1795883024);
  spool.push(3, 30, long, 0, long.length, 'binary', -1);
  spool.push(4, 40, long, 0, long.length, 'binary', 0);
  assert.equal(spool.bytes, textBytes + 3 * (textBytes + 4));
  assert.deepEqual(
    drain(spool).map(([key, hash, size, by, exp]) => [key === long.toString(), hash, size, by, exp]),
    [
      [true, 1, 10, 'text', -1],
      [true, 2, 20, 'binary', 1795883024],
      [true, 3, 30, 'binary', -1],
      [true, 4, 40, 'binary', 0],
    ],
  );
  assert.equal(spool.bytes, 0);
});

test('many keys across slabs, interleaving pushes and shifts; bytes go back to zero', () => {
  const spool = new KeySpool();
  const key = newSpooledKey();
  let next = 0;
  let expected = 0;
  for (let round = 0; round < 50; round++) {
    for (let i = 0; i < 997; i++, next++)
      spool.push(next, next, Buffer.from(`k${next}`.padEnd(40 + (next % 200), '.')), 0, 40 + (next % 200), next % 3 === 0 ? 'binary' : 'text', next);
    for (let i = 0; i < 613 && spool.shift(key); i++, expected++) {
      assert.equal(key.hash, expected);
      assert.equal(key.buf.toString('latin1', key.start, key.end), `k${expected}`.padEnd(40 + (expected % 200), '.'));
      assert.equal(key.exp, expected % 3 === 0 ? expected : -1);
    }
  }
  while (spool.shift(key)) assert.equal(key.hash, expected++);
  assert.equal(expected, next);
  assert.equal(spool.bytes, 0);
});

test('dropFrom keeps the keys below the bound, in order, and counts what it dropped', () => {
  const spool = new KeySpool();
  // Every other key with an expiry: entries of two lengths.
  for (let i = 0; i < 5000; i++) spool.push((i * 2654435761) >>> 0, i, Buffer.from(`key:${i}`), 0, `key:${i}`.length, i % 2 ? 'binary' : 'text', 1000 + i);
  const key = newSpooledKey();
  for (let i = 0; i < 1000; i++) spool.shift(key);
  const bound = 2 ** 31;
  const bytesBefore = spool.bytes;
  const dropped = spool.dropFrom(bound);
  const left = drain(spool);
  const wanted = Array.from({ length: 4000 }, (_, j) => j + 1000).filter((i) => (i * 2654435761) >>> 0 < bound);
  assert.deepEqual(
    left.map(([k, , size, , exp]) => [k, size, exp]),
    wanted.map((i) => [`key:${i}`, i, i % 2 ? 1000 + i : -1]),
  );
  assert.equal(dropped, 4000 - wanted.length);
  assert.ok(dropped > 1000 && bytesBefore > 0);
});

test('dropFrom on an empty spool, and dropping everything, leave a spool that works', () => {
  const spool = new KeySpool();
  assert.equal(spool.dropFrom(0), 0);
  for (let i = 0; i < 3000; i++) spool.push(10 + (i % 2), i, Buffer.from(`key:${i}`), 0, `key:${i}`.length, i % 3 ? 'text' : 'binary', i);
  assert.equal(spool.dropFrom(11), 1500);
  assert.equal(spool.dropFrom(0), 1500);
  assert.deepEqual([spool.count, spool.bytes], [0, 0]);
  spool.push(1, 1, Buffer.from('again'), 0, 5, 'text');
  assert.deepEqual(drain(spool), [['again', 1, 1, 'text', -1]]);
});

test('a key longer than a length byte is refused', () => {
  const spool = new KeySpool();
  assert.equal(spool.push(1, 1, Buffer.alloc(SPOOL_KEY_MAX + 1), 0, SPOOL_KEY_MAX + 1, 'binary', 5), false);
  assert.equal(spool.push(1, 1, Buffer.alloc(SPOOL_KEY_MAX, 0x61), 0, SPOOL_KEY_MAX, 'binary', 5), true);
  assert.equal(spool.count, 1);
});
