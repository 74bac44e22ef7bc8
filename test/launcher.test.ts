/**
 * Launcher mode (--spawn-memcached): memrepl runs its own stock memcached on a
 * private unix socket, restarts it if it dies, and the restarted (empty)
 * memcached is refilled from the peer.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { compare, load } from './support/bulk';
import { RawClient } from './support/client';
import { eventually, freePort } from './support/ports';
import { startMemrepl, startNode, stopAll } from './support/processes';

async function memcachedPid(proxyPort: number): Promise<number> {
  const client = await RawClient.connect(proxyPort);
  try {
    return Number(/STAT pid (\d+)/.exec(await client.request('stats\r\n', 'END\r\n'))![1]);
  } finally {
    client.close();
  }
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('launcher mode', () => {
  it('runs memcached with the given flags, restarts it when killed, and the peer refills it', async () => {
    const ra = await freePort();
    const a = await startNode('a', ra, null);
    const rb = await freePort();
    // The upstream given by the test helper is replaced by the private socket.
    const b = await startMemrepl(0, ['--spawn-memcached', '-m', '32', '-t', '2', '-X', String(rb), '-x', `127.0.0.1:${ra}`, '--node-id', 'b']);
    try {
      const client = await RawClient.connect(b.port);
      assert.match(await client.request('stats settings\r\n', 'END\r\n'), /STAT maxbytes 33554432\r\n[\s\S]*STAT num_threads 2\r\n/);
      client.close();
      const items = Array.from({ length: 2000 }, (_, i) => ({ key: `l${i}`, value: Buffer.from(`v${i}`), flags: i, exptime: 0 }));
      await load(a.memrepl.port, items);
      const keys = items.map((i) => i.key);
      // B's memcached is behind a private socket: read it through B's proxy.
      await eventually(async () => (await compare(a.memcached.port, b.port, keys)).length === 0, 15000, 'B to follow A');

      const pid = await memcachedPid(b.port);
      process.kill(pid, 'SIGKILL');
      await eventually(async () => (await memcachedPid(b.port).catch(() => pid)) !== pid, 10000, 'memcached to be restarted');
      await eventually(async () => (await compare(a.memcached.port, b.port, keys)).length === 0, 20000, 'the new memcached to be refilled');

      const child = await memcachedPid(b.port);
      assert.equal(await b.stop('SIGTERM'), 0);
      assert.equal(alive(child), false, 'memcached stopped with memrepl');
    } finally {
      await b.stop();
      await stopAll(a);
    }
  });

  it('memcached flags without --spawn-memcached are a usage error', async () => {
    await assert.rejects(startMemrepl(1, ['-m', '64']), /exited \(2\)[\s\S]*need --spawn-memcached/);
  });
});
