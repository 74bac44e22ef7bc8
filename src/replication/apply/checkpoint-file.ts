/**
 * Where this node stands in its peer's stream (the peer's run id and the last
 * record applied), kept in a small file of memrepl's own in the state
 * directory (--state-dir), out of clients' reach: no flush_all, eviction or
 * client write can lose or forge it, as they could when it was a memcached
 * key.
 *
 * A position is only true of the memcached that applied those records, so the
 * file names that memcached: its address, its `stats` pid and the time it
 * started (`time` - `uptime`). A memcached that restarted has lost its data,
 * and with it any claim to a position: a file naming another memcached, or
 * another node, or that does not parse, is ignored with a log line and this
 * node asks its peer for a full copy, as it must.
 *
 * The file is one page, padded with spaces, and each save overwrites it in
 * place with one write at offset 0 on a descriptor kept open: under load the
 * position is saved every few milliseconds, and open, write, close and rename
 * each time cost the receiving proxy about a twentieth of its CPU (profiled:
 * node B of a pair under 100% sets). Linux copies a one-page write into the
 * page cache whole or not at all, so a memrepl killed mid-save leaves the old
 * position or the new one, never a mix. Not fsynced: it is only worth
 * something while the memcached it names lives, and whatever loses unsynced
 * page cache (a kernel crash, a power cut) takes that memcached down too.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { makePrivateDir } from '../../launcher/run-dir';
import type { Logger } from '../../log';
import type { StreamPosition } from './inbox';
import type { MemcachedIdentity } from '../restart-watch';

const FORMAT = 'memrepl-checkpoint/1';
/**
 * The file's size: one page. A checkpoint is well under it (identifiers of
 * at most 128 characters, a socket path or host:port); a larger file is not one.
 */
const FILE_BYTES = 4096;
/** Run ids are UUIDs; allow any short token, never a line break or a space (the position travels in HELLO). */
const RUN_ID = /^[\w.:-]{1,128}$/;

export interface CheckpointFileOptions {
  dir: string;
  nodeId: string;
  cluster: string;
  /** The local memcached's address as configured (host:port or socket path). */
  memcachedAddress: string;
  /** The local memcached as last seen (restart-watch.ts), null if it never answered. */
  memcached: () => MemcachedIdentity | null;
}

/** The file's contents (JSON). */
interface Saved {
  format: string;
  nodeId: string;
  cluster: string;
  memcached: { address: string; pid: string; startedAt: number };
  peerRunId: string;
  appliedSeq: number;
  savedAt: string;
}

/** The checkpoint's file for a node: its id in the name, so nodes sharing a state dir never share a file. */
export function checkpointPath(dir: string, nodeId: string): string {
  return stateFilePath(dir, nodeId, 'checkpoint');
}

/** A node's file of some `kind` in the state dir: its id, encoded for a file name (hashed if long). */
export function stateFilePath(dir: string, nodeId: string, kind: string): string {
  const encoded = encodeURIComponent(nodeId);
  const name = encoded.length <= 200 ? encoded : createHash('sha256').update(nodeId).digest('hex');
  return path.join(path.resolve(dir), `${kind}-${name}.json`);
}

export class CheckpointFile {
  readonly file: string;
  /** A save failed and has not succeeded since (logged once per streak). */
  private failing = false;
  /** The file, open for saves; closed when it is removed. */
  private fd: number | null = null;
  /** One page, reused by every save. */
  private readonly page = Buffer.alloc(FILE_BYTES);

  constructor(
    private readonly options: CheckpointFileOptions,
    private readonly log: Logger,
  ) {
    this.file = checkpointPath(options.dir, options.nodeId);
  }

