/**
 * Keys no text command can name, and how replication writes and reads them.
 *
 * A key written through the binary protocol may hold spaces, CR, LF or NUL.
 * Meta commands take such a key base64-encoded, but memcached checks the
 * encoded length against 250, so from 187 bytes on no text command can name
 * it (see metaKeyFits). Replication applies, reads back and copies those keys
 * with the binary protocol, on connections of its own (LocalMemcachedBinary);
 * every other key keeps the meta path. A key always takes the same path, so
 * each key's commands stay in order as long as each path is FIFO.
 *
 * The binary protocol cannot tell an item's remaining life, so the node
 * remembers the expiry of each such key it wrote (KnownExpiries).
 */
import { Opcode, Status, STATUS_MESSAGES, type BinaryPacket } from '../protocol/binary/messages';
import { arithmeticExtras, encodeRequest, expiryExtras, storageExtras } from '../protocol/binary/serializer';
import { metaKeyFits } from '../protocol/text/serializer';

/** True for a key only the binary protocol can name. */
export function needsBinary(key: Buffer): boolean {
  return !metaKeyFits(key);
}

/** SetQ or AddQ: memcached answers only a failure. */
export function binaryStore(mode: 'set' | 'add', key: Buffer, value: Buffer, flags: number, exptime: number): Buffer {
  return encodeRequest({ opcode: mode === 'add' ? Opcode.AddQ : Opcode.SetQ, key, value, extras: storageExtras(flags, exptime) });
}

/** DeleteQ: memcached answers only a failure (a miss is one). */
export function binaryDelete(key: Buffer): Buffer {
  return encodeRequest({ opcode: Opcode.DeleteQ, key });
}

/** AppendQ/PrependQ, IncrementQ/DecrementQ (never creating a missing item): a replayed write; memcached answers only a failure. */
export function binaryReplay(op: 'append' | 'prepend' | 'incr' | 'decr', key: Buffer, value: Buffer): Buffer {
  if (op === 'append' || op === 'prepend') return encodeRequest({ opcode: op === 'append' ? Opcode.AppendQ : Opcode.PrependQ, key, value });
  // Expiry 0xffffffff: a missing item stays missing, as a text incr leaves it.
  const extras = arithmeticExtras(BigInt(value.toString('latin1')), 0n, 0xffff_ffff);
  return encodeRequest({ opcode: op === 'incr' ? Opcode.IncrementQ : Opcode.DecrementQ, key, extras });
}

/** Touch (it has no quiet twin; GATQ would answer every hit with the whole value). */
export function binaryTouch(key: Buffer, exptime: number): Buffer {
  return encodeRequest({ opcode: Opcode.Touch, key, extras: expiryExtras(exptime) });
}

/** GetK: always answered, the item's flags and value or a miss. */
export function binaryRead(key: Buffer): Buffer {
  return encodeRequest({ opcode: Opcode.GetK, key });
}

/** GetKQ: answered only on a hit, naming the key; `opaque` comes back in the reply. */
export function binaryFetch(key: Buffer, opaque: number): Buffer {
  return encodeRequest({ opcode: Opcode.GetKQ, key, opaque });
}

/** A GetK/GetKQ hit's client flags. */
export function flagsOf(packet: BinaryPacket): number {
  return packet.extras.length >= 4 ? packet.extras.readUInt32BE(0) : 0;
}

/**
 * An answer to a replicated command that means memcached refused the record
 * (out of memory, too large), as a line for the log; null for an answer that
 * is fine (a hit, a miss of a delete or touch, an add of a key it holds).
 */
export function binaryRefusal(packet: BinaryPacket): string | null {
  const { status, opcode } = packet.header;
  if (status === Status.Success || status === Status.KeyNotFound || status === Status.KeyExists || status === Status.NotStored) return null;
  const message = packet.value.length > 0 ? packet.value.toString('latin1') : (STATUS_MESSAGES[status] ?? '');
  return `binary opcode 0x${opcode.toString(16)}: status 0x${status.toString(16)} ${message}`;
}

/**
 * The expiry of each key only the binary protocol can name, as this node
 * last wrote it (its own clients' writes and the peer's records): an append
 * or incr keeps an item's expiry, and the read-back after it learns only
 * value and flags. Bounded: the key written longest ago is forgotten first.
 */
export class KnownExpiries {
  /** Deadline on this node's clock (ms), null for never, by key (latin1: one char per byte). */
  private readonly deadlines = new Map<string, number | null>();

  constructor(private readonly maxKeys = 10_000) {}

  note(key: Buffer, deadline: number | null): void {
    const name = key.toString('latin1');
    this.deadlines.delete(name);
    this.deadlines.set(name, deadline);
    if (this.deadlines.size > this.maxKeys) this.deadlines.delete(this.deadlines.keys().next().value as string);
  }

  forget(key: Buffer): void {
    this.deadlines.delete(key.toString('latin1'));
  }

  /** undefined when not known. */
  deadlineOf(key: Buffer): number | null | undefined {
    return this.deadlines.get(key.toString('latin1'));
  }

  get size(): number {
    return this.deadlines.size;
  }
}
