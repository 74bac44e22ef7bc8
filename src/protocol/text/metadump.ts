/**
 * `lru_crawler metadump` output (memcached 1.6): one line per item,
 * `key=<url-encoded> exp=<unix time or -1> la=... cas=... fetch=... cls=... size=<bytes>`,
 * ended by `END`. Lines end with a bare LF (only END has CRLF).
 *
 * Pure: a line in, an item out.
 */

export interface DumpedItem {
  /** The key's bytes (percent-decoded: keys can hold any byte). */
  key: Buffer;
  /** Absolute expiry on memcached's clock, -1 for never. */
  exp: number;
  /** Item size in memcached (header included): a budget estimate, not the value length. */
  size: number;
}

export type MetadumpLine = { type: 'item'; item: DumpedItem } | { type: 'end' } | { type: 'error'; message: string };

export function parseMetadumpLine(raw: string): MetadumpLine {
  const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
  if (line === 'END') return { type: 'end' };
  if (!line.startsWith('key=')) return { type: 'error', message: line };
  const fields = new Map<string, string>();
  for (const field of line.split(' ')) {
    const eq = field.indexOf('=');
    if (eq > 0) fields.set(field.slice(0, eq), field.slice(eq + 1));
  }
  const key = percentDecode(fields.get('key') ?? '');
  if (key === null || key.length === 0) return { type: 'error', message: `undecodable metadump line: ${line.slice(0, 100)}` };
  return { type: 'item', item: { key, exp: Number(fields.get('exp') ?? -1), size: Number(fields.get('size') ?? 0) } };
}

/** %XX escapes to bytes; anything else as its latin1 byte. Null if an escape is malformed. */
export function percentDecode(text: string): Buffer | null {
  const out = Buffer.allocUnsafe(text.length);
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c !== 0x25) {
      out[n++] = c & 0xff;
      continue;
    }
    const byte = parseInt(text.slice(i + 1, i + 3), 16);
    if (!/^[0-9a-fA-F]{2}$/.test(text.slice(i + 1, i + 3))) return null;
    out[n++] = byte;
    i += 2;
  }
  return out.subarray(0, n);
}
