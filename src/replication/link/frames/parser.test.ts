import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  FrameError,
  PROTOCOL_MAGIC,
  PROTOCOL_VERSION,
  RECORD_OP_CODES,
  RECORD_OPS,
  RECORD_FIXED_BYTES,
  recordFrameBytes,
  ttlFromExpiresAt,
  type Frame,
  type Hello,
  type OutgoingRecord,
  type RecordFrame,
} from './messages';
import { FrameParser } from './parser';
import {
  newRecordFrameFields,
  serializeAck,
  serializeAuth,
  serializeFullCopyRequest,
  serializeGoodbye,
  serializeHello,
  serializePing,
  serializeRecord,
  serializeResyncBegin,
  serializeResyncEnd,
  writeRecordFrame,
} from './serializer';

const MAX = 64 * 1024;

/** A set record numbered 1 that never expires. */
const setRecord = (key: Buffer, value: Buffer): OutgoingRecord => ({
  seq: 1,
  hlc: { wall: 1, logical: 0 },
  op: 'set',
  key,
  flags: 0,
  value,
  delay: 0,
  expiresAt: null,
});

/** A HELLO payload's magic and this version, for hand-made bodies. */
const HELLO_HEAD = Buffer.concat([PROTOCOL_MAGIC, Buffer.from([PROTOCOL_VERSION >> 8, PROTOCOL_VERSION & 0xff])]);

function parseAll(bytes: Buffer | Buffer[], maxFrameBytes = MAX): Frame[] {
  const parser = new FrameParser({ maxFrameBytes });
  const frames: Frame[] = [];
  for (const chunk of Array.isArray(bytes) ? bytes : [bytes]) {
    parser.push(chunk);
    for (let f = parser.next(); f !== null; f = parser.next()) frames.push(f);
  }
  assert.equal(parser.buffered, 0, 'no bytes left over');
  return frames;
}

function parseOne(bytes: Buffer): Frame {
  const frames = parseAll(bytes);
  assert.equal(frames.length, 1);
  return frames[0];
}

function expectFrameError(bytes: Buffer, code?: FrameError['code'], maxFrameBytes = MAX): FrameError {
  const parser = new FrameParser({ maxFrameBytes });
  parser.push(bytes);
  try {
    while (parser.next() !== null);
  } catch (err) {
    assert.ok(err instanceof FrameError, `expected FrameError, got ${String(err)}`);
    if (code) assert.equal(err.code, code, err.message);
    return err;
  }
  assert.fail('no FrameError');
}

/** Frame bytes with a given type byte and payload. */
function rawFrame(type: number, payload: Buffer): Buffer {
  const header = Buffer.alloc(5);
  header.writeUInt32BE(payload.length + 1, 0);
  header[4] = type;
  return Buffer.concat([header, payload]);
}

// ---------------------------------------------------------------- arbitraries

const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
const bytes = (maxLength: number): fc.Arbitrary<Buffer> => fc.uint8Array({ maxLength }).map((a) => Buffer.from(a));
const seqArb = fc.oneof(fc.nat({ max: 1000 }), u32, fc.maxSafeNat());

/** An incr's or decr's value: a u64's decimal digits, the only value the parser takes for them. */
const deltaArb = fc.bigUintN(64).map((n) => Buffer.from(String(n), 'latin1'));
/** Records of every op, with a value each op can carry. */
const withValueFor = <T extends { op: string; value: Buffer }>(arb: fc.Arbitrary<T>): fc.Arbitrary<T> =>
  fc.tuple(arb, deltaArb).map(([r, delta]) => (r.op === 'incr' || r.op === 'decr' ? { ...r, value: delta } : r));

const recordArb: fc.Arbitrary<OutgoingRecord> = withValueFor(
  fc.record({
    seq: seqArb,
    hlc: fc.record({ wall: fc.oneof(fc.nat({ max: 2 ** 45 }), fc.maxSafeNat()), logical: u32 }),
    op: fc.constantFrom(...RECORD_OPS),
    key: bytes(250),
    flags: u32,
    value: fc.oneof(bytes(64), bytes(4000)),
    delay: u32,
    expiresAt: fc.oneof(fc.constant(null), fc.integer({ min: 0, max: 2 ** 45 })),
  }),
);
const nowArb = fc.integer({ min: 0, max: 2 ** 45 });

