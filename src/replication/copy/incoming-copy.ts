/**
 * A full copy the peer is sending this node, as operators see it: the
 * reason the peer gave, the copies received, the metric and repcached's
 * "marugoto" log lines. The inbox applies the records themselves.
 */
import type { Logger } from '../../log';
import type { Inbox } from '../apply/inbox';
import type { ReplicationMetrics } from '../metrics';

export class IncomingCopy {
  /** What the peer said of the copy under way (its RESYNC_BEGIN reason); '' when none is. */
  private said = '';
  private count = 0;

  constructor(
    private readonly inbox: Inbox,
    private readonly metrics: ReplicationMetrics,
    private readonly log: Logger,
  ) {}

  get inProgress(): boolean {
    return this.inbox.copyInProgress;
  }

  /** The peer's reason for the copy under way; '' when none is. */
  get status(): string {
    return this.inbox.copyInProgress ? this.said : '';
  }

  get received(): number {
    return this.count;
  }

  began(reason: string | undefined): void {
    this.inbox.copyStarted();
    this.said = reason ?? '';
    this.metrics.copyInProgress.labels('receiving').set(1);
    this.log.info(`replication: marugoto start (${reason ?? 'full copy'})`);
  }

  ended(items: number | undefined): void {
    this.inbox.copyFinished();
    this.said = '';
    this.count++;
    this.metrics.copyInProgress.labels('receiving').set(0);
    this.log.info(`replication: marugoto ${items ?? 0}`);
    this.log.info('replication: marugoto owari');
  }

  /** The link it came on closed: the copy stops there (the next link brings a new one). */
  linkClosed(): void {
    this.said = '';
    this.metrics.copyInProgress.labels('receiving').set(0);
  }
}
