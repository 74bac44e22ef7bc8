import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ClientLatency, latencyBetween } from './client-latency';

test('the quantile of what came between two snapshots, within a bucket (25%) above the true value', () => {
  const latency = new ClientLatency();
  for (let i = 0; i < 1000; i++) latency.observe(0.0002); // 200 µs: before
  const before = latency.snapshot().replies;
  for (let i = 0; i < 980; i++) latency.observe(0.0001);
  for (let i = 0; i < 20; i++) latency.observe(0.01); // the slowest 2%: 10 ms
  const between = latencyBetween(before, latency.snapshot().replies, 0.99);
  assert.equal(between.count, 1000);
  assert.ok(between.quantileUs >= 10_000 && between.quantileUs <= 12_500, `${between.quantileUs}`);
  const p50 = latencyBetween(before, latency.snapshot().replies, 0.5).quantileUs;
  assert.ok(p50 >= 100 && p50 <= 125, `${p50}`);
});

test('nothing between two snapshots; tiny and huge latencies land in the end buckets', () => {
  const latency = new ClientLatency();
  const before = latency.snapshot().replies;
  assert.deepEqual(latencyBetween(before, latency.snapshot().replies, 0.99), { count: 0, quantileUs: 0 });
  latency.observe(0);
  latency.observe(30);
  const after = latencyBetween(before, latency.snapshot().replies, 1);
  assert.equal(after.count, 2);
  assert.ok(after.quantileUs > 400_000);
});

test("the event loop's lateness, sampled while watched: an idle loop runs its timers on time, a blocked one late", async () => {
  const latency = new ClientLatency();
  latency.watchLoop();
  try {
    const start = latency.snapshot().loop;
    await new Promise((resolve) => setTimeout(resolve, 200));
    const idle = latencyBetween(start, latency.snapshot().loop, 0.5);
    assert.ok(idle.count >= 5, `${idle.count} samples`);
    assert.ok(idle.quantileUs < 5000, `idle: ${idle.quantileUs} µs`);
    const before = latency.snapshot().loop;
    const until = performance.now() + 50;
    while (performance.now() < until); // the loop blocked for 50 ms
    await new Promise((resolve) => setTimeout(resolve, 30));
    const blocked = latencyBetween(before, latency.snapshot().loop, 1);
    assert.ok(blocked.quantileUs >= 30_000, `blocked: ${blocked.quantileUs} µs`);
  } finally {
    latency.stopWatchingLoop();
  }
});
