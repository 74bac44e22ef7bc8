/**
 * Wires one memrepl node together: client listener → sessions → shared
 * upstream connections and the pool, the metrics/health HTTP port, and graceful shutdown.
 */
import type * as http from 'node:http';
import { Registry } from 'prom-client';
import { Config, DEFAULT_ITEM_SIZE, DEFAULT_REQS_PER_EVENT, MAX_MULTIGET_LINE } from './config';
import { startHttp, type HealthChecks } from './http';
import type { Logger } from './log';
import type { LiveSettings } from './reload';
import { registerDefaultMetrics, registerHealthMetrics, registerReplicationStateMetrics } from './metrics';
import { createProxyMetrics } from './proxy/metrics';
import type { ClientLatency } from './proxy/client-latency';
import { discardWrites } from './proxy/write-sink';
import type { RequestParserLimits } from './protocol/text/request-parser';
import { createReplicationMetrics } from './replication/metrics';
import { LINK_TIMING, type ReplicationOptions } from './replication/options';
import { Replicator } from './replication/replicator';
import { Listener } from './proxy/listener';
import { textDialect, type ProxyStats } from './proxy/text-exchange';
import { binaryDialect } from './proxy/binary-exchange';
import { Upstream } from './proxy/upstream';
import { formatAddress, parseAddress } from './sockets';
import { SharedUpstream } from './proxy/shared-upstream';

export interface RunningServer {
  clientPort: number;
  metricsPort: number | null;
  /** A reload's live settings (see reload.ts); open connections and the link stay up. */
  update(live: LiveSettings): void;
  stop(): Promise<void>;
}

export async function startServer(config: Config, log: Logger): Promise<RunningServer> {
  const registry = new Registry();
  registerDefaultMetrics(registry);
  const metrics = createProxyMetrics(registry);
  const upstreamOptions = {
    maxConnections: config.maxConnections,
    connectTimeoutMs: config.connectTimeoutMs,
    acquireTimeoutMs: config.connectTimeoutMs,
    replyTimeoutMs: config.upstreamTimeoutMs,
  };
  const address = parseAddress(config.upstream, 11211);
  const upstreams = { text: new Upstream(address, upstreamOptions), binary: new Upstream(address, upstreamOptions) };
  const upstream = upstreams.text;
  // Sessions share a few connections per protocol (memcached fixes a connection's protocol at its first byte).
  const sharedOptions = { connections: config.sharedConnections, connectTimeoutMs: config.connectTimeoutMs, replyTimeoutMs: config.upstreamTimeoutMs };
  const limits: RequestParserLimits = {
    maxItemSize: config.maxItemSize ?? DEFAULT_ITEM_SIZE,
    maxMultigetLine: MAX_MULTIGET_LINE,
    reqsPerEvent: DEFAULT_REQS_PER_EVENT,
  };
  await learnSettings(upstream, limits, config.maxItemSize === undefined, log);

  // Replication port 0 turns replication off: a plain proxy.
  const replicator =
    config.replicationPort === 0
      ? null
      : new Replicator(replicationOptions(config, limits, metrics.clientLatency), address, createReplicationMetrics(registry), log);
  await replicator?.start();
  // Full copies pace themselves by how late the event loop runs too (see client-latency.ts).
  if (replicator) metrics.clientLatency.watchLoop();
  const sink = replicator?.sink ?? discardWrites;
  const proxyStats: ProxyStats = replicator ? { replication: () => replicator.stats() } : {};

  const shared = {
    text: new SharedUpstream(address, sharedOptions, textDialect(limits).newReplyParser, log),
    binary: new SharedUpstream(address, sharedOptions, binaryDialect(limits).newReplyParser, log),
  };
  const listener = new Listener(
    { port: config.port, host: config.listen, maxConnections: config.maxConnections, idleTimeoutMs: config.idleTimeoutMs, tls: config.clientTls },
    { text: () => textDialect(limits, proxyStats), binary: () => binaryDialect(limits) },
    { upstreams, shared, sink, metrics, log, options: { maxPendingRequests: config.maxPendingRequests } },
  );
  const bound = await listener.listen();
  log.info(`server listening on ${bound.address}:${bound.port}, upstream memcached ${formatAddress(address)}`);

  const health = healthChecks(upstream, replicator);
  registerHealthMetrics(registry, health);
  if (replicator) registerReplicationStateMetrics(registry, () => replicator.stats());
  let httpServer: http.Server | null = null;
  if (config.metricsPort > 0) httpServer = await startHttp(config.metricsPort, config.metricsListen, registry, health);

  return {
    clientPort: bound.port,
    metricsPort: httpServer ? (httpServer.address() as { port: number }).port : null,
    update(live) {
      log.setVerbosity(live.verbose);
      listener.update({ idleTimeoutMs: live.idleTimeoutMs, tls: live.clientTls });
      replicator?.update({ secret: live.replicationSecret, tls: live.replicationTls, copyRatePerSecond: live.resyncRate });
    },
    async stop() {
      log.info('shutting down: no new connections, finishing in-flight requests');
      await listener.close(config.shutdownTimeoutMs);
      await replicator?.stop(config.shutdownTimeoutMs);
      metrics.clientLatency.stopWatchingLoop();
      httpServer?.close();
      shared.text.close();
      shared.binary.close();
      await Promise.all([upstreams.text.close(), upstreams.binary.close()]);
    },
  };
}

