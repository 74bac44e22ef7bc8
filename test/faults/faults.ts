/**
 * The faults, each switchable with `--faults`:
 *
 *   kill-memrepl         kill -9 either memrepl, restarted 0.2-1 s later
 *   kill-memcached       kill -9 either memcached (A's restarted by the suite, B's by its launcher)
 *   cut                  every link connection cut mid-frame (relay)
 *   stall                the link stalled 0.5-2.5 s (relay)
 *   garbage-client       500 random bytes on both client ports
 *   garbage-replication  500 random bytes on both replication ports
 *   long-stall           the link stalled longer than the conflict window (the run uses a 2 s window, --conflict-window 2)
 *   sigstop              either memcached stopped (SIGSTOP) for 2-7 s, then SIGCONT
 *   hostile-peer         a hostile client on a replication port (hostile-peer.ts)
 *
 * The first six are the original suite's, drawn in its order, so
 * `--faults classic` replays its fault sequence for a seed.
 */
import * as net from 'node:net';
import { sleep } from '../support/ports';
import type { Relay } from '../support/relay';
import type { CopyWindow, History, Kill, NodeName } from './history';
import { hostilePeer } from './hostile-peer';
import { type NodeProcs, replicationStats, quiet } from './pair';

export const CLASSIC_FAULTS = ['kill-memrepl', 'kill-memcached', 'cut', 'stall', 'garbage-client', 'garbage-replication'] as const;
export const FAULTS = [...CLASSIC_FAULTS, 'long-stall', 'sigstop', 'hostile-peer'] as const;
export type FaultName = (typeof FAULTS)[number];

/** The conflict window the pair runs with when long-stall is on (a stall must outlast it within a bounded run). */
export const SHORT_CONFLICT_WINDOW_MS = 2000;
/** How long the suite waits for the pair to settle after a kill before it gives up (the kill's aftermath then lasts to the end). */
const AFTERMATH_TIMEOUT_MS = 60_000;

export interface FaultContext {
  nodes: Record<NodeName, NodeProcs>;
  relay: Relay;
  rnd: () => number;
  history: History;
  /** Restarts a node's memrepl after kill -9 (the suite keeps its log and watches for crashes). */
  restartMemrepl(p: NodeProcs): Promise<void>;
  /** Pending watchers of kills' aftermath: the checker waits for them. */
  aftermaths: Array<Promise<void>>;
  /** memcached processes stopped now, to SIGCONT whatever happens. */
  stopped: Set<number>;
}

/** The enabled faults as named actions, in a fixed order (the classic ones first, as the original suite had them). */
/** Each action may return a more precise label for the timeline (which hostile variant ran). */
export function faultActions(ctx: FaultContext, enabled: ReadonlySet<FaultName>): Array<[string, () => Promise<string | void>]> {
  const { nodes, relay, rnd } = ctx;
  const all: Array<[FaultName, string, () => Promise<string | void>]> = [
    ['kill-memrepl', 'kill -9 memrepl a', () => killMemrepl(ctx, nodes.a)],
    ['kill-memrepl', 'kill -9 memrepl b', () => killMemrepl(ctx, nodes.b)],
    ['kill-memcached', 'kill -9 memcached a', () => killMemcached(ctx, nodes.a)],
    ['kill-memcached', 'kill -9 memcached b', () => killMemcached(ctx, nodes.b)],
    ['cut', 'cut link', async () => relay.cutAll()],
    ['stall', 'stall link', () => stall(relay, 500 + rnd() * 2000)],
    [
      'garbage-client',
      'garbage on client ports',
      async () => {
        await garbage(nodes.a.port, rnd);
        await garbage(nodes.b.port, rnd);
      },
    ],
    [
      'garbage-replication',
      'garbage on replication ports',
      async () => {
        await garbage(nodes.a.replicationPort, rnd);
        await garbage(nodes.b.replicationPort, rnd);
      },
    ],
    ['long-stall', 'long stall of the link', () => stall(relay, SHORT_CONFLICT_WINDOW_MS + 500 + rnd() * 4500)],
    ['sigstop', 'SIGSTOP memcached a', () => sigstop(ctx, nodes.a, 2000 + rnd() * 5000)],
    ['sigstop', 'SIGSTOP memcached b', () => sigstop(ctx, nodes.b, 2000 + rnd() * 5000)],
    [
      'hostile-peer',
      'hostile peer',
      async () => {
        const at = Date.now();
        const { label, tookLink } = await hostilePeer(rnd() < 0.5 ? nodes.a : nodes.b, () => relay.cutAll(), ctx.history, rnd);
        // The node followed another node's stream for a moment: its real peer's return is reconciled with copies.
        if (tookLink) watchCopyWindow(ctx, at);
        return label;
      },
    ],
  ];
  return all.filter(([fault]) => enabled.has(fault)).map(([, name, action]) => [name, action]);
}

