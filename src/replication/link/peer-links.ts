/**
 * A node's replication connections: every link still in its handshake, and
 * the one the records flow on (active). Both nodes may dial each other at
 * once; both then keep the link dialled by the smaller node id, so that they
 * agree without another round trip.
 */
import type { ClockOffset } from './clock-offset';
import type { Hello } from './frames/messages';
import type { Link } from './link';

export class PeerLinks {
  private readonly all = new Set<Link>();
  private current: Link | null = null;
  /** The last active link's estimate of the peer's clock, for the next link (see ClockOffset.carryOver). */
  private lastPeerClock: ClockOffset | null = null;
  private lastPeerNodeId = '';
  private linkedOnce = false;

  constructor(private readonly self: { cluster: string; nodeId: string }) {}

  /** The link records flow on, if any. */
  get active(): Link | null {
    return this.current;
  }

  /** Links open, in their handshake or active. */
  get count(): number {
    return this.all.size;
  }

  /** Whether a peer ever completed a handshake with this node (a node without -x learns its peer that way). */
  get everLinked(): boolean {
    return this.linkedOnce;
  }

  add(link: Link): void {
    this.all.add(link);
  }

  /**
   * The peer's HELLO on `link`: true if the link becomes the active one;
   * false if it was refused (and told why in a GOODBYE).
   */
  elect(link: Link, hello: Hello): boolean {
    const { cluster, nodeId } = this.self;
    if (hello.cluster !== cluster) return refuse(link, 'cluster_mismatch', `cluster mismatch: peer is in "${hello.cluster}", this node in "${cluster}"`);
    if (hello.nodeId === nodeId)
      return refuse(link, 'own_id', `peer has this node's own id "${nodeId}" (a node dialling itself, or two nodes with one --node-id)`);
    const current = this.current;
    if (current && current.open) {
      const dialler = (l: Link) => (l.dialled ? nodeId : l.peer!.nodeId);
      const keepNew = dialler(link) === dialler(current) ? true : dialler(link) < dialler(current);
      if (!keepNew) return refuse(link, 'duplicate', 'duplicate link (keeping the other one)');
      this.current = null;
      current.goodbye('duplicate', 'duplicate link (keeping the other one)');
    }
    if (this.lastPeerClock && this.lastPeerNodeId === hello.nodeId) link.peerClock.carryOver(this.lastPeerClock);
    this.current = link;
    this.lastPeerClock = link.peerClock;
    this.lastPeerNodeId = hello.nodeId;
    this.linkedOnce = true;
    return true;
  }

  /** Forgets a closed link. True if it was the active one. */
  closed(link: Link): boolean {
    this.all.delete(link);
    if (link !== this.current) return false;
    this.current = null;
    return true;
  }

  /** Says goodbye on every link (shutdown). */
  goodbyeAll(reason: string): void {
    for (const link of [...this.all]) link.goodbye('shutdown', reason);
  }
}

function refuse(link: Link, code: Parameters<Link['goodbye']>[0], reason: string): false {
  link.goodbye(code, reason);
  return false;
}
