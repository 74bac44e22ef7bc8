/**
 * Client sessions sharing upstream connections (src/proxy/shared-upstream.ts):
 * each client gets its own replies, in order, however requests from many
 * clients interleave; a client that stops reading neither stalls the others
 * nor grows memory; commands with connection state get a connection of their
 * own; a shared connection that dies fails only what was in flight on it.
 * Real memcached and memrepl processes on loopback.
 */
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { describe, it } from 'node:test';
import { memcachedStat, RawClient } from './support/client';
import { assertOthersUnharmed } from './support/isolation';
import { eventually, sleep } from './support/ports';
import { startMemcached, startMemrepl, rssKb } from './support/processes';

/** A TCP relay in front of memcached that can hold or cut one upstream connection, by the order they were opened. */
class Relay {
  readonly pairs: Array<{ inbound: net.Socket; outbound: net.Socket; held: boolean }> = [];
  private readonly server: net.Server;
  port = 0;

  constructor(target: number) {
    this.server = net.createServer((inbound) => {
      const outbound = net.connect(target, '127.0.0.1');
      const pair = { inbound, outbound, held: false };
      this.pairs.push(pair);
      inbound.on('data', (chunk) => outbound.write(chunk));
      outbound.on('data', (chunk) => {
        if (!pair.held) inbound.write(chunk);
      });
      for (const socket of [inbound, outbound]) {
        socket.on('error', () => {});
        socket.on('close', () => (inbound.destroy(), outbound.destroy()));
      }
    });
  }

  start(): Promise<void> {
    return new Promise((resolve) => this.server.listen(0, '127.0.0.1', () => ((this.port = (this.server.address() as net.AddressInfo).port), resolve())));
  }

  open(): typeof this.pairs {
    return this.pairs.filter((p) => !p.inbound.destroyed);
  }

  close(): void {
    for (const p of this.pairs) p.inbound.destroy();
    this.server.close();
  }
}

