import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { FrameParser } from '../link/frames/parser';
import { serializeRecord, serializeRecords } from '../link/frames/serializer';
import { Outbox, type NewRecord, type OutboxRecord } from './outbox';
import { RECORD_FIXED_BYTES } from '../link/frames/messages';

/** What a link's cursor placed after `seq` hands out (at most `limit`), or 'gap'. */
function after(outbox: Outbox, seq: number, limit = Infinity): OutboxRecord[] | 'gap' {
  const cursor = outbox.cursor(seq);
  if (cursor === 'gap') return 'gap';
  const out: OutboxRecord[] = [];
  while (out.length < limit) {
    const record = cursor.next();
    if (record === null || record === 'gap') break;
    out.push(record);
  }
  return out;
}

function rec(key: string, valueBytes = 10, overrides: Partial<NewRecord> = {}): NewRecord {
  return {
    hlc: { wall: 1000, logical: 0 },
    op: 'set',
    key: Buffer.from(key),
    flags: 0,
    value: Buffer.alloc(valueBytes, 0x61),
    delay: 0,
    expiresAt: null,
    ...overrides,
  };
}

/** Frame size of rec(key-of-length-2, valueBytes). */
const size = (valueBytes: number): number => 5 + RECORD_FIXED_BYTES + 2 + valueBytes;

const seqs = (records: OutboxRecord[] | 'gap'): number[] | 'gap' => (records === 'gap' ? 'gap' : records.map((r) => r.seq));

test('seqs start at 1 for each run and follow the order of appends', () => {
  const outbox = new Outbox({ maxBytes: 1 << 20 });
  assert.equal(outbox.lastSeq, 0);
  assert.equal(outbox.oldestSeq, 1);
  assert.deepEqual(after(outbox, 0), []);
  assert.equal(outbox.append(rec('k1')), 1);
  assert.equal(outbox.append(rec('k2')), 2);
  assert.equal(outbox.append(rec('k3')), 3);
  assert.equal(outbox.lastSeq, 3);
  assert.equal(outbox.oldestSeq, 1);
  assert.equal(outbox.length, 3);
  assert.deepEqual(seqs(after(outbox, 0)), [1, 2, 3]);
  assert.deepEqual(seqs(after(outbox, 1)), [2, 3]);
  assert.deepEqual(seqs(after(outbox, 3)), []);
  assert.deepEqual(seqs(after(outbox, 0, 2)), [1, 2]);
  assert.deepEqual(outbox.get(2)?.key, Buffer.from('k2'));
  assert.equal(new Outbox({ maxBytes: 100 }).append(rec('zz')), 1, 'a new run starts over');
});

test('bytes are the encoded RECORD frames', () => {
  const outbox = new Outbox({ maxBytes: 1 << 20 });
  const a = rec('k1', 100);
  const b = rec('key-two', 0, { op: 'delete' });
  outbox.append(a);
  outbox.append(b);
  assert.equal(outbox.bytes, serializeRecord({ ...a, seq: 1 }, 0).length + serializeRecord({ ...b, seq: 2 }, 0).length);
  assert.equal(outbox.get(1)?.bytes, size(100));
});

test('the byte bound drops the oldest records, acknowledged or not, and a cursor reports the gap', () => {
  const outbox = new Outbox({ maxBytes: 3 * size(10) });
  for (let i = 1; i <= 3; i++) outbox.append(rec(`k${i}`));
  outbox.acknowledge(3);
  assert.equal(outbox.length, 3, 'acknowledged records are kept while they fit');
  assert.equal(outbox.dropped, 0);
  outbox.append(rec('k4'));
  outbox.append(rec('k5'));
  assert.equal(outbox.length, 3);
  assert.equal(outbox.bytes, 3 * size(10));
  assert.equal(outbox.oldestSeq, 3);
  assert.equal(outbox.dropped, 2);
  assert.equal(outbox.droppedUnacknowledged, 0);
  // A peer that applied up to 2 can still be caught up; one that applied up to 1 cannot.
  assert.deepEqual(seqs(after(outbox, 2)), [3, 4, 5]);
  assert.equal(after(outbox, 1), 'gap');
  assert.equal(after(outbox, 0), 'gap');
  assert.equal(outbox.get(2), undefined);
  // A peer claiming records this run never wrote.
  assert.equal(after(outbox, 6), 'gap');
  // Unacknowledged records pushed out are counted: the link must plan a full copy.
  for (let i = 6; i <= 9; i++) outbox.append(rec(`k${i}`));
  assert.equal(outbox.droppedUnacknowledged, 3); // 4, 5, 6
});

