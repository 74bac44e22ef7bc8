/**
 * The replication port is not open to anyone (repcached's was): a shared
 * secret proven with HMAC challenge-response, safe defaults, and peers that
 * fail any of it apply nothing while the pair keeps replicating. An attacker
 * who can reach the port but lacks the secret cannot make the node sign
 * something it can replay, on another connection or back to the node.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Frame, HelloFrame } from '../src/replication/link/frames/messages';
import { serializeAuth, serializeHello, serializeRecord } from '../src/replication/link/frames/serializer';
import { newNonce, proof, verify } from '../src/replication/link/link-auth';
import { eventually, freePort, sleep } from './support/ports';
import { RawLink } from './support/raw-link';
import { Node, startMemrepl, startNode, stopAll } from './support/processes';
import { has, stat, write } from './support/replication';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'memrepl-test-'));
const SECRET = 'correct horse battery staple 42';
function secretFile(name: string, secret: string): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, `${secret}\n`);
  return file;
}

/** Dials the node, answers its HELLO with what `send` makes of it, and returns what the node sent within 1.5 s. */
async function handshake(port: number, send: (theirs: HelloFrame, ourNonce: string) => Buffer[]): Promise<Frame[]> {
  const link = await RawLink.open(port);
  try {
    const theirs = await link.first('hello', 2000);
    assert.ok(theirs, 'the node greets');
    link.send(...send(theirs, newNonce()));
    await link.closed(1500);
    return link.frames;
  } finally {
    link.close();
  }
}

const attackerHello = (nodeId: string, nonce: string) => serializeHello({ cluster: 'memrepl', nodeId, runId: 'r', lastApplied: null, nonce, time: Date.now() });
const evilRecord = serializeRecord(
  {
    seq: 1,
    hlc: { wall: Date.now() + 1e9, logical: 0 },
    op: 'set',
    key: Buffer.from('evil'),
    flags: 0,
    value: Buffer.from('pwned'),
    delay: 0,
    expiresAt: null,
  },
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
    const diallerProof = (theirs: HelloFrame, nonce: string, verifierNonce = theirs.nonce!) =>
      proof(secret, { role: 'dialler', cluster: 'memrepl', prover: { nodeId: 'mallory', nonce }, verifier: { nodeId: theirs.nodeId, nonce: verifierNonce } });
    // Positive control: a hand-made, correct handshake is answered like a peer's (the node's own proof, then traffic).
    const link = await RawLink.open(a.replicationPort);
    try {
      const theirs = await link.first('hello', 2000);
      assert.ok(theirs?.nonce, 'the node greets with a nonce');
      const nonce = newNonce();
      link.send(attackerHello('mallory', nonce), serializeAuth({ proof: diallerProof(theirs, nonce) }));
      const answer = await link.first('auth', 2000);
      assert.ok(answer, 'the node proves itself to a dialler that proved the secret');
      const statement = { role: 'acceptor' as const, cluster: 'memrepl', prover: { nodeId: 'a', nonce: theirs.nonce }, verifier: { nodeId: 'mallory', nonce } };
      assert.equal(verify(secret, answer.proof, statement), true);
      // (It may then be dropped as a second link to the pair; what matters is that it was not refused.)
      await link.closed(1500);
      const refusals = link.frames.filter((f) => f.type === 'goodbye' && /auth|secret/.test(f.reason));
      assert.deepEqual(refusals, []);
    } finally {
      link.close();
    }
    // A proof recorded from an earlier handshake covers that handshake's nonce, not this one's.
    const recordedNonce = newNonce();
    const replayed = await handshake(a.replicationPort, (theirs, nonce) => [
      attackerHello('mallory', nonce),
      serializeAuth({ proof: diallerProof(theirs, nonce, recordedNonce) }),
      evilRecord,
    ]);
    assert.ok(replayed.some((f) => f.type === 'goodbye' && /authentication failed/.test(f.reason)));
    const skipped = await handshake(a.replicationPort, (_theirs, nonce) => [attackerHello('mallory', nonce), evilRecord]);
    assert.ok(skipped.some((f) => f.type === 'goodbye'));
    assert.equal(await has(a.memcached.port, 'evil'), false);
  });
});

/** Frames only an open link carries: one of them reaching the attacker means it got in. */
const OPEN_LINK_FRAMES = new Set<Frame['type']>(['record', 'resyncBegin', 'resyncEnd', 'ping', 'ack', 'fullCopyRequest']);

