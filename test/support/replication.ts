/** What tests ask a running memrepl node about its replication. */
import { RawClient } from './client';
import { eventually, freePort } from './ports';
import { type Node, startNode, stopAll } from './processes';
import { Relay } from './relay';

/** One line of `stats replication` on the node's client port ('' if absent). */
export async function stat(node: Node, name: string): Promise<string> {
  const client = await RawClient.connect(node.memrepl.port);
  try {
    const reply = await client.request('stats replication\r\n', 'END\r\n');
    return new RegExp(`STAT ${name} (.*)\r\n`).exec(reply)?.[1] ?? '';
  } finally {
    client.close();
  }
}

/** Waits until every node reports its replication link up. */
export async function linked(...nodes: Node[]): Promise<void> {
  for (const node of nodes) await eventually(async () => (await stat(node, 'peer_up')) === '1', 10000, 'replication link');
}

/** A linked pair whose link runs through a relay that the test can stall (B dials A through it). */
export async function relayedPair(extraArgs: string[] = []): Promise<{ a: Node; b: Node; relay: Relay }> {
  const ra = await freePort();
  const a = await startNode('a', ra, null, extraArgs);
  const relay = new Relay(ra);
  const b = await startNode('b', await freePort(), await relay.start(), extraArgs);
  await linked(a, b);
  // The first full copies (each node has applied nothing from the other) must be over, or a cut link restarts them.
  for (const node of [a, b])
    await eventually(async () => (await stat(node, 'copy_sending')) === '0' && (await stat(node, 'copy_receiving')) === '0', 10000, 'first copies done');
  return { a, b, relay };
}

/** Runs `body` against a fresh relayed pair, then closes the relay and stops both nodes whatever happened. */
export async function withRelayedPair(extraArgs: string[], body: (pair: { a: Node; b: Node; relay: Relay }) => Promise<void>): Promise<void> {
  const pair = await relayedPair(extraArgs);
  try {
    await body(pair);
  } finally {
    pair.relay.close();
    await stopAll(pair.a, pair.b);
  }
}

/** Whether a memcached (or memrepl) on `port` holds `key`. */
export async function has(port: number, key: string): Promise<boolean> {
  const client = await RawClient.connect(port);
  try {
    return (await client.request(`mg ${key} v\r\n`)).startsWith('VA');
  } finally {
    client.close();
  }
}

/** Stores `key` through a node's memrepl. */
export async function write(node: Node, key: string): Promise<void> {
  const client = await RawClient.connect(node.memrepl.port);
  try {
    await client.request(`set ${key} 0 0 1\r\nx\r\n`);
  } finally {
    client.close();
  }
}

/** An item as memcached holds it: value, client flags and remaining TTL (-1 = never), or null. */
/** The item as memcached holds it; `stale` when an `md … I` marked it (memcached then answers mg with X). */
export async function item(port: number, key: string): Promise<{ value: string; flags: number; ttl: number; stale: boolean } | null> {
  const client = await RawClient.connect(port);
  try {
    client.send(`mg ${key} v f t\r\n`);
    const complete = (bytes: Buffer) => {
      const text = bytes.toString('latin1');
      const head = /^VA (\d+)[^\r]*\r\n/.exec(text);
      return text === 'EN\r\n' || (head !== null && text.length >= head[0].length + Number(head[1]) + 2);
    };
    const reply = (await client.read(complete, 3000)).toString('latin1');
    if (reply.startsWith('EN')) return null;
    const [head, value] = reply.split('\r\n');
    return { value, flags: Number(/ f(\d+)/.exec(head)![1]), ttl: Number(/ t(-?\d+)/.exec(head)![1]), stale: / X\b/.test(head) };
  } finally {
    client.close();
  }
}

/** Waits until `key` reads the same on both memcacheds (TTL within 1 s) and returns it. */
export async function converged(a: Node, b: Node, key: string, timeoutMs = 5000) {
  let last: unknown;
  await eventually(
    async () => {
      const [x, y] = await Promise.all([item(a.memcached.port, key), item(b.memcached.port, key)]);
      last = [x, y];
      if (x === null || y === null) return x === y;
      return x.value === y.value && x.flags === y.flags && x.stale === y.stale && Math.abs(x.ttl - y.ttl) <= 1;
    },
    timeoutMs,
    () => `"${key}" to converge (last: ${JSON.stringify(last)})`,
  );
  return item(a.memcached.port, key);
}
