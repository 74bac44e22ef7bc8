/**
 * The client-facing text parser against hostile input: random bytes never
 * escape as an exception, memory stays bounded, and framing does not depend
 * on how the bytes were split into socket reads.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import type { TextRequest } from './messages';
import { TextRequestParser } from './request-parser';

const limits = { maxItemSize: 4096, maxMultigetLine: 64 * 1024, reqsPerEvent: 20 };

function parseAll(chunks: Buffer[]): { requests: TextRequest[]; maxBuffered: number } {
  const parser = new TextRequestParser(limits);
  const requests: TextRequest[] = [];
  let maxBuffered = 0;
  for (const chunk of chunks) {
    parser.push(chunk);
    let request: TextRequest | null;
    while ((request = parser.next()) !== null) {
      requests.push(request);
      if (request.type === 'close') return { requests, maxBuffered };
    }
    maxBuffered = Math.max(maxBuffered, parser.buffered);
  }
  return { requests, maxBuffered };
}

/** A request's identity for comparisons: its type and the bytes it covers. */
const shape = (r: TextRequest) => ('raw' in r ? `${r.type}:${r.raw.toString('latin1')}` : JSON.stringify({ ...r, key: undefined }));

const commandish = fc.oneof(
  fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
  fc
    .constantFrom(
      'set k 0 0 5\r\nhello\r\n',
      'get a b c\r\n',
      'ms k 3 q\r\nabc\r\n',
      'mg k v q\r\n',
      'incr k 1 noreply\r\n',
      '\r\n',
      'mn\r\n',
      'set big 0 0 9999\r\n',
    )
    .map((s) => Buffer.from(s, 'latin1')),
);

test('property: random and command-like bytes never throw, and buffering stays bounded', () => {
  fc.assert(
    fc.property(fc.array(commandish, { maxLength: 40 }), fc.array(fc.integer({ min: 1, max: 50 }), { minLength: 1, maxLength: 20 }), (pieces, sizes) => {
      const stream = Buffer.concat(pieces);
      const chunks: Buffer[] = [];
      for (let at = 0, i = 0; at < stream.length; i++) {
        const size = sizes[i % sizes.length];
        chunks.push(stream.subarray(at, at + size));
        at += size;
      }
      const { maxBuffered } = parseAll(chunks);
      // One item's data block (and its command line) at most, or a long line about to be refused.
      assert.ok(maxBuffered <= limits.maxItemSize + limits.maxMultigetLine, `buffered ${maxBuffered}`);
    }),
    { numRuns: 5000 },
  );
});

test('property: the same bytes frame the same requests however they are split', () => {
  fc.assert(
    fc.property(fc.array(commandish, { maxLength: 30 }), fc.integer({ min: 1, max: 17 }), (pieces, size) => {
      const stream = Buffer.concat(pieces);
      const whole = parseAll([stream]).requests.map(shape);
      const split: Buffer[] = [];
      for (let at = 0; at < stream.length; at += size) split.push(stream.subarray(at, at + size));
      assert.deepEqual(parseAll(split).requests.map(shape), whole);
    }),
    { numRuns: 3000 },
  );
});

test('a data block over the item limit is refused without being buffered', () => {
  const parser = new TextRequestParser(limits);
  parser.push(Buffer.from('set big 0 0 100000\r\n'));
  const refused = parser.next();
  assert.equal(refused?.type, 'too_large');
  for (let i = 0; i < 100; i++) parser.push(Buffer.alloc(1000, 'x'));
  assert.equal(parser.buffered, 0);
  parser.push(Buffer.from('\r\nget k\r\n'));
  assert.equal(parser.next()?.type, 'retrieval');
});

test('a long line without a newline closes, unless it is a multi-get', () => {
  const parser = new TextRequestParser(limits);
  parser.push(Buffer.alloc(3000, 'a'));
  assert.deepEqual(parser.next(), { type: 'close', reason: 'line too long' });
  const multiget = new TextRequestParser(limits);
  multiget.push(Buffer.from(`get ${'k '.repeat(2000)}`));
  assert.equal(multiget.next(), null);
  multiget.push(Buffer.from('\r\n'));
  assert.equal(multiget.next()?.type, 'retrieval');
});
