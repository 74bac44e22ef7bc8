/**
 * Replication of the commands beyond set and delete, and of clients that do
 * unusual things: flush_all with every kind of delay, touches racing sets,
 * flushes crossing writes, clients that hang up with writes in flight.
 * Every check reads both memcacheds directly.
 */
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { RawClient } from './support/client';
import { eventually, freePort, sleep } from './support/ports';
import { type Node, rssKb, type Running, startMemcached, startNode, startPair, stopAll } from './support/processes';
import { DyingRelay, MuteRelay } from './support/relay';
import { converged, has, item, linked, relayedPair, stat, withRelayedPair } from './support/replication';
import { readAll } from './support/bulk';
import { RawLink } from './support/raw-link';
import { serializeHello } from '../src/replication/link/frames/serializer';
import { newNonce } from '../src/replication/link/link-auth';

/** Sends one request through a node's proxy and returns its reply line. */
async function ask(node: Node, request: string): Promise<string> {
  const client = await RawClient.connect(node.memrepl.port);
  try {
    return await client.request(request);
  } finally {
    client.close();
  }
}

/**
 * Sends `request` through `node`'s proxy while its memcached stands still
 * (stopped `pausedMs` before it is sent, resumed `thenMs` after), and returns
 * its reply. `beforeResume` runs just before memcached resumes.
 */
async function whilePaused(node: Node, request: string, pausedMs: number, thenMs: number, beforeResume = () => {}): Promise<string> {
  node.memcached.child.kill('SIGSTOP');
  try {
    await sleep(pausedMs);
    const client = await RawClient.connect(node.memrepl.port);
    try {
      const reply = client.request(request, '\r\n', 8000);
      await sleep(thenMs);
      beforeResume();
      node.memcached.child.kill('SIGCONT');
      return await reply;
    } finally {
      client.close();
    }
  } finally {
    node.memcached.child.kill('SIGCONT');
  }
}

/** Waits until `key` is held (or not) by both memcacheds. */
async function heldOnBoth(a: Node, b: Node, key: string, held: boolean, timeoutMs = 5000): Promise<void> {
  let seen = '';
  await eventually(
    async () => {
      const [onA, onB] = [await has(a.memcached.port, key), await has(b.memcached.port, key)];
      seen = `a ${onA ? 'holds' : 'lacks'} it, b ${onB ? 'holds' : 'lacks'} it`;
      return onA === held && onB === held;
    },
    timeoutMs,
    () => `${key} ${held ? 'held' : 'gone'} on both (last seen: ${seen})`,
  );
}

