/**
 * Where a node stands in its peer's stream (its checkpoint) belongs to
 * memrepl, not to memcached's key space: clients can neither lose it
 * (flush_all), forge it nor delete it, and `memrepl:checkpoint` is an
 * ordinary key to them. Real memcached and memrepl pairs; a proxy killed
 * with SIGKILL and restarted must resume from the backlog (partial resync)
 * while its memcached kept its data, and ask for a full copy once that
 * memcached restarted empty.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { RawClient } from './support/client';
import { eventually, freePort, sleep } from './support/ports';
import { Node, Running, startMemcached, startMemrepl, startNode, startPair, stopAll } from './support/processes';
import { has, linked, stat } from './support/replication';

const KEY = 'memrepl:checkpoint';
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'memrepl-checkpoint-test-'));
after(() => fs.rmSync(scratch, { recursive: true, force: true }));

/** The value memcached holds under `key`, or null. */
async function valueOf(port: number, key: string): Promise<string | null> {
  const client = await RawClient.connect(port);
  try {
    const reply = await client.request(`get ${key}\r\n`, 'END\r\n');
    return reply === 'END\r\n' ? null : reply.split('\r\n')[1];
  } finally {
    client.close();
  }
}

async function send(node: Node, request: string, terminator = '\r\n'): Promise<string> {
  const client = await RawClient.connect(node.memrepl.port);
  try {
    return await client.request(request, terminator);
  } finally {
    client.close();
  }
}

/** A's writes while B's proxy is down, then B's proxy back: resolves once they linked again. */
async function restartBWhileAWrites(a: Node, b: Node, writes: number): Promise<void> {
  await b.memrepl.stop('SIGKILL');
  const client = await RawClient.connect(a.memrepl.port);
  for (let i = 0; i < writes; i++) client.send(`set k${i} 0 0 ${String(i).length}\r\n${i}\r\n`);
  await client.request('mn\r\n', 'MN\r\n');
  client.close();
  await b.restartProxy();
  await linked(a, b);
}

/** A logged that it resumed B from the backlog: B's HELLO named the record it had really applied. */
async function resumedPartially(a: Node, writes: number, after: number): Promise<void> {
  const line = `partial resync (${writes} records after #${after})`;
  await eventually(
    () => a.memrepl.output().includes(line),
    10000,
    () => `A to log "${line}"; A's log:\n${a.memrepl.output().slice(-2000)}`,
  );
}

/** One write on A, replicated to B, and time for B to save where it stands. */
async function oneRecordApplied(a: Node, b: Node): Promise<void> {
  assert.equal(await send(a, 'set before 0 0 1\r\nx\r\n'), 'STORED\r\n');
  await eventually(() => has(b.memcached.port, 'before'), 5000, '"before" on B');
  await sleep(100);
}

