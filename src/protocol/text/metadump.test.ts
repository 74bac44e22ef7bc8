import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  metadumpRequest,
  newMetadumpLine,
  percentDecode,
  scanMetadumpFields,
  scanMetadumpKey,
  scanMetadumpLine,
  walkRefusal,
  type MetadumpLine,
} from './metadump';

function scan(text: string): MetadumpLine {
  const buf = Buffer.from(`junk${text}\n`, 'latin1');
  const out = newMetadumpLine();
  scanMetadumpLine(buf, 4, buf.length - 1, out);
  return out;
}

/** The key of an item line, decoded the way a reader of scanMetadumpLine decodes it. */
function keyOf(text: string): Buffer | null {
  const out = scan(text);
  const raw = Buffer.from(text, 'latin1');
  const [start, end] = [out.keyStart - 4, out.keyEnd - 4];
  return out.encoded ? percentDecode(raw, start, end) : raw.subarray(start, end);
}

test('an item line as memcached 1.6.18 writes it', () => {
  const line = scan('key=a%2520b exp=1795883024 la=1795882924 cas=1 fetch=no cls=1 size=65');
  assert.equal(line.kind, 'item');
  assert.equal(line.encoded, true);
  assert.equal(line.size, 65);
  assert.equal(line.cas, 1);
  assert.equal(line.exp, 1795883024);
  assert.deepEqual(keyOf('key=a%2520b exp=1795883024 la=1795882924 cas=1 fetch=no cls=1 size=65'), Buffer.from('a%20b'));
  const plain = scan('key=resync:0001 exp=-1 la=1 cas=2 fetch=no cls=1 size=163');
  assert.deepEqual([plain.kind, plain.encoded, plain.size, plain.cas, plain.exp], ['item', false, 163, 2, -1]);
  assert.deepEqual(keyOf('key=resync:0001 exp=-1 la=1 cas=2 fetch=no cls=1 size=163'), Buffer.from('resync:0001'));
  assert.deepEqual(keyOf('key=%22q%22 exp=-1 la=1 cas=2 fetch=no cls=1 size=63'), Buffer.from('"q"'));
});

test('END, errors and garbage', () => {
  assert.equal(scan('END\r').kind, 'end');
  assert.equal(scan('END').kind, 'end');
  assert.deepEqual([scan('ERROR metadump not allowed').kind, scan('ERROR metadump not allowed').message], ['error', 'ERROR metadump not allowed']);
  assert.equal(scan('BUSY currently processing crawler request').kind, 'error');
  assert.equal(scan('ENDING').kind, 'error');
  assert.equal(scan('key= exp=1').kind, 'error');
  assert.equal(percentDecode(Buffer.from('%zz')), null);
  assert.equal(percentDecode(Buffer.from('ab%4')), null);
});

test('property: percent-encoding of any bytes decodes back', () => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 1, maxLength: 250 }), (bytes) => {
      const encoded = [...bytes].map((b) => `%${b.toString(16).padStart(2, '0')}`).join('');
      assert.deepEqual(percentDecode(Buffer.from(encoded, 'latin1')), Buffer.from(bytes));
      assert.deepEqual(percentDecode(Buffer.from(encoded.toUpperCase(), 'latin1')), Buffer.from(bytes));
    }),
    { numRuns: 2000 },
  );
});

test('fields wherever they stand, and defaults for absent ones', () => {
  assert.deepEqual(pick(scan('key=a size=70 cas=18446744073709 exp=12')), [70, 18446744073709, 12]);
  assert.deepEqual(pick(scan('key=a exp=-1')), [0, 0, -1]);
  assert.deepEqual(pick(scan('key=a')), [0, 0, -1]);
});

function pick(line: MetadumpLine): [number, number, number] {
  return [line.size, line.cas, line.exp];
}

test('the key alone first, the other fields only when asked for', () => {
  const buf = Buffer.from('key=a%20b exp=-1 la=1 cas=9 fetch=no cls=1 size=70\r', 'latin1');
  const line = newMetadumpLine();
  assert.equal(scanMetadumpKey(buf, 0, buf.length, line), true);
  assert.deepEqual([buf.toString('latin1', line.keyStart, line.keyEnd), line.encoded, line.size], ['a%20b', true, 0]);
  scanMetadumpFields(buf, buf.length, line);
  assert.deepEqual(pick(line), [70, 9, -1]);
  assert.equal(scanMetadumpKey(Buffer.from('END\r'), 0, 4, line), false);
  assert.equal(line.kind, 'end');
  assert.equal(scanMetadumpKey(Buffer.from('BUSY currently processing crawler request\r'), 0, 42, line), false);
  assert.deepEqual([line.kind, line.message], ['error', 'BUSY currently processing crawler request']);
});

test('metadumpRequest: the walk over the hash table or the LRUs', () => {
  assert.equal(metadumpRequest('hash').toString('latin1'), 'lru_crawler metadump hash\r\n');
  assert.equal(metadumpRequest('all').toString('latin1'), 'lru_crawler metadump all\r\n');
});

test("walkRefusal: what each of memcached's refusals of a walk means", () => {
  assert.equal(walkRefusal('BUSY currently processing crawler request'), 'busy');
  assert.equal(walkRefusal('NOTSTARTED'), 'not_started');
  assert.equal(walkRefusal('BADCLASS invalid class id'), 'bad_class');
  assert.equal(walkRefusal('ERROR metadump not allowed'), 'not_allowed');
  assert.equal(walkRefusal('ERROR locked'), 'other');
});
