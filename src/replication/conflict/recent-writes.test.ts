import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { compareStamps, type Stamp } from './hlc';
import { RecentWrites } from './recent-writes';

const k = (s: string): Buffer => Buffer.from(s, 'latin1');
const st = (wall: number, logical = 0, nodeId = 'a'): Stamp => ({ wall, logical, nodeId });

/** The stamp remembered for a key, copied out of the reused object. */
function lastWrite(map: RecentWrites, key: Buffer): Stamp | undefined {
  const write = map.lastWriteOf(key);
  return write && { wall: write.wall, logical: write.logical, nodeId: write.nodeId };
}

test('a key never written lets any incoming record win', () => {
  const map = new RecentWrites({ maxEntries: 10, windowMs: 60_000 });
  assert.equal(map.incomingWins(k('x'), st(0)), true);
});

test('an incoming record wins only if it is newer than the last write, or is that write sent again', () => {
  const map = new RecentWrites({ maxEntries: 10, windowMs: 60_000 });
  map.note(k('x'), st(1000, 2, 'a'));
  assert.equal(map.incomingWins(k('x'), st(999, 9, 'b')), false);
  assert.equal(map.incomingWins(k('x'), st(1000, 1, 'b')), false);
  assert.equal(map.incomingWins(k('x'), st(1000, 2, 'b')), true, 'tie on the clock: node id decides');
  assert.equal(map.incomingWins(k('x'), st(1000, 2, 'a')), true, 'the same write sent again (its batch failed) is applied again');
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

test('forget drops a key only while its last write is the one stamped so', () => {
  const map = new RecentWrites({ maxEntries: 10, windowMs: 60_000 });
  map.note(k('x'), st(1000));
  map.note(k('y'), st(1000));
  map.note(k('y'), st(1001));
  map.forget(k('x'), st(1000));
  map.forget(k('y'), st(1000)); // y was written again since: that newer write stays
  assert.equal(map.incomingWins(k('x'), st(1, 0, 'b')), true);
  assert.deepEqual(lastWrite(map, k('y')), st(1001));
  assert.equal(map.size, 1);
  map.note(k('x'), st(1002));
  assert.deepEqual(lastWrite(map, k('x')), st(1002), 'noted again after being forgotten');
});

test('note keeps the newer stamp', () => {
  const map = new RecentWrites({ maxEntries: 10, windowMs: 60_000 });
  map.note(k('x'), st(200));
  map.note(k('x'), st(100));
  assert.deepEqual(lastWrite(map, k('x')), st(200));
  map.note(k('x'), st(300, 0, 'b'));
  assert.deepEqual(lastWrite(map, k('x')), st(300, 0, 'b'));
  assert.equal(map.size, 1);
});

test('entries older than the window are forgotten', () => {
  const map = new RecentWrites({ maxEntries: 100, windowMs: 1000 });
  map.note(k('old'), st(0));
  map.note(k('mid'), st(500));
  map.note(k('new'), st(1200));
  assert.equal(lastWrite(map, k('old')), undefined);
  assert.deepEqual(lastWrite(map, k('mid')), st(500));
  map.note(k('newer'), st(1600));
  assert.equal(lastWrite(map, k('mid')), undefined);
  assert.equal(map.size, 2);
  assert.equal(map.overflowed, 0);
});

test('re-noting a key moves it to the back, so it outlives older keys', () => {
  const map = new RecentWrites({ maxEntries: 2, windowMs: 60_000 });
  map.note(k('a'), st(1));
  map.note(k('b'), st(2));
  map.note(k('a'), st(3));
  map.note(k('c'), st(4)); // over the bound: the front (b) goes
  assert.equal(lastWrite(map, k('b')), undefined);
  assert.deepEqual(lastWrite(map, k('a')), st(3));
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
  assert.equal(lastWrite(map, k('k5')), undefined);
  assert.deepEqual(lastWrite(map, k('k6')), st(600));
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
          assert.equal(map.incomingWins(key, o.stamp), !known || compareStamps(o.stamp, known) >= 0);
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
            const kept = lastWrite(map, k(id));
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
  assert.deepEqual(lastWrite(map, k('hot')), st(wall - 1));
  assert.ok(lastWrite(map, k('cold15000')));
  assert.ok(lastWrite(map, k('cold10000')));
  assert.equal(lastWrite(map, k('cold0')), undefined);
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

/**
 * The semantics RecentWrites must keep, written the obvious way: live entries
 * in an array, oldest first (a key noted with a newer stamp moves to the back).
 */
class Reference {
  readonly fifo: Array<{ id: string; stamp: Stamp }> = [];
  newestWall = 0;
  overflowed = 0;

  constructor(
    readonly maxEntries: number,
    readonly windowMs: number,
  ) {}

  note(id: string, stamp: Stamp): void {
    if (stamp.wall > this.newestWall) this.newestWall = stamp.wall;
    if (stamp.wall < this.newestWall - this.windowMs) return;
    const at = this.fifo.findIndex((e) => e.id === id);
    if (at < 0 || compareStamps(stamp, this.fifo[at]!.stamp) > 0) {
      if (at >= 0) this.fifo.splice(at, 1);
      this.fifo.push({ id, stamp: { ...stamp } });
    }
    while (this.fifo.length > this.maxEntries) {
      if (this.fifo[0]!.stamp.wall >= this.newestWall - this.windowMs) this.overflowed++;
      this.fifo.shift();
    }
    this.forgetBefore(this.newestWall - this.windowMs);
  }

  forgetBefore(wall: number): number {
    let n = 0;
    while (this.fifo.length > 0 && this.fifo[0]!.stamp.wall < wall) {
      this.fifo.shift();
      n++;
    }
    return n;
  }

  lastWrite(id: string): Stamp | undefined {
    return this.fifo.find((e) => e.id === id)?.stamp;
  }

  incomingWins(id: string, stamp: Stamp): boolean {
    const known = this.lastWrite(id);
    return !known || compareStamps(stamp, known) >= 0;
  }
}

/** Everything observable agrees, for every key of the universe. */
function assertSame(map: RecentWrites, ref: Reference, universe: Buffer[], probe: Stamp): void {
  assert.equal(map.size, ref.fifo.length, 'size');
  assert.equal(map.overflowed, ref.overflowed, 'overflowed');
  for (const key of universe) {
    const id = key.toString('latin1');
    const expected = ref.lastWrite(id);
    assert.deepEqual(lastWrite(map, key), expected, `lastWrite ${JSON.stringify(id.slice(0, 20))}`);
    const transient = map.lastWriteOf(key);
    assert.deepEqual(transient && { wall: transient.wall, logical: transient.logical, nodeId: transient.nodeId }, expected);
    assert.equal(map.incomingWins(key, probe), ref.incomingWins(id, probe));
  }
}

/** Keys that stress the layout: binary, differing in one byte, empty, long enough to fill the ring in a few records. */
const universe: Buffer[] = [
  k('a'),
  k('b'),
  k('ab'),
  k('\u00ff'),
  Buffer.from([0x00]),
  Buffer.from([0x00, 0xff]),
  Buffer.from([0x00, 0xfe]),
  Buffer.alloc(0),
  k('x'.repeat(250)),
  k('x'.repeat(249) + 'y'),
  k('z'.repeat(180)),
  ...Array.from({ length: 9 }, (_, i) => k(`key:${String(i).padStart(28, '0')}`)),
];

type Op =
  | { kind: 'note'; key: number; step: number; logical: number; node: string }
  | { kind: 'wins'; key: number; back: number; logical: number; node: string }
  | { kind: 'forget'; back: number };

const node = fc.constantFrom('a', 'b', 'node-c');
const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 8,
    arbitrary: fc.record({
      kind: fc.constant('note' as const),
      key: fc.nat(universe.length - 1),
      step: fc.integer({ min: -30, max: 40 }),
      logical: fc.nat(3),
      node,
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('wins' as const), key: fc.nat(universe.length - 1), back: fc.nat(60), logical: fc.nat(3), node }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('forget' as const), back: fc.nat(80) }) },
);

test('property: matches the reference model over random operations (eviction order, window, overflow)', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 12 }),
      fc.constantFrom(0, 10, 60, 500, 1e9),
      fc.array(opArb, { maxLength: 300, size: 'max' }),
      (maxEntries, windowMs, ops) => {
        const map = new RecentWrites({ maxEntries, windowMs });
        const ref = new Reference(maxEntries, windowMs);
        let wall = 1000; // the writers' clock: mostly forward, sometimes behind
        for (const op of ops) {
          switch (op.kind) {
            case 'note': {
              wall = Math.max(0, wall + op.step);
              const stamp = st(wall, op.logical, op.node);
              map.note(universe[op.key]!, stamp);
              ref.note(universe[op.key]!.toString('latin1'), stamp);
              break;
            }
            case 'wins': {
              const stamp = st(Math.max(0, wall - op.back), op.logical, op.node);
              assert.equal(map.incomingWins(universe[op.key]!, stamp), ref.incomingWins(universe[op.key]!.toString('latin1'), stamp));
              break;
            }
            case 'forget':
              assert.equal(map.forgetBefore(wall - op.back), ref.forgetBefore(wall - op.back));
              break;
          }
          assert.equal(map.size, ref.fifo.length);
        }
        assertSame(map, ref, universe, st(wall - 20, 1, 'b'));
      },
    ),
    { numRuns: 600 },
  );
});

