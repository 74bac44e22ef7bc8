/**
 * The proxy in production conditions: conformance (memccapable), memcached
 * going away and coming back, bad input, slow readers, metrics and health,
 * graceful shutdown. Real memcached and memrepl processes on loopback.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { RawClient } from './support/client';
import { assertOthersUnharmed } from './support/isolation';
import { eventually, freePort, sleep } from './support/ports';
import { Running, startMemcached, startMemrepl, rssKb } from './support/processes';

const run = promisify(execFile);

async function httpGet(port: number, path: string): Promise<{ status: number; body: string }> {
  const response = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: response.status, body: await response.text() };
}

/**
 * SIGSTOPs memcached and waits (bounded) until every one of its threads is
 * stopped: a worker already awake can still answer a request sent right
 * after kill().
 */
async function freeze(child: Running['child']): Promise<void> {
  child.kill('SIGSTOP');
  const pid = child.pid!;
  await eventually(
    () => fs.readdirSync(`/proc/${pid}/task`).every((tid) => /\) [tT] /.test(fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8'))),
    3000,
    'memcached to stop',
  );
}

describe('conformance', () => {
  it('memccapable -a passes through memrepl exactly as against memcached', async () => {
    const [direct, behind] = await Promise.all([startMemcached(), startMemcached()]);
    const proxy = await startMemrepl(behind.port);
    try {
      const results = async (port: number) => {
        const { stdout } = await run('memccapable', ['-h', '127.0.0.1', '-p', String(port), '-a', '-t', '5'], { timeout: 60000 }).catch((e) => e);
        return String(stdout)
          .split('\n')
          .filter((l) => /\[(pass|FAIL|skip)/.test(l))
          .map((l) => l.replace(/\s+/g, ' '));
      };
      const expected = await results(direct.port);
      assert.ok(expected.length > 20 && expected.every((l) => l.includes('[pass]')), expected.join('\n'));
      assert.deepEqual(await results(proxy.port), expected);
    } finally {
      await proxy.stop();
      await Promise.all([direct.stop(), behind.stop()]);
    }
  });
});

describe('when memcached goes away', () => {
  it('clients get SERVER_ERROR, never a hang, and service resumes when it is back', async () => {
    const memcachedPort = await freePort();
    let memcached = await startMemcached([], memcachedPort);
    const proxy = await startMemrepl(memcachedPort, ['--connect-timeout', '300']);
    try {
      const client = await RawClient.connect(proxy.port);
      assert.equal(await client.request('set k 0 0 1\r\nx\r\n'), 'STORED\r\n');
      await memcached.stop('SIGKILL');
      const started = Date.now();
      // In-flight or next request: a SERVER_ERROR line, within the connect timeout plus slack.
      assert.match(await client.request('get k\r\n', '\r\n', 3000), /^SERVER_ERROR /);
      assert.ok(Date.now() - started < 2000);
      // noreply requests stay silent even when they fail.
      client.send('set k 0 0 1 noreply\r\nx\r\n');
      assert.match(await client.request('version\r\n', '\r\n', 3000), /^SERVER_ERROR /);
      const other = await RawClient.connect(proxy.port);
      assert.match(await other.request('get k\r\n', '\r\n', 3000), /^SERVER_ERROR /);

      memcached = await startMemcached([], memcachedPort);
      await eventually(async () => (await client.request('set k 0 0 2\r\nok\r\n', '\r\n', 3000)) === 'STORED\r\n', 5000, 'service to resume');
      assert.equal(await other.request('get k\r\n', 'END\r\n'), 'VALUE k 0 2\r\nok\r\nEND\r\n');
      client.close();
      other.close();
    } finally {
      await proxy.stop();
      await memcached.stop();
    }
  });

  it('a memcached that stops answering is declared dead after the reply timeout', async () => {
    const memcached = await startMemcached();
    const proxy = await startMemrepl(memcached.port, ['--upstream-timeout', '500']);
    try {
      const client = await RawClient.connect(proxy.port);
      assert.equal(await client.request('version\r\n').then((r) => r.startsWith('VERSION')), true);
      await freeze(memcached.child);
      const started = Date.now();
      assert.match(await client.request('get k\r\n', '\r\n', 5000), /^SERVER_ERROR /);
      assert.ok(Date.now() - started < 3000, `took ${Date.now() - started} ms`);
      memcached.child.kill('SIGCONT');
      await eventually(async () => (await client.request('get k\r\n', '\r\n', 3000)) === 'END\r\n', 5000, 'recovery');
      client.close();
    } finally {
      memcached.child.kill('SIGCONT');
      await proxy.stop();
      await memcached.stop();
    }
  });
});

describe('bad input and misbehaving clients', () => {
  let memcached: Running;
  let proxy: Running;
  before(async () => {
    memcached = await startMemcached(['-m', '256']);
    proxy = await startMemrepl(memcached.port, ['--metrics-port', String(await freePort())]);
  });
  after(async () => {
    await proxy.stop();
    await memcached.stop();
  });

  it('a 1 MB line without a newline closes that connection only', async () => {
    const bystander = await RawClient.connect(proxy.port);
    const bad = await RawClient.connect(proxy.port);
    bad.send(Buffer.alloc(1024 * 1024, 'a'));
    await bad.read(() => false, 2000);
    assert.equal(bad.closed, true);
    assert.equal(await bystander.request('set b 0 0 1\r\nx\r\n'), 'STORED\r\n');
    bystander.close();
  });

  it('binary garbage and a client vanishing mid-value lose nothing for others', async () => {
    const bystander = await RawClient.connect(proxy.port);
    assert.equal(await bystander.request('set keep 0 0 4\r\nsafe\r\n'), 'STORED\r\n');
    for (let i = 0; i < 20; i++) {
      const garbage = await RawClient.connect(proxy.port);
      garbage.send(Buffer.from(Array.from({ length: 3000 }, () => Math.floor(Math.random() * 256))));
      garbage.close();
    }
    const quitter = await RawClient.connect(proxy.port);
    quitter.send('set keep 0 0 100\r\nonly part of the value');
    await sleep(50);
    quitter.close();
    await sleep(50);
    assert.equal(await bystander.request('get keep\r\n', 'END\r\n'), 'VALUE keep 0 4\r\nsafe\r\nEND\r\n');
    bystander.close();
  });

  it('a client that requests a huge multi-get and never reads does not grow memory or slow others', async () => {
    const writer = await RawClient.connect(proxy.port);
    const value = 'v'.repeat(500 * 1024);
    for (let i = 0; i < 40; i++) assert.equal(await writer.request(`set big${i} 0 0 ${value.length}\r\n${value}\r\n`), 'STORED\r\n');
    const keys = Array.from({ length: 40 }, (_, i) => `big${i}`).join(' ');
    const before = rssKb(proxy.child.pid!);
    const stalled = await RawClient.connect(proxy.port);
    stalled.socket.pause(); // never reads
    // 50 x 20 MB of replies requested: 1 GB the proxy must not buffer.
    for (let i = 0; i < 50; i++) stalled.socket.write(`get ${keys}\r\n`);
    await sleep(1500);
    await assertOthersUnharmed(proxy, writer, 'big0', value.length, before);
    stalled.close();
    writer.close();
  });
});

describe('idle clients (--idle-timeout, like memcached -o idle_timeout)', () => {
  let memcached: Running;
  let proxy: Running;
  let metricsPort: number;
  before(async () => {
    memcached = await startMemcached();
    metricsPort = await freePort();
    proxy = await startMemrepl(memcached.port, ['--idle-timeout', '1', '--metrics-port', String(metricsPort)]);
  });
  after(async () => {
    await proxy.stop();
    await memcached.stop();
  });

  it('closes a silent connection, keeps a chatty one, and counts it', async () => {
    const silent = await RawClient.connect(proxy.port);
    const chatty = await RawClient.connect(proxy.port);
    const until = Date.now() + 2500;
    while (Date.now() < until) {
      assert.match(await chatty.request('version\r\n'), /^VERSION /);
      await sleep(250);
    }
    assert.equal(chatty.closed, false);
    await eventually(() => silent.closed, 3000, 'the silent client to be closed');
    const metrics = await httpGet(metricsPort, '/metrics');
    assert.match(metrics.body, /memrepl_connections_idle_closed_total [1-9]/);
    chatty.close();
  });

  it('does not close a client still owed a reply by a slow memcached', async () => {
    const client = await RawClient.connect(proxy.port);
    assert.equal(await client.request('set slow 0 0 2\r\nok\r\n'), 'STORED\r\n');
    await freeze(memcached.child);
    try {
      client.send('get slow\r\n');
      await sleep(2200); // twice the idle timeout, well inside --upstream-timeout
      assert.equal(client.closed, false);
    } finally {
      memcached.child.kill('SIGCONT');
    }
    assert.equal((await client.read((b) => b.toString().endsWith('END\r\n'))).toString(), 'VALUE slow 0 2\r\nok\r\nEND\r\n');
    client.close();
  });
});

describe('metrics, health and shutdown', () => {
  it('exports Prometheus metrics and health that follows memcached', async () => {
    const memcached = await startMemcached();
    const metricsPort = await freePort();
    const proxy = await startMemrepl(memcached.port, ['--metrics-port', String(metricsPort)]);
    try {
      const client = await RawClient.connect(proxy.port);
      await client.request('set m 0 0 1\r\nx\r\n');
      await client.request('get m\r\n', 'END\r\n');
      await client.request('get nope\r\n', 'END\r\n');
      const { status, body } = await httpGet(metricsPort, '/metrics');
      assert.equal(status, 200);
      assert.match(body, /memrepl_commands_total\{protocol="text",command="set",outcome="stored"\} 1/);
      assert.match(body, /memrepl_commands_total\{protocol="text",command="get",outcome="hit"\} 1/);
      assert.match(body, /memrepl_commands_total\{protocol="text",command="get",outcome="miss"\} 1/);
      assert.match(body, /memrepl_current_connections 1/);
      assert.match(body, /memrepl_upstream_request_duration_seconds_bucket/);
      assert.match(body, /^process_resident_memory_bytes /m);
      assert.equal((await httpGet(metricsPort, '/healthz')).status, 200);
      await memcached.stop('SIGKILL');
      assert.equal((await httpGet(metricsPort, '/healthz')).status, 503);
      assert.match((await httpGet(metricsPort, '/metrics')).body, /memrepl_upstream_up 0/);
      client.close();
    } finally {
      await proxy.stop();
    }
  });

  it('SIGTERM lets in-flight requests finish, then exits 0', async () => {
    const memcached = await startMemcached();
    const proxy = await startMemrepl(memcached.port);
    try {
      const client = await RawClient.connect(proxy.port);
      assert.equal(await client.request('set s 0 0 1\r\nx\r\n'), 'STORED\r\n');
      await freeze(memcached.child); // the next request stays in flight
      client.send('get s\r\n');
      await sleep(100);
      const exit = proxy.stop('SIGTERM');
      await sleep(200);
      memcached.child.kill('SIGCONT');
      const reply = await client.read((b) => b.toString().endsWith('END\r\n'), 3000);
      assert.equal(reply.toString(), 'VALUE s 0 1\r\nx\r\nEND\r\n');
      assert.equal(await exit, 0);
      await assert.rejects(RawClient.connect(proxy.port));
    } finally {
      memcached.child.kill('SIGCONT');
      await memcached.stop();
    }
  });

  it('refuses connections over -c like memcached', async () => {
    const memcached = await startMemcached();
    const proxy = await startMemrepl(memcached.port, ['-c', '2']);
    try {
      const a = await RawClient.connect(proxy.port);
      const b = await RawClient.connect(proxy.port);
      const c = await RawClient.connect(proxy.port);
      const refused = await c.read(() => false, 500);
      assert.equal(refused.toString(), 'ERROR Too many open connections\r\n');
      assert.equal(c.closed, true);
      assert.equal(await a.request('version\r\n').then((r) => r.startsWith('VERSION')), true);
      a.close();
      b.close();
    } finally {
      await proxy.stop();
      await memcached.stop();
    }
  });
});
