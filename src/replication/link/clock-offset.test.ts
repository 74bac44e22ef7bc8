import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ClockOffset } from './clock-offset';

test('a frame that waited is placed back at the moment it was sent', () => {
  const offset = new ClockOffset();
  // The peer's clock is 5 s ahead; the link's fastest delivery is 1 ms.
  for (let t = 0; t < 1000; t += 250) offset.observe(t + 5000, t + 1);
  // Sent at peer time 6000 (our 1000), stuck 3 s, arrives at our 4001.
  assert.equal(offset.localTime(6000, 4001), 1001);
});

test('never later than arrival, and arrival itself before anything is known', () => {
  const offset = new ClockOffset();
  assert.equal(offset.localTime(123, 50), 50);
  offset.observe(100, 90); // the peer's clock is behind ours
  assert.equal(offset.localTime(200, 190), 190);
  assert.ok(offset.localTime(200, 500) <= 500);
});

test('a clock step is forgotten after two windows', () => {
  const offset = new ClockOffset(1000);
  for (let t = 0; t < 3000; t += 100) offset.observe(t, t + 1); // offset 1
  // The peer's clock steps back 10 s: every frame now looks 10 s "late" at first...
  for (let t = 3000; t < 6000; t += 100) offset.observe(t - 10_000, t + 1);
  // ...until the old minimum rolls out of both windows: then a frame as fast as any is not late at all.
  assert.equal(offset.localTime(6000 - 10_000, 6001), 6001);
});

test("a new link starts from the last link's estimate: a backlog replayed through full buffers is not taken for clock offset", () => {
  const first = new ClockOffset();
  for (let t = 0; t < 1000; t += 250) first.observe(t + 5000, t + 1); // peer 5 s ahead, 1 ms link
  const second = new ClockOffset();
  // Every frame on the new link so far sat 3 s in buffers.
  for (let t = 2000; t < 2500; t += 100) second.observe(t + 5000 - 3000, t + 1);
  assert.equal(second.localTime(4400, 2401), 2401, 'alone, the queue looks like no delay at all');
  second.carryOver(first);
  assert.equal(second.localTime(4400, 2401), -599, 'with the carried-over estimate, the 3 s in buffers show');
});
