/**
 * The applier against a real memcached: what a peer's record does to the
 * local cache, judged by last writer wins.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Applier } from '../src/replication/apply/applier';
import { binaryFetch, KnownExpiries } from '../src/replication/binary-keys';
import { Contention } from '../src/replication/apply/contention';
import { FlushSchedule } from '../src/replication/flush/flush-schedule';
import { TTL_NEVER, type RecordFrame } from '../src/replication/link/frames/messages';
import { HybridClock } from '../src/replication/conflict/hlc';
import { LocalMemcached, LocalMemcachedBinary } from '../src/replication/local-memcached';
import { createReplicationMetrics } from '../src/replication/metrics';
import { Registry } from 'prom-client';
import { RecentWrites } from '../src/replication/conflict/recent-writes';
import { RawClient } from './support/client';
import { eventually, sleep } from './support/ports';
import { type Running, startMemcached } from './support/processes';
import { item } from './support/replication';

function record(fields: Partial<RecordFrame>): RecordFrame {
  return {
    type: 'record',
    seq: 0,
    hlc: { wall: Date.now(), logical: 0 },
    op: 'set',
    key: Buffer.from('k'),
    flags: 0,
    value: Buffer.alloc(0),
    delay: 0,
    ttlMs: -1,
    sentAt: Date.now(),
    ...fields,
  };
}

describe('applier', () => {
  let memcached: Running;
  let local: LocalMemcached;
  let binaryLocal: LocalMemcachedBinary;
  let applier: Applier;
  let touches: RecentWrites;
  let values: RecentWrites;
  let flushes: FlushSchedule;
  before(async () => {
    memcached = await startMemcached();
    local = new LocalMemcached({ host: '127.0.0.1', port: memcached.port }, 2000);
    binaryLocal = new LocalMemcachedBinary({ host: '127.0.0.1', port: memcached.port }, 2000);
    const bounds = { maxEntries: 1000, windowMs: 60_000 };
    touches = new RecentWrites(bounds);
    flushes = new FlushSchedule();
    values = new RecentWrites(bounds);
    const history = { values, touches, flushes, nearFlush: { armed: false, answered() {}, touched() {} }, expiries: new KnownExpiries() };
    applier = new Applier(local, binaryLocal, new HybridClock('b'), history, new Contention(() => {}), createReplicationMetrics(new Registry()), 'b', {
      batchAnswered() {},
      drained() {},
      refused() {},
    });
  });
  after(async () => {
    local.close();
    binaryLocal.close();
    await memcached.stop();
  });

  it("an add-mode copy of an item that expired on the way leaves this node's own value alone", async () => {
    const client = await RawClient.connect(memcached.port);
    await client.request('set mine 0 0 4\r\nkept\r\n');
    client.close();
    applier.applyCopy(record({ op: 'add', key: Buffer.from('mine'), value: Buffer.from('peer'), ttlMs: 0 }), Date.now());
    applier.applyCopy(record({ op: 'add', key: Buffer.from('filled'), value: Buffer.from('peer'), ttlMs: 60_000 }), Date.now());
    await eventually(async () => (await item(memcached.port, 'filled')) !== null, 3000, 'the live add applied');
    assert.equal((await item(memcached.port, 'mine'))?.value, 'kept');
  });

  it("a copy's item keeps the expiry this node's client gave it by a touch made after the copy was asked for", async () => {
    applier.copyCovers = { wall: Date.now() - 1000, logical: 0 };
    touches.note(Buffer.from('slid'), { wall: Date.now(), logical: 0, nodeId: 'b' }, Date.now() + 1000_000);
    applier.applyCopy(record({ key: Buffer.from('slid'), value: Buffer.from('peer'), ttlMs: 2000 }), Date.now());
    applier.applyCopy(record({ key: Buffer.from('plain'), value: Buffer.from('peer'), ttlMs: 2000 }), Date.now());
    await eventually(async () => (await item(memcached.port, 'plain')) !== null && (await item(memcached.port, 'slid')) !== null, 3000, 'both copies applied');
    assert.ok(((await item(memcached.port, 'slid'))?.ttl ?? 0) > 990, "the touch's expiry, not the copy's");
    assert.ok(((await item(memcached.port, 'plain'))?.ttl ?? 99) <= 3, "a key not touched takes the copy's");
  });

  it('a set-mode copy of the very write this node already holds keeps the item and its CAS unique; a lost one is filled in', async () => {
    const client = await RawClient.connect(memcached.port);
    await client.request('set held 0 0 4\r\nsame\r\n');
    const casOf = async () => /^VALUE held 0 4 (\d+)/.exec(await client.request('gets held\r\n', 'END\r\n'))?.[1];
    const before = await casOf();
    const stamp = { wall: Date.now() - 5000, logical: 3 };
    values.note(Buffer.from('held'), { ...stamp, nodeId: 'a' });
    values.note(Buffer.from('lost'), { ...stamp, nodeId: 'a' });
    applier.applyCopy(record({ key: Buffer.from('held'), value: Buffer.from('same'), hlc: stamp }), Date.now());
    applier.applyCopy(record({ key: Buffer.from('lost'), value: Buffer.from('back'), hlc: stamp }), Date.now());
    await eventually(async () => (await item(memcached.port, 'lost'))?.value === 'back', 3000, 'the missing item filled in');
    assert.equal(await casOf(), before, 'no new CAS unique for a write nobody made');
    client.close();
  });

  it('a set-mode copy of the very invalidation this node already holds keeps the item, its mark and its expiry', async () => {
    // Seed 3, 600 s: the copy's expiry, read back twice on its way, was 2 s short of the one this node held.
    const client = await RawClient.connect(memcached.port);
    assert.equal(await client.request('ms stale-held 4 T300\r\nsame\r\nmd stale-held I\r\n'), 'HD\r\nHD\r\n');
    client.close();
    const stamp = { wall: Date.now() - 5000, logical: 4 };
    values.note(Buffer.from('stale-held'), { ...stamp, nodeId: 'a' });
    applier.applyCopy(record({ op: 'invalidate', key: Buffer.from('stale-held'), value: Buffer.from('same'), ttlMs: 5000, hlc: stamp }), Date.now());
    await applier.idle();
    const held = await item(memcached.port, 'stale-held');
    assert.ok(held && held.stale && held.ttl > 290, JSON.stringify(held));
  });

  // The origin held these items until their deadline and a client touched them before it:
  // the touch is behind them on the link, and must find them here too.
  for (const op of ['set', 'add'] as const) {
    it(`${op === 'add' ? 'an' : 'a'} ${op} that expired in transit still takes a touch sent after it`, async () => {
      const key = Buffer.from(`late-${op}`);
      const wall = Date.now();
      applier.applyLive(record({ seq: 1, op, key, value: Buffer.from('v'), ttlMs: 300, hlc: { wall, logical: 0 } }), 'a', Date.now() - 1000);
      applier.applyLive(record({ seq: 2, op: 'touch', key, ttlMs: TTL_NEVER, hlc: { wall, logical: 1 } }), 'a', Date.now());
      await eventually(async () => (await item(memcached.port, key.toString())) !== null, 3000, 'the touched item held');
      assert.equal((await item(memcached.port, key.toString()))?.ttl, -1);
    });
  }

  it('a record sent again after its batch failed is applied again, not taken for an older write', async () => {
    // The first batch never reached memcached (its connection died with it unsent), and the link
    // reset: the peer sends the record again, with the stamp this node already noted for the key.
    const hlc = { wall: Date.now(), logical: 0 };
    const resent = () => record({ seq: 7, key: Buffer.from('resent'), value: Buffer.from('v'), ttlMs: TTL_NEVER, hlc });
    applier.applyLive(resent(), 'a', Date.now());
    await eventually(async () => (await item(memcached.port, 'resent')) !== null, 3000, 'the first apply');
    const client = await RawClient.connect(memcached.port);
    await client.request('delete resent\r\n');
    client.close();
    applier.applyLive(resent(), 'a', Date.now());
    await eventually(async () => (await item(memcached.port, 'resent')) !== null, 3000, 'the record applied again');
  });

  it('a binary-only key that expired in transit still takes a touch sent after it', async () => {
    const key = Buffer.from('late binary\0key');
    const wall = Date.now();
    applier.applyLive(record({ seq: 1, op: 'set', key, value: Buffer.from('v'), ttlMs: 300, hlc: { wall, logical: 0 } }), 'a', Date.now() - 1000);
    applier.applyLive(record({ seq: 2, op: 'touch', key, ttlMs: TTL_NEVER, hlc: { wall, logical: 1 } }), 'a', Date.now());
    const held = async () => (await binaryLocal.quietBatch(binaryFetch(key, 0)))[0]?.value.toString() ?? null;
    await eventually(async () => (await held()) === 'v', 3000, 'the touched item held');
    await sleep(2100);
    assert.equal(await held(), 'v', 'still held after the in-transit deadline');
  });

  it("the peer's delayed flush comes due while memcached's clock is measured: memcached still gets it", async () => {
    const client = await RawClient.connect(memcached.port);
    await client.request('set before-short-flush 0 0 1\r\nx\r\n');
    client.close();
    // flush_all 1 on the peer, 700 ms ago: 300 ms left, less than measuring memcached's clock can take.
    const command = Date.now() - 700;
    applier.applyLive(record({ seq: 1, op: 'flush', key: Buffer.alloc(0), delay: 1, ttlMs: 300, hlc: { wall: command, logical: 0 } }), 'a', Date.now());
    await eventually(async () => (await item(memcached.port, 'before-short-flush')) === null, 4000, 'the flush to take effect');
  });

  // Last: the flush stays noted for the applier of this file.
  it("a copy's item read before a flush this node has passed goes with the flush; one read after it stands", async () => {
    const moment = Date.now();
    flushes.local({ wall: moment, logical: 0, nodeId: 'b' }, { kind: 'now' });
    applier.applyCopy(record({ key: Buffer.from('read-before'), value: Buffer.from('old'), hlc: { wall: moment - 50, logical: 0 } }), Date.now());
    applier.applyCopy(record({ key: Buffer.from('read-after'), value: Buffer.from('new'), hlc: { wall: moment + 50, logical: 0 } }), Date.now());
    await eventually(async () => (await item(memcached.port, 'read-after')) !== null, 3000, 'the copy read after the flush applied');
    assert.equal(await item(memcached.port, 'read-before'), null);
  });
});