/** xorshift32: a reproducible stream for the long runs below. */
function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x1_0000_0000;
  };
}

test('long random runs match the reference model: ring wrap, growth, compaction of dead records, shrinking, slot reuse', () => {
  for (const seed of [1, 2, 3]) {
    const random = prng(seed);
    const keys = Array.from({ length: 600 }, (_, i) => {
      const key = Buffer.alloc(2 + Math.floor(random() * 120));
      for (let j = 0; j < key.length; j++) key[j] = Math.floor(random() * 256);
      key.writeUInt16LE(i, 0); // distinct
      return key;
    });
    const map = new RecentWrites({ maxEntries: 200, windowMs: 2000 });
    const ref = new Reference(200, 2000);
    let wall = 0;
    for (let i = 0; i < 40_000; i++) {
      // Phases: a few hot keys (dead records pile up), many keys (eviction
      // by maxEntries), and quiet spells longer than the window (the ring drains).
      const phase = Math.floor(i / 4000) % 3;
      if (phase === 2 && i % 4000 === 0) wall += 5000;
      wall += random() < 0.1 ? -3 : Math.floor(random() * 3);
      const pick = phase === 0 ? Math.floor(random() * 5) : Math.floor(random() * keys.length);
      const stamp = st(wall, Math.floor(random() * 2), random() < 0.5 ? 'a' : 'b');
      map.note(keys[pick]!, stamp);
      ref.note(keys[pick]!.toString('latin1'), stamp);
      if (random() < 0.01) assert.equal(map.forgetBefore(wall - 1500), ref.forgetBefore(wall - 1500));
      assert.equal(map.size, ref.fifo.length);
      assert.deepEqual(lastWrite(map, keys[pick]!), ref.lastWrite(keys[pick]!.toString('latin1')));
      if (i % 2000 === 1999) assertSame(map, ref, keys, st(wall - 10, 0, 'b'));
    }
    assert.ok(map.overflowed > 0, 'the bound was reached');
  }
});

