/**
 * The parts of one node's replication, built from its options and wired to
 * one another. What a part reports that the coordinator (replicator.ts) must
 * decide on goes to it (Coordinator); the rest goes from part to part here.
 *
 * The order matters where a part is handed another: the contention is made
 * before the recorder whose read backs it orders (it repairs through the
 * recorder by a closure), and the events of the parts
 * made early (the flush edge, the recorder, the applier) reach the ones made
 * later (the inbox, the sender, the restart watch) through closures.
 */
import type * as net from 'node:net';
import type { Logger } from '../log';
import type { WriteSink } from '../proxy/write-sink';
import { formatAddress, type UpstreamAddress } from '../sockets';
import { Applier } from './apply/applier';
import { CheckpointFile } from './apply/checkpoint-file';
import { Contention } from './apply/contention';
import { Inbox } from './apply/inbox';
import { KnownExpiries } from './binary-keys';
import { HistoryKeeping } from './conflict/history-keeping';
import { HybridClock } from './conflict/hlc';
import { RecentWrites } from './conflict/recent-writes';
import { CopySender } from './copy/copy-sender';
import { IncomingCopy } from './copy/incoming-copy';
import { FlushEdge, type FlushEdgeEvents } from './flush/flush-edge';
import { FlushSchedule } from './flush/flush-schedule';
import { FlushScheduleFile } from './flush/flush-schedule-file';
import { FlushRestore } from './flush/flush-restore';
import { serializeAck } from './link/frames/serializer';
import { PeerDialer } from './link/peer-dialer';
import { PeerLinks } from './link/peer-links';
import { replicationServer } from './link/transport';
import { WritePacer } from './link/write-pacer';
import { LocalConnections } from './local-memcached';
import type { ReplicationMetrics } from './metrics';
import { ACK_EVERY_MS, CONFLICT_MAP_BOUNDS, EXPIRY_UNKNOWN_LOG_EVERY_MS, type ReplicationOptions } from './options';
import { type MemcachedIdentity, RestartWatch } from './restart-watch';
import { StaleClock } from './send/stale-clock';
import { clientSink } from './send/client-sink';
import { Outbox } from './send/outbox';
import { type LocalHistory, Recorder } from './send/recorder';
import { StreamSender } from './send/stream-sender';

/** What the parts hand to the coordinator: the decisions are its. */
export interface Coordinator {
  /** The options now: a reload replaces some (see Replicator.update), and the dialer and copies read them at each use. */
  options(): ReplicationOptions;
  /** This node dialled the peer: `label` names it for the log. */
  dialled(socket: net.Socket, label: string): void;
  /** A connection came in on the replication port. */
  accepted(socket: net.Socket): void;
  /** The peer fell further behind than the backlog holds (see StreamSender). */
  peerFellBehind(): void;
  /** A write may have run and could not be replicated. */
  writeLost(reason: string): void;
  /** A record of the peer's could not be applied: the link must be reset. */
  applyFailed(reason: string): void;
  /** Fewer records are on their way to memcached: the link may be read again. */
  drained(): void;
  /** The local memcached restarted behind us (see RestartWatch). */
  memcachedRestarted(before: MemcachedIdentity, after: MemcachedIdentity): void;
}

/** What the coordinator drives; the clock and the memory of this node's writes stay among the parts. */
export interface Components {
  sink: WriteSink;
  links: PeerLinks;
  outbox: Outbox;
  memcached: LocalConnections;
  flushEdge: FlushEdge;
  flushRestore: FlushRestore;
  keeping: HistoryKeeping;
  contention: Contention;
  applier: Applier;
  sender: StreamSender;
  dialer: PeerDialer;
  copySender: CopySender;
  inbox: Inbox;
  incomingCopy: IncomingCopy;
  restartWatch: RestartWatch;
  server: net.Server;
}

