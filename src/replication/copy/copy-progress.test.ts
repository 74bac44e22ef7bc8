import assert from 'node:assert/strict';
import { test } from 'node:test';
import { copyProgress, describeCopyProgress } from './copy-progress';

test('rate and time left follow from what was sent and how long it took', () => {
  const progress = copyProgress(120_000, 1_000_000, 1_250);
  assert.deepEqual(progress, { sent: 120_000, expected: 1_000_000, rate: 96_000, etaSeconds: 10 });
  assert.equal(describeCopyProgress(progress), '120000 of about 1000000 items (12%), 96000 items/s, about 10 s left');
});

test('nothing sent yet, no count, or more sent than counted', () => {
  assert.deepEqual(copyProgress(0, 500, 0), { sent: 0, expected: 500, rate: 0, etaSeconds: null });
  assert.equal(describeCopyProgress(copyProgress(0, 500, 0)), '0 of about 500 items (0%), 0 items/s');
  assert.equal(describeCopyProgress(copyProgress(30, null, 1000)), '30 items, 30 items/s');
  assert.equal(describeCopyProgress(copyProgress(600, 500, 1000)), '600 of about 500 items (100%), 600 items/s, about 0 s left');
});
