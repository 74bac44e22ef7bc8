import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BATCH_BYTES, CommandBatch } from './command-batch';

const record = (op: 'set' | 'add', key: string, value: string, flags = 0) => ({ op, key: Buffer.from(key, 'latin1'), value: Buffer.from(value), flags });

test('stores as quiet ms in the order written, with commands built elsewhere in between, and counts them by op', () => {
  const batch = new CommandBatch();
  batch.store(record('set', 'a', 'v1', 7), 30);
  batch.command(Buffer.from('md b q\r\n'), 'delete');
  batch.store(record('add', 'c', 'v2'), 0);
  batch.command(Buffer.from('mn\r\n'), null);
  assert.equal(batch.text().toString('latin1'), 'ms a 2 F7 T30 MS q\r\nv1\r\nmd b q\r\nms c 2 F0 T0 ME q\r\nv2\r\nmn\r\n');
  assert.deepEqual(
    [...batch.sent],
    [
      ['set', 1],
      ['delete', 1],
      ['add', 1],
    ],
  );
});

test('a key the text protocol cannot carry goes in base64; binary requests are kept apart', () => {
  const batch = new CommandBatch();
  batch.store(record('set', 'a b', 'v'), 0);
  batch.binaryCommand(Buffer.alloc(24, 1), 'touch');
  assert.match(batch.text().toString('latin1'), new RegExp(`^ms ${Buffer.from('a b').toString('base64')} 1 b`));
  assert.deepEqual([batch.binary.length, batch.binaryBytes], [1, 24]);
  assert.ok(batch.size >= 24);
});

test('values larger than a buffer get a buffer of their own, and the size says the batch is due', () => {
  const batch = new CommandBatch();
  const big = 'x'.repeat(BATCH_BYTES + 10);
  batch.store(record('set', 'small', 'v'), 0);
  batch.store(record('set', 'big', big), 0);
  batch.store(record('set', 'after', 'w'), 0);
  const text = batch.text().toString('latin1');
  assert.ok(text.startsWith('ms small 1 '));
  assert.ok(text.includes(`ms big ${big.length} `) && text.includes(`\r\n${big}\r\n`));
  assert.ok(text.endsWith('\r\nw\r\n'));
  assert.ok(batch.size >= BATCH_BYTES);
});
