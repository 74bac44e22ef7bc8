/**
 * Replication between two real memrepl processes, each in front of its own
 * real memcached (docs/design.md §4 to §10). Both sides are always checked on the
 * memcacheds themselves, not through the proxies.
 */
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { RawClient } from './support/client';
import { eventually, freePort, sleep } from './support/ports';
import { Node, startNode, startPair, stopAll } from './support/processes';
import { converged, item, linked, stat } from './support/replication';
import { Relay } from './support/relay';

async function metric(node: Node, pattern: RegExp): Promise<number> {
  const body = await (await fetch(`http://127.0.0.1:${node.metricsPort}/metrics`)).text();
  const match = pattern.exec(body);
  return match ? Number(match[1]) : 0;
}

/** Both replicas hold the same items for these keys. */
async function sameData(a: Node, b: Node, keys: string[]): Promise<void> {
  for (const key of keys) await converged(a, b, key, 10000);
}

describe('every replicated command, both directions', () => {
  let a: Node;
  let b: Node;
  before(async () => {
    [a, b] = await startPair();
    await linked(a, b);
  });
  after(() => stopAll(a, b));

  // [name, setup on the writer, the write, expected value on the peer (null = absent)]
  const cases: Array<[string, string, string, string | null]> = [
    ['set', '', 'set K 7 300 5\r\nhello\r\n', 'hello'],
    ['set noreply', '', 'set K 7 300 5 noreply\r\nhello\r\n', 'hello'],
    ['add', '', 'add K 1 0 3\r\nnew\r\n', 'new'],
    ['replace', 'set K 0 0 1\r\nx\r\n', 'replace K 2 60 3\r\nrep\r\n', 'rep'],
    ['cas', 'set K 0 0 1\r\nx\r\n', 'gets K\r\n', 'x'],
    ['append', 'set K 5 0 3\r\nabc\r\n', 'append K 0 0 3\r\ndef\r\n', 'abcdef'],
    ['prepend noreply', 'set K 5 0 3\r\nabc\r\n', 'prepend K 0 0 3 noreply\r\nxyz\r\n', 'xyzabc'],
    ['incr', 'set K 0 0 2\r\n10\r\n', 'incr K 5\r\n', '15'],
    ['decr noreply', 'set K 0 0 2\r\n10\r\n', 'decr K 3 noreply\r\n', '7'],
    ['touch', 'set K 0 0 1\r\nx\r\n', 'touch K 500\r\n', 'x'],
    ['gat', 'set K 0 0 1\r\nx\r\n', 'gat 700 K\r\n', 'x'],
    ['delete', 'set K 0 0 1\r\nx\r\n', 'delete K\r\n', null],
    ['delete noreply', 'set K 0 0 1\r\nx\r\n', 'delete K noreply\r\n', null],
    ['ms', '', 'ms K 3 F9 T400\r\nabc\r\n', 'abc'],
    ['ms q', '', 'ms K 3 F9 T400 q\r\nabc\r\n', 'abc'],
    ['ms append mode', 'ms K 1 F4\r\na\r\n', 'ms K 1 MA\r\nb\r\n', 'ab'],
    ['ma', 'ms K 1\r\n5\r\n', 'ma K D10\r\n', '15'],
    ['ma q with N', '', 'ma K q N0 J42\r\n', '42'],
    ['md q', 'ms K 1\r\nx\r\n', 'md K q\r\n', null],
    ['mg T', 'ms K 1\r\nx\r\n', 'mg K T900\r\n', 'x'],
  ];

  for (const [name, setup, write, expected] of cases) {
    for (const [from, to] of [
      ['A', 'B'],
      ['B', 'A'],
    ] as const) {
      it(`${name}: ${from} → ${to}`, async () => {
        const [writer, peer] = from === 'A' ? [a, b] : [b, a];
        const key = `${name.replace(/ /g, '_')}_${from}`;
        const client = await RawClient.connect(writer.memrepl.port);
        if (setup) client.send(setup.replace(/K/g, key));
        await client.settle(50);
        if (name === 'cas') {
          const cas = /VALUE \S+ \d+ \d+ (\d+)/.exec(await client.request(write.replace(/K/g, key), 'END\r\n'))![1];
          assert.equal(await client.request(`cas ${key} 3 200 4 ${cas}\r\ncas!\r\n`), 'STORED\r\n');
        } else {
          client.send(write.replace(/K/g, key));
        }
        await client.request('mn\r\n', 'MN\r\n');
        client.close();
        const want = name === 'cas' ? 'cas!' : expected;
        // The peer holds exactly what the writer's memcached holds (value, flags, TTL within 1 s)...
        const held = await converged(writer, peer, key);
        // ...and that is the write's result (memcached pads a shrunk counter with spaces).
        assert.equal(held?.value.trimEnd() ?? null, want);
        if (want !== null) assert.ok(held!.ttl !== 0);
      });
    }
  }

  it('flush_all replicates with its delay', async () => {
    const client = await RawClient.connect(a.memrepl.port);
    await client.request('set f1 0 0 1\r\nx\r\n');
    await converged(a, b, 'f1');
    assert.equal(await client.request('flush_all\r\n'), 'OK\r\n');
    await eventually(async () => (await item(b.memcached.port, 'f1')) === null, 5000, 'flush on B');
    client.close();
  });

  it('reads, failed writes and applied records produce no record', async () => {
    const client = await RawClient.connect(a.memrepl.port);
    await client.request('set r 0 0 1\r\nx\r\n');
    await converged(a, b, 'r');
    const [seqA, seqB] = [Number(await stat(a, 'last_seq')), Number(await stat(b, 'last_seq'))];
    client.send('get r\r\ngets r\r\nmg r v\r\nadd r 0 0 1\r\ny\r\nreplace nope 0 0 1\r\ny\r\ncas r 0 0 1 1\r\ny\r\n');
    client.send('incr nope 1\r\ntouch nope 1\r\nappend nope 0 0 1\r\ny\r\nma nope\r\nms r 1 ME\r\nz\r\n');
    await client.request('mn\r\n', 'MN\r\n');
    await sleep(200);
    assert.equal(Number(await stat(a, 'last_seq')), seqA, 'A recorded a read or a failed write');
    assert.equal(Number(await stat(b, 'last_seq')), seqB, 'B re-shipped a record it applied');
    client.close();
  });

  it('a delete answered NOT_FOUND still deletes the key on the peer (it may be missing only here)', async () => {
    const client = await RawClient.connect(b.memrepl.port);
    for (const [key, verb] of [
      ['gone1', 'delete gone1'],
      ['gone2', 'md gone2'],
    ]) {
      await client.request(`set ${key} 0 0 1\r\nx\r\n`);
      await converged(b, a, key);
      // Lost behind B's back (a restarted memcached not noticed yet, an eviction): B's client deletes a key B lacks.
      const direct = await RawClient.connect(b.memcached.port);
      await direct.request(`delete ${key}\r\n`);
      direct.close();
      assert.match(await client.request(`${verb}\r\n`), /^(NOT_FOUND|NF)\r\n$/);
      await eventually(async () => (await item(a.memcached.port, key)) === null, 5000, `${key} deleted on A`);
    }
    client.close();
  });

  it('stats replication and /readyz describe the link', async () => {
    assert.equal(await stat(b, 'peer_node_id'), 'a');
    assert.equal(await stat(a, 'peer_node_id'), 'b');
    assert.equal((await fetch(`http://127.0.0.1:${b.metricsPort}/readyz`)).status, 200);
    assert.equal(await metric(a, /memrepl_peer_up (\d+)/), 1);
  });
});

