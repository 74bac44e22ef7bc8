import assert from 'node:assert/strict';
import { test } from 'node:test';
import { HistoryKeeping } from './history-keeping';
import { RecentWrites } from './recent-writes';

const stamp = (wall: number) => ({ wall, logical: 0, nodeId: 'a' });

test('entries forced out while held count as overflowed while held; the next hold starts counting again', () => {
  const values = new RecentWrites({ windowMs: 1000, maxEntries: 2 });
  const touches = new RecentWrites({ windowMs: 1000, maxEntries: 2 });
  const keeping = new HistoryKeeping([values, touches], 1000);
  keeping.hold(true);
  values.note(Buffer.from('k1'), stamp(1));
  values.note(Buffer.from('k2'), stamp(2));
  assert.equal(keeping.overflowedWhileHeld, false);
  touches.note(Buffer.from('k1'), stamp(1));
  touches.note(Buffer.from('k2'), stamp(2));
  touches.note(Buffer.from('k3'), stamp(3));
  assert.equal(keeping.overflowed, 1, 'the two maps are counted together');
  assert.equal(keeping.overflowedWhileHeld, true);
  keeping.hold(false);
  keeping.hold(true);
  assert.equal(keeping.overflowedWhileHeld, false, 'counted from the new hold');
});

test('held, the maps forget nothing for its age; released, they forget what was acknowledged a window ago', () => {
  const values = new RecentWrites({ windowMs: 1000, maxEntries: 100 });
  const keeping = new HistoryKeeping([values], 1000);
  keeping.hold(true);
  values.note(Buffer.from('old'), stamp(1));
  keeping.acknowledged(10_000, 5, 0);
  keeping.acknowledged(20_000, 10_000, 0); // the first acknowledgement is now a window old
  values.note(Buffer.from('new'), stamp(20_000));
  assert.ok(values.lastWriteOf(Buffer.from('old')), 'held: kept');
  keeping.hold(false);
  assert.equal(values.lastWriteOf(Buffer.from('old')), undefined, 'released: forgotten');
  assert.ok(values.lastWriteOf(Buffer.from('new')), 'not acknowledged a window ago: kept');
});
