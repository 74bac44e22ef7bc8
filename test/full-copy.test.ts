/**
 * The full copy's guarantees under conditions the happy path does not meet:
 * keys that clients are reading on the sender at the moment the walk passes
 * them, and a copy that fails while the link stays up. Real memcached and
 * memrepl processes.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Item, load, readAll } from './support/bulk';
import { clientLoops, RawClient } from './support/client';
import { eventually, freePort } from './support/ports';
import { Node, startMemcached, startNode, stopAll } from './support/processes';
import { stat } from './support/replication';
import { createLogger } from '../src/log';
import { FullCopy, type FullCopyOptions, type FullCopyProgress } from '../src/replication/copy/full-copy';
import { CopyWalk } from '../src/replication/copy/copy-walk';
import { KeySpool } from '../src/replication/copy/key-spool';
import { KeyFilter } from '../src/replication/copy/key-filter';
import { FrameParser } from '../src/replication/link/frames/parser';
import type { Link } from '../src/replication/link/link';
import { binaryStore } from '../src/replication/binary-keys';
import { LocalMemcachedBinary } from '../src/replication/local-memcached';
import { TTL_NEVER, type RecordFrame } from '../src/replication/link/frames/messages';
import { serializeHello, serializeRecord, serializeResyncBegin, serializeResyncEnd } from '../src/replication/link/frames/serializer';
import { newNonce } from '../src/replication/link/link-auth';
import { RawLink } from './support/raw-link';

function items(count: number, prefix: string): Item[] {
  return Array.from({ length: count }, (_, i) => ({
    key: `${prefix}:${i}`,
    value: Buffer.from(`value of ${prefix}:${i}`),
    flags: i % 7,
    exptime: 0,
  }));
}

/**
 * Clients looping multi-gets of `keys` on a memcached until stopped: items
 * referenced by a read at the instant memcached's LRU crawler passes them are
 * skipped by `lru_crawler metadump all`.
 */
function hotReaders(port: number, keys: string[], clients: number): { stop(): Promise<number> } {
  const request = `get ${keys.join(' ')}\r\n`;
  return clientLoops(Array<number>(clients).fill(port), async (client) => {
    await client.request(request, 'END\r\n', 5000);
  });
}

/** Keys of `expected` that the memcached on `port` lacks or holds with another value. */
async function missing(port: number, expected: Item[]): Promise<string[]> {
  const held = await readAll(
    port,
    expected.map((i) => i.key),
  );
  return expected.filter((i) => !held.get(i.key)?.value.equals(i.value)).map((i) => i.key);
}

async function readyz(node: Node): Promise<{ status: number; body: string }> {
  const response = await fetch(`http://127.0.0.1:${node.metricsPort}/readyz`);
  return { status: response.status, body: await response.text() };
}

async function metric(node: Node, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${node.metricsPort}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(name));
  return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
}

