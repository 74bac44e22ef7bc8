import { test } from 'node:test';
import assert from 'node:assert/strict';
import { expiresAtFromTtl, PROTOCOL_VERSION, RECORD_OP_CODES, recordFrameBytes, TTL_NEVER, ttlFromExpiresAt, type OutgoingRecord } from './messages';
import {
  serializeAck,
  serializeGoodbye,
  serializeHello,
  serializePing,
  serializeRecord,
  serializeRecords,
  serializeResyncBegin,
  writeRecordFrame,
} from './serializer';

function record(overrides: Partial<OutgoingRecord> = {}): OutgoingRecord {
  return {
    seq: 7,
    hlc: { wall: 1_700_000_000_000, logical: 3 },
    op: 'set',
    key: Buffer.from('foo'),
    flags: 0xdeadbeef,
    value: Buffer.from('bar!'),
    delay: 0,
    expiresAt: null,
    ...overrides,
  };
}

test('RECORD layout, byte for byte', () => {
  const now = 1_700_000_000_000;
  const buf = serializeRecord(record({ expiresAt: now + 30_000 }), now);
  const expected = Buffer.concat([
    Buffer.from([0, 0, 0, 1 + 51 + 3 + 4]), // length of type + payload
    Buffer.from('R'),
    Buffer.from([0, 0, 0, 0, 0, 0, 0, 7]), // seq
    Buffer.from('0000018bcfe56800', 'hex'), // hlc wall 1_700_000_000_000
    Buffer.from([0, 0, 0, 3]), // hlc logical
    Buffer.from([0]), // op set
    Buffer.from([0, 3]),
    Buffer.from('foo'),
    Buffer.from('deadbeef', 'hex'), // flags
    Buffer.from([0, 0, 0, 0, 0, 0, 0x75, 0x30]), // ttl 30000 ms
    Buffer.from([0, 0, 0, 4]),
    Buffer.from('bar!'),
    Buffer.from([0, 0, 0, 0]), // delay
    Buffer.from('0000018bcfe56800', 'hex'), // sentAt: the sender's clock when written
  ]);
  assert.deepEqual(buf, expected);
  assert.equal(buf.length, recordFrameBytes(3, 4));
});

test('ttl on the wire is what is left of the deadline at the moment of writing', () => {
  const appended = 1_000_000;
  const r = record({ expiresAt: appended + 60_000 });
  const ttlAt = (now: number): number => serializeRecord(r, now).readInt32BE(5 + 27 + 3 + 4);
  assert.equal(ttlAt(appended), 60_000);
  // Sent 45 s late (backlog replay): the peer gets 15 s, not another 60.
  assert.equal(ttlAt(appended + 45_000), 15_000);
  // Expired while waiting: 0, never a negative number that would read as "never".
  assert.equal(ttlAt(appended + 90_000), 0);
});

test('ttl sentinel: never', () => {
  const ttlOf = (buf: Buffer): bigint => buf.readBigInt64BE(5 + 27 + 3);
  assert.equal(ttlOf(serializeRecord(record({ expiresAt: null }), 5)), -1n);
  assert.equal(ttlFromExpiresAt(null, 123), TTL_NEVER);
  assert.equal(ttlFromExpiresAt(1000.2, 500), 501); // rounds up: never expire early
});

test('the receiver turns remaining time into a deadline on its own clock', () => {
  // Sender and receiver clocks disagree by an hour: only the remaining time crosses.
  const senderNow = 10_000_000;
  const receiverNow = senderNow - 3_600_000;
  const ttl = ttlFromExpiresAt(senderNow + 5_000, senderNow);
  assert.equal(expiresAtFromTtl(ttl, receiverNow), receiverNow + 5_000);
  assert.equal(expiresAtFromTtl(TTL_NEVER, receiverNow), null);
  assert.equal(expiresAtFromTtl(0, receiverNow), receiverNow);
});

test('seq and wall beyond 2^32 are written as full u64', () => {
  const buf = serializeRecord(record({ seq: 2 ** 40 + 5 }), 0);
  assert.equal(buf.readBigUInt64BE(5), 2n ** 40n + 5n);
  const max = serializeRecord(record({ seq: Number.MAX_SAFE_INTEGER }), 0);
  assert.equal(max.readBigUInt64BE(5), BigInt(Number.MAX_SAFE_INTEGER));
});

