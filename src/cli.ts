#!/usr/bin/env -S node --max-semi-space-size=4
/**
 * memrepl's command line: memcached's and repcached's flags where they mean
 * the same thing, plus the proxy's own. Every flag can also come from the
 * config file (--config, JSON or YAML) or a MEMREPL_<FLAG> environment
 * variable; the command line wins, then the environment, then the file.
 *
 * The first line holds node's own options for memrepl, and every launcher
 * (the `memrepl` command, the Docker image, scripts/pair.sh, the bench) runs
 * this file with them: a young generation of two 4 MiB semi-spaces instead of
 * V8's two of 16 MiB keeps a node of a pair under full load about 20 MiB
 * smaller (peak RSS 155 → 136 MiB, 100% sets from 32 connections) at the
 * same throughput; a proxy's garbage dies young and small scavenges suffice.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { join as joinPath, resolve as resolvePath } from 'node:path';
import yargs from 'yargs';
import { parse as parseYaml } from 'yaml';
import * as tls from 'node:tls';
import type { Config } from './config';
import { createLogger, type Logger } from './log';
import { describeReload, planReload } from './reload';
import { MemcachedLauncher } from './launcher/memcached-launcher';
import { defaultRunDir, RunDirBusyError } from './launcher/run-dir';
import { identifierProblem } from './replication/link/frames/messages';
import { startServer, type RunningServer } from './server';

const USAGE_ERROR = 2;

/** A usage problem: at start memrepl exits with it; on a reload (SIGHUP) the running config stays. */
class ConfigError extends Error {}

function fail(message: string): never {
  throw new ConfigError(message);
}

function exitWithUsage(message: string): never {
  process.stderr.write(`memrepl: ${message}\nTry 'memrepl --help' for more information.\n`);
  process.exit(USAGE_ERROR);
}

function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(path, 'utf8');
  } catch (error) {
    fail(`cannot read config file ${path}: ${(error as Error).message}`);
  }
  try {
    const parsed: unknown = path.endsWith('.json') ? JSON.parse(text) : parseYaml(text);
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) fail(`config file ${path} must hold a mapping of flag names to values`);
    return parsed as Record<string, unknown>;
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    fail(`config file ${path} is not valid ${path.endsWith('.json') ? 'JSON' : 'YAML'}: ${(error as Error).message}`);
  }
}

/** The shared secret, from a file so it never shows in `ps` or logs. */
function readSecret(path: string): Buffer {
  let text: string;
  try {
    text = fs.readFileSync(path, 'utf8').trim();
  } catch (error) {
    fail(`cannot read --replication-secret-file ${path}: ${(error as Error).message}`);
  }
  if (text.length < 16) fail(`--replication-secret-file ${path} holds fewer than 16 characters: use a long random secret`);
  return Buffer.from(text, 'utf8');
}

function readPem(flag: string, path: string): Buffer {
  try {
    return fs.readFileSync(path);
  } catch (error) {
    fail(`cannot read --${flag} ${path}: ${(error as Error).message}`);
  }
}

/** Mutual TLS for the link: all three files or none. */
function readTls(cert: string | undefined, key: string | undefined, ca: string | undefined): Config['replicationTls'] {
  const given = [cert, key, ca].filter((f) => f !== undefined).length;
  if (given === 0) return null;
  if (given !== 3) fail('replication TLS needs all of --replication-tls-cert, --replication-tls-key and --replication-tls-ca');
  return { cert: readPem('replication-tls-cert', cert!), key: readPem('replication-tls-key', key!), ca: readPem('replication-tls-ca', ca!) };
}

/** TLS on the client port: certificate and key, and optionally a CA for client certificates. */
function readClientTls(cert: string | undefined, key: string | undefined, ca: string | undefined): Config['clientTls'] {
  if (cert === undefined && key === undefined && ca === undefined) return null;
  if (cert === undefined || key === undefined) fail('client TLS needs both --tls-cert and --tls-key');
  return { cert: readPem('tls-cert', cert), key: readPem('tls-key', key), ca: ca === undefined ? null : readPem('tls-ca', ca) };
}

function isLoopback(host: string | undefined): boolean {
  return host !== undefined && (host === 'localhost' || host === '::1' || /^127\./.test(host));
}

