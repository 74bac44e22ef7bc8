/**
 * Every setting memrepl has, its flag, default and help text. The CLI, the
 * config file and MEMREPL_* environment variables all fill this one shape.
 */
export interface Config {
  port: number;
  listen: string | undefined;
  upstream: string;
  metricsPort: number;
  metricsListen: string;
  verbose: number;
  maxConnections: number;
  /** Close client connections idle this long (ms; 0 = never), like memcached -o idle_timeout. */
  idleTimeoutMs: number;
  peer: string | undefined;
  replicationPort: number;
  maxItemSize: number | undefined;
  upstreamTimeoutMs: number;
  connectTimeoutMs: number;
  shutdownTimeoutMs: number;
  maxPendingRequests: number;
  /** Connections to memcached shared by client sessions, per protocol. */
  sharedConnections: number;
  nodeId: string;
  cluster: string;
  backlogBytes: number;
  resyncRate: number;
  /** How long a write is remembered for conflict resolution (RecentWrites' window); 5 minutes unless a test shortens it. */
  conflictWindowMs: number;
  readyBeforeCopy: boolean;
  /** Launcher mode: the memcached to start (or adopt) and supervise; its upstream is then a private socket in runDir. */
  launch: { binary: string; args: string[]; runDir: string } | null;
  /** Shared secret of the replication link (from --replication-secret-file), or null. */
  replicationSecret: Buffer | null;
  /** TLS on the client port (memcached's -Z), or null. */
  clientTls: { cert: Buffer; key: Buffer; ca: Buffer | null } | null;
  /** Mutual TLS material for the replication link, or null. */
  replicationTls: { cert: Buffer; key: Buffer; ca: Buffer } | null;
}

/** What a session may hold for one multi-get line (memcached itself has no bound). */
export const MAX_MULTIGET_LINE = 4 * 1024 * 1024;
/** memcached's default item size limit, used until the real one is read from `stats settings`. */
export const DEFAULT_ITEM_SIZE = 1024 * 1024;