test('serializeRecords concatenates frames in one buffer', () => {
  const a = record({ seq: 1 });
  const b = record({ seq: 2, op: 'delete', value: Buffer.alloc(0) });
  const now = 99;
  assert.deepEqual(serializeRecords([a, b], now), Buffer.concat([serializeRecord(a, now), serializeRecord(b, now)]));
  assert.equal(serializeRecords([], now).length, 0);
});

test('HELLO starts with magic and version, then JSON without absent fields', () => {
  const buf = serializeHello({ cluster: 'c', nodeId: 'n', runId: 'r', lastApplied: null });
  assert.equal(buf.readUInt32BE(0), buf.length - 4);
  assert.equal(buf.toString('latin1', 4, 9), 'HMREP');
  assert.equal(buf.readUInt16BE(9), PROTOCOL_VERSION);
  assert.equal(buf.toString('utf8', 11), '{"cluster":"c","nodeId":"n","runId":"r","lastApplied":null}');
});

test('ACK, PING and JSON frames', () => {
  assert.deepEqual(serializeAck(258), Buffer.from([0, 0, 0, 9, 0x41, 0, 0, 0, 0, 0, 0, 1, 2]));
  assert.deepEqual(serializePing(1), Buffer.from([0, 0, 0, 9, 0x50, 0, 0, 0, 0, 0, 0, 0, 1]));
  // With the sender's inbound delay (an i64: a peer whose clock is behind sends a negative one).
  assert.deepEqual(serializePing(1, -2), Buffer.from([0, 0, 0, 17, 0x50, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]));
  assert.equal(serializeGoodbye({ reason: 'bye' }).toString('latin1', 4), 'G{"reason":"bye"}');
  assert.equal(serializeResyncBegin().toString('latin1', 4), 'B{}');
});

test('bad arguments are refused before anything reaches the wire', () => {
  assert.throws(() => serializeRecord(record({ key: Buffer.alloc(251) }), 0), RangeError);
  assert.throws(() => serializeRecord(record({ seq: -1 }), 0), RangeError);
  assert.throws(() => serializeRecord(record({ seq: 2 ** 53 }), 0), RangeError);
  assert.throws(() => serializeRecord(record({ flags: 2 ** 32 }), 0), RangeError);
  assert.throws(() => serializeRecord(record({ hlc: { wall: 1, logical: 1.5 } }), 0), RangeError);
  assert.throws(() => serializeRecord(record({ expiresAt: Number.NaN }), 0), RangeError);
  assert.throws(() => serializeRecord(record({ op: 'increment' as OutgoingRecord['op'] }), 0), TypeError);
  // An incr's value is its delta: decimal digits only.
  assert.throws(() => serializeRecord(record({ op: 'incr', value: Buffer.from('-1') }), 0), RangeError);
  assert.doesNotThrow(() => serializeRecord(record({ op: 'incr', value: Buffer.from('18446744073709551615') }), 0));
  assert.throws(() => serializeRecord(record({ op: 'constructor' as OutgoingRecord['op'] }), 0), TypeError);
  assert.throws(() => serializeAck(-1), RangeError);
  assert.throws(() => serializeHello({ cluster: 'c', nodeId: 'n', runId: 'r', lastApplied: { runId: 'x', seq: 0.5 } }), RangeError);
  // A 250-byte binary key is fine.
  assert.doesNotThrow(() => serializeRecord(record({ key: Buffer.alloc(250, 0xff) }), 0));
});

test('writeRecordFrame from ranges of other buffers is the frame serializeRecord writes', () => {
  const now = 1_700_000_000_000;
  const expected = serializeRecord(record({ op: 'add', seq: 0, expiresAt: now + 1500, value: Buffer.from('value bytes') }), now);
  const reply = Buffer.from('VA 11 kfoo\r\nvalue bytes\r\n');
  const buf = Buffer.alloc(expected.length + 4);
  const end = writeRecordFrame(buf, 2, {
    seq: 0,
    wall: 1_700_000_000_000,
    logical: 3,
    opCode: RECORD_OP_CODES.add,
    flags: 0xdeadbeef,
    ttlMs: 1500,
    delay: 0,
    sentAt: now,
    keySource: reply,
    keyStart: 7,
    keyEnd: 10,
    valueSource: reply,
    valueStart: 12,
    valueEnd: 23,
  });
  assert.equal(end, 2 + expected.length);
  assert.deepEqual(buf.subarray(2, end), expected);
});
