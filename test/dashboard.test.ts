/**
 * The Grafana dashboard (config/grafana/memrepl.json) and the alert rules
 * against the real thing: Grafana cannot run here, but Prometheus can. A real
 * Prometheus, configured from config/prometheus.yml with its targets pointed
 * at a real pair under a little load, must parse every panel's query (Grafana
 * variables substituted as Grafana would) and answer each with at least one
 * series; it must evaluate every alert rule without error, and none may fire
 * on that healthy pair.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import YAML from 'yaml';
import { clientLoops } from './support/client';
import { eventually, sleep } from './support/ports';
import { Node, startPair, stopAll } from './support/processes';
import { startPrometheus, type PrometheusServer } from './support/prometheus';
import { lintMetrics } from './support/promtool';
import { linked } from './support/replication';

const CONFIG = path.join(__dirname, '..', '..', 'config');
const dashboard = JSON.parse(fs.readFileSync(path.join(CONFIG, 'grafana', 'memrepl.json'), 'utf8')) as Dashboard;

interface Dashboard {
  panels: Array<{ title: string; type: string; targets?: Array<{ expr: string; refId: string }> }>;
  templating: { list: Array<{ name: string; type: string; query: string | { query: string } }> };
}

/** Scrapes every this often: $__rate_interval below must cover several scrapes. */
const SCRAPE_INTERVAL = '1s';
/** What Grafana gives $__rate_interval for a 1 s scrape interval on a short time range (4 scrape intervals or more). */
const RATE_INTERVAL = '10s';

/** config/prometheus.yml with its two memrepl targets replaced by the pair's metrics ports, scraping every second. */
function prometheusConfig(a: Node, b: Node): string {
  const config = YAML.parse(fs.readFileSync(path.join(CONFIG, 'prometheus.yml'), 'utf8'));
  config.global = { ...config.global, scrape_interval: SCRAPE_INTERVAL, evaluation_interval: SCRAPE_INTERVAL };
  config.rule_files = (config.rule_files as string[]).map((file) => path.join(CONFIG, file));
  const job = (config.scrape_configs as Array<{ job_name: string; static_configs: Array<{ targets: string[]; labels: Record<string, string> }> }>).find(
    (scrape) => scrape.job_name === 'memrepl',
  );
  assert.ok(job, 'config/prometheus.yml has a memrepl job');
  assert.equal(job.static_configs.length, 2, 'config/prometheus.yml scrapes the two nodes of a pair');
  job.static_configs.forEach((target, i) => (target.targets = [`127.0.0.1:${[a, b][i].metricsPort}`]));
  return YAML.stringify(config);
}

/** A query with Grafana's variables replaced by what Grafana sends for `values`. */
function substitute(expr: string, values: Record<string, string>): string {
  const done = expr.replace(/\$(\w+)|\$\{(\w+)\}/g, (whole, plain?: string, braced?: string) => {
    const name = plain ?? braced!;
    if (name === '__rate_interval') return RATE_INTERVAL;
    if (name in values) return values[name];
    throw new Error(`unknown dashboard variable ${whole} in ${expr}`);
  });
  return done;
}

function panelQueries(): Array<{ where: string; expr: string }> {
  return dashboard.panels.flatMap((panel) => (panel.targets ?? []).map((target) => ({ where: `panel "${panel.title}" ${target.refId}`, expr: target.expr })));
}

/** Metric names a PromQL expression or rule file mentions (ours and Node's; `up` is Prometheus'). */
function metricNames(text: string): string[] {
  return [...new Set([...text.matchAll(/\b(?:memrepl|process|nodejs)_[a-z0-9_]+/g)].map((m) => m[0].replace(/_(bucket|sum|count)$/, '')))];
}

/** Writes, hits, misses and deletes on both nodes until stopped: enough for every rate and histogram. */
function startLoad(nodes: Node[]): { stop(): Promise<number> } {
  return clientLoops(
    nodes.map((node) => node.memrepl.port),
    async (client, n, i) => {
      const key = `load-${n}-${i % 50}`;
      await client.request(`set ${key} 0 0 5\r\nvalue\r\n`);
      await client.request(`get ${key}\r\n`, 'END\r\n');
      await client.request(`get absent-${i}\r\n`, 'END\r\n');
      if (i % 5 === 0) await client.request(`delete ${key}\r\n`);
      await sleep(20);
    },
  );
}