describe('full copy', () => {
  it('carries every key, also those clients are reading on the sender during the walk', async () => {
    const ra = await freePort();
    const a = await startNode('a', ra, null);
    // Every key hot, as in the report: with four readers, metadump all listed about 80 of the 200.
    const hot = items(200, 'hot');
    const all = [...hot, ...items(20, 'cold')];
    await load(a.memcached.port, all);
    const b = await startNode('b', await freePort(), ra);
    const readers = hotReaders(
      a.memcached.port,
      hot.map((i) => i.key),
      4,
    );
    try {
      await eventually(async () => (await stat(b, 'copies_received')) === '1', 20000, 'the first copy');
      await eventually(async () => (await missing(b.memcached.port, all)).length === 0, 5000, 'the first copy to be applied');
      // B's memcached comes back empty three times; each copy must bring back every key.
      for (let round = 2; round <= 4; round++) {
        const port = b.memcached.port;
        await b.memcached.stop('SIGKILL');
        b.memcached = await startMemcached([], port);
        await eventually(async () => (await stat(b, 'copies_received')) === String(round), 20000, `copy ${round}`);
        let lost: string[] = [];
        await eventually(
          async () => (lost = await missing(b.memcached.port, all)).length === 0,
          5000,
          () => `copy ${round} to hold every key (missing ${lost.length}: ${lost.slice(0, 5).join(' ')}...)`,
        );
      }
      assert.ok((await readers.stop()) > 100, 'the readers kept reading during the copies');
    } finally {
      await readers.stop();
      await stopAll(a, b);
    }
  });

  it('a copy that fails while the link stays up is retried, counted, and says why until it completes', async () => {
    const ra = await freePort();
    const a = await startNode('a', ra, null);
    const data = items(3000, 'key');
    await load(a.memcached.port, data);
    // Keep A's crawler busy with a walk of our own, slowed to a second per 1000 hash buckets (about a minute in all):
    // the copy's walk gets BUSY for longer than it waits, and fails while the replication link is fine.
    const admin = await RawClient.connect(a.memcached.port);
    const occupier = await RawClient.connect(a.memcached.port);
    try {
      assert.equal(await admin.request('lru_crawler sleep 1000000\r\n'), 'OK\r\n');
      occupier.send('lru_crawler metadump hash\r\n');
      const b = await startNode('b', await freePort(), ra);
      try {
        const failures = 'memrepl_replication_full_copy_failures_total{reason="crawler_busy"}';
        await eventually(async () => (await metric(a, failures)) >= 1, 40000, 'the copy to fail on a busy crawler');
        assert.equal(await stat(b, 'peer_up'), '1', 'the link stayed up');
        assert.match(await stat(a, 'copy_last_failure'), /^crawler_busy: /);
        assert.match(await stat(b, 'copy_receiving_status'), /crawler_busy/);
        const notReady = await readyz(b);
        assert.equal(notReady.status, 503);
        assert.match(notReady.body, /waiting for a full copy from the peer.*crawler_busy/);
        assert.equal(await stat(b, 'copies_received'), '0');

        // The crawler is free again: a retry completes the copy, and the failure is no longer reported.
        assert.equal(await admin.request('lru_crawler sleep 0\r\n'), 'OK\r\n');
        occupier.close();
        await eventually(async () => (await stat(b, 'copies_received')) === '1', 60000, 'a retried copy to complete');
        let lost: string[] = [];
        await eventually(
          async () => (lost = await missing(b.memcached.port, data)).length === 0,
          5000,
          () => `every key on B (missing ${lost.length})`,
        );
        assert.equal((await readyz(b)).status, 200);
        assert.equal(await stat(a, 'copy_last_failure'), '');
        assert.ok((await metric(a, failures)) >= 1, 'the failure stays counted');
      } finally {
        await stopAll(b);
      }
    } finally {
      admin.close();
      occupier.close();
      await stopAll(a);
    }
  });
});

/**
 * A FullCopy from a real memcached into a stand-in for the link that decodes
 * what it is sent: every key the copy sent, and how often.
 */
async function copyOut(
  port: number,
  options: Partial<FullCopyOptions> = {},
  /** Runs alongside the copy. */
  during: (copy: FullCopy) => Promise<void> = async () => {},
): Promise<{ progress: FullCopyProgress; sent: Map<string, number>; records: Map<string, RecordFrame>; log: string }> {
  const parser = new FrameParser({ maxFrameBytes: 2 * 1024 * 1024 });
  const sent = new Map<string, number>();
  const records = new Map<string, RecordFrame>();
  const link = {
    open: true,
    congested: false,
    write(bytes: Buffer) {
      parser.push(bytes);
      for (let frame = parser.next(); frame !== null; frame = parser.next()) {
        if (frame.type !== 'record') continue;
        const key = frame.key.toString('latin1');
        sent.set(key, (sent.get(key) ?? 0) + 1);
        records.set(key, frame);
      }
      return true;
    },
  } as unknown as Link;
  let log = '';
  const copy = new FullCopy(
    { host: '127.0.0.1', port },
    link,
    {
      mode: 'set',
      ratePerSecond: 0,
      connectTimeoutMs: 2000,
      maxInFlight: 512,
      maxInFlightBytes: 16 * 1024 * 1024,
      peerMaxFrameBytes: Infinity,
      localWrites: {
        mark: () => ({ wall: 0, logical: 0 }),
        writtenSince: () => false,
        stampOf: () => undefined,
        survivorStamp: () => ({ wall: 1, logical: 0 }),
      },
      ...options,
    },
    createLogger(1, (line) => (log += line)),
  );
  const [progress] = await Promise.all([copy.run(), during(copy)]);
  return { progress, sent, records, log };
}