describe('flush_all', () => {
  let a: Node;
  let b: Node;
  let direct: Running;
  before(async () => {
    [a, b] = await startPair();
    direct = await startMemcached();
    await linked(a, b);
  });
  after(async () => {
    await stopAll(a, b);
    await direct.stop();
  });

  it('answers every numeric form of its delay as memcached does, and keeps replicating', async () => {
    const delays = [
      '-1',
      '-0',
      '-2147483648',
      '2147483647',
      '2147483648',
      '4294967295',
      '18446744073709551615',
      '99999999999999999999999',
      '2592000',
      '2592001',
      'abc',
      '1.5',
      '+5',
      '',
    ];
    const proxy = await RawClient.connect(a.memrepl.port);
    const memcached = await RawClient.connect(direct.port);
    try {
      for (const delay of delays) {
        const line = `flush_all ${delay}\r\n`;
        assert.equal(await proxy.request(line), await memcached.request(line), line);
        // Immediate flushes and cancels leave nothing scheduled to disturb the next case.
        await proxy.request('flush_all 0\r\n');
        await memcached.request('flush_all 0\r\n');
        const key = `after${delays.indexOf(delay)}`;
        await proxy.request(`set ${key} 0 0 1\r\nx\r\n`, 'STORED\r\n');
        await heldOnBoth(a, b, key, true);
      }
    } finally {
      proxy.close();
      memcached.close();
    }
  });

  it('every numeric field of every write command, fuzzed, answers as memcached does and the pair keeps replicating', async () => {
    const numbers = [
      '-1',
      '0',
      '1',
      '2147483647',
      '2147483648',
      '4294967295',
      '4294967296',
      '18446744073709551615',
      '18446744073709551616',
      '99999999999999999999999',
      '2592000',
      '2592001',
      '-2147483649',
      'abc',
      '0x10',
      '',
    ];
    const requests = numbers.flatMap((n, i) => [
      `set fz${i} ${n} 0 1\r\nx\r\n`,
      `set fz${i} 0 ${n} 1\r\nx\r\n`,
      `touch fz${i} ${n}\r\n`,
      `gat ${n} fz${i}\r\n`,
      `incr fz${i} ${n}\r\n`,
      `set cnt${i} 0 0 1\r\n5\r\ndecr cnt${i} ${n}\r\n`,
      `ms fz${i} 1 T${n} F${n}\r\ny\r\n`,
      `mg fz${i} T${n} v\r\n`,
      `ma cnt${i} D${n} N${n} J${n} v\r\n`,
      `md fz${i} I T${n}\r\n`,
    ]);
    const proxy = await RawClient.connect(a.memrepl.port);
    const memcached = await RawClient.connect(direct.port);
    try {
      for (const request of requests) {
        // Each request with an mn behind it, so that a reply of any shape (or none) is complete at MN.
        const [viaProxy, viaMemcached] = [await proxy.request(`${request}mn\r\n`, 'MN\r\n'), await memcached.request(`${request}mn\r\n`, 'MN\r\n')];
        assert.equal(viaProxy.replace(/ c\d+/g, ''), viaMemcached.replace(/ c\d+/g, ''), JSON.stringify(request));
      }
    } finally {
      proxy.close();
      memcached.close();
    }
    await ask(a, 'set fuzz-done 0 0 1\r\nx\r\n');
    await heldOnBoth(a, b, 'fuzz-done', true);
    for (let i = 0; i < numbers.length; i++) await converged(a, b, `fz${i}`);
  });

  it('flush_all -1 flushes both nodes at once, and the proxy lives on', async () => {
    await ask(a, 'set minus 0 0 1\r\nx\r\n');
    await heldOnBoth(a, b, 'minus', true);
    assert.equal(await ask(a, 'flush_all -1\r\n'), 'OK\r\n');
    await heldOnBoth(a, b, 'minus', false);
    assert.equal(await ask(a, 'version\r\n').then((r) => r.startsWith('VERSION')), true);
  });

  it('with a delay: writes on both nodes still replicate until the moment, then both flush', async () => {
    await ask(a, 'set before 0 0 1\r\nx\r\n');
    // memcached flushes `flush_all N` at a tick of its one-second clock N-1 to N seconds on.
    assert.equal(await ask(a, 'flush_all 4\r\n'), 'OK\r\n');
    const moment = Date.now() + 4000;
    await ask(a, 'set during-a 0 0 1\r\nx\r\n');
    await ask(b, 'set during-b 0 0 1\r\nx\r\n');
    await heldOnBoth(a, b, 'during-a', true, 2000);
    await heldOnBoth(a, b, 'during-b', true, 2000);
    // memcached flushes everything stored before the moment, including during the delay.
    for (const key of ['before', 'during-a', 'during-b']) await heldOnBoth(a, b, key, false, 6000);
    // memcached shows the flush done up to two seconds before its moment: a write made before the moment goes with it.
    await sleep(moment + 200 - Date.now());
    await ask(b, 'set later 0 0 1\r\nx\r\n');
    await heldOnBoth(a, b, 'later', true);
  });

  it('a delayed flush reaching a stalled memcached still flushes at its moment, not its delay after the stall', async () => {
    b.memcached.child.kill('SIGSTOP');
    try {
      assert.equal(await ask(a, 'flush_all 3\r\n'), 'OK\r\n');
      // The record reaches memrepl B, which hands the flush to its memcached: it waits in the socket past its moment.
      await sleep(4500);
    } finally {
      b.memcached.child.kill('SIGCONT');
    }
    await sleep(1500); // memcached's clock catches up at its next tick
    await ask(b, 'set after-stall 0 0 1\r\nx\r\n');
    // Counted from when memcached ran it, the delay would end about now, and take this write with it.
    await sleep(2500);
    await heldOnBoth(a, b, 'after-stall', true);
  });

  it("writes around a delayed flush's moment end the same on both nodes, even when one memcached stood still across it", async () => {
    // memcached flushes at a tick of its own one-second clock, and a memcached
    // that stood still runs the requests that waited on a clock as old as the
    // pause: B's memcached stores, before the moment, writes sent after it.
    assert.equal(await ask(b, 'flush_all 3\r\n'), 'OK\r\n');
    const moment = Date.now() + 3000;
    await sleep(500);
    b.memcached.child.kill('SIGSTOP');
    const waiting = await RawClient.connect(b.memrepl.port);
    try {
      await sleep(500);
      waiting.send('set edge-b1 0 0 1\r\nx\r\n'); // sent before the moment, run after it
      await sleep(500);
      await ask(a, 'set edge-a1 0 0 1\r\nx\r\n'); // before the moment: flushed on A
      await sleep(moment + 500 - Date.now());
      await ask(a, 'set edge-a2 0 0 1\r\nx\r\n'); // after it: kept on A
      waiting.send('set edge-b2 0 0 1\r\nx\r\n'); // sent after the moment, run on B's stale clock
      await sleep(1000);
    } finally {
      b.memcached.child.kill('SIGCONT');
    }
    await waiting.read((bytes) => bytes.toString().split('STORED').length === 3, 10000);
    waiting.close();
    await sleep(3000); // both clocks are past the moment, and anything read back after a tick has landed
    for (const key of ['edge-b1', 'edge-a1', 'edge-a2', 'edge-b2']) {
      const [onA, onB] = [await has(a.memcached.port, key), await has(b.memcached.port, key)];
      assert.equal(onA, onB, `${key}: A ${onA ? 'holds' : 'lost'} it, B ${onB ? 'holds' : 'lost'} it`);
    }
    assert.equal(await has(a.memcached.port, 'edge-a1'), false, 'a write before the moment is flushed');
    assert.equal(await has(a.memcached.port, 'edge-a2'), true, 'a write on a running memcached after the moment is kept');
  });

  it("writes made just after a delayed flush's moment are never flushed, on the flushing node or its peer", async () => {
    assert.equal(await ask(a, 'flush_all 2\r\n'), 'OK\r\n');
    const moment = Date.now() + 2000;
    const keys: string[] = [];
    // Spread over a second after the moment: whatever the phase of each memcached's one-second clock.
    for (const offset of [5, 25, 50, 250, 450, 650, 850]) {
      await sleep(moment + offset - Date.now());
      const key = `just-after-${offset}`;
      await ask(keys.length % 2 === 0 ? a : b, `set ${key} 0 0 1\r\nx\r\n`);
      keys.push(key);
    }
    const seenGone: string[] = [];
    while (Date.now() < moment + 3500) {
      for (const key of keys) for (const node of [a, b]) if (!(await has(node.memcached.port, key))) seenGone.push(`${key} on ${node === a ? 'A' : 'B'}`);
      await sleep(100);
    }
    assert.deepEqual([...new Set(seenGone)], []);
  });

  it("an append answered while the peer's flush waits for it keeps its value on both nodes", async () => {
    // The flush lets client writes already on their way land first and keeps the keys they wrote. An append's
    // value is known only once it is read back, and that read waits for the flush to be in place: unless the key
    // counts as written when the append is answered, the flush erases it and the read ships a delete (fault
    // suite, seed 41, 600 s, session 16: an append acknowledged to its client, absent on both nodes).
    await ask(a, 'set appended 3 0 1\r\nv\r\n');
    await converged(a, b, 'appended');
    const reply = whilePaused(a, 'append appended 0 0 2\r\nxx\r\n', 0, 600, () => {});
    await sleep(150);
    assert.equal(await ask(b, 'flush_all\r\n'), 'OK\r\n');
    assert.equal(await reply, 'STORED\r\n');
    const held = await converged(a, b, 'appended', 8000);
    assert.equal(held?.value, 'vxx');
    assert.equal(held?.flags, 3);
  });

  it('an absolute time far ahead schedules a flush without stopping replication', async () => {
    const inAnHour = Math.floor(Date.now() / 1000) + 3600;
    assert.equal(await ask(a, `flush_all ${inAnHour}\r\n`), 'OK\r\n');
    await ask(b, 'set from-b 0 0 1\r\nx\r\n');
    await ask(a, 'set from-a 0 0 1\r\nx\r\n');
    await heldOnBoth(a, b, 'from-b', true, 3000);
    await heldOnBoth(a, b, 'from-a', true, 3000);
    await ask(a, 'flush_all 2592001\r\n'); // cancels it everywhere
  });

  it('a cancel (an absolute time before memcached started) reaches the peer: nothing is flushed', async () => {
    await ask(a, 'set kept 0 0 1\r\nx\r\n');
    // memcached runs `flush_all N` at a tick of its one-second clock, N - 1 ticks on: with 2, as soon
    // as the next tick, which can come a few ms later (CI once cancelled too late, as memcached alone would).
    assert.equal(await ask(a, 'flush_all 3\r\n'), 'OK\r\n');
    assert.equal(await ask(a, 'flush_all 2592001\r\n'), 'OK\r\n');
    await sleep(4000);
    assert.equal(await has(a.memcached.port, 'kept'), true, 'origin keeps it');
    assert.equal(await has(b.memcached.port, 'kept'), true, 'peer keeps it');
  });

  it('flush_all 0 after a delayed one flushes now and cancels the delayed one on both', async () => {
    await ask(a, 'set old 0 0 1\r\nx\r\n');
    await ask(a, 'flush_all 2\r\n');
    await ask(a, 'flush_all 0\r\n');
    await heldOnBoth(a, b, 'old', false);
    await ask(a, 'set new 0 0 1\r\nx\r\n');
    await heldOnBoth(a, b, 'new', true);
    await sleep(3000);
    assert.equal(await has(a.memcached.port, 'new'), true);
    assert.equal(await has(b.memcached.port, 'new'), true, 'the delayed flush was cancelled on the peer too');
  });

  it('the binary flush opcode with a delay keeps replicating too', async () => {
    const client = await RawClient.connect(a.memrepl.port);
    try {
      const flush = Buffer.alloc(28);
      flush[0] = 0x80; // request
      flush[1] = 0x08; // flush
      flush[4] = 4; // extras length
      flush.writeUInt32BE(4, 8); // body length
      flush.writeUInt32BE(4, 24); // delay: 4 s
      client.send(flush);
      const reply = await client.read((bytes) => bytes.length >= 24, 3000);
      assert.equal(reply.readUInt16BE(6), 0, 'status');
    } finally {
      client.close();
    }
    await ask(b, 'set bin-during 0 0 1\r\nx\r\n');
    await heldOnBoth(a, b, 'bin-during', true, 2000);
    await heldOnBoth(a, b, 'bin-during', false, 6000);
  });
});