/** "64m", "512k", "1g" or a plain number of bytes. */
function parseSize(text: string): number | null {
  const match = /^(\d+)([kmg]?)b?$/i.exec(text.trim());
  if (!match) return null;
  const unit = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[match[2].toLowerCase() as '' | 'k' | 'm' | 'g'];
  return Number(match[1]) * unit;
}

const isPort = (n: number, allowZero: boolean) => Number.isInteger(n) && n >= (allowZero ? 0 : 1) && n <= 65535;

export function parseArgs(argv: string[]): Config {
  const args = yargs(argv)
    .scriptName('memrepl')
    .usage('Usage: memrepl [options]\n\nA transparent master/master replication proxy in front of a stock memcached.')
    .option('port', { alias: 'p', type: 'number', default: 11211, describe: 'TCP port clients connect to' })
    .option('listen', { alias: 'l', type: 'string', describe: 'Interface to listen on (default: all interfaces, like memcached)' })
    .option('upstream', { type: 'string', default: '127.0.0.1:11311', describe: 'The local memcached: host:port or a unix socket path' })
    .option('metrics-port', { type: 'number', default: 9150, describe: 'HTTP port for /metrics, /healthz and /readyz (0 disables)' })
    .option('metrics-listen', { type: 'string', default: '127.0.0.1', describe: 'Interface for the metrics/health HTTP port' })
    .option('verbose', { alias: 'v', type: 'count', describe: 'Verbose (-v), very verbose (-vv), like memcached' })
    .option('max-conns', { alias: 'c', type: 'number', default: 1024, describe: 'Maximum simultaneous client connections, like memcached -c' })
    .option('idle-timeout', {
      type: 'number',
      default: 0,
      describe: 'Seconds a client connection may sit idle (no request outstanding) before it is closed, like memcached -o idle_timeout; 0 = never',
    })
    .option('peer', { alias: 'x', type: 'string', describe: 'Peer memrepl to dial for replication, HOST[:PORT] (repcached -x; port defaults to 11212)' })
    .option('replication-port', {
      alias: 'X',
      type: 'number',
      default: 11212,
      describe: 'TCP port replication listens on (repcached -X; 0 turns replication off)',
    })
    .option('node-id', { type: 'string', describe: "This node's name in the pair (default: hostname:port)" })
    .option('cluster', { type: 'string', default: 'memrepl', describe: 'Cluster name; nodes of different clusters refuse to link' })
    .option('replication-secret-file', {
      type: 'string',
      describe: 'File holding the shared secret both nodes prove (HMAC challenge-response) before replicating; same file on both',
    })
    .option('tls-cert', { type: 'string', describe: 'PEM certificate for TLS on the client port (like memcached -Z; with --tls-key)' })
    .option('tls-key', { type: 'string', describe: 'PEM private key for --tls-cert' })
    .option('tls-ca', { type: 'string', describe: 'PEM CA: clients must present a certificate it signed' })
    .option('replication-tls-cert', { type: 'string', describe: 'PEM certificate this node presents on the replication link (mutual TLS; with -key and -ca)' })
    .option('replication-tls-key', { type: 'string', describe: 'PEM private key for --replication-tls-cert' })
    .option('replication-tls-ca', { type: 'string', describe: "PEM CA that must have signed the peer's certificate" })
    .option('replication-insecure', {
      type: 'boolean',
      default: false,
      describe: 'Allow an unauthenticated replication port on a non-loopback address (only on a network you trust)',
    })
    .option('resync-rate', {
      type: 'number',
      default: 0,
      describe:
        'Items per second a full copy (marugoto) sends at most; 0 = no cap. Either way the copy paces itself: full speed while clients are idle, slower while their latency is over twice what it was',
    })
    .option('conflict-window', {
      type: 'number',
      default: 300,
      describe: 'Seconds a write is remembered to decide conflicts by last writer wins once the peer has seen it (kept longer while the peer is away)',
    })
    .option('ready-before-copy', { type: 'boolean', default: false, describe: "Report ready on /readyz before this node's first full copy has arrived" })
    .option('backlog-size', { type: 'string', default: '32m', describe: 'Bytes of recent records kept to resume a peer without a full copy (k/m/g suffixes)' })
    .option('max-item-size', {
      alias: 'I',
      type: 'string',
      describe: "memcached's item size limit (k/m suffixes; default: read from memcached). With --spawn-memcached, also passed to it",
    })
    .option('spawn-memcached', {
      type: 'boolean',
      default: false,
      describe: 'Launcher mode: start and supervise a stock memcached on a private unix socket (repcached-style single process)',
    })
    .option('run-dir', {
      type: 'string',
      describe:
        "With --spawn-memcached: directory (made 0700) for memcached's socket and pid files, stable so a restarted memrepl adopts the memcached " +
        'a crashed one left running; one per memrepl (default: $TMPDIR/memrepl-<port>)',
    })
    .option('state-dir', {
      type: 'string',
      describe:
        "Directory (made 0700) for this node's replication checkpoint, where it stands in its peer's stream, so a restarted memrepl " +
        'resumes without a full copy while its memcached kept its data (default: the run dir with --spawn-memcached, else $TMPDIR/memrepl-<port>)',
    })
    .option('memcached-binary', { type: 'string', default: 'memcached', describe: 'memcached executable for --spawn-memcached' })
    .option('memory-limit', { alias: 'm', type: 'number', describe: "With --spawn-memcached: memcached's -m (MB)" })
    .option('threads', { alias: 't', type: 'number', describe: "With --spawn-memcached: memcached's -t" })
    .option('disable-evictions', { alias: 'M', type: 'boolean', describe: "With --spawn-memcached: memcached's -M" })
    .option('slab-factor', { alias: 'f', type: 'number', describe: "With --spawn-memcached: memcached's -f" })
    .option('slab-min-size', { alias: 'n', type: 'number', describe: "With --spawn-memcached: memcached's -n" })
    .option('extended', {
      alias: 'o',
      type: 'string',
      array: true,
      describe: "With --spawn-memcached: memcached's -o (repeatable); anything after -- goes to memcached as is",
    })
    .option('upstream-timeout', { type: 'number', default: 5000, describe: 'ms a request may wait on a silent memcached before clients get SERVER_ERROR' })
    .option('connect-timeout', { type: 'number', default: 1000, describe: 'ms to connect to memcached before clients get SERVER_ERROR' })
    .option('shutdown-timeout', { type: 'number', default: 5000, describe: 'ms to finish in-flight requests on SIGTERM/SIGINT' })
    .option('upstream-shared', {
      type: 'number',
      // One, as twemproxy: every session's requests of a turn share one write and one memcached wakeup (docs/bench.md).
      default: 1,
      describe: 'Connections to memcached shared by all clients, per protocol (a client needing one of its own, e.g. for watch, gets one from the pool)',
    })
    .option('max-pending', { type: 'number', default: 4096, describe: 'Requests one client may have awaiting replies before the proxy stops reading from it' })
    .config('config', 'Config file (JSON or YAML) holding any of these flags', readConfigFile)
    .env('MEMREPL')
    // Like memcached: a flag given twice takes its last value.
    .parserConfiguration({ 'duplicate-arguments-array': false, 'populate--': true })
    .alias('help', 'h')
    .version()
    .strict()
    .wrap(Math.min(110, process.stdout.columns || 110))
    .fail((message, error) => fail(message || error?.message || 'invalid arguments'))
    .parseSync();

  if (args._.length > 0) fail(`unexpected argument: ${String(args._[0])}`);
  const config: Config = {
    port: args.port,
    listen: args.listen,
    upstream: args.upstream,
    metricsPort: args['metrics-port'],
    metricsListen: args['metrics-listen'],
    verbose: args.verbose,
    maxConnections: args['max-conns'],
    idleTimeoutMs: args['idle-timeout'] * 1000,
    peer: args.peer,
    replicationPort: args['replication-port'],
    maxItemSize:
      args['max-item-size'] === undefined ? undefined : (parseSize(args['max-item-size']) ?? fail(`invalid --max-item-size: ${args['max-item-size']}`)),
    upstreamTimeoutMs: args['upstream-timeout'],
    connectTimeoutMs: args['connect-timeout'],
    shutdownTimeoutMs: args['shutdown-timeout'],
    maxPendingRequests: args['max-pending'],
    sharedConnections: args['upstream-shared'],
    nodeId: args['node-id'] ?? `${os.hostname()}:${args.port}`,
    cluster: args.cluster,
    backlogBytes: parseSize(args['backlog-size']) ?? fail(`invalid --backlog-size: ${args['backlog-size']}`),
    resyncRate: args['resync-rate'],
    conflictWindowMs: args['conflict-window'] * 1000,
    readyBeforeCopy: args['ready-before-copy'],
    stateDir: '',
    launch: null,
    replicationSecret: args['replication-secret-file'] ? readSecret(args['replication-secret-file']) : null,
    replicationTls: readTls(args['replication-tls-cert'], args['replication-tls-key'], args['replication-tls-ca']),
    clientTls: readClientTls(args['tls-cert'], args['tls-key'], args['tls-ca']),
  };
  // Peers refuse a HELLO with any other id or cluster name (they are bound into the handshake's proofs): say so now.
  for (const [flag, value] of [
    ['node-id', config.nodeId],
    ['cluster', config.cluster],
  ] as const) {
    const problem = identifierProblem(value);
    const hint = flag === 'node-id' && args['node-id'] === undefined ? ' (it defaults to hostname:port: give --node-id)' : '';
    if (problem !== null) fail(`invalid --${flag} ${JSON.stringify(value)}: ${problem}${hint}`);
  }
  const authenticated = config.replicationSecret !== null || config.replicationTls !== null;
  if (config.replicationPort !== 0 && !authenticated && !args['replication-insecure'] && !isLoopback(config.listen)) {
    fail(
      `the replication port would accept writes from anyone who can reach ${config.listen ?? 'all interfaces'}:${config.replicationPort}. ` +
        'Give both nodes the same --replication-secret-file (or mutual TLS: --replication-tls-cert/-key/-ca), or listen on loopback (-l 127.0.0.1), ' +
        'or say the network is trusted with --replication-insecure',
    );
  }
  if (!Number.isInteger(config.resyncRate) || config.resyncRate < 0) fail('invalid --resync-rate: must be a non-negative integer');
  if (!(config.conflictWindowMs >= 0) || !Number.isFinite(config.conflictWindowMs)) fail('invalid --conflict-window: must be a non-negative number of seconds');
  if (!Number.isInteger(args['idle-timeout']) || args['idle-timeout'] < 0) fail('invalid --idle-timeout: must be a non-negative integer (seconds)');
  config.launch = launcherArgs(args, config);
  if (args['state-dir'] === '') fail('invalid --state-dir: empty');
  config.stateDir = resolvePath(args['state-dir'] ?? config.launch?.runDir ?? defaultRunDir(config.port));
  if (!isPort(config.port, true)) fail(`invalid --port: ${args.port}`);
  if (!isPort(config.metricsPort, true)) fail(`invalid --metrics-port: ${args['metrics-port']}`);
  if (!isPort(config.replicationPort, true)) fail(`invalid --replication-port: ${args['replication-port']}`);
  for (const [flag, value] of Object.entries({
    'max-conns': config.maxConnections,
    'upstream-timeout': config.upstreamTimeoutMs,
    'connect-timeout': config.connectTimeoutMs,
    'shutdown-timeout': config.shutdownTimeoutMs,
    'max-pending': config.maxPendingRequests,
    'upstream-shared': config.sharedConnections,
  })) {
    if (!Number.isInteger(value) || value <= 0) fail(`invalid --${flag}: must be a positive integer`);
  }
  if (config.maxItemSize !== undefined && (!Number.isInteger(config.maxItemSize) || config.maxItemSize < 1024)) {
    fail('invalid --max-item-size: must be an integer of at least 1024');
  }
  return config;
}

