import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Registry } from 'prom-client';
import type { RecordFrame } from '../link/frames/messages';
import { KnownExpiries } from '../binary-keys';
import type { LocalMemcached, LocalMemcachedBinary } from '../local-memcached';
import { createReplicationMetrics } from '../metrics';
import type { BatchAnswered } from './applier';
import { ApplyBatches, type FlushInBatch } from './apply-batches';
import { Contention } from './contention';

const set = (key: string, seq: number): RecordFrame => ({
  type: 'record',
  seq,
  hlc: { wall: 1, logical: 0 },
  op: 'set',
  key: Buffer.from(key),
  flags: 0,
  value: Buffer.from('v'),
  delay: 0,
  ttlMs: -1,
  sentAt: 0,
});

/** ApplyBatches on fake connections: each text batch sent is logged, and answered as `answer` says. */
function batches(answer: (text: string) => Promise<unknown[]> = () => Promise.resolve([])) {
  const log: string[] = [];
  const answered: Array<[BatchAnswered, Error | undefined]> = [];
  let applying = 0;
  const local = {
    quietBatch: (bytes: Buffer) => {
      const text = bytes.toString('latin1');
      log.push(text);
      return answer(text);
    },
  } as unknown as LocalMemcached;
  const binaryLocal = { quietBatch: () => Promise.resolve([]) } as unknown as LocalMemcachedBinary;
  const history = { nearFlush: { armed: false, answered() {}, touched() {} }, expiries: new KnownExpiries() };
  const events = { batchAnswered: (batch: BatchAnswered, error?: Error) => answered.push([batch, error]), refused() {} };
  const flow = { sent: (bytes: number) => (applying += bytes), answered: (bytes: number) => (applying -= bytes) };
  const under = new ApplyBatches(local, binaryLocal, new Contention(() => {}), history, createReplicationMetrics(new Registry()), events, flow);
  return { under, log, answered, applying: () => applying };
}

test('a batch of skipped copies only is answered at once, unsent', () => {
  const { under, log, answered } = batches();
  under.open().copies = 2;
  under.flush();
  assert.deepEqual(log, []);
  assert.deepEqual(answered, [[{ copies: 2, lastSeq: 0 }, undefined]]);
});

test("an immediate flush's batch is filled at its turn, and the batches after it wait until its answered hook is done", async () => {
  const { under, log, answered, applying } = batches();
  const steps: string[] = [];
  let reopen!: () => void;
  const hook: FlushInBatch = {
    fill: async (commands) => {
      steps.push(`fill after ${log.length} sent`);
      commands.command(Buffer.from('flush_all 0 noreply\r\n'), 'flush');
    },
    answered: async () => {
      steps.push('answered');
      await new Promise<void>((resolve) => (reopen = resolve));
    },
    failed: () => steps.push('failed'),
  };
  const before = under.open();
  under.write(before, set('a', 1), 0);
  before.lastSeq = 2;
  under.sendFlush(before, hook);
  const after = under.open();
  under.write(after, set('b', 3), 0);
  after.lastSeq = 3;
  under.flush();
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(steps, ['fill after 1 sent', 'answered']);
  assert.equal(log.length, 2, 'the batch after the flush waits');
  reopen();
  await under.idle();
  assert.match(log[0]!, /^ms a /);
  assert.equal(log[1], 'flush_all 0 noreply\r\n');
  assert.match(log[2]!, /^ms b /);
  assert.deepEqual(
    answered.map(([batch]) => batch),
    [
      { copies: 0, lastSeq: 0 },
      { copies: 0, lastSeq: 2 },
      { copies: 0, lastSeq: 3 },
    ],
  );
  assert.equal(applying(), 0);
});

test('a failed flush tells its hook, and its batch is answered with the error; a new stream hides older positions', async () => {
  const { under, answered } = batches((text) => (text.startsWith('flush_all') ? Promise.reject(new Error('gone')) : Promise.resolve([])));
  const steps: string[] = [];
  const batch = under.open();
  batch.lastSeq = 1;
  under.sendFlush(batch, {
    fill: async (commands) => commands.command(Buffer.from('flush_all 0 noreply\r\n'), 'flush'),
    answered: async () => void steps.push('answered'),
    failed: () => steps.push('failed'),
  });
  under.newStream();
  const next = under.open();
  next.lastSeq = 2;
  under.write(next, set('a', 2), 0);
  await under.idle();
  assert.deepEqual(steps, ['failed']);
  assert.deepEqual(
    answered.map(([batch, error]) => [batch.lastSeq, error?.message]),
    [
      [0, undefined],
      [0, 'gone'],
      [2, undefined],
    ],
  );
});
