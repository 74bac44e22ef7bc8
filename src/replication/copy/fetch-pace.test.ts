import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ClientLatency, type LatencySnapshot } from '../../proxy/client-latency';
import { FetchPace } from './fetch-pace';

test('without a cap or client latency, every fetch goes', () => {
  const pace = new FetchPace({ cap: 0 }, () => assert.fail('no wake when unpaced'));
  for (let i = 0; i < 1000; i++) assert.equal(pace.take(), true);
});

test('a cap: tokens at the rate, bursts of a tenth of a second, a wake when none is left', async () => {
  let now = 1_000_000;
  let woken = 0;
  const pace = new FetchPace(
    { cap: 1000 },
    () => woken++,
    () => now,
  );
  assert.equal(pace.take(), false, 'no token at the start');
  now += 50; // 50 tokens
  let taken = 0;
  while (pace.take()) taken++;
  assert.equal(taken, 50);
  now += 10_000; // idle: the bucket holds a tenth of a second's worth, not ten seconds'
  taken = 0;
  while (pace.take()) taken++;
  assert.equal(taken, 100);
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(woken, 1, 'one wake for the calls that found none');
  pace.stop();
});

/** Client latency with `count` replies of `us` µs each (and as many loop samples `loopUs` late), on top of what it had. */
function replies(latency: ClientLatency, count: number, us: number, loopUs = 100): LatencySnapshot {
  for (let i = 0; i < count; i++) latency.observe(us / 1e6);
  for (let i = 0; i < 10; i++) latency.observeLoop(loopUs / 1e6);
  return latency.snapshot();
}

/** A self-paced copy starting now, its clients' replies before it `us` µs each and the loop `loopUs` late. */
function selfPaced(us: number, loopUs?: number): { latency: ClientLatency; pace: FetchPace } {
  const latency = new ClientLatency();
  replies(latency, 10_000, us, loopUs);
  return { latency, pace: new FetchPace({ cap: 0, clientLatency: () => latency.snapshot() }, () => {}) };
}

test('self-paced: full speed while clients are idle, halved while their p99 over the last second is over 1.5 times what it was, raised again once it is not', () => {
  const { latency, pace } = selfPaced(400, 500); // before the copy: p99 400 µs, the loop 500 µs late at most
  const start = pace.rate;
  assert.ok(start > 0 && start < Infinity);
  for (let i = 0; i < 10; i++) pace.adjust(latency.snapshot()); // idle intervals
  assert.equal(pace.rate, Infinity, 'idle clients: unpaced');
  pace.adjust(replies(latency, 1000, 2000)); // busy, p99 2 ms: over 1.5 times 400 µs
  const slowed = pace.rate;
  assert.equal(slowed, 20_000, 'back from idle at the rate it had before the pause');
  for (let i = 0; i < 2; i++) pace.adjust(replies(latency, 1000, 2000));
  assert.equal(pace.rate, slowed, 'not judged again before three intervals came after the return');
  pace.adjust(replies(latency, 1000, 2000));
  assert.equal(pace.rate, slowed / 2, 'judged on what came after the cut: still slow');
  for (let i = 0; i < 100; i++) pace.adjust(replies(latency, 1000, 2000));
  assert.equal(pace.rate, 1000, 'never below the least rate: the copy progresses');
  // Within 1.5 times the baseline from now on: raised once the window holds only such replies (three intervals after a cut).
  let good = 0;
  while (pace.rate === 1000 && good < 10) {
    pace.adjust(replies(latency, 1000, 500));
    good++;
  }
  assert.equal(pace.rate, 1100);
  assert.ok(good <= 6, `${good} intervals`);
  pace.stop();
});

test('self-paced: one slow tenth of a second in a good second does not cut the rate', () => {
  const { latency, pace } = selfPaced(400);
  for (let i = 0; i < 10; i++) pace.adjust(replies(latency, 1000, 300));
  const before = pace.rate;
  pace.adjust(replies(latency, 50, 3000)); // 50 slow replies of ~9,050 in the window (under 1%): its p99 is still 300 µs
  assert.equal(pace.rate, before * 1.1);
  pace.stop();
});

test('self-paced: an event loop that runs late by more than before plus half the p99 cuts the rate (requests wait to be read)', () => {
  const { latency, pace } = selfPaced(400, 500);
  for (let i = 0; i < 5; i++) pace.adjust(replies(latency, 1000, 300, 600)); // the loop late by 600 µs: under 500 + 200
  const fine = pace.rate;
  assert.equal(fine, 20_000 * 1.1 ** 3, 'raised: judged from the third interval on');
  pace.adjust(replies(latency, 1000, 300, 5000)); // the replies are fast, but the loop keeps requests waiting 5 ms
  assert.equal(pace.rate, fine / 2);
  pace.stop();
});

test('self-paced under a cap: never above it', () => {
  const latency = new ClientLatency();
  const pace = new FetchPace({ cap: 5000, clientLatency: () => latency.snapshot() }, () => {});
  for (let i = 0; i < 10; i++) pace.adjust(latency.snapshot());
  assert.equal(pace.rate, 5000);
  pace.stop();
});

test('self-paced: clients back from a pause find the copy at the rate it had while they were busy, not at what it sped up to', () => {
  const { latency, pace } = selfPaced(400);
  for (let i = 0; i < 5; i++) pace.adjust(replies(latency, 1000, 300));
  const busy = pace.rate;
  for (let i = 0; i < 5; i++) pace.adjust(latency.snapshot()); // a pause: the copy speeds up
  assert.equal(pace.rate, busy * 32);
  pace.adjust(replies(latency, 1000, 300));
  assert.equal(pace.rate, busy);
  pace.stop();
});
