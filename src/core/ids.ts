import { createHash, randomBytes } from 'node:crypto';

/** Short random id with a type prefix, e.g. `dep_3f9a1c2b7d4e`. */
export function newId(prefix: string): string {
  return `${prefix}_${randomBytes(6).toString('hex')}`;
}

/** A new API key in plaintext: `ipk_` + 32 random bytes base64url. Shown once, stored hashed. */
export function newApiKey(): string {
  return `ipk_${randomBytes(32).toString('base64url')}`;
}

/** Keys are stored as sha256 hex digests; keys are high-entropy so no salt/KDF is needed. */
export function hashApiKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

/** The displayable prefix of a key (enough to recognise it, useless to an attacker). */
export function keyPrefix(key: string): string {
  return key.slice(0, 10);
}
