/**
 * Fault-injection suite (`npm run test:faults -- --seconds 60 --seed 42
 * [--workload LIST] [--faults LIST]`, see options.ts and README "Faults").
 *
 * A pair under clients on both nodes that use every write command of every
 * protocol (writers.ts, workloads.ts) and readers (readers.ts), while, at
 * random, memrepl or memcached is killed with SIGKILL and restarted,
 * memcached is stopped with SIGSTOP, the link is cut or stalled (beyond the
 * conflict window, too) through a relay, garbage is sent to both ports and a
 * hostile peer connects to a replication port (faults.ts). Afterwards both
 * memcacheds are compared key by key and each key against what its clients
 * were told (checker.ts states the rules).
 *
 * Seeded and bounded in time; prints the seed, the faults and a summary per
 * key class. The faults and each writer draw from their own seeded stream,
 * so a seed replays the same sequence of faults and writes (their timing
 * still depends on the machine). Every memrepl's log (-v) is kept in a
 * directory printed at the start when a run fails. Exit code 0: nothing
 * found; 1: mismatches or findings; 2: the suite itself failed.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { freePort, sleep } from '../support/ports';
import type { Running } from '../support/processes';
import { Relay } from '../support/relay';
import { check, type Verdict } from './checker';
import { FAULTS, type FaultContext, faultActions, resume, SHORT_CONFLICT_WINDOW_MS } from './faults';
import { History, type NodeName } from './history';
import { DELAYED_FLUSH_SLACK_MS, LATE_MS } from './model';
import { parseOptions, type SuiteOptions, UsageError, WORKLOADS } from './options';
import { launcherNode, type NodeProcs, replicationStats, settle, sidecarNode } from './pair';
import { random, streamSeed } from './random';
import { reader } from './readers';
import { disconnectWriter, flushWriter, noreplyCloseWriter, sharedKeys, sharedWriter } from './workloads';
import { CLASSIC_TTL_SECONDS, classicWriter, keysFor, PLANNERS, singleWriter, type WorkloadContext } from './writers';

const LOSS_WINDOW_MS = 1000;
/** Longest short TTL any writer sets (writers.ts drawTtl), plus memcached's tick. */
const SHORT_TTL_DONE_MS = (Math.max(CLASSIC_TTL_SECONDS, 4) + 3) * 1000;
const SETTLE_TIMEOUT_MS = 120_000;
const NODES: NodeName[] = ['a', 'b'];

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2));
  const { seconds, seed } = options;
  const rnd = random(seed);
  const logDir = fs.mkdtempSync(path.join(os.tmpdir(), `memrepl-faults-${seed}-`));
  const describe = (set: Set<string>, all: readonly string[]) => (set.size === all.length ? 'all' : [...set].join(',') || 'none');
  console.log(
    `fault suite: seed ${seed}, ${seconds} s of faults, workload ${describe(options.workload, WORKLOADS)}, faults ${describe(options.faults, FAULTS)}; memrepl logs in ${logDir}`,
  );

  // A stall longer than the conflict window must fit in a bounded run: shorten the window (a hidden memrepl flag).
  const extra = options.faults.has('long-stall') ? ['--conflict-window', String(SHORT_CONFLICT_WINDOW_MS / 1000)] : [];
  const history = new History();
  const started = Date.now();
  // This process relays the link (and runs every client): if its own event loop stands still, the pair's link does
  // too, and a finding may be the harness's. Seed 41, 600 s, session 16: a 909 MB history near the default 4 GiB heap
  // stalled it for 15-20 s at a time, and the pair "did not settle" with a relay that moved nothing.
  const harnessStalls = monitorEventLoopDelay({ resolution: 20 });
  harnessStalls.enable();
  const [ra, rb] = [await freePort(), await freePort()];
  const relay = new Relay(ra);
  const relayPort = await relay.start();
  const nodes = {
    a: await sidecarNode(rnd, ra, path.join(logDir, 'state-a'), extra),
    b: await launcherNode(rb, relayPort, path.join(logDir, 'run-b'), extra),
  } as Record<NodeName, NodeProcs>;
  const keepLog = (p: NodeProcs) =>
    fs.appendFileSync(path.join(logDir, `memrepl-${p.name}.log`), `${p.memrepl.timedOutput(started)}\n--- process ended ${new Date().toISOString()}\n`);

  // Crash watch: a memrepl that exits without being told to is a finding; it is restarted so the run goes on.
  const expectedExits = new Set<Running>();
  const restarts: Array<Promise<void>> = [];
  let finishing = false;
  const watch = (p: NodeProcs) => {
    const proc = p.memrepl;
    proc.child.once('exit', (code, signal) => {
      if (expectedExits.has(proc) || finishing) return;
      const tail = proc.output().trim().split('\n').slice(-5).join(' | ');
      history.find('crash', `memrepl ${p.name} exited by itself (code ${code}, signal ${signal}) at ${((Date.now() - started) / 1000).toFixed(1)}s: ${tail}`);
      keepLog(p);
      restarts.push(
        (async () => {
          await sleep(500);
          p.memrepl = await p.startMemrepl();
          watch(p);
        })().catch((error: Error) => history.find('crash', `memrepl ${p.name} could not be restarted: ${error.message}`)),
      );
    });
  };
  for (const p of Object.values(nodes)) watch(p);

  const stopped = new Set<number>();
  process.on('exit', () => {
    for (const pid of stopped) resume(stopped, pid);
  });
  const faultContext: FaultContext = {
    nodes,
    relay,
    rnd,
    history,
    aftermaths: [],
    stopped,
    async restartMemrepl(p) {
      expectedExits.add(p.memrepl);
      await p.memrepl.stop('SIGKILL');
      keepLog(p);
      await sleep(200 + rnd() * 800);
      p.memrepl = await p.startMemrepl();
      watch(p);
    },
  };

  let running = true;
  const ctx: WorkloadContext = { history, seed, port: (node) => nodes[node].port, running: () => running };
  const workloads = startWorkloads(ctx, options);

  const timeline: string[] = [];
  const faults: Record<string, number> = {};
  const actions = faultActions(faultContext, options.faults);
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    await sleep(1000 + rnd() * 3000);
    if (actions.length === 0) continue;
    const [name, action] = actions[Math.floor(rnd() * actions.length)];
    faults[name] = (faults[name] ?? 0) + 1;
    const at = `${((Date.now() - started) / 1000).toFixed(1)}s`;
    timeline.push(`${at} ${(await action()) ?? name}`);
  }
  running = false;
  await Promise.all(workloads);
  const stoppedAt = Date.now();
  relay.resume();
  for (const pid of [...stopped]) resume(stopped, pid);
  await Promise.all(restarts);

  // Settle: the link is up and both sides have drained what they owe each other, 3 checks in a row a second apart.
  const settledAt = await settle(Object.values(nodes), SETTLE_TIMEOUT_MS);
  if (settledAt === null) {
    history.find('settle', `the pair did not settle within ${SETTLE_TIMEOUT_MS / 1000} s after the faults stopped (${harnessHealth()})`);
  }
  // What the pair lived through; the check after it is long synchronous work on purpose.
  const whileRunning = harnessHealth();
  await Promise.all(faultContext.aftermaths);
  // Let every short TTL expire on both sides, and every flush's moment pass (the model's view of "now" must be past them).
  const flushesDone = Math.max(0, ...history.flushes.map((f) => (f.acked ? f.at : f.sentAt + LATE_MS) + f.delay * 1000 + DELAYED_FLUSH_SLACK_MS));
  await sleep(Math.max(stoppedAt + SHORT_TTL_DONE_MS, flushesDone + 1000) - Date.now());
  const verdict = await check({ a: nodes.a.memcached, b: nodes.b.memcached }, history, { lossWindowMs: LOSS_WINDOW_MS, origin: started });
  const failed = report(verdict, history, options, timeline);
  if (failed) {
    for (const p of Object.values(nodes)) {
      const stats = await replicationStats(p).catch((e: Error) => new Map([['error', e.message]]));
      console.log(`node ${p.name}: ${[...stats].map(([k, v]) => `${k}=${v}`).join(' ')}`);
    }
  }

  finishing = true;
  relay.close();
  for (const p of Object.values(nodes)) {
    await p.memrepl.stop();
    keepLog(p);
    await p.stopMemcached();
  }
  const faultCount = Object.values(faults).reduce((x, y) => x + y, 0);
  console.log(
    `fault suite: seed ${seed}, ${seconds} s: ${history.acknowledged} writes acknowledged, ${faultCount} faults ${JSON.stringify(faults)}, ` +
      `${verdict.keysCompared} keys compared, ${verdict.mismatches.length} mismatches, ${verdict.lost.length} lost, ` +
      `${verdict.lostInWindow} lost within ${LOSS_WINDOW_MS} ms of a kill (allowed), ${history.findings.length} other findings; until the pair settled, ${whileRunning}`,
  );
  if (!failed && !options.keepLogs) fs.rmSync(logDir, { recursive: true, force: true });
  else console.log(`logs kept in ${logDir} (mismatches.txt has every line, history.json every write)`);
  process.exit(failed ? 1 : 0);

  /** How this process fared: its longest event-loop stall (its relay carries the link) and its heap. */
  function harnessHealth(): string {
    const heapMiB = process.memoryUsage().heapUsed / 1048576;
    return `the suite's own event loop stalled up to ${(harnessStalls.max / 1e9).toFixed(1)} s, heap ${heapMiB.toFixed(0)} MiB`;
  }

  function report(v: Verdict, h: History, o: SuiteOptions, faultsTimeline: string[]): boolean {
    const lines = [
      ...v.mismatches.map((l) => `MISMATCH ${l}`),
      ...v.lost.map((l) => `LOST ${l}`),
      ...h.findings.map((f) => `FINDING [${f.category}] ${f.text}`),
    ];
    console.log('key class              keys  mismatches  lost  lost-in-window(allowed)  indeterminate');
    for (const [cls, t] of [...v.byClass].sort()) {
      console.log(
        `${cls.padEnd(22)} ${String(t.keys).padStart(5)}  ${String(t.mismatches).padStart(10)}  ${String(t.lost).padStart(4)}  ${String(t.lostInWindow).padStart(23)}  ${String(t.indeterminate).padStart(13)}`,
      );
    }
    for (const [category, odd] of h.oddReplies) console.log(`odd replies [${category}]: ${odd.count}, e.g. ${odd.examples.join(' || ')}`);
    console.log(`faults: ${faultsTimeline.join(', ')}`);
    if (lines.length === 0 && !o.keepLogs) return false;
    fs.writeFileSync(path.join(logDir, 'mismatches.txt'), `${lines.join('\n')}\n`);
    // Everything the model saw, to replay a key by hand (node -e "require('dist/test/faults/model')...").
    const replacer = (_: string, value: unknown) => (typeof value === 'bigint' ? `${value}n` : value);
    // One JSON document written a key at a time: a long run's history is larger than V8's longest string.
    const out = fs.openSync(path.join(logDir, 'history.json'), 'w');
    try {
      fs.writeSync(
        out,
        `{"origin":${started},"flushes":${JSON.stringify(h.flushes, replacer)},"kills":${JSON.stringify(h.kills, replacer)},"copyWindows":${JSON.stringify(h.copyWindows, replacer)},"stops":${JSON.stringify(h.stops)},"attempts":{`,
      );
      let first = true;
      for (const [key, attempts] of h.attempts) {
        fs.writeSync(out, `${first ? '' : ','}\n${JSON.stringify(key)}:${JSON.stringify(attempts, replacer)}`);
        first = false;
      }
      fs.writeSync(out, '}}\n');
    } finally {
      fs.closeSync(out);
    }
    // The first few of each kind and class, so one noisy class does not hide the others.
    const shown = new Map<string, number>();
    for (const line of lines) {
      const kind = /^(\w+) \[([^\]]+)\]/.exec(line)?.slice(1).join(' ') ?? line.slice(0, 20);
      const n = shown.get(kind) ?? 0;
      shown.set(kind, n + 1);
      if (n < 3) console.log(line);
    }
    const at = (t: number) => `${((t - started) / 1000).toFixed(2)}s`;
    if (h.flushes.length > 0)
      console.log(`flushes: ${h.flushes.map((f) => `${at(f.sentAt)} ${f.node} ${f.via} ${f.acked ? `acked ${at(f.at)}` : 'no reply'}`).join(', ')}`);
    if (h.kills.length > 0)
      console.log(
        `kills: ${h.kills.map((k) => `${at(k.at)} ${k.what} ${k.node} (settled ${Number.isFinite(k.settledAt) ? at(k.settledAt) : 'never'})`).join(', ')}`,
      );
    console.log(`workload ${[...o.workload].join(',')}; faults ${[...o.faults].join(',')}`);
    return lines.length > 0;
  }
}

