/** Replication's Prometheus metrics (prom-client), prefixed memrepl_. */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export function createReplicationMetrics(registry: Registry) {
  const registers = [registry];
  return {
    peerUp: new Gauge({ name: 'memrepl_peer_up', help: '1 while the replication link to the peer is up (handshake done).', registers }),
    recordsSent: new Counter({
      name: 'memrepl_replication_records_sent_total',
      help: 'Records sent to the peer (including re-sends after a reconnect).',
      registers,
    }),
    recordsAcked: new Counter({ name: 'memrepl_replication_records_acked_total', help: 'Records the peer acknowledged as applied.', registers }),
    recordsApplied: new Counter({
      name: 'memrepl_replication_records_applied_total',
      help: 'Records received from the peer and applied to the local memcached, by op.',
      labelNames: ['op'] as const,
      registers,
    }),
    recordsSkipped: new Counter({
      name: 'memrepl_replication_records_skipped_total',
      help: 'Records not applied, by reason (conflict: a newer write of the key won; duplicate: already applied; refused: memcached said no, e.g. out of memory; too_large_for_peer: counted on the sender, the item is larger than the peer accepts and the peer deletes the key instead; expiry_unknown: counted on the sender, a key only the binary protocol can name was read back without a known expiry and the peer deletes the key instead; not_understood_by_peer: counted on the sender, a replayed append/prepend/incr/decr for a peer too old to run it, which deletes the key instead).',
      labelNames: ['reason'] as const,
      registers,
    }),
    recordsLost: new Counter({
      name: 'memrepl_replication_records_lost_total',
      help: 'Local writes that could not be turned into records (memcached unreachable for the read-back); a full copy repairs them.',
      registers,
    }),
    backlogBytes: new Gauge({ name: 'memrepl_replication_backlog_bytes', help: 'Bytes of records held in the backlog.', registers }),
    backlogRecords: new Gauge({ name: 'memrepl_replication_backlog_records', help: 'Records held in the backlog.', registers }),
    unackedRecords: new Gauge({ name: 'memrepl_replication_unacked_records', help: 'Records of this run the peer has not acknowledged yet.', registers }),
    lag: new Histogram({
      name: 'memrepl_replication_lag_seconds',
      help: "Time from a write taking effect here to the peer acknowledging it applied (one clock: this node's).",
      buckets: [0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    }),
    resyncs: new Counter({
      name: 'memrepl_replication_resyncs_total',
      help: 'Resyncs by kind: partial (peer resumed from its last applied record), full (everything copied), full_needed (a full copy was required).',
      labelNames: ['kind'] as const,
      registers,
    }),
    copyInProgress: new Gauge({
      name: 'memrepl_resync_in_progress',
      help: '1 while a full copy (marugoto) is being sent or received.',
      labelNames: ['direction'] as const,
      registers,
    }),
    copyItems: new Counter({ name: 'memrepl_resync_items_sent_total', help: 'Items sent by full copies.', registers }),
    copyBytes: new Counter({ name: 'memrepl_resync_bytes_sent_total', help: 'Bytes of RECORD frames sent by full copies.', registers }),
    copyFailures: new Counter({
      name: 'memrepl_replication_full_copy_failures_total',
      help: 'Full copies this node was sending that failed with the link up, and were retried, by reason (crawler_busy, walk_closed, walk_refused, bad_walk_line, fetch_failed, memcached_unreachable, incomplete).',
      labelNames: ['reason'] as const,
      registers,
    }),
    copyDuration: new Gauge({ name: 'memrepl_resync_last_duration_seconds', help: 'How long the last completed full copy took.', registers }),
    linkErrors: new Counter({
      name: 'memrepl_replication_link_errors_total',
      help: 'Replication links closed on an error, by reason.',
      labelNames: ['reason'] as const,
      registers,
    }),
  };
}

export type ReplicationMetrics = ReturnType<typeof createReplicationMetrics>;
