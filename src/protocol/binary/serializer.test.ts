import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { decodeRequestHeader, decodeResponseHeader, Opcode, Status } from './messages';
import { arithmeticExtras, encodeRequest, encodeResponse, errorResponse, expiryExtras, storageExtras, withOpcode } from './serializer';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

test('builds a request header in network byte order', () => {
  const packet = encodeRequest({
    opcode: Opcode.Set,
    key: Buffer.from('k'),
    extras: storageExtras(0xdeadbeef, 3600),
    value: Buffer.from('v'),
    opaque: 0x01020304,
    cas: 0x0102030405060708n,
    vbucket: 7,
  });
  assert.deepEqual(
    packet,
    hex(`80 01 0001 08 00 0007 0000000a 01020304 0102030405060708
         deadbeef 00000e10 6b 76`),
  );
});

test('an error response has the shape memcached writes (captured from memcached 1.6.18)', () => {
  // Verbosity (unserved in 1.6) with opaque 1: 0x81 0x1b, status 0x81, body "Unknown command", cas 0.
  const captured = Buffer.concat([hex('81 1b 0000 00 00 0081 0000000f 00000001 0000000000000000'), Buffer.from('Unknown command')]);
  assert.deepEqual(errorResponse(Opcode.Verbosity, 1, Status.UnknownCommand), captured);
  assert.equal(errorResponse(Opcode.SetQ, 2, Status.TooLarge).subarray(24).toString(), 'Too large.');
  assert.equal(errorResponse(Opcode.Get, 2, Status.OutOfMemory, 'upstream unavailable').subarray(24).toString(), 'upstream unavailable');
});

test('withOpcode changes the opcode byte only and leaves the original alone', () => {
  const original = encodeResponse({ opcode: Opcode.Get, opaque: 9, value: Buffer.from('x'), extras: Buffer.alloc(4) });
  const copy = withOpcode(original, Opcode.GetQ);
  assert.equal(original[1], Opcode.Get);
  assert.equal(copy[1], Opcode.GetQ);
  assert.deepEqual(copy.subarray(2), original.subarray(2));
});

test('extras layouts', () => {
  assert.deepEqual(storageExtras(1, 2), hex('00000001 00000002'));
  assert.deepEqual(expiryExtras(0xffffffff), hex('ffffffff'));
  assert.deepEqual(arithmeticExtras(1n, 2n, 3), hex('0000000000000001 0000000000000002 00000003'));
});

test('header fields survive encode → decode', () => {
  fc.assert(
    fc.property(
      fc.record({
        opcode: fc.integer({ min: 0, max: 255 }),
        key: fc.uint8Array({ maxLength: 300 }),
        extras: fc.uint8Array({ maxLength: 255 }),
        value: fc.uint8Array({ maxLength: 300 }),
        opaque: fc.integer({ min: 0, max: 0xffffffff }),
        cas: fc.bigUintN(64),
        code: fc.integer({ min: 0, max: 0xffff }),
        dataType: fc.integer({ min: 0, max: 255 }),
      }),
      (f) => {
        const fields = {
          opcode: f.opcode,
          key: Buffer.from(f.key),
          extras: Buffer.from(f.extras),
          value: Buffer.from(f.value),
          opaque: f.opaque,
          cas: f.cas,
          dataType: f.dataType,
        };
        const request = decodeRequestHeader(encodeRequest({ ...fields, vbucket: f.code }));
        const response = decodeResponseHeader(encodeResponse({ ...fields, status: f.code }));
        for (const header of [request, response]) {
          assert.equal(header.opcode, f.opcode);
          assert.equal(header.keyLength, f.key.length);
          assert.equal(header.extrasLength, f.extras.length);
          assert.equal(header.totalBodyLength, f.key.length + f.extras.length + f.value.length);
          assert.equal(header.opaque, f.opaque);
          assert.equal(header.cas, f.cas);
          assert.equal(header.dataType, f.dataType);
        }
        assert.equal(request.magic, 0x80);
        assert.equal(request.vbucket, f.code);
        assert.equal(response.magic, 0x81);
        assert.equal(response.status, f.code);
      },
    ),
  );
});
