/**
 * The replication port is not open to anyone (repcached's was): a shared
 * secret proven with HMAC challenge-response, safe defaults, and peers that
 * fail any of it apply nothing while the pair keeps replicating.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Frame, HelloFrame } from '../src/replication/frames/messages';
import { FrameParser } from '../src/replication/frames/parser';
import { serialize } from '../src/replication/frames/serializer';
import { newNonce, proof } from '../src/replication/link-auth';
import { eventually, freePort, sleep } from './support/ports';
import { Node, startMemrepl, startNode, stopAll } from './support/processes';
import { has, write } from './support/replication';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'memrepl-test-'));
const SECRET = 'correct horse battery staple 42';
function secretFile(name: string, secret: string): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, `${secret}\n`);
  return file;
}



/** Speaks the replication protocol by hand: reads the node's HELLO, then sends what the test wants. */
async function handshake(port: number, send: (theirs: HelloFrame, ourNonce: string) => Buffer[]): Promise<Frame[]> {
  const socket = net.connect(port, '127.0.0.1');
  const parser = new FrameParser({ maxFrameBytes: 1 << 20 });
  const frames: Frame[] = [];
  const ourNonce = newNonce();
  let sent = false;
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, 1500);
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      resolve();
    });
    socket.on('data', (chunk) => {
      parser.push(chunk);
      let frame: Frame | null;
      while ((frame = parser.next()) !== null) {
        frames.push(frame);
        if (frame.type === 'hello' && !sent) {
          sent = true;
          for (const bytes of send(frame, ourNonce)) socket.write(bytes);
        }
      }
    });
  });
  socket.destroy();
  return frames;
}

const intruderHello = (nonce: string) =>
  serialize.hello({ cluster: 'memrepl', nodeId: 'mallory', runId: 'r', lastApplied: null, nonce, time: Date.now() });
const evilRecord = serialize.record(
  { seq: 1, hlc: { wall: Date.now() + 1e9, logical: 0 }, op: 'set', key: Buffer.from('evil'), flags: 0, value: Buffer.from('pwned'), delay: 0, expiresAt: null },
  Date.now(),
);

describe('an authenticated pair', () => {
  let a: Node;
  let b: Node;
  before(async () => {
    const ra = await freePort();
    const file = secretFile('good', SECRET);
    a = await startNode('a', ra, null, ['--replication-secret-file', file]);
    b = await startNode('b', await freePort(), ra, ['--replication-secret-file', file]);
  });
  after(() => stopAll(a, b));

  it('replicates with the shared secret', async () => {
    await write(a, 'hello');
    await eventually(() => has(b.memcached.port, 'hello'), 10000, 'hello on B');
  });

  it('a node with a wrong secret or none is refused and applies nothing', async () => {
    const wrong = await startNode('c', await freePort(), a.replicationPort, ['--replication-secret-file', secretFile('bad', 'a different secret entirely')]);
    const none = await startNode('d', await freePort(), a.replicationPort);
    try {
      await write(wrong, 'from_wrong');
      await write(none, 'from_none');
      await sleep(1500);
      assert.equal(await has(a.memcached.port, 'from_wrong'), false);
      assert.equal(await has(a.memcached.port, 'from_none'), false);
      assert.match(a.memrepl.output(), /authentication failed|shared secret|no nonce/);
    } finally {
      await stopAll(wrong, none);
    }
    await write(a, 'still');
    await eventually(() => has(b.memcached.port, 'still'), 10000, 'the pair to keep replicating');
  });

  it('a correct proof opens the link; a replayed one, or records before any proof, do not', async () => {
    const secret = Buffer.from(SECRET);
    // Positive control: a hand-made, correct handshake is answered like a peer's (AUTH, then traffic).
    const good = await handshake(a.replicationPort, (theirs, nonce) => [
      intruderHello(nonce),
      serialize.auth({ proof: proof(secret, { cluster: 'memrepl', nodeId: 'mallory', nonce }, theirs.nonce!) }),
    ]);
    assert.ok(good.some((f) => f.type === 'auth'));
    // (It may then be dropped as a second link to the pair; what matters is that it was not refused.)
    assert.ok(!good.some((f) => f.type === 'goodbye' && /auth|secret/.test(f.reason)), JSON.stringify(good.filter((f) => f.type === 'goodbye')));
    // A proof recorded from an earlier handshake covers that handshake's nonce, not this one's.
    const recordedNonce = newNonce();
    const replayed = await handshake(a.replicationPort, (_theirs, nonce) => [
      intruderHello(nonce),
      serialize.auth({ proof: proof(secret, { cluster: 'memrepl', nodeId: 'mallory', nonce }, recordedNonce) }),
      evilRecord,
    ]);
    assert.ok(replayed.some((f) => f.type === 'goodbye' && /authentication failed/.test(f.reason)));
    const skipped = await handshake(a.replicationPort, (_theirs, nonce) => [intruderHello(nonce), evilRecord]);
    assert.ok(skipped.some((f) => f.type === 'goodbye'));
    assert.equal(await has(a.memcached.port, 'evil'), false);
  });
});

describe('safe defaults', () => {
  it('refuses an unauthenticated replication port beyond loopback, with a way out', async () => {
    const port = await freePort();
    await assert.rejects(
      startMemrepl(1, ['-l', '0.0.0.0', '-X', String(await freePort())], port),
      /exited \(2\)[\s\S]*--replication-secret-file[\s\S]*--replication-insecure/,
    );
    const trusted = await startMemrepl(1, ['-l', '0.0.0.0', '-X', String(await freePort()), '--replication-insecure'], port);
    await trusted.stop();
    const secured = await startMemrepl(1, ['-l', '0.0.0.0', '-X', String(await freePort()), '--replication-secret-file', secretFile('s', SECRET)], port);
    await secured.stop();
  });

  it('a short secret is refused', async () => {
    await assert.rejects(startMemrepl(1, ['--replication-secret-file', secretFile('short', 'tiny')]), /fewer than 16 characters/);
  });
});
