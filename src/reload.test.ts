import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Config } from './config';
import { describeReload, planReload } from './reload';

const running: Config = {
  port: 11211,
  listen: '127.0.0.1',
  upstream: '127.0.0.1:11311',
  metricsPort: 9150,
  metricsListen: '127.0.0.1',
  verbose: 0,
  maxConnections: 1024,
  idleTimeoutMs: 0,
  peer: '127.0.0.1:11212',
  replicationPort: 11212,
  maxItemSize: undefined,
  upstreamTimeoutMs: 5000,
  connectTimeoutMs: 1000,
  shutdownTimeoutMs: 5000,
  maxPendingRequests: 4096,
  sharedConnections: 2,
  nodeId: 'a',
  cluster: 'memrepl',
  backlogBytes: 32 * 1024 * 1024,
  resyncRate: 10000,
  conflictWindowMs: 300_000,
  readyBeforeCopy: false,
  stateDir: '/tmp/memrepl-11211',
  launch: null,
  replicationSecret: Buffer.from('the first long shared secret'),
  clientTls: { cert: Buffer.from('cert1'), key: Buffer.from('key1'), ca: null },
  replicationTls: null,
};

test('an identical re-read changes nothing', () => {
  const plan = planReload(running, { ...running, replicationSecret: Buffer.from('the first long shared secret'), clientTls: { ...running.clientTls! } });
  assert.deepEqual([plan.applied, plan.needsRestart], [[], []]);
  assert.equal(describeReload(plan), 'reload: nothing changed');
});

test('live settings are applied, the rest is kept and reported as needing a restart', () => {
  const plan = planReload(running, { ...running, verbose: 2, resyncRate: 500, idleTimeoutMs: 30_000, port: 11300, nodeId: 'b' });
  assert.deepEqual(
    plan.applied.map((c) => c.flag),
    ['verbose', 'idle-timeout', 'resync-rate'],
  );
  assert.deepEqual(
    plan.needsRestart.map((c) => c.flag),
    ['port', 'node-id'],
  );
  assert.equal(plan.config.verbose, 2);
  assert.equal(plan.config.resyncRate, 500);
  assert.equal(plan.config.port, 11211, 'the port keeps running as it was');
  assert.equal(plan.config.nodeId, 'a');
  assert.equal(
    describeReload(plan),
    'reload: applied verbose 0 -> 2, idle-timeout 0s -> 30s, resync-rate 10000 -> 500; needs a restart (still running the old value): port 11211 -> 11300, node-id a -> b',
  );
  assert.equal(running.verbose, 0, 'the running config is not modified in place');
});

test('rotated secret and certificates change live and never show in the log line', () => {
  const reread = {
    ...running,
    replicationSecret: Buffer.from('the second long shared secret'),
    clientTls: { cert: Buffer.from('cert2'), key: Buffer.from('key2'), ca: null },
  };
  const plan = planReload(running, reread);
  assert.deepEqual(
    plan.applied.map((c) => c.flag),
    ['replication-secret-file', 'tls-cert/tls-key/tls-ca'],
  );
  assert.equal(plan.config.replicationSecret, reread.replicationSecret);
  assert.equal(plan.config.clientTls, reread.clientTls);
  const line = describeReload(plan);
  assert.match(line, /replication-secret-file \(new content\)/);
  assert.doesNotMatch(line, /second|cert2|key2/);
});

test('turning TLS on or off, or client certificates, needs a restart', () => {
  const off = planReload(running, { ...running, clientTls: null });
  assert.deepEqual(
    off.needsRestart.map((c) => c.detail),
    ['tls-cert/tls-key/tls-ca on -> off'],
  );
  assert.equal(off.config.clientTls, running.clientTls);
  const withCa = planReload(running, { ...running, clientTls: { ...running.clientTls!, ca: Buffer.from('ca') } });
  assert.deepEqual(
    withCa.needsRestart.map((c) => c.flag),
    ['tls-cert/tls-key/tls-ca'],
  );
  const replicationOn = planReload(running, { ...running, replicationTls: { cert: Buffer.from('c'), key: Buffer.from('k'), ca: Buffer.from('a') } });
  assert.deepEqual(
    replicationOn.needsRestart.map((c) => c.flag),
    ['replication-tls-cert/key/ca'],
  );
});

test('structured settings compare by value', () => {
  const launching = { ...running, launch: { binary: 'memcached', args: ['-m', '64'], runDir: '/run/m' } };
  assert.deepEqual(planReload(launching, { ...launching, launch: { binary: 'memcached', args: ['-m', '64'], runDir: '/run/m' } }).needsRestart, []);
  const bigger = planReload(launching, { ...launching, launch: { binary: 'memcached', args: ['-m', '128'], runDir: '/run/m' } });
  assert.deepEqual(
    bigger.needsRestart.map((c) => c.flag),
    ['spawn-memcached and its memcached flags'],
  );
});
