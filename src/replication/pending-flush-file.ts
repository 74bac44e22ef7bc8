/**
 * The delayed flush_all this node's memcached has scheduled, kept in the
 * state dir. memcached keeps it in memory only, and so did memrepl: a
 * restarted memrepl must still know its moment (to judge the peer's records
 * and copies around it, see flush-edge.ts), and a memcached restarted with it
 * must be given it again. Written only when the schedule changes (rare).
 */
import * as fs from 'node:fs';
import type { Logger } from '../log';
import { writeFileAtomically } from '../launcher/run-dir';
import { stateFilePath } from './checkpoint-file';
import type { PendingFlush } from './flush-schedule';
import type { Stamp } from './hlc';

export class PendingFlushFile {
  readonly file: string;

  constructor(
    dir: string,
    nodeId: string,
    private readonly log: Logger,
  ) {
    this.file = stateFilePath(dir, nodeId, 'pending-flush');
  }

  save(pending: PendingFlush | null): void {
    try {
      if (pending) writeFileAtomically(this.file, `${JSON.stringify(pending)}\n`);
      else fs.rmSync(this.file, { force: true });
    } catch (error) {
      this.log.warn(`replication: cannot keep the scheduled flush_all in ${this.file}: ${(error as Error).message}; a restarted proxy would not know it`);
    }
  }

  /** What an earlier run kept, if anything readable. */
  load(): PendingFlush | null {
    let text: string;
    try {
      text = fs.readFileSync(this.file, 'utf8');
    } catch {
      return null;
    }
    try {
      const { command, at } = JSON.parse(text) as Partial<PendingFlush>;
      if (isStamp(command) && isStamp(at)) return { command, at };
    } catch {
      // reported below
    }
    this.log.warn(`replication: ignoring ${this.file}: not a scheduled flush_all`);
    return null;
  }
}

function isStamp(value: unknown): value is Stamp {
  const s = value as Partial<Stamp> | null;
  return typeof s === 'object' && s !== null && Number.isSafeInteger(s.wall) && Number.isSafeInteger(s.logical) && typeof s.nodeId === 'string';
}
