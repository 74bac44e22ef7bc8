/**
 * The README proves the fault suite catches loss by breaking replication on
 * purpose with test/faults/drop-every-100th-record.patch: the patch must keep
 * applying to the code as it changes.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { it } from 'node:test';

const ROOT = path.join(__dirname, '..', '..', '..');

it('the sabotage patch the README gives still applies (git apply --check)', () => {
  const run = spawnSync('git', ['apply', '--check', path.join('test', 'faults', 'drop-every-100th-record.patch')], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 10_000,
  });
  assert.equal(run.status, 0, run.stderr);
});
