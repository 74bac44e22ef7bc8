/**
 * config/alerts.yml, judged by Prometheus' own tool: the file is valid and
 * each alert fires on the series in config/alerts.test.yml that should
 * trigger it, and only on those.
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { promtool } from './support/promtool';

const CONFIG = path.join(__dirname, '..', '..', 'config');

describe('alert rules (config/alerts.yml)', () => {
  it('pass promtool check rules', async () => {
    const { code, output } = await promtool(['check', 'rules', path.join(CONFIG, 'alerts.yml')]);
    assert.equal(code, 0, output);
    assert.doesNotMatch(output, /warning/i, output);
  });

  it('pass their unit tests (promtool test rules config/alerts.test.yml)', async () => {
    const { code, output } = await promtool(['test', 'rules', path.join(CONFIG, 'alerts.test.yml')]);
    assert.equal(code, 0, output);
    assert.match(output, /SUCCESS/);
  });
});
