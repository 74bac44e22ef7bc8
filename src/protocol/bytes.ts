/** No keys: what a plain get touches, and a read writes. Shared and frozen, so none is allocated per request. */
export const NO_KEYS: readonly Buffer[] = Object.freeze([]);

/**
 * Copies src[start, end) to dst at `at` and returns the offset after it. The
 * hot writers (RECORD frames of a copy, the copy's mg lines, the applier's
 * ms commands) copy keys and short values of a few dozen bytes, where a loop
 * beats Buffer.copy's call and argument handling; longer ranges take
 * Buffer.copy (a memcpy).
 */
export function copyRange(src: Buffer, start: number, end: number, dst: Buffer, at: number): number {
  if (end - start > 128) return at + src.copy(dst, at, start, end);
  for (let i = start; i < end; i++) dst[at++] = src[i];
  return at;
}

/** An integer's decimal digits (a minus first if negative) at `at`; returns the offset after them. */
export function writeDecimal(buf: Buffer, at: number, n: number): number {
  if (n >= 0 && n < 10) {
    buf[at] = 0x30 + n;
    return at + 1;
  }
  const digits = String(n);
  for (let i = 0; i < digits.length; i++) buf[at + i] = digits.charCodeAt(i);
  return at + digits.length;
}
