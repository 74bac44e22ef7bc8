/**
 * Real twemproxy (nutcracker) processes for tests, on free loopback ports,
 * configured from the repository's config/twemproxy files; and a text-protocol
 * client for talking through them (twemproxy speaks neither meta nor binary).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parse, stringify } from 'yaml';
import { RawClient } from './client';
import { freePort, waitForPort } from './ports';
import { launch, type Running } from './processes';

export const NUTCRACKER = '/usr/sbin/nutcracker';

/** The repository's example config for an application host (config/twemproxy/host1.yml, host2.yml). */
export const shippedConfig = (host: 'host1' | 'host2') => path.join(__dirname, '..', '..', '..', 'config', 'twemproxy', `${host}.yml`);

/** One twemproxy pool as its YAML file states it. */
export interface Pool {
  listen: string;
  hash?: string;
  distribution?: string;
  auto_eject_hosts?: boolean;
  servers: string[];
  [key: string]: unknown;
}

/** A server line `host:port:weight name`, split. */
export interface Server {
  address: string;
  weight: number;
  name: string;
}

export function parseServer(line: string): Server {
  const match = /^(\S+):(\d+):(\d+) (\S+)$/.exec(line);
  if (!match) throw new Error(`twemproxy server line without a name: "${line}"`);
  return { address: `${match[1]}:${match[2]}`, weight: Number(match[3]), name: match[4] };
}

/** The pools of a twemproxy config file, by pool name. */
export function readPools(file: string): Record<string, Pool> {
  return parse(fs.readFileSync(file, 'utf8')) as Record<string, Pool>;
}

/**
 * The shipped config with this test's addresses: every pool listens on
 * `listen`, and each server keeps its weight and name (what places keys)
 * but points at `addressOf(name)`.
 */
export function withAddresses(file: string, listen: string, addressOf: (name: string) => string): string {
  const pools = readPools(file);
  for (const pool of Object.values(pools)) {
    pool.listen = listen;
    pool.servers = pool.servers.map((line) => {
      const server = parseServer(line);
      return `${addressOf(server.name)}:${server.weight} ${server.name}`;
    });
  }
  return stringify(pools);
}

/** The same config with each server known by its address alone (the ring then hashes `host:port`). */
export function withoutNames(configText: string): string {
  const pools = parse(configText) as Record<string, Pool>;
  for (const pool of Object.values(pools)) pool.servers = pool.servers.map((line) => line.replace(/ \S+$/, ''));
  return stringify(pools);
}

/** What `nutcracker -t` says of a config file (it writes to stderr); throws if it finds it invalid. */
export function checkConfig(file: string): string {
  const result = spawnSync(NUTCRACKER, ['-t', '-c', file], { encoding: 'utf8', timeout: 5000 });
  const said = `${result.stdout}${result.stderr}`;
  if (result.status !== 0) throw new Error(`nutcracker -t -c ${file} (exit ${result.status}): ${said}`);
  return said;
}

export interface Twemproxy {
  port: number;
  /** nutcracker's log so far (its -o file). */
  log(): string;
  stop(): Promise<void>;
}

/**
 * Starts nutcracker on `configText` (which must listen on 127.0.0.1:`port`).
 * Its stats port is always given (-s), on loopback (-a): the default, 22222
 * on every interface, would collide between instances.
 */
export async function startTwemproxy(configText: string, port: number): Promise<Twemproxy> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'memrepl-twemproxy-'));
  const [conf, logFile, pidFile] = ['nutcracker.yml', 'nutcracker.log', 'nutcracker.pid'].map((f) => path.join(dir, f));
  fs.writeFileSync(conf, configText);
  const statsPort = await freePort();
  const log = (running?: Running) => (running?.output() ?? '') + (fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8') : '');
  let running: Running;
  try {
    running = await launch(NUTCRACKER, ['-c', conf, '-o', logFile, '-p', pidFile, '-s', String(statsPort), '-a', '127.0.0.1'], port);
    await waitForPort(statsPort);
  } catch (error) {
    const said = log();
    fs.rmSync(dir, { recursive: true, force: true });
    throw new Error(`nutcracker did not start: ${(error as Error).message} ${said}`);
  }
  return {
    port,
    log: () => log(running),
    async stop() {
      await running.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A reply to a text `get`: the value, a miss, or the error line (e.g. `SERVER_ERROR ...`). */
export type GetReply = { value: string } | { miss: true } | { error: string };

/** Stores each key's value with pipelined text `set`s; returns each reply line, in order. */
export async function setThrough(port: number, entries: Array<[key: string, value: string]>, timeoutMs = 10000): Promise<string[]> {
  const client = await RawClient.connect(port);
  try {
    client.send(entries.map(([key, value]) => `set ${key} 0 0 ${Buffer.byteLength(value)}\r\n${value}\r\n`).join(''));
    const reply = (await client.read((b) => countLines(b) >= entries.length, timeoutMs)).toString('latin1');
    const lines = reply.split('\r\n').slice(0, -1);
    if (lines.length !== entries.length) throw new Error(`${lines.length} replies to ${entries.length} sets: ${reply.slice(0, 200)}`);
    return lines;
  } finally {
    client.close();
  }
}

function countLines(bytes: Buffer): number {
  let count = 0;
  for (let at = bytes.indexOf('\r\n'); at !== -1; at = bytes.indexOf('\r\n', at + 2)) count++;
  return count;
}

/** Reads keys with pipelined single-key text `get`s (one reply each, whatever shard answers it). */
export async function getThrough(port: number, keys: string[], timeoutMs = 10000): Promise<Map<string, GetReply>> {
  const client = await RawClient.connect(port);
  try {
    client.send(keys.map((key) => `get ${key}\r\n`).join(''));
    const bytes = await client.read((b) => parseGetReplies(b, keys.length) !== null, timeoutMs);
    const replies = parseGetReplies(bytes, keys.length);
    if (replies === null) throw new Error(`incomplete replies to ${keys.length} gets: ${bytes.toString('latin1').slice(-200)}`);
    return new Map(keys.map((key, i) => [key, replies[i]]));
  } finally {
    client.close();
  }
}

/** `count` replies to single-key gets, or null while incomplete. */
function parseGetReplies(bytes: Buffer, count: number): GetReply[] | null {
  const out: GetReply[] = [];
  let at = 0;
  while (out.length < count) {
    const eol = bytes.indexOf('\r\n', at);
    if (eol === -1) return null;
    const line = bytes.toString('latin1', at, eol);
    at = eol + 2;
    if (line === 'END') {
      out.push({ miss: true });
      continue;
    }
    const head = /^VALUE \S+ \d+ (\d+)$/.exec(line);
    if (head === null) {
      out.push({ error: line });
      continue;
    }
    const end = at + Number(head[1]);
    if (bytes.length < end + '\r\nEND\r\n'.length) return null;
    out.push({ value: bytes.toString('latin1', at, end) });
    at = end + '\r\nEND\r\n'.length;
  }
  return out;
}
