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

/**
 * Both directions of one link until `until` ms: `ahead` is the peer's clock minus ours; every 250 ms a frame goes
 * each way, ours arriving after `outDelay(t)`, the peer's after `inDelay(t)`; the peer's pings carry its inbound
 * minimum (computed by a ClockOffset of its own). Returns ours.
 */
function linkBothWays(opts: {
  ahead: number;
  inDelay: (t: number) => number;
  outDelay: (t: number) => number;
  until: number;
  peerReports?: boolean;
}): ClockOffset {
  const ours = new ClockOffset();
  const theirs = new ClockOffset();
  for (let t = 0; t < opts.until; t += 250) {
    theirs.observe(t, t + opts.outDelay(t) + opts.ahead); // our frame, sent at our t, arrives on their clock
    ours.observe(t + opts.ahead, t + opts.inDelay(t)); // theirs, sent at their t + ahead, arrives on ours
    const reported = theirs.inbound();
    if (opts.peerReports !== false && reported !== null) ours.observePeer(reported);
  }
  return ours;
}

test('a queue standing on the link longer than both windows is not taken for clock offset', () => {
  // The peer's clock is 5 s ahead; 1 ms each way, then from 10 s on every frame toward us waits 25 s (a peer whose
  // memcached stores a backlog slowly) while ours to the peer still take 1 ms.
  const inDelay = (t: number) => (t < 10_000 ? 1 : 25_000);
  const ours = linkBothWays({ ahead: 5000, inDelay, outDelay: () => 1, until: 60_000 });
  // A record sent at the peer's 65000 (our 60000) arrives at our 85000: it spent 25 s on the way, not 0.
  assert.equal(ours.localTime(65_000, 85_000), 60_001);
  // The same without the peer's reports (an older peer): the queue passes for offset once both windows hold only it.
  const alone = linkBothWays({ ahead: 5000, inDelay, outDelay: () => 1, until: 60_000, peerReports: false });
  assert.equal(alone.localTime(65_000, 85_000), 85_000);
});

test('a queue standing the other way leaves the estimate alone too', () => {
  const ours = linkBothWays({ ahead: -3000, inDelay: () => 1, outDelay: (t) => (t < 10_000 ? 1 : 25_000), until: 60_000 });
  assert.equal(ours.localTime(57_000, 60_002), 60_001);
});

test('a clock step with no queue is followed once the windows roll, with the peer reporting', () => {
  // The peer's clock steps 10 s forward at 30 s: its frames look 10 s early at once, ours to it 10 s late.
  const ours = new ClockOffset();
  const theirs = new ClockOffset();
  for (let t = 0; t < 60_000; t += 250) {
    const ahead = t < 30_000 ? 0 : 10_000;
    theirs.observe(t, t + 1 + ahead);
    ours.observe(t + ahead, t + 1);
    ours.observePeer(theirs.inbound()!);
  }
  assert.equal(ours.localTime(70_000, 60_001), 60_001);
});

test('what a link settled on carries over to the next one', () => {
  const first = linkBothWays({ ahead: 5000, inDelay: () => 1, outDelay: () => 1, until: 5000 });
  const second = new ClockOffset();
  second.carryOver(first);
  // The new link's frames all waited 25 s so far, and the peer reports its side as fast as before.
  for (let t = 100_000; t < 130_000; t += 250) second.observe(t + 5000 - 25_000, t);
  second.observePeer(5000 + 1); // its clock is 5 s ahead of ours, our frames reach it in 1 ms
  assert.equal(second.localTime(135_000 - 25_000, 130_000), 105_001);
});