/**
 * memcached's flags for launcher mode. memrepl's own -c also sizes memcached's:
 * each client can hold a connection of each protocol, plus replication's few.
 */
function launcherArgs(args: Record<string, unknown>, config: Config): Config['launch'] {
  const passthrough = (args['--'] as string[] | undefined)?.map(String) ?? [];
  const memcachedFlags: Array<[string, string, unknown]> = [
    ['memory-limit', '-m', args['memory-limit']],
    ['threads', '-t', args.threads],
    ['slab-factor', '-f', args['slab-factor']],
    ['slab-min-size', '-n', args['slab-min-size']],
  ];
  const out: string[] = [];
  for (const [, flag, value] of memcachedFlags) if (value !== undefined) out.push(flag, String(value));
  if (args['disable-evictions']) out.push('-M');
  for (const option of (args.extended as string[] | undefined) ?? []) out.push('-o', option);
  const runDir = args['run-dir'] as string | undefined;
  if (!args['spawn-memcached']) {
    if (out.length > 0 || passthrough.length > 0) fail('memcached flags (-m, -t, -M, -f, -n, -o, -- ...) need --spawn-memcached');
    if (runDir !== undefined) fail('--run-dir needs --spawn-memcached');
    return null;
  }
  if (runDir === '') fail('invalid --run-dir: empty');
  // memcached's socket goes inside it, and a unix socket path holds at most 107 bytes.
  const socketPath = joinPath(resolvePath(runDir ?? defaultRunDir(config.port)), 'memcached.sock');
  if (Buffer.byteLength(socketPath) > 107) fail(`--run-dir too long: ${socketPath} exceeds the 107 bytes of a unix socket path`);
  if (config.maxItemSize !== undefined) out.push('-I', String(config.maxItemSize));
  out.push('-c', String(config.maxConnections * 2 + 64));
  return { binary: String(args['memcached-binary']), args: [...out, ...passthrough], runDir: runDir ?? defaultRunDir(config.port) };
}

