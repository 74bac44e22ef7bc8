import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Contention } from './contention';

const k = (s: string) => Buffer.from(s);

test('no overlap, no repair', () => {
  const repaired: string[] = [];
  const c = new Contention((key) => repaired.push(key.toString()));
  c.localStarted(k('a'));
  c.localSettled(k('a'));
  c.applyStarted(k('a'));
  c.applySettled(k('a'));
  c.applyStarted(k('b'));
  c.localStarted(k('c'));
  c.applySettled(k('b'));
  c.localSettled(k('c'));
  assert.deepEqual(repaired, []);
});

test('a client write and a record of one key in flight together: one repair once both settled', () => {
  for (const order of [['local', 'apply'], ['apply', 'local']]) {
    const repaired: string[] = [];
    const c = new Contention((key) => repaired.push(key.toString()));
    for (const who of order) (who === 'local' ? c.localStarted(k('x')) : c.applyStarted(k('x')));
    c.localStarted(k('x')); // a second client write, still in flight
    c.applySettled(k('x'));
    c.localSettled(k('x'));
    assert.deepEqual(repaired, []);
    c.localSettled(k('x'));
    assert.deepEqual(repaired, ['x']);
    assert.equal(c.repairs, 1);
  }
});