describe('links and faults', () => {
  it('two nodes that dial each other end with exactly one link', async () => {
    const [a, b] = await startPair([], { bothDial: true });
    try {
      await linked(a, b);
      await sleep(1000);
      assert.equal(await stat(a, 'links'), '1');
      assert.equal(await stat(b, 'links'), '1');
      const client = await RawClient.connect(b.memrepl.port);
      await client.request('set both 0 0 1\r\nx\r\n');
      await converged(a, b, 'both');
      client.close();
    } finally {
      await stopAll(a, b);
    }
  });

  it('garbage, a wrong cluster and a stranger on the replication port change nothing', async () => {
    const [a, b] = await startPair();
    try {
      await linked(a, b);
      for (const bytes of [Buffer.from('set evil 0 0 4\r\nevil\r\n'), Buffer.alloc(100, 0xff), Buffer.from([0, 0, 0, 9, 0x52, 1, 2])]) {
        const socket = net.connect(a.replicationPort, '127.0.0.1');
        socket.on('error', () => {});
        socket.write(bytes);
        await sleep(100);
        socket.destroy();
      }
      const stranger = await startNode('c', await freePort(), a.replicationPort, ['--cluster', 'other']);
      await sleep(500);
      assert.equal(await item(a.memcached.port, 'evil'), null);
      assert.match(stranger.memrepl.output() + a.memrepl.output(), /cluster mismatch/);
      await stopAll(stranger);
      const client = await RawClient.connect(a.memrepl.port);
      await client.request('set after 0 0 1\r\nx\r\n');
      await converged(a, b, 'after');
      client.close();
    } finally {
      await stopAll(a, b);
    }
  });

  it('kill -9 of a proxy while its peer takes writes: partial resync, nothing missing', async () => {
    const [a, b] = await startPair();
    try {
      await linked(a, b);
      const client = await RawClient.connect(a.memrepl.port);
      await client.request('set before 0 0 1\r\nx\r\n');
      await converged(a, b, 'before');
      await sleep(100); // B saves where it stands every few ms; without it, it would (rightly) ask for a full copy
      await b.memrepl.stop('SIGKILL');
      for (let i = 0; i < 200; i++) client.send(`set k${i} 0 0 ${String(i).length}\r\n${i}\r\n`);
      await client.request('mn\r\n', 'MN\r\n');
      await b.restartProxy();
      await linked(a, b);
      await sameData(
        a,
        b,
        Array.from({ length: 200 }, (_, i) => `k${i}`),
      );
      assert.ok((await metric(a, /memrepl_replication_resyncs_total\{kind="partial"\} (\d+)/)) >= 1, 'A did a partial resync');
      client.close();
    } finally {
      await stopAll(a, b);
    }
  });

  it('a link cut mid-frame again and again loses no record and applies none twice', async () => {
    const ra = await freePort();
    const a = await startNode('a', ra, null);
    const relay = new Relay(ra);
    const b = await startNode('b', await freePort(), await relay.start());
    const cutter = setInterval(() => relay.cutAll(), 150);
    try {
      const [ca, cb] = [await RawClient.connect(a.memrepl.port), await RawClient.connect(b.memrepl.port)];
      await ca.request('set log 0 0 0\r\n\r\nset n 0 0 1\r\n0\r\n', 'STORED\r\nSTORED\r\n');
      for (let i = 0; i < 300; i++) {
        ca.send('append log 0 0 1 noreply\r\na\r\nincr n 1 noreply\r\n');
        cb.send(`set b${i} 0 0 1 noreply\r\nb\r\n`);
        if (i % 30 === 0) await sleep(40);
      }
      await ca.request('mn\r\n', 'MN\r\n');
      await cb.request('mn\r\n', 'MN\r\n');
      clearInterval(cutter);
      const log = await converged(a, b, 'log', 15000);
      assert.equal(log?.value, 'a'.repeat(300));
      assert.equal((await converged(a, b, 'n'))?.value, '300');
      await sameData(
        a,
        b,
        Array.from({ length: 300 }, (_, i) => `b${i}`),
      );
      ca.close();
      cb.close();
    } finally {
      clearInterval(cutter);
      relay.close();
      await stopAll(a, b);
    }
  });

  it("a record delivered late does not extend the item's life", async () => {
    const ra = await freePort();
    const a = await startNode('a', ra, null);
    const relay = new Relay(ra);
    const b = await startNode('b', await freePort(), await relay.start());
    try {
      await linked(a, b);
      relay.stall();
      const client = await RawClient.connect(a.memrepl.port);
      await client.request('set late 0 10 1\r\nx\r\n');
      await sleep(3000);
      relay.resume();
      const held = await converged(a, b, 'late');
      assert.ok(held && held.ttl <= 7 && held.ttl >= 5, `ttl ${held?.ttl}`);
      client.close();
    } finally {
      relay.close();
      await stopAll(a, b);
    }
  });

  it("a queue standing on the link for longer than the clock windows (20 s) does not extend the items' life", async () => {
    // B dials A through the relay, which holds everything A sends for 3 s from some point on: A's frames reach B
    // 3 s late, for longer than B's clock-offset windows remember a fast frame, while B's frames reach A at once.
    const ra = await freePort();
    const a = await startNode('a', ra, null);
    const relay = new Relay(ra);
    const b = await startNode('b', await freePort(), await relay.start());
    const client = await RawClient.connect(a.memrepl.port);
    try {
      await linked(a, b);
      await sleep(1000); // a few pings each way on a fast link
      relay.holdBack(3000);
      await sleep(24_000);
      await client.request('set queued 0 30 1\r\nx\r\n');
      await eventually(async () => (await item(b.memcached.port, 'queued')) !== null, 10_000, '"queued" on B');
      // Stored on B about 3 s after A stored it, with what was left of its life: both end at the same moment.
      // Taken for clock offset, the queue gave it 30 s on B from then, 3 s more than on A.
      const [onA, onB] = await Promise.all([item(a.memcached.port, 'queued'), item(b.memcached.port, 'queued')]);
      assert.ok(onA && onB && Math.abs(onA.ttl - onB.ttl) <= 1 && onB.ttl <= 28, `ttl on A ${onA?.ttl}, on B ${onB?.ttl}`);
    } finally {
      client.close();
      relay.close();
      await stopAll(a, b);
    }
  });

  it('concurrent conflicting writes of the same keys end identical on both', async () => {
    const [a, b] = await startPair();
    try {
      await linked(a, b);
      const [ca, cb] = [await RawClient.connect(a.memrepl.port), await RawClient.connect(b.memrepl.port)];
      const keys = Array.from({ length: 20 }, (_, i) => `c${i}`);
      for (let round = 0; round < 50; round++) {
        for (const key of keys) {
          ca.send(`set ${key} 1 0 3 noreply\r\nA${String(round).padStart(2, '0')}\r\n`);
          cb.send(`set ${key} 2 0 3 noreply\r\nB${String(round).padStart(2, '0')}\r\n`);
        }
        if (round % 10 === 0) {
          ca.send(`delete c${round % 20} noreply\r\n`);
          cb.send(`append c${(round + 1) % 20} 0 0 1 noreply\r\n+\r\n`);
        }
      }
      await ca.request('mn\r\n', 'MN\r\n');
      await cb.request('mn\r\n', 'MN\r\n');
      await sameData(a, b, keys);
      ca.close();
      cb.close();
    } finally {
      await stopAll(a, b);
    }
  });
});

