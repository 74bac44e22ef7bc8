import assert from 'node:assert/strict';
import { afterEach, beforeEach, mock, test } from 'node:test';
import { StaleClock } from './stale-clock';

let readBack: string[];
let drops: number;
let clock: StaleClock;

beforeEach(() => {
  mock.timers.enable({ apis: ['setTimeout'] });
  readBack = [];
  drops = 0;
  clock = new StaleClock(
    (key) => readBack.push(key.toString('latin1')),
    () => drops,
  );
});
afterEach(() => mock.timers.reset());

const key = (name: string) => Buffer.from(name, 'latin1');

test('without a slow poll nothing is read back', () => {
  clock.answered(key('a'), 1000);
  clock.polled(996, 1001);
  mock.timers.tick(5000);
  assert.deepEqual(readBack, []);
});

test('items answered while a slow poll waited (the burst it ends with), and after it, are read back once the clock has ticked', () => {
  clock.answered(key('before-the-poll'), 2400);
  clock.answered(key('burst'), 9000);
  clock.polled(2500, 9005);
  clock.answered(key('after'), 9500);
  clock.answered(key('much-later'), 20000);
  mock.timers.tick(1000);
  assert.deepEqual(readBack, [], 'not before the tick');
  mock.timers.tick(1000);
  assert.deepEqual(readBack.sort(), ['after', 'burst']);
});

test('a key is read back once per tick however often it is answered', () => {
  clock.polled(-1000, 1000);
  for (let i = 0; i < 5; i++) clock.answered(key('hot'), 1000 + i);
  mock.timers.tick(2000);
  assert.deepEqual(readBack, ['hot']);
});

test('the ring keeps the newest keys: a burst larger than it still has its newest read back, and nothing twice', () => {
  for (let i = 0; i < 10_000; i++) clock.answered(key(`k${i}`), 5000);
  clock.polled(2001, 5001);
  clock.polled(2002, 5002);
  mock.timers.tick(2000);
  assert.equal(readBack.length, 4096);
  assert.ok(readBack.includes('k9999') && !readBack.includes('k0'));
});

test('a read again is dropped if the connection dropped meanwhile (memcached may have restarted empty)', () => {
  clock.polled(0, 2000);
  clock.answered(key('before-the-drop'), 2100);
  drops++;
  clock.answered(key('after-the-drop'), 2200);
  mock.timers.tick(2000);
  assert.deepEqual(readBack, ['after-the-drop']);
});

test('a write cut off unrun in a stopped memcached is read again once memcached answers a poll asked after the cut, and its clock ticked', () => {
  clock.afterResume(key('cut-off'), 1000);
  clock.polled(900, 1500); // asked before the cut: it says nothing of what memcached did with the write since
  mock.timers.tick(5000);
  assert.deepEqual(readBack, []);
  clock.polled(1200, 1300); // a quick poll asked after the cut: memcached runs again (a pause under 1 s is no stale clock)
  mock.timers.tick(1000);
  assert.deepEqual(readBack, [], 'not before the tick');
  mock.timers.tick(200);
  assert.deepEqual(readBack, ['cut-off']);
  clock.polled(3000, 3010);
  mock.timers.tick(5000);
  assert.deepEqual(readBack, ['cut-off'], 'once');
});
