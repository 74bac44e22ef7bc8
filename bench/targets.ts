/**
 * What the bench points its load at: memcached alone, twemproxy (nutcracker)
 * in front of memcached, memrepl in front of memcached, a replicated memrepl
 * pair, and (when REPCACHED_BIN names a build) a repcached pair, the patched
 * memcached that memrepl replaces. Each target gets fresh processes on fresh
 * loopback ports so one run's cache contents or memory growth do not leak
 * into the next.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { McConnection, withTimeout } from './mc-client';
import { freePort, Proc, sleep, spawnTracked, waitForPort } from './procs';

/** dist/bench/targets.js → dist/src/cli.js */
export const MEMREPL_CLI = path.join(__dirname, '..', 'src', 'cli.js');

/** node's options for memrepl, from the first line of cli.js (see src/cli.ts): the bench runs memrepl as the `memrepl` command does. */
export function memreplNodeOptions(): string[] {
  const first = fs.readFileSync(MEMREPL_CLI, 'utf8').split('\n', 1)[0];
  const options = /^#!\/usr\/bin\/env -S node\b(.*)$/.exec(first);
  if (!options) throw new Error(`${MEMREPL_CLI}: its first line is not "#!/usr/bin/env -S node ...": ${first}`);
  return options[1].split(' ').filter((option) => option !== '');
}

/** Enough memory that memcaslap's key windows never evict (gets must hit). */
const MEMCACHED_MEMORY_MB = 1024;

export interface Role {
  role: string;
  proc: Proc;
}

export interface Target {
  /** Where the load goes. */
  clientPort: number;
  /** Every process of this target, for peak RSS and for stopping. */
  roles: Role[];
  /** Node A's metrics port when the target is memrepl. */
  metricsPort?: number;
  /** For the replicated pairs: B's memcached, to watch records arrive. */
  peerMemcachedPort?: number;
  /** For the replicated pairs: A's memcached (the one behind clientPort), for its stats. */
  memcachedPort?: number;
}

export async function stopTarget(target: Target): Promise<void> {
  // Proxies first, so they do not log a storm of upstream errors while memcached goes away.
  const proxies = target.roles.filter((r) => !r.role.startsWith('memcached'));
  await Promise.all(proxies.map((r) => r.proc.stop()));
  await Promise.all(target.roles.map((r) => r.proc.stop()));
}

/** Peak RSS per process, read while they still run (VmHWM vanishes with the process). */
export function peakRss(target: Target): Array<{ role: string; kib: number | null }> {
  return target.roles.map((r) => ({ role: r.role, kib: r.proc.peakRssKiB() }));
}

export async function startMemcached(name = 'memcached'): Promise<{ port: number; proc: Proc }> {
  const port = await freePort();
  // memcached refuses to run as root without -u.
  const user = process.getuid?.() === 0 ? ['-u', 'root'] : [];
  const proc = spawnTracked(name, 'memcached', ['-l', '127.0.0.1', '-p', String(port), '-U', '0', '-m', String(MEMCACHED_MEMORY_MB), ...user]);
  await waitForPort(proc, port);
  return { port, proc };
}

export async function memcachedDirect(): Promise<Target> {
  const mc = await startMemcached();
  return { clientPort: mc.port, roles: [{ role: 'memcached', proc: mc.proc }] };
}

export async function twemproxy(workDir: string): Promise<Target> {
  const mc = await startMemcached();
  const port = await freePort();
  const statsPort = await freePort();
  const conf = path.join(workDir, `nutcracker-${port}.yml`);
  // One pool, one server; preconnect so the first requests do not pay for the
  // connection, and never eject the only server.
  fs.writeFileSync(
    conf,
    [
      'bench:',
      `  listen: 127.0.0.1:${port}`,
      '  hash: fnv1a_64',
      '  distribution: ketama',
      '  timeout: 2000',
      '  preconnect: true',
      '  auto_eject_hosts: false',
      '  servers:',
      `    - 127.0.0.1:${mc.port}:1`,
      '',
    ].join('\n'),
  );
  // Its stats port binds 0.0.0.0:22222 by default: keep it on loopback and free.
  const proc = spawnTracked('nutcracker', 'nutcracker', [
    '-c',
    conf,
    '-s',
    String(statsPort),
    '-a',
    '127.0.0.1',
    '-o',
    path.join(workDir, `nutcracker-${port}.log`),
  ]);
  const target: Target = {
    clientPort: port,
    roles: [
      { role: 'memcached', proc: mc.proc },
      { role: 'nutcracker', proc },
    ],
  };
  try {
    await waitForPort(proc, port);
  } catch (error) {
    await stopTarget(target);
    throw error;
  }
  return target;
}

export interface MemreplOptions {
  name: string;
  upstreamPort: number;
  extraArgs?: string[];
  /** Options for node itself (e.g. --cpu-prof), before the script. */
  nodeArgs?: string[];
}

export async function startMemrepl(opts: MemreplOptions): Promise<{ port: number; metricsPort: number; proc: Proc }> {
  const port = await freePort();
  const metricsPort = await freePort();
  const proc = spawnTracked(opts.name, process.execPath, [
    ...memreplNodeOptions(),
    ...(opts.nodeArgs ?? []),
    MEMREPL_CLI,
    '-l',
    '127.0.0.1',
    '-p',
    String(port),
    '--upstream',
    `127.0.0.1:${opts.upstreamPort}`,
    '--metrics-port',
    String(metricsPort),
    '--metrics-listen',
    '127.0.0.1',
    ...(opts.extraArgs ?? []),
  ]);
  await waitForPort(proc, port);
  return { port, metricsPort, proc };
}