async function stall(relay: Relay, ms: number): Promise<void> {
  relay.stall();
  await sleep(ms);
  relay.resume();
}

async function garbage(port: number, rnd: () => number): Promise<void> {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => {});
  socket.write(Buffer.from(Array.from({ length: 500 }, () => Math.floor(rnd() * 256))));
  await sleep(50);
  socket.destroy();
}

async function killMemrepl(ctx: FaultContext, p: NodeProcs): Promise<void> {
  const kill = await recordKill(ctx, p, 'memrepl');
  await ctx.restartMemrepl(p);
  watchAftermath(ctx, kill, p, 0);
}

async function killMemcached(ctx: FaultContext, p: NodeProcs): Promise<void> {
  const copiesBefore = Number((await replicationStats(p).catch(() => null))?.get('copies_received') ?? 0);
  const kill = await recordKill(ctx, p, 'memcached');
  await p.killMemcached();
  watchAftermath(ctx, kill, p, copiesBefore);
}

async function recordKill(ctx: FaultContext, p: NodeProcs, what: Kill['what']): Promise<Kill> {
  const kill: Kill = { node: p.name, what, at: Date.now(), settledAt: Infinity };
  ctx.history.kills.push(kill);
  return kill;
}

/**
 * In the background: when the killed node has received a full copy since the
 * kill (a restarted memrepl has received one at all) and the pair is linked with
 * no copy running, the kill's aftermath is over (see checker.ts, rule 3).
 */
function watchAftermath(ctx: FaultContext, kill: Kill, p: NodeProcs, copiesBefore: number): void {
  const copied = async () => Number((await replicationStats(p).catch(() => null))?.get('copies_received') ?? -1) > copiesBefore;
  watchSettling(ctx, kill, copied);
}

/** In the background: copies may run from `at` until the pair is linked with no copy running (see CopyWindow). */
function watchCopyWindow(ctx: FaultContext, at: number): void {
  const window: CopyWindow = { at, settledAt: Infinity };
  ctx.history.copyWindows.push(window);
  watchSettling(ctx, window, async () => true);
}

/** Sets `event.settledAt` once `ready` holds and the pair is quiet, twice in a row (checked every 250 ms, for a minute at most). */
function watchSettling(ctx: FaultContext, event: { at: number; settledAt: number }, ready: () => Promise<boolean>): void {
  const watch = async () => {
    const deadline = event.at + AFTERMATH_TIMEOUT_MS;
    await sleep(1500);
    let inRow = 0;
    while (Date.now() < deadline) {
      inRow = (await ready()) && (await quiet([ctx.nodes.a, ctx.nodes.b], false)) ? inRow + 1 : 0;
      if (inRow >= 2) {
        event.settledAt = Date.now();
        return;
      }
      await sleep(250);
    }
  };
  ctx.aftermaths.push(watch());
}

/** Stops a node's memcached for `ms`, then resumes it. */
async function sigstop(ctx: FaultContext, p: NodeProcs, ms: number): Promise<void> {
  const pid = p.memcachedPid();
  if (pid === null) return;
  try {
    process.kill(pid, 'SIGSTOP');
  } catch {
    return; // between two lives
  }
  ctx.stopped.add(pid);
  const at = Date.now();
  try {
    await sleep(ms);
  } finally {
    resume(ctx.stopped, pid);
    ctx.history.stops.push({ node: p.name, at, until: Date.now() });
  }
}

export function resume(stopped: Set<number>, pid: number): void {
  stopped.delete(pid);
  try {
    process.kill(pid, 'SIGCONT');
  } catch {
    // it died meanwhile
  }
}
