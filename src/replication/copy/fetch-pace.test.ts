import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FetchPace } from './fetch-pace';

test('unpaced: every fetch goes', () => {
  const pace = new FetchPace(0, () => assert.fail('no wake when unpaced'));
  for (let i = 0; i < 1000; i++) assert.equal(pace.take(), true);
});

test('paced: tokens at the rate, bursts of a tenth of a second, a wake when none is left', async () => {
  let now = 1_000_000;
  let woken = 0;
  const pace = new FetchPace(
    1000,
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
