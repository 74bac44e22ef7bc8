import assert from 'node:assert/strict';
import { test } from 'node:test';
import { flushTimeFor } from './memcached-clock';

test("flushTimeFor: the cut falls within the second before the moment, whatever the phase of memcached's clock", () => {
  const moment = 1_800_000_000_400;
  for (const epoch of [0, 300, 399, 401, 999, -300, -999]) {
    const time = flushTimeFor(moment, epoch);
    // memcached flushes what it stored while its clock read before `time`: up to the wall time epoch + time s.
    const cut = epoch + time * 1000;
    assert.ok(cut <= moment && cut > moment - 1100, `epoch ${epoch}: cut ${cut - moment} ms from the moment`);
  }
  assert.equal(flushTimeFor(moment, null), 1_800_000_000 - 1, 'phase unknown: a second early, never after the moment');
});
