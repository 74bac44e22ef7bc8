import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ClientLatency, latencyBetween } from './client-latency';

test('the quantile of what came between two snapshots, within a bucket (25%) above the true value', () => {
  const latency = new ClientLatency();
  for (let i = 0; i < 1000; i++) latency.observe(0.0002); // 200 µs: before
  const before = latency.snapshot();
  for (let i = 0; i < 980; i++) latency.observe(0.0001);
  for (let i = 0; i < 20; i++) latency.observe(0.01); // the slowest 2%: 10 ms
  const between = latencyBetween(before, latency.snapshot(), 0.99);
  assert.equal(between.count, 1000);
  assert.ok(between.quantileUs >= 10_000 && between.quantileUs <= 12_500, `${between.quantileUs}`);
  const p50 = latencyBetween(before, latency.snapshot(), 0.5).quantileUs;
  assert.ok(p50 >= 100 && p50 <= 125, `${p50}`);
});

test('nothing between two snapshots; tiny and huge latencies land in the end buckets', () => {
  const latency = new ClientLatency();
  const before = latency.snapshot();
  assert.deepEqual(latencyBetween(before, latency.snapshot(), 0.99), { count: 0, quantileUs: 0 });
  latency.observe(0);
  latency.observe(30);
  const after = latencyBetween(before, latency.snapshot(), 1);
  assert.equal(after.count, 2);
  assert.ok(after.quantileUs > 400_000);
});
