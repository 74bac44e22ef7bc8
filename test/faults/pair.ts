/**
 * The fault suite's pair: node A is memrepl in front of a memcached the suite
 * runs (the sidecar layout), node B runs in launcher mode and restarts its
 * own memcached. B dials A through a relay the suite can cut and stall.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { RawClient } from '../support/client';
import { freePort, sleep } from '../support/ports';
import { type Running, startMemcached, startMemrepl } from '../support/processes';
import type { Address } from './checker';
import type { NodeName } from './history';

export interface NodeProcs {
  name: NodeName;
  memrepl: Running;
  port: number;
  replicationPort: number;
  /** Starts this node's memrepl (again), same ports and flags. */
  startMemrepl(): Promise<Running>;
  /** Where this node's memcached listens (compared at the end). */
  memcached: Address;
  /** The pid of this node's memcached now, or null between two lives. */
  memcachedPid(): number | null;
  /** kill -9 this node's memcached; resolves once a new one is starting. */
  killMemcached(): Promise<void>;
  stopMemcached(): Promise<void>;
}

/** memrepl's flags on both nodes: verbose for the logs, an unpaced copy so faults land mid-copy. */
function memreplArgs(name: NodeName, replicationPort: number, extra: string[]): string[] {
  return ['-v', '-X', String(replicationPort), '--node-id', name, '--resync-rate', '0', ...extra];
}

export async function sidecarNode(rnd: () => number, replicationPort: number, stateDir: string, extra: string[]): Promise<NodeProcs> {
  const nodeArgs = [...memreplArgs('a', replicationPort, extra), '--state-dir', stateDir];
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
    memcachedPid: () => (memcached.child.exitCode === null && memcached.child.signalCode === null ? (memcached.child.pid ?? null) : null),
    async killMemcached() {
      await memcached.stop('SIGKILL');
      await sleep(200 + rnd() * 800);
      memcached = await startMemcached([], mcPort);
    },
    stopMemcached: async () => void (await memcached.stop()),
  };
}

export async function launcherNode(replicationPort: number, peerPort: number, runDir: string, extra: string[]): Promise<NodeProcs> {
  const flags = [...memreplArgs('b', replicationPort, extra), '-x', `127.0.0.1:${peerPort}`, '--spawn-memcached', '-m', '64', '--run-dir', runDir];
  const port = await freePort();
  const pidOf = () => {
    try {
      return Number(fs.readFileSync(path.join(runDir, 'memcached.pid'), 'utf8'));
    } catch {
      return null;
    }
  };
  // --upstream is ignored in launcher mode (the private socket replaces it).
  const start = () => startMemrepl(1, flags, port);
  return {
    name: 'b',
    memrepl: await start(),
    port,
    replicationPort,
    startMemrepl: start,
    memcached: path.join(runDir, 'memcached.sock'),
    memcachedPid: pidOf,
    async killMemcached() {
      const pid = pidOf();
      try {
        if (pid) process.kill(pid, 'SIGKILL');
      } catch {
        // between two lives (the launcher is restarting it): nothing to kill this time
      }
      await sleep(200);
    },
    async stopMemcached() {
      // memrepl stopped it on SIGTERM; after a SIGKILL of memrepl at the very end it may still run.
      const pid = pidOf();
      try {
        if (pid) process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
    },
  };
}

/** `stats replication` of a node, as a map. */
export async function replicationStats(p: NodeProcs): Promise<Map<string, string>> {
  const client = await RawClient.connect(p.port);
  try {
    const text = await client.request('stats replication\r\n', 'END\r\n', 2000);
    const out = new Map<string, string>();
    for (const m of text.matchAll(/STAT (\S+) (.*)\r\n/g)) out.set(m[1], m[2]);
    return out;
  } finally {
    client.close();
  }
}

/** Both nodes linked, no copy running and (`drained`) nothing unacknowledged; false if a node does not answer. */
export async function quiet(nodes: NodeProcs[], drained = true): Promise<boolean> {
  for (const p of nodes) {
    const stats = await replicationStats(p).catch(() => null);
    if (!stats || stats.get('peer_up') !== '1' || stats.get('copy_sending') !== '0' || stats.get('copy_receiving') !== '0') return false;
    if (drained && stats.get('unacked_records') !== '0') return false;
  }
  return true;
}

/** Waits (at most `timeoutMs`) until the pair is quiet `checks` times in a row, `intervalMs` apart; the time it was, or null. */
export async function settle(nodes: NodeProcs[], timeoutMs: number, checks = 3, intervalMs = 1000): Promise<number | null> {
  const deadline = Date.now() + timeoutMs;
  let inRow = 0;
  while (Date.now() < deadline) {
    await sleep(intervalMs);
    inRow = (await quiet(nodes)) ? inRow + 1 : 0;
    if (inRow >= checks) return Date.now();
  }
  return null;
}