describe("the replication checkpoint is out of clients' reach", () => {
  it("survives a client's flush_all: the restarted proxy resumes from the backlog (two nodes, one state dir, one file each)", async () => {
    const stateDir = path.join(scratch, 'shared');
    const [a, b] = await startPair(['-v', '--state-dir', stateDir]);
    try {
      await linked(a, b);
      await oneRecordApplied(a, b);
      assert.equal(await send(b, 'flush_all\r\n'), 'OK\r\n');
      await eventually(async () => !(await has(a.memcached.port, 'before')), 5000, 'the flush on A');
      await sleep(100);
      // Each node's checkpoint, and what it knows of the flush (flush-schedule-file.ts).
      assert.deepEqual(fs.readdirSync(stateDir).sort(), ['checkpoint-a.json', 'checkpoint-b.json', 'flush-schedule-a.json', 'flush-schedule-b.json']);
      await restartBWhileAWrites(a, b, 200);
      await resumedPartially(a, 200, 1);
      await eventually(() => has(b.memcached.port, 'k199'), 10000, "A's writes on B");
    } finally {
      await stopAll(a, b);
    }
  });

  it("a restarted proxy still knows the last flush_all: the peer's records from before it, sent again, stay flushed", async () => {
    const stateDir = path.join(scratch, 'resent');
    const [a, b] = await startPair(['-v', '--state-dir', stateDir]);
    try {
      await linked(a, b);
      await oneRecordApplied(a, b);
      const checkpointOfB = path.join(stateDir, 'checkpoint-b.json');
      const before = fs.readFileSync(checkpointOfB, 'utf8');
      await send(a, 'set gone 0 0 1\r\nx\r\n');
      await eventually(() => has(b.memcached.port, 'gone'), 5000, '"gone" on B');
      assert.equal(await send(b, 'flush_all\r\n'), 'OK\r\n');
      await eventually(async () => !(await has(a.memcached.port, 'gone')), 5000, 'the flush on A');
      await sleep(100);
      // B's proxy dies, and its checkpoint says A's set of "gone" was never applied: A sends it again.
      await b.memrepl.stop('SIGKILL');
      fs.writeFileSync(checkpointOfB, before);
      await b.restartProxy();
      await linked(a, b);
      await resumedPartially(a, 1, 1);
      await sleep(500);
      assert.equal(await has(b.memcached.port, 'gone'), false, 'B applied again a write from before its flush');
      assert.equal(await has(a.memcached.port, 'gone'), false);
    } finally {
      await stopAll(a, b);
    }
  });

  for (const [tampering, request] of [
    ['forged', (runId: string) => `set ${KEY} 0 0 ${runId.length + 4}\r\n${runId} 201\r\n`],
    ['deleted', () => `delete ${KEY}\r\n`],
  ] as const) {
    it(`cannot be ${tampering} by a client: the restarted proxy resumes from where it really stood`, async () => {
      const [a, b] = await startPair(['-v']);
      try {
        await linked(a, b);
        await oneRecordApplied(a, b);
        // Claims every record A is about to write (#2..#201) as applied, or none.
        await send(b, request(await stat(a, 'run_id')));
        await sleep(100);
        await restartBWhileAWrites(a, b, 200);
        await resumedPartially(a, 200, 1);
        await eventually(() => has(b.memcached.port, 'k199'), 10000, "A's writes on B");
      } finally {
        await stopAll(a, b);
      }
    });
  }

  it('is an ordinary key to clients: replicated live and by a full copy, never overwritten by memrepl', async () => {
    const [a, b] = await startPair();
    try {
      await linked(a, b);
      assert.equal(await send(a, `set ${KEY} 0 0 11\r\nclient data\r\n`), 'STORED\r\n');
      await eventually(async () => (await valueOf(b.memcached.port, KEY)) !== null, 5000, 'the key on B');
      await sleep(300);
      assert.equal(await valueOf(b.memcached.port, KEY), 'client data');
      assert.equal(await valueOf(a.memcached.port, KEY), 'client data');
      // B's memcached restarts empty: the full copy from A brings the key back as the client wrote it.
      // B received a copy when it first linked: wait for the one after the restart (CI once read the key first).
      const copies = Number(await stat(b, 'copies_received'));
      const port = b.memcached.port;
      await b.memcached.stop('SIGKILL');
      b.memcached = await startMemcached([], port);
      await eventually(async () => Number(await stat(b, 'copies_received')) > copies, 15000, 'the full copy to B');
      await sleep(300);
      assert.equal(await valueOf(b.memcached.port, KEY), 'client data');
      assert.equal(await send(a, `delete ${KEY}\r\n`), 'DELETED\r\n');
      await eventually(async () => (await valueOf(b.memcached.port, KEY)) === null, 5000, 'the delete on B');
    } finally {
      await stopAll(a, b);
    }
  });

  it('lives in the run dir in launcher mode: a SIGKILLed memrepl that adopts its memcached resumes from the backlog', async () => {
    const ra = await freePort();
    const a = await startNode('a', ra, null, ['-v']);
    const runDir = path.join(scratch, 'run-b');
    const flags = ['--spawn-memcached', '-m', '32', '-v', '--run-dir', runDir, '-X', String(await freePort()), '-x', `127.0.0.1:${ra}`, '--node-id', 'b'];
    let b: Running = await startMemrepl(0, flags);
    try {
      await eventually(async () => (await stat(a, 'peer_up')) === '1', 10000, 'link');
      assert.equal(await send(a, 'set before 0 0 1\r\nx\r\n'), 'STORED\r\n');
      await eventually(() => has(b.port, 'before'), 5000, '"before" on B');
      await sleep(100);
      assert.ok(fs.existsSync(path.join(runDir, 'checkpoint-b.json')), 'the checkpoint is in the run dir');
      const port = b.port;
      await b.stop('SIGKILL');
      const client = await RawClient.connect(a.memrepl.port);
      for (let i = 0; i < 50; i++) client.send(`set k${i} 0 0 ${String(i).length}\r\n${i}\r\n`);
      await client.request('mn\r\n', 'MN\r\n');
      client.close();
      b = await startMemrepl(0, flags, port);
      assert.match(b.output(), /launcher: adopted memcached pid \d+ from an earlier run/);
      await resumedPartially(a, 50, 1);
      await eventually(() => has(b.port, 'k49'), 10000, "A's writes on B");
    } finally {
      await b.stop();
      await stopAll(a);
    }
  });

  it('is void once the memcached it describes restarted: the restarted proxy asks for a full copy', async () => {
    const [a, b] = await startPair(['-v']);
    try {
      await linked(a, b);
      await oneRecordApplied(a, b);
      const fullCopies = () => a.memrepl.output().split('the peer has applied nothing from this node').length - 1;
      const before = fullCopies();
      await b.memrepl.stop('SIGKILL');
      const port = b.memcached.port;
      await b.memcached.stop('SIGKILL');
      b.memcached = await startMemcached([], port);
      await b.restartProxy();
      await linked(a, b);
      await eventually(() => fullCopies() > before, 10000, 'A to be asked for a full copy');
      assert.match(b.memrepl.output(), /checkpoint .* describes memcached pid \d+ started at .*; memcached at .* is now pid \d+/);
      await eventually(() => has(b.memcached.port, 'before'), 10000, '"before" back on B');
    } finally {
      await stopAll(a, b);
    }
  });
});
