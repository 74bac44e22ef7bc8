/**
 * What the fault suite's clients did and saw, in a protocol-neutral form the
 * checker (checker.ts, model.ts) can replay: every write attempt with its
 * outcome, every flush, every kill, and the findings made on the way
 * (readers, the hostile peer, crashes).
 *
 * Keys and values are latin1 strings, so any byte (space, NUL) survives.
 */

export type NodeName = 'a' | 'b';

/** A write, as its effect on one key (whatever protocol carried it). */
export type Op =
  | { kind: 'set' | 'add' | 'replace' | 'cas'; value: string; flags: number; ttl: number }
  | { kind: 'append' | 'prepend'; piece: string }
  /** `create`: a missing key is created holding `initial` (binary incr, ma N/J). */
  | { kind: 'incr' | 'decr'; delta: bigint; create?: { initial: bigint; ttl: number } }
  | { kind: 'delete' }
  /** touch, gat, gats, mg T, binary Touch/GAT. */
  | { kind: 'touch'; ttl: number }
  /** md I, with an optional new TTL. */
  | { kind: 'invalidate'; ttl: number | null };

/**
 * What the client learnt. `unknown`: no reply (timeout, closed connection,
 * noreply, a quiet command whose connection closed): it may or may not have
 * taken effect. `none`: memcached refused it, which also tells what the key
 * held before.
 */
export type Outcome =
  | { effect: 'unknown' }
  /** Acknowledged, but the client ignores what the reply says beyond that (the original workload's deletes). */
  | { effect: 'done' }
  | { effect: 'applied'; result?: bigint }
  | { effect: 'none'; because: 'absent' | 'present' | 'non-numeric' };

export interface Attempt {
  key: string;
  op: Op;
  /** How it was sent, for reports: "text append", "meta ms MA q b", "binary AppendQ". */
  via: string;
  node: NodeName;
  writer: string;
  sentAt: number;
  /** When the reply arrived; sentAt when none did. */
  at: number;
  outcome: Outcome;
}

export interface Flush {
  node: NodeName;
  writer: string;
  via: string;
  delay: number;
  sentAt: number;
  at: number;
  acked: boolean;
}

export interface Kill {
  node: NodeName;
  what: 'memrepl' | 'memcached';
  at: number;
  /** When the pair was quiet again after it (copies done); Infinity if it never was before the end. */
  settledAt: number;
}

/**
 * A fault after which full copies may run on either node though nothing was
 * killed: a hostile peer that took the link for a moment (the out-of-range
 * variant), after which the node reconciles with its real peer as with a
 * restarted one. Until the pair was quiet again.
 */
export interface CopyWindow {
  at: number;
  /** Infinity if the pair was never quiet again before the end. */
  settledAt: number;
}

/**
 * A memcached stopped with SIGSTOP. Its clock stands still meanwhile and
 * catches up at its first tick after SIGCONT, so items due during the stop
 * live until then, and items stored just after it get deadlines as early as
 * the stop was long.
 */
export interface Stop {
  node: NodeName;
  at: number;
  until: number;
}

/** Who owns a single-writer key, and what kind of value it holds. */
export interface Owner {
  category: string;
  writer: string;
  node: NodeName;
  /** Holds a decimal number (incr/decr); never appended to. */
  counter: boolean;
}

export interface Finding {
  category: string;
  text: string;
}

/** An op's outcome when the client can tell nothing. */
export const UNKNOWN: Outcome = { effect: 'unknown' };

export class History {
  readonly attempts = new Map<string, Attempt[]>();
  readonly owners = new Map<string, Owner>();
  /** Keys every shared-keyspace writer may write (their category is "shared"). */
  readonly shared = new Map<string, { counter: boolean }>();
  /** Every value or append piece sent to a key, before it was sent: what the key may legitimately hold pieces of. */
  readonly pieces = new Map<string, Set<string>>();
  /** Values of requests cut before they were complete: none may ever take effect. */
  readonly cutPieces = new Map<string, Set<string>>();
  readonly flushes: Flush[] = [];
  readonly kills: Kill[] = [];
  readonly copyWindows: CopyWindow[] = [];
  readonly stops: Stop[] = [];
  readonly findings: Finding[] = [];
  /** Replies no rule expected, by category (counted; the first few are kept). */
  readonly oddReplies = new Map<string, { count: number; examples: string[] }>();
  acknowledged = 0;