describe('races the link decides', () => {
  it("a touch on one node never undoes a set on the other: both end with the new value and the touch's expiry", async () => {
    await withRelayedPair([], async ({ a, b, relay }) => {
      await ask(a, 'set session 0 0 2\r\nv0\r\n');
      await converged(a, b, 'session');
      relay.stall();
      await ask(a, 'set session 0 0 2\r\nv1\r\n');
      await sleep(5);
      assert.equal(await ask(b, 'touch session 1000\r\n'), 'TOUCHED\r\n');
      relay.resume();
      const held = await converged(a, b, 'session');
      assert.equal(held?.value, 'v1');
      assert.ok(held && held.ttl > 990, `ttl ${held?.ttl}`);
    });
  });

  it('gat, gats and mg T race a set the same way', async () => {
    await withRelayedPair([], async ({ a, b, relay }) => {
      await ask(a, 'set g 0 0 2\r\nv0\r\nset gs 0 0 2\r\nv0\r\nset m 0 0 2\r\nv0\r\n');
      for (const key of ['g', 'gs', 'm']) await converged(a, b, key);
      relay.stall();
      await ask(a, 'set g 0 0 2\r\nv1\r\nset gs 0 0 2\r\nv1\r\nset m 0 0 2\r\nv1\r\n');
      await sleep(5);
      const client = await RawClient.connect(b.memrepl.port);
      await client.request('gat 500 g\r\n', 'END\r\n');
      await client.request('gats 500 gs\r\n', 'END\r\n');
      await client.request('mg m T500 v\r\n');
      client.close();
      relay.resume();
      for (const key of ['g', 'gs', 'm']) {
        const held = await converged(a, b, key);
        assert.equal(held?.value, 'v1', key);
        assert.ok(held && held.ttl > 490, `${key} ttl ${held?.ttl}`);
      }
    });
  });

  it("an invalidation (md I) on one node never keeps the other's older value: both end with its value, stale", async () => {
    // B's set is older than A's invalidation, so A keeps its own value (stale) and
    // drops the set; B must then hold A's value too, not mark its own one stale.
    await withRelayedPair([], async ({ a, b, relay }) => {
      await ask(a, 'set inv 5 0 2\r\nv0\r\nset inv-ttl 5 0 2\r\nv0\r\n');
      await converged(a, b, 'inv');
      await converged(a, b, 'inv-ttl');
      relay.stall();
      await ask(b, 'set inv 6 0 2\r\nv1\r\nset inv-ttl 6 0 2\r\nv1\r\n');
      await sleep(5);
      assert.equal(await ask(a, 'md inv I\r\n'), 'HD\r\n');
      assert.equal(await ask(a, 'md inv-ttl I T700\r\n'), 'HD\r\n');
      relay.resume();
      const held = await converged(a, b, 'inv');
      assert.deepEqual(held && { value: held.value, flags: held.flags, stale: held.stale, ttl: held.ttl }, { value: 'v0', flags: 5, stale: true, ttl: -1 });
      const timed = await converged(a, b, 'inv-ttl');
      assert.equal(timed?.value, 'v0');
      assert.equal(timed?.stale, true);
      assert.ok(timed && timed.ttl > 690, `ttl ${timed?.ttl}`);
    });
  });

  it('the first client read of an invalidated item wins its recache token, on both nodes (replication reads it without taking the token)', async () => {
    const { a, b, relay } = await relayedPair();
    try {
      await ask(a, 'set tok 0 0 2\r\nv0\r\n');
      await converged(a, b, 'tok');
      assert.equal(await ask(a, 'md tok I\r\n'), 'HD\r\n');
      // Records reach B in order: once a later write is there, A has read the item back and B has marked it.
      await ask(a, 'set after-tok 0 0 1\r\nx\r\n');
      await heldOnBoth(a, b, 'after-tok', true);
      for (const node of [a, b]) {
        const client = await RawClient.connect(node.memrepl.port);
        try {
          assert.match(await client.request('mg tok v\r\n', '\r\nv0\r\n'), /^VA 2 .*\bW\b/, 'the first read wins');
          assert.match(await client.request('mg tok v\r\n', '\r\nv0\r\n'), /^VA 2 .*\bZ\b/, 'the second sees the token taken');
        } finally {
          client.close();
        }
      }
    } finally {
      relay.close();
      await stopAll(a, b);
    }
  });

  it("a gat waiting in a stalled memcached while the peer's set of its key arrives: both nodes end with the same item", async () => {
    // On A, memcached runs the gat first and the peer's set after it: A ends with
    // the set's "no expiry". The gat's touch is stamped when its reply came, after
    // the set, so unless A sees that the two crossed, B applies it to the set.
    const { a, b, relay } = await relayedPair();
    const client = await RawClient.connect(a.memrepl.port);
    try {
      await ask(a, 'set k 0 0 2\r\nv0\r\nset other 0 0 2\r\nv0\r\n');
      await converged(a, b, 'k');
      await converged(a, b, 'other');
      a.memcached.child.kill('SIGSTOP');
      const touched = client.request('gat 300 other k\r\n', 'END\r\n');
      await sleep(50);
      assert.equal(await ask(b, 'set k 0 0 2\r\nv1\r\n'), 'STORED\r\n');
      await sleep(200);
      a.memcached.child.kill('SIGCONT');
      // memcached runs the two in either order once it resumes (the pair must converge either way).
      assert.match(await touched, /VALUE other 0 2\r\nv0\r\nVALUE k 0 2\r\nv[01]\r\nEND/);
      const held = await converged(a, b, 'k');
      assert.equal(held?.value, 'v1');
    } finally {
      a.memcached.child.kill('SIGCONT');
      client.close();
      relay.close();
      await stopAll(a, b);
    }
  });

  it("a touch that reaches the peer after the peer's copy of the item expired brings the item back there", async () => {
    // A touch replicates as an expiry; alone it finds nothing to extend on a peer whose copy ran out
    // while the link lagged, and the nodes would differ for the whole new expiry.
    await withRelayedPair([], async ({ a, b, relay }) => {
      await ask(a, 'set lagged 5 3 1\r\nx\r\nset deleted 0 3 1\r\nx\r\n');
      await converged(a, b, 'lagged');
      await converged(a, b, 'deleted');
      relay.stall();
      assert.equal(await ask(a, 'touch lagged 100\r\n'), 'TOUCHED\r\n');
      assert.equal(await ask(a, 'touch deleted 100\r\n'), 'TOUCHED\r\n');
      // B's client deletes this one after A wrote it: the delete must win on both.
      assert.equal(await ask(b, 'delete deleted\r\n'), 'DELETED\r\n');
      await sleep(3500); // both items have expired on B
      relay.resume();
      const held = await converged(a, b, 'lagged', 8000);
      assert.ok(held && held.ttl > 90, `ttl ${held?.ttl}`);
      assert.equal(held.flags, 5);
      await heldOnBoth(a, b, 'deleted', false, 8000);
    });
  });

  it('a set, touch or append that waited in a stalled memcached gets on the peer the expiry memcached really gave it', async () => {
    // Resumed, memcached runs what waited for it before its once-a-second clock catches up: on a
    // clock as old as the stall, so the item expires that much earlier than its exptime says,
    // and an item read back then (an append's) shows a remaining life as long as the stall too long.
    const { a, b, relay } = await relayedPair();
    try {
      await ask(a, 'set touched 0 0 1\r\nx\r\nset appended 0 1000 1\r\nx\r\n');
      await converged(a, b, 'touched');
      await converged(a, b, 'appended');
      for (let round = 0; round < 3; round++) {
        a.memcached.child.kill('SIGSTOP');
        const clients = await Promise.all([0, 1, 2].map(() => RawClient.connect(a.memrepl.port)));
        const replies = Promise.all([
          clients[0].request(`set stale${round} 0 1000 1\r\nx\r\n`, '\r\n', 8000),
          clients[1].request('touch touched 2000\r\n', '\r\n', 8000),
          clients[2].request('append appended 0 0 1\r\ny\r\n', '\r\n', 8000),
        ]);
        await sleep(3000);
        a.memcached.child.kill('SIGCONT');
        assert.deepEqual(await replies, ['STORED\r\n', 'TOUCHED\r\n', 'STORED\r\n']);
        for (const client of clients) client.close();
        const stale = await converged(a, b, `stale${round}`);
        assert.ok(stale && stale.ttl > 990, `ttl ${stale?.ttl}`);
        await converged(a, b, 'touched');
        // Read back at once, the append's item would reach the peer with ~3 s more to live than here.
        await sleep(1500);
        await converged(a, b, 'appended');
      }
    } finally {
      a.memcached.child.kill('SIGCONT');
      relay.close();
      await stopAll(a, b);
    }
  });

  it('a set sent while memcached stood still, answered within a second of it resuming, gets on the peer the expiry memcached gave it', async () => {
    // Seed 31 (120 s): a set sent to a memcached stopped for 6.5 s waited there only 0.38 s, so its
    // own reply did not look slow, yet it ran on the stale clock: 7 s less to live than on the peer.
    await withRelayedPair([], async ({ a, b }) => {
      for (let round = 0; round < 3; round++) {
        assert.equal(await whilePaused(a, `set late${round} 0 1000 1\r\nx\r\n`, 3000, 300), 'STORED\r\n');
        // Past memcached's next tick, when a read back tells the expiry it really holds.
        await sleep(1500);
        await converged(a, b, `late${round}`);
      }
    });
  });

  it("an item read again after a pause never undoes the peer's newer write of its key", async () => {
    // A read again corrects the expiry of the write it follows. Stamped as a new write, it carried
    // A's older value over B's newer set of the key, which A's memcached had not stored yet: both
    // nodes ended with A's value, and B's acknowledged set was lost.
    await withRelayedPair([], async ({ a, b, relay }) => {
      assert.equal(await whilePaused(a, 'set raced 0 1000 3\r\nold\r\n', 2000, 200, () => relay.stall()), 'STORED\r\n');
      assert.equal(await ask(b, 'set raced 0 1000 3\r\nnew\r\n'), 'STORED\r\n');
      await sleep(1500); // A reads the key again a tick after the pause
      relay.resume();
      await sleep(1500);
      for (const port of [a.memcached.port, b.memcached.port]) assert.equal((await item(port, 'raced'))?.value, 'new', `raced on ${port}`);
    });
  });

  it('a memcached that restarts just after standing still: the items read again after its tick are not deleted on the peer', async () => {
    // Seed 31 (600 s): memcached B stood still, then was killed 1 s after it resumed. The items B
    // read again a tick after the pause were read from its new, empty memcached and shipped as
    // deletes: A lost B's writes, and B's refill from A could not bring them back.
    await withRelayedPair([], async ({ a, b, relay }) => {
      assert.equal(await whilePaused(b, 'set paused 0 1000 1\r\nx\r\n', 2000, 200), 'STORED\r\n');
      await eventually(() => has(a.memcached.port, 'paused'), 1000, 'the set on A');
      // Held until B has read again (a tick after the pause): A's refill of B must not come first.
      relay.stall();
      const port = b.memcached.port;
      await b.memcached.stop('SIGKILL');
      b.memcached = await startMemcached([], port);
      await sleep(1500);
      relay.resume();
      await eventually(() => has(b.memcached.port, 'paused'), 10000, "the set back on B by A's copy");
      await sleep(1000);
      assert.equal(await has(a.memcached.port, 'paused'), true, 'A keeps it');
    });
  });

  it('a flush that crosses a newer write on the other node keeps that write on both', async () => {
    await withRelayedPair([], async ({ a, b, relay }) => {
      await ask(a, 'set doomed 0 0 1\r\nx\r\n');
      await converged(a, b, 'doomed');
      relay.stall();
      assert.equal(await ask(a, 'flush_all\r\n'), 'OK\r\n');
      await sleep(5);
      await ask(b, 'set survivor 0 0 1\r\ny\r\n');
      relay.resume();
      await heldOnBoth(a, b, 'doomed', false);
      await heldOnBoth(a, b, 'survivor', true);
      assert.deepEqual(await item(b.memcached.port, 'survivor'), await item(a.memcached.port, 'survivor'));
    });
  });

  it("a read back of a client's decr made after the peer's flush keeps its value on both nodes, even when it runs during the flush", async () => {
    // Seed 21 (600 s): a decr answered on B after A's flush_all, by a memcached that had stood still, so
    // B read it back again a tick later. That second read came while B was putting A's flush in
    // place: noted as a newer write, it made B skip storing the decr's value back, and, run after
    // the flush, it read a miss and shipped a delete. Both nodes lost the decr's acknowledged value.
    await withRelayedPair([], async ({ a, b, relay }) => {
      await ask(b, 'set counted 0 0 2\r\n46\r\n');
      await converged(a, b, 'counted');
      relay.stall();
      assert.equal(await ask(a, 'flush_all\r\n'), 'OK\r\n');
      // Answered after more than a tick of B's memcached standing still: B reads it back again after the next tick.
      b.memcached.child.kill('SIGSTOP');
      const decr = ask(b, 'decr counted 84\r\n');
      await sleep(1300);
      b.memcached.child.kill('SIGCONT');
      assert.equal(await decr, '0\r\n');
      await sleep(200);
      // A's flush reaches B and waits in B's memcached, stopped again, past the second read.
      b.memcached.child.kill('SIGSTOP');
      try {
        relay.resume();
        await sleep(1500);
      } finally {
        b.memcached.child.kill('SIGCONT');
      }
      await sleep(2000); // anything read back after a tick has landed
      // memcached's decr keeps the value's length ("46" less 84 is "0 ") when it can change the item in
      // place, and stores a new "0" when another reference holds it (CI once saw that): either, on both.
      const [onA, onB] = [await item(a.memcached.port, 'counted'), await item(b.memcached.port, 'counted')];
      assert.match(onA?.value ?? 'absent', /^0 ?$/, 'counted on A');
      assert.equal(onB?.value, onA?.value, 'counted on B');
    });
  });

  it("a client's flush_all waiting in a stalled memcached flushes the peer's older write that arrives meanwhile, on both nodes", async () => {
    // A wrote k before it heard of B's flush, so A flushes k when the flush arrives. On B the record
    // of k reached memrepl while the flush sat unanswered in memcached: applied at once, memcached
    // would run it after the flush, and B alone would keep k.
    const { a, b, relay } = await relayedPair();
    const client = await RawClient.connect(b.memrepl.port);
    try {
      b.memcached.child.kill('SIGSTOP');
      const flushed = client.request('flush_all\r\n');
      await sleep(50);
      assert.equal(await ask(a, 'set k 0 0 2\r\nv1\r\n'), 'STORED\r\n');
      await sleep(200);
      b.memcached.child.kill('SIGCONT');
      assert.equal(await flushed, 'OK\r\n');
      await heldOnBoth(a, b, 'k', false);
      assert.equal(await ask(a, 'set after 0 0 2\r\nv2\r\n'), 'STORED\r\n');
      await heldOnBoth(a, b, 'after', true);
    } finally {
      b.memcached.child.kill('SIGCONT');
      client.close();
      relay.close();
      await stopAll(a, b);
    }
  });

  it("a client's flush_all runs after the peer's records already on their way to memcached, on both nodes", async () => {
    const { a, b, relay } = await relayedPair();
    const client = await RawClient.connect(b.memrepl.port);
    const keys = Array.from({ length: 20 }, (_, i) => `early${i}`);
    try {
      b.memcached.child.kill('SIGSTOP');
      for (const key of keys) assert.equal(await ask(a, `set ${key} 0 0 1\r\nx\r\n`), 'STORED\r\n');
      await sleep(200);
      const flushed = client.request('flush_all\r\n');
      await sleep(50);
      b.memcached.child.kill('SIGCONT');
      assert.equal(await flushed, 'OK\r\n');
      for (const key of keys) await heldOnBoth(a, b, key, false);
    } finally {
      b.memcached.child.kill('SIGCONT');
      client.close();
      relay.close();
      await stopAll(a, b);
    }
  });

  it('a flush from the peer does not erase client writes that were on their way to memcached when it arrived', async () => {
    const { a, b, relay } = await relayedPair();
    const keys = Array.from({ length: 8 }, (_, i) => `inflight${i}`);
    const clients = await Promise.all(keys.map(() => RawClient.connect(b.memrepl.port)));
    try {
      relay.stall();
      assert.equal(await ask(a, 'flush_all\r\n'), 'OK\r\n');
      await sleep(5);
      // B's memcached stopped: the writes wait in its sockets, and the flush arriving next waits there too.
      b.memcached.child.kill('SIGSTOP');
      const stored = keys.map((key, i) => clients[i].request(`set ${key} 0 0 1\r\nw\r\n`));
      await sleep(50);
      relay.resume();
      await sleep(300);
      b.memcached.child.kill('SIGCONT');
      assert.deepEqual(
        await Promise.all(stored),
        keys.map(() => 'STORED\r\n'),
      );
      // Written after the flush (on B, after A's flush reached nobody yet): they survive on both.
      for (const key of keys) await heldOnBoth(a, b, key, true);
    } finally {
      b.memcached.child.kill('SIGCONT');
      for (const client of clients) client.close();
      relay.close();
      await stopAll(a, b);
    }
  });
});

