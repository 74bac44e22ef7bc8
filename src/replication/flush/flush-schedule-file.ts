/**
 * What this node knows of flush_all (see flush-schedule.ts), kept in the
 * state dir: the floor (the newest flush that took effect) and the delayed
 * flush its memcached has scheduled. memrepl kept both in memory only, so a
 * restarted memrepl applied again the peer's records resent from before a
 * flush (their keys came back), and no longer knew a scheduled flush's moment
 * (to judge the records and copies around it, see flush-edge.ts, and to give
 * it again to a memcached that restarted too). Written only when one of them
 * changes, once or twice per flush_all.
 */
import * as fs from 'node:fs';
import type { Logger } from '../../log';
import { writeFileAtomically } from '../../launcher/run-dir';
import { stateFilePath } from '../apply/checkpoint-file';
import type { FlushMemory } from './flush-schedule';
import type { Stamp } from '../conflict/hlc';

export class FlushScheduleFile {
  readonly file: string;
  private failing = false;

  constructor(
    dir: string,
    nodeId: string,
    private readonly log: Logger,
  ) {
    this.file = stateFilePath(dir, nodeId, 'flush-schedule');
  }

  save(memory: FlushMemory): void {
    try {
      writeFileAtomically(this.file, `${JSON.stringify(memory)}\n`);
      this.failing = false;
    } catch (error) {
      if (!this.failing)
        this.log.warn(`replication: cannot save ${this.file}: ${(error as Error).message}; a restarted proxy would not know the last flush_all`);
      this.failing = true;
    }
  }

  /** What an earlier run saved, if anything readable. */
  load(): FlushMemory | null {
    let text: string;
    try {
      text = fs.readFileSync(this.file, 'utf8');
    } catch {
      return null;
    }
    try {
      const { floor, pending } = JSON.parse(text) as Partial<FlushMemory>;
      const stampOrNull = (s: unknown) => s === null || isStamp(s);
      if (stampOrNull(floor) && (pending === null || (typeof pending === 'object' && isStamp(pending?.command) && isStamp(pending?.at)))) {
        return { floor: floor ?? null, pending: pending ?? null };
      }
    } catch {
      // said below
    }
    this.log.warn(`replication: ignoring ${this.file}: not what memrepl saves there`);
    return null;
  }
}

function isStamp(value: unknown): value is Stamp {
  const s = value as Partial<Stamp> | null;
  return typeof s === 'object' && s !== null && Number.isSafeInteger(s.wall) && Number.isSafeInteger(s.logical) && typeof s.nodeId === 'string';
}