test('a record larger than the whole bound is still held, alone', () => {
  const outbox = new Outbox({ maxBytes: 200 });
  outbox.append(rec('k1'));
  outbox.append(rec('k2', 1000));
  assert.equal(outbox.length, 1);
  assert.equal(outbox.oldestSeq, 2);
  assert.deepEqual(seqs(after(outbox, 1)), [2]);
  outbox.append(rec('k3'));
  assert.equal(outbox.length, 1, 'the oversized one goes as soon as anything follows');
  assert.ok(outbox.bytes <= 200);
});

test('acknowledge is cumulative, ignores stale ACKs and refuses ACKs from the future', () => {
  const outbox = new Outbox({ maxBytes: 1 << 20 });
  for (let i = 0; i < 5; i++) outbox.append(rec('kk'));
  outbox.acknowledge(3);
  outbox.acknowledge(2);
  assert.equal(outbox.acknowledgedSeq, 3);
  assert.equal(outbox.unacknowledged, 2);
  assert.throws(() => outbox.acknowledge(6), RangeError);
  assert.throws(() => outbox.acknowledge(-1), RangeError);
  assert.throws(() => after(outbox, 1.5), RangeError);
});

test('records remember when they were appended, for lag', () => {
  let now = 5000;
  const outbox = new Outbox({ maxBytes: 1 << 20, clock: () => now });
  outbox.append(rec('k1'));
  now = 5100;
  outbox.append(rec('k2'));
  assert.equal(outbox.oldestUnacknowledged()?.appendedAt, 5000);
  outbox.acknowledge(1);
  assert.equal(outbox.oldestUnacknowledged()?.appendedAt, 5100);
  outbox.acknowledge(2);
  assert.equal(outbox.oldestUnacknowledged(), undefined);
});

test('a record that waited in the backlog is sent with what is left of its life', () => {
  let now = 1_000_000;
  const outbox = new Outbox({ maxBytes: 1 << 20, clock: () => now });
  outbox.append(rec('k1', 3, { expiresAt: now + 60_000 }));
  now += 45_000; // the peer was away
  const [record] = after(outbox, 0) as OutboxRecord[];
  const parser = new FrameParser({ maxFrameBytes: 1 << 20 });
  parser.push(serializeRecord(record, now));
  const frame = parser.next();
  assert.equal(frame?.type, 'record');
  assert.equal(frame.type === 'record' && frame.ttlMs, 15_000);
  assert.equal(frame.type === 'record' && frame.seq, 1);
});

test('a cursor hands out records one by one, follows appends, and sees gaps', () => {
  const outbox = new Outbox({ maxBytes: 4 * size(10) });
  outbox.append(rec('k1'));
  const cursor = outbox.cursor(0);
  assert.ok(cursor !== 'gap');
  assert.equal(cursor.pending, 1);
  assert.equal((cursor.next() as OutboxRecord).seq, 1);
  assert.equal(cursor.next(), null);
  outbox.append(rec('k2'));
  assert.equal((cursor.next() as OutboxRecord).seq, 2);
  assert.equal(cursor.position, 2);
  for (let i = 3; i <= 10; i++) outbox.append(rec(`k${i % 10}`));
  assert.equal(cursor.pending, 8);
  assert.equal(cursor.next(), 'gap', 'records 3..6 were dropped before the link read them');
  assert.equal(outbox.cursor(5), 'gap');
  assert.equal(outbox.cursor(11), 'gap');
  const late = outbox.cursor(6);
  assert.ok(late !== 'gap');
  assert.deepEqual(
    [late.next(), late.next(), late.next(), late.next(), late.next()].map((r) => (r && r !== 'gap' ? r.seq : r)),
    [7, 8, 9, 10, null],
  );
});

test('a deep backlog: paging and cursors stay linear, and compaction keeps seqs right', () => {
  const outbox = new Outbox({ maxBytes: 50_000 * size(10) });
  for (let i = 0; i < 200_000; i++) outbox.append(rec('kk'));
  assert.equal(outbox.length, 50_000);
  assert.equal(outbox.oldestSeq, 150_001);
  assert.equal(outbox.get(150_001)?.seq, 150_001);
  assert.equal(outbox.get(200_000)?.seq, 200_000);
  const cursor = outbox.cursor(150_000);
  assert.ok(cursor !== 'gap');
  let n = 0;
  for (let r = cursor.next(); r !== null; r = cursor.next()) {
    assert.ok(r !== 'gap');
    n++;
  }
  assert.equal(n, 50_000);
  let last = 150_000;
  for (;;) {
    const page = after(outbox, last, 4096);
    assert.ok(page !== 'gap');
    if (page.length === 0) break;
    assert.equal(page[0].seq, last + 1);
    last = page[page.length - 1].seq;
  }
  assert.equal(last, 200_000);
  // A page goes out as one buffer.
  const page = after(outbox, 199_990) as OutboxRecord[];
  assert.equal(serializeRecords(page, 0).length, 10 * size(10));
});