/** Starts every enabled workload part; resolves when they have all stopped. */
function startWorkloads(ctx: WorkloadContext, options: SuiteOptions): Array<Promise<void>> {
  const w = options.workload;
  const out: Array<Promise<void>> = [];
  if (w.has('set')) for (let id = 0; id < 4; id++) out.push(classicWriter(ctx, id));
  for (const category of ['store', 'append', 'touch', 'meta', 'binary'] as const) {
    if (!w.has(category)) continue;
    for (const node of NODES) {
      const name = `${category}/${node}`;
      const draw = random(streamSeed(ctx.seed, `${name}/keys`));
      const keys = keysFor(
        category,
        node,
        80,
        { binary: category === 'meta' || category === 'binary', counters: category === 'store' || category === 'touch' ? 0 : 0.25 },
        draw,
      );
      out.push(singleWriter(ctx, { category, name, node, keys, planner: PLANNERS[category] }));
    }
  }
  if (w.has('flush')) out.push(flushWriter(ctx));
  if (w.has('noreply-close')) for (const node of NODES) out.push(noreplyCloseWriter(ctx, node));
  if (w.has('disconnect')) for (const node of NODES) out.push(disconnectWriter(ctx, node));
  if (w.has('shared')) {
    const keys = sharedKeys(ctx.seed);
    for (const node of NODES) for (const i of [0, 1]) out.push(sharedWriter(ctx, node, i, keys));
  }
  if (w.has('readers')) {
    let hot: string[] = [];
    const keys = () => (hot.length > 0 ? hot : (hot = [...ctx.history.owners.keys(), ...ctx.history.shared.keys()]));
    for (const node of NODES) out.push(reader(ctx, node, keys));
  }
  return out;
}

main().catch((error) => {
  console.error(error instanceof UsageError ? `fault suite: ${error.message}` : error);
  process.exit(2);
});
