import assert from 'node:assert/strict';
import { test } from 'node:test';
import { newNonce, proof, verify, type AuthStatement } from './link-auth';

const secret = Buffer.from('s3cret');
const statement: AuthStatement = {
  role: 'dialler',
  cluster: 'c',
  prover: { nodeId: 'a', nonce: newNonce() },
  verifier: { nodeId: 'b', nonce: newNonce() },
};

test('a proof made with the secret over the statement verifies', () => {
  assert.equal(verify(secret, proof(secret, statement), statement), true);
});

test('a wrong secret, another nonce (a replay), another node or garbage does not', () => {
  const made = proof(secret, statement);
  assert.equal(verify(secret, proof(Buffer.from('guess'), statement), statement), false);
  assert.equal(verify(secret, made, { ...statement, verifier: { ...statement.verifier, nonce: newNonce() } }), false);
  assert.equal(verify(secret, made, { ...statement, prover: { ...statement.prover, nodeId: 'mallory' } }), false);
  assert.equal(verify(secret, 'not hex at all', statement), false);
  assert.equal(verify(secret, '', statement), false);
});

test('fields that would join to the same text give different proofs', () => {
  const { prover, verifier } = statement;
  // Joined with newlines, both statements read "a\nx\nb" for the two node ids: text moved from one field to the next.
  const spliced = proof(secret, { ...statement, prover: { ...prover, nodeId: 'a\nx' } });
  const honest = proof(secret, { ...statement, verifier: { ...verifier, nodeId: `x\n${verifier.nodeId}` } });
  assert.notEqual(spliced, honest);
  // Concatenated without separators, both read "…ab…".
  assert.notEqual(
    proof(secret, { ...statement, prover: { ...prover, nodeId: 'ab' }, verifier: { ...verifier, nodeId: '' } }),
    proof(secret, { ...statement, prover: { ...prover, nodeId: 'a' }, verifier: { ...verifier, nodeId: 'b' } }),
  );
});

test('the role, the cluster and which side is prover are part of what is proved', () => {
  const made = proof(secret, statement);
  assert.notEqual(made, proof(secret, { ...statement, role: 'acceptor' }));
  assert.notEqual(made, proof(secret, { ...statement, cluster: 'other' }));
  assert.notEqual(made, proof(secret, { ...statement, prover: statement.verifier, verifier: statement.prover }));
});
