/**
 * SIGHUP reloads the config file without a restart (like memcached's proxy):
 * live settings change, the rest is reported as needing a restart, open
 * client connections keep working, and a broken file keeps the running config.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { type Certificate, linkTlsFlags, signedCertificate } from './support/certificates';
import { RawClient } from './support/client';
import { eventually, freePort, sleep } from './support/ports';
import { CLI, launch, type Node, type Running, startMemcached, startNode, stopAll } from './support/processes';
import type { Relay } from './support/relay';
import { has, linked, stat, withRelayedPair, write } from './support/replication';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'memrepl-reload-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Waits for the next line of output matching `pattern` after `from` characters. */
async function nextLine(proxy: Running, from: number, pattern: RegExp): Promise<string> {
  let line = '';
  await eventually(
    () =>
      (line =
        proxy
          .output()
          .slice(from)
          .split('\n')
          .find((l) => pattern.test(l)) ?? '') !== '',
    5000,
    () => `a line matching ${pattern} in: ${proxy.output().slice(from)}`,
  );
  return line;
}

async function get(client: RawClient, key: string): Promise<string> {
  return client.request(`get ${key}\r\n`, 'END\r\n');
}

describe('reload on SIGHUP', () => {
  let memcached: Running;
  let proxy: Running;
  let file: string;
  let port: number;

  before(async () => {
    memcached = await startMemcached();
    port = await freePort();
    file = path.join(dir, 'memrepl.yaml');
    fs.writeFileSync(file, `port: ${port}\nresync-rate: 10000\n`);
    proxy = await launch(
      process.execPath,
      [CLI, '--config', file, '-l', '127.0.0.1', '--upstream', `127.0.0.1:${memcached.port}`, '--metrics-port', '0', '-X', '0'],
      port,
    );
  });
  after(async () => {
    await proxy.stop();
    await memcached.stop();
  });

  it('applies verbosity and resync pace live, reports the port as needing a restart, and keeps serving', async () => {
    const client = await RawClient.connect(port);
    assert.equal(await client.request('set k 0 0 2\r\nv1\r\n'), 'STORED\r\n');
    const otherPort = await freePort();
    fs.writeFileSync(file, `port: ${otherPort}\nresync-rate: 500\nverbose: 1\n`);
    const from = proxy.output().length;
    proxy.child.kill('SIGHUP');
    const line = await nextLine(proxy, from, /^reload: /);
    // The default node id and state dir follow the port: a restart would change them too, and the line says so.
    assert.equal(
      line,
      `reload: applied verbose 0 -> 1, resync-rate 10000 -> 500; needs a restart (still running the old value): port ${port} -> ${otherPort}, ` +
        `node-id ${os.hostname()}:${port} -> ${os.hostname()}:${otherPort}, state-dir ${path.join(os.tmpdir(), `memrepl-${port}`)} -> ${path.join(os.tmpdir(), `memrepl-${otherPort}`)}`,
    );
    assert.equal(
      proxy
        .output()
        .slice(from)
        .match(/^reload: /gm)?.length,
      1,
      'one line says it all',
    );
    assert.equal(await get(client, 'k'), 'VALUE k 0 2\r\nv1\r\nEND\r\n', 'the open connection keeps working');
    const fresh = await RawClient.connect(port);
    assert.equal(await get(fresh, 'k'), 'VALUE k 0 2\r\nv1\r\nEND\r\n', 'still serving on the old port');
    fresh.close();
    client.close();
    assert.equal(proxy.child.exitCode, null);
  });

  it('keeps the running config when the file is broken or holds an invalid value', async () => {
    const client = await RawClient.connect(port);
    for (const [text, reason] of [
      ['port: [unclosed\n', /config file .*memrepl\.yaml is not valid YAML/],
      [`port: ${port}\nresync-rate: -5\n`, /invalid --resync-rate/],
    ] as const) {
      fs.writeFileSync(file, text);
      const from = proxy.output().length;
      proxy.child.kill('SIGHUP');
      const line = await nextLine(proxy, from, /reload/);
      assert.match(line, /^error: reload failed, still running the previous config: /);
      assert.match(line, reason);
      assert.equal(await client.request('set k 0 0 2\r\nv2\r\n'), 'STORED\r\n', 'still serving');
    }
    // A good file again: the comparison is with what runs (verbose 1 and resync 500 from the first reload).
    fs.writeFileSync(file, `port: ${port}\nresync-rate: 500\nverbose: 1\n`);
    const from = proxy.output().length;
    proxy.child.kill('SIGHUP');
    assert.equal(await nextLine(proxy, from, /^reload: /), 'reload: nothing changed');
    client.close();
    assert.equal(proxy.child.exitCode, null);
  });
});

/**
 * SIGHUP to both nodes of a relayed pair started with -v: each must log `line`, the link up
 * stays up, and once the relay cuts it the pair links again (A logs each link it accepts).
 * Returns where each node's output stood before the reload.
 */
async function reloadAndRelink({ a, b, relay }: { a: Node; b: Node; relay: Relay }, line: string): Promise<number[]> {
  const from = [a, b].map((n) => n.memrepl.output().length);
  for (const node of [a, b]) node.memrepl.child.kill('SIGHUP');
  for (const [i, node] of [a, b].entries()) assert.equal(await nextLine(node.memrepl, from[i], /^reload: /), line);
  assert.equal(await stat(a, 'peer_up'), '1', 'the link up stays up');
  relay.cutAll();
  await eventually(() => a.memrepl.output().slice(from[0]).includes('replication: accept'), 10000, 'a new link after the cut');
  await linked(a, b);
  return from;
}

