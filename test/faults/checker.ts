/**
 * The fault suite's verdict: both memcacheds compared key by key, and each
 * key against what its clients were told.
 *
 * Which keys: every key any client wrote or owns, plus every key either
 * memcached holds (from `lru_crawler metadump`), so a key that exists on one
 * side only is found even if no client wrote it. Each belongs to a class,
 * printed with every mismatch: "single:<workload>" (one writer owns it),
 * "shared" (every shared writer writes it), "hostile" (written by the hostile
 * peer), or "nobody's" (no client wrote it).
 *
 * The rules
 *
 * 1. Convergence, every class: both nodes hold the same thing: absent on
 *    both, or the same value and flags with TTLs within TTL_TOLERANCE_S
 *    (never = never). A difference is a MISMATCH. (3 s: an append or incr
 *    ships the TTL memcached reports in whole seconds, the receiver rounds
 *    it again, and each memcached's clock ticks at its own moment; plus the
 *    length of a stop that met the key's last write on its way, see
 *    stopAllowanceS.)
 *
 * 2. Single-writer keys: the final state is what the writer's log implies
 *    (model.ts replays it). Writes are replayed in the order the writer sent
 *    them with their effect (set, add, replace, cas, append, prepend,
 *    incr/decr, delete, touch/gat, invalidate). An acknowledged reply fixes
 *    the outcome (NOT_STORED, NOT_FOUND, a counter's new value); a write
 *    without a reply (timeout, closed connection, noreply pipeline, a whole
 *    request closed before its reply) may or may not have taken effect, up
 *    to LATE_MS after it was sent (its writer leaves the key alone that
 *    long). TTLs expire within TTL_SLACK_MS of their deadline (and within
 *    that slack an item gone on one node may come back from the other,
 *    whose memcached rounds its clock apart). A request
 *    cut mid-way is not in the log at all: it must never take effect. The
 *    value both nodes hold must be one the log allows; if not, the key is
 *    LOST. An acknowledged reply that no allowed state explains (outside a
 *    kill's aftermath, rule 3) is reported as a contradiction: the client saw
 *    a lost write live.
 *
 * 3. Kills (memrepl or memcached, kill -9) on the writer's node: writes it
 *    acknowledged less than the loss window (1 s) before may not have left
 *    it (replication is asynchronous), so the key may revert to its state at
 *    any moment of that window. Until the pair has settled (the node has
 *    received its full copy and the link is up with no copy running), the
 *    node's memcached may be empty or overwritten by a copy under the
 *    writer's ops, so replies then may see any of those states. A key that
 *    needs this allowance to pass is counted "lost within the window
 *    (allowed)", as the original suite did.
 *
 * 4. Flushes. A flush_all erases, on both nodes, every write made before it
 *    and none made after it, whichever node the writes went to: an
 *    immediate flush takes effect between its sending and its reply (writes
 *    within FLUSH_MARGIN_MS of that may fall either side); `flush_all N`
 *    erases what was stored before its deadline (sending + N s), give or
 *    take DELAYED_FLUSH_SLACK_MS, and nothing stored after (memcached
 *    drops even the writes made during the deadline's second, so within
 *    the slack a write may vanish though acknowledged). memcached
 *    replaces a pending delayed flush when given another, so the flush
 *    writer sends the next only once the last one's moment has surely
 *    passed; the model follows one pending flush at a time. A flush without
 *    a reply, or acknowledged less than the loss window before a kill on its
 *    node (rule 3), may or may not happen. Two things memrepl does around a
 *    flush show to clients and are allowed: a key it flushes and stores back
 *    (a newer write kept through the other node's flush, or a write a
 *    stopped memcached's stale clock flushed although it came after a
 *    delayed flush's moment, see flush-edge.ts) may be seen absent for a
 *    moment before it is back, and gets a new CAS unique, so a gets/cas
 *    across it may be refused although nobody wrote the key.
 *
 * 5. Shared keys: only convergence (rule 1), and no value nobody wrote: the
 *    value must split into pieces (each ending with ';') that some client
 *    sent to that key; a counter must be a decimal number.
 *
 * 6. No class may hold a value of a request cut mid-way, a key no client
 *    wrote, or a key of a hostile-peer record the node had to refuse
 *    ("hostile:<variant>:*"); keys "hostile:range:*" (a hostile peer the node
 *    may take for its peer for a moment) are not compared.
 *
 * Readers, the hostile peer and crash watching add findings of their own
 * (history.findings), printed with their category.
 */
import * as net from 'node:net';
import { newMetadumpLine, percentDecode, scanMetadumpLine } from '../../src/protocol/text/metadump';
import { type Held as Read, readAll, sameHeld } from '../support/bulk';
import { type Attempt, type History, type Owner, showAttempt, showKey, showValue } from './history';
import { FORBIDDEN_PREFIXES, HOSTILE_PREFIX } from './hostile-peer';
import { expectation, type Held, LATE_MS, matches, type ModelOptions, showItem } from './model';