/** Node ids, cluster names and run ids as the parser accepts them. */
const identifierArb = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/);
const hex256Arb = fc.stringMatching(/^[0-9a-f]{64}$/);

const helloArb: fc.Arbitrary<Hello> = fc.record(
  {
    cluster: identifierArb,
    nodeId: identifierArb,
    runId: identifierArb,
    lastApplied: fc.option(fc.record({ runId: identifierArb, seq: fc.maxSafeNat() }), { nil: null }),
    nonce: hex256Arb,
    time: fc.maxSafeNat(),
    lastSeq: fc.maxSafeNat(),
    maxFrameBytes: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
    pingInbound: fc.boolean(),
  },
  { requiredKeys: ['cluster', 'nodeId', 'runId', 'lastApplied'] },
);

/** Any frame, with the bytes the serializer makes of it and the frame the parser should return. */
const frameArb: fc.Arbitrary<{ bytes: Buffer; expected: Frame }> = fc.oneof(
  fc.tuple(recordArb, nowArb).map(([r, now]) => ({ bytes: serializeRecord(r, now), expected: received(r, now) })),
  helloArb.map((h) => ({ bytes: serializeHello(h), expected: { type: 'hello' as const, version: PROTOCOL_VERSION, ...h } })),
  fc.maxSafeNat().map((seq) => ({ bytes: serializeAck(seq), expected: { type: 'ack' as const, seq } })),
  fc.maxSafeNat().map((time) => ({ bytes: serializePing(time), expected: { type: 'ping' as const, time } })),
  fc.tuple(fc.maxSafeNat(), fc.maxSafeInteger()).map(([time, inboundMs]) => ({
    bytes: serializePing(time, inboundMs),
    expected: { type: 'ping' as const, time, inboundMs },
  })),
  fc.record({ reason: fc.string(), items: fc.maxSafeNat() }, { requiredKeys: [] }).map((info) => ({
    bytes: serializeResyncBegin(info),
    expected: { type: 'resyncBegin' as const, ...info },
  })),
  fc.record({ reason: fc.string(), items: fc.maxSafeNat() }, { requiredKeys: [] }).map((info) => ({
    bytes: serializeResyncEnd(info),
    expected: { type: 'resyncEnd' as const, ...info },
  })),
  fc.record({ reason: fc.fullUnicodeString(), lastSeq: fc.maxSafeNat(), overwrite: fc.boolean() }, { requiredKeys: ['reason'] }).map((request) => ({
    bytes: serializeFullCopyRequest(request),
    expected: { type: 'fullCopyRequest' as const, ...request },
  })),
  fc.fullUnicodeString().map((reason) => ({ bytes: serializeGoodbye({ reason }), expected: { type: 'goodbye' as const, reason } })),
  hex256Arb.map((proof) => ({ bytes: serializeAuth({ proof }), expected: { type: 'auth' as const, proof } })),
);

function received(r: OutgoingRecord, now: number): RecordFrame {
  const { expiresAt, ...fields } = r;
  return { type: 'record', ...fields, ttlMs: ttlFromExpiresAt(expiresAt, now), sentAt: now };
}

// ---------------------------------------------------------------- round trips

test('property: every RECORD round-trips, with the remaining ttl', () => {
  fc.assert(
    fc.property(recordArb, nowArb, (r, now) => {
      const frame = parseOne(serializeRecord(r, now));
      assert.deepEqual(frame, received(r, now));
      if (frame.type === 'record' && typeof r.expiresAt === 'number') {
        assert.equal(frame.ttlMs, Math.max(0, r.expiresAt - now));
      }
    }),
    { numRuns: 5000 },
  );
});

