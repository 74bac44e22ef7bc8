/**
 * Mutual TLS on the replication link: a pair with certificates from one CA
 * replicates; a node with a certificate from another CA, or without TLS,
 * is refused and applies nothing.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { RawClient } from './support/client';
import { eventually, freePort, sleep } from './support/ports';
import { Node, startMemrepl, startNode, stopAll } from './support/processes';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'memrepl-tls-'));

/** A CA and a certificate it signed for 127.0.0.1 (openssl, one day). */
function certificates(name: string): string[] {
  const file = (suffix: string) => path.join(dir, `${name}-${suffix}`);
  const openssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', file('ca.key'), '-out', file('ca.pem'), '-days', '1', '-subj', `/CN=${name}-ca`);
  openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', file('node.key'), '-out', file('node.csr'), '-subj', `/CN=${name}-node`, '-addext', 'subjectAltName=IP:127.0.0.1');
  openssl('x509', '-req', '-in', file('node.csr'), '-CA', file('ca.pem'), '-CAkey', file('ca.key'), '-CAcreateserial', '-out', file('node.pem'), '-days', '1', '-copy_extensions', 'copy');
  return ['--replication-tls-cert', file('node.pem'), '--replication-tls-key', file('node.key'), '--replication-tls-ca', file('ca.pem')];
}

async function has(port: number, key: string): Promise<boolean> {
  const client = await RawClient.connect(port);
  try {
    return (await client.request(`mg ${key} v\r\n`)).startsWith('VA');
  } finally {
    client.close();
  }
}

async function write(node: Node, key: string): Promise<void> {
  const client = await RawClient.connect(node.memrepl.port);
  await client.request(`set ${key} 0 0 1\r\nx\r\n`);
  client.close();
}

describe('mutual TLS on the replication link', () => {
  let good: string[];
  let rogue: string[];
  let a: Node;
  let b: Node;
  before(async () => {
    good = certificates('good');
    rogue = certificates('rogue');
    const ra = await freePort();
    a = await startNode('a', ra, null, good);
    b = await startNode('b', await freePort(), ra, good);
  });
  after(() => stopAll(a, b));

  it('a pair with certificates from the same CA replicates', async () => {
    await write(a, 'over_tls');
    await eventually(() => has(b.memcached.port, 'over_tls'), 10000, 'over_tls on B');
    await write(b, 'back');
    await eventually(() => has(a.memcached.port, 'back'), 10000, 'back on A');
  });

  it('a certificate from another CA, or no TLS at all, is refused and applies nothing', async () => {
    const intruder = await startNode('c', await freePort(), a.replicationPort, rogue);
    const plain = await startNode('d', await freePort(), a.replicationPort);
    try {
      await write(intruder, 'from_rogue');
      await write(plain, 'from_plain');
      await sleep(1500);
      assert.equal(await has(a.memcached.port, 'from_rogue'), false);
      assert.equal(await has(a.memcached.port, 'from_plain'), false);
      assert.match(a.memrepl.output() + intruder.memrepl.output(), /TLS|certificate/i);
    } finally {
      await stopAll(intruder, plain);
    }
    await write(a, 'still');
    await eventually(() => has(b.memcached.port, 'still'), 10000, 'the pair to keep replicating');
  });

  it('TLS counts as authentication for a non-loopback replication port', async () => {
    const node = await startMemrepl(1, ['-l', '0.0.0.0', '-X', String(await freePort()), ...good]);
    await node.stop();
    await assert.rejects(startMemrepl(1, ['--replication-tls-cert', 'x']), /needs all of/);
  });
});
