/**
 * A hostile peer on a node's replication port (fault "hostile-peer"). The
 * suite runs without a shared secret (loopback), so whoever connects can
 * speak the protocol; what it may not do is crash the node, keep a link the
 * node should refuse, or get records applied through one:
 *
 *   garbage, huge-length, unknown-frame, bad-magic, bad-version,
 *   record-before-hello, other-cluster, own-id (a HELLO claiming the node's
 *   own id): the node must close the connection at once, apply nothing
 *   (their records use keys "hostile:<variant>:*", which the checker
 *   requires to be absent) and keep serving its clients;
 *   out-of-range: right after the real link is cut, a well-formed HELLO of a
 *   third node whose fields are at the edge of their ranges (seq 2^53-1,
 *   maxFrameBytes 1, time 0), then records, an ACK, a full-copy request and
 *   a stray RESYNC_END with such fields. The node may take it for its peer for
 *   a moment (keys "hostile:range:*" are not compared); the real peer must
 *   win the link back and the pair must end identical.
 */
import { randomUUID } from 'node:crypto';
import * as net from 'node:net';
import { FrameType, type Hello, type OutgoingRecord } from '../../src/replication/link/frames/messages';
import { serializeAck, serializeFullCopyRequest, serializeHello, serializeRecord, serializeResyncEnd } from '../../src/replication/link/frames/serializer';
import { RawClient } from '../support/client';
import { sleep } from '../support/ports';
import type { History } from './history';
import type { NodeProcs } from './pair';
import { pick } from './random';

export const HOSTILE_VARIANTS = [
  'garbage',
  'huge-length',
  'unknown-frame',
  'bad-magic',
  'bad-version',
  'record-before-hello',
  'other-cluster',
  'own-id',
  'out-of-range',
] as const;
export type HostileVariant = (typeof HOSTILE_VARIANTS)[number];

/** Keys of variants whose records must never be applied. */
export const FORBIDDEN_PREFIXES = HOSTILE_VARIANTS.filter((v) => v !== 'out-of-range').map((v) => `hostile:${v}:`);
export const HOSTILE_PREFIX = 'hostile:';

const MAX_SEQ = Number.MAX_SAFE_INTEGER;
const CLUSTER = 'memrepl';

function hello(nodeId: string, fields: Partial<Hello> = {}): Buffer {
  return serializeHello({ cluster: CLUSTER, nodeId, runId: randomUUID(), lastApplied: null, time: Date.now(), lastSeq: 0, ...fields });
}

function records(variant: string, count: number, fields: Partial<OutgoingRecord> = {}): Buffer[] {
  return Array.from({ length: count }, (_, i) =>
    serializeRecord(
      {
        seq: i + 1,
        hlc: { wall: Date.now(), logical: 0 },
        op: 'set',
        key: Buffer.from(`hostile:${variant}:${i}`),
        flags: 0,
        value: Buffer.from(`hostile ${variant}`),
        delay: 0,
        expiresAt: null,
        ...fields,
      },
      Date.now(),
    ),
  );
}

function frame(type: number, payload: Buffer): Buffer {
  const header = Buffer.alloc(5);
  header.writeUInt32BE(payload.length + 1, 0);
  header[4] = type;
  return Buffer.concat([header, payload]);
}

