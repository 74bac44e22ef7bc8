/**
 * What a SIGHUP changes: the running config compared with the one just
 * re-read from the command line, environment, config file, secret and TLS
 * files. Settings read at their next use (a log line, a new connection, the
 * next copy, the next handshake) change live; the rest is reported as needing
 * a restart and kept as it runs, so a reload never half-applies a listener or
 * an identity.
 */
import type { Config } from './config';

/** The settings a running node can take without a restart. */
export type LiveSettings = Pick<Config, 'verbose' | 'idleTimeoutMs' | 'resyncRate' | 'replicationSecret' | 'clientTls' | 'replicationTls'>;

export interface Change {
  /** The flag as the operator knows it. */
  flag: string;
  /** How it changed, for the log line (never a secret or key's content). */
  detail: string;
}

export interface ReloadPlan {
  /** The running config with every live change applied: what runs after the reload. */
  config: Config;
  applied: Change[];
  needsRestart: Change[];
}

type Key = keyof Config;

/** Each setting's flag name, in the order the log line lists them. */
const FLAGS: Record<Key, string> = {
  verbose: 'verbose',
  idleTimeoutMs: 'idle-timeout',
  resyncRate: 'resync-rate',
  replicationSecret: 'replication-secret-file',
  clientTls: 'tls-cert/tls-key/tls-ca',
  replicationTls: 'replication-tls-cert/key/ca',
  port: 'port',
  listen: 'listen',
  upstream: 'upstream',
  metricsPort: 'metrics-port',
  metricsListen: 'metrics-listen',
  maxConnections: 'max-conns',
  peer: 'peer',
  replicationPort: 'replication-port',
  maxItemSize: 'max-item-size',
  upstreamTimeoutMs: 'upstream-timeout',
  connectTimeoutMs: 'connect-timeout',
  shutdownTimeoutMs: 'shutdown-timeout',
  maxPendingRequests: 'max-pending',
  sharedConnections: 'upstream-shared',
  nodeId: 'node-id',
  cluster: 'cluster',
  backlogBytes: 'backlog-size',
  conflictWindowMs: 'conflict-window',
  readyBeforeCopy: 'ready-before-copy',
  stateDir: 'state-dir',
  launch: 'spawn-memcached and its memcached flags',
};

/** Whether a setting may change live from `before` to `after` (both differ). */
function changesLive(key: Key, before: Config, after: Config): boolean {
  switch (key) {
    case 'verbose':
    case 'idleTimeoutMs':
    case 'resyncRate':
    case 'replicationSecret':
      return true;
    // New material for new connections; turning TLS on or off (or client certificates) changes the listener itself.
    case 'clientTls':
      return before.clientTls !== null && after.clientTls !== null && (before.clientTls.ca === null) === (after.clientTls.ca === null);
    case 'replicationTls':
      return before.replicationTls !== null && after.replicationTls !== null;
    default:
      return false;
  }
}

function same(a: unknown, b: unknown): boolean {
  if (Buffer.isBuffer(a) && Buffer.isBuffer(b)) return a.equals(b);
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return a === b;
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  return [...keys].every((k) => same((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

/** Values fit for a log line: secrets and TLS material are named, never shown. */
function shown(key: Key, value: unknown): string {
  if (key === 'replicationSecret' || key === 'clientTls' || key === 'replicationTls') return value === null ? 'off' : 'on';
  if (key === 'idleTimeoutMs' || key === 'conflictWindowMs') return `${(value as number) / 1000}s`;
  if (value === undefined || value === null) return 'unset';
  return typeof value === 'object' ? JSON.stringify(value) : String(value);
}

function describe(key: Key, before: Config, after: Config): string {
  const [from, to] = [shown(key, before[key]), shown(key, after[key])];
  return from === to ? `${FLAGS[key]} (new content)` : `${FLAGS[key]} ${from} -> ${to}`;
}

export function planReload(running: Config, reread: Config): ReloadPlan {
  const config: Config = { ...running };
  const applied: Change[] = [];
  const needsRestart: Change[] = [];
  for (const key of Object.keys(FLAGS) as Key[]) {
    if (same(running[key], reread[key])) continue;
    const change = { flag: FLAGS[key], detail: describe(key, running, reread) };
    if (changesLive(key, running, reread)) {
      (config as unknown as Record<Key, unknown>)[key] = reread[key];
      applied.push(change);
    } else {
      needsRestart.push(change);
    }
  }
  return { config, applied, needsRestart };
}

/** The one log line a reload writes. */
export function describeReload(plan: ReloadPlan): string {
  if (plan.applied.length === 0 && plan.needsRestart.length === 0) return 'reload: nothing changed';
  const parts: string[] = [];
  if (plan.applied.length > 0) parts.push(`applied ${plan.applied.map((c) => c.detail).join(', ')}`);
  if (plan.needsRestart.length > 0) parts.push(`needs a restart (still running the old value): ${plan.needsRestart.map((c) => c.detail).join(', ')}`);
  return `reload: ${parts.join('; ')}`;
}
