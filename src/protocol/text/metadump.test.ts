import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { parseMetadumpLine, percentDecode } from './metadump';

test('an item line as memcached 1.6.18 writes it', () => {
  const parsed = parseMetadumpLine('key=a%2520b exp=1795883024 la=1795882924 cas=1 fetch=no cls=1 size=65');
  assert.deepEqual(parsed, { type: 'item', item: { key: Buffer.from('a%20b'), exp: 1795883024, size: 65 } });
  assert.deepEqual(parseMetadumpLine('key=%22q%22 exp=-1 la=1 cas=2 fetch=no cls=1 size=63'), {
    type: 'item', item: { key: Buffer.from('"q"'), exp: -1, size: 63 },
  });
});

test('END, errors and garbage', () => {
  assert.deepEqual(parseMetadumpLine('END\r'), { type: 'end' });
  assert.deepEqual(parseMetadumpLine('ERROR metadump not allowed'), { type: 'error', message: 'ERROR metadump not allowed' });
  assert.equal(parseMetadumpLine('BUSY currently processing crawler request').type, 'error');
  assert.equal(parseMetadumpLine('key=%zz exp=1').type, 'error');
});

test('property: percent-encoding of any bytes decodes back', () => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 1, maxLength: 250 }), (bytes) => {
      const encoded = [...bytes].map((b) => `%${b.toString(16).padStart(2, '0')}`).join('');
      assert.deepEqual(percentDecode(encoded), Buffer.from(bytes));
    }),
    { numRuns: 2000 },
  );
});
