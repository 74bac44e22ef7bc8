/**
 * /metrics as Prometheus and its ecosystem expect it: names that pass
 * `promtool check metrics`, Node's default metrics under their usual
 * unprefixed names, and gauges that are true whenever Prometheus scrapes,
 * with nothing else (no /healthz, no /readyz) ever requested.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { load } from './support/bulk';
import { eventually, freePort } from './support/ports';
import { Node, Running, startMemcached, startMemrepl, startNode, stopAll } from './support/processes';
import { lintMetrics } from './support/promtool';
import { stat } from './support/replication';

async function scrape(port: number): Promise<string> {
  const response = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(5000) });
  assert.equal(response.status, 200);
  return response.text();
}

/** The value of an unlabelled sample, or undefined when the scrape has none. */
function sample(exposition: string, name: string): number | undefined {
  const match = new RegExp(`^${name} (\\S+)$`, 'm').exec(exposition);
  return match ? Number(match[1]) : undefined;
}

describe('/metrics names and scrape-time gauges', () => {
  let memcached: Running;
  let proxy: Running;
  let metricsPort: number;
  before(async () => {
    memcached = await startMemcached();
    metricsPort = await freePort();
    proxy = await startMemrepl(memcached.port, ['--metrics-port', String(metricsPort)]);
  });
  after(async () => {
    await proxy.stop();
    await memcached.stop();
  });

  it('passes promtool check metrics', async () => {
    assert.equal(await lintMetrics(await scrape(metricsPort)), '');
  });

  it("publishes Node's default metrics unprefixed and memrepl's own with memrepl_", async () => {
    const body = await scrape(metricsPort);
    for (const name of [
      'process_cpu_seconds_total',
      'process_resident_memory_bytes',
      'process_start_time_seconds',
      'nodejs_eventloop_lag_p99_seconds',
      'nodejs_heap_size_used_bytes',
      'nodejs_active_handles',
    ]) {
      assert.match(body, new RegExp(`^# TYPE ${name} `, 'm'), name);
    }
    assert.doesNotMatch(body, /^memrepl_(process|nodejs)_/m);
    const names = [...body.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]);
    assert.deepEqual(
      names.filter((name) => !/^(memrepl|process|nodejs)_/.test(name)),
      [],
    );
  });

  it('memrepl_upstream_up and memrepl_ready follow memcached with only /metrics scraped', async () => {
    const before = await scrape(metricsPort);
    assert.equal(sample(before, 'memrepl_upstream_up'), 1);
    assert.equal(sample(before, 'memrepl_ready'), 1);
    await memcached.stop('SIGKILL');
    let last = '';
    await eventually(
      async () => sample((last = await scrape(metricsPort)), 'memrepl_upstream_up') === 0,
      5000,
      () => `memrepl_upstream_up to be 0 (last scrape: ${last})`,
    );
    assert.equal(sample(last, 'memrepl_ready'), 0);
  });
});

describe('replication gauges at scrape time', () => {
  let a: Node;
  let b: Node;
  after(() => stopAll(...[a, b].filter(Boolean)));

  it('a full copy shows its progress, and the node receiving it is not ready until it ends', async () => {
    const replicationPort = await freePort();
    // 1000 items sent at 200 a second: a copy of some 5 s, long enough to be seen under way.
    a = await startNode('a', replicationPort, null, ['--resync-rate', '200', '--backlog-size', '4m']);
    await load(
      a.memcached.port,
      Array.from({ length: 1000 }, (_, i) => ({ key: `k${i}`, value: Buffer.from('v'), flags: 0, exptime: 0 })),
    );
    b = await startNode('b', await freePort(), replicationPort);
    let seen = '';
    const during = async () => {
      const [sender, receiver] = [await scrape(a.metricsPort), await scrape(b.metricsPort)];
      seen = `${sender}\n${receiver}`;
      const progress = sample(sender, 'memrepl_resync_progress_items') ?? 0;
      return (
        /^memrepl_resync_in_progress\{direction="sending"\} 1$/m.test(sender) &&
        progress > 0 &&
        progress < 1000 &&
        sample(sender, 'memrepl_resync_expected_items') === 1000 &&
        sample(receiver, 'memrepl_ready') === 0
      );
    };
    await eventually(during, 10000, () => `a copy under way, with progress of 1000 items, and b not ready:\n${seen}`);
    // stats replication: the goal, the rate so far and the time left at it (paced at 200 items a second).
    const [expected, rate, eta] = [await stat(a, 'copy_expected_items'), Number(await stat(a, 'copy_rate')), Number(await stat(a, 'copy_eta_seconds'))];
    assert.equal(expected, '1000');
    assert.ok(rate > 50 && rate < 1000, `rate ${rate}`);
    assert.ok(eta > 0 && eta <= 30, `eta ${eta}`);
    const over = async () => {
      const [sender, receiver] = [await scrape(a.metricsPort), await scrape(b.metricsPort)];
      seen = `${sender}\n${receiver}`;
      return (
        /^memrepl_resync_in_progress\{direction="sending"\} 0$/m.test(sender) &&
        sample(sender, 'memrepl_resync_progress_items') === 0 &&
        sample(receiver, 'memrepl_ready') === 1
      );
    };
    await eventually(over, 30000, () => `the copy over and b ready:\n${seen}`);
    const sender = await scrape(a.metricsPort);
    assert.equal(sample(sender, 'memrepl_resync_items_sent_total'), 1000);
    assert.equal(sample(sender, 'memrepl_replication_backlog_max_bytes'), 4 * 1024 * 1024);
  });
});
