/**
 * The operators' view of a node's replication: `stats replication` (in
 * memcached's STAT format) and the reasons /readyz gives for not ready.
 */
import { formatAddress } from '../sockets';
import type { Contention } from './apply/contention';
import type { Inbox } from './apply/inbox';
import type { CopySender } from './copy/copy-sender';
import type { IncomingCopy } from './copy/incoming-copy';
import type { Link } from './link/link';
import type { PeerLinks } from './link/peer-links';
import type { ReplicationOptions } from './options';
import type { Outbox } from './send/outbox';

/** What the view reads of a running Replicator. */
export interface ReplicationParts {
  options: ReplicationOptions;
  runId: string;
  active: Link | null;
  links: PeerLinks;
  outbox: Outbox;
  inbox: Inbox;
  copySender: CopySender;
  incomingCopy: IncomingCopy;
  contention: Contention;
  lostWrites: number;
  overflowed: number;
}

/** Reasons this node is not ready to take traffic, from replication's point of view. */
export function notReadyReasons({ options, active, links, incomingCopy }: ReplicationParts): string[] {
  const reasons: string[] = [];
  if (options.peer && !active) reasons.push(`replication link to ${formatAddress(options.peer)} is down`);
  const expectsPeer = options.peer !== null || links.everLinked;
  if (expectsPeer && incomingCopy.inProgress && !options.readyBeforeCopy) {
    const said = incomingCopy.status ? ` (the peer: ${incomingCopy.status})` : '';
    reasons.push(`waiting for a full copy from the peer (this memcached is cold)${said}; --ready-before-copy to serve anyway`);
  }
  return reasons;
}

/** `stats replication`. */
export function replicationStats(parts: ReplicationParts): Array<[string, string | number]> {
  const { options, active, outbox, inbox, copySender: copy, incomingCopy } = parts;
  const peer = active?.peer;
  return [
    ['node_id', options.nodeId],
    ['cluster', options.cluster],
    ['run_id', parts.runId],
    ['peer', options.peer ? formatAddress(options.peer) : (active?.label ?? '')],
    ['peer_up', active ? 1 : 0],
    ['links', parts.links.count],
    ['peer_node_id', peer?.nodeId ?? ''],
    ['peer_run_id', peer?.runId ?? ''],
    ['link_uptime', active ? Math.floor((Date.now() - active.openedAt) / 1000) : 0],
    ['last_seq', outbox.lastSeq],
    ['acked_seq', outbox.acknowledgedSeq],
    ['unacked_records', outbox.unacknowledged],
    ['backlog_records', outbox.length],
    ['backlog_bytes', outbox.bytes],
    ['backlog_max_bytes', options.backlogBytes],
    ['backlog_oldest_seq', outbox.oldestSeq],
    ['applied_seq', inbox.position?.seq ?? 0],
    ['full_copy_needed', copy.neededBecause ?? ''],
    ['writes_lost', parts.lostWrites],
    ['conflict_repairs', parts.contention.repairs],
    ['conflict_map_overflows', parts.overflowed],
    ['copy_sending', copy.running ? 1 : 0],
    ['copy_sent_items', copy.sentItems],
    ['copy_expected_items', copy.progress?.expected ?? 0],
    ['copy_rate', copy.progress?.rate ?? 0],
    ['copy_eta_seconds', copy.progress?.etaSeconds ?? ''],
    ['copy_attempt', copy.attempt],
    ['copy_failures', copy.failures],
    ['copy_last_failure', copy.lastFailure ?? ''],
    ['copy_retry_in_ms', copy.retryInMs],
    ['copy_receiving', incomingCopy.inProgress ? 1 : 0],
    ['copy_receiving_status', incomingCopy.status],
    ['copies_received', incomingCopy.received],
    ['copy_impossible', copy.impossible ?? ''],
  ];
}
