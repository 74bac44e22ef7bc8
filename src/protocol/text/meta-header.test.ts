import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { metaValueLength, newMetaHeader, parseMetaHeader, scanMetaHeader, type MetaHeader } from './meta-header';

/** The header of `line`, scanned from the middle of a buffer (offsets are the line's own). */
function scan(line: string): MetaHeader {
  const buf = Buffer.from(`junk${line}\r\nrest`, 'latin1');
  const out = newMetaHeader();
  scanMetaHeader(buf, 4, 4 + line.length + 1, out); // the CR is left to the scanner
  if (out.keyEnd > out.keyStart) [out.keyStart, out.keyEnd] = [out.keyStart - 4, out.keyEnd - 4];
  return out;
}

const header = (fields: Partial<MetaHeader>): MetaHeader => ({ ...newMetaHeader(), ...fields });

/** Where the `k` flag's key is in `line`. */
function keyIn(line: string, key: string): Pick<MetaHeader, 'keyStart' | 'keyEnd'> {
  const keyStart = line.indexOf(` k${key}`) + 2;
  return { keyStart, keyEnd: keyStart + key.length };
}

test('VA with the flags a read asks for, as memcached 1.6 answers them', () => {
  let line = 'VA 3 f5 t100 kfoo';
  assert.deepEqual(scan(line), header({ status: 'VA', length: 3, flags: 5, ttl: 100, ...keyIn(line, 'foo') }));
  assert.deepEqual(scan('VA 0 f4294967295 t-1'), header({ status: 'VA', length: 0, flags: 4294967295, ttl: -1 }));
  line = 'VA 1 f0 t-1 kcGxhaW4= b O7';
  assert.deepEqual(scan(line), header({ status: 'VA', length: 1, ttl: -1, ...keyIn(line, 'cGxhaW4='), keyBase64: true, opaque: 7 }));
});

test('a stale item: X, and W for the read that won its recache token (Z for the later ones)', () => {
  assert.deepEqual(scan('VA 2 f0 t-1 c9 X W'), header({ status: 'VA', length: 2, ttl: -1, cas: 9, stale: true, won: true }));
  assert.deepEqual(scan('VA 2 f0 t-1 c9 Z X'), header({ status: 'VA', length: 2, ttl: -1, cas: 9, stale: true }));
  // A flag with a token is not the bare flag.
  assert.deepEqual(scan('HD Xy Wz'), header({ status: 'HD' }));
});

test('the other statuses, with or without flags', () => {
  assert.deepEqual(scan('HD c42'), header({ status: 'HD', cas: 42 }));
  assert.deepEqual(scan('HD'), header({ status: 'HD' }));
  assert.deepEqual(scan('EN'), header({ status: 'EN' }));
  for (const status of ['NF', 'NS', 'EX', 'MN'] as const) assert.equal(scan(status).status, status);
});

test('lines that are no meta status, and flags that are no numbers', () => {
  for (const line of ['CLIENT_ERROR bad command line format', 'SERVER_ERROR out of memory', 'ERROR', 'END', 'VALUE k 0 1', 'HDX', 'V', '']) {
    assert.equal(scan(line).status, null, line);
  }
  assert.deepEqual(scan('VA 2 fx tz O c'), header({ status: 'VA', length: 2, flags: -1, ttl: null, opaque: -1, cas: -1 }));
  for (const t of ['t', 't-', 't-2', 't-1x', 't1-']) assert.equal(scan(`VA 2 ${t}`).ttl, null, t);
  // `b` with a token is some other flag's value, not the base64 flag.
  assert.equal(scan('VA 2 bogus').keyBase64, false);
});

test('a VA line without a length a reader could trust', () => {
  for (const line of ['VA', 'VA ', 'VA x', 'VA 3x f1', 'VA  3', 'VA -1']) assert.equal(scan(line).length, -1, line);
});

test('metaValueLength: the VA length alone, null for every other line', () => {
  const length = (line: string) => metaValueLength(Buffer.from(`${line}\r\n`, 'latin1'), 0, line.length + 1);
  assert.equal(length('VA 12 f1 t2'), 12);
  assert.equal(length('VA 0'), 0);
  assert.equal(length('VA 1e3'), -1);
  assert.equal(length('HD'), null);
  assert.equal(length('VALUE k 0 1'), null);
});

test('parseMetaHeader reads the first line of a whole reply', () => {
  const parsed = parseMetaHeader(Buffer.from('VA 2 f3 t4\r\nhi\r\n'));
  assert.deepEqual([parsed.status, parsed.length, parsed.flags, parsed.ttl], ['VA', 2, 3, 4]);
  assert.equal(parseMetaHeader(Buffer.from('EN\r\n')).status, 'EN');
});

test('property: the fields a split on spaces reads from any VA line memcached can send', () => {
  const flag = fc.oneof(
    fc.nat({ max: 2 ** 32 - 1 }).map((n) => `f${n}`),
    fc.oneof(fc.constant(-1), fc.nat()).map((n) => `t${n}`),
    fc.nat().map((n) => `c${n}`),
    fc.nat().map((n) => `O${n}`),
    fc.stringMatching(/^[!-~]{1,40}$/).map((key) => `k${key}`),
    fc.constantFrom('b', 's1', 'W', 'X', 'Z'),
  );
  fc.assert(
    fc.property(fc.nat({ max: 1 << 20 }), fc.array(flag, { maxLength: 8 }), (length, flags) => {
      const line = ['VA', String(length), ...flags].join(' ');
      const expected = header({ status: 'VA', length });
      let at = 3 + String(length).length;
      for (const token of flags) {
        const value = token.slice(1);
        if (token[0] === 'f') expected.flags = Number(value);
        if (token[0] === 't') expected.ttl = Number(value);
        if (token[0] === 'c') expected.cas = Number(value);
        if (token[0] === 'O') expected.opaque = Number(value);
        if (token[0] === 'k') [expected.keyStart, expected.keyEnd] = [at + 2, at + 1 + token.length];
        if (token === 'b') expected.keyBase64 = true;
        if (token === 'X') expected.stale = true;
        if (token === 'W') expected.won = true;
        at += 1 + token.length;
      }
      assert.deepEqual(scan(line), expected);
    }),
  );
});