describe('partitions', () => {
  it('a partition longer than the conflict window is still decided by last writer wins', async () => {
    await withRelayedPair(['--conflict-window', '1'], async ({ a, b, relay }) => {
      relay.stall();
      // The link dies of silence (5 s without a frame) and cannot come back through the stalled relay.
      await eventually(async () => (await stat(a, 'peer_up')) === '0' && (await stat(b, 'peer_up')) === '0', 20000, 'link down');
      await ask(a, 'set contested 0 0 5\r\nolder\r\n');
      await sleep(20);
      await ask(b, 'set contested 0 0 5\r\nnewer\r\n');
      await sleep(1500); // past the window
      await ask(a, 'set later-a 0 0 1\r\nx\r\n');
      await ask(b, 'set later-b 0 0 1\r\nx\r\n');
      relay.resume();
      await linked(a, b);
      const held = await converged(a, b, 'contested', 10000);
      assert.equal(held?.value, 'newer');
      await heldOnBoth(a, b, 'later-a', true);
      await heldOnBoth(a, b, 'later-b', true);
    });
  });

  it('a stall longer than the conflict window, with the link still up, is decided by last writer wins', async () => {
    await withRelayedPair(['--conflict-window', '1'], async ({ a, b, relay }) => {
      relay.stall();
      await ask(a, 'set contested 0 0 5\r\nolder\r\n');
      await sleep(20);
      await ask(b, 'set contested 0 0 5\r\nnewer\r\n');
      await sleep(1500); // past the window, short of the link's 5 s silence limit
      await ask(a, 'set later-a 0 0 1\r\nx\r\n');
      await ask(b, 'set later-b 0 0 1\r\nx\r\n');
      await sleep(1000);
      relay.resume();
      const held = await converged(a, b, 'contested', 10000);
      assert.equal(held?.value, 'newer');
      await heldOnBoth(a, b, 'later-a', true);
      await heldOnBoth(a, b, 'later-b', true);
      // The same link throughout: the stall did not take it down.
      assert.ok(Number(await stat(a, 'link_uptime')) >= 2, `link_uptime ${await stat(a, 'link_uptime')}`);
    });
  });
});

