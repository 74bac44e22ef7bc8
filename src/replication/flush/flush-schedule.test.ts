import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RELATIVE_EXPTIME_MAX } from '../../protocol/text/expiry';
import { FlushSchedule, flushTiming, type FlushMemory } from './flush-schedule';
import type { Stamp } from '../conflict/hlc';

const st = (wall: number, nodeId = 'a'): Stamp => ({ wall, logical: 0, nodeId });

test("flushTiming reads flush_all's argument as memcached does", () => {
  const now = 1_800_000_000;
  const started = now - 3600;
  assert.deepEqual(flushTiming(0, now, started), { kind: 'now' });
  assert.deepEqual(flushTiming(-1, now, started), { kind: 'now' }, 'negative: at once');
  assert.deepEqual(flushTiming(5, now, started), { kind: 'delayed', delayMs: 5000 });
  assert.deepEqual(flushTiming(RELATIVE_EXPTIME_MAX, now, started), { kind: 'delayed', delayMs: RELATIVE_EXPTIME_MAX * 1000 });
  assert.deepEqual(flushTiming(RELATIVE_EXPTIME_MAX + 1, now, started), { kind: 'cancel' }, '1970: before memcached started');
  assert.deepEqual(flushTiming(started + 10, now, started), { kind: 'now' }, 'past, but after memcached started');
  assert.deepEqual(flushTiming(now + 60, now, started), { kind: 'delayed', delayMs: 60_000 });
  assert.deepEqual(flushTiming(0xffff_ffff, now, started), { kind: 'delayed', delayMs: (0xffff_ffff - now) * 1000 });
});

test('an immediate flush erases older records only', () => {
  const flushes = new FlushSchedule(() => 1000);
  flushes.local(st(500), { kind: 'now' });
  assert.equal(flushes.erases(st(400, 'b')), true);
  assert.equal(flushes.erases(st(600, 'b')), false);
});

test('a delayed flush erases nothing until its moment, then everything before it', () => {
  let now = 1000;
  const flushes = new FlushSchedule(() => now);
  flushes.local(st(1000), { kind: 'delayed', delayMs: 2000 });
  assert.equal(flushes.erases(st(999, 'b')), false, 'writes keep replicating during the delay');
  now = 3001;
  assert.equal(flushes.erases(st(2500, 'b')), true, 'written during the delay: flushed at the moment');
  assert.equal(flushes.erases(st(3500, 'b')), false);
});

test("the peer's delayed flush is scheduled with what is left of it; an older one is superseded", () => {
  const flushes = new FlushSchedule(() => 1000);
  assert.deepEqual(flushes.incoming(st(900, 'b'), { kind: 'delayed', delayMs: 10_000 }, 9_900), { kind: 'schedule', at: st(10_900, 'b') });
  flushes.local(st(950), { kind: 'cancel' });
  assert.equal(flushes.state.pendingAt, null);
  flushes.local(st(1000), { kind: 'delayed', delayMs: 5000 });
  assert.deepEqual(flushes.incoming(st(990, 'b'), { kind: 'delayed', delayMs: 60_000 }, 59_000), { kind: 'skip' }, 'replaced by the newer command');
  assert.deepEqual(flushes.incoming(st(990, 'b'), { kind: 'cancel' }, 0), { kind: 'skip' });
});

test('a due flush from the peer flushes now, keeps what came after it, and puts back a newer schedule', () => {
  const flushes = new FlushSchedule(() => 10_000);
  flushes.local(st(9000), { kind: 'delayed', delayMs: 20_000 });
  const action = flushes.incoming(st(8000, 'b'), { kind: 'now' }, 0);
  assert.deepEqual(action, { kind: 'flush', moment: st(8000, 'b'), reschedule: st(29_000) });
  assert.equal(flushes.erases(st(7999)), true);
  assert.equal(flushes.erases(st(8001)), false);
  assert.deepEqual(flushes.incoming(st(7000, 'b'), { kind: 'now' }, 0), { kind: 'skip' }, 'older than a flush already done');
});

test('every change is told (to keep it across restarts), and what a restarted memrepl kept is restored', () => {
  let now = 1000;
  const pendings: Array<number | null> = [];
  const floors: Array<number | null> = [];
  const events = { pending: (at: Stamp | null) => pendings.push(at?.wall ?? null), changed: ({ floor }: FlushMemory) => floors.push(floor?.wall ?? null) };
  const flushes = new FlushSchedule(() => now, events);
  flushes.local(st(1000), { kind: 'delayed', delayMs: 5000 });
  flushes.incoming(st(1100, 'b'), { kind: 'cancel' }, 0);
  flushes.local(st(1200), { kind: 'now' });
  assert.deepEqual(pendings, [6000, null, null]);
  assert.equal(floors.at(-1), 1200);
  const restarted = new FlushSchedule(() => now);
  assert.deepEqual(restarted.restore({ floor: st(1200), pending: { command: st(1300), at: st(6300) } }), { command: st(1300), at: st(6300) });
  assert.equal(restarted.erases(st(1100, 'b')), true, 'a record resent from before the last flush stays flushed');
  assert.equal(restarted.erases(st(5000, 'b')), false);
  now = 6301;
  assert.equal(restarted.erases(st(5000, 'b')), true, 'flushes at its moment as if never forgotten');
  assert.equal(new FlushSchedule(() => now).restore({ floor: null, pending: { command: st(1000), at: st(6000) } }), null, 'its moment is past');
});

test('in the last second before a scheduled flush, a record stamped before its moment is already erased (memcached may have cut)', () => {
  let now = 1000;
  const flushes = new FlushSchedule(() => now);
  flushes.local(st(1000), { kind: 'delayed', delayMs: 5000 });
  assert.equal(flushes.erases(st(1500, 'b')), false, 'well before the moment: it still shows on its origin');
  now = 4950;
  assert.equal(flushes.erases(st(1500, 'b')), true);
  assert.equal(flushes.erases(st(6001, 'b')), false, 'stamped after the moment');
});

test("a copy's item not remembered is stamped just after the newest flush memcached has surely run here", () => {
  let now = 10_000;
  const flushes = new FlushSchedule(() => now);
  assert.deepEqual(flushes.survivorStamp(), { wall: 1, logical: 0 }, 'none yet: older than any flush the peer knows');
  // The peer's flush: judged at once, but run only once memcached answered it.
  const action = flushes.incoming(st(9000, 'b'), { kind: 'now' }, 0);
  assert.equal(action.kind, 'flush');
  assert.deepEqual(flushes.survivorStamp(), { wall: 1, logical: 0 }, 'read before memcached ran it: the item goes with it on the peer');
  flushes.ran(st(9000, 'b'));
  assert.deepEqual(flushes.survivorStamp(), { wall: 9000, logical: 1 });
  assert.equal(flushes.erases({ ...flushes.survivorStamp(), nodeId: '' }), false, 'it outlived the flush: the peer keeps it');
  // A delayed one counts once memcached's one-second clock has surely passed its moment.
  flushes.local(st(10_000), { kind: 'delayed', delayMs: 1000 });
  now = 11_500;
  assert.deepEqual(flushes.survivorStamp(), { wall: 9000, logical: 1 });
  now = 13_000;
  assert.deepEqual(flushes.survivorStamp(), { wall: 11_000, logical: 1 });
});