/** How far apart two nodes' remaining TTLs of one item may read (rule 1). */
export const TTL_TOLERANCE_S = 3;

/** A memcached: TCP port on loopback, or unix socket path (launcher mode). */
export type Address = number | string;

export interface Tally {
  keys: number;
  mismatches: number;
  lost: number;
  lostInWindow: number;
  indeterminate: number;
}

export interface Verdict {
  keysCompared: number;
  /** Rule 1: the nodes differ. */
  mismatches: string[];
  /** Rules 2, 5, 6: the nodes agree on something the logs rule out (or a client saw a lost write). */
  lost: string[];
  /** Keys that pass only with the kill allowance (rule 3). */
  lostInWindow: number;
  /** Keys whose log forked too much to predict (checked for convergence and legitimate pieces only). */
  indeterminate: number;
  byClass: Map<string, Tally>;
}

export interface CheckOptions {
  lossWindowMs: number;
  /** Start of the run, for the times in reports. */
  origin: number;
}

/** Every key memcached at `address` holds (one metadump walk; retried while the crawler is busy). */
export async function dumpKeys(address: Address, timeoutMs = 30_000): Promise<Set<string>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = await new Promise<string>((resolve, reject) => {
      const socket = typeof address === 'string' ? net.connect(address) : net.connect(address, '127.0.0.1');
      let out = '';
      socket.setTimeout(timeoutMs, () => socket.destroy(new Error('metadump timed out')));
      socket.on('data', (chunk) => {
        out += chunk.toString('latin1');
        if (out.endsWith('END\r\n') || out.startsWith('BUSY') || out.startsWith('ERROR')) socket.end();
      });
      socket.on('error', reject);
      socket.on('close', () => resolve(out));
      socket.write('lru_crawler metadump all\r\n');
    });
    if (text.startsWith('BUSY') && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      continue;
    }
    const keys = new Set<string>();
    const line = newMetadumpLine();
    for (const raw of text.split('\n')) {
      if (raw === '') continue;
      const bytes = Buffer.from(raw, 'latin1');
      scanMetadumpLine(bytes, 0, bytes.length, line);
      if (line.kind === 'error') throw new Error(`metadump on ${address}: ${line.message}`);
      if (line.kind !== 'item') continue;
      const key = line.encoded ? percentDecode(bytes, line.keyStart, line.keyEnd) : bytes.subarray(line.keyStart, line.keyEnd);
      if (key === null) throw new Error(`metadump on ${address}: undecodable key in ${raw.slice(0, 100)}`);
      keys.add(key.toString('latin1'));
    }
    return keys;
  }
}

/**
 * Seconds the two nodes' TTLs of a key may differ beyond TTL_TOLERANCE_S
 * because a memcached was stopped (SIGSTOP) while the key's last write that
 * sets an expiry was on its way to it: memcached counts a relative TTL from
 * when it runs the request, so one that waited for it expires that much
 * later, for a replicated record as for any client's request (a memcached
 * without memrepl does the same). Only a stop overlapping that write's way
 * (its sending to LATE_MS after its reply) counts.
 */
function stopAllowanceS(attempts: readonly Attempt[], stops: History['stops']): number {
  let last: Attempt | undefined;
  for (let i = attempts.length - 1; i >= 0 && !last; i--) if (attempts[i].op.kind !== 'delete') last = attempts[i];
  if (!last) return 0;
  let allowanceMs = 0;
  for (const stop of stops) {
    if (stop.at > last.at + LATE_MS || stop.until < last.sentAt) continue;
    allowanceMs = Math.max(allowanceMs, stop.until - Math.max(stop.at, last.sentAt));
  }
  return Math.ceil(allowanceMs / 1000);
}

