/** Bulk loading and reading of a memcached for replication tests (pipelined, bounded in time). */
import { metaKey } from '../../src/protocol/text/serializer';
import { RawClient } from './client';
import { eventually } from './ports';

export interface Item {
  key: string;
  value: Buffer;
  flags: number;
  /** memcached exptime: 0 = never. */
  exptime: number;
}

/** Stores items with pipelined `ms`, in batches, and waits for every reply. */
export async function load(port: number, items: Item[], timeoutMs = 60000): Promise<void> {
  const client = await RawClient.connect(port);
  try {
    for (let i = 0; i < items.length; i += 2000) {
      const batch = items.slice(i, i + 2000);
      const parts: Buffer[] = [];
      for (const item of batch) {
        parts.push(Buffer.from(`ms ${item.key} ${item.value.length} F${item.flags} T${item.exptime} q\r\n`, 'latin1'), item.value, Buffer.from('\r\n'));
      }
      parts.push(Buffer.from('mn\r\n'));
      client.send(Buffer.concat(parts));
      const reply = await client.read((b) => b.toString('latin1').endsWith('MN\r\n'), timeoutMs);
      if (reply.toString('latin1') !== 'MN\r\n') throw new Error(`load failed: ${reply.toString('latin1').slice(0, 200)}`);
    }
  } finally {
    client.close();
  }
}

export interface Held {
  value: Buffer;
  flags: number;
  /** Remaining seconds, -1 = never. */
  ttl: number;
}

/**
 * Reads keys with pipelined `mg <key> v f t` (base64 with `b` for keys with
 * spaces or control bytes, so any key a binary client wrote can be read);
 * absent keys map to null. `address`: a TCP port on loopback or a unix
 * socket path. Read two nodes concurrently (Promise.all) so their TTLs are
 * compared at the same moment.
 */
export async function readAll(address: number | string, keys: string[], timeoutMs = 60000): Promise<Map<string, Held | null>> {
  const client = await RawClient.connect(address);
  const out = new Map<string, Held | null>();
  try {
    for (let i = 0; i < keys.length; i += 2000) {
      const batch = keys.slice(i, i + 2000);
      client.send(batch.map((k) => metaGet(k)).join('') + 'mn\r\n');
      const reply = await client.read((b) => b.length >= 4 && b.subarray(b.length - 4).toString() === 'MN\r\n' && parseAll(b) !== null, timeoutMs);
      const parsed = parseAll(reply);
      if (!parsed || parsed.length !== batch.length)
        throw new Error(`readAll: ${parsed ? `${parsed.length} replies to ${batch.length} keys` : 'incomplete reply'}`);
      batch.forEach((k, j) => out.set(k, parsed[j]));
    }
  } finally {
    client.close();
  }
  return out;
}

function metaGet(key: string): string {
  const { token, flag } = metaKey(Buffer.from(key, 'latin1'));
  return `mg ${token}${flag} v f t\r\n`;
}

/** The replies to a batch of `mg ... v f t` (VA or EN each, in order) ended by MN; null if incomplete. */
function parseAll(bytes: Buffer): Array<Held | null> | null {
  const out: Array<Held | null> = [];
  let at = 0;
  for (;;) {
    const eol = bytes.indexOf('\r\n', at);
    if (eol === -1) return null;
    const line = bytes.toString('latin1', at, eol);
    if (line === 'MN') return out;
    if (line === 'EN' || line.startsWith('EN ')) {
      out.push(null);
      at = eol + 2;
      continue;
    }
    const m = /^VA (\d+) (.*)$/.exec(line);
    if (!m) throw new Error(`unexpected reply line: ${line}`);
    const size = Number(m[1]);
    if (bytes.length < eol + 2 + size + 2) return null;
    const flags = Number(/(?:^| )f(\d+)/.exec(m[2])![1]);
    const ttl = Number(/(?:^| )t(-?\d+)/.exec(m[2])![1]);
    out.push({ value: bytes.subarray(eol + 2, eol + 2 + size), flags, ttl });
    at = eol + 2 + size + 2;
  }
}

/** Whether two reads of a key agree: both absent, or same value and flags and TTLs within `ttlTolerance` s (2 unless said). */
export function sameHeld(x: Held | null, y: Held | null, ttlTolerance = 2): boolean {
  // TTLs within 1 s of each other read up to 2 apart: each memcached counts whole
  // ticks of its own once-a-second clock, and the two clocks tick at different moments.
  // -1 (never) is not a second away from 1.
  const ttlsAgree = (a: number, b: number) => (a === -1) === (b === -1) && Math.abs(a - b) <= ttlTolerance;
  return x === null ? y === null : y !== null && x.value.equals(y.value) && x.flags === y.flags && ttlsAgree(x.ttl, y.ttl);
}

/** Differences between two reads of the same keys (TTL within 1 s); empty when identical. */
export function differences(a: Map<string, Held | null>, b: Map<string, Held | null>, limit = 10): string[] {
  const out: string[] = [];
  for (const [key, x] of a) {
    const y = b.get(key) ?? null;
    if (!sameHeld(x, y) && out.length < limit) out.push(`${key}: ${describe(x)} vs ${describe(y)}`);
  }
  return out;
}

function describe(h: Held | null): string {
  return h === null ? 'absent' : `${h.value.length}B f${h.flags} t${h.ttl}`;
}

/**
 * Reads the same keys on two memcacheds batch by batch in lockstep, so each
 * key's TTL is read at nearly the same moment on both, and lists how they
 * differ (empty when identical).
 */
export async function compare(portA: number | string, portB: number | string, keys: string[]): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < keys.length && out.length < 10; i += 2000) {
    const batch = keys.slice(i, i + 2000);
    const [a, b] = await Promise.all([readAll(portA, batch), readAll(portB, batch)]);
    out.push(...differences(a, b, 10 - out.length));
  }
  return out;
}

/**
 * Waits (at most `timeoutMs`) until compare() finds no difference; the error
 * names the last ones found. Waiting also covers a read that shows a
 * difference which is not there: on a loaded machine the two memcacheds may
 * answer the same batch a second or two apart, and their TTLs then read 3
 * apart (seen in CI, gone on re-reading). A stored difference never goes away.
 */
export async function untilSame(portA: number | string, portB: number | string, keys: string[], timeoutMs: number, what: string): Promise<void> {
  let last: string[] = [];
  await eventually(
    async () => (last = await compare(portA, portB, keys)).length === 0,
    timeoutMs,
    () => `${what} (last differences: ${JSON.stringify(last)})`,
  );
}