describe('a peer that cannot keep up', () => {
  it("a stalled peer memcached holds its proxy's memory bounded; the pair converges once it runs again", async () => {
    const [a, b] = await startPair();
    try {
      await linked(a, b);
      const before = rssKb(b.memrepl.child.pid!);
      b.memcached.child.kill('SIGSTOP');
      const value = 'x'.repeat(100_000);
      const keys = Array.from({ length: 600 }, (_, i) => `big${i}`); // 60 MB, more than the 32 MiB backlog
      const client = await RawClient.connect(a.memrepl.port);
      try {
        for (let i = 0; i < keys.length; i += 20) {
          const batch = keys.slice(i, i + 20);
          await client.request(batch.map((key) => `set ${key} 0 0 ${value.length}\r\n${value}\r\n`).join(''), 'STORED\r\n'.repeat(batch.length), 10000);
        }
      } finally {
        client.close();
      }
      await sleep(1000);
      const grown = (rssKb(b.memrepl.child.pid!) - before) / 1024;
      b.memcached.child.kill('SIGCONT');
      assert.ok(grown < 64, `B's proxy grew by ${grown.toFixed(0)} MiB while its memcached was stopped`);
      await eventually(
        async () => {
          const [onA, onB] = await Promise.all([readAll(a.memcached.port, keys), readAll(b.memcached.port, keys)]);
          return keys.every((key) => (onA.get(key) === null) === (onB.get(key) === null));
        },
        60000,
        'B holds what A holds',
      );
    } finally {
      b.memcached.child.kill('SIGCONT');
      await stopAll(a, b);
    }
  });
});

