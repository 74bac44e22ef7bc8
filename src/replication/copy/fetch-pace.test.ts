import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ClientLatency } from '../../proxy/client-latency';
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

/** Client latency with `replies` replies of `us` µs each, on top of what it had. */
function replies(latency: ClientLatency, count: number, us: number): Float64Array {
  for (let i = 0; i < count; i++) latency.observe(us / 1e6);
  return latency.snapshot();
}

test('self-paced: full speed while clients are idle, halved while their p99 is over 1.5 times what it was, raised again once it is not', () => {
  const latency = new ClientLatency();
  replies(latency, 10_000, 400); // before the copy: p99 400 µs
  const pace = new FetchPace({ cap: 0, clientLatency: () => latency.snapshot() }, () => {});
  const start = pace.rate;
  assert.ok(start > 0 && start < Infinity);
  for (let i = 0; i < 10; i++) pace.adjust(latency.snapshot()); // idle intervals
  assert.equal(pace.rate, Infinity, 'idle clients: unpaced');
  pace.adjust(replies(latency, 1000, 2000)); // busy, p99 2 ms: over twice 400 µs
  const slowed = pace.rate;
  assert.ok(slowed < Infinity);
  for (let i = 0; i < 30; i++) pace.adjust(replies(latency, 1000, 2000));
  assert.equal(pace.rate, 1000, 'never below the least rate: the copy progresses');
  pace.adjust(replies(latency, 1000, 500)); // within 1.5 times the baseline
  assert.equal(pace.rate, 1100);
  pace.adjust(replies(latency, 1000, 500), 5000); // but the event loop kept callbacks waiting 5 ms
  assert.equal(pace.rate, 1000);
  pace.stop();
});

test('self-paced under a cap: never above it', () => {
  const latency = new ClientLatency();
  const pace = new FetchPace({ cap: 5000, clientLatency: () => latency.snapshot() }, () => {});
  for (let i = 0; i < 10; i++) pace.adjust(latency.snapshot());
  assert.equal(pace.rate, 5000);
  pace.stop();
});