describe('sessions sharing upstream connections', () => {
  it('many clients interleaving pipelined requests each get their own replies, in order, over few connections', async () => {
    const memcached = await startMemcached();
    const proxy = await startMemrepl(memcached.port, ['--upstream-shared', '2']);
    try {
      const clients = await Promise.all(Array.from({ length: 40 }, () => RawClient.connect(proxy.port)));
      const streams = clients.map((_, c) => {
        // Short pipelines stay on a shared connection; long ones and big multi-gets move to a
        // connection of their own and back, which must not reorder anything.
        const length = c % 4 === 0 ? 60 : 6;
        let request = '';
        let expected = '';
        for (let j = 0; j < length; j++) {
          const key = `c${c}:${j}`;
          const value = `v${c}-${j}-${'x'.repeat((c * 7 + j) % 50)}`;
          request += `set ${key} ${c} 0 ${value.length}\r\n${value}\r\nget ${key}\r\nmg ${key} v f\r\n`;
          expected += `STORED\r\nVALUE ${key} ${c} ${value.length}\r\n${value}\r\nEND\r\nVA ${value.length} f${c}\r\n${value}\r\n`;
          if (c % 5 === 1 && j === 3) {
            const keys = Array.from({ length: 20 }, (_, i) => `c${c}:${i % 4}`);
            request += `get ${keys.join(' ')}\r\n`;
            for (const k of keys) {
              const i = Number(k.split(':')[1]);
              const v = `v${c}-${i}-${'x'.repeat((c * 7 + i) % 50)}`;
              expected += `VALUE ${k} ${c} ${v.length}\r\n${v}\r\n`;
            }
            expected += 'END\r\n';
          }
        }
        return { request: Buffer.from(request), expected };
      });
      // Every client sends its stream in small pieces, all clients taking turns, so requests interleave upstream.
      const replies = clients.map((client, c) => client.read((b) => b.length >= streams[c].expected.length, 10000));
      for (let offset = 0; streams.some((s) => offset < s.request.length); offset += 37) {
        clients.forEach((client, c) => offset < streams[c].request.length && client.send(streams[c].request.subarray(offset, offset + 37)));
        await new Promise((r) => setImmediate(r));
      }
      const got = await Promise.all(replies);
      got.forEach((reply, c) => assert.equal(reply.toString('latin1'), streams[c].expected, `client ${c}`));
      // 40 clients, yet memcached sees the two shared connections (plus this stats one, and
      // a few of their own for the long pipelines that may not have been closed yet).
      const connections = await memcachedStat(memcached.port, 'curr_connections');
      assert.ok(connections < 40, `memcached has ${connections} connections`);
      for (const client of clients) client.close();
    } finally {
      await proxy.stop();
      await memcached.stop();
    }
  });

  it('a client that sends many gets and never reads neither grows memory nor stalls a client on the same connection', async () => {
    const memcached = await startMemcached(['-m', '256']);
    const proxy = await startMemrepl(memcached.port, ['--upstream-shared', '1']);
    try {
      const writer = await RawClient.connect(proxy.port);
      const value = 'v'.repeat(500 * 1024);
      assert.equal(await writer.request(`set big 0 0 ${value.length}\r\n${value}\r\n`), 'STORED\r\n');
      const before = rssKb(proxy.child.pid!);
      const stalled = await RawClient.connect(proxy.port);
      stalled.socket.pause(); // never reads
      // 2000 single-key gets of 500 kB: 1 GB of replies the proxy must not buffer.
      stalled.socket.write('get big\r\n'.repeat(2000));
      await sleep(1500);
      await assertOthersUnharmed(proxy, writer, 'big', value.length, before);
      stalled.close();
      writer.close();
    } finally {
      await proxy.stop();
      await memcached.stop();
    }
  });

  it('watch and lru_crawler metadump get a connection of their own while other clients keep going', async () => {
    const memcached = await startMemcached();
    const proxy = await startMemrepl(memcached.port, ['--upstream-shared', '1']);
    try {
      const busy = await RawClient.connect(proxy.port);
      assert.equal(await busy.request('set a 0 0 1\r\nx\r\n'), 'STORED\r\n');
      // Keep the shared connection busy the whole time.
      let stop = false;
      const load = (async () => {
        let n = 0;
        while (!stop) {
          assert.equal(await busy.request('get a\r\n', 'END\r\n'), 'VALUE a 0 1\r\nx\r\nEND\r\n');
          n++;
        }
        return n;
      })();
      const baseline = await memcachedStat(memcached.port, 'curr_connections');

      const watcher = await RawClient.connect(proxy.port);
      assert.equal(await watcher.request('watch mutations\r\n'), 'OK\r\n');
      assert.equal(await memcachedStat(memcached.port, 'curr_connections'), baseline + 1, 'watch holds a connection of its own');
      const writer = await RawClient.connect(proxy.port);
      assert.equal(await writer.request('set watched 0 0 1\r\ny\r\n'), 'STORED\r\n');
      const log = await watcher.read((b) => b.includes('watched'), 3000);
      assert.match(log.toString('latin1'), /key=watched/);

      // memcached answers "ERROR cannot pipeline other commands before metadump" if anything precedes it on its connection.
      for (let i = 0; i < 5; i++) {
        const dumper = await RawClient.connect(proxy.port);
        const dump = (await dumper.request('lru_crawler metadump all\r\n', 'END\r\n', 5000)).toString();
        assert.match(dump, /^key=/, dump.slice(0, 200));
        // Back on the shared connection afterwards.
        assert.equal(await dumper.request('get a\r\n', 'END\r\n'), 'VALUE a 0 1\r\nx\r\nEND\r\n');
        dumper.close();
      }
      stop = true;
      assert.ok((await load) > 10);
      watcher.close();
      writer.close();
      busy.close();
    } finally {
      await proxy.stop();
      await memcached.stop();
    }
  });

  it('a shared connection that dies fails only the requests in flight on it, and is replaced', async () => {
    const memcached = await startMemcached();
    const relay = new Relay(memcached.port);
    await relay.start();
    const proxy = await startMemrepl(relay.port, ['--upstream-shared', '2']);
    try {
      await eventually(() => relay.open().length === 0, 3000, 'start-up connections to close');
      const opened = relay.pairs.length;
      // Sessions take the shared connections in turn: a and c share the first, b has the second.
      const [a, b, c] = [await RawClient.connect(proxy.port), await RawClient.connect(proxy.port), await RawClient.connect(proxy.port)];
      assert.equal(await a.request('set k 0 0 1\r\nx\r\n'), 'STORED\r\n');
      assert.equal(await b.request('get k\r\n', 'END\r\n'), 'VALUE k 0 1\r\nx\r\nEND\r\n');
      assert.equal(await c.request('get k\r\n', 'END\r\n'), 'VALUE k 0 1\r\nx\r\nEND\r\n');
      const [first, second] = relay.pairs.slice(opened);
      assert.equal(relay.pairs.length, opened + 2);

      // Replies on the first connection are held back: a and c have requests in flight when it dies.
      first.held = true;
      a.send('get k\r\nset k2 0 0 1 noreply\r\nz\r\n');
      c.send('version\r\n');
      await sleep(100);
      assert.equal(await b.request('get k\r\n', 'END\r\n'), 'VALUE k 0 1\r\nx\r\nEND\r\n', 'the other connection is not affected');
      first.inbound.destroy();
      assert.match(await a.read((r) => r.toString().endsWith('\r\n'), 3000).then(String), /^SERVER_ERROR [^\r]*\r\n$/);
      assert.match(await c.read((r) => r.toString().endsWith('\r\n'), 3000).then(String), /^SERVER_ERROR [^\r]*\r\n$/);
      assert.equal(second.inbound.destroyed, false);

      // The next request dials a new shared connection.
      assert.equal(await a.request('get k\r\n', 'END\r\n'), 'VALUE k 0 1\r\nx\r\nEND\r\n');
      assert.equal(await c.request('get k\r\n', 'END\r\n'), 'VALUE k 0 1\r\nx\r\nEND\r\n');
      assert.equal(await b.request('get k\r\n', 'END\r\n'), 'VALUE k 0 1\r\nx\r\nEND\r\n');
      assert.equal(relay.pairs.length, opened + 3);

      // A reply cut half-way through cannot be finished honestly: that client is closed, the others get SERVER_ERROR.
      const value = 'w'.repeat(200 * 1024);
      assert.equal(await a.request(`set big 0 0 ${value.length}\r\n${value}\r\n`), 'STORED\r\n');
      const third = relay.pairs[relay.pairs.length - 1];
      let forwarded = 0;
      third.outbound.removeAllListeners('data');
      third.outbound.on('data', (chunk: Buffer) => {
        const room = 1000 - forwarded;
        if (room > 0) third.inbound.write(chunk.subarray(0, room));
        forwarded += chunk.length;
      });
      // Parts go out whole: the first value reaches the client, the second is cut.
      a.send('get k big\r\n');
      c.send('get k\r\n');
      await sleep(200);
      third.inbound.destroy();
      assert.equal((await a.read(() => false, 1000)).toString(), 'VALUE k 0 1\r\nx\r\n');
      assert.equal(a.closed, true, 'the client with a half-sent reply is closed');
      assert.match(await c.read((r) => r.toString().endsWith('\r\n'), 3000).then(String), /^SERVER_ERROR /);
      assert.equal(c.closed, false);
      a.close();
      b.close();
      c.close();
    } finally {
      await proxy.stop();
      relay.close();
      await memcached.stop();
    }
  });
});
