/**
 * The applier against a real memcached: what a peer's record does to the
 * local cache, judged by last writer wins.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Applier } from '../src/replication/applier';
import { KnownExpiries } from '../src/replication/binary-keys';
import { Contention } from '../src/replication/contention';
import { FlushSchedule } from '../src/replication/flush-schedule';
import type { RecordFrame } from '../src/replication/frames/messages';
import { HybridClock } from '../src/replication/hlc';
import { LocalMemcached, LocalMemcachedBinary } from '../src/replication/local-memcached';
import { createReplicationMetrics } from '../src/replication/metrics';
import { Registry } from 'prom-client';
import { RecentWrites } from '../src/replication/recent-writes';
import { RawClient } from './support/client';
import { eventually } from './support/ports';
import { type Running, startMemcached } from './support/processes';
import { item } from './support/replication';

function record(fields: Partial<RecordFrame>): RecordFrame {
  return { type: 'record', seq: 0, hlc: { wall: Date.now(), logical: 0 }, op: 'set', key: Buffer.from('k'), flags: 0, value: Buffer.alloc(0), delay: 0, ttlMs: -1, sentAt: Date.now(), ...fields };
}

describe('applier', () => {
  let memcached: Running;
  let local: LocalMemcached;
  let binaryLocal: LocalMemcachedBinary;
  let applier: Applier;
  before(async () => {
    memcached = await startMemcached();
    local = new LocalMemcached({ host: '127.0.0.1', port: memcached.port }, 2000);
    binaryLocal = new LocalMemcachedBinary({ host: '127.0.0.1', port: memcached.port }, 2000);
    const bounds = { maxEntries: 1000, windowMs: 60_000 };
    const history = { values: new RecentWrites(bounds), touches: new RecentWrites(bounds), flushes: new FlushSchedule(), expiries: new KnownExpiries() };
    applier = new Applier(local, binaryLocal, new HybridClock('b'), history, new Contention(() => {}), createReplicationMetrics(new Registry()), 'b');
  });
  after(async () => {
    local.close();
    binaryLocal.close();
    await memcached.stop();
  });

  it('an add-mode copy of an item that expired on the way leaves this node\'s own value alone', async () => {
    const client = await RawClient.connect(memcached.port);
    await client.request('set mine 0 0 4\r\nkept\r\n');
    client.close();
    applier.applyCopy(record({ op: 'add', key: Buffer.from('mine'), value: Buffer.from('peer'), ttlMs: 0 }), Date.now());
    applier.applyCopy(record({ op: 'add', key: Buffer.from('filled'), value: Buffer.from('peer'), ttlMs: 60_000 }), Date.now());
    await eventually(async () => (await item(memcached.port, 'filled')) !== null, 3000, 'the live add applied');
    assert.equal((await item(memcached.port, 'mine'))?.value, 'kept');
  });
});