describe('FullCopy against memcached', () => {
  it('a cache larger than the spool is walked in hash ranges: every key sent, and a check walk finds nothing missing', async () => {
    const memcached = await startMemcached();
    try {
      const data = items(5000, 'key');
      await load(memcached.port, data);
      const readers = hotReaders(
        memcached.port,
        data.slice(0, 200).map((i) => i.key),
        2,
      );
      // About 30 bytes a key: a 16 KiB spool holds some 500 of the 5000.
      const { progress, sent } = await copyOut(memcached.port, { spoolMaxBytes: 16 * 1024 });
      await readers.stop();
      const lost = data.filter((i) => !sent.has(i.key));
      assert.deepEqual(
        lost.map((i) => i.key),
        [],
      );
      assert.ok(progress.walks >= 3, `range walks and a check (${progress.walks} walks)`);
      assert.equal(progress.repaired, 0);
      // Keys fetched before their walk's range shrank are sent again by the next walk: a few, not most.
      const again = [...sent.values()].filter((n) => n > 1).length;
      assert.ok(again < data.length / 4, `${again} keys sent twice`);
      assert.ok(!sent.has('memrepl:copy-mark'), 'the mark is not copied');
    } finally {
      await memcached.stop();
    }
  });

  it('a cache the spool holds whole is walked once, and its keys may be fetched while that walk still streams', async () => {
    const memcached = await startMemcached();
    try {
      const data = items(50_000, 'whole');
      await load(memcached.port, data);
      // The walk alone, driven as FullCopy drives it: after every chunk of the walk, is what it spooled fetchable yet?
      const progress: FullCopyProgress = { items: 0, expected: null, bytes: 0, skipped: 0, walks: 0, repaired: 0 };
      let fetchableMidWalk = false;
      let failure = '';
      let walk: CopyWalk | null = null;
      const ended = new Promise<void>((resolve) => {
        walk = new CopyWalk({
          upstream: { host: '127.0.0.1', port: memcached.port },
          connectTimeoutMs: 2000,
          localWrites: { mark: () => ({ wall: 0, logical: 0 }) },
          cacheItems: data.length,
          markCas: 0,
          spool: new KeySpool(),
          accounted: new KeyFilter(data.length * 2, 1024 * 1024),
          progress,
          log: createLogger(0, () => {}),
          drive: () => {
            if (progress.walks === 0 && walk!.fetchable) fetchableMidWalk = true;
            if (progress.walks > 0) resolve();
          },
          finish: () => resolve(),
          fail: (reason, message) => {
            failure = `${reason}: ${message}`;
            resolve();
          },
        });
      });
      await walk!.start();
      await ended;
      walk!.stop();
      assert.equal(failure, '');
      assert.equal(progress.walks, 1);
      // A 3 MB walk arrives in many chunks; sized after its first 10,000 lines, its keys are fetchable before its end.
      assert.ok(fetchableMidWalk, 'keys fetchable before the walk ended');
    } finally {
      await memcached.stop();
    }
  });

  it("each record carries the stamp of the key's last write the sender remembers, else the survivor stamp as its fetch left", async () => {
    const memcached = await startMemcached();
    try {
      await load(memcached.port, items(20, 'st'));
      const remembered = { wall: 1_700_000_000_000, logical: 7 };
      const stampOf = (key: Buffer, start: number, end: number) => (key.toString('latin1', start, end) === 'st:3' ? remembered : undefined);
      let asked = 0;
      const survivorStamp = () => ({ wall: 1_600_000_000_000 + asked++, logical: 3 });
      const { records } = await copyOut(memcached.port, {
        localWrites: { mark: () => ({ wall: 0, logical: 0 }), writtenSince: () => false, stampOf, survivorStamp },
      });
      assert.deepEqual(records.get('st:3')?.hlc, remembered);
      const stamp = records.get('st:4')!.hlc;
      assert.ok(asked > 0 && stamp.logical === 3 && stamp.wall >= 1_600_000_000_000 && stamp.wall < 1_600_000_000_000 + asked, JSON.stringify(stamp));
    } finally {
      await memcached.stop();
    }
  });

  it('an item whose last remembered write is a delete is not sent: the delete was still on its way to memcached when the fetch read it', async () => {
    // Fault suite, seed 21 (600 s): memcached a restarted, b's delete of a key was noted as its record arrived but
    // not yet run by a's memcached, which still held the older value; a's copy sent that value under the delete's
    // stamp, and b, taking it for its own write, put it back.
    const memcached = await startMemcached();
    try {
      await load(memcached.port, items(20, 'del'));
      const deletion = { wall: 1_700_000_000_000, logical: 2, deleted: true };
      const stampOf = (key: Buffer, start: number, end: number) => (key.toString('latin1', start, end) === 'del:3' ? deletion : undefined);
      const { records, progress } = await copyOut(memcached.port, {
        localWrites: { mark: () => ({ wall: 0, logical: 0 }), writtenSince: () => false, stampOf, survivorStamp: () => ({ wall: 1, logical: 0 }) },
      });
      assert.equal(records.get('del:3'), undefined, "not sent under the delete's stamp");
      assert.equal(records.size, 19);
      assert.equal(progress.skipped, 1);
    } finally {
      await memcached.stop();
    }
  });

  it('a stale item (md … I) is sent as an invalidate in a set-mode copy, as a plain add in an add-mode one', async () => {
    const memcached = await startMemcached();
    try {
      const client = await RawClient.connect(memcached.port);
      assert.equal(await client.request('ms fresh 1\r\nx\r\nms stale 1\r\ny\r\nmd stale I\r\n'), 'HD\r\nHD\r\nHD\r\n');
      client.close();
      const set = await copyOut(memcached.port);
      assert.deepEqual([set.records.get('fresh')?.op, set.records.get('stale')?.op, set.records.get('stale')?.value.toString()], ['set', 'invalidate', 'y']);
      const add = await copyOut(memcached.port, { mode: 'add' });
      assert.deepEqual([add.records.get('fresh')?.op, add.records.get('stale')?.op], ['add', 'add']);
    } finally {
      await memcached.stop();
    }
  });

  it("a copy's read of a stale item gives its recache token back: the next client read still wins it", async () => {
    // memcached hands a stale item's token (W) to the first mg that reads it; a copy's fetch is no client.
    const memcached = await startMemcached();
    try {
      const client = await RawClient.connect(memcached.port);
      assert.equal(await client.request('ms stale 1\r\ny\r\nmd stale I\r\n'), 'HD\r\nHD\r\n');
      const copy = await copyOut(memcached.port);
      assert.equal(copy.records.get('stale')?.op, 'invalidate');
      await eventually(async () => /\bW\b/.test(await client.request('mg stale\r\n', '\r\n')), 3000, 'a client read to win the token');
      assert.match(await client.request('mg stale\r\n', '\r\n'), /\bZ\b/, 'the read after it sees the token taken');
      client.close();
    } finally {
      await memcached.stop();
    }
  });

  it('keys the text protocol cannot carry (spaces, NUL, %) are walked, fetched in base64, and sent as their bytes', async () => {
    const memcached = await startMemcached();
    try {
      const keys = ['a b', 'nul\0byte', '100%', 'tab\there', 'plain'];
      const client = await RawClient.connect(memcached.port);
      for (const key of keys) {
        assert.equal(await client.request(`ms ${Buffer.from(key, 'latin1').toString('base64')} 1 b\r\nx\r\n`), 'HD\r\n');
      }
      client.close();
      const { sent, progress } = await copyOut(memcached.port);
      assert.deepEqual([...sent.keys()].sort(), [...keys].sort());
      assert.equal(progress.repaired, 0);
    } finally {
      await memcached.stop();
    }
  });

  it("keys no text command can name are fetched over the binary protocol, with their flags and the walk's expiry, also in range walks", async () => {
    const memcached = await startMemcached();
    const binary = new LocalMemcachedBinary({ host: '127.0.0.1', port: memcached.port }, 2000);
    try {
      const data = items(3000, 'key');
      await load(memcached.port, data);
      // 188 to 249 bytes with spaces, CR, LF and NUL: in base64 they would pass memcached's 250-byte limit.
      const unnameable = Array.from({ length: 300 }, (_, i) => ({
        key: Buffer.from(`${i} \r\n\0 ${'k'.repeat(182 + (i % 60))}`, 'latin1'),
        value: Buffer.from(`value ${i}\0\r\n`, 'latin1'),
        flags: 1000 + i,
        exptime: i % 2 ? 0 : 600 + i,
      }));
      const refused = await binary.quietBatch(Buffer.concat(unnameable.map((i) => binaryStore('set', i.key, i.value, i.flags, i.exptime))));
      assert.deepEqual(refused, []);
      // A spool of 16 KiB holds some 500 of these keys: several walks, and entries with and without an expiry dropped when a range shrinks.
      const startedAt = Date.now();
      const { progress, sent, records } = await copyOut(memcached.port, { spoolMaxBytes: 16 * 1024 });
      const elapsedS = Math.ceil((Date.now() - startedAt) / 1000);
      assert.deepEqual(
        data.filter((i) => !sent.has(i.key)).map((i) => i.key),
        [],
      );
      for (const item of unnameable) {
        const record = records.get(item.key.toString('latin1'));
        assert.ok(record, `key ${item.flags - 1000} sent`);
        assert.equal(record.flags, item.flags);
        assert.deepEqual(record.value, item.value);
        if (item.exptime === 0) assert.equal(record.ttlMs, TTL_NEVER);
        else
          assert.ok(
            record.ttlMs <= item.exptime * 1000 && record.ttlMs > (item.exptime - 2 - elapsedS) * 1000,
            `key ${item.flags - 1000}: ttl ${record.ttlMs} ms for ${item.exptime} s`,
          );
      }
      assert.ok(progress.walks >= 3, `range walks and a check (${progress.walks} walks)`);
      // The check walk found every one of them accounted for.
      assert.equal(progress.repaired, 0);
    } finally {
      binary.close();
      await memcached.stop();
    }
  });

  it("such a key a client rewrites after the walk read it and before its fetch is left to the live record: the walk's expiry is no longer its own", async () => {
    const memcached = await startMemcached();
    const binary = new LocalMemcachedBinary({ host: '127.0.0.1', port: memcached.port }, 2000);
    try {
      const keys = Array.from({ length: 100 }, (_, i) => Buffer.from(`${i} ${'k'.repeat(200)}`, 'latin1'));
      assert.deepEqual(await binary.quietBatch(Buffer.concat(keys.map((key) => binaryStore('set', key, Buffer.from('old'), 1, 0)))), []);
      // The node's clock of local writes, as the replicator's history keeps it.
      let clock = 0;
      const written = new Map<string, number>();
      const localWrites = {
        mark: () => ({ wall: ++clock, logical: 0 }),
        writtenSince: (key: Buffer, start: number, end: number, mark: { wall: number }) => (written.get(key.toString('latin1', start, end)) ?? 0) > mark.wall,
        stampOf: () => undefined,
        survivorStamp: () => ({ wall: 1, logical: 0 }),
      };
      // Paced: the fetches take about two seconds after the walk.
      const { records, progress } = await copyOut(memcached.port, { ratePerSecond: 50, localWrites }, async (copy) => {
        await eventually(async () => copy.progress.walks >= 1, 5000, 'the walk');
        assert.ok(copy.progress.items < keys.length / 2, `most keys still to fetch (${copy.progress.items} sent)`);
        // A client rewrites every key with an expiry: memcached and the node's history both know. (Noted first: a
        // fetch answered between memcached's store and the note is a race the live record settles, not this test's.)
        for (const key of keys) written.set(key.toString('latin1'), ++clock);
        assert.deepEqual(await binary.quietBatch(Buffer.concat(keys.map((key) => binaryStore('set', key, Buffer.from('new'), 2, 900)))), []);
      });
      const stale = [...records.values()].filter((r) => r.value.toString() !== 'old' || r.ttlMs !== TTL_NEVER);
      assert.deepEqual(
        stale.map((r) => `${r.key.toString('latin1', 0, 3)}: ${r.value} for ${r.ttlMs} ms`),
        [],
        'a rewritten value sent with the expiry the walk read before it',
      );
      assert.ok(progress.skipped >= keys.length / 2, `the rewritten keys left to their live records (${progress.skipped} skipped)`);
    } finally {
      binary.close();
      await memcached.stop();
    }
  });

  it('memcached without CAS (-C): the copy completes, and says it cannot check itself', async () => {
    const memcached = await startMemcached(['-C']);
    try {
      const data = items(500, 'key');
      await load(memcached.port, data);
      const { progress, sent, log } = await copyOut(memcached.port);
      assert.equal(data.filter((i) => !sent.has(i.key)).length, 0);
      assert.equal(progress.walks, 1);
      assert.match(log, /cannot check that it sent everything: memcached gives items no CAS/);
    } finally {
      await memcached.stop();
    }
  });
});

