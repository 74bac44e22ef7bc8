import assert from 'node:assert/strict';
import { test } from 'node:test';
import { WritePacer } from './write-pacer';

test('after a quiet spell the write goes at the end of the turn; right after a write, not before everyMs', async () => {
  const at: number[] = [];
  const pacer = new WritePacer(20, () => {
    at.push(performance.now());
    pacer.wrote();
  });
  const start = performance.now();
  pacer.schedule();
  pacer.schedule(); // one write for both
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(at.length, 1, 'written at the end of the turn');
  assert.ok(at[0] - start < 15, `${at[0] - start} ms`);
  pacer.schedule();
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(at.length, 1, 'not again within everyMs');
  await new Promise((resolve) => setTimeout(resolve, 60));
  assert.equal(at.length, 2);
  // libuv's timers run on the loop's clock, whole milliseconds read at the start of a turn: up to a millisecond
  // early by performance.now() (CI: 18.99 ms apart).
  assert.ok(at[1] - at[0] >= 18, `${at[1] - at[0]} ms apart`);
});

test('a schedule that wrote nothing does not delay the next', async () => {
  let runs = 0;
  const pacer = new WritePacer(1000, () => runs++);
  pacer.schedule();
  await new Promise((resolve) => setImmediate(resolve));
  pacer.schedule();
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(runs, 2);
});
