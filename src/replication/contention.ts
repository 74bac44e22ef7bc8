/**
 * Races between a client's write and a peer's record for the same key.
 *
 * A client write and an applied record travel to memcached on different
 * connections; when both are in flight at once, the order memcached applies
 * them in is not the order of their clocks, and the two nodes could each keep
 * the other's value. So whenever the two overlap for a key, once both have
 * settled the key is read back and shipped again as a fresh local write:
 * whatever this memcached ended with wins on both nodes.
 *
 * Pure bookkeeping: the caller supplies the repair.
 */
export class Contention {
  private readonly local = new Map<string, number>();
  private readonly applying = new Map<string, number>();
  private readonly contended = new Set<string>();
  repairs = 0;

  constructor(private readonly repair: (key: Buffer) => void) {}

  /** A client write of `key` was sent to memcached. */
  localStarted(key: Buffer): void {
    const id = key.toString('latin1');
    if (this.applying.has(id)) this.contended.add(id);
    increment(this.local, id);
  }

  localSettled(key: Buffer): void {
    this.settle(this.local, key);
  }

  /** A peer's record for `key` was sent to memcached. */
  applyStarted(key: Buffer): void {
    this.applyStartedId(key.toString('latin1'));
  }

  applySettled(key: Buffer): void {
    this.settleId(this.applying, key.toString('latin1'));
  }

  /** applyStarted / applySettled by the key's latin1 string, for a caller that has it already (bulk copies). */
  applyStartedId(id: string): void {
    if (this.local.has(id)) this.contended.add(id);
    increment(this.applying, id);
  }

  applySettledId(id: string): void {
    this.settleId(this.applying, id);
  }

  private settle(map: Map<string, number>, key: Buffer): void {
    this.settleId(map, key.toString('latin1'));
  }

  private settleId(map: Map<string, number>, id: string): void {
    decrement(map, id);
    if (this.contended.has(id) && !this.local.has(id) && !this.applying.has(id)) {
      this.contended.delete(id);
      this.repairs++;
      this.repair(Buffer.from(id, 'latin1'));
    }
  }
}

function increment(map: Map<string, number>, id: string): void {
  map.set(id, (map.get(id) ?? 0) + 1);
}

function decrement(map: Map<string, number>, id: string): void {
  const count = (map.get(id) ?? 1) - 1;
  if (count === 0) map.delete(id);
  else map.set(id, count);
}
