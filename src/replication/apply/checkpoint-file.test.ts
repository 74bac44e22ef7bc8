import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { createLogger } from '../../log';
import { CheckpointFile, checkpointPath, type CheckpointFileOptions } from './checkpoint-file';
import type { MemcachedIdentity } from '../restart-watch';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'memrepl-checkpoint-unit-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));
let dirs = 0;

const RUN = '0b6f3f6e-3c1e-4f7a-9a57-1d2a4c5e6f70';
const MEMCACHED: MemcachedIdentity = { pid: '4242', uptime: 100, startedAt: 1_700_000_000 };

/** A checkpoint file in a fresh directory, with what it logged. */
function setup(overrides: Partial<CheckpointFileOptions> = {}, identity: { now: MemcachedIdentity | null } = { now: MEMCACHED }) {
  const lines: string[] = [];
  const options: CheckpointFileOptions = {
    dir: path.join(root, `d${dirs++}`, 'state'),
    nodeId: 'a',
    cluster: 'memrepl',
    memcachedAddress: '127.0.0.1:11311',
    memcached: () => identity.now,
    ...overrides,
  };
  return {
    store: new CheckpointFile(
      options,
      createLogger(1, (line) => lines.push(line)),
    ),
    lines,
    options,
    identity,
  };
}

/** A checkpoint as memrepl wrote it before it kept the file at one page: the JSON and a line break. */
function writtenByOlderVersion(seq: number): string {
  const saved = {
    format: 'memrepl-checkpoint/1',
    nodeId: 'a',
    cluster: 'memrepl',
    memcached: { address: '127.0.0.1:11311', pid: MEMCACHED.pid, startedAt: MEMCACHED.startedAt },
    peerRunId: RUN,
    appliedSeq: seq,
    savedAt: new Date().toISOString(),
  };
  return `${JSON.stringify(saved)}\n`;
}

test('a saved position is found again by the next run, in front of the same memcached', () => {
  const { store, options } = setup();
  assert.equal(store.load(), null, 'nothing saved yet');
  assert.equal(store.save({ runId: RUN, seq: 17 }), true);
  assert.equal(store.save({ runId: RUN, seq: 18 }), true);
  const next = new CheckpointFile(options, createLogger(0));
  assert.deepEqual(next.load(), { runId: RUN, seq: 18 });
  // Created private, and saves leave no other file behind.
  assert.equal(fs.statSync(options.dir).mode & 0o777, 0o700);
  assert.deepEqual(fs.readdirSync(options.dir), ['checkpoint-a.json']);
});

test('each save overwrites the same one-page file in place, also one an older version wrote whole', () => {
  const { store, options } = setup();
  const file = checkpointPath(options.dir, 'a');
  store.load();
  // An older memrepl wrote the file whole (write then rename), as long as its JSON; a longer foreign tail must go too.
  fs.writeFileSync(file, `${writtenByOlderVersion(3)}${'x'.repeat(6000)}`);
  assert.equal(store.save({ runId: RUN, seq: 4 }), true);
  const inode = fs.statSync(file).ino;
  assert.equal(store.save({ runId: RUN, seq: 123_456_789 }), true);
  assert.equal(store.save({ runId: RUN, seq: 5 }), true, 'a shorter position after a longer one');
  assert.equal(fs.statSync(file).ino, inode, 'rewritten in place, not replaced');
  assert.equal(fs.statSync(file).size, 4096);
  assert.deepEqual(new CheckpointFile(options, createLogger(0)).load(), { runId: RUN, seq: 5 });
  // clear() removes it; the next save creates it again.
  store.clear();
  assert.equal(fs.existsSync(file), false);
  assert.equal(store.save({ runId: RUN, seq: 6 }), true);
  assert.deepEqual(new CheckpointFile(options, createLogger(0)).load(), { runId: RUN, seq: 6 });
  store.close();
});

test("an older version's checkpoint is still read", () => {
  const { store, options } = setup();
  store.load();
  fs.writeFileSync(checkpointPath(options.dir, 'a'), writtenByOlderVersion(77));
  assert.deepEqual(new CheckpointFile(options, createLogger(0)).load(), { runId: RUN, seq: 77 });
});