export async function memrepl(): Promise<Target> {
  const mc = await startMemcached();
  const target: Target = { clientPort: 0, roles: [{ role: 'memcached', proc: mc.proc }] };
  try {
    // -X 0: replication off, a plain proxy (it would otherwise listen on the fixed port 11212).
    const node = await startMemrepl({ name: 'memrepl', upstreamPort: mc.port, extraArgs: ['-X', '0'] });
    target.roles.push({ role: 'memrepl', proc: node.proc });
    target.clientPort = node.port;
    target.metricsPort = node.metricsPort;
  } catch (error) {
    await stopTarget(target);
    throw error;
  }
  return target;
}

/**
 * Two memcached, two memrepl: A accepts on its replication port, B dials A
 * (repcached's -x). Load goes to A; A's writes flow to B. Throws with the
 * reason when replication does not work (flags unknown, link never up,
 * records never arrive), so the caller can report "not available".
 */
export async function replicatedPair(): Promise<Target> {
  const target: Target = { clientPort: 0, roles: [] };
  try {
    const mcA = await startMemcached('memcached-a');
    target.roles.push({ role: 'memcached-a', proc: mcA.proc });
    const mcB = await startMemcached('memcached-b');
    target.roles.push({ role: 'memcached-b', proc: mcB.proc });
    const replA = await freePort();
    const replB = await freePort();
    const common = ['--cluster', 'bench'];
    const a = await startMemrepl({ name: 'memrepl-a', upstreamPort: mcA.port, extraArgs: ['-X', String(replA), '--node-id', 'a', ...common] });
    target.roles.push({ role: 'memrepl-a', proc: a.proc });
    const b = await startMemrepl({
      name: 'memrepl-b',
      upstreamPort: mcB.port,
      extraArgs: ['-x', `127.0.0.1:${replA}`, '-X', String(replB), '--node-id', 'b', ...common],
    });
    target.roles.push({ role: 'memrepl-b', proc: b.proc });
    target.clientPort = a.port;
    target.metricsPort = a.metricsPort;
    target.peerMemcachedPort = mcB.port;
    target.memcachedPort = mcA.port;
    await checkReplication(a.port, mcB.port, 15000);
  } catch (error) {
    await stopTarget(target);
    throw error;
  }
  return target;
}

/**
 * Two repcached 2.3.1 processes (memcached 1.4.13 with the replication patch)
 * replicating to each other on loopback. repcached uses -X both as the port
 * it listens on for its peer and as the port it dials: a node started with
 * `-x <peer>` connects to <peer>:<-X>, and only when that fails listens on -X
 * itself; a listening node stops listening once its peer is connected
 * (memcached.c: replication_init, conn_rep_listen). So on one host both get
 * the same -X: A listens on it, B dials it, and no second port is needed.
 * Load goes to A, like the memrepl pair; replication is master/master over
 * that one connection. Throws when the pair does not replicate.
 */
export async function repcachedPair(bin: string): Promise<Target> {
  const target: Target = { clientPort: 0, roles: [] };
  try {
    const user = process.getuid?.() === 0 ? ['-u', 'root'] : [];
    const common = ['-l', '127.0.0.1', '-U', '0', '-m', String(MEMCACHED_MEMORY_MB), ...user];
    const portA = await freePort();
    const portB = await freePort();
    const replPort = await freePort();
    const a = spawnTracked('repcached-a', bin, [...common, '-p', String(portA), '-X', String(replPort)]);
    target.roles.push({ role: 'repcached-a', proc: a });
    // A opens its client port after its replication listener, so B finds A listening.
    await waitForPort(a, portA);
    const b = spawnTracked('repcached-b', bin, [...common, '-p', String(portB), '-x', '127.0.0.1', '-X', String(replPort)]);
    target.roles.push({ role: 'repcached-b', proc: b });
    await waitForPort(b, portB);
    target.clientPort = portA;
    target.memcachedPort = portA;
    target.peerMemcachedPort = portB;
    await checkReplication(portA, portB, 15000);
  } catch (error) {
    await stopTarget(target);
    throw error;
  }
  return target;
}

/** A write through A must show up in B's memcached (read directly, not via B's proxy). */
export async function checkReplication(clientPort: number, peerMemcachedPort: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const key = `memrepl-bench-probe-${process.pid}-${Date.now()}`;
  const value = `probe-${Math.random().toString(36).slice(2)}`;
  const client = await McConnection.connect(clientPort);
  const peer = await McConnection.connect(peerMemcachedPort);
  try {
    // B may still be dialling A: keep writing until the link is up and a record arrives.
    while (Date.now() < deadline) {
      const stored = await withTimeout(client.set(key, value), 2000, 'probe set');
      if (stored.kind !== 'line' || stored.line !== 'STORED') throw new Error(`probe set answered ${JSON.stringify(stored)}`);
      const until = Math.min(deadline, Date.now() + 1000);
      while (Date.now() < until) {
        const got = await withTimeout(peer.get(key), 2000, 'probe get');
        if (got.kind === 'value' && got.data.toString() === value) return;
        await sleep(20);
      }
    }
    throw new Error(`a write through node A did not reach node B's memcached within ${timeoutMs} ms (replication not working yet?)`);
  } finally {
    client.close();
    peer.close();
  }
}
