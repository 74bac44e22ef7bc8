import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { BinaryRequest, CommandRequest, HEADER_LENGTH, Opcode, Status } from './messages';
import { BinaryRequestParser, KEY_MAX_LENGTH, READ_BUFFER_SIZE } from './request-parser';
import { arithmeticExtras, encodeRequest, expiryExtras, RequestFields, storageExtras } from './serializer';

const MAX_ITEM = 1024;
const key = (s: string): Buffer => Buffer.from(s);
const noop = (opaque = 0): Buffer => encodeRequest({ opcode: Opcode.NoOp, opaque });

function parse(bytes: Buffer, maxItemSize = MAX_ITEM): BinaryRequest[] {
  const parser = new BinaryRequestParser({ maxItemSize });
  parser.push(bytes);
  return drain(parser);
}

function drain(parser: BinaryRequestParser): BinaryRequest[] {
  const out: BinaryRequest[] = [];
  let request: BinaryRequest | null;
  while ((request = parser.next()) !== null) out.push(request);
  return out;
}

function asCommand(request: BinaryRequest | null | undefined): CommandRequest {
  assert.equal(request?.type, 'command', `expected a command, got ${JSON.stringify(request?.type)}`);
  return request as CommandRequest;
}

test('frames well-formed requests of every served opcode', () => {
  const requests: RequestFields[] = [
    { opcode: Opcode.Get, key: key('a') },
    { opcode: Opcode.GetKQ, key: key('a') },
    { opcode: Opcode.SetQ, key: key('a'), extras: storageExtras(1, 2), value: key('value') },
    { opcode: Opcode.Add, key: key('a'), extras: storageExtras(1, 2), value: Buffer.alloc(0) },
    { opcode: Opcode.Delete, key: key('a') },
    { opcode: Opcode.IncrementQ, key: key('a'), extras: arithmeticExtras(1n, 0n, 0) },
    { opcode: Opcode.Append, key: key('a'), value: key('tail') },
    { opcode: Opcode.Touch, key: key('a'), extras: expiryExtras(10) },
    { opcode: Opcode.GATKQ, key: key('a'), extras: expiryExtras(10) },
    { opcode: Opcode.Flush },
    { opcode: Opcode.FlushQ, extras: expiryExtras(5) },
    { opcode: Opcode.Stat },
    { opcode: Opcode.Stat, key: key('settings') },
    { opcode: Opcode.Version },
    { opcode: Opcode.NoOp },
    { opcode: Opcode.SASLListMechs },
    { opcode: Opcode.SASLAuth, key: key('PLAIN'), value: key('\0u\0p') },
    { opcode: Opcode.Quit },
  ];
  const packets = requests.map((fields, i) => encodeRequest({ ...fields, opaque: i }));
  const parsed = parse(Buffer.concat(packets)).map(asCommand);
  assert.equal(parsed.length, packets.length);
  parsed.forEach((request, i) => {
    assert.deepEqual(request.raw, packets[i]);
    assert.equal(request.header.opaque, i);
    assert.deepEqual(request.key, requests[i].key ?? Buffer.alloc(0));
    assert.deepEqual(request.extras, requests[i].extras ?? Buffer.alloc(0));
    assert.deepEqual(request.value, requests[i].value ?? Buffer.alloc(0));
  });
});

test('waits for the whole request, and a request split anywhere parses the same', () => {
  const stream = Buffer.concat([
    encodeRequest({ opcode: Opcode.Set, key: key('k'), extras: storageExtras(0, 0), value: Buffer.alloc(500, 1) }),
    encodeRequest({ opcode: Opcode.GetQ, key: key('k') }),
    noop(),
  ]);
  const parser = new BinaryRequestParser({ maxItemSize: MAX_ITEM });
  const got: BinaryRequest[] = [];
  for (const byte of stream) {
    parser.push(Buffer.from([byte]));
    got.push(...drain(parser));
  }
  assert.deepEqual(got, parse(stream));
  assert.deepEqual(
    got.map((r) => asCommand(r).header.opcode),
    [Opcode.Set, Opcode.GetQ, Opcode.NoOp],
  );
});

test('a wrong magic closes the connection once a whole header is in, and nothing after is read', () => {
  const parser = new BinaryRequestParser({ maxItemSize: MAX_ITEM });
  parser.push(Buffer.concat([noop(1), Buffer.from('get foo\r\n')]));
  assert.equal(asCommand(parser.next()).header.opaque, 1);
  assert.equal(parser.next(), null, 'memcached waits for 24 bytes before looking at the magic');
  parser.push(Buffer.alloc(24, 0x20));
  assert.deepEqual(parser.next(), { type: 'close', reason: 'invalid magic' });
  parser.push(noop());
  assert.equal(parser.next(), null);
  assert.equal(parser.buffered, 0);
});

