import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { compareHlc, compareStamps, HLC_LOGICAL_MAX, HybridClock, type Hlc } from './hlc';

function manualClock(start: number): { clock: () => number; set(t: number): void } {
  let t = start;
  return {
    clock: () => t,
    set: (v) => {
      t = v;
    },
  };
}

test('follows the wall clock when it moves forward', () => {
  const wall = manualClock(1000);
  const hlc = new HybridClock('a', wall.clock);
  assert.deepEqual(hlc.now(), { wall: 1000, logical: 0 });
  wall.set(1005);
  assert.deepEqual(hlc.now(), { wall: 1005, logical: 0 });
});

test('counts logically while the wall clock stalls', () => {
  const hlc = new HybridClock('a', () => 1000);
  assert.deepEqual(hlc.now(), { wall: 1000, logical: 0 });
  assert.deepEqual(hlc.now(), { wall: 1000, logical: 1 });
  assert.deepEqual(hlc.now(), { wall: 1000, logical: 2 });
});

test('stays monotonic when the wall clock goes backwards', () => {
  const wall = manualClock(5000);
  const hlc = new HybridClock('a', wall.clock);
  const first = hlc.now();
  wall.set(1000);
  const second = hlc.now();
  assert.deepEqual(second, { wall: 5000, logical: 1 });
  assert.ok(compareHlc(second, first) > 0);
});

test('observing a stamp from the future makes later local stamps greater', () => {
  const hlc = new HybridClock('a', () => 1000);
  hlc.observe({ wall: 9000, logical: 7 });
  assert.deepEqual(hlc.last, { wall: 9000, logical: 8 });
  assert.deepEqual(hlc.now(), { wall: 9000, logical: 9 });
});

test('observing an old stamp still advances the logical counter', () => {
  const hlc = new HybridClock('a', () => 1000);
  hlc.now();
  hlc.observe({ wall: 10, logical: 99 });
  assert.deepEqual(hlc.last, { wall: 1000, logical: 1 });
});

test('observing the same wall time takes the larger logical count', () => {
  const hlc = new HybridClock('a', () => 1000);
  hlc.now();
  hlc.observe({ wall: 1000, logical: 41 });
  assert.deepEqual(hlc.last, { wall: 1000, logical: 42 });
});

test('the wall clock overtaking everything resets the logical counter', () => {
  const wall = manualClock(1000);
  const hlc = new HybridClock('a', wall.clock);
  hlc.observe({ wall: 1000, logical: 5 });
  wall.set(2000);
  hlc.observe({ wall: 1500, logical: 3 });
  assert.deepEqual(hlc.last, { wall: 2000, logical: 0 });
});

test('logical overflow borrows the next millisecond instead of leaving u32', () => {
  const hlc = new HybridClock('a', () => 1000);
  hlc.observe({ wall: 1000, logical: HLC_LOGICAL_MAX - 1 });
  assert.deepEqual(hlc.last, { wall: 1000, logical: HLC_LOGICAL_MAX });
  assert.deepEqual(hlc.now(), { wall: 1001, logical: 0 });
});

test('stamp() carries the node id', () => {
  const hlc = new HybridClock('node-1', () => 42);
  assert.deepEqual(hlc.stamp(), { wall: 42, logical: 0, nodeId: 'node-1' });
});

test('compareStamps orders by wall, then logical, then node id', () => {
  assert.ok(compareStamps({ wall: 1, logical: 9, nodeId: 'z' }, { wall: 2, logical: 0, nodeId: 'a' }) < 0);
  assert.ok(compareStamps({ wall: 2, logical: 1, nodeId: 'a' }, { wall: 2, logical: 0, nodeId: 'z' }) > 0);
  assert.ok(compareStamps({ wall: 2, logical: 1, nodeId: 'a' }, { wall: 2, logical: 1, nodeId: 'b' }) < 0);
  assert.equal(compareStamps({ wall: 2, logical: 1, nodeId: 'a' }, { wall: 2, logical: 1, nodeId: 'a' }), 0);
});

test('property: any interleaving of wall-clock jumps, local events and observations is strictly monotonic', () => {
  const step = fc.oneof(
    fc.record({ kind: fc.constant('tick' as const), to: fc.integer({ min: 0, max: 1e6 }) }),
    fc.record({ kind: fc.constant('now' as const) }),
    fc.record({
      kind: fc.constant('observe' as const),
      remote: fc.record({ wall: fc.integer({ min: 0, max: 1e6 }), logical: fc.integer({ min: 0, max: HLC_LOGICAL_MAX }) }),
    }),
  );
  fc.assert(
    fc.property(fc.array(step, { maxLength: 200 }), (steps) => {
      const wall = manualClock(0);
      const hlc = new HybridClock('a', wall.clock);
      let previous: Hlc = hlc.last;
      for (const s of steps) {
        if (s.kind === 'tick') {
          wall.set(s.to);
          continue;
        }
        if (s.kind === 'now') {
          const stamp = hlc.now();
          assert.ok(compareHlc(stamp, previous) > 0, 'now() must exceed everything before');
          assert.ok(stamp.wall >= wall.clock(), 'never behind the wall clock');
          assert.ok(stamp.logical <= HLC_LOGICAL_MAX);
          previous = stamp;
        } else {
          hlc.observe(s.remote);
          const after = hlc.last;
          assert.ok(compareHlc(after, previous) > 0);
          assert.ok(compareHlc(after, s.remote) > 0, 'observe() must pass the remote stamp');
          previous = after;
        }
      }
    }),
    { numRuns: 2000 },
  );
});

test('property: compareStamps is a total order', () => {
  const stamp = fc.record({
    wall: fc.integer({ min: 0, max: 3 }),
    logical: fc.integer({ min: 0, max: 3 }),
    nodeId: fc.constantFrom('a', 'b', 'c'),
  });
  fc.assert(
    fc.property(stamp, stamp, stamp, (a, b, c) => {
      assert.ok(Math.sign(compareStamps(a, b)) === -Math.sign(compareStamps(b, a)));
      if (compareStamps(a, b) === 0) assert.deepEqual(a, b);
      if (compareStamps(a, b) <= 0 && compareStamps(b, c) <= 0) assert.ok(compareStamps(a, c) <= 0);
    }),
    { numRuns: 3000 },
  );
});