test('keys whose hashes are equal stay distinct', () => {
  const map = new RecentWrites({ maxEntries: 50, windowMs: 1e9 });
  const ref = new Reference(50, 1e9);
  // Three hash values for every key: long probe chains, and removals from the middle of them.
  Object.defineProperty(map, 'hash', { value: (key: Uint8Array, length: number) => (length > 0 ? key[length - 1]! % 3 : 0) });
  const random = prng(7);
  const keys = Array.from({ length: 120 }, (_, i) => k(`k${i}`));
  for (let i = 0; i < 5000; i++) {
    const key = keys[Math.floor(random() * keys.length)]!;
    const stamp = st(i, 0, random() < 0.5 ? 'a' : 'b');
    map.note(key, stamp);
    ref.note(key.toString('latin1'), stamp);
    for (const other of keys) assert.deepEqual(lastWrite(map, other), ref.lastWrite(other.toString('latin1')));
  }
  assert.equal(map.size, 50);
});

test('lastWriteOf: the stamp in a reused object, also for a key that is a view into a larger buffer', () => {
  const map = new RecentWrites({ maxEntries: 10, windowMs: 60_000 });
  map.note(Buffer.from([0x41, 0xe9]), st(5, 1, 'b'));
  map.note(k('other'), st(6, 0, 'a'));
  const read = Buffer.from([0x20, 0x41, 0xe9, 0x20]);
  const first = map.lastWriteOf(read.subarray(1, 3));
  assert.deepEqual(first && { ...first }, { ...st(5, 1, 'b'), expiresAt: null, deleted: false });
  const second = map.lastWriteOf(k('other'));
  assert.equal(second, first, 'the same object, reused');
  assert.deepEqual(second && { ...second }, { ...st(6, 0, 'a'), expiresAt: null, deleted: false });
  assert.equal(map.lastWriteOf(read.subarray(1, 2)), undefined);
  assert.equal(map.lastWriteOf(Buffer.alloc(1000, 0x78)), undefined);
});

/** The map's ring, as the map holds it: for the tests of its memory. */
const logOf = (map: RecentWrites): Buffer => (map as unknown as { log: Buffer }).log;
const logBytes = (map: RecentWrites): number => logOf(map).length;