test('property: writeRecordFrame round-trips every RECORD field, from ranges of other buffers', () => {
  // Every field drawn on its own (sentAt apart from wall, delay and ttl on any op), so
  // two fields swapped in the serializer or the parser cannot cancel out.
  const fieldsArb = withValueFor(
    fc.record({
      seq: seqArb,
      wall: fc.maxSafeNat(),
      logical: u32,
      op: fc.constantFrom(...RECORD_OPS),
      flags: u32,
      ttlMs: fc.oneof(fc.integer({ min: -1, max: 2 ** 32 }), fc.integer({ min: 0, max: 2 ** 53 - 1 })),
      delay: u32,
      sentAt: fc.maxSafeNat(),
      key: bytes(250),
      value: fc.oneof(bytes(64), bytes(4000)),
      before: fc.nat({ max: 16 }),
      at: fc.nat({ max: 16 }),
    }),
  );
  // One object refilled for every frame, as the full copy and the serializer use it.
  const fields = newRecordFrameFields();
  fc.assert(
    fc.property(fieldsArb, (f) => {
      // The key and the value inside one larger buffer, neither at its start.
      const source = Buffer.concat([Buffer.alloc(f.before, 0xaa), f.key, Buffer.alloc(3, 0xbb), f.value, Buffer.alloc(2, 0xcc)]);
      fields.seq = f.seq;
      fields.wall = f.wall;
      fields.logical = f.logical;
      fields.opCode = RECORD_OP_CODES[f.op];
      fields.flags = f.flags;
      fields.ttlMs = f.ttlMs;
      fields.delay = f.delay;
      fields.sentAt = f.sentAt;
      fields.keySource = source;
      fields.keyStart = f.before;
      fields.keyEnd = f.before + f.key.length;
      fields.valueSource = source;
      fields.valueStart = fields.keyEnd + 3;
      fields.valueEnd = fields.valueStart + f.value.length;
      const buf = Buffer.alloc(f.at + recordFrameBytes(f.key.length, f.value.length));
      assert.equal(writeRecordFrame(buf, f.at, fields), buf.length);
      const expected: RecordFrame = {
        type: 'record',
        seq: f.seq,
        hlc: { wall: f.wall, logical: f.logical },
        op: f.op,
        key: f.key,
        flags: f.flags,
        ttlMs: f.ttlMs,
        value: f.value,
        delay: f.delay,
        sentAt: f.sentAt,
      };
      assert.deepEqual(parseOne(buf.subarray(f.at)), expected);
    }),
    { numRuns: 2000 },
  );
});

test('property: every frame type round-trips, alone and back to back', () => {
  fc.assert(
    fc.property(fc.array(frameArb, { minLength: 1, maxLength: 12 }), (frames) => {
      for (const f of frames) assert.deepEqual(parseOne(f.bytes), f.expected);
      assert.deepEqual(
        parseAll(Buffer.concat(frames.map((f) => f.bytes))),
        frames.map((f) => f.expected),
      );
    }),
    { numRuns: 3000 },
  );
});

