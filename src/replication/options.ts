/**
 * What a node's replication is told (ReplicationOptions, from the command
 * line and config file), and the tuning nobody is asked to set, in one place.
 */
import type { LatencySnapshot } from '../proxy/client-latency';
import type { UpstreamAddress } from '../sockets';
import type { TlsMaterial } from './link/transport';

export interface ReplicationOptions {
  cluster: string;
  nodeId: string;
  /** Where to listen for the peer (-X, and the listen address). */
  listenPort: number;
  listenHost: string | undefined;
  /** The peer to dial (-x), if any. */
  peer: UpstreamAddress | null;
  backlogBytes: number;
  /** Largest frame accepted from the peer (tracks memcached's item size limit). */
  maxFrameBytes: () => number;
  connectTimeoutMs: number;
  /** How long a client request may wait on memcached (--upstream-timeout). */
  upstreamTimeoutMs: number;
  handshakeTimeoutMs: number;
  pingIntervalMs: number;
  idleTimeoutMs: number;
  /** Reconnect backoff: first delay and cap. */
  backoffMinMs: number;
  backoffMaxMs: number;
  /** How long a conflicting write is remembered (see recent-writes.ts). */
  conflictWindowMs: number;
  /** Shared secret the peer must prove (null: the link is not authenticated). */
  secret: Buffer | null;
  /** Mutual TLS for the link (null: plain TCP). */
  tls: TlsMaterial | null;
  /** Full copy pace, items per second at most (0 = no cap). */
  copyRatePerSecond: number;
  /** This node's client latency, which full copies pace themselves by (see copy/fetch-pace.ts). */
  clientLatency?: () => LatencySnapshot;
  /** Report ready before this node's first full copy has arrived. */
  readyBeforeCopy: boolean;
  /** Directory of this node's replication checkpoint (see checkpoint-file.ts). */
  stateDir: string;
}

/** The options a reload (SIGHUP) may change: each is read at its next use. */
export type LiveReplicationOptions = Pick<ReplicationOptions, 'secret' | 'tls' | 'copyRatePerSecond'>;

/** How often to look again whether the peer's backlog has been applied (see Replicator.releaseHistoryWhenCaughtUp). */
export const CATCH_UP_WAIT_MS = 10_000;
/**
 * Size bounds of the conflict maps (recent-writes.ts), in keys and bytes: 64 MiB
 * holds a million keys of 40 bytes. Past them, the oldest entries go first.
 */
export const CONFLICT_MAP_BOUNDS = {
  values: { maxEntries: 1_000_000, maxBytes: 64 * 1024 * 1024 },
  touches: { maxEntries: 1_000_000, maxBytes: 32 * 1024 * 1024 },
};

/**
 * The link's timing: a HELLO must come within the handshake timeout; pings
 * every 250 ms keep an idle link measurably alive (and carry the clock
 * offset); a link silent for the idle timeout is dead; a lost peer is dialled
 * again after a backoff that doubles from its minimum to its cap.
 */
export const LINK_TIMING = { handshakeTimeoutMs: 5000, pingIntervalMs: 250, idleTimeoutMs: 5000, backoffMinMs: 100, backoffMaxMs: 5000 };

/** At most one warning per this many ms that a binary-only key's expiry is not known (each is counted). */
export const EXPIRY_UNKNOWN_LOG_EVERY_MS = 10_000;

/** While records keep coming, the link is written at most once per this long (see WritePacer). */
export const SEND_EVERY_MS = 1;

/**
 * While records keep being applied, the peer is acknowledged at most once per
 * this long (see WritePacer): acknowledgements are cumulative, and the peer
 * needs them only to trim its backlog and measure the lag.
 */
export const ACK_EVERY_MS = 1;