/** The bytes a variant sends (out-of-range sends in two steps, see run). */
function bytesOf(variant: HostileVariant, target: NodeProcs, rnd: () => number): Buffer {
  switch (variant) {
    case 'garbage':
      return Buffer.from(Array.from({ length: 500 }, () => Math.floor(rnd() * 256)));
    case 'huge-length':
      return Buffer.concat([Buffer.from([0x7f, 0xff, 0xff, 0xff, FrameType.record]), Buffer.alloc(64, 0x41)]);
    case 'unknown-frame':
      return Buffer.concat([hello('mallory'), frame(0x7a, Buffer.from('{}')), ...records(variant, 3)]);
    case 'bad-magic': {
      const h = hello('mallory');
      h.write('XXXX', 5, 'latin1');
      return Buffer.concat([h, ...records(variant, 3)]);
    }
    case 'bad-version': {
      const h = hello('mallory');
      h.writeUInt16BE(99, 9);
      return Buffer.concat([h, ...records(variant, 3)]);
    }
    case 'record-before-hello':
      return Buffer.concat(records(variant, 3));
    case 'other-cluster':
      return Buffer.concat([serializeHello({ cluster: 'elsewhere', nodeId: 'mallory', runId: randomUUID(), lastApplied: null }), ...records(variant, 3)]);
    case 'own-id':
      return Buffer.concat([hello(target.name), ...records(variant, 3)]);
    case 'out-of-range':
      return Buffer.concat([
        hello('mallory', { lastApplied: { runId: randomUUID(), seq: MAX_SEQ }, lastSeq: MAX_SEQ, maxFrameBytes: 1, time: 0 }),
        ...records('range', 3, { flags: 0xffffffff, expiresAt: Date.now() + 2 ** 40 }),
        ...records('range', 1, { seq: MAX_SEQ }),
        serializeAck(MAX_SEQ),
        serializeFullCopyRequest({ reason: 'hostile', lastSeq: MAX_SEQ }),
        serializeResyncEnd({ items: MAX_SEQ }),
      ]);
  }
}

/** Connects, sends, and watches for up to `watchMs`: whether the node closed the connection. */
async function attack(port: number, bytes: Buffer, watchMs: number): Promise<{ closed: boolean; connected: boolean }> {
  const socket = net.connect(port, '127.0.0.1');
  let closed = false;
  let connected = false;
  socket.on('error', () => {});
  socket.on('data', () => {}); // the node's HELLO, records of a copy: read and dropped
  socket.on('close', () => (closed = true));
  await new Promise<void>((resolve) => {
    socket.once('connect', () => {
      connected = true;
      resolve();
    });
    socket.once('close', () => resolve());
    setTimeout(resolve, 1000);
  });
  if (connected) socket.write(bytes);
  const deadline = Date.now() + watchMs;
  while (!closed && Date.now() < deadline) await sleep(25);
  socket.destroy();
  return { closed, connected };
}

/**
 * Runs one hostile variant against `target`; findings go to `history` (category "hostile-peer"). Returns a label for
 * the timeline, and whether the variant may have taken the link for a moment (out-of-range).
 */
export async function hostilePeer(target: NodeProcs, cutLink: () => void, history: History, rnd: () => number): Promise<{ label: string; tookLink: boolean }> {
  const variant = pick(rnd, HOSTILE_VARIANTS);
  const label = `hostile peer (${variant}) on ${target.name}`;
  if (variant === 'out-of-range') {
    cutLink();
    const result = await attack(target.replicationPort, bytesOf(variant, target, rnd), 1000 + rnd() * 1000);
    if (!result.connected) history.odd('hostile-peer', `${label}: could not connect`);
  } else {
    const result = await attack(target.replicationPort, bytesOf(variant, target, rnd), 2000);
    if (result.connected && !result.closed) history.find('hostile-peer', `${label}: the node kept the connection open 2 s after it`);
  }
  if (!(await answers(target.port))) history.find('hostile-peer', `${label}: node ${target.name} stopped answering its clients after it`);
  return { label, tookLink: variant === 'out-of-range' };
}

/** The node answers `version` on its client port (tried for up to 5 s). */
async function answers(port: number): Promise<boolean> {
  for (let i = 0; i < 5; i++) {
    try {
      const client = await RawClient.connect(port);
      try {
        if ((await client.request('version\r\n', '\r\n', 1000)).startsWith('VERSION')) return true;
      } finally {
        client.close();
      }
    } catch {
      // not listening (yet): try again
    }
    await sleep(1000);
  }
  return false;
}
