/**
 * memcached's `stats` reply: `STAT <name> <value>` lines closed by END.
 * Pure: reply parts in, a map of names to values out.
 */
import type { ReplyPart } from './reply-parser';

export const STATS_REQUEST = Buffer.from('stats\r\n', 'latin1');

export function parseStats(parts: readonly ReplyPart[]): Map<string, string> {
  const stats = new Map<string, string>();
  for (const { line } of parts) {
    if (!line.startsWith('STAT ')) continue;
    const space = line.indexOf(' ', 5);
    if (space > 5) stats.set(line.slice(5, space), line.slice(space + 1));
  }
  return stats;
}

/** When memcached started, in unix seconds (its `time` minus its `uptime`), or null if it did not say. */
export function startedAt(stats: Map<string, string>): number | null {
  const time = Number(stats.get('time'));
  const uptime = Number(stats.get('uptime'));
  return Number.isSafeInteger(time) && Number.isSafeInteger(uptime) ? time - uptime : null;
}
