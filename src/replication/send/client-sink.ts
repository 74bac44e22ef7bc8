/**
 * What the proxy reports client writes to (WriteSink, proxy/write-sink.ts):
 * each write is ordered with the peer's records on their way to memcached
 * (contention.ts), its effect goes to the recorder, and a client's flush_all
 * takes its turn (client-flushes.ts).
 */
import type { WriteSink } from '../../proxy/write-sink';
import { flushCount, parseStats, STATS_REQUEST } from '../../protocol/text/stats';
import type { Applier } from '../apply/applier';
import type { Contention } from '../apply/contention';
import { ClientFlushes } from '../flush/client-flushes';
import type { LocalMemcached } from '../local-memcached';
import type { Recorder } from './recorder';

export interface ClientSinkDeps {
  recorder: Recorder;
  contention: Contention;
  applier: Applier;
  /** Where memcached's flush count is read. */
  local: LocalMemcached;
  /** A write may have run and could not be replicated. */
  lost(reason: string): void;
  /** How long a client request may wait on memcached (--upstream-timeout). */
  upstreamTimeoutMs: number;
}

export function clientSink({ recorder, contention, applier, local, lost, upstreamTimeoutMs }: ClientSinkDeps): WriteSink {
  const clientFlushes = new ClientFlushes({
    // A client's flush_all goes to memcached alone: after the other clients' writes and the peer's records
    // on their way there, before the ones that come meanwhile (which then find it noted as a flush).
    hold: () => Promise.all([contention.holdClientWrites(), applier.pauseForLocalFlush()]).then(() => {}),
    release: () =>
      recorder.flushNoted.then(() => {
        applier.resumeAfterLocalFlush();
        contention.releaseClientWrites();
      }),
    count: async () => flushCount(parseStats(await local.request(STATS_REQUEST))),
    ran: (delay) => recorder.written({ kind: 'flush', delay }, Date.now()),
    unknown: lost,
    waitLimitMs: upstreamTimeoutMs,
  });
  return {
    writing: (key, writer) => contention.localStarted(key, writer),
    writeEnded: (key) => contention.localEnded(key),
    flushing: () => clientFlushes.turn(),
    written: (effect, at) => recorder.written(effect, at),
  };
}