describe('records the peer cannot store', () => {
  let a: Node;
  let b: Node;
  before(async () => {
    // A's memcached takes items up to 2 MB, B's keeps the default 1 MB.
    const [ra, rb] = [await freePort(), await freePort()];
    a = await startNode('a', ra, null, [], ['-I', '2m']);
    b = await startNode('b', rb, ra);
    await linked(a, b);
    // The first copies over: one still walking would send 'mid' again, and B would refuse it twice.
    for (const node of [a, b])
      await eventually(async () => (await stat(node, 'copy_sending')) === '0' && (await stat(node, 'copy_receiving')) === '0', 10000, 'first copies done');
  });
  after(() => stopAll(a, b));

  it("records the peer's memcached refuses, or that it would not even take off the link, are counted and passed over", async () => {
    const client = await RawClient.connect(a.memrepl.port);
    // Just over B's item size: its memcached refuses it. Far over: B's link would refuse the frame, so A sends a delete.
    const [mid, big] = ['m'.repeat(1_048_576 + 10_000), 'v'.repeat(1_500_000)];
    client.send(`set before 0 0 1\r\nx\r\nset mid 0 0 ${mid.length}\r\n${mid}\r\nset big 0 0 ${big.length}\r\n${big}\r\nset after 0 0 1\r\ny\r\n`);
    await client.read((bytes) => bytes.toString('latin1') === 'STORED\r\n'.repeat(4), 5000);
    client.close();
    await eventually(async () => (await item(b.memcached.port, 'after'))?.value === 'y', 5000, '"after" on B');
    assert.equal((await item(b.memcached.port, 'before'))?.value, 'x');
    for (const [key, value] of [
      ['mid', mid],
      ['big', big],
    ]) {
      assert.equal(await item(b.memcached.port, key), null, `B's memcached cannot hold ${key}`);
      assert.equal((await item(a.memcached.port, key))?.value.length, value.length);
    }
    assert.equal(await metric(b, /memrepl_replication_records_skipped_total\{reason="refused"\} (\d+)/), 1);
    assert.equal(await metric(a, /memrepl_replication_records_skipped_total\{reason="too_large_for_peer"\} (\d+)/), 1);
    await eventually(async () => (await stat(b, 'applied_seq')) === (await stat(a, 'last_seq')), 5000, "B applied all of A's records");
    assert.equal(await stat(b, 'peer_up'), '1', 'the link stayed up');
  });

  it('a full copy to such a peer passes over what it cannot hold and completes', async () => {
    await stopAll(b);
    b = await startNode('b', b.replicationPort, a.replicationPort);
    await linked(a, b);
    await eventually(async () => (await stat(b, 'copies_received')) === '1', 10000, 'the copy to complete on B');
    assert.equal((await item(b.memcached.port, 'before'))?.value, 'x');
    assert.equal((await item(b.memcached.port, 'after'))?.value, 'y');
    assert.equal(await item(b.memcached.port, 'mid'), null);
    assert.equal(await item(b.memcached.port, 'big'), null);
    assert.equal(await stat(b, 'peer_up'), '1');
  });
});
