/**
 * memcached's own number parsing (util.c safe_strto*), reproduced exactly so
 * the proxy frames requests the way memcached will: strtol semantics (leading
 * whitespace, optional sign), the number must end at whitespace or the end of
 * the token, 64-bit overflow is an error, and the result is then truncated to
 * the C type the caller stores it in.
 */

const WS = new Set([0x20, 0x09, 0x0a, 0x0b, 0x0c, 0x0d]);
const INT64_MAX = (1n << 63n) - 1n;
const INT64_MIN = -(1n << 63n);
const UINT64_MAX = (1n << 64n) - 1n;

interface Scan {
  negative: boolean;
  hadMinus: boolean;
  digits: string;
  ok: boolean;
}

function scan(token: string): Scan {
  let i = 0;
  while (i < token.length && WS.has(token.charCodeAt(i))) i++;
  let negative = false;
  if (token[i] === '+' || token[i] === '-') {
    negative = token[i] === '-';
    i++;
  }
  const start = i;
  while (i < token.length && token.charCodeAt(i) >= 0x30 && token.charCodeAt(i) <= 0x39) i++;
  const digits = token.slice(start, i);
  const ok = digits.length > 0 && (i === token.length || WS.has(token.charCodeAt(i)));
  return { negative, hadMinus: token.includes('-'), digits, ok };
}

function magnitude(digits: string): bigint {
  return digits.length <= 15 ? BigInt(Number(digits)) : BigInt(digits);
}

/** safe_strtol into int32_t: long parse, then truncation. */
export function parseInt32(token: string): number | null {
  const s = scan(token);
  if (!s.ok) return null;
  if (s.digits.length <= 9) return s.negative ? -Number(s.digits) : Number(s.digits);
  let v = magnitude(s.digits);
  if (s.negative) v = -v;
  if (v > INT64_MAX || v < INT64_MIN) return null;
  return Number(BigInt.asIntN(32, v));
}

/** safe_strtoul into uint32_t. */
export function parseUint32(token: string): number | null {
  const s = scan(token);
  if (!s.ok) return null;
  if (!s.negative && s.digits.length <= 9) return Number(s.digits);
  let v = magnitude(s.digits);
  if (v > UINT64_MAX) return null;
  if (s.negative) v = BigInt.asUintN(64, -v);
  if (BigInt.asIntN(64, v) < 0n && s.hadMinus) return null;
  return Number(BigInt.asUintN(32, v));
}

/** safe_strtoull into uint64_t. */
export function parseUint64(token: string): bigint | null {
  const s = scan(token);
  if (!s.ok) return null;
  let v = magnitude(s.digits);
  if (v > UINT64_MAX) return null;
  if (s.negative) v = BigInt.asUintN(64, -v);
  if (BigInt.asIntN(64, v) < 0n && s.hadMinus) return null;
  return v;
}
