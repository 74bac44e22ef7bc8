/**
 * One node's side of master/master replication, the way repcached paired two
 * memcacheds: listen on the replication port, dial the peer given with -x,
 * keep exactly one link, stream this node's records (outbox) to the peer and
 * apply the peer's (inbox → applier).
 *
 * On every (re)connection the peer says in its HELLO which of our records it
 * applied last. If that record is still in our backlog we send the rest
 * (partial resync). Otherwise (the peer restarted with an empty memcached, or
 * fell further behind than the backlog holds) only a full copy can make it
 * whole: that is never silently skipped.
 *
 * The parts are built, and wired to one another, in components.ts: what is
 * left here is what each link does, and when a full copy is needed.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { randomUUID } from 'node:crypto';
import type * as net from 'node:net';
import type { Logger } from '../log';
import type { WriteSink } from '../proxy/write-sink';
import type { UpstreamAddress } from '../sockets';
import { type Applier, APPLYING_PAUSE_ABOVE } from './apply/applier';
import type { Frame, Hello } from './link/frames/messages';
import { serializeFullCopyRequest } from './link/frames/serializer';
import type { CopySender } from './copy/copy-sender';
import type { MemcachedIdentity, RestartWatch } from './restart-watch';
import { renewReplicationTls } from './link/transport';
import type { PeerDialer } from './link/peer-dialer';
import type { HistoryKeeping } from './conflict/history-keeping';
import type { StreamSender } from './send/stream-sender';
import type { PeerLinks } from './link/peer-links';
import type { IncomingCopy } from './copy/incoming-copy';
import type { Contention } from './apply/contention';
import { HLC_ZERO, type Hlc } from './conflict/hlc';
import { COPY_PAUSE_ABOVE, type Inbox } from './apply/inbox';
import { isLinkError, Link, type LinkCloseCode, type LinkHandler } from './link/link';
import type { LocalConnections } from './local-memcached';
import type { ReplicationMetrics } from './metrics';
import type { Outbox } from './send/outbox';
import type { FlushEdge } from './flush/flush-edge';
import type { FlushRestore } from './flush/flush-restore';
import { CATCH_UP_WAIT_MS, type LiveReplicationOptions, type ReplicationOptions } from './options';
import { notReadyReasons, type ReplicationParts, replicationStats } from './status';
import { buildComponents } from './components';

export class Replicator implements LinkHandler {
  readonly runId = randomUUID();
  readonly sink: WriteSink;
  private readonly links: PeerLinks;
  private readonly outbox: Outbox;
  private readonly memcached: LocalConnections;
  private readonly flushEdge: FlushEdge;
  private readonly flushRestore: FlushRestore;
  private readonly keeping: HistoryKeeping;
  private readonly contention: Contention;
  private readonly applier: Applier;
  private readonly sender: StreamSender;
  private readonly dialer: PeerDialer;
  private readonly copySender: CopySender;
  private readonly inbox: Inbox;
  private readonly incomingCopy: IncomingCopy;
  private readonly restartWatch: RestartWatch;
  private readonly server: net.Server;
  /** Where the peer's stream ended when it last said (HELLO or request): a copy to it waits until that is applied here. */
  private peerLastSeq = 0;
  /**
   * Per link, the stamp of our last record when we last told the peer on it
   * where our stream ends (HELLO, FULL_COPY_REQUEST): what a copy from a peer
   * that does not say what it covers (RESYNC_BEGIN covers) covers.
   */
  private readonly coverageSaid = new WeakMap<Link, Hlc>();
  private stopped = false;
  private lostWrites = 0;

  constructor(
    private options: ReplicationOptions,
    upstream: UpstreamAddress,
    private readonly metrics: ReplicationMetrics,
    private readonly log: Logger,
  ) {
    const components = buildComponents(options, upstream, metrics, log, {
      options: () => this.options,
      dialled: (socket, label) => this.adoptSocket(socket, true, label),
      accepted: (socket) => this.accept(socket),
      peerFellBehind: () => this.needFullCopy('the peer fell further behind than the backlog holds', true),
      writeLost: (reason) => this.writeLost(reason),
      applyFailed: (reason) => this.active?.close('apply_failed', `could not apply a record: ${reason}`),
      drained: () => this.resumeLinkIfDrained(),
      memcachedRestarted: (before, after) => this.memcachedRestarted(before, after),
    });
    ({
      sink: this.sink,
      links: this.links,
      outbox: this.outbox,
      memcached: this.memcached,
      flushEdge: this.flushEdge,
      flushRestore: this.flushRestore,
      keeping: this.keeping,
      contention: this.contention,
      applier: this.applier,
      sender: this.sender,
      dialer: this.dialer,
      copySender: this.copySender,
      inbox: this.inbox,
      incomingCopy: this.incomingCopy,
      restartWatch: this.restartWatch,
      server: this.server,
    } = components);
  }

  /**
   * A reload: the secret and TLS material count from the next handshake (the
   * link up now stays up), the copy pace from the next copy. Turning TLS on or off needs a restart.
   */
  update(live: LiveReplicationOptions): void {
    const tls = live.tls && renewReplicationTls(this.server, live.tls) ? live.tls : this.options.tls;
    this.options = { ...this.options, ...live, tls };
  }

  async start(): Promise<net.AddressInfo> {
    // The checkpoint holds only for the memcached it names: see which one is running first.
    await this.restartWatch.check();
    this.flushRestore.restoreSaved();
    this.inbox.loadCheckpoint();
    // No checkpoint: this memcached holds nothing we know of from the peer; it is cold until a full copy arrives.
    if (this.inbox.position === null) this.inbox.forget();
    await this.copySender.checkDumping(this.memcached.monitor);
    this.restartWatch.start();
    const address = await new Promise<net.AddressInfo>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.options.listenPort, this.options.listenHost, () => {
        this.server.removeListener('error', reject);
        resolve(this.server.address() as net.AddressInfo);
      });
    });
    this.server.on('error', (error) => this.log.error(`replication listener: ${error.message}`));
    this.log.info('replication: listen');
    this.dialer.dial();
    return address;
  }

  // ------------------------------------------------------------ connections

  private get active(): Link | null {
    return this.links.active;
  }

  private accept(socket: net.Socket): void {
    if (this.stopped) {
      socket.destroy();
      return;
    }
    this.log.info('replication: accept');
    this.adoptSocket(socket, false, `${socket.remoteAddress}:${socket.remotePort}`);
  }

  private adoptSocket(socket: net.Socket, dialled: boolean, label: string): void {
    const { maxFrameBytes, handshakeTimeoutMs, pingIntervalMs, idleTimeoutMs } = this.options;
    const { secret, cluster, nodeId } = this.options;
    const auth = secret ? { secret, cluster, nodeId } : null;
    const link = new Link(socket, dialled, label, maxFrameBytes(), { handshakeTimeoutMs, pingIntervalMs, idleTimeoutMs }, this, auth);
    this.links.add(link);
    this.coverageSaid.set(link, this.lastRecordStamp());
    link.sendHello(this.hello());
  }

  private hello(): Hello {
    return {
      cluster: this.options.cluster,
      nodeId: this.options.nodeId,
      runId: this.runId,
      lastApplied: this.inbox.position,
      time: Date.now(),
      lastSeq: this.outbox.lastSeq,
      maxFrameBytes: this.options.maxFrameBytes(),
      opRecords: true,
      pingInbound: true,
    };
  }

  // ------------------------------------------------------------ LinkHandler

  frame(link: Link, frame: Frame): void {
    switch (frame.type) {
      case 'hello':
        return this.handshake(link, frame);
      case 'record':
        if (link !== this.active) return;
        // Expiry counts from when the peer sent the record, on our clock: time spent in transit is not added to the item's life.
        if (!this.inbox.receive(frame, link.peer!.nodeId, link.peerClock.localTime(frame.sentAt, Date.now()))) {
          link.goodbye('out_of_sequence', `record ${frame.seq} out of sequence`);
        }
        if (this.applyingTooMuch()) link.pauseReading();
        return;
      case 'ack':
        if (link === this.active) this.acknowledged(frame.seq);
        return;
      case 'goodbye':
        link.close('peer_goodbye', `peer said goodbye: ${frame.reason}`);
        return;
      case 'resyncBegin':
        if (link !== this.active) return;
        this.applier.copyCovers = frame.covers === undefined ? (this.coverageSaid.get(link) ?? HLC_ZERO) : this.stampOfSeq(frame.covers);
        this.incomingCopy.began(frame.reason);
        return;
      case 'resyncEnd':
        if (link === this.active) this.incomingCopy.ended(frame.items);
        return;
      case 'fullCopyRequest':
        if (link !== this.active) return;
        // A copy already under way went partly into the memcached the peer just lost: start over.
        this.copySender.abort('the peer asked for a new copy');
        this.peerLastSeq = frame.lastSeq ?? 0;
        this.needFullCopy(`the peer asked for one: ${frame.reason}`, frame.overwrite === true, true);
        return;
      case 'ping':
        return;
    }
  }

  writable(link: Link): void {
    if (link !== this.active) return;
    this.sender.pump();
    this.copySender.writable();
  }

  closed(link: Link, code: LinkCloseCode, reason: string): void {
    const wasActive = this.links.closed(link);
    const error = isLinkError(code);
    if (error) this.metrics.linkErrors.labels(code).inc();
    // A dropped connection is routine (restarts); a peer breaking the protocol is worth a warning at any verbosity.
    const say = error && code !== 'connection' ? this.log.warn : this.log.info;
    say(`replication: close (peer=${link.label}: ${reason})`);
    if (!wasActive) {
      if (link.dialled && !this.active) this.dialer.later();
      return;
    }
    this.sender.stop();
    this.keeping.hold(true);
    this.copySender.linkClosed();
    this.incomingCopy.linkClosed();
    this.metrics.peerUp.set(0);
    this.dialer.later();
  }

  /** Flow control of the peer's records: more in flight to memcached than it should hold. */
  private applyingTooMuch(): boolean {
    return this.inbox.copiesApplying > COPY_PAUSE_ABOVE || this.applier.bytesApplying > APPLYING_PAUSE_ABOVE;
  }

  private resumeLinkIfDrained(): void {
    if (!this.applyingTooMuch()) this.active?.resumeReading();
  }

  private handshake(link: Link, hello: Hello): void {
    if (!this.links.elect(link, hello)) return;
    this.dialer.succeeded();
    this.metrics.peerUp.set(1);
    const peerRestarted = this.inbox.followedRun !== null && this.inbox.followedRun !== hello.runId;
    this.inbox.peerRun(hello.runId);
    this.peerLastSeq = hello.lastSeq ?? 0;
    this.log.info('replication: start');
    this.startStream(hello);
    this.releaseHistoryWhenCaughtUp(link, hello.lastSeq ?? 0);
    // The peer's proxy restarted: what it acknowledged but had not shipped (writes, deletes) exists on its side only,
    // and the two caches may differ key by key. Both sides copy (the restarted one does too, see startStream): keys on
    // either side end on both, and where both hold a key the smaller node id's value wins (see copyMode). Unless this
    // node's memcached holds only a mirror of the peer's (see holdsOnlyMirror): then the peer's values win everywhere
    // but where this node wrote since (a set-mode copy from here would put its older state back over them), and
    // this node's copy only fills keys the peer lacks, as its unshipped deletes (CI seed 1: without it, one key
    // stayed on this node only).
    if (peerRestarted && this.holdsOnlyMirror()) {
      this.askForCopy(link, 'the peer restarted, and this node holds only a mirror of it', true);
      this.copySender.need(link, 'the peer restarted: filling keys it lacks', 'add', this.peerLastSeq);
    } else if (peerRestarted) this.needFullCopy('the peer restarted: reconciling');
    else if (this.keeping.overflowedWhileHeld)
      this.needFullCopy('the conflict map overflowed while the peer was away, so last writer wins cannot decide every key: reconciling');
  }

  /** Stops holding once this node applied everything the peer had when it said HELLO. */
  private releaseHistoryWhenCaughtUp(link: Link, peerLastSeq: number): void {
    void this.inbox.whenApplied(peerLastSeq, CATCH_UP_WAIT_MS).then((caughtUp) => {
      if (this.active !== link) return;
      if (caughtUp) this.keeping.hold(false);
      else this.releaseHistoryWhenCaughtUp(link, peerLastSeq);
    });
  }

  /**
   * How a full copy stores items on the peer. When both nodes hold data, one
   * side must win for keys that differ, and both must agree which: the node
   * with the smaller node id copies with set (its value wins, except over
   * writes the peer remembers making since), the other with add (it only fills
   * keys missing there). A peer that fell behind our backlog gets set: our
   * state is simply newer.
   */
  private copyMode(peerBehind: boolean): 'add' | 'set' {
    return peerBehind || this.options.nodeId < (this.active?.peer?.nodeId ?? '') ? 'set' : 'add';
  }

  /** Where to resume sending after a (re)connection: partial resync, or everything this run has plus a full copy. */
  private startStream(hello: Hello): void {
    const last = hello.lastApplied;
    if (last && last.runId === this.runId) {
      if (this.sender.startAfter(last.seq)) {
        const pending = this.sender.pending;
        if (pending > 0) {
          this.metrics.resyncs.labels('partial').inc();
          this.log.info(`replication: partial resync (${pending} records after #${last.seq})`);
        }
        if (last.seq > 0) this.outbox.acknowledge(last.seq);
        return;
      }
      this.needFullCopy(`the peer applied up to #${last.seq}, older than the backlog holds (#${this.outbox.oldestSeq})`, true);
    } else if (last) {
      this.needFullCopy('the peer followed an earlier run of this node');
    } else {
      // A peer that names no position waits for a copy before it is ready (its memcached restarted while the link
      // was down, or its proxy has no checkpoint): that is its request, as a FULL_COPY_REQUEST is. Seed 31 (120 s):
      // skipped as a copy from a memcached that holds only a mirror, it left the peer cold for good.
      this.needFullCopy('the peer has applied nothing from this node', false, true);
    }
    // Send what this run still holds; the copy covers the rest.
    this.sender.startAfter(this.outbox.oldestSeq - 1);
  }

  /**
   * `overwrite`: the peer is behind the backlog (the copy also moves its place
   * in the stream past the gap); `requested`: the peer asked for it (its
   * memcached restarted empty, or it names no position). Neither is skipped.
   */
  private needFullCopy(reason: string, overwrite = false, requested = false): void {
    if (!requested && !overwrite && this.holdsOnlyMirror()) {
      this.log.info(
        `replication: no full copy (${reason}): this node's memcached restarted since record #${this.restartWatch.refillFrom}, and every record since is in the stream`,
      );
      return;
    }
    this.copySender.need(this.active, reason, this.copyMode(overwrite), this.peerLastSeq, requested);
  }

  /**
   * This node's memcached restarted during this run, and the backlog still
   * holds every record since: whatever that memcached holds came from the
   * peer, or has its record in the stream. A full copy would only send the
   * peer its own state back, some of it older than its writes since.
   */
  private holdsOnlyMirror(): boolean {
    const { refillFrom } = this.restartWatch;
    return refillFrom !== null && this.outbox.oldestSeq <= refillFrom + 1;
  }

  /** The local memcached restarted behind us: it is empty, so ask the peer for everything. */
  private memcachedRestarted(before: MemcachedIdentity, after: MemcachedIdentity): void {
    this.log.warn(`replication: local memcached restarted (pid ${before.pid} -> ${after.pid}); asking the peer for a full copy`);
    this.flushRestore.memcachedRestarted();
    this.inbox.forget();
    this.copySender.dropUnrequested("this node's memcached restarted: it holds nothing of its own to copy");
    if (!this.active) return this.metrics.resyncs.labels('requested').inc(); // the next HELLO asks (no position)
    this.askForCopy(this.active, 'its memcached restarted empty', false);
  }

  /** Asks the peer for a full copy; `overwrite`: in set mode whatever the node ids (see FullCopyRequest). */
  private askForCopy(link: Link, reason: string, overwrite: boolean): void {
    this.metrics.resyncs.labels('requested').inc();
    if (overwrite) this.log.info(`replication: asking the peer for a full copy that overwrites this node's: ${reason}`);
    this.coverageSaid.set(link, this.lastRecordStamp());
    link.write(serializeFullCopyRequest({ reason, lastSeq: this.outbox.lastSeq, overwrite: overwrite || undefined }));
  }

  /**
   * The stamp of the record numbered `seq`: a copy the peer sends covers our
   * writes up to there (see Applier.copyCovers). The record's stamp, not the
   * clock's: writes still being read back (append, incr) were stamped earlier
   * but get their records, and seqs, later. A seq the backlog no longer holds
   * is older than anything the conflict maps remember.
   */
  private stampOfSeq(seq: number): Hlc {
    return this.outbox.get(seq)?.hlc ?? HLC_ZERO;
  }

  private lastRecordStamp(): Hlc {
    return this.stampOfSeq(this.outbox.lastSeq);
  }

  // ------------------------------------------------------------ sending

  private acknowledged(seq: number): void {
    const now = Date.now();
    if (!this.sender.acknowledged(seq, now)) return;
    this.keeping.acknowledged(now, this.outbox.get(seq)?.hlc.wall, this.outbox.unacknowledged);
  }

  private writeLost(reason: string): void {
    this.lostWrites++;
    this.metrics.recordsLost.inc();
    this.needFullCopy(`a write could not be replicated: ${reason}`);
  }

  // ------------------------------------------------------------ operators' view

  get peerUp(): boolean {
    return this.active !== null;
  }

  /** Reasons this node is not ready to take traffic, from replication's point of view. */
  notReady(): string[] {
    return notReadyReasons(this.parts());
  }

  /** Things an operator should know that do not make the node unready. */
  notes(): string[] {
    return this.copySender.notes();
  }

  /** `stats replication`, in memcached's STAT format. */
  stats(): Array<[string, string | number]> {
    return replicationStats(this.parts());
  }

  private parts(): ReplicationParts {
    const { options, runId, active, links, outbox, inbox, copySender, incomingCopy, contention, lostWrites } = this;
    return { options, runId, active, links, outbox, inbox, copySender, incomingCopy, contention, lostWrites, overflowed: this.keeping.overflowed };
  }

  // ------------------------------------------------------------ shutdown

  /** Stops accepting, gives the peer up to `timeoutMs` to acknowledge what we sent, then closes. */
  async stop(timeoutMs: number): Promise<void> {
    this.stopped = true;
    this.dialer.stop();
    this.server.close();
    const deadline = Date.now() + timeoutMs;
    while (this.active && this.outbox.unacknowledged > 0 && Date.now() < deadline) {
      this.sender.pump();
      await sleep(10);
    }
    this.copySender.stop();
    this.restartWatch.stop();
    this.flushEdge.stop();
    this.inbox.saveCheckpoint();
    this.inbox.stop();
    this.links.goodbyeAll('shutting down');
    this.memcached.close();
  }
}
