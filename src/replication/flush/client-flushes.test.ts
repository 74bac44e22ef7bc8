import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { FlushCount } from '../../protocol/text/stats';
import { ClientFlushes } from './client-flushes';

/** ClientFlushes over a memcached whose flush count the test sets. */
function harness(start: FlushCount | Error | 'never' = { pid: '1', flushes: 3 }) {
  let count: FlushCount | Error | 'never' = start;
  const events: string[] = [];
  const flushes = new ClientFlushes({
    hold: async () => void events.push('hold'),
    release: async () => void events.push('release'),
    count: () => {
      if (count === 'never') return new Promise<FlushCount>(() => {});
      if (count instanceof Error) return Promise.reject(count);
      return Promise.resolve(count);
    },
    ran: (delay) => void events.push(`ran ${delay}`),
    unknown: () => void events.push('unknown'),
    waitLimitMs: 100,
  });
  return { flushes, events, set: (next: FlushCount | Error | 'never') => (count = next) };
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 10));

test('a flush with its reply is not replicated a second time', async () => {
  const { flushes, events, set } = harness();
  const turn = flushes.turn();
  await turn.ready;
  set({ pid: '1', flushes: 4 });
  turn.ended();
  await settle();
  assert.deepEqual(events, ['hold', 'release']);
});

test('an unanswered flush memcached ran is replicated with its delay; one it did not run is not', async () => {
  for (const [after, expected] of [
    [4, ['hold', 'ran 30', 'release']],
    [3, ['hold', 'release']],
  ] as const) {
    const { flushes, events, set } = harness();
    const turn = flushes.turn();
    await turn.ready;
    set({ pid: '1', flushes: after });
    turn.ended({ delay: 30 });
    await settle();
    assert.deepEqual(events, expected);
  }
});

test('after a memcached restart an unanswered flush is not replicated (its items went anyway)', async () => {
  const { flushes, events, set } = harness();
  const turn = flushes.turn();
  await turn.ready;
  set({ pid: '2', flushes: 9 });
  turn.ended({ delay: 0 });
  await settle();
  assert.deepEqual(events, ['hold', 'release']);
});

test('an unanswered flush whose count could not be read is reported, and what it held goes', async () => {
  for (const [before, after] of [
    [new Error('down'), { pid: '1', flushes: 4 }],
    [{ pid: '1', flushes: 3 }, new Error('down')],
  ] as const) {
    const { flushes, events, set } = harness(before);
    const turn = flushes.turn();
    await turn.ready;
    set(after);
    turn.ended({ delay: 0 });
    await settle();
    assert.deepEqual(events, ['hold', 'unknown', 'release']);
  }
});

test("flushes go one at a time: the second is ready only once the first ended, so a count that moved is the first's; each holds from its start", async () => {
  const { flushes, events } = harness();
  const first = flushes.turn();
  const second = flushes.turn();
  let secondReady = false;
  void second.ready!.then(() => (secondReady = true));
  await first.ready;
  await settle();
  assert.equal(secondReady, false);
  first.ended();
  await settle();
  assert.equal(secondReady, true);
  second.ended();
  second.ended(); // once only
  await settle();
  assert.deepEqual(events, ['hold', 'hold', 'release', 'release']);
});

test('a turn that ends before it was ready (never sent) still lets the next go', async () => {
  const { flushes, events } = harness();
  const first = flushes.turn();
  const second = flushes.turn();
  second.ended();
  first.ended();
  const third = flushes.turn();
  await third.ready;
  third.ended();
  await settle();
  assert.deepEqual(events, ['hold', 'hold', 'hold', 'release', 'release', 'release']);
});

test('a flush whose count does not come within the wait limit is refused, and what it held goes at once', async () => {
  const { flushes, events, set } = harness('never');
  const turn = flushes.turn();
  assert.equal(await turn.ready, false);
  turn.ended();
  await settle();
  assert.deepEqual(events, ['hold', 'release']);
  // The next flush does not wait for the first's count.
  set({ pid: '1', flushes: 3 });
  const next = flushes.turn();
  assert.equal(await next.ready, true);
});
