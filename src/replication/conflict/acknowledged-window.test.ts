import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AcknowledgedWindow } from './acknowledged-window';

test('the conflict maps keep what the peer acknowledged less than a window ago, however old the write', () => {
  const window = new AcknowledgedWindow(1000);
  assert.equal(window.keepFrom(0, 0), Infinity, 'nothing out, nothing acknowledged: by age alone');
  assert.equal(window.keepFrom(0, 5), -Infinity, 'records out and none acknowledged: keep everything');
  window.acknowledged(10_000, 3000); // a write stamped at 3000, acknowledged after a long stall
  assert.equal(window.empty, false);
  assert.equal(window.keepFrom(10_500, 0), -Infinity, 'acknowledged half a window ago: still kept');
  window.acknowledged(10_050, 3500); // within one mark: the mark moves on
  assert.equal(window.keepFrom(11_020, 0), -Infinity, 'a window after its first acknowledgement, not its last');
  assert.equal(window.keepFrom(11_060, 2), 3500, 'a whole window after the last acknowledgement of the mark');
  assert.equal(window.empty, true);
  assert.equal(window.keepFrom(11_060, 0), Infinity);
});