test("extras and key larger than memcached's read buffer close the connection once more than a buffer's worth arrived", () => {
  const keyLength = READ_BUFFER_SIZE; // header + key can never fit
  const header = encodeRequest({ opcode: Opcode.Get, keyLength, totalBodyLength: keyLength });
  const parser = new BinaryRequestParser({ maxItemSize: MAX_ITEM });
  parser.push(header);
  parser.push(Buffer.alloc(READ_BUFFER_SIZE - HEADER_LENGTH, 0x61));
  assert.equal(parser.next(), null, 'a full buffer alone: memcached waits for the socket to become readable');
  parser.push(Buffer.from('a'));
  assert.equal(parser.next()?.type, 'close');

  // One that just fits is read whole, then refused for its key length.
  const fits = encodeRequest({ opcode: Opcode.Get, key: Buffer.alloc(READ_BUFFER_SIZE - HEADER_LENGTH, 0x61) });
  const [refused] = parse(fits);
  assert.deepEqual(refused.type === 'rejected' && [refused.status, refused.close], [Status.InvalidArguments, true]);
});

test('lengths that do not add up: "Unknown command", then close', () => {
  const bad = encodeRequest({ opcode: Opcode.Get, key: key('abc'), totalBodyLength: 2, opaque: 7 });
  const [rejected, ...rest] = parse(Buffer.concat([bad, noop()]));
  assert.deepEqual(rest, []);
  assert.equal(rejected.type, 'rejected');
  if (rejected.type !== 'rejected') return;
  assert.equal(rejected.status, Status.UnknownCommand);
  assert.equal(rejected.close, true);
  assert.equal(rejected.header.opaque, 7);
});

test('a key over 250 bytes, or extras the opcode does not take: "Invalid arguments", then close', () => {
  const cases = [
    encodeRequest({ opcode: Opcode.Get, key: Buffer.alloc(KEY_MAX_LENGTH + 1, 0x61) }),
    encodeRequest({ opcode: Opcode.GetQ, key: key('a'), extras: Buffer.alloc(4) }),
    encodeRequest({ opcode: Opcode.Set, key: key('a'), extras: Buffer.alloc(4), value: key('v') }),
    encodeRequest({ opcode: Opcode.Set, extras: storageExtras(0, 0), value: key('v') }),
    encodeRequest({ opcode: Opcode.Delete, key: key('a'), value: key('v') }),
    encodeRequest({ opcode: Opcode.Increment, key: key('a'), extras: Buffer.alloc(8) }),
    encodeRequest({ opcode: Opcode.NoOp, value: key('v') }),
    encodeRequest({ opcode: Opcode.Version, key: key('v') }),
    encodeRequest({ opcode: Opcode.Flush, extras: Buffer.alloc(8) }),
    encodeRequest({ opcode: Opcode.Stat, extras: Buffer.alloc(4) }),
    encodeRequest({ opcode: Opcode.Touch, key: key('a') }),
    encodeRequest({ opcode: Opcode.Append, key: key('a'), extras: Buffer.alloc(4), value: key('v') }),
    encodeRequest({ opcode: Opcode.QuitQ, value: key('v') }),
  ];
  for (const bytes of cases) {
    const got = parse(Buffer.concat([bytes, noop()]));
    assert.equal(got.length, 1, `only the error for opcode ${bytes[1]}`);
    assert.deepEqual(got[0].type === 'rejected' && [got[0].status, got[0].close], [Status.InvalidArguments, true]);
  }
  // A key of exactly 250 bytes is fine.
  assert.equal(parse(encodeRequest({ opcode: Opcode.Get, key: Buffer.alloc(KEY_MAX_LENGTH, 0x61) }))[0].type, 'command');
});

