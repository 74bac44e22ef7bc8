import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { BinaryPacket, Opcode, Status } from './messages';
import { BinaryReplyParser } from './reply-parser';
import { encodeRequest, encodeResponse, storageExtras } from './serializer';

function drain(parser: BinaryReplyParser): BinaryPacket[] {
  const out: BinaryPacket[] = [];
  let packet: BinaryPacket | null;
  while ((packet = parser.next()) !== null) out.push(packet);
  return out;
}

test('frames a get hit into header, extras, key and value, keeping the raw bytes', () => {
  const bytes = encodeResponse({
    opcode: Opcode.GetK,
    opaque: 5,
    cas: 9n,
    extras: storageExtras(3, 0).subarray(0, 4),
    key: Buffer.from('key'),
    value: Buffer.from('value'),
  });
  const parser = new BinaryReplyParser();
  parser.push(bytes);
  const [packet, ...rest] = drain(parser);
  assert.equal(rest.length, 0);
  assert.deepEqual(packet.raw, bytes);
  assert.equal(packet.header.opcode, Opcode.GetK);
  assert.equal(packet.header.status, Status.Success);
  assert.equal(packet.header.opaque, 5);
  assert.equal(packet.header.cas, 9n);
  assert.equal(packet.extras.readUInt32BE(0), 3);
  assert.equal(packet.key.toString(), 'key');
  assert.equal(packet.value.toString(), 'value');
  assert.equal(parser.buffered, 0);
});

test('waits for a whole packet, byte by byte', () => {
  const bytes = Buffer.concat([
    encodeResponse({ opcode: Opcode.Stat, key: Buffer.from('pid'), value: Buffer.from('42') }),
    encodeResponse({ opcode: Opcode.Stat }),
  ]);
  const parser = new BinaryReplyParser();
  const packets: BinaryPacket[] = [];
  for (const byte of bytes) {
    parser.push(Buffer.from([byte]));
    packets.push(...drain(parser));
  }
  assert.deepEqual(
    packets.map((p) => p.key.toString()),
    ['pid', ''],
  );
});

test('refuses bytes memcached could not have sent', () => {
  const parser = new BinaryReplyParser();
  parser.push(encodeRequest({ opcode: Opcode.Get, key: Buffer.from('k') }));
  assert.throws(() => parser.next(), /magic/);
  const text = new BinaryReplyParser();
  text.push(Buffer.from('ERROR\r\nERROR\r\nERROR\r\nERROR\r\n'));
  assert.throws(() => text.next(), /magic/);
});

test('any sequence of responses, split anywhere, comes back packet for packet', () => {
  const response = fc.record({
    opcode: fc.integer({ min: 0, max: 255 }),
    status: fc.integer({ min: 0, max: 0xffff }),
    extras: fc.uint8Array({ maxLength: 20 }),
    key: fc.uint8Array({ maxLength: 40 }),
    value: fc.uint8Array({ maxLength: 200 }),
    opaque: fc.integer({ min: 0, max: 0xffffffff }),
  });
  fc.assert(
    fc.property(fc.array(response, { maxLength: 20 }), fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1 }), (responses, cuts) => {
      const packets = responses.map((r) => encodeResponse({ ...r, extras: Buffer.from(r.extras), key: Buffer.from(r.key), value: Buffer.from(r.value) }));
      const stream = Buffer.concat(packets);
      const parser = new BinaryReplyParser();
      const got: Buffer[] = [];
      for (let at = 0, i = 0; at < stream.length; i++) {
        const size = cuts[i % cuts.length];
        parser.push(stream.subarray(at, at + size));
        at += size;
        got.push(...drain(parser).map((p) => p.raw));
      }
      assert.deepEqual(got, packets);
    }),
  );
});
