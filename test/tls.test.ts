/**
 * Mutual TLS on the replication link: a pair with certificates from one CA
 * replicates; a node with a certificate from another CA, or without TLS,
 * is refused and applies nothing.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { linkTlsFlags, signedCertificate } from './support/certificates';
import { RawClient } from './support/client';
import { eventually, freePort, sleep } from './support/ports';
import { Node, startMemcached, startMemrepl, startNode, stopAll } from './support/processes';
import { has, write } from './support/replication';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'memrepl-tls-'));

/** A CA and a certificate it signed for 127.0.0.1, as memrepl's link TLS flags. */
const certificates = (name: string): string[] => linkTlsFlags(signedCertificate(dir, name));

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

describe('TLS on the client port (like memcached -Z)', () => {
  it('serves TLS clients, and with a CA only those presenting a certificate it signed', async () => {
    certificates('client');
    const file = (suffix: string) => path.join(dir, `client-${suffix}`);
    const memcached = await startMemcached();
    const serverOnly = await startMemrepl(memcached.port, ['--tls-cert', file('node.pem'), '--tls-key', file('node.key')]);
    const mutual = await startMemrepl(memcached.port, ['--tls-cert', file('node.pem'), '--tls-key', file('node.key'), '--tls-ca', file('ca.pem')]);
    const ask = (port: number, options: tls.ConnectionOptions) =>
      new Promise<string>((resolve) => {
        let reply = '';
        const socket = tls.connect({ host: '127.0.0.1', port, ca: fs.readFileSync(file('ca.pem')), ...options }, () =>
          socket.write('set t 0 0 2\r\nok\r\nget t\r\n'),
        );
        socket.on('data', (chunk) => {
          reply += chunk.toString();
          if (reply.endsWith('END\r\n')) socket.end();
        });
        socket.on('error', (error) => resolve(`error: ${error.message}`));
        socket.on('close', () => resolve(reply));
        setTimeout(() => socket.destroy(), 3000);
      });
    try {
      assert.equal(await ask(serverOnly.port, {}), 'STORED\r\nVALUE t 0 2\r\nok\r\nEND\r\n');
      assert.doesNotMatch(await ask(mutual.port, {}), /STORED/);
      const withCert = { cert: fs.readFileSync(file('node.pem')), key: fs.readFileSync(file('node.key')) };
      assert.equal(await ask(mutual.port, withCert), 'STORED\r\nVALUE t 0 2\r\nok\r\nEND\r\n');
      // A plaintext client gets no memcached reply from a TLS port.
      const plain = await RawClient.connect(serverOnly.port);
      assert.doesNotMatch(await plain.request('version\r\n', '\r\n', 1000), /VERSION/);
      plain.close();
    } finally {
      await Promise.all([serverOnly.stop(), mutual.stop()]);
      await memcached.stop();
    }
  });
});