describe('clients that hang up', () => {
  let a: Node;
  let b: Node;
  before(async () => {
    [a, b] = await startPair();
    await linked(a, b);
  });
  after(() => stopAll(a, b));

  it('noreply sets pipelined past the shared connection and then a close all reach the peer', async () => {
    const value = 'v'.repeat(100);
    for (let round = 0; round < 3; round++) {
      const keys = Array.from({ length: 500 }, (_, i) => `bulk${round}-${i}`);
      // Held back, memcached answers nothing before the client is gone: the proxy cannot
      // learn the outcome from the replies, yet memcached runs every set once it resumes.
      const stalled = round > 0;
      try {
        const socket = net.connect(a.memrepl.port, '127.0.0.1');
        await new Promise((resolve) => socket.once('connect', resolve));
        if (stalled) a.memcached.child.kill('SIGSTOP');
        // A multi-get of more than 16 keys moves the session to a connection of its own, and the sets follow it there.
        const multiGet = `get ${Array.from({ length: 20 }, (_, i) => `warm${i}`).join(' ')}\r\n`;
        socket.end(multiGet + keys.map((key) => `set ${key} 0 0 ${value.length} noreply\r\n${value}\r\n`).join(''));
        await new Promise((resolve) => socket.once('close', resolve));
        if (stalled) await sleep(200);
      } finally {
        if (stalled) a.memcached.child.kill('SIGCONT');
      }
      // memcached runs every request a client sent before it hung up, and so does the proxy: all of them, on both.
      let missing: string[] = [];
      await eventually(
        async () => {
          const [onA, onB] = await Promise.all([readAll(a.memcached.port, keys), readAll(b.memcached.port, keys)]);
          missing = keys.filter((key) => onA.get(key) === null || onB.get(key) === null);
          return missing.length === 0;
        },
        10000,
        () => `round ${round}: both hold every key (${missing.length} missing, e.g. ${missing.slice(0, 3).join(' ')})`,
      );
    }
  });

  it('every request a client sent before hanging up runs, as memcached runs them, also those still waiting for a connection', async () => {
    const keys = Array.from({ length: 30 }, (_, i) => `late${i}`);
    const socket = net.connect(a.memrepl.port, '127.0.0.1');
    await new Promise((resolve) => socket.once('connect', resolve));
    try {
      a.memcached.child.kill('SIGSTOP');
      // The get waits on the shared connection; the pipeline after it needs a connection of its own,
      // so it waits in the proxy until the get is answered, and the client is gone by then.
      socket.end(`get warm\r\n` + keys.map((key) => `set ${key} 0 0 1 noreply\r\nx\r\n`).join(''));
      await new Promise((resolve) => socket.once('close', resolve));
      await sleep(200);
    } finally {
      a.memcached.child.kill('SIGCONT');
    }
    for (const node of [a, b]) {
      let held = 0;
      await eventually(
        async () => {
          held = [...(await readAll(node.memcached.port, keys)).values()].filter((value) => value !== null).length;
          return held === keys.length;
        },
        5000,
        () => `${node === a ? 'A' : 'B'} holds all ${keys.length} keys (holds ${held})`,
      );
    }
  });
});

