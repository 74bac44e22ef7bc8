/**
 * The fault suite's verdict: both memcacheds compared key by key, and each
 * key against the clients' log of what they were told.
 *
 * Which keys: every key any client wrote, plus every key either memcached
 * holds (from `lru_crawler metadump`), so a key that exists on one side only
 * is found even if no client wrote it.
 */
import * as net from 'node:net';
import { newMetadumpLine, percentDecode, scanMetadumpLine } from '../../src/protocol/text/metadump';
import { RawClient } from '../support/client';

export interface Attempt {
  value: string | null; // null = deleted
  /** Seconds the value was set to live (0 = no expiry). */
  ttl: number;
  /** When the acknowledgement arrived (when the write was sent, if none did). */
  at: number;
  node: 'a' | 'b';
  /** The client got a reply saying it took effect (or that the key was absent, for a delete). */
  acked: boolean;
}

export interface Kill {
  node: 'a' | 'b';
  at: number;
}

export interface Verdict {
  keysCompared: number;
  mismatches: string[];
  lost: string[];
  /** Acknowledged writes missing, but acknowledged less than the window before a kill on their node. */
  lostInWindow: number;
}

/** A memcached: TCP port on loopback, or unix socket path (launcher mode). */
export type Address = number | string;

/** Every key memcached at `address` holds (one metadump walk; retried while the crawler is busy). */
export async function dumpKeys(address: Address, timeoutMs = 30_000): Promise<Set<string>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = await new Promise<string>((resolve, reject) => {
      const socket = typeof address === 'string' ? net.connect(address) : net.connect(address, '127.0.0.1');
      let out = '';
      socket.setTimeout(timeoutMs, () => socket.destroy(new Error('metadump timed out')));
      socket.on('data', (chunk) => {
        out += chunk.toString('latin1');
        if (out.endsWith('END\r\n') || out.startsWith('BUSY') || out.startsWith('ERROR')) socket.end();
      });
      socket.on('error', reject);
      socket.on('close', () => resolve(out));
      socket.write('lru_crawler metadump all\r\n');
    });
    if (text.startsWith('BUSY') && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      continue;
    }
    const keys = new Set<string>();
    const line = newMetadumpLine();
    for (const raw of text.split('\n')) {
      if (raw === '') continue;
      const bytes = Buffer.from(raw, 'latin1');
      scanMetadumpLine(bytes, 0, bytes.length, line);
      if (line.kind === 'error') throw new Error(`metadump on ${address}: ${line.message}`);
      if (line.kind !== 'item') continue;
      const key = line.encoded ? percentDecode(bytes, line.keyStart, line.keyEnd) : bytes.subarray(line.keyStart, line.keyEnd);
      if (key === null) throw new Error(`metadump on ${address}: undecodable key in ${raw.slice(0, 100)}`);
      keys.add(key.toString('latin1'));
    }
    return keys;
  }
}

/** The value memcached at `client` holds for `key`, or null. */
async function read(client: RawClient, key: string): Promise<string | null> {
  const reply = await client.request(`get ${key}\r\n`, 'END\r\n');
  return reply === 'END\r\n' ? null : reply.split('\r\n')[1];
}

export async function check(
  memcacheds: { a: Address; b: Address },
  log: Map<string, Attempt[]>,
  kills: Kill[],
  lossWindowMs: number,
): Promise<Verdict> {
  const keys = new Set<string>(log.keys());
  for (const address of [memcacheds.a, memcacheds.b]) for (const key of await dumpKeys(address)) keys.add(key);
  const [a, b] = [await RawClient.connect(memcacheds.a), await RawClient.connect(memcacheds.b)];
  const verdict: Verdict = { keysCompared: keys.size, mismatches: [], lost: [], lostInWindow: 0 };
  try {
    for (const key of keys) {
      const [va, vb] = [await read(a, key), await read(b, key)];
      const entries = log.get(key) ?? [];
      if (va !== vb) {
        verdict.mismatches.push(`${key}: a=${va} b=${vb}; last attempts ${JSON.stringify(entries.slice(-4))}`);
        continue;
      }
      const lastAcked = entries.map((e, i) => (e.acked ? i : -1)).reduce((x, y) => Math.max(x, y), -1);
      // The last acknowledged state, or a later attempt that took effect without its reply arriving,
      // or nothing because that value expired (memcached's clock ticks once a second: an item lives TTL±1 s).
      const candidates = entries.slice(Math.max(lastAcked, 0));
      const expired = (e: Attempt) => e.ttl > 0 && Date.now() > e.at + (e.ttl + 1) * 1000;
      if (candidates.some((e) => e.value === va || (va === null && expired(e))) || (lastAcked === -1 && va === null)) continue;
      // The last acknowledged write is lost. Allowed only if it was acknowledged in the window before a kill on its node,
      // and what is left is an older write of the key (or nothing), never a value nobody wrote.
      if (lastAcked === -1) {
        verdict.lost.push(`${key}: holds ${va}, which no client wrote`);
        continue;
      }
      const last = entries[lastAcked];
      const inWindow = kills.some((k) => k.node === last.node && last.at <= k.at && k.at - last.at < lossWindowMs);
      const older = va === null || entries.slice(0, lastAcked).some((e) => e.value === va);
      if (inWindow && older) verdict.lostInWindow++;
      else verdict.lost.push(`${key}: holds ${va}, last acknowledged ${JSON.stringify(entries[lastAcked] ?? null)}`);
    }
  } finally {
    a.close();
    b.close();
  }
  return verdict;
}
