/**
 * memcachedClockEpoch against a real memcached: the phase it measures
 * predicts what `stats` time reads.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { parseStats, STATS_REQUEST } from '../src/protocol/text/stats';
import { memcachedClockEpoch } from '../src/replication/flush/memcached-clock';
import { LocalMemcached } from '../src/replication/local-memcached';
import { sleep } from './support/ports';
import { type Running, startMemcached } from './support/processes';

describe("memcached's clock", () => {
  let memcached: Running;
  let local: LocalMemcached;
  before(async () => {
    memcached = await startMemcached();
    local = new LocalMemcached({ host: '127.0.0.1', port: memcached.port }, 2000);
  });
  after(async () => {
    local.close();
    await memcached.stop();
  });

  it('the measured epoch tells what stats time reads, away from its ticks', async () => {
    const epoch = await memcachedClockEpoch(local);
    assert.notEqual(epoch, null);
    let compared = 0;
    for (let i = 0; i < 30; i++) {
      const sentAt = Date.now();
      const time = Number(parseStats(await local.request(STATS_REQUEST)).get('time'));
      const at = Date.now();
      // Only where the whole round trip is well inside one second of the predicted clock.
      const [from, to] = [Math.floor((sentAt - 40 - epoch!) / 1000), Math.floor((at + 40 - epoch!) / 1000)];
      if (from === to) {
        assert.equal(time, from, `at ${at}: predicted ${from}, memcached says ${time}`);
        compared++;
      }
      await sleep(70);
    }
    assert.ok(compared >= 15, `${compared} readings compared`);
  });
});
