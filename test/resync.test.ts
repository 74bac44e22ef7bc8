/**
 * Full copy ("marugoto", docs/design.md §11): a node whose memcached is empty is
 * refilled from its peer by walking the peer's cache, while clients keep
 * writing to both nodes. Real memcached and memrepl processes.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Item, load, readAll, untilSame } from './support/bulk';
import { RawClient } from './support/client';
import { eventually, freePort, sleep } from './support/ports';
import { Node, startMemcached, startNode, stopAll } from './support/processes';
import { has, relayedPair, stat, write, withRelayedPair } from './support/replication';
import { Relay } from './support/relay';

const ITEM_LIMIT = 1024 * 1024;

/** Keys that need URL-encoding in metadump, values of mixed sizes up to near the item limit, with and without expiry. */
function population(count: number): Item[] {
  return Array.from({ length: count }, (_, i) => ({
    key: i % 7 === 0 ? `k%${i}"é&=+?` : `key:${i}`,
    value: Buffer.alloc(i % 5000 === 0 ? ITEM_LIMIT - 1024 : 10 + (i % 300), String.fromCharCode(97 + (i % 26))),
    flags: i % 13,
    exptime: i % 3 === 0 ? 0 : 600 + (i % 1000),
  }));
}

async function readyz(node: Node): Promise<{ status: number; body: string }> {
  const response = await fetch(`http://127.0.0.1:${node.metricsPort}/readyz`);
  return { status: response.status, body: await response.text() };
}