test('an unknown opcode swallows its body length *after* extras and key, like memcached', () => {
  // Verbosity (not served in 1.6) with 4 bytes of extras: memcached reads
  // header + extras, then discards 4 more bytes — the start of the next request.
  const verbosity = encodeRequest({ opcode: Opcode.Verbosity, extras: expiryExtras(1), opaque: 1 });
  const next = encodeRequest({ opcode: Opcode.Get, key: key('k'), opaque: 2 });
  const parser = new BinaryRequestParser({ maxItemSize: MAX_ITEM });
  parser.push(Buffer.concat([verbosity, next, noop(3)]));
  const first = parser.next();
  assert.deepEqual(first?.type === 'rejected' && [first.status, first.close], [Status.UnknownCommand, false]);
  const second = parser.next();
  assert.equal(second?.type, 'close', 'the rest of the Get header has no magic');

  // Without extras or key the swallow is exact.
  const clean = parse(Buffer.concat([encodeRequest({ opcode: 0x42, value: Buffer.alloc(10) }), noop(3)]));
  assert.deepEqual(
    clean.map((r) => r.type),
    ['rejected', 'command'],
  );
});

test("a body of 2 GiB or more on an unknown opcode is not swallowed (memcached's int)", () => {
  const huge = encodeRequest({ opcode: 0x42, totalBodyLength: 0x80000000 });
  assert.deepEqual(
    parse(Buffer.concat([huge, noop(3)])).map((r) => r.type),
    ['rejected', 'command'],
  );
});

test('Stat, Touch and GAT read nothing past the key: extra body bytes are the next request', () => {
  for (const fields of [
    { opcode: Opcode.Stat, key: key('items') },
    { opcode: Opcode.Touch, key: key('k'), extras: expiryExtras(1) },
    { opcode: Opcode.GATQ, key: key('k'), extras: expiryExtras(1) },
  ]) {
    const packet = encodeRequest({ ...fields, totalBodyLength: (fields.extras?.length ?? 0) + fields.key.length + 24 });
    const got = parse(Buffer.concat([packet, noop(9)]));
    assert.equal(got.length, 2);
    assert.deepEqual(asCommand(got[0]).raw, packet);
    assert.equal(asCommand(got[1]).header.opaque, 9);
  }
});

test('a value over the item limit is refused and discarded without being buffered', () => {
  const value = Buffer.alloc(MAX_ITEM * 4, 0x78);
  const set = encodeRequest({ opcode: Opcode.SetQ, key: key('big'), extras: storageExtras(0, 0), value, opaque: 3 });
  const parser = new BinaryRequestParser({ maxItemSize: MAX_ITEM });
  parser.push(set.subarray(0, 100));
  const refused = parser.next();
  assert.equal(refused?.type, 'too_large');
  if (refused?.type !== 'too_large') return;
  assert.deepEqual(refused.key, key('big'));
  assert.equal(refused.dropsOldItem, true);
  assert.equal(refused.header.opaque, 3);
  for (let at = 100; at < set.length; at += 700) {
    parser.push(set.subarray(at, at + 700));
    assert.equal(parser.next(), null);
    assert.equal(parser.buffered, 0);
  }
  parser.push(noop(4));
  assert.equal(asCommand(parser.next()).header.opaque, 4);

  // The limit counts the value plus memcached's trailing \r\n.
  const fits = encodeRequest({ opcode: Opcode.Set, key: key('k'), extras: storageExtras(0, 0), value: Buffer.alloc(MAX_ITEM - 2) });
  assert.equal(parse(fits)[0].type, 'command');
  const over = encodeRequest({ opcode: Opcode.Add, key: key('k'), extras: storageExtras(0, 0), value: Buffer.alloc(MAX_ITEM - 1) });
  assert.deepEqual(
    parse(over).map((r) => r.type === 'too_large' && r.dropsOldItem),
    [false],
  );
  const append = encodeRequest({ opcode: Opcode.PrependQ, key: key('k'), value: Buffer.alloc(MAX_ITEM) });
  assert.equal(parse(append)[0].type, 'too_large');
});

test('a SASL body too big to buffer gets "Unknown command" and is swallowed', () => {
  const auth = encodeRequest({ opcode: Opcode.SASLAuth, key: key('PLAIN'), value: Buffer.alloc(MAX_ITEM * 2) });
  const got = parse(Buffer.concat([auth, noop(1)]));
  assert.deepEqual(
    got.map((r) => (r.type === 'rejected' ? r.status : r.type)),
    [Status.UnknownCommand, 'command'],
  );
});