/** What an attacker got the node to sign: its proof (null if it signed nothing) and the nonce the node used with it. */
interface Harvest {
  proof: string | null;
  nodeNonce: string;
}

/**
 * One reflection attempt: the attacker opens a connection to the node
 * (the target), has the node sign `crafted(target's nonce)` somewhere else (the
 * oracle), and presents that proof on the target under the id `claim`.
 */
interface Attempt {
  claim: string;
  crafted: (targetNonce: string) => string;
  /** Why the node must refuse the target. */
  refusal: RegExp;
}

const reflections = (self: string): Attempt[] => [
  // Plain reflection: the node's proof over the target's own nonce, presented as the node itself.
  { claim: self, crafted: (targetNonce) => targetNonce, refusal: /own id/ },
  // Splice: moves the boundary between fields of a newline-joined HMAC input (node id "self\nx", nonce "x\n<target's nonce>").
  { claim: `${self}\nx`, crafted: (targetNonce) => `x\n${targetNonce}`, refusal: /nodeId/ },
  // The node's proof as it is, under another id.
  { claim: 'mallory', crafted: (targetNonce) => targetNonce, refusal: /authentication failed/ },
];

/** Runs the attempts; returns the target connections and how many proofs the oracle yielded. */
async function attack(node: Node, attempts: Attempt[], oracle: (crafted: string) => Promise<Harvest>): Promise<{ targets: RawLink[]; harvested: number }> {
  const targets: RawLink[] = [];
  let harvested = 0;
  for (const { claim, crafted } of attempts) {
    const target = await RawLink.open(node.replicationPort);
    targets.push(target);
    const targetHello = await target.first('hello', 2000);
    assert.ok(targetHello?.nonce, 'the node greets with a nonce');
    const { proof: signed, nodeNonce } = await oracle(crafted(targetHello.nonce));
    if (signed !== null) harvested++;
    target.send(attackerHello(claim, nodeNonce), serializeAuth({ proof: signed ?? '0'.repeat(64) }), evilRecord);
    await target.first('goodbye', 2000);
  }
  return { targets, harvested };
}

/** Each target was refused, for the reason its attempt expects. */
function assertRefused(attempts: Attempt[], targets: RawLink[]): void {
  attempts.forEach(({ claim, refusal }, i) => {
    const refused = targets[i].frames.find((frame) => frame.type === 'goodbye');
    assert.match(refused?.type === 'goodbye' ? refused.reason : 'no goodbye: the node kept the link', refusal, `claiming ${JSON.stringify(claim)}`);
  });
}

/** The node opened no link to the attacker, applied nothing from it, counted the failures, and still serves clients. */
async function assertNeverOpened(node: Node, links: RawLink[]): Promise<void> {
  // A write made now would reach an open link as a RECORD.
  await write(node, 'written_during_attack');
  await sleep(500);
  for (const link of links) {
    const leaked = link.frames.filter((frame) => OPEN_LINK_FRAMES.has(frame.type)).map((frame) => frame.type);
    assert.deepEqual(leaked, [], 'frames of an open link reached the attacker');
  }
  assert.equal(await has(node.memcached.port, 'evil'), false, 'the attacker wrote a key');
  assert.equal(await stat(node, 'peer_up'), '0');
  const metrics = await (await fetch(`http://127.0.0.1:${node.metricsPort}/metrics`)).text();
  assert.match(metrics, /memrepl_replication_link_errors_total\{reason="auth_failed"\} [1-9]/);
  assert.match(node.memrepl.output(), /authentication/);
  await write(node, 'after_attack');
  assert.equal(await has(node.memrepl.port, 'after_attack'), true, 'the node keeps serving clients');
}