test('keys and values that are views into a large socket read are copied', () => {
  const socketRead = Buffer.alloc(65536, 0x62);
  const key = socketRead.subarray(100, 110);
  const value = socketRead.subarray(200, 300);
  const big = Buffer.alloc(20_000, 0x63);
  const outbox = new Outbox({ maxBytes: 1 << 20 });
  outbox.append(rec('x', 0, { key, value }));
  outbox.append(rec('y', 0, { value: big }));
  const held = outbox.get(1)!;
  assert.deepEqual(held.key, key);
  assert.deepEqual(held.value, value);
  assert.notEqual(held.key.buffer, socketRead.buffer, 'the 64 KiB read is not kept alive by a 10-byte key');
  assert.notEqual(held.value.buffer, socketRead.buffer);
  assert.deepEqual(outbox.get(2)!.value, big);
  socketRead.fill(0);
  assert.deepEqual(outbox.get(1)!.key, Buffer.alloc(10, 0x62), 'reusing the read does not change what is held');
});

test('property: every field of a held record reads back as appended, across slabs and index growth', () => {
  const record = fc.record({
    hlc: fc.record({ wall: fc.integer({ min: 0, max: 2 ** 52 }), logical: fc.integer({ min: 0, max: 0xffff_ffff }) }),
    op: fc.constantFrom('set', 'add', 'delete', 'touch', 'invalidate', 'flush' as const),
    key: fc.uint8Array({ minLength: 0, maxLength: 250 }).map((a) => Buffer.from(a)),
    flags: fc.integer({ min: 0, max: 0xffff_ffff }),
    value: fc.oneof(fc.nat({ max: 300 }), fc.nat({ max: 40_000 })).map((n) => Buffer.alloc(n, n % 251)),
    delay: fc.integer({ min: 0, max: 0xffff_ffff }),
    expiresAt: fc.oneof(fc.constant(null), fc.integer({ min: 0, max: 2 ** 50 })),
  });
  fc.assert(
    fc.property(fc.array(record, { minLength: 1, maxLength: 3000 }), fc.integer({ min: 1, max: 1 << 22 }), (records, maxBytes) => {
      let now = 1;
      const outbox = new Outbox({ maxBytes, clock: () => now++ });
      for (const r of records) outbox.append(r as NewRecord);
      assert.equal(outbox.lastSeq, records.length);
      for (let seq = outbox.oldestSeq; seq <= outbox.lastSeq; seq++) {
        const r = records[seq - 1];
        const { appendedAt, bytes, ...held } = outbox.get(seq)!;
        assert.deepEqual(held, { ...r, seq });
        assert.equal(appendedAt, seq);
        assert.equal(outbox.appendedAt(seq), seq);
        assert.equal(bytes, serializeRecord({ ...r, seq } as OutboxRecord, 0).length);
      }
    }),
    { numRuns: 60 },
  );
});

test('property: behaves like an unbounded log cut to the byte bound', () => {
  const op = fc.oneof(
    fc.record({ kind: fc.constant('append' as const), valueBytes: fc.integer({ min: 0, max: 300 }) }),
    fc.record({ kind: fc.constant('ack' as const), back: fc.nat({ max: 20 }) }),
    fc.record({ kind: fc.constant('after' as const), seq: fc.nat({ max: 400 }), limit: fc.option(fc.nat({ max: 10 }), { nil: undefined }) }),
  );
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 3000 }), fc.array(op, { maxLength: 300 }), (maxBytes, ops) => {
      const outbox = new Outbox({ maxBytes });
      const log: number[] = []; // sizes, index = seq - 1
      let oldest = 1;
      let held = 0;
      let acked = 0;
      for (const o of ops) {
        if (o.kind === 'append') {
          const seq = outbox.append(rec('kk', o.valueBytes));
          log.push(size(o.valueBytes));
          held += size(o.valueBytes);
          assert.equal(seq, log.length);
          while (held > maxBytes && oldest < log.length) held -= log[oldest++ - 1];
        } else if (o.kind === 'ack') {
          const seq = Math.max(0, log.length - o.back);
          outbox.acknowledge(seq);
          acked = Math.max(acked, seq);
        } else {
          const got = after(outbox, o.seq, o.limit);
          if (o.seq > log.length || o.seq < oldest - 1) {
            assert.equal(got, 'gap');
          } else {
            const want: number[] = [];
            for (let s = o.seq + 1; s <= log.length && want.length < (o.limit ?? Infinity); s++) want.push(s);
            assert.deepEqual(seqs(got), want);
          }
        }
        assert.equal(outbox.lastSeq, log.length);
        assert.equal(outbox.oldestSeq, log.length === 0 ? 1 : oldest);
        assert.equal(outbox.bytes, log.length === 0 ? 0 : held);
        assert.equal(outbox.acknowledgedSeq, acked);
        assert.ok(outbox.bytes <= maxBytes || outbox.length === 1);
      }
    }),
    { numRuns: 2000 },
  );
});