/**
 * The replication link's timing, in one place: a heartbeat every 250 ms, a
 * link silent for 5 s (or a handshake not done in 5 s) is dead, and the dialler
 * backs off from 100 ms to 5 s between attempts.
 */
/** Room in a frame beyond the largest item memcached takes: the record's own fields and key. */
const FRAME_OVERHEAD_BYTES = 64 * 1024;

function replicationOptions(config: Config, limits: RequestParserLimits, clientLatency: ClientLatency): ReplicationOptions {
  return {
    ...LINK_TIMING,
    clientLatency: () => clientLatency.snapshot(),
    cluster: config.cluster,
    nodeId: config.nodeId,
    listenPort: config.replicationPort,
    listenHost: config.listen,
    peer: config.peer ? parseAddress(config.peer, 11212) : null,
    backlogBytes: config.backlogBytes,
    maxFrameBytes: () => limits.maxItemSize + FRAME_OVERHEAD_BYTES,
    connectTimeoutMs: config.connectTimeoutMs,
    upstreamTimeoutMs: config.upstreamTimeoutMs,
    conflictWindowMs: config.conflictWindowMs,
    secret: config.replicationSecret,
    tls: config.replicationTls,
    copyRatePerSecond: config.resyncRate,
    readyBeforeCopy: config.readyBeforeCopy,
    stateDir: config.stateDir,
  };
}

function healthChecks(upstream: Upstream, replicator: Replicator | null): HealthChecks {
  // One check at a time: a scrape's gauges and a /readyz arriving together share it.
  let checking: Promise<boolean> | null = null;
  const live = () =>
    (checking ??= upstream
      .ask('version', /\r\n$/, 1000)
      .then(
        (reply) => reply.startsWith('VERSION'),
        () => false,
      )
      .finally(() => (checking = null)));
  return {
    live,
    notReady: async () => replicator?.notReady() ?? [],
    notes: () => replicator?.notes() ?? [],
  };
}

/**
 * Reads memcached's item size limit (-I, unless given to memrepl) so oversized
 * values are refused the way memcached would, without buffering them, and its
 * -R, which decides when it refuses a pipelined `lru_crawler metadump`. If
 * memcached is not up yet, keep the defaults and try again in the background.
 */
async function learnSettings(upstream: Upstream, limits: RequestParserLimits, itemSize: boolean, log: Logger, warned = false): Promise<void> {
  try {
    const settings = await upstream.stats('settings');
    const size = Number(settings.get('item_size_max'));
    if (itemSize && Number.isInteger(size) && size > 0) limits.maxItemSize = size;
    const reqsPerEvent = Number(settings.get('reqs_per_event'));
    if (Number.isInteger(reqsPerEvent) && reqsPerEvent > 0) limits.reqsPerEvent = reqsPerEvent;
  } catch (error) {
    if (!warned) {
      log.warn(`memcached at ${formatAddress(upstream.address)} is not answering (${(error as Error).message}); clients get SERVER_ERROR until it does`);
    }
    setTimeout(() => void learnSettings(upstream, limits, itemSize, log, true), 1000).unref();
  }
}
