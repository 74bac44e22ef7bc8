import assert from 'node:assert/strict';
import { test } from 'node:test';
import { KeySpool, newSpooledKey, SPOOL_KEY_MAX } from './key-spool';

function drain(spool: KeySpool): Array<[string, number, number, boolean]> {
  const out: Array<[string, number, number, boolean]> = [];
  const key = newSpooledKey();
  while (spool.shift(key)) out.push([key.buf.toString('latin1', key.start, key.end), key.hash, key.size, key.binary]);
  return out;
}

test('keys come out in the order they went in, with their hash, size and binary mark', () => {
  const spool = new KeySpool();
  const line = Buffer.from('xxkey:1yy');
  spool.push(7, 100, line, 2, 7, false);
  spool.push(0xffffffff, 2 ** 20, Buffer.from('a b'), 0, 3, true);
  assert.equal(spool.count, 2);
  assert.deepEqual(drain(spool), [['key:1', 7, 100, false], ['a b', 0xffffffff, 2 ** 20, true]]);
  assert.equal(spool.count, 0);
  assert.equal(spool.bytes, 0);
});

test('many keys across slabs, interleaving pushes and shifts; bytes go back to zero', () => {
  const spool = new KeySpool();
  const key = newSpooledKey();
  let next = 0;
  let expected = 0;
  for (let round = 0; round < 50; round++) {
    for (let i = 0; i < 997; i++, next++) spool.push(next, next, Buffer.from(`k${next}`.padEnd(40 + (next % 200), '.')), 0, 40 + (next % 200), false);
    for (let i = 0; i < 613 && spool.shift(key); i++, expected++) {
      assert.equal(key.hash, expected);
      assert.equal(key.buf.toString('latin1', key.start, key.end), `k${expected}`.padEnd(40 + (expected % 200), '.'));
    }
  }
  while (spool.shift(key)) assert.equal(key.hash, expected++);
  assert.equal(expected, next);
  assert.equal(spool.bytes, 0);
});

test('dropFrom keeps the keys below the bound, in order, and counts what it dropped', () => {
  const spool = new KeySpool();
  for (let i = 0; i < 5000; i++) spool.push((i * 2654435761) >>> 0, i, Buffer.from(`key:${i}`), 0, `key:${i}`.length, false);
  const key = newSpooledKey();
  for (let i = 0; i < 1000; i++) spool.shift(key);
  const bound = 2 ** 31;
  const bytesBefore = spool.bytes;
  const dropped = spool.dropFrom(bound);
  const left = drain(spool);
  const wanted = Array.from({ length: 4000 }, (_, j) => j + 1000).filter((i) => (i * 2654435761) >>> 0 < bound);
  assert.deepEqual(left.map(([k]) => k), wanted.map((i) => `key:${i}`));
  assert.equal(dropped, 4000 - wanted.length);
  assert.ok(dropped > 1000 && bytesBefore > 0);
});

test('dropFrom on an empty spool, and dropping everything, leave a spool that works', () => {
  const spool = new KeySpool();
  assert.equal(spool.dropFrom(0), 0);
  for (let i = 0; i < 3000; i++) spool.push(10 + (i % 2), i, Buffer.from(`key:${i}`), 0, `key:${i}`.length, false);
  assert.equal(spool.dropFrom(11), 1500);
  assert.equal(spool.dropFrom(0), 1500);
  assert.deepEqual([spool.count, spool.bytes], [0, 0]);
  spool.push(1, 1, Buffer.from('again'), 0, 5, false);
  assert.deepEqual(drain(spool), [['again', 1, 1, false]]);
});

test('a key longer than a length byte is refused', () => {
  const spool = new KeySpool();
  assert.equal(spool.push(1, 1, Buffer.alloc(SPOOL_KEY_MAX + 1), 0, SPOOL_KEY_MAX + 1, false), false);
  assert.equal(spool.push(1, 1, Buffer.alloc(SPOOL_KEY_MAX, 0x61), 0, SPOOL_KEY_MAX, false), true);
  assert.equal(spool.count, 1);
});