  own(key: string, owner: Owner): void {
    this.owners.set(key, owner);
  }

  /** Records an attempt before it is sent (a write that times out may still take effect). */
  begin(key: string, op: Op, via: string, node: NodeName, writer: string): Attempt {
    const attempt: Attempt = { key, op, via, node, writer, sentAt: Date.now(), at: 0, outcome: UNKNOWN };
    attempt.at = attempt.sentAt;
    const piece = op.kind === 'append' || op.kind === 'prepend' ? op.piece : 'value' in op ? op.value : null;
    if (piece !== null) this.piece(key, piece);
    const list = this.attempts.get(key) ?? [];
    list.push(attempt);
    this.attempts.set(key, list);
    return attempt;
  }

  settle(attempt: Attempt, outcome: Outcome): void {
    attempt.outcome = outcome;
    if (outcome.effect !== 'unknown') {
      attempt.at = Date.now();
      this.acknowledged++;
    }
  }

  piece(key: string, piece: string): void {
    const set = this.pieces.get(key) ?? new Set<string>();
    set.add(piece);
    this.pieces.set(key, set);
  }

  cut(key: string, piece: string): void {
    const set = this.cutPieces.get(key) ?? new Set<string>();
    set.add(piece);
    this.cutPieces.set(key, set);
  }

  odd(category: string, text: string): void {
    const entry = this.oddReplies.get(category) ?? { count: 0, examples: [] };
    entry.count++;
    if (entry.examples.length < 3) entry.examples.push(text);
    this.oddReplies.set(category, entry);
  }

  find(category: string, text: string): void {
    this.findings.push({ category, text });
  }

  /** True when `value` is made only of pieces some client sent to `key` (a counter: a decimal number). */
  legitimate(key: string, value: string, counter: boolean): boolean {
    if (counter) return /^\d{1,20} *$/.test(value);
    const pieces = this.pieces.get(key);
    if (!pieces) return false;
    if (pieces.has(value)) return true;
    // Values of the new workloads are pieces ending with ';', so a derived value splits back into them.
    if (!value.endsWith(';')) return false;
    return value
      .slice(0, -1)
      .split(';')
      .every((part) => pieces.has(`${part};`));
  }
}

/** A key as reports print it: printable bytes as they are, others escaped, long ones shortened. */
export function showKey(key: string): string {
  const printable = key.replace(/[^\x21-\x7e]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  return printable.length > 80 ? `${printable.slice(0, 60)}...(${key.length} bytes)` : printable;
}

export function showValue(value: string | null | undefined): string {
  if (value === null) return 'absent';
  if (value === undefined) return '?';
  const text = JSON.stringify(value);
  return text.length > 60 ? `${text.slice(0, 50)}..."(${value.length} bytes)` : text;
}

export function showOp(op: Op): string {
  switch (op.kind) {
    case 'set':
    case 'add':
    case 'replace':
    case 'cas':
      return `${op.kind} ${showValue(op.value)} f${op.flags} ttl${op.ttl}`;
    case 'append':
    case 'prepend':
      return `${op.kind} ${showValue(op.piece)}`;
    case 'incr':
    case 'decr':
      return `${op.kind} ${op.delta}${op.create ? ` (create ${op.create.initial} ttl${op.create.ttl})` : ''}`;
    case 'delete':
      return 'delete';
    case 'touch':
      return `touch ttl${op.ttl}`;
    case 'invalidate':
      return `invalidate${op.ttl === null ? '' : ` ttl${op.ttl}`}`;
  }
}

export function showOutcome(outcome: Outcome): string {
  if (outcome.effect === 'unknown') return 'no reply';
  if (outcome.effect === 'none') return `refused (${outcome.because})`;
  if (outcome.effect === 'done') return 'done';
  return outcome.result === undefined ? 'ok' : `ok -> ${outcome.result}`;
}

/** One attempt in a report line, its times relative to `origin`. */
export function showAttempt(attempt: Attempt, origin: number): string {
  const t = ((attempt.sentAt - origin) / 1000).toFixed(2);
  return `${t}s ${attempt.node} ${attempt.via}: ${showOp(attempt.op)} => ${showOutcome(attempt.outcome)}`;
}
