/**
 * Retiring a connection to memcached (src/sockets.ts): whether memcached
 * closed its side (everything sent on it ran) or was cut off unrun, which the
 * proxy then reads again once memcached answers again (stale-clock.ts).
 */
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { describe, it } from 'node:test';
import { retire } from '../src/sockets';
import { startMemcached } from './support/processes';

function connected(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => resolve(socket));
    socket.once('error', reject);
  });
}

describe('retiring a connection to memcached', () => {
  it('says memcached ran what was sent when it closed its side, and that it was cut off when it stood still past the grace', async () => {
    const memcached = await startMemcached();
    try {
      const live = await connected(memcached.port);
      live.write('set k 0 0 1 noreply\r\nv\r\n');
      assert.equal(await retire(live, 2000), true);
      const stopped = await connected(memcached.port);
      memcached.child.kill('SIGSTOP');
      try {
        stopped.write('set k 0 0 1 noreply\r\nw\r\n');
        assert.equal(await retire(stopped, 200), false);
      } finally {
        memcached.child.kill('SIGCONT');
      }
    } finally {
      await memcached.stop();
    }
  });
});