describe('secret rotation on SIGHUP', () => {
  it('the link stays up, re-links with the new secret once cut, and a node still on the old one is refused', async () => {
    const secretFile = path.join(dir, 'secret');
    fs.writeFileSync(secretFile, 'the first shared secret, S1\n');
    const oldSecretFile = path.join(dir, 'old-secret');
    fs.writeFileSync(oldSecretFile, 'the first shared secret, S1\n');
    await withRelayedPair(['--replication-secret-file', secretFile, '-v'], async ({ a, b, relay }) => {
      fs.writeFileSync(secretFile, 'the second shared secret, S2\n');
      // The next link after the cut had to prove S2.
      const from = await reloadAndRelink({ a, b, relay }, 'reload: applied replication-secret-file (new content)');
      const stale = await startNode('c', await freePort(), a.replicationPort, ['--replication-secret-file', oldSecretFile]);
      try {
        await eventually(() => /authentication failed|shared secret/.test(a.memrepl.output().slice(from[0])), 10000, 'the S1 node refused');
        assert.equal(await stat(stale, 'peer_up'), '0');
      } finally {
        await stopAll(stale);
      }
    });
  });
});

describe('link certificate rotation on SIGHUP', () => {
  it('the link stays up, re-links with the new certificates and CA once cut, a node on the old ones is refused, clients stay connected', async () => {
    const old = signedCertificate(dir, 'old');
    const rotated = signedCertificate(dir, 'rotated');
    const live: Certificate = { cert: path.join(dir, 'link.pem'), key: path.join(dir, 'link.key'), ca: path.join(dir, 'link-ca.pem') };
    const install = (from: Certificate) => {
      for (const part of ['cert', 'key', 'ca'] as const) fs.copyFileSync(from[part], live[part]);
    };
    install(old);
    await withRelayedPair([...linkTlsFlags(live), '-v'], async ({ a, b, relay }) => {
      const client = await RawClient.connect(a.memrepl.port);
      try {
        install(rotated);
        // The next link after the cut had to show the rotated certificate.
        await reloadAndRelink({ a, b, relay }, 'reload: applied replication-tls-cert/key/ca (new content)');
        assert.equal(await client.request('set rotated 0 0 1\r\nx\r\n'), 'STORED\r\n', 'a client connected before the reload');
        await eventually(() => has(b.memcached.port, 'rotated'), 10000, 'rotated on B');
        const stale = await startNode('c', await freePort(), a.replicationPort, linkTlsFlags(old));
        try {
          await write(stale, 'from_stale');
          await sleep(1500);
          assert.equal(await has(a.memcached.port, 'from_stale'), false, 'nothing from a node on the old certificates');
          assert.equal(await stat(stale, 'peer_up'), '0');
        } finally {
          await stopAll(stale);
        }
      } finally {
        client.close();
      }
    });
  });
});

describe('certificate rotation on SIGHUP', () => {
  /** A self-signed certificate for 127.0.0.1 with this common name, written over `cert` and `key`. */
  function selfSigned(name: string, cert: string, key: string): void {
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-keyout',
        key,
        '-out',
        cert,
        '-days',
        '1',
        '-subj',
        `/CN=${name}`,
        '-addext',
        'subjectAltName=IP:127.0.0.1',
      ],
      { stdio: 'pipe' },
    );
  }

  /** The common name of the certificate a new TLS connection to `port` is shown; the socket is left open. */
  function connect(port: number): Promise<{ socket: tls.TLSSocket; name: string }> {
    return new Promise((resolve, reject) => {
      const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () =>
        resolve({ socket, name: String(socket.getPeerCertificate().subject.CN) }),
      );
      socket.once('error', reject);
      socket.setTimeout(5000, () => socket.destroy(new Error('TLS connection timed out')));
    });
  }

  function ask(socket: tls.TLSSocket, request: string): Promise<string> {
    return new Promise((resolve) => {
      let reply = '';
      const onData = (chunk: Buffer) => {
        reply += chunk.toString();
        if (reply.endsWith('\r\n')) {
          socket.off('data', onData);
          resolve(reply);
        }
      };
      socket.on('data', onData);
      socket.write(request);
    });
  }

  it('new client connections get the rotated certificate; those already open keep working', async () => {
    const cert = path.join(dir, 'rotating.pem');
    const key = path.join(dir, 'rotating.key');
    selfSigned('first', cert, key);
    const memcached = await startMemcached();
    const port = await freePort();
    const file = path.join(dir, 'tls.yaml');
    fs.writeFileSync(file, `port: ${port}\n`);
    const proxy = await launch(
      process.execPath,
      [
        CLI,
        '--config',
        file,
        '-l',
        '127.0.0.1',
        '--upstream',
        `127.0.0.1:${memcached.port}`,
        '--metrics-port',
        '0',
        '-X',
        '0',
        '--tls-cert',
        cert,
        '--tls-key',
        key,
      ],
      port,
    );
    try {
      const before = await connect(port);
      assert.equal(before.name, 'first');
      selfSigned('second', cert, key);
      const from = proxy.output().length;
      proxy.child.kill('SIGHUP');
      await nextLine(proxy, from, /^reload: /);
      const after = await connect(port);
      assert.equal(after.name, 'second', 'a new connection is shown the new certificate');
      assert.equal(await ask(before.socket, 'set r 0 0 1\r\nx\r\n'), 'STORED\r\n', 'the connection made before the rotation still works');
      assert.equal(await ask(after.socket, 'version\r\n').then((reply) => reply.startsWith('VERSION')), true);
      before.socket.destroy();
      after.socket.destroy();
    } finally {
      await proxy.stop();
      await memcached.stop();
    }
  });
});
