/**
 * FlushEdge against a real memcached: the writes answered around a delayed
 * flush's moment end where their stamps say, whatever memcached's
 * one-second clock did with them; and that clock's phase, as measured to
 * schedule a flush (memcached-clock.ts).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { parseStats, STATS_REQUEST } from '../src/protocol/text/stats';
import { Contention } from '../src/replication/apply/contention';
import { FlushEdge, type FlushEdgeWrites } from '../src/replication/flush/flush-edge';
import { memcachedClockEpoch } from '../src/replication/flush/memcached-clock';
import type { Stamp } from '../src/replication/conflict/hlc';
import { LocalMemcached } from '../src/replication/local-memcached';
import { RecentWrites } from '../src/replication/conflict/recent-writes';
import { RawClient } from './support/client';
import { eventually, sleep } from './support/ports';
import { type Running, startMemcached } from './support/processes';
import { item } from './support/replication';

/** Nothing on other connections to wait for. */
const QUIET: FlushEdgeWrites = { applierIdle: () => Promise.resolve(), holdClientWrites: () => Promise.resolve(), releaseClientWrites() {} };

describe('flush edge', () => {
  let memcached: Running;
  let local: LocalMemcached;
  before(async () => {
    memcached = await startMemcached();
    local = new LocalMemcached({ host: '127.0.0.1', port: memcached.port }, 2000);
  });
  after(async () => {
    local.close();
    await memcached.stop();
  });

  /**
   * A FlushEdge with a moment already past: memcached's clock is beyond it, so
   * the check runs at once. `at(ms)`: a stamp that long after the moment.
   */
  function edgeOfPastMoment() {
    const values = new RecentWrites({ maxEntries: 100, windowMs: 60_000 });
    const checks: Array<{ read: number; deleted: number; storedBack: number; unnoted: number }> = [];
    const edge = new FlushEdge(local, values, QUIET, { checked: (counts) => checks.push(counts), failed: (reason) => assert.fail(reason) });
    const moment: Stamp = { wall: Date.now() - 2500, logical: 0, nodeId: 'a' };
    const at = (ms: number): Stamp => ({ wall: moment.wall + ms, logical: 0, nodeId: 'a' });
    edge.scheduled(moment);
    return { values, checks, edge, at };
  }

  it('deletes what is stamped before the moment, stores back what is stamped after it, and leaves keys written again since alone', async () => {
    const client = await RawClient.connect(memcached.port);
    await client.request('set early 0 0 5\r\nearly\r\nset rewritten 0 0 3\r\nnew\r\n');
    client.close();
    const { values, checks, edge, at } = edgeOfPastMoment();
    assert.equal(edge.armed, true);
    edge.answered(Buffer.from('early'), at(-100), null); // memcached kept it: its clock had not reached the moment
    edge.answered(Buffer.from('late'), at(100), { value: Buffer.from('late'), flags: 7, expiresAt: Date.now() + 100_000 }); // flushed on a stale clock
    edge.answered(Buffer.from('rewritten'), at(-200), null);
    values.note(Buffer.from('rewritten'), at(300)); // a newer write decides on its own
    await eventually(async () => checks.length === 1, 5000, 'the check');
    assert.deepEqual(checks[0], { read: 3, deleted: 1, storedBack: 1, unnoted: 0 });
    assert.equal(await item(memcached.port, 'early'), null);
    const late = await item(memcached.port, 'late');
    assert.equal(late?.value, 'late');
    assert.equal(late?.flags, 7);
    assert.ok(late && late.ttl > 95 && late.ttl <= 100, `ttl ${late?.ttl}`);
    assert.equal((await item(memcached.port, 'rewritten'))?.value, 'new');
    assert.equal(edge.armed, false, 'one check per moment');
  });

  it("stores back an item with the expiry of a touch answered after its write, not the write's own", async () => {
    const { checks, edge, at } = edgeOfPastMoment();
    // Both written after the moment (set, no expiry) and flushed on a stale clock; then a gat of 5 s on the first.
    const forever = (value: string) => ({ value: Buffer.from(value), flags: 0, expiresAt: null });
    edge.answered(Buffer.from('gat-after'), at(100), forever('g'));
    edge.touched(Buffer.from('gat-after'), at(130), Date.now() + 5000);
    // A touch older than the write it would change (a record of the peer's, applied late) changes nothing.
    edge.answered(Buffer.from('set-after-touch'), at(100), forever('s'));
    edge.touched(Buffer.from('set-after-touch'), at(60), Date.now() + 5000);
    await eventually(async () => checks.length === 1, 5000, 'the check');
    assert.equal(checks[0].storedBack, 2);
    const touched = await item(memcached.port, 'gat-after');
    assert.ok(touched && touched.ttl > 0 && touched.ttl <= 5, `gat-after ttl ${touched?.ttl}`);
    assert.equal((await item(memcached.port, 'set-after-touch'))?.ttl, -1);
  });

  it("does not store back a key a client deletes while it checks: it waits for the client's write in flight", async () => {
    const values = new RecentWrites({ maxEntries: 100, windowMs: 60_000 });
    const contention = new Contention(() => {});
    const writes: FlushEdgeWrites = {
      applierIdle: () => Promise.resolve(),
      holdClientWrites: (timeoutMs) => contention.holdClientWrites(timeoutMs),
      releaseClientWrites: () => contention.releaseClientWrites(),
    };
    const checks: Array<{ storedBack: number }> = [];
    const edge = new FlushEdge(local, values, writes, { checked: (counts) => checks.push(counts), failed: (reason) => assert.fail(reason) });
    const moment: Stamp = { wall: Date.now() - 2500, logical: 0, nodeId: 'a' };
    const key = Buffer.from('deleted-meanwhile');
    edge.scheduled(moment);
    // Written after the moment and flushed on a stale clock: a candidate to store back...
    edge.answered(key, { ...moment, wall: moment.wall + 100 }, { value: Buffer.from('v'), flags: 0, expiresAt: null });
    // ... but a client's delete of it is in flight, answered (and noted) only once the edge has looked.
    assert.equal(contention.localStarted(key, {}), null);
    await sleep(600);
    values.note(key, { ...moment, wall: moment.wall + 200 });
    contention.localEnded(key);
    await eventually(async () => checks.length === 1, 5000, 'the check');
    assert.equal(checks[0].storedBack, 0);
    assert.equal(await item(memcached.port, 'deleted-meanwhile'), null);
  });

  it('forgets what it noted when the flush is replaced or cancelled before its moment', async () => {
    const values = new RecentWrites({ maxEntries: 100, windowMs: 60_000 });
    const checks: unknown[] = [];
    const edge = new FlushEdge(local, values, QUIET, { checked: (counts) => checks.push(counts), failed: (reason) => assert.fail(reason) });
    const moment: Stamp = { wall: Date.now() + 1000, logical: 0, nodeId: 'a' };
    edge.scheduled(moment);
    assert.equal(edge.armed, true, 'a second ahead: writes are noted');
    edge.answered(Buffer.from('noted'), moment, null);
    edge.scheduled(null);
    assert.equal(edge.armed, false);
    await new Promise((resolve) => setTimeout(resolve, 1500));
    assert.deepEqual(checks, []);
    edge.stop();
  });

  it('a moment weeks away (past what a timer takes) is not checked at once', async () => {
    const checks: unknown[] = [];
    const failures: string[] = [];
    let asked = 0;
    // Counts what the edge asks memcached: its clock, once the check starts.
    const counting = { request: (bytes: Buffer) => (asked++, local.request(bytes)) } as unknown as LocalMemcached;
    const edge = new FlushEdge(counting, new RecentWrites({ maxEntries: 10, windowMs: 60_000 }), QUIET, {
      checked: (c) => checks.push(c),
      failed: (r) => failures.push(r),
    });
    edge.scheduled({ wall: Date.now() + 29 * 24 * 3600 * 1000, logical: 0, nodeId: 'a' });
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.equal(edge.armed, false, 'nothing to note for weeks');
    assert.deepEqual([asked, checks, failures], [0, [], []]);
    edge.stop();
  });

  it('the measured epoch tells what stats time reads, away from its ticks', async () => {
    const epoch = await memcachedClockEpoch(local);
    assert.notEqual(epoch, null);
    let compared = 0;
    for (let i = 0; i < 30; i++) {
      const sentAt = Date.now();
      const time = Number(parseStats(await local.request(STATS_REQUEST)).get('time'));
      const at = Date.now();
      // Only where the whole round trip is well inside one second of the predicted clock.
      const [from, to] = [Math.floor((sentAt - 40 - epoch!) / 1000), Math.floor((at + 40 - epoch!) / 1000)];
      if (from === to) {
        assert.equal(time, from, `at ${at}: predicted ${from}, memcached says ${time}`);
        compared++;
      }
      await sleep(70);
    }
    assert.ok(compared >= 15, `${compared} readings compared`);
  });
});