describe('the node is no signing oracle', () => {
  it('a proof asked for on one connection does not open another, under its own id or any other', async () => {
    const node = await startNode('v', await freePort(), null, ['--replication-secret-file', secretFile('oracle', SECRET)]);
    const oracles: RawLink[] = [];
    try {
      await write(node, 'written_before_attack');
      const attempts = reflections('v');
      const { targets, harvested } = await attack(node, attempts, async (crafted) => {
        const oracle = await RawLink.open(node.replicationPort);
        oracles.push(oracle);
        const theirs = await oracle.first('hello', 2000);
        oracle.send(attackerHello('mallory', crafted));
        const signed = await oracle.first('auth', 1000);
        return { proof: signed?.proof ?? null, nodeNonce: theirs?.nonce ?? '' };
      });
      await assertNeverOpened(node, [...targets, ...oracles]);
      assertRefused(attempts, targets);
      // The node proves itself only to a peer that has already proved the secret.
      assert.equal(harvested, 0, 'the node signed a nonce for a peer that had proved nothing');
      // An oracle that sent a well-formed HELLO and then never proved anything is still cut off at the handshake deadline (5 s).
      const endings = await Promise.all(oracles.map(async (oracle) => (await oracle.first('goodbye', 7000))?.reason ?? 'still open'));
      for (const ending of endings) assert.match(ending, /handshake timed out|HELLO nonce is not 64 lowercase hex digits/);
      assert.ok(endings.includes('handshake timed out'), endings.join('; '));
    } finally {
      for (const link of oracles) link.close();
      await stopAll(node);
    }
  });

  it('a proof the node makes when it dials out does not open a link to it', async () => {
    // The attacker plays the peer the node dials (-x) and answers the node's HELLO with a nonce of its choosing.
    const dialledIn: RawLink[] = [];
    const fakePeer = net.createServer((socket) => dialledIn.push(new RawLink(socket)));
    const fakePort = await freePort();
    await new Promise<void>((resolve) => fakePeer.listen(fakePort, '127.0.0.1', resolve));
    const node = await startNode('d', await freePort(), fakePort, ['--replication-secret-file', secretFile('dialler', SECRET)]);
    try {
      await write(node, 'written_before_attack');
      const attempts = reflections('d');
      let used = 0;
      const { targets, harvested } = await attack(node, attempts, async (crafted) => {
        await eventually(() => dialledIn.length > used, 5000, 'the node to dial the fake peer');
        const dial = dialledIn[used++];
        const theirs = await dial.first('hello', 2000);
        dial.send(attackerHello('mallory', crafted));
        const signed = await dial.first('auth', 2000);
        dial.close();
        return { proof: signed?.proof ?? null, nodeNonce: theirs?.nonce ?? '' };
      });
      // The dialler proves first, so the fake peer did get proofs: they must be useless against the node.
      assert.ok(harvested > 0, 'the node proved itself to the peer it dialled');
      await assertNeverOpened(node, [...targets, ...dialledIn]);
      assertRefused(attempts, targets);
    } finally {
      for (const link of dialledIn) link.close();
      fakePeer.close();
      await stopAll(node);
    }
  });

  it('refuses a malformed nonce, an overlong node id or one with a newline, without signing anything', async () => {
    const node = await startNode('m', await freePort(), null, ['--replication-secret-file', secretFile('malformed', SECRET)]);
    try {
      const cases: Array<[string, string, RegExp]> = [
        ['mallory', 'abc', /nonce/],
        ['mallory', newNonce().toUpperCase(), /nonce/],
        ['mallory', `${newNonce()}0`, /nonce/],
        ['mallory', `${newNonce().slice(1)}\n`, /nonce/],
        ['x'.repeat(300), newNonce(), /nodeId/],
        ['mall\nory', newNonce(), /nodeId/],
        ['', newNonce(), /nodeId/],
      ];
      for (const [nodeId, nonce, reason] of cases) {
        const link = await RawLink.open(node.replicationPort);
        try {
          await link.first('hello', 2000);
          link.send(attackerHello(nodeId, nonce));
          const refused = await link.first('goodbye', 2000);
          assert.match(refused?.reason ?? 'no goodbye', reason, `nodeId ${JSON.stringify(nodeId)}, nonce ${JSON.stringify(nonce)}`);
          assert.equal(await link.first('auth', 0), null, 'the node signed a malformed nonce');
        } finally {
          link.close();
        }
      }
      await write(node, 'still_serving');
      assert.equal(await has(node.memrepl.port, 'still_serving'), true);
    } finally {
      await stopAll(node);
    }
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

  it('a node id or cluster name a peer would refuse is refused at start', async () => {
    await assert.rejects(startMemrepl(1, ['--node-id', 'two words']), /exited \(2\)[\s\S]*invalid --node-id "two words": may hold only/);
    await assert.rejects(startMemrepl(1, ['--cluster', 'x'.repeat(129)]), /exited \(2\)[\s\S]*invalid --cluster "x+": is longer than 128/);
  });
});
