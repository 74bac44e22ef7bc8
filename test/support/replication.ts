/** What tests ask a running memrepl node about its replication. */
import { RawClient } from './client';
import { eventually } from './ports';
import type { Node } from './processes';

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
