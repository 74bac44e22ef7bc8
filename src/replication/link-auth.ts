/**
 * Shared-secret authentication of the replication link: challenge and
 * response with HMAC-SHA256 (node:crypto; nothing home-made).
 *
 * Each side puts a fresh random nonce in its HELLO and answers the peer's
 * HELLO with AUTH = HMAC(secret, context, its node id, the peer's nonce, its
 * own nonce). The secret never crosses the wire, and a proof recorded from
 * one handshake is useless in another: it covers the verifier's nonce, which
 * is new for every connection.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

const CONTEXT = 'memrepl replication auth v1';

export function newNonce(): string {
  return randomBytes(32).toString('hex');
}

export interface AuthParty {
  cluster: string;
  nodeId: string;
  nonce: string;
}

/** The proof `prover` sends to `verifier`. */
export function proof(secret: Buffer, prover: AuthParty, verifierNonce: string): string {
  return createHmac('sha256', secret)
    .update([CONTEXT, prover.cluster, prover.nodeId, verifierNonce, prover.nonce].join('\n'))
    .digest('hex');
}

/** Checks a proof received from `prover` against our own nonce, in constant time. */
export function verify(secret: Buffer, received: string, prover: AuthParty, ourNonce: string): boolean {
  const expected = Buffer.from(proof(secret, prover, ourNonce), 'hex');
  const actual = Buffer.from(received, 'hex');
  return actual.length === expected.length && timingSafeEqual(actual, expected);
}
