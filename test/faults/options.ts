/**
 * The fault suite's command line:
 *
 *   --seconds N        seconds of faults (default 60)
 *   --seed S           replays a run's choices (default: from the clock)
 *   --workload LIST    comma-separated workload parts (default all)
 *   --faults LIST      comma-separated faults (default all; "classic" = the original six, "none")
 *   --keep-logs        keep the logs and history.json even when nothing was found
 */
import { CLASSIC_FAULTS, FAULTS, type FaultName } from './faults';

export const WORKLOADS = ['set', 'store', 'append', 'touch', 'meta', 'binary', 'flush', 'noreply-close', 'disconnect', 'shared', 'readers'] as const;
export type WorkloadName = (typeof WORKLOADS)[number];

export interface SuiteOptions {
  seconds: number;
  seed: number;
  workload: Set<WorkloadName>;
  faults: Set<FaultName>;
  keepLogs: boolean;
}

export class UsageError extends Error {}

export function parseOptions(argv: string[]): SuiteOptions {
  const value = (name: string): string | undefined => {
    const at = argv.indexOf(`--${name}`);
    if (at === -1) return undefined;
    if (at + 1 >= argv.length) throw new UsageError(`--${name} needs a value`);
    return argv[at + 1];
  };
  for (const arg of argv) {
    if (arg.startsWith('--') && !['--seconds', '--seed', '--workload', '--faults', '--keep-logs'].includes(arg)) throw new UsageError(`unknown option ${arg}`);
  }
  const number = (name: string, fallback: number) => {
    const text = value(name);
    if (text === undefined) return fallback;
    const n = Number(text);
    if (!Number.isInteger(n) || n < 0) throw new UsageError(`--${name} must be a non-negative integer, got ${text}`);
    return n;
  };
  return {
    seconds: number('seconds', 60),
    seed: number('seed', Date.now() % 100000),
    workload: list('workload', value('workload'), WORKLOADS, {}),
    faults: list('faults', value('faults'), FAULTS, { classic: CLASSIC_FAULTS, none: [] }),
    keepLogs: argv.includes('--keep-logs'),
  };
}

function list<T extends string>(flag: string, text: string | undefined, names: readonly T[], aliases: Record<string, readonly T[]>): Set<T> {
  if (text === undefined || text === 'all') return new Set(names);
  const out = new Set<T>();
  for (const item of text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)) {
    if (item in aliases) for (const name of aliases[item]) out.add(name);
    else if ((names as readonly string[]).includes(item)) out.add(item as T);
    else throw new UsageError(`--${flag}: unknown "${item}"; known: ${[...names, 'all', ...Object.keys(aliases)].join(', ')}`);
  }
  return out;
}