test('a memcached that restarted (other pid or start time) or another address voids the position', () => {
  for (const [what, change] of [
    ['pid', (i: MemcachedIdentity) => ({ ...i, pid: '4243' })],
    ['start time', (i: MemcachedIdentity) => ({ ...i, startedAt: i.startedAt + 1 })],
  ] as const) {
    const { store, lines, identity } = setup();
    store.load();
    store.save({ runId: RUN, seq: 5 });
    identity.now = change(MEMCACHED);
    assert.equal(store.load(), null, what);
    assert.match(
      lines.join(''),
      /describes memcached pid 4242 started at 2023-11-14T22:13:20.000Z at 127.0.0.1:11311; memcached at 127.0.0.1:11311 is now pid/,
    );
  }
  const { store, options } = setup();
  store.load();
  store.save({ runId: RUN, seq: 5 });
  assert.equal(new CheckpointFile({ ...options, memcachedAddress: '/run/other.sock' }, createLogger(0)).load(), null);
  assert.equal(new CheckpointFile({ ...options, memcached: () => null }, createLogger(0)).load(), null, 'memcached not answering');
});

test('a corrupt, foreign or tampered file is ignored with a warning, never trusted', () => {
  const { store, lines, options } = setup();
  store.load();
  store.save({ runId: RUN, seq: 9 });
  const file = checkpointPath(options.dir, 'a');
  const good = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  const cases: Array<[string, string, RegExp]> = [
    ['half a file', '{"format":"memrepl-checkpoint/1","nodeId":"a"', /not valid JSON/],
    ['not an object', '42', /not a checkpoint/],
    ['another format', JSON.stringify({ ...good, format: 'memrepl-checkpoint/2' }), /unknown format/],
    ['another node', JSON.stringify({ ...good, nodeId: 'b' }), /belongs to node "b" of cluster "memrepl"/],
    ['another cluster', JSON.stringify({ ...good, cluster: 'other' }), /belongs to node "a" of cluster "other"/],
    ['a negative seq', JSON.stringify({ ...good, appliedSeq: -1 }), /no valid record number/],
    ['a fractional seq', JSON.stringify({ ...good, appliedSeq: 1.5 }), /no valid record number/],
    ['a seq as text', JSON.stringify({ ...good, appliedSeq: '9' }), /no valid record number/],
    ['a run id with a space', JSON.stringify({ ...good, peerRunId: `${RUN} 99` }), /no valid peer run id/],
    ['no memcached', JSON.stringify({ ...good, memcached: null }), /no valid memcached identity/],
    ['a numeric pid', JSON.stringify({ ...good, memcached: { ...(good.memcached as object), pid: 4242 } }), /no valid memcached identity/],
    ['a huge file', ' '.repeat(5000), /larger than 4096 bytes/],
  ];
  for (const [what, text, reason] of cases) {
    fs.writeFileSync(file, text);
    lines.length = 0;
    assert.equal(store.load(), null, what);
    assert.match(lines.join(''), /^warning: replication: ignoring the checkpoint .*checkpoint-a\.json: /, what);
    assert.match(lines.join(''), reason, what);
  }
});

test('nodes sharing a state dir have a file each, named by node id', () => {
  assert.equal(path.basename(checkpointPath('/s', 'cache1')), 'checkpoint-cache1.json');
  assert.equal(path.basename(checkpointPath('/s', 'host:11211')), 'checkpoint-host%3A11211.json');
  assert.equal(path.basename(checkpointPath('/s', '../x')), 'checkpoint-..%2Fx.json');
  assert.match(path.basename(checkpointPath('/s', 'n'.repeat(300))), /^checkpoint-[0-9a-f]{64}\.json$/);
  const a = setup({ nodeId: 'a' });
  const b = setup({ nodeId: 'b', dir: a.options.dir });
  a.store.load();
  a.store.save({ runId: RUN, seq: 1 });
  b.store.save({ runId: RUN, seq: 2 });
  assert.deepEqual(a.store.load(), { runId: RUN, seq: 1 });
  assert.deepEqual(b.store.load(), { runId: RUN, seq: 2 });
});

test('clear() removes the position; a save fails (and says so once) while memcached was never seen or the dir is gone', () => {
  const { store, lines, options, identity } = setup();
  store.load();
  store.save({ runId: RUN, seq: 3 });
  store.clear();
  assert.equal(store.load(), null);
  identity.now = null;
  assert.equal(store.save({ runId: RUN, seq: 4 }), false);
  identity.now = MEMCACHED;
  fs.rmSync(options.dir, { recursive: true });
  lines.length = 0;
  assert.equal(store.save({ runId: RUN, seq: 5 }), false);
  assert.equal(store.save({ runId: RUN, seq: 6 }), false);
  assert.equal(lines.filter((l) => l.includes('cannot save the checkpoint')).length, 1);
  fs.mkdirSync(options.dir, { recursive: true });
  assert.equal(store.save({ runId: RUN, seq: 7 }), true);
  assert.match(lines.join(''), /saved again/);
});

test('a state dir that is not a directory is an error at start', () => {
  const file = path.join(root, 'plain-file');
  fs.writeFileSync(file, 'x');
  assert.throws(() => setup({ dir: file }).store.load(), /state dir .*plain-file is not a directory/);
});