describe('full copy', () => {
  it('an empty node gets every item of its peer while clients write to both', async () => {
    const ra = await freePort();
    const a = await startNode('a', ra, null);
    const items = population(100_000);
    await load(a.memcached.port, items);
    const b = await startNode('b', await freePort(), ra, ['--resync-rate', '40000']);
    try {
      // Live traffic on both nodes during the copy: new keys, overwrites of copied keys, deletes.
      const [ca, cb] = [await RawClient.connect(a.memrepl.port), await RawClient.connect(b.memrepl.port)];
      await eventually(async () => (await stat(b, 'copy_receiving')) === '1', 10000, 'the copy to start');
      assert.equal((await readyz(b)).status, 503, 'a cold node is not ready');
      const live: string[] = [];
      for (let i = 0; i < 500; i++) {
        ca.send(`set live:a:${i} 0 0 1 noreply\r\na\r\n`);
        cb.send(`set live:b:${i} 0 0 1 noreply\r\nb\r\n`);
        live.push(`live:a:${i}`, `live:b:${i}`);
        if (i % 50 === 0) {
          ca.send(`set key:${99_999 - i} 5 0 7 noreply\r\nchanged\r\n`);
          ca.send(`delete key:${99_998 - i} noreply\r\n`);
          cb.send(`delete key:${99_997 - i} noreply\r\n`);
          await sleep(20);
        }
      }
      await ca.request('mn\r\n', 'MN\r\n');
      await cb.request('mn\r\n', 'MN\r\n');
      await eventually(async () => (await stat(b, 'copies_received')) === '1', 60000, 'the copy to finish');
      await sleep(500);
      const keys = [...items.map((i) => i.key), ...live];
      await untilSame(a.memcached.port, b.memcached.port, keys, 10_000, 'A and B to hold the same items');
      const onB = await readAll(b.memcached.port, keys);
      // Deleted during the copy: gone on both (no resurrection); overwritten: the live value.
      assert.equal(onB.get('key:99998'), null);
      assert.equal(onB.get('key:99997'), null);
      assert.equal(onB.get('key:99999')?.value.toString(), 'changed');
      assert.equal(onB.get(items[5000].key)?.value.length, ITEM_LIMIT - 1024);
      assert.ok([...onB.values()].filter((v) => v !== null).length > 99_000);
      assert.equal((await readyz(b)).status, 200);
      ca.close();
      cb.close();
    } finally {
      await stopAll(a, b);
    }
  });

  it("a memcached restarted behind a running memrepl is refilled, its own clients' writes included", async () => {
    const ra = await freePort();
    const a = await startNode('a', ra, null);
    const b = await startNode('b', await freePort(), ra);
    try {
      await eventually(async () => (await stat(b, 'peer_up')) === '1', 10000, 'link');
      const items = population(5000);
      // Half written through each node: B's own recent writes must not keep the copy from restoring them.
      await load(
        a.memrepl.port,
        items.filter((_, i) => i % 2 === 0),
      );
      await load(
        b.memrepl.port,
        items.filter((_, i) => i % 2 === 1),
      );
      const keys = items.map((i) => i.key);
      await untilSame(a.memcached.port, b.memcached.port, keys, 15000, 'B to follow');
      const port = b.memcached.port;
      await b.memcached.stop('SIGKILL');
      b.memcached = await startMemcached([], port);
      await untilSame(a.memcached.port, b.memcached.port, keys, 20000, 'B to be refilled');
      assert.match(await stat(b, 'copies_received'), /^[1-9]/);
    } finally {
      await stopAll(a, b);
    }
  });

  for (const proxyToo of [false, true]) {
    it(`a memcached restarted while a delayed flush_all is scheduled gets it back${proxyToo ? ', its memrepl restarted too' : ''}: what the copy refills before the moment goes at the moment on both`, async () => {
      const ra = await freePort();
      const a = await startNode('a', ra, null);
      const b = await startNode('b', await freePort(), ra);
      try {
        await eventually(async () => (await stat(b, 'peer_up')) === '1', 10000, 'link');
        const items = population(200);
        await load(a.memrepl.port, items);
        const keys = items.map((i) => i.key);
        await untilSame(a.memcached.port, b.memcached.port, keys, 15000, 'B to follow');
        const client = await RawClient.connect(a.memrepl.port);
        assert.equal(await client.request('flush_all 5\r\n'), 'OK\r\n');
        client.close();
        const moment = Date.now() + 5000;
        await eventually(async () => (await stat(a, 'acked_seq')) === (await stat(a, 'last_seq')), 3000, 'B to have the flush');
        // memcached's schedule dies with it; memrepl A still knows it (in memory, or in its state dir).
        const copies = proxyToo ? 0 : Number(await stat(a, 'copies_received'));
        const port = a.memcached.port;
        if (proxyToo) await a.memrepl.stop('SIGKILL');
        await a.memcached.stop('SIGKILL');
        a.memcached = await startMemcached([], port);
        if (proxyToo) await a.restartProxy();
        await eventually(
          async () => Number(await stat(a, 'copies_received')) > copies && (await has(a.memcached.port, keys[0])),
          4000,
          () => `A refilled before the moment; A's log:\n${a.memrepl.output().slice(-1500)}`,
        );
        await sleep(moment + 2500 - Date.now());
        for (const key of keys.slice(0, 20)) {
          assert.equal(await has(b.memcached.port, key), false, `${key} flushed on B`);
          assert.equal(await has(a.memcached.port, key), false, `${key} flushed on A`);
        }
      } finally {
        await stopAll(a, b);
      }
    });
  }

  it('a node whose memcached restarted while the link was down gets its full copy from a peer whose own memcached restarted earlier', async () => {
    // Seed 31 (120 s): A's memcached restarted and was refilled from B; then B's restarted while the link
    // was down, so B's next HELLO asked for a copy by naming no position. A took it for a peer that had
    // merely applied nothing, and skipped copies from a memcached that holds only a mirror of the peer:
    // B waited for a copy that never came (not ready for good) and lost its own writes.
    const { a, b, relay } = await relayedPair();
    try {
      await write(b, 'from-b');
      await eventually(() => has(a.memcached.port, 'from-b'), 5000, 'from-b on A');
      const copiesToA = Number(await stat(a, 'copies_received'));
      const portA = a.memcached.port;
      await a.memcached.stop('SIGKILL');
      a.memcached = await startMemcached([], portA);
      await eventually(async () => Number(await stat(a, 'copies_received')) > copiesToA, 15000, 'the refill of A');
      await eventually(() => has(a.memcached.port, 'from-b'), 5000, 'from-b back on A');
      const relayPort = relay.port;
      relay.close();
      await eventually(async () => (await stat(b, 'peer_up')) === '0', 5000, 'the link down');
      const portB = b.memcached.port;
      await b.memcached.stop('SIGKILL');
      b.memcached = await startMemcached([], portB);
      await eventually(async () => (await stat(b, 'copy_receiving')) === '1', 5000, 'B cold, waiting for a copy');
      const back = new Relay(a.replicationPort);
      await back.start(relayPort);
      try {
        await eventually(() => has(b.memcached.port, 'from-b'), 15000, 'from-b back on B by a full copy from A');
        await eventually(async () => (await stat(b, 'copy_receiving')) === '0', 5000, 'B ready');
      } finally {
        back.close();
      }
    } finally {
      relay.close();
      await stopAll(a, b);
    }
  });

  it('a link cut in the middle of a copy: the copy completes after reconnecting', async () => {
    const ra = await freePort();
    const a = await startNode('a', ra, null);
    const items = population(30_000);
    await load(a.memcached.port, items);
    const relay = new Relay(ra);
    const b = await startNode('b', await freePort(), await relay.start(), ['--resync-rate', '20000']);
    try {
      await eventually(async () => (await stat(b, 'copy_receiving')) === '1', 10000, 'the copy to start');
      await sleep(500);
      relay.cutAll();
      await eventually(async () => (await stat(b, 'copies_received')) === '1', 60000, 'the copy to finish after reconnecting');
      const keys = items.map((i) => i.key);
      await untilSame(a.memcached.port, b.memcached.port, keys, 10_000, 'A and B to hold the same items');
    } finally {
      relay.close();
      await stopAll(a, b);
    }
  });

  it("a link cut while a copy still waits for the asker's records: the next link's copy runs", async () => {
    const { a, b, relay } = await relayedPair();
    try {
      const direct = await RawClient.connect(a.memcached.port);
      await direct.request('set only-on-a 0 0 1\r\nx\r\n');
      direct.close();
      // A cannot apply B's records: a copy to B waits for them before its walk.
      a.memcached.child.kill('SIGSTOP');
      await write(b, 'from-b');
      const port = b.memcached.port;
      await b.memcached.stop('SIGKILL');
      b.memcached = await startMemcached([], port);
      await eventually(async () => (await stat(a, 'copy_sending')) === '1', 10000, 'A to take up the copy B asked for');
      relay.cutAll();
      await eventually(async () => (await stat(b, 'peer_up')) === '1' && (await stat(a, 'peer_up')) === '1', 15000, 'the link back');
      a.memcached.child.kill('SIGCONT');
      await eventually(async () => has(b.memcached.port, 'only-on-a'), 15000, 'the copy to reach B after the new link');
      await eventually(async () => has(a.memcached.port, 'from-b'), 5000, "B's write on A");
    } finally {
      a.memcached.child.kill('SIGCONT');
      relay.close();
      await stopAll(a, b);
    }
  });

  it("a write refused while the local memcached is down does not keep the peer's value from the copy that refills it", async () => {
    await withRelayedPair([], async ({ a, b }) => {
      const port = a.memcached.port;
      await a.memcached.stop('SIGKILL');
      await write(b, 'k');
      // memrepl A answers SERVER_ERROR: the write may or may not have reached memcached, so it reads the key back, and fails.
      const client = await RawClient.connect(a.memrepl.port);
      assert.match(await client.request('set k 0 0 3\r\nnew\r\n'), /^SERVER_ERROR/);
      client.close();
      a.memcached = await startMemcached([], port);
      await eventually(async () => has(a.memcached.port, 'k'), 15000, "B's value of k back on A");
    });
  });

  it("a proxy restarted with its memcached intact believes it during the reconciling copy: a key a peer's delete removed under its client's set goes on the peer too", async () => {
    // Fault suite, seed 57: B's proxy restarted (its memcached kept its items) and A reconciled with a copy. B's
    // client set a key while A's delete of it was on its way to B's memcached; memcached ran the delete last, and
    // the read back that repairs such overlaps found the key gone. Taking any incoming copy for a refill, B shipped
    // nothing, and A kept B's value.
    const ra = await freePort();
    // A copy that lasts: 30,000 items only A's memcached holds, at 2,000 items/s.
    const a = await startNode('a', ra, null, ['--resync-rate', '2000']);
    const b = await startNode('b', await freePort(), ra, ['-v']); // -v: its log says where it resumed
    try {
      // B's first copy (of an empty A) ended, so B keeps a checkpoint, and the items below go only in the next copy.
      await eventually(async () => Number(await stat(b, 'copies_received').catch(() => '0')) >= 1, 10000, "B's first copy");
      await load(
        a.memcached.port,
        Array.from({ length: 30000 }, (_, i) => ({ key: `only-a:${i}`, value: Buffer.from('x'), flags: 0, exptime: 0 })),
      );
      // Three rounds of 40 keys (see below), on both nodes before B's proxy restarts.
      const rounds = Array.from({ length: 3 }, (_, round) => Array.from({ length: 40 }, (_, i) => `race:${round}:${i}`));
      const keys = rounds.flat();
      const clientB = await RawClient.connect(b.memrepl.port);
      clientB.send(keys.map((k) => `set ${k} 0 0 3\r\nold\r\n`).join(''));
      await clientB.read((got) => got.toString().split('STORED').length > keys.length);
      await untilSame(a.memcached.port, b.memcached.port, keys, 10000, 'A to have the keys');
      await sleep(200); // B's checkpoint covers them
      clientB.close();
      await b.restartProxy();
      // Its memcached kept its items, and B knows it: warm, not cold.
      await eventually(
        async () => b.memrepl.output().includes('resuming from the checkpoint'),
        5000,
        () => `B to resume:\n${b.memrepl.output()}`,
      );
      await eventually(async () => (await stat(b, 'copy_receiving')) === '1', 10000, "A's reconciling copy to B");
      const setter = await RawClient.connect(b.memrepl.port);
      const deleter = await RawClient.connect(a.memrepl.port);
      try {
        // B's memcached stands still while B's client sets every key and A's deletes of them reach it: each key's
        // two writes are in flight at once. memcached runs one connection's commands before the other's, in either
        // order, so the race runs three times (each on keys of its own) for the delete to run last at least once.
        for (const [round, raced] of rounds.entries()) {
          b.memcached.child.kill('SIGSTOP');
          try {
            setter.send(raced.map((k) => `set ${k} 0 0 3\r\nnew\r\n`).join(''));
            deleter.send(raced.map((k) => `delete ${k}\r\n`).join(''));
            await deleter.read((got) => got.toString().split('DELETED').length > raced.length);
            await sleep(300);
          } finally {
            b.memcached.child.kill('SIGCONT');
          }
          await setter.read((got) => got.toString().split('STORED').length > raced.length);
          assert.equal(await stat(b, 'copy_receiving'), '1', 'the writes raced during the copy');
          await untilSame(a.memcached.port, b.memcached.port, raced, 10000, `A and B to agree on every key raced in round ${round}`).catch((error: Error) => {
            throw new Error(`${error.message}\nB's log:\n${b.memrepl.output().slice(-3000)}`);
          });
        }
      } finally {
        setter.close();
        deleter.close();
      }
    } finally {
      await stopAll(a, b);
    }
  });

  it('memcached -X (dumping disabled) is reported, and the pair still replicates live writes', async () => {
    const ra = await freePort();
    const a = await startNode('a', ra, null, [], ['-X']);
    const b = await startNode('b', await freePort(), ra);
    try {
      await eventually(async () => (await stat(b, 'peer_up')) === '1', 10000, 'link');
      assert.match(a.memrepl.output(), /dumping disabled/);
      assert.match((await readyz(a)).body, /full copy from this node impossible/);
      const client = await RawClient.connect(a.memrepl.port);
      await client.request('set x 0 0 1\r\nx\r\n');
      await eventually(async () => (await readAll(b.memcached.port, ['x'])).get('x') !== null, 5000, 'live write on B');
      client.close();
    } finally {
      await stopAll(a, b);
    }
  });
});