test('property: a stream cut into arbitrary chunks parses the same', () => {
  fc.assert(
    fc.property(fc.array(frameArb, { minLength: 1, maxLength: 8 }), fc.array(fc.nat(), { maxLength: 20 }), (frames, cuts) => {
      const stream = Buffer.concat(frames.map((f) => f.bytes));
      const points = [...new Set(cuts.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b);
      const chunks: Buffer[] = [];
      let from = 0;
      for (const p of [...points, stream.length]) {
        chunks.push(stream.subarray(from, p));
        from = p;
      }
      assert.deepEqual(
        parseAll(chunks),
        frames.map((f) => f.expected),
      );
    }),
    { numRuns: 2000 },
  );
});

test('one frame of every type, split at every byte boundary, and byte by byte', () => {
  const frames: Buffer[] = [
    serializeHello({ cluster: 'prod', nodeId: 'a', runId: 'r1', lastApplied: { runId: 'r0', seq: 41 }, nonce: 'ab'.repeat(32) }),
    serializeRecord(
      { seq: 1, hlc: { wall: 5, logical: 6 }, op: 'set', key: Buffer.from([0, 1, 0xff]), flags: 9, value: Buffer.from('v\r\nalue'), delay: 0, expiresAt: 1000 },
      400,
    ),
    serializeRecord(
      { seq: 0, hlc: { wall: 5, logical: 7 }, op: 'flush', key: Buffer.alloc(0), flags: 0, value: Buffer.alloc(0), delay: 30, expiresAt: null },
      400,
    ),
    serializeAck(1),
    serializePing(123456789),
    serializeResyncBegin({ reason: 'peer restarted', items: 10 }),
    serializeResyncEnd({ items: 10 }),
    serializeFullCopyRequest({ reason: 'memcached restarted' }),
    serializeGoodbye({ reason: 'shutdown' }),
    serializeAuth({ proof: 'cd'.repeat(32) }),
  ];
  const stream = Buffer.concat(frames);
  const whole = parseAll(stream);
  assert.equal(whole.length, frames.length);
  assert.deepEqual(
    whole.map((f) => f.type),
    ['hello', 'record', 'record', 'ack', 'ping', 'resyncBegin', 'resyncEnd', 'fullCopyRequest', 'goodbye', 'auth'],
  );
  for (let i = 0; i <= stream.length; i++) {
    assert.deepEqual(parseAll([stream.subarray(0, i), stream.subarray(i)]), whole, `split at ${i}`);
  }
  const bytewise: Buffer[] = [];
  for (let i = 0; i < stream.length; i++) bytewise.push(stream.subarray(i, i + 1));
  assert.deepEqual(parseAll(bytewise), whole);
});

// ---------------------------------------------------------------- limits

test('an oversized length is refused from the 4-byte header alone', () => {
  const parser = new FrameParser({ maxFrameBytes: 1000 });
  const header = Buffer.alloc(4);
  header.writeUInt32BE(1000 + 2, 0); // type byte + 1001 bytes of payload
  parser.push(header.subarray(0, 3));
  assert.equal(parser.next(), null);
  parser.push(header.subarray(3));
  assert.throws(
    () => parser.next(),
    (err: unknown) => err instanceof FrameError && err.code === 'too-large',
  );
  // Sticky: the stream lost its framing, and nothing more is buffered.
  parser.push(Buffer.alloc(5000));
  assert.equal(parser.buffered, 0);
  assert.throws(() => parser.next(), FrameError);
});

test('a payload of exactly maxFrameBytes is accepted', () => {
  const r = setRecord(Buffer.from('k'), Buffer.alloc(100));
  const buf = serializeRecord(r, 0);
  const payload = buf.length - 5;
  assert.equal(parseAll(buf, payload).length, 1);
  expectFrameError(buf, 'too-large', payload - 1);
});

test('while a frame trickles in, the parser never holds more than maxFrameBytes + 5 bytes', () => {
  const maxFrameBytes = 300;
  const r = setRecord(Buffer.from('k'), Buffer.alloc(maxFrameBytes - RECORD_FIXED_BYTES - 1));
  const frame = serializeRecord(r, 0);
  assert.equal(frame.length, maxFrameBytes + 5);
  const parser = new FrameParser({ maxFrameBytes });
  let got = 0;
  for (let i = 0; i < frame.length * 3; i += 7) {
    parser.push(Buffer.concat([frame, frame, frame]).subarray(i, Math.min(i + 7, frame.length * 3)));
    while (parser.next() !== null) got++;
    assert.ok(parser.buffered <= maxFrameBytes + 5);
  }
  assert.equal(got, 3);
});

// ---------------------------------------------------------------- errors

test('HELLO with another version names the version', () => {
  const hello = serializeHello({ cluster: 'c', nodeId: 'n', runId: 'r', lastApplied: null });
  hello.writeUInt16BE(PROTOCOL_VERSION + 1, 9);
  const err = expectFrameError(hello, 'unsupported-version');
  assert.equal(err.peerVersion, PROTOCOL_VERSION + 1);
  assert.match(err.message, new RegExp(`peer speaks protocol version ${PROTOCOL_VERSION + 1}`));
});

test('HELLO with a wrong magic says the peer is not memrepl', () => {
  const hello = serializeHello({ cluster: 'c', nodeId: 'n', runId: 'r', lastApplied: null });
  hello.write('MREQ', 5, 'latin1');
  assert.match(expectFrameError(hello, 'bad-magic').message, /not a memrepl/);
  expectFrameError(rawFrame(0x48, Buffer.from('MR')), 'bad-magic');
  expectFrameError(rawFrame(0x48, Buffer.from('MREP\x00')), 'malformed');
});

test('malformed frames are FrameErrors with a clear message', () => {
  const cases: Array<[Buffer, RegExp]> = [
    [Buffer.from([0, 0, 0, 0]), /length 0/],
    [rawFrame(0x5a, Buffer.alloc(3)), /unknown frame type 0x5a/],
    [rawFrame(0x41, Buffer.alloc(7)), /ACK payload is 7 bytes/],
    [rawFrame(0x50, Buffer.alloc(9)), /PING payload is 9 bytes/],
    [rawFrame(0x50, Buffer.from('00000000000000010020000000000000', 'hex')), /PING inbound delay is beyond 2\^53/],
    [rawFrame(0x41, Buffer.from('0020000000000000', 'hex')), /beyond 2\^53/],
    [rawFrame(0x47, Buffer.from('{"reason":1}')), /GOODBYE reason/],
    [rawFrame(0x47, Buffer.from('{"reason":')), /not UTF-8 JSON/],
    [rawFrame(0x47, Buffer.from('["x"]')), /not a JSON object/],
    [rawFrame(0x47, Buffer.from([0x7b, 0xff, 0x7d])), /not UTF-8 JSON/],
    [rawFrame(0x46, Buffer.from('{}')), /FULL_COPY_REQUEST reason/],
    [rawFrame(0x46, Buffer.from('{"reason":"r","overwrite":"yes"}')), /FULL_COPY_REQUEST overwrite is not a boolean/],
    [rawFrame(0x42, Buffer.from('{"items":-1}')), /items/],
    [rawFrame(0x45, Buffer.from('{"reason":[]}')), /reason/],
    [rawFrame(0x52, Buffer.alloc(42)), /shorter than its fixed fields/],
  ];
  const hello = (body: string): Buffer => rawFrame(0x48, Buffer.concat([HELLO_HEAD, Buffer.from(body)]));
  cases.push(
    [hello('{"cluster":"c","nodeId":"n"}'), /HELLO runId/],
    [hello('{"cluster":"c","nodeId":"n","runId":"r","lastApplied":{"runId":"x","seq":-3}}'), /lastApplied.seq/],
    [hello('{"cluster":"c","nodeId":"n","runId":"r","lastApplied":5}'), /lastApplied is not an object/],
    [hello('{"cluster":"c","nodeId":"n","runId":"r","nonce":7}'), /nonce/],
    [hello('{"cluster":"c","nodeId":"n","runId":"r","pingInbound":1}'), /HELLO pingInbound is not a boolean/],
    // Identifiers and nonces are bound into the handshake's proofs and logged: strictly formed or refused.
    [hello('{"cluster":"c","nodeId":"n","runId":"r","nonce":"abc"}'), /HELLO nonce is not 64 lowercase hex digits/],
    [hello(`{"cluster":"c","nodeId":"n","runId":"r","nonce":"${'AB'.repeat(32)}"}`), /HELLO nonce is not 64 lowercase hex digits/],
    [hello(`{"cluster":"c","nodeId":"n","runId":"r","nonce":"${'ab'.repeat(32)}\\n"}`), /HELLO nonce is not 64 lowercase hex digits/],
    [hello('{"cluster":"c","nodeId":"a\\nb","runId":"r"}'), /HELLO nodeId may hold only/],
    [hello(`{"cluster":"c","nodeId":"${'n'.repeat(129)}","runId":"r"}`), /HELLO nodeId is longer than 128/],
    [hello('{"cluster":"c","nodeId":"","runId":"r"}'), /HELLO nodeId is empty/],
    [hello('{"cluster":"c","nodeId":"-n","runId":"r"}'), /HELLO nodeId may hold only/],
    [hello('{"cluster":"two words","nodeId":"n","runId":"r"}'), /HELLO cluster may hold only/],
    [hello('{"cluster":"c","nodeId":"n","runId":"r\\u0000"}'), /HELLO runId may hold only/],
    [hello('{"cluster":"c","nodeId":"n","runId":"r","lastApplied":{"runId":"x y","seq":1}}'), /lastApplied runId may hold only/],
    [rawFrame(0x55, Buffer.from('{"proof":"nothex"}')), /AUTH proof is not 64 lowercase hex digits/],
    [rawFrame(0x55, Buffer.from(`{"proof":"${'a'.repeat(63)}"}`)), /AUTH proof is not 64/],
  );
  for (const [bytes, message] of cases) {
    assert.match(expectFrameError(bytes).message, message);
  }
});

test('a FrameError message holds no line break from the peer (it is logged before the peer proved anything)', () => {
  const message = expectFrameError(rawFrame(0x48, Buffer.concat([HELLO_HEAD, Buffer.from('zz\nFORGED LOG LINE')]))).message;
  assert.match(message, /HELLO payload is not UTF-8 JSON/);
  assert.doesNotMatch(message, /[\r\n]/);
});

test('RECORD whose inner lengths do not add up', () => {
  const r = setRecord(Buffer.from('key'), Buffer.from('value'));
  const good = serializeRecord(r, 0);
  const payload = (): Buffer => Buffer.from(good.subarray(5));
  const keyLengthAt = 21;
  const valueLengthAt = 23 + 3 + 4 + 8;

  let p = payload();
  p.writeUInt16BE(4, keyLengthAt);
  assert.match(expectFrameError(rawFrame(0x52, p)).message, /do not add up/);
  p = payload();
  p.writeUInt16BE(251, keyLengthAt);
  assert.match(expectFrameError(rawFrame(0x52, p)).message, /key of 251 bytes exceeds 250/);
  p = payload();
  p.writeUInt16BE(200, keyLengthAt);
  assert.match(expectFrameError(rawFrame(0x52, p)).message, /does not fit/);
  p = payload();
  p.writeUInt32BE(6, valueLengthAt);
  assert.match(expectFrameError(rawFrame(0x52, p)).message, /do not add up/);
  p = payload();
  p.writeUInt32BE(0xffff_ffff, valueLengthAt);
  assert.match(expectFrameError(rawFrame(0x52, p)).message, /do not add up/);
  // Trailing byte after delay.
  assert.match(expectFrameError(rawFrame(0x52, Buffer.concat([payload(), Buffer.alloc(1)]))).message, /do not add up/);
  p = payload();
  p[20] = 10;
  assert.match(expectFrameError(rawFrame(0x52, p)).message, /op 10 is unknown/);
  // An incr (op 8) whose delta ("value") is no number.
  p = payload();
  p[20] = 8;
  assert.match(expectFrameError(rawFrame(0x52, p)).message, /incr delta is not 1 to 20 decimal digits/);
  p = payload();
  p.writeBigInt64BE(-2n, 23 + 3 + 4);
  assert.match(expectFrameError(rawFrame(0x52, p)).message, /ttl -2/);
  p = payload();
  p.writeBigInt64BE(-(2n ** 40n), 23 + 3 + 4);
  assert.match(expectFrameError(rawFrame(0x52, p)).message, /ttl out of range/);
});

test('property: random garbage yields frames or a FrameError, nothing else', () => {
  const knownTypes = [0x48, 0x52, 0x41, 0x50, 0x42, 0x45, 0x46, 0x47];
  const garbage = fc.oneof(
    // Raw noise.
    bytes(200),
    // Well-framed noise: a plausible header around random payload, so the decoders get exercised.
    fc.tuple(fc.oneof(fc.constantFrom(...knownTypes), fc.integer({ min: 0, max: 255 })), bytes(120)).map(([t, p]) => rawFrame(t, p)),
    // Valid HELLO preamble with random JSON-ish text.
    fc.string({ maxLength: 80 }).map((s) => rawFrame(0x48, Buffer.concat([HELLO_HEAD, Buffer.from(s)]))),
    fc.json().map((s) => rawFrame(0x48, Buffer.concat([HELLO_HEAD, Buffer.from(s)]))),
    fc.json().map((s) => rawFrame(0x42, Buffer.from(s))),
    // A valid frame with some bytes overwritten.
    fc.tuple(frameArb, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 })).map(([f, edits]) => {
      const b = Buffer.from(f.bytes);
      for (const [at, v] of edits) b[at % b.length] = v;
      return b;
    }),
  );
  fc.assert(
    fc.property(fc.array(garbage, { minLength: 1, maxLength: 4 }), fc.nat({ max: 50 }), (pieces, chunkSize) => {
      const stream = Buffer.concat(pieces);
      const parser = new FrameParser({ maxFrameBytes: 4096 });
      try {
        for (let i = 0; i < stream.length; i += chunkSize + 1) {
          parser.push(stream.subarray(i, i + chunkSize + 1));
          for (let f = parser.next(); f !== null; f = parser.next()) {
            assert.ok(typeof f.type === 'string');
          }
          assert.ok(parser.buffered < 4096 + 5);
        }
      } catch (err) {
        if (!(err instanceof FrameError)) throw err;
      }
    }),
    { numRuns: 10000 },
  );
});
