/**
 * Replication's own connections to memcached (local-memcached.ts), against a
 * real memcached.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LocalMemcached, LocalMemcachedBinary } from '../src/replication/local-memcached';
import { RawClient } from './support/client';
import { eventually } from './support/ports';
import { startMemcached } from './support/processes';

async function currConnections(client: RawClient): Promise<number> {
  const stats = await client.request('stats\r\n', 'END\r\n');
  return Number(/STAT curr_connections (\d+)/.exec(stats)![1]);
}

describe('local memcached connections', () => {
  it('closed while still connecting: the request fails and no connection stays open behind it', async () => {
    const memcached = await startMemcached();
    const admin = await RawClient.connect(memcached.port);
    try {
      const before = await currConnections(admin);
      for (const connection of [
        new LocalMemcached({ host: '127.0.0.1', port: memcached.port }, 2000),
        new LocalMemcachedBinary({ host: '127.0.0.1', port: memcached.port }, 2000),
      ]) {
        const reply = connection.quietBatch(Buffer.alloc(0));
        connection.close();
        await assert.rejects(reply, /closed/);
        await assert.rejects(connection.request(Buffer.from('version\r\n')), /closed/);
      }
      await eventually(async () => (await currConnections(admin)) === before, 5000, 'memcached to see both connections closed');
    } finally {
      admin.close();
      await memcached.stop();
    }
  });
});
