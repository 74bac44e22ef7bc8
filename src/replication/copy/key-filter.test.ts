import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { KeyFilter } from './key-filter';

test('every key added is found, also inside a larger buffer', () => {
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ minLength: 1, maxLength: 250 }), { minLength: 1, maxLength: 200 }), (keys) => {
      const filter = new KeyFilter(keys.length, 1 << 20);
      for (const key of keys) filter.add(Buffer.from(key));
      for (const key of keys) {
        const framed = Buffer.concat([Buffer.from('xx'), key, Buffer.from('yy')]);
        assert.ok(filter.mayHave(framed, 2, 2 + key.length));
      }
    }),
  );
});

test('false positives stay rare at the expected size, and bounded memory past it', () => {
  const n = 200_000;
  const filter = new KeyFilter(n, 64 * 1024 * 1024);
  for (let i = 0; i < n; i++) filter.add(Buffer.from(`resync:${String(i).padStart(25, '0')}`));
  let falsePositives = 0;
  for (let i = n; i < 2 * n; i++) if (filter.mayHave(Buffer.from(`resync:${String(i).padStart(25, '0')}`))) falsePositives++;
  assert.ok(falsePositives / n < 5e-4, `false positive rate ${falsePositives / n}`);
  assert.ok(new KeyFilter(100_000_000, 32 * 1024 * 1024).bytes <= 32 * 1024 * 1024);
  assert.ok(new KeyFilter(0, 32 * 1024 * 1024).bytes > 0);
});