describe('what a received copy stands for', () => {
  it('a copy covers the writes it waited for, not those made before another connection greeted the node meanwhile', async () => {
    // The node keeps a write of its clients over a copy's item unless the copy covers it (the peer
    // applied it before reading). A HELLO on any other connection (a duplicate link, a stranger)
    // used to move that point forward under the copy under way, and its older items then won.
    const b = await startNode('b', await freePort(), null);
    const peer = await RawLink.open(b.replicationPort);
    try {
      const hello = await peer.first('hello', 2000);
      assert.ok(hello, 'the node greets');
      peer.send(serializeHello({ cluster: 'memrepl', nodeId: 'a', runId: 'fake', lastApplied: null, nonce: newNonce(), time: Date.now(), lastSeq: 0 }));
      await eventually(async () => (await stat(b, 'peer_up')) === '1', 5000, 'the link up');
      const oldItem = (key: string) =>
        serializeRecord(
          {
            seq: 0,
            hlc: { wall: Date.now() - 60_000, logical: 0 },
            op: 'set',
            key: Buffer.from(key),
            flags: 0,
            value: Buffer.from('old'),
            delay: 0,
            expiresAt: null,
          },
          Date.now(),
        );
      for (const [round, covers] of [
        [1, hello.lastSeq ?? 0],
        [2, undefined],
      ] as const) {
        const key = `covered${round}`;
        const client = await RawClient.connect(b.memrepl.port);
        assert.equal(await client.request(`set ${key} 0 0 3\r\nnew\r\n`), 'STORED\r\n');
        client.close();
        const stranger = await RawLink.open(b.replicationPort);
        assert.ok(await stranger.first('hello', 2000), 'the node greets the stranger too');
        stranger.close();
        // From a peer that says what its copy covers (round 1), and from one that does not (round 2).
        peer.send(serializeResyncBegin({ reason: 'test', covers }), oldItem(key), serializeResyncEnd({ items: 1 }));
        await eventually(async () => (await stat(b, 'copies_received')) === String(round), 5000, `copy ${round} received`);
        const [held] = [...(await readAll(b.memcached.port, [key])).values()];
        assert.equal(held?.value.toString(), 'new', `round ${round}: the write made after the handshake stands`);
      }
    } finally {
      peer.close();
      await stopAll(b);
    }
  });
});