describe('dashboard and alerts against a real Prometheus scraping a real pair', () => {
  let a: Node;
  let b: Node;
  let prometheus: PrometheusServer;
  let load: { stop(): Promise<number> };
  before(async () => {
    [a, b] = await startPair();
    await linked(a, b);
    load = startLoad([a, b]);
    prometheus = await startPrometheus(prometheusConfig(a, b));
  });
  after(async () => {
    await load?.stop();
    await prometheus?.stop();
    await stopAll(a, b);
  });

  it("every node's scrape passes promtool check metrics, and names every metric the dashboard and alerts use", async () => {
    const names = metricNames(
      panelQueries()
        .map((q) => q.expr)
        .join('\n') + fs.readFileSync(path.join(CONFIG, 'alerts.yml'), 'utf8'),
    );
    for (const node of [a, b]) {
      const scrape = await (await fetch(`http://127.0.0.1:${node.metricsPort}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
      assert.equal(await lintMetrics(scrape), '');
      const exported = new Set([...scrape.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]));
      assert.deepEqual(
        names.filter((name) => !exported.has(name)),
        [],
        'metrics used but not exported',
      );
    }
  });

  it("the dashboard's variables list the pair and its nodes", async () => {
    const variables = dashboard.templating.list.filter((variable) => variable.type === 'query');
    assert.deepEqual(
      variables.map((v) => v.name),
      ['pair', 'node'],
    );
    const expected: Record<string, string[]> = { pair: ['pair-1'], node: ['node-a', 'node-b'] };
    for (const variable of variables) {
      const query = typeof variable.query === 'string' ? variable.query : variable.query.query;
      const [, match, label] = /^label_values\((.+), (\w+)\)$/.exec(query) ?? [];
      assert.ok(match, `${variable.name}: ${query} is label_values(selector, label)`);
      let values: string[] = [];
      const listed = async () => {
        values = await prometheus.api<string[]>(`label/${label}/values`, { 'match[]': substitute(match, { pair: '.*' }) });
        return values.length === expected[variable.name].length;
      };
      await eventually(listed, 20000, () => `${variable.name}: ${expected[variable.name]} (listed: ${values})`); // after the first scrapes
      assert.deepEqual(values, expected[variable.name], variable.name);
    }
  });

  it('every panel query parses and returns at least one series, for all nodes and for one', async () => {
    const queries = panelQueries().flatMap(({ where, expr }) => [
      { where: `${where} (all)`, expr: substitute(expr, { pair: '.*', node: '.*' }) },
      { where: `${where} (node-b)`, expr: substitute(expr, { pair: 'pair-1', node: 'node-b' }) },
    ]);
    assert.ok(queries.length >= 40, `${queries.length} queries`);
    // A rate needs two scrapes in its window, the lag histogram an acknowledged write: wait for them, bounded.
    let empty = queries;
    await eventually(
      async () => {
        const answers = await Promise.all(empty.map(async (q) => ((await prometheus.query(q.expr)).length > 0 ? null : q)));
        empty = answers.filter((q) => q !== null);
        return empty.length === 0;
      },
      45000,
      () => `series for: ${empty.map((q) => `${q.where}: ${q.expr}`).join('\n')}`,
    );
  });

  it('Prometheus evaluates every alert rule without error, and none fires on the healthy pair', async () => {
    const rules = YAML.parse(fs.readFileSync(path.join(CONFIG, 'alerts.yml'), 'utf8')).groups.flatMap((group: { rules: unknown[] }) => group.rules);
    type Rule = { name: string; health: string; lastError?: string; lastEvaluation: string };
    let loaded: Rule[] = [];
    const evaluated = (rule: Rule) => !rule.lastEvaluation.startsWith('0001-');
    await eventually(
      async () => {
        const data = await prometheus.api<{ groups: Array<{ rules: Rule[] }> }>('rules');
        loaded = data.groups.flatMap((group) => group.rules);
        return loaded.length === rules.length && loaded.every(evaluated);
      },
      20000,
      () => `every rule evaluated (${loaded.filter(evaluated).length} of ${rules.length})`,
    );
    for (const rule of loaded) assert.equal(rule.health, 'ok', `${rule.name}: ${rule.lastError}`);
    let alerts: Array<{ metric: Record<string, string> }> = [];
    await eventually(
      async () => (alerts = await prometheus.query('ALERTS')).length === 0,
      20000,
      () => `no alert, but: ${JSON.stringify(alerts.map((x) => x.metric))}`,
    );
  });
});