/** The config as given, with every TLS file checked the way the listeners will load it. */
function readConfig(argv: string[]): Config {
  const config = parseArgs(argv);
  for (const [flags, material] of [
    ['--tls-cert/--tls-key/--tls-ca', config.clientTls],
    ['--replication-tls-cert/-key/-ca', config.replicationTls],
  ] as const) {
    try {
      if (material) tls.createSecureContext({ cert: material.cert, key: material.key, ca: material.ca ?? undefined });
    } catch (error) {
      fail(`invalid ${flags}: ${(error as Error).message}`);
    }
  }
  return config;
}

/**
 * SIGHUP: read the flags, environment, config file, secret and TLS files again,
 * apply what can change live and say in one line what changed and what needs
 * a restart. A config that does not parse keeps the running one.
 */
function reloadOnHangup(argv: string[], running: Config, server: RunningServer, log: Logger): void {
  process.on('SIGHUP', () => {
    try {
      const plan = planReload(running, readConfig(argv));
      server.update(plan.config);
      running = plan.config;
      log.notice(describeReload(plan));
    } catch (error) {
      const reason = error instanceof ConfigError ? error.message : `unexpected ${(error as Error).stack ?? String(error)}`;
      log.error(`reload failed, still running the previous config: ${reason}`);
    }
  });
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  let config: Config;
  try {
    config = readConfig(argv);
  } catch (error) {
    if (error instanceof ConfigError) exitWithUsage(error.message);
    throw error;
  }
  const log = createLogger(config.verbose);
  let launcher: MemcachedLauncher | null = null;
  let server: RunningServer;
  try {
    if (config.launch) {
      launcher = new MemcachedLauncher({ ...config.launch, restartMinMs: 100, restartMaxMs: 5000 }, log);
      await launcher.start();
    }
    // The config keeps the upstream as given, so a reload compares like with like.
    server = await startServer(launcher ? { ...config, upstream: launcher.socketPath } : config, log);
  } catch (error) {
    // Another memrepl owns the run dir: a usage problem (pick another dir or port), not a crash.
    if (error instanceof RunDirBusyError) exitWithUsage(error.message);
    process.stderr.write(`memrepl: failed to start: ${(error as Error).message}\n`);
    await launcher?.stop();
    process.exit(1);
  }
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info(`${signal} received`);
    server
      .stop()
      .then(() => launcher?.stop())
      .then(
        () => process.exit(0),
        (error: Error) => {
          log.error(`shutdown: ${error.message}`);
          process.exit(1);
        },
      );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  reloadOnHangup(argv, config, server, log);
}

if (require.main === module) void main();
