/**
 * A full copy paces itself by the sending node's own client latency
 * (src/replication/copy/fetch-pace.ts): while clients are busy, their p99
 * during the copy stays within twice their p99 without one, and the copy
 * still finishes. Real memcached and memrepl processes; the bound is a ratio
 * of two windows of the same run, never an absolute time.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { load } from './support/bulk';
import { clientLoops, memcachedStat } from './support/client';
import { eventually, freePort, sleep } from './support/ports';
import { startNode, stopAll, type Node } from './support/processes';
import { stat } from './support/replication';

const ITEMS = 200_000;
const CLIENTS = 4;
/** The copy's target (issue 15): the sending node's client p99 within this many times its p99 without a copy. */
const P99_BOUND = 2;

function p99(samples: number[]): number {
  const sorted = [...samples].sort((x, y) => x - y);
  return sorted[Math.min(sorted.length - 1, Math.floor(0.99 * sorted.length))];
}

describe('a full copy under client load', () => {
  it("keeps the sending node's client p99 within twice its p99 without a copy, and finishes", async (t) => {
    const ra = await freePort();
    const a = await startNode('a', ra, null);
    let b: Node | null = null;
    const items = Array.from({ length: ITEMS }, (_, i) => ({ key: `key:${i}`, value: Buffer.alloc(100, 97 + (i % 26)), flags: 0, exptime: 0 }));
    await load(a.memcached.port, items);
    // Each client: one get at a time through A's proxy, timed; the phase says which window it counts in.
    let phase: 'before' | 'starting' | 'during' | 'after' = 'before';
    const latencies: Record<'before' | 'during', number[]> = { before: [], during: [] };
    const loops = clientLoops(Array<number>(CLIENTS).fill(a.memrepl.port), async (client, n, i) => {
      const key = `key:${(n * 7919 + i * 104_729) % ITEMS}`;
      const counted = phase;
      const start = process.hrtime.bigint();
      const reply = await client.request(`get ${key}\r\n`, 'END\r\n');
      const us = Number(process.hrtime.bigint() - start) / 1000;
      assert.ok(reply.startsWith(`VALUE ${key} 0 100\r\n`), reply.slice(0, 60));
      if ((counted === 'before' || counted === 'during') && counted === phase) latencies[counted].push(us);
    });
    try {
      await sleep(2000);
      phase = 'starting'; // a new process starting on the same CPUs is not the copy's doing: not counted
      b = await startNode('b', await freePort(), ra);
      await eventually(async () => (await stat(b!, 'copy_receiving')) === '1' || (await stat(b!, 'copies_received')) === '1', 10_000, 'the copy to start');
      phase = 'during';
      // At the least rate (1,000 items/s) the copy would take 200 s: finished well before, it was not held there.
      const copyStart = Date.now();
      await eventually(async () => (await stat(b!, 'copies_received')) === '1', 90_000, 'the copy to finish');
      const copySeconds = (Date.now() - copyStart) / 1000;
      phase = 'after';
      assert.ok((await memcachedStat(b.memcached.port, 'curr_items')) >= ITEMS, 'the copy carried every item');
      const before = p99(latencies.before);
      const during = p99(latencies.during);
      t.diagnostic(
        `client p99 ${before.toFixed(0)} µs without a copy (${latencies.before.length} gets), ${during.toFixed(0)} µs during it ` +
          `(${latencies.during.length} gets): ${(during / before).toFixed(2)}×; the copy took ${copySeconds.toFixed(1)} s (${(ITEMS / copySeconds).toFixed(0)} items/s)`,
      );
      assert.ok(
        latencies.before.length >= 500 && latencies.during.length >= 200,
        `too few gets to tell: ${latencies.before.length}, ${latencies.during.length}`,
      );
      assert.ok(during <= P99_BOUND * before, `client p99 during the copy ${during.toFixed(0)} µs, over ${P99_BOUND}× the ${before.toFixed(0)} µs without one`);
    } finally {
      await loops.stop();
      await stopAll(...(b ? [a, b] : [a]));
    }
  });
});
