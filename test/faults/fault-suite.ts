/**
 * Fault-injection suite (`npm run test:faults -- --seconds 600 --seed 42`).
 *
 * A pair under continuous writes from several clients on both nodes while,
 * at random, either memrepl or either memcached is killed with SIGKILL and
 * restarted, the link is cut or stalled through a relay, and garbage is sent
 * to both ports. Afterwards both memcacheds are compared key by key, and
 * against the clients' log of acknowledged writes (checker.ts): every
 * acknowledged write must be there unless a later one or its expiry replaced
 * it, except writes acknowledged by a node less than LOSS_WINDOW_MS before
 * that node's memcached or memrepl was killed (replication is asynchronous:
 * those may be lost, and are counted).
 *
 * Seeded and bounded in time; prints the seed and a summary. The faults and
 * each writer draw from their own seeded stream, so a seed replays the same
 * sequence of faults and writes (their timing still depends on the machine).
 * Every memrepl's log (-v) is kept in a directory printed at the start.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { RawClient } from '../support/client';
import { eventually, freePort, sleep } from '../support/ports';
import { Running, startMemcached, startMemrepl } from '../support/processes';
import { Relay } from '../support/relay';
import { check, type Address, type Attempt, type Kill } from './checker';

const LOSS_WINDOW_MS = 1000;
const KEYS_PER_WRITER = 200;
const WRITERS = 4;
/** 10% of sets expire after this; the rest never do. */
const TTL_SECONDS = 3;

function args(): { seconds: number; seed: number } {
  const get = (name: string, fallback: number) => {
    const at = process.argv.indexOf(`--${name}`);
    return at === -1 ? fallback : Number(process.argv[at + 1]);
  };
  return { seconds: get('seconds', 60), seed: get('seed', Date.now() % 100000) };
}

/** Small seeded PRNG (mulberry32). */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface NodeProcs {
  name: 'a' | 'b';
  memrepl: Running;
  port: number;
  replicationPort: number;
  /** Starts this node's memrepl (again), same ports and flags. */
  startMemrepl(): Promise<Running>;
  /** Where this node's memcached listens (compared at the end). */
  memcached: Address;
  /** kill -9 this node's memcached; resolves once a new one is starting. */
  killMemcached(): Promise<void>;
  stopMemcached(): Promise<void>;
}

/** memrepl's flags on both nodes: verbose for the logs, an unpaced copy so faults land mid-copy. */
function memreplArgs(name: 'a' | 'b', replicationPort: number): string[] {
  return ['-v', '-X', String(replicationPort), '--node-id', name, '--resync-rate', '0'];
}

/** Node A: memrepl in front of a memcached the suite runs (the sidecar layout); the suite restarts it. */
async function sidecarNode(rnd: () => number, replicationPort: number, stateDir: string): Promise<NodeProcs> {
  const nodeArgs = [...memreplArgs('a', replicationPort), '--state-dir', stateDir];
  const mcPort = await freePort();
  let memcached = await startMemcached([], mcPort);
  const port = await freePort();
  const start = () => startMemrepl(mcPort, nodeArgs, port);
  return {
    name: 'a',
    memrepl: await start(),
    port,
    replicationPort,
    startMemrepl: start,
    memcached: mcPort,
    async killMemcached() {
      await memcached.stop('SIGKILL');
      await sleep(200 + rnd() * 800);
      memcached = await startMemcached([], mcPort);
    },
    stopMemcached: async () => void (await memcached.stop()),
  };
}

/**
 * Node B: launcher mode (--spawn-memcached), memcached on a private socket in
 * the node's run dir; memrepl restarts it when killed, and adopts it when
 * memrepl itself was killed.
 */
