/**
 * The recorder against a real memcached: what it ships for a client's write,
 * judged by what it remembers of the key.
 */
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { KnownExpiries } from '../src/replication/binary-keys';
import { HybridClock } from '../src/replication/conflict/hlc';
import { RecentWrites } from '../src/replication/conflict/recent-writes';
import { FlushSchedule } from '../src/replication/flush/flush-schedule';
import { LocalMemcached, LocalMemcachedBinary } from '../src/replication/local-memcached';
import { Outbox } from '../src/replication/send/outbox';
import { Recorder, type ReadBackGate, type RecorderEvents } from '../src/replication/send/recorder';
import { RawClient } from './support/client';
import { eventually, freePort } from './support/ports';
import { type Running, startMemcached } from './support/processes';

describe('recorder', () => {
  let memcached: Running;
  let local: LocalMemcached;
  let binaryLocal: LocalMemcachedBinary;
  let values: RecentWrites;
  let outbox: Outbox;
  let recorder: Recorder;
  /** What the recorder told the flush edge, once it is armed. */
  const nearFlush = {
    armed: false,
    told: [] as Array<{ key: string; stored: string | null }>,
    answered(key: Buffer, _stamp: unknown, stored: { value: Buffer } | null) {
      this.told.push({ key: key.toString('latin1'), stored: stored ? stored.value.toString('latin1') : null });
    },
    touched() {},
  };
  /** A recorder with an outbox and a history of its own, reading `reads` back; `whole`: see Recorder's memcachedWhole. */
  function recorderOn(
    reads: { local: LocalMemcached; binaryLocal: LocalMemcachedBinary },
    events: Partial<RecorderEvents> = {},
    whole = () => true,
    gate: ReadBackGate = { localStarted: () => null, localEnded() {} },
  ) {
    const bounds = { maxEntries: 1000, windowMs: 60_000 };
    const history = {
      values: new RecentWrites(bounds),
      touches: new RecentWrites(bounds),
      flushes: new FlushSchedule(),
      nearFlush,
      expiries: new KnownExpiries(),
    };
    const box = new Outbox({ maxBytes: 1024 * 1024 });
    const made = new Recorder(
      box,
      new HybridClock('a'),
      history,
      reads.local,
      reads.binaryLocal,
      gate,
      { answered() {}, afterResume() {} },
      { appended() {}, lost() {}, replayed() {}, expiryUnknown() {}, ...events },
      whole,
    );
    return { recorder: made, history, box };
  }
  before(async () => {
    memcached = await startMemcached();
    local = new LocalMemcached({ host: '127.0.0.1', port: memcached.port }, 2000);
    binaryLocal = new LocalMemcachedBinary({ host: '127.0.0.1', port: memcached.port }, 2000);
    let history: { values: RecentWrites };
    ({ recorder, box: outbox, history } = recorderOn({ local, binaryLocal }));
    values = history.values;
  });
  after(async () => {
    local.close();
    binaryLocal.close();
    await memcached.stop();
  });

  /** The ops the outbox holds for `key`, in order. */
  function shipped(key: string): string[] {
    const ops: string[] = [];
    for (let seq = outbox.oldestSeq; seq <= outbox.lastSeq; seq++) {
      const record = outbox.get(seq);
      if (record && record.key.toString('latin1') === key) ops.push(record.op);
    }
    return ops;
  }

  it("a touched item whose key's last remembered write is the peer's delete, not yet run here, is not shipped as an add", async () => {
    // The peer's delete is noted as its record arrives, before this memcached runs it: a client's touch in between
    // finds the older item, which under the delete's stamp the peer would take for its own write and store back.
    const client = await RawClient.connect(memcached.port);
    assert.equal(await client.request('set doomed 0 0 3\r\nold\r\nset kept 0 0 3\r\nold\r\n', 'STORED\r\nSTORED\r\n'), 'STORED\r\nSTORED\r\n');
    client.close();
    values.note(Buffer.from('doomed'), { wall: Date.now(), logical: 0, nodeId: 'b' }, null, true);
    values.note(Buffer.from('kept'), { wall: Date.now(), logical: 0, nodeId: 'b' });
    recorder.written({ kind: 'touch', key: Buffer.from('doomed'), exptime: 100 }, Date.now());
    recorder.written({ kind: 'touch', key: Buffer.from('kept'), exptime: 100 }, Date.now());
    // Read on one connection, in order: once the second item is shipped, the first was read too.
    await eventually(async () => shipped('kept').includes('add'), 3000, 'the kept touched item shipped');
    assert.deepEqual(shipped('kept'), ['touch', 'add']);
    assert.deepEqual(shipped('doomed'), ['touch']);
  });

  it('a write read back near a delayed flush tells the flush edge what it stored, so that it can be stored back if memcached flushes it after the moment', async () => {
    // Fault suite, seed 21 (600 s): an append on b after a delayed flush's moment, which b's memcached (restarted
    // just before) flushed late; the edge knew no value to store back, and b lost what a kept.
    const client = await RawClient.connect(memcached.port);
    assert.equal(await client.request('set appended 0 0 2\r\nab\r\n'), 'STORED\r\n');
    client.close();
    nearFlush.armed = true;
    try {
      recorder.written({ kind: 'readback', key: Buffer.from('appended') }, Date.now());
      await eventually(async () => shipped('appended').includes('set'), 3000, 'the read back shipped');
      assert.deepEqual(nearFlush.told.at(-1), { key: 'appended', stored: 'ab' });
    } finally {
      nearFlush.armed = false;
    }
  });

  it('an append, prepend, incr or decr whose read back fails (memcached died after answering it) ships the write itself', async () => {
    // A memcached that is gone: nothing listens where the read back goes.
    const dead = { host: '127.0.0.1', port: await freePort() };
    const deadLocal = new LocalMemcached(dead, 500);
    const deadBinary = new LocalMemcachedBinary(dead, 500);
    const events = { lost: [] as string[], replayed: [] as string[] };
    const {
      recorder: orphan,
      history,
      box,
    } = recorderOn(
      { local: deadLocal, binaryLocal: deadBinary },
      { lost: (reason) => events.lost.push(reason), replayed: (reason) => events.replayed.push(reason) },
    );
    try {
      const now = Date.now();
      orphan.written({ kind: 'readback', key: Buffer.from('log'), replay: { op: 'append', value: Buffer.from('+line') } }, now);
      orphan.written({ kind: 'readback', key: Buffer.from('head'), replay: { op: 'prepend', value: Buffer.from('top+') } }, now);
      orphan.written({ kind: 'readback', key: Buffer.from('hits'), replay: { op: 'incr', value: Buffer.from('5') } }, now);
      orphan.written({ kind: 'readback', key: Buffer.from('left'), replay: { op: 'decr', value: Buffer.from('18446744073709551615') } }, now);
      // No reply said this one took effect (a repair, a request cut off): nothing to replay, it is lost as before.
      orphan.written({ kind: 'readback', key: Buffer.from('unknown'), answered: false }, now);
      await eventually(async () => box.length + events.lost.length === 5, 5000, 'every read back settled');
      const records = Array.from({ length: box.length }, (_, i) => box.get(box.oldestSeq + i)!);
      assert.deepEqual(
        records.map((r) => [r.op, r.key.toString('latin1'), r.value.toString('latin1')]),
        [
          ['append', 'log', '+line'],
          ['prepend', 'head', 'top+'],
          ['incr', 'hits', '5'],
          ['decr', 'left', '18446744073709551615'],
        ],
      );
      assert.equal(events.replayed.length, 4);
      assert.equal(events.lost.length, 1);
      // Each remembered as this node's write, so that an older record of the key from the peer loses to it.
      assert.equal(history.values.lastWriteOf(Buffer.from('hits'))?.nodeId, 'a');
    } finally {
      deadLocal.close();
      deadBinary.close();
    }
  });

  it('while memcached may have lost what it held (restarted, refilling), a read back that finds the key gone ships no delete', async () => {
    // Resync test, "a write refused while the local memcached is down…": a repair read back of a key, run on a
    // memcached just restarted empty, shipped a delete that erased the peer's value, which the refill was to bring.
    let whole = false;
    const lost: string[] = [];
    const { recorder: refilling, box } = recorderOn({ local, binaryLocal }, { lost: (reason) => lost.push(reason) }, () => whole);
    const client = await RawClient.connect(memcached.port);
    assert.equal(await client.request('set refilled 0 0 3\r\nold\r\n'), 'STORED\r\n');
    client.close();
    const now = Date.now();
    refilling.written({ kind: 'readback', key: Buffer.from('gone-here'), answered: false }, now);
    // An item found is what memcached holds, refill or not (a replay would run on a peer value a copy may yet change).
    refilling.written({ kind: 'readback', key: Buffer.from('refilled'), replay: { op: 'append', value: Buffer.from('+new') } }, now);
    await eventually(async () => box.length === 1, 3000, 'the item found shipped');
    await new Promise((resolve) => setTimeout(resolve, 100)); // the other read is answered too, and ships nothing
    const records = Array.from({ length: box.length }, (_, i) => box.get(box.oldestSeq + i)!);
    assert.deepEqual(
      records.map((r) => [r.op, r.key.toString('latin1'), r.value.toString('latin1')]),
      [['set', 'refilled', 'old']],
    );
    assert.deepEqual(lost, []);
    // Once memcached holds what it held again, a read back that finds the key gone is a delete.
    whole = true;
    refilling.written({ kind: 'readback', key: Buffer.from('gone-here'), answered: false }, Date.now());
    await eventually(async () => box.length === 2, 3000, 'the delete shipped');
    assert.equal(box.get(box.lastSeq)!.op, 'delete');
  });

  it('an append whose read connection dropped after memcached answered it ships itself, whatever the read then finds', async () => {
    // memcached died after answering, and a new one (refilled with the older item, say) answers the read.
    const own = new LocalMemcached({ host: '127.0.0.1', port: memcached.port }, 2000);
    let open!: () => void;
    const waiting = new Promise<void>((resolve) => (open = resolve));
    const { recorder: behind, box } = recorderOn({ local: own, binaryLocal }, {}, () => true, { localStarted: () => waiting, localEnded() {} });
    try {
      const client = await RawClient.connect(memcached.port);
      assert.equal(await client.request('set refilled-older 0 0 3\r\nold\r\n'), 'STORED\r\n');
      client.close();
      await own.request(Buffer.from('mn\r\n')); // connected
      behind.written({ kind: 'readback', key: Buffer.from('refilled-older'), replay: { op: 'append', value: Buffer.from('+new') } }, Date.now());
      (own as unknown as { socket: net.Socket }).socket.destroy(); // the read's connection drops before the read goes
      await eventually(async () => own.drops === 1, 3000, 'the drop seen');
      open();
      await eventually(async () => box.length === 1, 3000, 'the append shipped');
      const record = box.get(box.lastSeq)!;
      assert.deepEqual([record.op, record.value.toString('latin1')], ['append', '+new']);
    } finally {
      own.close();
    }
  });
});
