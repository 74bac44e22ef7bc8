import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Contention } from './contention';

const k = (s: string) => Buffer.from(s);
/** Two client sessions. */
const one = {};
const two = {};

test('no overlap, no repair', () => {
  const repaired: string[] = [];
  // A fixed seed: with a random one, 'b' and 'c' would share a bucket once in 65536 runs (a needless repair).
  const c = new Contention((key) => repaired.push(key.toString()), 1);
  c.localStarted(k('a'), one);
  c.localEnded(k('a'));
  c.appliesEnded([c.applyStarted(k('a'))]);
  const b = c.applyStarted(k('b'));
  c.localStarted(k('c'), one);
  c.appliesEnded([b]);
  c.localEnded(k('c'));
  assert.deepEqual(repaired, []);
  assert.equal(c.repairs, 0);
});

test('a client write and a record of one key in flight together: one repair once both ended', () => {
  for (const order of [
    ['local', 'apply'],
    ['apply', 'local'],
  ]) {
    const repaired: string[] = [];
    const c = new Contention((key) => repaired.push(key.toString()));
    let ticket = -1;
    for (const who of order) {
      if (who === 'local') c.localStarted(k('x'), one);
      else ticket = c.applyStarted(k('x'));
    }
    c.localStarted(k('x'), one); // a second client write, still in flight
    c.appliesEnded([ticket]);
    c.localEnded(k('x'));
    assert.deepEqual(repaired, []);
    c.localEnded(k('x'));
    assert.deepEqual(repaired, ['x']);
    assert.equal(c.repairs, 1);
  }
});

test('a batch of live records settles at once; the key a client wrote meanwhile is repaired after both', () => {
  const repaired: string[] = [];
  const c = new Contention((key) => repaired.push(key.toString()));
  const read = Buffer.from(' hot cold ');
  const tickets = [c.applyStarted(read.subarray(1, 4)), c.applyStarted(read.subarray(5, 9))];
  c.localStarted(k('hot'), one);
  c.appliesEnded(tickets);
  assert.deepEqual(repaired, [], 'the client write is still in flight');
  c.localEnded(k('hot'));
  assert.deepEqual(repaired, ['hot']);
  // A record that starts while a client write is in flight is seen too (the key given as a view into a larger read).
  c.localStarted(k('cold'), one);
  const late = c.applyStarted(read.subarray(5, 9));
  c.localEnded(k('cold'));
  assert.deepEqual(repaired, ['hot'], 'the record is still in flight');
  c.appliesEnded([late]);
  assert.deepEqual(repaired, ['hot', 'cold']);
});

test('two sessions writing one key at once (two upstream connections): one repair once both ended', () => {
  const repaired: string[] = [];
  const c = new Contention((key) => repaired.push(key.toString()), 1);
  c.localStarted(k('session'), one); // a binary client's set
  c.localStarted(k('session'), two); // a text client's gats, on another connection to memcached
  c.localEnded(k('session'));
  assert.deepEqual(repaired, [], 'one is still in flight');
  c.localEnded(k('session'));
  assert.deepEqual(repaired, ['session']);
  // One after the other: memcached ran them in the order they were answered.
  c.localStarted(k('session'), one);
  c.localEnded(k('session'));
  c.localStarted(k('session'), two);
  c.localEnded(k('session'));
  assert.equal(c.repairs, 1);
});

test("one session's pipelined writes of a key are kept in order by the session: no repair", () => {
  const repaired: string[] = [];
  const c = new Contention((key) => repaired.push(key.toString()), 1);
  for (let i = 0; i < 3; i++) c.localStarted(k('r'), one);
  for (let i = 0; i < 3; i++) c.localEnded(k('r'));
  assert.deepEqual(repaired, []);
});