  /**
   * The position saved by an earlier run, if it is this node's and names the
   * memcached running now; null otherwise (said in the log). Creates the
   * state directory; throws only if that is impossible.
   */
  load(): StreamPosition | null {
    makePrivateDir(path.dirname(this.file), 'state dir');
    let text: string;
    try {
      if (fs.statSync(this.file).size > FILE_BYTES) return this.ignore(`larger than ${FILE_BYTES} bytes`);
      text = fs.readFileSync(this.file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') return this.ignore(`unreadable: ${(error as Error).message}`);
      this.log.info(`replication: no checkpoint at ${this.file} (first start on this state dir): this memcached is cold until a full copy from the peer`);
      return null;
    }
    const saved = parseSaved(text);
    if (typeof saved === 'string') return this.ignore(saved);
    const { nodeId, cluster, memcachedAddress } = this.options;
    if (saved.nodeId !== nodeId || saved.cluster !== cluster) {
      return this.ignore(`it belongs to node "${saved.nodeId}" of cluster "${saved.cluster}", not to "${nodeId}" of "${cluster}"`);
    }
    const now = this.options.memcached();
    const then = saved.memcached;
    if (now === null || then.address !== memcachedAddress || then.pid !== now.pid || then.startedAt !== now.startedAt) {
      const seen = now === null ? 'not answering' : `now pid ${now.pid} started at ${isoTime(now.startedAt)}`;
      this.log.info(
        `replication: the checkpoint ${this.file} describes memcached pid ${then.pid} started at ${isoTime(then.startedAt)} at ${then.address}; ` +
          `memcached at ${memcachedAddress} is ${seen}, so the data it describes is gone: asking the peer for a full copy`,
      );
      return null;
    }
    this.log.info(`replication: resuming from the checkpoint ${this.file}: run ${saved.peerRunId}, record #${saved.appliedSeq}`);
    return { runId: saved.peerRunId, seq: saved.appliedSeq };
  }

  /** Saves the position for the memcached seen now; false if it could not be (the caller tries again later). */
  save(position: StreamPosition): boolean {
    const memcached = this.options.memcached();
    if (memcached === null) return false;
    const saved: Saved = {
      format: FORMAT,
      nodeId: this.options.nodeId,
      cluster: this.options.cluster,
      memcached: { address: this.options.memcachedAddress, pid: memcached.pid, startedAt: memcached.startedAt },
      peerRunId: position.runId,
      appliedSeq: position.seq,
      savedAt: new Date().toISOString(),
    };
    try {
      this.writePage(`${JSON.stringify(saved)}\n`);
    } catch (error) {
      if (!this.failing) {
        this.log.warn(`replication: cannot save the checkpoint ${this.file}: ${(error as Error).message}; a restarted proxy would need a full copy`);
      }
      this.failing = true;
      return false;
    }
    if (this.failing) this.log.info(`replication: checkpoint ${this.file} saved again`);
    this.failing = false;
    return true;
  }

  /** Overwrites the whole file with `text`, padded to one page, in one write. */
  private writePage(text: string): void {
    if (Buffer.byteLength(text, 'utf8') > FILE_BYTES) throw new Error(`a checkpoint of more than ${FILE_BYTES} bytes`);
    const page = this.page;
    page.fill(0x20, page.write(text, 0, 'utf8'));
    const opened = this.fd === null;
    this.fd ??= fs.openSync(this.file, fs.constants.O_WRONLY | fs.constants.O_CREAT, 0o600);
    const written = fs.writeSync(this.fd, page, 0, FILE_BYTES, 0);
    if (written !== FILE_BYTES) throw new Error(`short write (${written} of ${FILE_BYTES} bytes)`);
    // A file of an older version is shorter: the page covers it. A longer one is not memrepl's: its tail goes.
    if (opened) fs.ftruncateSync(this.fd, FILE_BYTES);
  }

  /** No position holds until further notice (a full copy is arriving): a proxy restarted meanwhile must ask for another. */
  clear(): void {
    this.close();
    try {
      fs.rmSync(this.file, { force: true });
    } catch (error) {
      this.log.warn(`replication: cannot remove the checkpoint ${this.file}: ${(error as Error).message}`);
    }
  }

  /** Closes the file (the proxy stops, or the file goes). */
  close(): void {
    if (this.fd === null) return;
    try {
      fs.closeSync(this.fd);
    } catch {
      // Nothing was pending on it: writes went straight to the page cache.
    }
    this.fd = null;
  }

  private ignore(reason: string): null {
    this.log.warn(`replication: ignoring the checkpoint ${this.file}: ${reason}; asking the peer for a full copy`);
    return null;
  }
}

/** The file's contents, checked field by field, or why they are not a checkpoint. */
export function parseSaved(text: string): Saved | string {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return 'not valid JSON';
  }
  if (typeof value !== 'object' || value === null) return 'not a checkpoint';
  const saved = value as Partial<Record<keyof Saved, unknown>>;
  if (saved.format !== FORMAT) return `unknown format ${JSON.stringify(saved.format)} (expected "${FORMAT}")`;
  if (typeof saved.nodeId !== 'string' || typeof saved.cluster !== 'string') return 'no node id or cluster';
  const memcached = saved.memcached as Partial<Saved['memcached']> | null | undefined;
  if (
    typeof memcached !== 'object' ||
    memcached === null ||
    typeof memcached.address !== 'string' ||
    typeof memcached.pid !== 'string' ||
    !/^[1-9]\d{0,9}$/.test(memcached.pid) ||
    !Number.isSafeInteger(memcached.startedAt)
  ) {
    return 'no valid memcached identity (address, pid, start time)';
  }
  if (typeof saved.peerRunId !== 'string' || !RUN_ID.test(saved.peerRunId)) return 'no valid peer run id';
  if (!Number.isSafeInteger(saved.appliedSeq) || (saved.appliedSeq as number) < 0) return 'no valid record number';
  return saved as Saved;
}

function isoTime(unixSeconds: number): string {
  const date = new Date(unixSeconds * 1000);
  return Number.isNaN(date.getTime()) ? String(unixSeconds) : date.toISOString();
}
