/**
 * A delayed flush_all memcached may have lost, given to it again: the one an
 * earlier run of memrepl knew of (flush-schedule-file.ts), and the one this
 * node's memcached had scheduled when it restarted.
 */
import type { Logger } from '../../log';
import type { Applier } from '../apply/applier';
import type { Stamp } from '../conflict/hlc';
import type { FlushSchedule } from './flush-schedule';
import type { FlushScheduleFile } from './flush-schedule-file';

export class FlushRestore {
  constructor(
    private readonly flushes: FlushSchedule,
    private readonly file: FlushScheduleFile,
    private readonly applier: Pick<Applier, 'scheduleFlush'>,
    private readonly log: Logger,
  ) {}

  /**
   * What an earlier run of memrepl knew of flush_all: known again, and a
   * flush memcached had scheduled given to it again (a no-op if it kept it;
   * it may have restarted too).
   */
  restoreSaved(): void {
    const memory = this.file.load();
    const pending = memory ? this.flushes.restore(memory) : null;
    if (pending) this.reschedule(pending.at);
  }

  /** The local memcached restarted: the flush it had scheduled went with its data. */
  memcachedRestarted(): void {
    const pending = this.flushes.state.pendingAt;
    if (pending) this.reschedule(pending);
  }

  /**
   * Gives memcached again a delayed flush it lost by restarting, ahead of the
   * full copy that refills it: the copy's items are stored before the moment,
   * and go at it, as on the peer.
   */
  private reschedule(at: Stamp): void {
    const when = new Date(at.wall).toISOString();
    this.applier.scheduleFlush(at).then(
      () => this.log.info(`replication: scheduled again on memcached the flush_all due at ${when}`),
      (error: Error) => this.log.warn(`replication: could not schedule again on memcached the flush_all due at ${when}: ${error.message}`),
    );
  }
}
