/**
 * memcached's `stats` reply: `STAT <name> <value>` lines closed by END.
 * Pure: reply parts (or the reply's text) in, a map of names to values out.
 */
import type { ReplyPart } from './reply-parser';

export const STATS_REQUEST = Buffer.from('stats\r\n', 'latin1');
/** memcached's settings (item_size_max, dump_enabled, ...), in the same format. */
export const STATS_SETTINGS_REQUEST = Buffer.from('stats settings\r\n', 'latin1');

export function parseStats(parts: readonly ReplyPart[]): Map<string, string> {
  return statsOf(parts.map((part) => part.line));
}

/** parseStats for a reader that holds the reply as text (lines ended by \r\n). */
export function parseStatsText(text: string): Map<string, string> {
  return statsOf(text.split('\r\n'));
}

function statsOf(lines: readonly string[]): Map<string, string> {
  const stats = new Map<string, string>();
  for (const line of lines) {
    if (!line.startsWith('STAT ')) continue;
    const space = line.indexOf(' ', 5);
    if (space > 5) stats.set(line.slice(5, space), line.slice(space + 1));
  }
  return stats;
}

/** A `stats` reply in memcached's format, for the stats the proxy answers itself. */
export function serializeStats(stats: ReadonlyArray<readonly [string, string | number]>): Buffer {
  return Buffer.from(stats.map(([name, value]) => `STAT ${name} ${value}\r\n`).join('') + 'END\r\n', 'latin1');
}

/** When memcached started, in unix seconds (its `time` minus its `uptime`), or null if it did not say. */
export function startedAt(stats: Map<string, string>): number | null {
  const time = Number(stats.get('time'));
  const uptime = Number(stats.get('uptime'));
  return Number.isSafeInteger(time) && Number.isSafeInteger(uptime) ? time - uptime : null;
}

/** How many flush_all memcached ran (`cmd_flush`), and in which run of it (`pid`): counts compare within one run only. */
export interface FlushCount {
  pid: string;
  flushes: number;
}

export function flushCount(stats: Map<string, string>): FlushCount {
  const flushes = Number(stats.get('cmd_flush'));
  if (!Number.isSafeInteger(flushes)) throw new Error('memcached did not say how many flush_all it ran (cmd_flush)');
  return { pid: stats.get('pid') ?? '', flushes };
}