describe('a memcached that dies right after answering a write', () => {
  it('an append, prepend, incr or decr it answered still reaches the peer, run there as the client sent it', async () => {
    let relay!: DyingRelay;
    const ra = await freePort();
    const a = await startNode('a', ra, null, [], [], async (port) => {
      relay = new DyingRelay(port);
      return relay.start();
    });
    const b = await startNode('b', await freePort(), ra);
    const client = await RawClient.connect(a.memrepl.port);
    try {
      await linked(a, b);
      const before = 'set log 0 0 4\r\nline\r\nset head 0 0 4\r\nline\r\nset hits 0 0 2\r\n10\r\nset left 0 0 2\r\n10\r\n';
      assert.equal(await client.request(before, 'STORED\r\n'.repeat(4)), 'STORED\r\n'.repeat(4));
      await eventually(async () => (await item(b.memcached.port, 'left'))?.value === '10', 5000, 'the first values on b');
      // memcached answers all four, and is gone before memrepl can read any of the items back.
      relay.dieAfter('VA 1\r\n7\r\n');
      const writes = 'append log 0 0 5\r\n+more\r\nms head 4 MP\r\nnew+\r\nincr hits 5\r\nma left MD D3 v\r\n';
      assert.equal(await client.request(writes, 'VA 1\r\n7\r\n'), 'STORED\r\nHD\r\n15\r\nVA 1\r\n7\r\n');
      const expected = { log: 'line+more', head: 'new+line', hits: '15', left: '7' };
      const onB: Record<string, string | undefined> = {};
      await eventually(
        async () => {
          // trimEnd: a decr may keep the value's length, padded with spaces (when memcached can change it in place).
          for (const key of Object.keys(expected)) onB[key] = (await item(b.memcached.port, key))?.value.trimEnd();
          return JSON.stringify(onB) === JSON.stringify(expected);
        },
        5000,
        () => `b to run the writes memcached a answered (b holds ${JSON.stringify(onB)})`,
      );
    } finally {
      client.close();
      relay.close();
      await stopAll(a, b);
    }
  });
});

