import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { MetaGetScanner, newFetchedValue, type FetchedValue } from './meta-get-scanner';

interface Seen {
  kind: string;
  key?: string;
  value?: string;
  flags?: number;
  ttl?: number | null;
  opaque?: number;
  base64?: boolean;
  line?: string;
}

function seen(kind: string, v: FetchedValue): Seen {
  if (kind === 'value') {
    return {
      kind,
      key: v.buf.toString('latin1', v.keyStart, v.keyEnd),
      value: v.buf.toString('latin1', v.valueStart, v.valueEnd),
      flags: v.flags,
      ttl: v.ttl,
      opaque: v.opaque,
      ...(v.keyBase64 ? { base64: true } : {}),
    };
  }
  return kind === 'other' ? { kind, line: v.line } : { kind };
}

/** Feeds `chunks` and collects everything the scanner hands out. */
function scanAll(chunks: Buffer[]): Seen[] {
  const scanner = new MetaGetScanner();
  const out = newFetchedValue();
  const all: Seen[] = [];
  for (const chunk of chunks) {
    scanner.push(chunk);
    for (let kind = scanner.next(out); kind !== null; kind = scanner.next(out)) all.push(seen(kind, out));
  }
  return all;
}

const REPLIES =
  'VA 3 f5 t100 kfoo\r\nbar\r\nVA 0 f0 t-1 kempty\r\n\r\nCLIENT_ERROR bad command line format\r\nVA 4 f4294967295 t0 O7\r\na\r\nb\r\n' +
  'VA 1 f0 t-1 kcGxhaW4= b\r\nx\r\nMN\r\n';
const EXPECTED: Seen[] = [
  { kind: 'value', key: 'foo', value: 'bar', flags: 5, ttl: 100, opaque: -1 },
  { kind: 'value', key: 'empty', value: '', flags: 0, ttl: -1, opaque: -1 },
  { kind: 'other', line: 'CLIENT_ERROR bad command line format' },
  { kind: 'value', key: '', value: 'a\r\nb', flags: 4294967295, ttl: 0, opaque: 7 },
  // A key stored in base64 (meta b) comes back in base64, with b.
  { kind: 'value', key: 'cGxhaW4=', value: 'x', flags: 0, ttl: -1, opaque: -1, base64: true },
  { kind: 'sentinel' },
];

test('values, an error line and the sentinel, as memcached 1.6 answers quiet meta gets', () => {
  assert.deepEqual(scanAll([Buffer.from(REPLIES, 'latin1')]), EXPECTED);
});

test('property: the same replies however the bytes are split', () => {
  const bytes = Buffer.from(REPLIES, 'latin1');
  fc.assert(
    fc.property(fc.uniqueArray(fc.integer({ min: 1, max: bytes.length - 1 }), { maxLength: 12 }), (cuts) => {
      const points = [0, ...cuts.sort((a, b) => a - b), bytes.length];
      const chunks = points.slice(1).map((end, i) => bytes.subarray(points[i], end));
      assert.deepEqual(scanAll(chunks), EXPECTED);
    }),
  );
});

test('bytes memcached could not have sent', () => {
  assert.throws(() => scanAll([Buffer.from('VA x\r\n')]));
  assert.throws(() => scanAll([Buffer.from('VA 3 kfoo\r\nbarXY')]));
  assert.throws(() => scanAll([Buffer.alloc(70 * 1024, 0x41)]));
});
