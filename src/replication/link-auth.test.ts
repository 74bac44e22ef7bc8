import assert from 'node:assert/strict';
import { test } from 'node:test';
import { newNonce, proof, verify } from './link-auth';

const secret = Buffer.from('s3cret');
const a = { cluster: 'c', nodeId: 'a', nonce: newNonce() };
const bNonce = newNonce();

test('a proof made with the secret over our nonce verifies', () => {
  assert.equal(verify(secret, proof(secret, a, bNonce), a, bNonce), true);
});

test('a wrong secret, another nonce (a replay), another node or garbage does not', () => {
  assert.equal(verify(secret, proof(Buffer.from('guess'), a, bNonce), a, bNonce), false);
  assert.equal(verify(secret, proof(secret, a, bNonce), a, newNonce()), false);
  assert.equal(verify(secret, proof(secret, { ...a, nodeId: 'mallory' }, bNonce), a, bNonce), false);
  assert.equal(verify(secret, 'not hex at all', a, bNonce), false);
  assert.equal(verify(secret, '', a, bNonce), false);
});
