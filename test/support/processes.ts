/**
 * Real memcached and memrepl processes for tests, on free loopback ports.
 * Tests stop only what they started: every process is tracked and killed
 * when the test process exits.
 */
import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { freePort, waitForPort } from './ports';

const started = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of started) child.kill('SIGKILL');
});

export interface Running {
  port: number;
  child: ChildProcess;
  /** Everything the process wrote to stderr so far. */
  output(): string;
  /** The same, each line prefixed with the seconds since `origin` (ms since the epoch) when it arrived. */
  timedOutput(origin: number): string;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Starts `command` and resolves once it accepts connections on `port`; killed when the test process exits. */
/** Starts `command` and waits (up to `readyMs`) until something listens on `port`. */
export async function launch(command: string, args: string[], port: number, readyMs = 5000): Promise<Running> {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  started.add(child);
  // A process a failed test left running must not keep the test file alive: the exit hook above kills it.
  child.unref();
  for (const stream of [child.stdout, child.stderr]) (stream as unknown as { unref(): void }).unref();
  let output = '';
  /** Where each line of `output` starts, and when it arrived. */
  const lineStarts: Array<[offset: number, at: number]> = [];
  let atLineStart = true;
  const take = (chunk: Buffer) => {
    const now = Date.now();
    const text = chunk.toString();
    for (let from = 0; from < text.length;) {
      if (atLineStart) lineStarts.push([output.length + from, now]);
      const newline = text.indexOf('\n', from);
      atLineStart = newline !== -1;
      if (newline === -1) break;
      from = newline + 1;
    }
    output += text;
  };
  child.stdout!.on('data', take);
  child.stderr!.on('data', take);
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => {
      started.delete(child);
      resolve(code);
    }),
  );
  try {
    await Promise.race([
      waitForPort(port, readyMs),
      exited.then((code) => {
        throw new Error(`${command} exited (${code}): ${output}`);
      }),
    ]);
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  }
  return {
    port,
    child,
    output: () => output,
    timedOutput: (origin) =>
      lineStarts.map(([start, at], i) => `+${((at - origin) / 1000).toFixed(3)}s ${output.slice(start, lineStarts[i + 1]?.[0] ?? output.length)}`).join(''),
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), 10000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

export async function startMemcached(extraArgs: string[] = [], port?: number): Promise<Running> {
  port ??= await freePort();
  const user = process.getuid?.() === 0 ? ['-u', 'root'] : [];
  return launch('memcached', ['-l', '127.0.0.1', '-p', String(port), '-U', '0', ...user, ...extraArgs], port);
}

/** A process's resident memory now, in kB. */
export function rssKb(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
}

export const CLI = path.join(__dirname, '..', '..', 'src', 'cli.js');

export async function startMemrepl(upstreamPort: number, extraArgs: string[] = [], port?: number): Promise<Running> {
  port ??= await freePort();
  return launch(
    process.execPath,
    // Replication off unless the test asks for it (extra flags win: the last of a repeated flag counts).
    // The state dir is the test's own: the default (/tmp/memrepl-<port>) would outlive the test and hand
    // its checkpoint to whichever later proxy gets that port.
    [
      CLI,
      '-l',
      '127.0.0.1',
      '-p',
      String(port),
      '--upstream',
      `127.0.0.1:${upstreamPort}`,
      '--metrics-port',
      '0',
      '-X',
      '0',
      ...(extraArgs.includes('--spawn-memcached') ? [] : ['--state-dir', testStateDir(`port-${port}`)]),
      ...extraArgs,
    ],
    port,
  );
}

/**
 * memcached alone, and memrepl in front of a second memcached started with the
 * same flags: the two sides a transparency test compares byte for byte.
 */
export interface SideBySide {
  direct: Running;
  behind: Running;
  proxy: Running;
  stop(): Promise<void>;
}

export async function startSideBySide(memcachedArgs: string[] = []): Promise<SideBySide> {
  const [direct, behind] = await Promise.all([startMemcached(memcachedArgs), startMemcached(memcachedArgs)]);
  const proxy = await startMemrepl(behind.port);
  return {
    direct,
    behind,
    proxy,
    async stop() {
      await proxy.stop();
      await Promise.all([direct.stop(), behind.stop()]);
    },
  };
}

export interface Node {
  memcached: Running;
  memrepl: Running;
  replicationPort: number;
  metricsPort: number;
  /** Restarts this node's memrepl (after a kill), same ports and flags. */
  restartProxy(): Promise<void>;
}

/**
 * A replicated pair as the README describes it: two memcached, two memrepl,
 * B dialling A (repcached's -x). `extraArgs` go to both memrepl processes.
 */
export async function startPair(extraArgs: string[] = [], options: { bothDial?: boolean } = {}): Promise<[Node, Node]> {
  const [ra, rb] = [await freePort(), await freePort()];
  const a = await startNode('a', ra, options.bothDial ? rb : null, extraArgs);
  const b = await startNode('b', rb, ra, extraArgs);
  return [a, b];
}

export async function startNode(
  name: string,
  replicationPort: number,
  peerPort: number | null,
  extraArgs: string[] = [],
  memcachedArgs: string[] = [],
  /** Puts something between the proxy and its memcached: given memcached's port, the port the proxy is to use. */
  upstreamVia: (memcachedPort: number) => Promise<number> = async (port) => port,
): Promise<Node> {
  const memcached = await startMemcached(memcachedArgs);
  const upstreamPort = await upstreamVia(memcached.port);
  const metricsPort = await freePort();
  const args = [
    '-X',
    String(replicationPort),
    '--node-id',
    name,
    '--metrics-port',
    String(metricsPort),
    '--state-dir',
    testStateDir(`${name}-${replicationPort}`),
    ...(peerPort === null ? [] : ['-x', `127.0.0.1:${peerPort}`]),
    ...extraArgs,
  ];
  const node: Node = {
    memcached,
    memrepl: await startMemrepl(upstreamPort, args),
    replicationPort,
    metricsPort,
    async restartProxy() {
      await node.memrepl.stop('SIGKILL');
      node.memrepl = await startMemrepl(upstreamPort, args, node.memrepl.port);
    },
  };
  return node;
}

/** Where this test process's proxies keep their checkpoints (one survives its proxy's restarts); removed at exit. */
let stateRoot: string | null = null;
function testStateDir(name: string): string {
  if (stateRoot === null) {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'memrepl-test-state-'));
    process.on('exit', () => fs.rmSync(root, { recursive: true, force: true }));
    stateRoot = root;
  }
  return path.join(stateRoot, name);
}

export async function stopAll(...nodes: Node[]): Promise<void> {
  await Promise.all(nodes.map((n) => n.memrepl.stop()));
  await Promise.all(nodes.map((n) => n.memcached.stop()));
}
