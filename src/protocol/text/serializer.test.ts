import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  META_FETCH_BYTES_MAX,
  META_BASE64_KEY_MAX,
  metaDelete,
  metaInvalidate,
  metaKey,
  metaRead,
  metaReadCas,
  metaSet,
  metaSetBytesMax,
  textSafeKey,
  writeMetaFetch,
  writeMetaFetchBase64,
  writeMetaSet,
  type MetaSetFields,
} from './serializer';

const latin1 = (buf: Buffer) => buf.toString('latin1');

test('metaSet: the ms line memcached reads, flags left out when not given', () => {
  const value = Buffer.from('hello');
  assert.equal(latin1(metaSet(Buffer.from('k'), value, { clientFlags: 5, exptime: 100, mode: 'E', quiet: true })), 'ms k 5 F5 T100 ME q\r\nhello\r\n');
  assert.equal(
    latin1(metaSet(Buffer.from('memrepl:copy-mark'), Buffer.from('-'), { clientFlags: null, exptime: 10, mode: null, quiet: false })),
    'ms memrepl:copy-mark 1 T10\r\n-\r\n',
  );
  assert.equal(
    latin1(metaSet(Buffer.from('k'), Buffer.alloc(0), { clientFlags: 4294967295, exptime: 0, mode: 'S', quiet: true })),
    'ms k 0 F4294967295 T0 MS q\r\n\r\n',
  );
  assert.equal(latin1(metaSet(Buffer.from('k'), value, { clientFlags: 0, exptime: -1, mode: null, quiet: false })), 'ms k 5 F0 T-1\r\nhello\r\n');
});

test('metaSet: a key the tokenizer would split goes in base64, its b after the length', () => {
  const key = Buffer.from('a b\r\n');
  assert.equal(
    latin1(metaSet(key, Buffer.from('v'), { clientFlags: 1, exptime: 2, mode: 'S', quiet: true })),
    `ms ${key.toString('base64')} 1 b F1 T2 MS q\r\nv\r\n`,
  );
});

test('writeMetaSet writes in place at an offset and returns the offset after it', () => {
  const buf = Buffer.alloc(64, 0x2e);
  const end = writeMetaSet(buf, 3, Buffer.from('key'), Buffer.from('xy'), { clientFlags: 7, exptime: 30, mode: 'S', quiet: true });
  assert.equal(latin1(buf.subarray(0, end + 1)), '...ms key 2 F7 T30 MS q\r\nxy\r\n.');
});

const setFields: fc.Arbitrary<MetaSetFields> = fc.record({
  clientFlags: fc.option(fc.nat({ max: 2 ** 32 - 1 })),
  exptime: fc.integer({ min: -1, max: 2 ** 31 - 1 }),
  mode: fc.option(fc.constantFrom('E' as const, 'S' as const)),
  quiet: fc.boolean(),
});

test('property: writeMetaSet writes the ms line of protocol.txt, within metaSetBytesMax', () => {
  const keys = fc.uint8Array({ minLength: 1, maxLength: 250 }).map((bytes) => Buffer.from(bytes));
  fc.assert(
    fc.property(keys, fc.uint8Array({ maxLength: 300 }), setFields, (key, valueBytes, fields) => {
      const value = Buffer.from(valueBytes);
      const { token, flag } = metaKey(key);
      const line =
        `ms ${token} ${value.length}${flag}` +
        (fields.clientFlags === null ? '' : ` F${fields.clientFlags}`) +
        ` T${fields.exptime}` +
        (fields.mode === null ? '' : ` M${fields.mode}`) +
        (fields.quiet ? ' q' : '') +
        '\r\n';
      const expected = Buffer.concat([Buffer.from(line, 'latin1'), value, Buffer.from('\r\n')]);
      const room = metaSetBytesMax(key, value.length);
      const buf = Buffer.alloc(room + 8);
      const end = writeMetaSet(buf, 0, key, value, fields);
      assert.ok(end <= room, `${end} bytes written, ${room} reserved`);
      assert.deepEqual(buf.subarray(0, end), expected);
      assert.deepEqual(metaSet(key, value, fields), expected);
      if (textSafeKey(key)) assert.equal(metaSetBytesMax(key, value.length, true), room);
    }),
  );
});

test('metaRead and metaReadCas: mg with the flags replication reads', () => {
  assert.equal(latin1(metaRead(Buffer.from('k'))), 'mg k v f t u\r\n');
  assert.equal(latin1(metaRead(Buffer.from('a b'))), `mg ${Buffer.from('a b').toString('base64')} b v f t u\r\n`);
  assert.equal(latin1(metaReadCas(Buffer.from('memrepl:copy-mark'))), 'mg memrepl:copy-mark c\r\n');
  assert.equal(latin1(metaDelete(Buffer.from('memrepl:copy-mark'), true)), 'md memrepl:copy-mark q\r\n');
  assert.equal(latin1(metaRead(Buffer.from('k'), { cas: true })), 'mg k v f t u c\r\n');
  assert.equal(latin1(metaDelete(Buffer.from('k'), true, 42)), 'md k C42 q\r\n');
  assert.equal(latin1(metaInvalidate(Buffer.from('k'), true)), 'md k I q\r\n');
  assert.equal(latin1(metaInvalidate(Buffer.from('a b'), false, 7)), `md ${Buffer.from('a b').toString('base64')} b I C7\r\n`);
});

test('writeMetaFetch and writeMetaFetchBase64: a full copy fetch of part of a buffer, in place', () => {
  const src = Buffer.from('xxkeyxx');
  const buf = Buffer.alloc(64, 0x2e);
  let end = writeMetaFetch(buf, 1, src, 2, 5);
  assert.equal(latin1(buf.subarray(0, end + 1)), '.mg key v f t u c k q\r\n.');
  buf.fill(0x2e);
  end = writeMetaFetchBase64(buf, 1, Buffer.from('x a\nb'), 1, 5, 12);
  assert.equal(latin1(buf.subarray(0, end + 1)), `.mg ${Buffer.from(' a\nb').toString('base64')} b v f t u c O12 q\r\n.`);
});

test('the longest fetches fit META_FETCH_BYTES_MAX', () => {
  const buf = Buffer.alloc(META_FETCH_BYTES_MAX);
  assert.ok(writeMetaFetch(buf, 0, Buffer.alloc(250, 0x61), 0, 250) <= META_FETCH_BYTES_MAX);
  const key = Buffer.alloc(META_BASE64_KEY_MAX, 0x20);
  assert.ok(writeMetaFetchBase64(buf, 0, key, 0, key.length, 2 ** 32 - 1) <= META_FETCH_BYTES_MAX);
});