async function launcherNode(replicationPort: number, peerPort: number, runDir: string): Promise<NodeProcs> {
  const flags = [...memreplArgs('b', replicationPort), '-x', `127.0.0.1:${peerPort}`, '--spawn-memcached', '-m', '64', '--run-dir', runDir];
  const port = await freePort();
  const pidOf = () => Number(fs.readFileSync(path.join(runDir, 'memcached.pid'), 'utf8'));
  // --upstream is ignored in launcher mode (the private socket replaces it).
  const start = () => startMemrepl(1, flags, port);
  return {
    name: 'b',
    memrepl: await start(),
    port,
    replicationPort,
    startMemrepl: start,
    memcached: path.join(runDir, 'memcached.sock'),
    async killMemcached() {
      try {
        process.kill(pidOf(), 'SIGKILL');
      } catch {
        // between two lives (the launcher is restarting it): nothing to kill this time
      }
      await sleep(200);
    },
    async stopMemcached() {
      // memrepl stopped it on SIGTERM; after a SIGKILL of memrepl at the very end it may still run.
      try {
        process.kill(pidOf(), 'SIGKILL');
      } catch {
        // gone already
      }
    },
  };
}

async function main(): Promise<void> {
  const { seconds, seed } = args();
  const rnd = random(seed);
  const logDir = fs.mkdtempSync(path.join(os.tmpdir(), `memrepl-faults-${seed}-`));
  console.log(`fault suite: seed ${seed}, ${seconds} s of faults; memrepl logs in ${logDir}`);

  const [ra, rb] = [await freePort(), await freePort()];
  const relay = new Relay(ra);
  const relayPort = await relay.start();
  const nodes: Record<'a' | 'b', NodeProcs> = {} as never;
  const keepLog = (p: NodeProcs) => fs.appendFileSync(path.join(logDir, `memrepl-${p.name}.log`), `${p.memrepl.output()}\n--- process ended ${new Date().toISOString()}\n`);
  nodes.a = await sidecarNode(rnd, ra, path.join(logDir, 'state-a'));
  nodes.b = await launcherNode(rb, relayPort, path.join(logDir, 'run-b'));

  const log = new Map<string, Attempt[]>();
  const kills: Kill[] = [];
  const timeline: string[] = [];
  const started = Date.now();
  const faults: Record<string, number> = {};
  let acknowledged = 0;
  let stop = false;

  // Writers: each owns its keys, so "the last acknowledged write" of a key is well defined.
  const writer = async (id: number, node: 'a' | 'b') => {
    const draw = random(seed * 31 + id + 1);
    let client: RawClient | null = null;
    let n = 0;
    while (!stop) {
      try {
        client ??= await RawClient.connect(nodes[node].port);
        const key = `w${id}:${Math.floor(draw() * KEYS_PER_WRITER)}`;
        const roll = draw();
        const del = roll < 0.15;
        const ttl = roll > 0.9 ? TTL_SECONDS : 0;
        const value = `${id}.${n++}`;
        // Logged before sending: a write that times out may still have taken effect.
        const attempt: Attempt = { value: del ? null : value, ttl, at: Date.now(), node, acked: false };
        const entries = log.get(key) ?? [];
        entries.push(attempt);
        log.set(key, entries);
        const reply = await client.request(del ? `delete ${key}\r\n` : `set ${key} 0 ${ttl} ${value.length}\r\n${value}\r\n`, '\r\n', 2000);
        if (reply !== 'STORED\r\n' && reply !== 'DELETED\r\n' && reply !== 'NOT_FOUND\r\n') throw new Error(`unexpected reply ${reply.slice(0, 40)}`);
        attempt.acked = true;
        attempt.at = Date.now();
        acknowledged++;
      } catch {
        client?.close();
        client = null;
        await sleep(50);
      }
    }
    client?.close();
  };
  const writers = Array.from({ length: WRITERS }, (_, id) => writer(id, id % 2 === 0 ? 'a' : 'b'));

  const restartProxy = async (p: NodeProcs) => {
    kills.push({ node: p.name, at: Date.now() });
    await p.memrepl.stop('SIGKILL');
    keepLog(p);
    await sleep(200 + rnd() * 800);
    p.memrepl = await p.startMemrepl();
  };
  const restartMemcached = async (p: NodeProcs) => {
    kills.push({ node: p.name, at: Date.now() });
    await p.killMemcached();
  };
  const garbage = async (port: number) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.on('error', () => {});
    socket.write(Buffer.from(Array.from({ length: 500 }, () => Math.floor(rnd() * 256))));
    await sleep(50);
    socket.destroy();
  };
  const actions: Array<[string, () => Promise<void>]> = [
    ['kill -9 memrepl a', () => restartProxy(nodes.a)],
    ['kill -9 memrepl b', () => restartProxy(nodes.b)],
    ['kill -9 memcached a', () => restartMemcached(nodes.a)],
    ['kill -9 memcached b', () => restartMemcached(nodes.b)],
    ['cut link', async () => relay.cutAll()],
    ['stall link', async () => { relay.stall(); await sleep(500 + rnd() * 2000); relay.resume(); }],
    ['garbage on client ports', async () => { await garbage(nodes.a.port); await garbage(nodes.b.port); }],
    ['garbage on replication ports', async () => { await garbage(nodes.a.replicationPort); await garbage(nodes.b.replicationPort); }],
  ];

  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    await sleep(1000 + rnd() * 3000);
    const [name, action] = actions[Math.floor(rnd() * actions.length)];
    faults[name] = (faults[name] ?? 0) + 1;
    timeline.push(`${((Date.now() - started) / 1000).toFixed(1)}s ${name}`);
    await action();
  }
  stop = true;
  await Promise.all(writers);
  const stoppedAt = Date.now();
  relay.resume();

  // Settle: the link is up and both sides have drained what they owe each other.
  const replicationStats = async (p: NodeProcs) => {
    const client = await RawClient.connect(p.port);
    try {
      return await client.request('stats replication\r\n', 'END\r\n');
    } finally {
      client.close();
    }
  };
  const stat = (text: string, name: string) => new RegExp(`STAT ${name} (.*)\r\n`).exec(text)?.[1] ?? '';
  // Settled = quiet for 3 checks in a row, a second apart (a memcached restart is noticed within a second).
  let quietChecks = 0;
  await eventually(async () => {
    await sleep(1000);
    let quiet = true;
    for (const p of [nodes.a, nodes.b]) {
      const text = await replicationStats(p);
      if (stat(text, 'peer_up') !== '1' || stat(text, 'unacked_records') !== '0' || stat(text, 'copy_sending') !== '0' || stat(text, 'copy_receiving') !== '0') quiet = false;
    }
    quietChecks = quiet ? quietChecks + 1 : 0;
    return quietChecks >= 3;
  }, 180_000, 'the pair to settle');

  // Let every value written with a TTL expire on both sides first: memcached's clock ticks once a second, so an
  // item lives between TTL-1 and TTL+1 seconds, and both copies must be past that for the sides to compare equal.
  await sleep(Math.max(0, stoppedAt + (TTL_SECONDS + 2) * 1000 - Date.now()));
  const verdict = await check({ a: nodes.a.memcached, b: nodes.b.memcached }, log, kills, LOSS_WINDOW_MS);
  const failed = verdict.mismatches.length > 0 || verdict.lost.length > 0;
  if (failed) {
    for (const line of verdict.mismatches.slice(0, 5)) console.log(`MISMATCH ${line}`);
    for (const line of verdict.lost.slice(0, 5)) console.log(`LOST ${line}`);
    console.log(`faults: ${timeline.join(', ')}`);
    for (const p of [nodes.a, nodes.b]) console.log(`node ${p.name}: ${(await replicationStats(p)).replace(/\r\n/g, ' ')}`);
  }

  relay.close();
  for (const p of [nodes.a, nodes.b]) {
    await p.memrepl.stop();
    keepLog(p);
    await p.stopMemcached();
  }
  const faultCount = Object.values(faults).reduce((x, y) => x + y, 0);
  console.log(
    `fault suite: seed ${seed}, ${seconds} s: ${acknowledged} writes acknowledged, ${faultCount} faults ${JSON.stringify(faults)}, ` +
      `${verdict.keysCompared} keys compared, ${verdict.mismatches.length} mismatches, ${verdict.lost.length} lost, ` +
      `${verdict.lostInWindow} lost within ${LOSS_WINDOW_MS} ms of a kill (allowed)`,
  );
  if (!failed) fs.rmSync(logDir, { recursive: true, force: true });
  process.exit(failed ? 1 : 0);
}

main().catch((error) => {
  console.error(error);
  process.exit(2);
});
