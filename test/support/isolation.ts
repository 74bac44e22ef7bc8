/** Checks that a misbehaving client (one that never reads) costs nobody else anything. */
import assert from 'node:assert/strict';
import type { RawClient } from './client';
import { type Running, rssKb } from './processes';

/**
 * Another client still gets 50 whole replies of `get key` within 3 s, and the
 * proxy's RSS grew by less than 80 MB since `rssBeforeKb`.
 */
export async function assertOthersUnharmed(proxy: Running, client: RawClient, key: string, valueLength: number, rssBeforeKb: number): Promise<void> {
  const expected = `VALUE ${key} 0 ${valueLength}\r\n`.length + valueLength + '\r\nEND\r\n'.length;
  const started = Date.now();
  for (let i = 0; i < 50; i++) assert.equal((await client.request(`get ${key}\r\n`, 'END\r\n')).length, expected);
  const elapsed = Date.now() - started;
  const grown = rssKb(proxy.child.pid!) - rssBeforeKb;
  assert.ok(grown < 80 * 1024, `proxy RSS grew by ${grown} kB`);
  assert.ok(elapsed < 3000, `50 gets for another client took ${elapsed} ms`);
}