describe('a peer that predates replayed writes and inbound delays (an older memrepl)', () => {
  it('gets pings it can parse, and a delete where a newer peer would get the replayed write', async () => {
    let relay!: DyingRelay;
    const a = await startNode('a', await freePort(), null, [], [], async (port) => {
      relay = new DyingRelay(port);
      return relay.start();
    });
    const peer = await RawLink.open(a.replicationPort);
    const client = await RawClient.connect(a.memrepl.port);
    try {
      assert.ok(await peer.first('hello', 2000), 'the node greets');
      // A HELLO as a memrepl before session 18 sent it: neither pingInbound nor opRecords.
      peer.send(serializeHello({ cluster: 'memrepl', nodeId: 'old', runId: 'old-run', lastApplied: null, nonce: newNonce(), time: Date.now(), lastSeq: 0 }));
      await eventually(async () => (await stat(a, 'peer_up')) === '1', 5000, 'the link up');
      assert.equal(await client.request('set log 0 0 4\r\nline\r\n'), 'STORED\r\n');
      relay.dieAfter('STORED\r\n');
      assert.equal(await client.request('append log 0 0 5\r\n+more\r\n'), 'STORED\r\n');
      const ops = () => peer.frames.flatMap((f) => (f.type === 'record' && f.seq > 0 && f.key.toString() === 'log' ? [f.op] : []));
      await eventually(
        async () => ops().length === 2,
        5000,
        () => `both writes of log sent (so far: ${ops().join(', ')})`,
      );
      assert.deepEqual(ops(), ['set', 'delete']);
      await eventually(async () => peer.frames.some((f) => f.type === 'ping'), 2000, 'a ping');
      assert.deepEqual(
        peer.frames.filter((f) => f.type === 'ping' && f.inboundMs !== undefined),
        [],
        'no ping carries an inbound delay',
      );
    } finally {
      client.close();
      peer.close();
      relay.close();
      await stopAll(a);
    }
  });
});

describe('requests whose reply never comes', () => {
  // A proxy that gives up on a silent memcached (--upstream-timeout) has still sent it the requests, and memcached runs them.
  const timeout = ['--upstream-timeout', '300'];
  const warm = `get ${Array.from({ length: 20 }, (_, i) => `warm${i}`).join(' ')}\r\n`;
  let a: Node;
  let b: Node;
  let relay: MuteRelay;
  before(async () => {
    const ra = await freePort();
    a = await startNode('a', ra, null, timeout, [], async (port) => {
      relay = new MuteRelay(port);
      return relay.start();
    });
    b = await startNode('b', await freePort(), ra, timeout);
    await linked(a, b);
  });
  after(async () => {
    relay.close();
    await stopAll(a, b);
  });

  it('writes that timed out in a stalled memcached are read back only once it ran them: both nodes end with every one', async () => {
    // memcached runs a connection's requests some at a time, and answers other connections in between:
    // a read back on replication's connection, sent at the timeout, may be answered before the write it reads.
    const keys = Array.from({ length: 2000 }, (_, i) => `stalled${i}`);
    const client = await RawClient.connect(a.memrepl.port);
    try {
      a.memcached.child.kill('SIGSTOP');
      // The multi-get takes the session to a connection of its own, and the sets follow it there.
      client.send(warm + keys.map((key) => `set ${key} 0 0 ${key.length}\r\n${key}\r\n`).join(''));
      await sleep(1000);
    } finally {
      a.memcached.child.kill('SIGCONT');
    }
    try {
      await client.read((bytes) => bytes.toString('latin1').split('\r\n').length > keys.length, 10000);
    } finally {
      client.close();
    }
    let differ: string[] = [];
    await eventually(
      async () => {
        const [onA, onB] = await Promise.all([readAll(a.memcached.port, keys), readAll(b.memcached.port, keys)]);
        differ = keys.filter((key) => onA.get(key)?.value.toString() !== key || onB.get(key)?.value.toString() !== key);
        return differ.length === 0;
      },
      10000,
      () => `both hold every key (${differ.length} do not, e.g. ${differ.slice(0, 3).join(' ')})`,
    );
  });

  it('a flush_all while memcached is stopped fails within the reply timeout, unsent, and flushes nothing anywhere', async () => {
    // Before it goes, a flush waits for memcached's flush count: stopped, memcached never gives it,
    // and the flush, with every client write held behind it, would wait for as long.
    assert.equal(await ask(a, 'set kept 0 0 1\r\nx\r\n'), 'STORED\r\n');
    await heldOnBoth(a, b, 'kept', true);
    const client = await RawClient.connect(a.memrepl.port);
    try {
      a.memcached.child.kill('SIGSTOP');
      const reply = await client.request('flush_all\r\n', '\r\n', 3000);
      assert.match(reply, /^SERVER_ERROR /);
    } finally {
      a.memcached.child.kill('SIGCONT');
      client.close();
    }
    assert.equal(await ask(a, 'set after-refused 0 0 1\r\ny\r\n'), 'STORED\r\n');
    await heldOnBoth(a, b, 'after-refused', true);
    await heldOnBoth(a, b, 'kept', true);
  });

  it('a flush_all memcached ran without the proxy hearing back is replicated', async () => {
    assert.equal(await ask(a, 'set before-mute 0 0 1\r\nx\r\n'), 'STORED\r\n');
    await heldOnBoth(a, b, 'before-mute', true);
    relay.mute();
    // Behind the multi-get, on a connection opened now: memcached runs both, and their replies never come.
    const client = await RawClient.connect(a.memrepl.port);
    try {
      client.send(warm + 'flush_all\r\n');
      const replies = await client.read((bytes) => bytes.toString('latin1').split('SERVER_ERROR').length === 3, 5000);
      assert.match(replies.toString('latin1'), /SERVER_ERROR/);
    } finally {
      client.close();
    }
    await heldOnBoth(a, b, 'before-mute', false);
  });
});
