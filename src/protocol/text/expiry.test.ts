import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RELATIVE_EXPTIME_MAX, remainingLifeMs } from './expiry';

test('memcached reads exptimes up to 30 days as relative (REALTIME_MAXDELTA)', () => {
  assert.equal(RELATIVE_EXPTIME_MAX, 2_592_000);
});

test('remainingLifeMs aims at the middle of the second memcached reports', () => {
  assert.equal(remainingLifeMs(100), 99_500);
  assert.equal(remainingLifeMs(1), 500);
  assert.equal(remainingLifeMs(0), -500, 'in its last second: already past the middle');
});