/** `options`: as the node started (a reload does not change what is read here, see Coordinator.options). */
export function buildComponents(
  options: ReplicationOptions,
  upstream: UpstreamAddress,
  metrics: ReplicationMetrics,
  log: Logger,
  coordinator: Coordinator,
): Components {
  const clock = new HybridClock(options.nodeId);
  const links = new PeerLinks(options);
  const outbox = new Outbox({ maxBytes: options.backlogBytes });
  const memcached = new LocalConnections(upstream, options.connectTimeoutMs, () => restartWatch.disconnected());
  const flushScheduleFile = new FlushScheduleFile(options.stateDir, options.nodeId, log);
  const values = new RecentWrites({ windowMs: options.conflictWindowMs, ...CONFLICT_MAP_BOUNDS.values });
  const touches = new RecentWrites({ windowMs: options.conflictWindowMs, ...CONFLICT_MAP_BOUNDS.touches });
  const writes = {
    applierIdle: () => applier.idle(),
    holdClientWrites: (timeoutMs: number) => contention.holdClientWrites(timeoutMs),
    releaseClientWrites: () => contention.releaseClientWrites(),
  };
  const flushEdge = new FlushEdge(memcached.applier, values, writes, flushEdgeEvents(log));
  const history: LocalHistory = {
    values,
    touches,
    flushes: new FlushSchedule(Date.now, {
      pending: (at) => flushEdge.scheduled(at),
      changed: (memory) => flushScheduleFile.save(memory),
    }),
    nearFlush: flushEdge,
    expiries: new KnownExpiries(),
  };
  const keeping = new HistoryKeeping([values, touches], options.conflictWindowMs);
  // No peer has seen anything yet: remember every write until one has.
  keeping.hold(true);
  const lost = (reason: string) => coordinator.writeLost(reason);
  // Read backs are ordered by the contention, which repairs through them.
  const contention = new Contention((key) => recorder.written({ kind: 'readback', key, answered: false }, Date.now()));
  // A pause the restart watch saw has items read again; not from another memcached (the monitor's connection dropped).
  const staleClock = new StaleClock(
    (key) => recorder.readAgain(key),
    () => memcached.monitor.drops,
  );
  const recorder = new Recorder(
    outbox,
    clock,
    history,
    memcached.readback,
    memcached.readbackBinary,
    contention,
    staleClock,
    {
      appended: () => {
        sender.schedule();
        keeping.recorded(Date.now(), outbox.unacknowledged);
      },
      lost,
      replayed: (reason) => log.warn(`replication: ${reason}`),
      expiryUnknown: expiryUnknownWarning(metrics, log),
    },
    // Read backs believe memcached only while it holds what it held (see Recorder.readNow).
    () => !restartWatch.unverified && !inbox.cold,
  );
  const applier = new Applier(memcached.applier, memcached.applierBinary, clock, history, contention, metrics, options.nodeId, {
    batchAnswered: (answered, error) => inbox.batchAnswered(answered, error),
    drained: () => coordinator.drained(),
    refused: (reason) => log.warn(`replication: ${reason}`),
  });
  const sink = clientSink({ recorder, contention, applier, local: memcached.readback, lost, upstreamTimeoutMs: options.upstreamTimeoutMs });
  const sender = new StreamSender(
    outbox,
    () => links.active,
    () => coordinator.peerFellBehind(),
    metrics,
    log,
  );
  const dialer = new PeerDialer(
    () => coordinator.options(),
    () => links.active !== null,
    (socket, label) => coordinator.dialled(socket, label),
    log,
  );
  const copySender = new CopySender({
    upstream,
    options: () => coordinator.options(),
    clock,
    values,
    flushes: history.flushes,
    whenApplied: (seq, timeoutMs) => inbox.whenApplied(seq, timeoutMs),
    isActive: (link) => link === links.active,
    metrics,
    log,
  });
  const { stateDir: dir, nodeId, cluster } = options;
  const running = () => restartWatch.current;
  const checkpoint = new CheckpointFile({ dir, nodeId, cluster, memcachedAddress: formatAddress(upstream), memcached: running }, log);
  const inbox = new Inbox(applier, checkpoint, metrics, {
    applied: () => acks.schedule(),
    failed: (reason) => coordinator.applyFailed(reason),
    copyDrained: () => coordinator.drained(),
  });
  const acks = ackSender(inbox, links);
  const incomingCopy = new IncomingCopy(inbox, metrics, log);
  const restartWatch = new RestartWatch(
    memcached.monitor,
    (before, after) => coordinator.memcachedRestarted(before, after),
    () => outbox.lastSeq,
    (askedAt, answeredAt) => staleClock.polled(askedAt, answeredAt),
  );
  const server = replicationServer(
    options.tls,
    (socket) => coordinator.accepted(socket),
    (error) => {
      metrics.linkErrors.labels('tls').inc();
      log.warn(`replication: refused a TLS connection: ${error.message}`);
    },
  );
  const flushRestore = new FlushRestore(history.flushes, flushScheduleFile, applier, log);
  return {
    sink,
    links,
    outbox,
    memcached,
    flushEdge,
    flushRestore,
    keeping,
    contention,
    applier,
    sender,
    dialer,
    copySender,
    inbox,
    incomingCopy,
    restartWatch,
    server,
  };
}

function flushEdgeEvents(log: Logger): FlushEdgeEvents {
  return {
    checked: ({ read, deleted, storedBack, unnoted }) => {
      if (deleted + storedBack + unnoted > 0) {
        log.info(
          `replication: ${read} keys written around a delayed flush_all's moment checked: ${deleted} deleted, ${storedBack} stored back (memcached flushes on its own one-second clock)${unnoted > 0 ? `; ${unnoted} more written then not checked` : ''}`,
        );
      }
    },
    failed: (reason) => log.warn(`replication: ${reason}`),
  };
}

/**
 * A key no text command can name was read back (append, incr) but this
 * node does not know its expiry: the peer deletes the key rather than hold
 * an item that could outlive this one. Counted, not a full copy.
 */
function expiryUnknownWarning(metrics: ReplicationMetrics, log: Logger): (key: Buffer) => void {
  let lastLog = 0;
  return (key) => {
    metrics.recordsSkipped.labels('expiry_unknown').inc();
    const now = Date.now();
    if (now - lastLog < EXPIRY_UNKNOWN_LOG_EVERY_MS) return;
    lastLog = now;
    log.warn(
      `replication: the expiry of "${key.toString('latin1').slice(0, 60)}" (${key.length} bytes, only the binary protocol can name it) is not known here; the peer deletes the key instead (counted in memrepl_replication_records_skipped_total{reason="expiry_unknown"})`,
    );
  };
}

/** Acknowledges what memcached has applied: at the end of this turn, or ACK_EVERY_MS after the last acknowledgement. */
function ackSender(inbox: Inbox, links: PeerLinks): WritePacer {
  const pacer = new WritePacer(ACK_EVERY_MS, () => {
    const seq = inbox.ackSeq;
    const link = links.active;
    if (!link || seq === null) return;
    link.write(serializeAck(seq));
    pacer.wrote();
  });
  return pacer;
}
