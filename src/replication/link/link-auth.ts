/**
 * Shared-secret authentication of the replication link: challenge and
 * response with HMAC-SHA256 (node:crypto; nothing home-made).
 *
 * Both sides put a fresh random nonce in their HELLO. The dialler proves
 * first; the acceptor checks that proof and only then sends its own; the
 * dialler opens the link once it has checked the acceptor's. So a stranger
 * who dials in never gets the node to sign anything.
 *
 * A proof is HMAC(secret, statement), the statement being, each field
 * length-prefixed: a context with the scheme's version, the prover's role,
 * the cluster, the prover's and the verifier's node ids, the prover's and
 * the verifier's nonces. Why each part:
 * - length prefixes: two different statements never encode to the same
 *   bytes, so a peer cannot move text from its node id into a nonce to make
 *   a proof made for one statement fit another;
 * - the role: a proof a node makes as dialler is no acceptor's proof, and the
 *   other way round, so a proof cannot be reflected back over the same link;
 * - both ids and both nonces: a proof holds for one prover, one verifier and
 *   one connection (the verifier's nonce is new for each), so replaying it
 *   on another connection, or back to the node that made it, fails.
 * The secret never crosses the wire.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

const CONTEXT = 'memrepl replication auth v2';

export function newNonce(): string {
  return randomBytes(32).toString('hex');
}

export type AuthRole = 'dialler' | 'acceptor';

export interface AuthParty {
  nodeId: string;
  nonce: string;
}

/** What one proof vouches for. */
export interface AuthStatement {
  /** The prover's side of the connection. */
  role: AuthRole;
  cluster: string;
  prover: AuthParty;
  verifier: AuthParty;
}

/** Each field as a u32 BE byte length and its UTF-8 bytes: no two statements share an encoding. */
function encode(statement: AuthStatement): Buffer {
  const { role, cluster, prover, verifier } = statement;
  const fields = [CONTEXT, role, cluster, prover.nodeId, verifier.nodeId, prover.nonce, verifier.nonce];
  return Buffer.concat(
    fields.flatMap((field) => {
      const bytes = Buffer.from(field, 'utf8');
      const length = Buffer.alloc(4);
      length.writeUInt32BE(bytes.length);
      return [length, bytes];
    }),
  );
}

/** The proof (lowercase hex) that the prover knows the secret, for this statement. */
export function proof(secret: Buffer, statement: AuthStatement): string {
  return createHmac('sha256', secret).update(encode(statement)).digest('hex');
}

/** Whether `received` proves this statement, in constant time. */
export function verify(secret: Buffer, received: string, statement: AuthStatement): boolean {
  const expected = Buffer.from(proof(secret, statement), 'hex');
  const actual = Buffer.from(received, 'hex');
  return actual.length === expected.length && timingSafeEqual(actual, expected);
}
