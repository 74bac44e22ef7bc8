import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { compareStamps, type Stamp } from './hlc';
import { RecentWrites } from './recent-writes';

const k = (s: string): Buffer => Buffer.from(s, 'latin1');
const st = (wall: number, logical = 0, nodeId = 'a'): Stamp => ({ wall, logical, nodeId });

test('a key never written lets any incoming record win', () => {
  const map = new RecentWrites({ maxEntries: 10, windowMs: 60_000 });
  assert.equal(map.incomingWins(k('x'), st(0)), true);
});

test('an incoming record wins only if it is newer than the last write', () => {
  const map = new RecentWrites({ maxEntries: 10, windowMs: 60_000 });
  map.note(k('x'), st(1000, 2, 'a'));
  assert.equal(map.incomingWins(k('x'), st(999, 9, 'b')), false);
  assert.equal(map.incomingWins(k('x'), st(1000, 1, 'b')), false);
  assert.equal(map.incomingWins(k('x'), st(1000, 2, 'b')), true, 'tie on the clock: node id decides');
  assert.equal(map.incomingWins(k('x'), st(1000, 2, 'a')), false, 'the same write again is not newer');
  assert.equal(map.incomingWins(k('x'), st(1001, 0, '0')), true);
  assert.equal(map.incomingWins(k('y'), st(1, 0, 'b')), true);
});

test('both nodes pick the same winner for concurrent writes', () => {
  const a = new RecentWrites({ maxEntries: 10, windowMs: 60_000 });
  const b = new RecentWrites({ maxEntries: 10, windowMs: 60_000 });
  const writeA = st(5000, 0, 'node-a');
  const writeB = st(5000, 0, 'node-b');
  a.note(k('x'), writeA);
  b.note(k('x'), writeB);
  // The records cross: each side decides about the other's write.
  const aAppliesB = a.incomingWins(k('x'), writeB);
  const bAppliesA = b.incomingWins(k('x'), writeA);
  assert.notEqual(aAppliesB, bAppliesA, 'exactly one of the two writes wins');
  assert.equal(aAppliesB, true, 'node-b > node-a breaks the tie');
});

test('keys are bytes: binary keys and keys differing only above 0x7f are distinct', () => {
  const map = new RecentWrites({ maxEntries: 10, windowMs: 60_000 });
  map.note(Buffer.from([0x00, 0xff]), st(100));
  assert.equal(map.incomingWins(Buffer.from([0x00, 0xff]), st(50)), false);
  assert.equal(map.incomingWins(Buffer.from([0x00, 0xfe]), st(50)), true);
  assert.equal(map.incomingWins(Buffer.from([0x00, 0xef, 0xbf, 0xbd]), st(50)), true);
});

test('note keeps the newer stamp', () => {
  const map = new RecentWrites({ maxEntries: 10, windowMs: 60_000 });
  map.note(k('x'), st(200));
  map.note(k('x'), st(100));
  assert.deepEqual(map.lastWrite(k('x')), st(200));
  map.note(k('x'), st(300, 0, 'b'));
  assert.deepEqual(map.lastWrite(k('x')), st(300, 0, 'b'));
  assert.equal(map.size, 1);
});

test('entries older than the window are forgotten', () => {
  const map = new RecentWrites({ maxEntries: 100, windowMs: 1000 });
  map.note(k('old'), st(0));
  map.note(k('mid'), st(500));
  map.note(k('new'), st(1200));
  assert.equal(map.lastWrite(k('old')), undefined);
  assert.deepEqual(map.lastWrite(k('mid')), st(500));
  map.note(k('newer'), st(1600));
  assert.equal(map.lastWrite(k('mid')), undefined);
  assert.equal(map.size, 2);
  assert.equal(map.overflowed, 0);
});

test('re-noting a key moves it to the back, so it outlives older keys', () => {
  const map = new RecentWrites({ maxEntries: 2, windowMs: 60_000 });
  map.note(k('a'), st(1));
  map.note(k('b'), st(2));
  map.note(k('a'), st(3));
  map.note(k('c'), st(4)); // over the bound: the front (b) goes
  assert.equal(map.lastWrite(k('b')), undefined);
  assert.deepEqual(map.lastWrite(k('a')), st(3));
  assert.equal(map.size, 2);
  assert.equal(map.overflowed, 1, 'b was still inside the window');
});

test('the entry bound holds, and forgotten keys let incoming records win', () => {
  const map = new RecentWrites({ maxEntries: 1000, windowMs: 60_000 });
  for (let i = 0; i < 5000; i++) map.note(k(`key${i}`), st(10_000 + i));
  assert.equal(map.size, 1000);
  assert.equal(map.overflowed, 4000);
  assert.equal(map.incomingWins(k('key0'), st(1)), true);
  assert.equal(map.incomingWins(k('key4999'), st(1)), false);
});