/** Random requests, well-formed or not, as a client might send them. */
const anyRequest = fc
  .record({
    opcode: fc.oneof(fc.constantFrom(...Object.values(Opcode)), fc.integer({ min: 0, max: 255 })),
    key: fc.uint8Array({ maxLength: 300 }),
    extras: fc.oneof(fc.constantFrom(0, 4, 8, 20), fc.integer({ min: 0, max: 40 })),
    value: fc.integer({ min: 0, max: 3 * MAX_ITEM }),
    opaque: fc.integer({ min: 0, max: 0xffffffff }),
    bodyDelta: fc.oneof(fc.constant(0), fc.integer({ min: -30, max: 30 })),
    magic: fc.oneof({ weight: 20, arbitrary: fc.constant(0x80) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 255 }) }),
  })
  .map((r) => {
    const body = Math.max(0, r.key.length + r.extras + r.value + r.bodyDelta);
    return encodeRequest({
      magic: r.magic,
      opcode: r.opcode,
      key: Buffer.from(r.key),
      extras: Buffer.alloc(r.extras),
      value: Buffer.alloc(r.value, 0x76),
      opaque: r.opaque,
      totalBodyLength: body,
    });
  });

test('random bytes and malformed requests never throw, and buffering stays bounded', () => {
  const bound = Math.max(READ_BUFFER_SIZE, HEADER_LENGTH + 8 + KEY_MAX_LENGTH + MAX_ITEM);
  fc.assert(
    fc.property(
      fc.array(
        fc.oneof(
          anyRequest,
          fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
        ),
        { maxLength: 20 },
      ),
      fc.integer({ min: 1, max: 997 }),
      (pieces, chunkSize) => {
        const stream = Buffer.concat(pieces);
        const parser = new BinaryRequestParser({ maxItemSize: MAX_ITEM });
        let closed = false;
        for (let at = 0; at < stream.length; at += chunkSize) {
          parser.push(stream.subarray(at, at + chunkSize));
          for (const request of drain(parser)) {
            assert.equal(closed, false, 'nothing after a close');
            closed = request.type === 'close' || (request.type === 'rejected' && request.close);
          }
          assert.ok(parser.buffered <= bound + chunkSize, `buffered ${parser.buffered}`);
        }
      },
    ),
    { numRuns: 300 },
  );
});

test('well-formed pipelines split anywhere come back request for request', () => {
  const wellFormed = fc
    .record({
      kind: fc.constantFrom('get', 'set', 'incr', 'touch', 'noop', 'append', 'flush'),
      quiet: fc.boolean(),
      key: fc.uint8Array({ minLength: 1, maxLength: KEY_MAX_LENGTH }),
      value: fc.uint8Array({ maxLength: MAX_ITEM - 2 }),
      opaque: fc.integer({ min: 0, max: 0xffffffff }),
    })
    .map((r): RequestFields => {
      const k = Buffer.from(r.key);
      const v = Buffer.from(r.value);
      switch (r.kind) {
        case 'get':
          return { opcode: r.quiet ? Opcode.GetKQ : Opcode.Get, key: k, opaque: r.opaque };
        case 'set':
          return { opcode: r.quiet ? Opcode.SetQ : Opcode.Replace, key: k, extras: storageExtras(7, 0), value: v, opaque: r.opaque };
        case 'incr':
          return { opcode: r.quiet ? Opcode.DecrementQ : Opcode.Increment, key: k, extras: arithmeticExtras(1n, 1n, 0), opaque: r.opaque };
        case 'touch':
          return { opcode: r.quiet ? Opcode.GATQ : Opcode.Touch, key: k, extras: expiryExtras(100), opaque: r.opaque };
        case 'append':
          return { opcode: r.quiet ? Opcode.AppendQ : Opcode.Prepend, key: k, value: v, opaque: r.opaque };
        case 'flush':
          return { opcode: r.quiet ? Opcode.FlushQ : Opcode.Flush, extras: r.quiet ? expiryExtras(1) : undefined, opaque: r.opaque };
        default:
          return { opcode: Opcode.NoOp, opaque: r.opaque };
      }
    });
  fc.assert(
    fc.property(fc.array(wellFormed, { maxLength: 15 }), fc.integer({ min: 1, max: 300 }), (fields, chunkSize) => {
      const packets = fields.map(encodeRequest);
      const stream = Buffer.concat(packets);
      const parser = new BinaryRequestParser({ maxItemSize: MAX_ITEM });
      const got: CommandRequest[] = [];
      for (let at = 0; at < stream.length; at += chunkSize) {
        parser.push(stream.subarray(at, at + chunkSize));
        got.push(...drain(parser).map(asCommand));
      }
      assert.deepEqual(
        got.map((r) => r.raw),
        packets,
      );
      got.forEach((r, i) => {
        assert.equal(r.header.opcode, fields[i].opcode);
        assert.deepEqual(r.key, fields[i].key ?? Buffer.alloc(0));
        assert.deepEqual(r.value, fields[i].value ?? Buffer.alloc(0));
      });
    }),
    { numRuns: 200 },
  );
});