export async function check(memcacheds: { a: Address; b: Address }, history: History, options: CheckOptions): Promise<Verdict> {
  const keys = new Set<string>([...history.attempts.keys(), ...history.owners.keys(), ...history.shared.keys()]);
  for (const address of [memcacheds.a, memcacheds.b]) for (const key of await dumpKeys(address)) keys.add(key);
  const verdict: Verdict = { keysCompared: 0, mismatches: [], lost: [], lostInWindow: 0, indeterminate: 0, byClass: new Map() };
  const list = [...keys];
  for (let i = 0; i < list.length; i += 500) {
    const batch = list.slice(i, i + 500);
    // Both sides at once, so TTLs are read at the same moment.
    const [onA, onB] = await Promise.all([readAll(memcacheds.a, batch), readAll(memcacheds.b, batch)]);
    const now = Date.now();
    for (const key of batch) judge(key, toHeld(onA.get(key) ?? null), toHeld(onB.get(key) ?? null), onA.get(key) ?? null, onB.get(key) ?? null, now);
  }
  return verdict;

  function judge(key: string, a: Held | null, b: Held | null, rawA: Read | null, rawB: Read | null, now: number): void {
    if (key.startsWith(HOSTILE_PREFIX)) {
      if (FORBIDDEN_PREFIXES.some((p) => key.startsWith(p)) && (a || b)) {
        verdict.lost.push(`[hostile] ${showKey(key)}: a=${showHeld(a)} b=${showHeld(b)}: a record the node had to refuse was applied`);
        tally('hostile').lost++;
      }
      return;
    }
    const owner = history.owners.get(key);
    const shared = history.shared.get(key);
    const cls = owner ? `single:${owner.category}` : shared ? 'shared' : "nobody's";
    const t = tally(cls);
    verdict.keysCompared++;
    t.keys++;
    const lastOps = () => describeLog(history.attempts.get(key) ?? [], options.origin);
    if (!sameHeld(rawA, rawB, TTL_TOLERANCE_S + stopAllowanceS(history.attempts.get(key) ?? [], history.stops))) {
      verdict.mismatches.push(`[${cls}] ${showKey(key)}: a=${showHeld(a)} b=${showHeld(b)}${expected(key, owner, now)}; ${lastOps()}`);
      t.mismatches++;
      return;
    }
    if (!owner && !shared) {
      if (a) {
        verdict.lost.push(`[${cls}] ${showKey(key)}: both hold ${showHeld(a)}, a key no client wrote`);
        t.lost++;
      }
      return;
    }
    const counter = owner?.counter ?? shared?.counter ?? false;
    if (a && !history.legitimate(key, a.value, counter)) {
      const cut = [...(history.cutPieces.get(key) ?? [])].some((p) => a.value.includes(p));
      verdict.lost.push(
        `[${cls}] ${showKey(key)}: both hold ${showHeld(a)}, ${cut ? 'the value of a request cut mid-way' : 'a value nobody wrote to this key'}; ${lastOps()}`,
      );
      t.lost++;
      return;
    }
    if (!owner) return;
    const attempts = history.attempts.get(key) ?? [];
    const strict = expectation(attempts, owner.node, history.flushes, history.kills, modelOptions(false, now));
    const lenient = expectation(attempts, owner.node, history.flushes, history.kills, modelOptions(true, now));
    for (const c of lenient.contradictions.slice(0, 1)) {
      verdict.lost.push(
        `[${cls}] ${showKey(key)}: the client was told "${showAttempt(c.attempt, options.origin)}" while the log allowed only ${c.before
          .slice(0, 4)
          .map((i) => showItem(i, c.attempt.sentAt))
          .join(' | ')} (a write lost under the client); now both hold ${showHeld(a)}; ${lastOps()}`,
      );
      t.lost++;
    }
    if (lenient.indeterminate) {
      verdict.indeterminate++;
      t.indeterminate++;
      return;
    }
    if (strict.items.some((item) => matches(item, a, now))) return;
    if (lenient.items.some((item) => matches(item, a, now))) {
      verdict.lostInWindow++;
      t.lostInWindow++;
      return;
    }
    verdict.lost.push(`[${cls}] ${showKey(key)}: both hold ${showHeld(a)}${expected(key, owner, now)}; ${lastOps()}`);
    t.lost++;
  }

  function modelOptions(lenient: boolean, now: number): ModelOptions {
    return { lenient, lossWindowMs: options.lossWindowMs, now, stops: history.stops, copyWindows: history.copyWindows };
  }

  function expected(key: string, owner: Owner | undefined, now: number): string {
    if (!owner) return '';
    const e = expectation(history.attempts.get(key) ?? [], owner.node, history.flushes, history.kills, modelOptions(true, now));
    const items = e.items.slice(0, 4).map((i) => showItem(i, now));
    return `; expected ${e.indeterminate ? 'anything (indeterminate)' : `one of ${items.join(' | ')}${e.items.length > 4 ? ` (+${e.items.length - 4})` : ''}`} (writer ${owner.writer} on ${owner.node})`;
  }

  function tally(cls: string): Tally {
    let t = verdict.byClass.get(cls);
    if (!t) verdict.byClass.set(cls, (t = { keys: 0, mismatches: 0, lost: 0, lostInWindow: 0, indeterminate: 0 }));
    return t;
  }
}

function toHeld(read: Read | null): Held | null {
  return read === null ? null : { value: read.value.toString('latin1'), flags: read.flags, ttl: read.ttl };
}

function showHeld(held: Held | null): string {
  return held === null ? 'absent' : `${showValue(held.value)} f${held.flags} t${held.ttl}`;
}

/** The last writes of a key (any writer), for debugging a report line. */
function describeLog(attempts: readonly Attempt[], origin: number): string {
  if (attempts.length === 0) return 'never written';
  const last = attempts.slice(-6).map((a) => `${a.writer} ${showAttempt(a, origin)}`);
  return `last ops (${attempts.length} in all): ${last.join(' / ')}`;
}