test('memory stays proportional to what is remembered', () => {
  const map = new RecentWrites({ maxEntries: 100, windowMs: 1000 });
  // A hot key: every note leaves a dead record, which must be reclaimed.
  for (let i = 0; i < 100_000; i++) map.note(k('hot'), st(i >> 8));
  assert.ok(logBytes(map) <= 4096, `hot key: ${logBytes(map)} bytes`);
  // Churn at the bound: records are freed at the head and their space reused.
  for (let i = 0; i < 100_000; i++) map.note(k(`key:${String(i).padStart(28, '0')}`), st(1000 + (i >> 8)));
  assert.equal(map.size, 100);
  assert.ok(logBytes(map) <= 100 * 52 * 2, `churn: ${logBytes(map)} bytes`);
  // The window passes over everything: the ring gives its memory back.
  map.note(k('later'), st(1_000_000));
  assert.equal(map.size, 1);
  assert.equal(logBytes(map), 1024);
});

test('the ring grows, compacts and shrinks in its one buffer: no second ring is ever held beside it', () => {
  const ring = (map: RecentWrites): ArrayBufferLike => logOf(map).buffer;
  const map = new RecentWrites({ maxEntries: 50_000, maxBytes: 2 * 1024 * 1024, windowMs: 1000 });
  const first = ring(map);
  const sizes = new Set<number>();
  // A burst of new keys grows the ring; a hot key leaves dead records to compact; the window passing shrinks it.
  for (let i = 0; i < 40_000; i++) {
    map.note(k(`key:${String(i).padStart(28, '0')}`), st(i >> 10));
    if (i % 3 === 0) map.note(k('hot'), st(i >> 10, i));
    sizes.add(logBytes(map));
  }
  map.note(k('later'), st(1_000_000));
  sizes.add(logBytes(map));
  assert.ok(sizes.size > 5, `the ring was rewritten at ${sizes.size} sizes`);
  assert.equal(ring(map), first, 'the same buffer throughout');
  assert.equal(map.size, 1);
  assert.ok(lastWrite(map, k('later')));
});

test('a key longer than a record can hold is refused, and never found', () => {
  const map = new RecentWrites({ maxEntries: 10, windowMs: 60_000 });
  assert.throws(() => map.note(Buffer.alloc(0x10000), st(1)), RangeError);
  assert.equal(lastWrite(map, Buffer.alloc(0x10000)), undefined);
  assert.equal(map.size, 0);
});

test('an expiry noted with a stamp comes back with it; forEachNewerThan lists the newer keys', () => {
  const map = new RecentWrites({ maxEntries: 10, windowMs: 60_000 });
  map.note(k('old'), st(100));
  map.note(k('touched'), st(200, 0, 'b'), 123_456);
  map.note(k('new'), st(300));
  assert.equal(map.lastWriteOf(k('touched'))?.expiresAt, 123_456);
  assert.equal(map.lastWriteOf(k('new'))?.expiresAt, null);
  const newer: string[] = [];
  map.forEachNewerThan(st(150), (key) => newer.push(key.toString('latin1')));
  assert.deepEqual(newer, ['touched', 'new']);
});

test('a delete is remembered as one until the key is written again, also across a rewrite of the ring', () => {
  const map = new RecentWrites({ maxEntries: 1000, windowMs: 60_000 });
  map.note(k('gone'), st(100, 0, 'b'), null, true);
  map.note(k('kept'), st(100));
  assert.equal(map.lastWriteOf(k('gone'))?.deleted, true);
  assert.equal(map.lastWriteOf(k('kept'))?.deleted, false);
  for (let i = 0; i < 500; i++) map.note(k(`filler-${i}`), st(200 + i));
  assert.equal(map.lastWriteOf(k('gone'))?.deleted, true, 'after the ring grew');
  map.note(k('gone'), st(900, 0, 'a'));
  assert.equal(map.lastWriteOf(k('gone'))?.deleted, false);
});

test('held, nothing is forgotten for its age; only the size bounds apply, and count as overflows', () => {
  const map = new RecentWrites({ maxEntries: 3, windowMs: 100 });
  map.hold(true);
  map.note(k('a'), st(0));
  map.note(k('b'), st(1000));
  assert.equal(map.incomingWins(k('a'), st(-1, 0, 'b')), false, 'remembered past the window');
  map.note(k('c'), st(1001));
  map.note(k('d'), st(1002));
  assert.equal(map.size, 3);
  assert.equal(map.overflowed, 1, 'a was forced out while held');
  map.hold(false);
  assert.equal(map.size, 3, 'b, c, d are inside the window');
  map.note(k('e'), st(5000));
  assert.equal(map.size, 1);
});

test('a byte bound forgets the oldest keys first', () => {
  const map = new RecentWrites({ maxEntries: 100, maxBytes: 3 * (29 + 10), windowMs: 60_000 });
  for (let i = 0; i < 5; i++) map.note(k(`key-${String(i).padStart(6, '0')}`), st(i));
  assert.equal(map.size, 3);
  assert.equal(map.lastWriteOf(k('key-000001')), undefined);
  assert.ok(map.lastWriteOf(k('key-000004')));
});