test('forgetBefore drops entries from the front up to a watermark', () => {
  const map = new RecentWrites({ maxEntries: 100, windowMs: 60_000 });
  for (let i = 1; i <= 10; i++) map.note(k(`k${i}`), st(i * 100));
  assert.equal(map.forgetBefore(550), 5);
  assert.equal(map.size, 5);
  assert.equal(map.lastWrite(k('k5')), undefined);
  assert.deepEqual(map.lastWrite(k('k6')), st(600));
});

test('a flush beats older incoming records for every key, and older flushes', () => {
  const map = new RecentWrites({ maxEntries: 100, windowMs: 60_000 });
  map.note(k('x'), st(100));
  map.noteFlush(st(500, 0, 'a'));
  assert.equal(map.incomingWins(k('never-written'), st(400, 0, 'b')), false, 'a set that crossed the flush on the wire');
  assert.equal(map.incomingWins(k('x'), st(450, 0, 'b')), false);
  assert.equal(map.incomingWins(k('x'), st(600, 0, 'b')), true);
  assert.equal(map.incomingFlushWins(st(499, 0, 'b')), false);
  assert.equal(map.incomingFlushWins(st(501, 0, 'b')), true);
  map.noteFlush(st(300, 0, 'b')); // older: ignored
  assert.deepEqual(map.lastFlush, st(500, 0, 'a'));
});

function maxWall(writes: Array<[number, number]>): number {
  return writes.reduce((m, [, wall]) => Math.max(m, wall), 0);
}

test('property: matches a reference model while nothing is forgotten', () => {
  const op = fc.record({
    note: fc.boolean(),
    key: fc.constantFrom('a', 'b', 'c', '\u00ff'),
    stamp: fc.record({ wall: fc.integer({ min: 0, max: 50 }), logical: fc.integer({ min: 0, max: 3 }), nodeId: fc.constantFrom('n1', 'n2') }),
  });
  fc.assert(
    fc.property(fc.array(op, { maxLength: 100 }), (ops) => {
      const map = new RecentWrites({ maxEntries: 100, windowMs: 1000 });
      const model = new Map<string, Stamp>();
      for (const o of ops) {
        const key = k(o.key);
        if (o.note) {
          map.note(key, o.stamp);
          const known = model.get(o.key);
          if (!known || compareStamps(o.stamp, known) > 0) model.set(o.key, o.stamp);
        } else {
          const known = model.get(o.key);
          assert.equal(map.incomingWins(key, o.stamp), !known || compareStamps(o.stamp, known) > 0);
        }
      }
    }),
    { numRuns: 3000 },
  );
});

test('property: size never exceeds maxEntries, and what is remembered is never newer than the real last write', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 20 }),
      fc.array(fc.tuple(fc.integer({ min: 0, max: 40 }), fc.integer({ min: 0, max: 10_000 })), { maxLength: 300 }),
      (maxEntries, writes) => {
        const map = new RecentWrites({ maxEntries, windowMs: 500 });
        const model = new Map<string, Stamp>();
        for (const [key, wall] of writes) {
          map.note(k(String(key)), st(wall));
          const known = model.get(String(key));
          if (!known || wall > known.wall) model.set(String(key), st(wall));
          assert.ok(map.size <= maxEntries);
          // A forgotten key re-noted with an older stamp is remembered with
          // that one (the map cannot know better); it never invents a newer one.
          for (const [id, stamp] of model) {
            const kept = map.lastWrite(k(id));
            if (kept) assert.ok(compareStamps(kept, stamp) <= 0);
            if (kept && map.overflowed === 0 && stamp.wall >= maxWall(writes) - 500) assert.deepEqual(kept, stamp);
          }
        }
      },
    ),
    { numRuns: 1000 },
  );
});

test('a hot key noted over and over neither grows the map nor pushes out fresher keys', () => {
  const map = new RecentWrites({ maxEntries: 3, windowMs: 60_000 });
  let wall = 1;
  for (let i = 0; i < 20_000; i++) {
    map.note(k('hot'), st(wall++));
    if (i % 5000 === 0) map.note(k(`cold${i}`), st(wall++));
  }
  assert.equal(map.size, 3);
  assert.deepEqual(map.lastWrite(k('hot')), st(wall - 1));
  assert.ok(map.lastWrite(k('cold15000')));
  assert.ok(map.lastWrite(k('cold10000')));
  assert.equal(map.lastWrite(k('cold0')), undefined);
});

test('pruning stays linear: many evictions do not rescan forgotten entries', () => {
  // A Map's first entry after many deletions costs a scan of the deleted
  // slots in V8; pruning through it made this quadratic (minutes, not ms).
  const map = new RecentWrites({ maxEntries: 10_000, windowMs: 1000 });
  const started = process.hrtime.bigint();
  for (let i = 0; i < 300_000; i++) map.note(k(`key${i}`), st(i >> 4));
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  assert.ok(map.size <= 10_000);
  assert.ok(ms < 5000, `took ${ms} ms`);
});