test('a read back is not a client write: it overlaps its own append (and later writes) without a repair', () => {
  const repaired: string[] = [];
  const c = new Contention((key) => repaired.push(key.toString()), 1);
  c.localStarted(k('list'), one); // the append
  c.localStarted(k('list'), null); // its read back, started before the append counts as ended
  c.localEnded(k('list'));
  c.localStarted(k('list'), two); // another session's write while the read is on its way: stamped after the read's stamp
  c.localEnded(k('list'));
  c.localEnded(k('list'), true);
  assert.deepEqual(repaired, []);
  // A write in flight when a read back starts, and another session's write then: the two writes overlap.
  c.localStarted(k('list'), one);
  c.localStarted(k('list'), null);
  c.localStarted(k('list'), two);
  c.localEnded(k('list'), true);
  c.localEnded(k('list'));
  c.localEnded(k('list'));
  assert.deepEqual(repaired, ['list']);
});

test('many keys: every overlap is repaired exactly once, after both sides ended (buckets shared by other keys only delay it)', () => {
  const repaired: string[] = [];
  const c = new Contention((key) => repaired.push(key.toString()));
  // 200k records in flight cover most of the 65536 buckets, so most client writes share a bucket with some record.
  const tickets: number[] = [];
  for (let i = 0; i < 200_000; i++) tickets.push(c.applyStarted(k(`copy:${i}`)));
  const overlapping = ['copy:7', 'copy:199999'];
  for (const key of overlapping) c.localStarted(k(key), one);
  for (const key of overlapping) c.localEnded(k(key));
  assert.deepEqual(repaired, [], 'their records are still in flight');
  c.appliesEnded(tickets);
  assert.deepEqual(repaired.sort(), overlapping.slice().sort());
  // Nothing in flight any more: later writes are not repaired.
  c.localStarted(k('copy:7'), one);
  c.localEnded(k('copy:7'));
  assert.equal(c.repairs, 2);
});

test("a full copy's record and a client write never overlap: the write waits for the record, the record yields to the write", async () => {
  const repaired: string[] = [];
  const c = new Contention((key) => repaired.push(key.toString()), 1);
  assert.equal(c.localStarted(k('free'), one), null, 'nothing in flight: the write goes at once');
  assert.equal(c.copyStarted(k('free')), null, "a client write of the key is on its way: the copy's record is refused");
  const other = c.copyStarted(k('other'));
  assert.notEqual(other, null);
  c.localEnded(k('free'));
  const free = c.copyStarted(k('free'));
  assert.notEqual(free, null, 'the client write was answered: the record goes');
  c.appliesEnded([other!, free!]);

  const ticket = c.copyStarted(k('old'))!;
  const wait = c.localStarted(k('old'), one);
  assert.ok(wait, 'a copy record of the key is in flight: the write must wait');
  let released = false;
  void wait.then(() => (released = true));
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(released, false);
  c.appliesEnded([ticket]);
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(released, true);
  c.localEnded(k('old'));
  assert.deepEqual(repaired, [], 'the order was forced, so nothing needs repair');
  assert.equal(c.localStarted(k('old'), one), null, 'the copy ended: later writes go at once');
  c.localEnded(k('old'));
});

test('a flush holds client writes: it waits for those in flight, and those that come meanwhile wait for it', async () => {
  const c = new Contention(() => {}, 1);
  const tick = () => new Promise((resolve) => setImmediate(resolve));
  assert.equal(c.localStarted(k('before'), one), null);
  let quiet = false;
  void c.holdClientWrites(10_000).then(() => (quiet = true));
  const during = c.localStarted(k('during'), one);
  assert.ok(during, 'a write that comes during the flush waits');
  let released = false;
  void during.then(() => (released = true));
  await tick();
  assert.equal(quiet, false, 'the write sent before is not answered yet');
  c.localEnded(k('before'));
  await tick();
  assert.equal(quiet, true);
  assert.equal(released, false);
  c.releaseClientWrites();
  await tick();
  assert.equal(released, true);
  c.localEnded(k('during'));
  assert.equal(c.localStarted(k('after'), one), null, 'released: writes go at once again');
});

test('a flush waits only so long for writes a stalled memcached does not answer', async () => {
  const c = new Contention(() => {}, 1);
  c.localStarted(k('stuck'), one);
  const started = Date.now();
  await c.holdClientWrites(50);
  assert.ok(Date.now() - started >= 45);
  c.releaseClientWrites();
});
