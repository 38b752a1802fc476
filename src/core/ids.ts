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

// Request ids: random UUIDs (version 4, RFC 9562) formatted 256 at a time into one Latin-1 string,
// each id then a slice of it (no per-request formatting: crypto.randomUUID builds each id from
// twenty concatenated pieces, which is then flattened again wherever the id is written).
const UUIDS_PER_POOL = 256;
const UUID_LEN = 36;
const HEX = Buffer.from('0123456789abcdef');
/** Where each of a UUID's 16 bytes goes in its 36 characters (the dashes are at 8, 13, 18, 23). */
const BYTE_AT = Uint8Array.from([0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34]);
let uuidText: Buffer | undefined;
let uuidPool = '';
let uuidNext = UUIDS_PER_POOL;

function refillUuids(): void {
  const rnd = randomBytes(16 * UUIDS_PER_POOL);
  if (!uuidText) {
    uuidText = Buffer.alloc(UUID_LEN * UUIDS_PER_POOL);
    for (let o = 0; o < uuidText.length; o += UUID_LEN) {
      uuidText[o + 8] = uuidText[o + 13] = uuidText[o + 18] = uuidText[o + 23] = 0x2d; // '-'
    }
  }
  const out = uuidText;
  for (let u = 0; u < UUIDS_PER_POOL; u++) {
    const r = u * 16;
    const o = u * UUID_LEN;
    rnd[r + 6] = (rnd[r + 6]! & 0x0f) | 0x40; // version 4
    rnd[r + 8] = (rnd[r + 8]! & 0x3f) | 0x80; // variant 10
    for (let i = 0; i < 16; i++) {
      const b = rnd[r + i]!;
      const at = o + BYTE_AT[i]!;
      out[at] = HEX[b >> 4]!;
      out[at + 1] = HEX[b & 15]!;
    }
  }
  uuidPool = out.toString('latin1');
  uuidNext = 0;
}

/** A random UUID (version 4, lowercase), as crypto.randomUUID makes them; cheap per call. */
export function newRequestId(): string {
  if (uuidNext === UUIDS_PER_POOL) refillUuids();
  const at = uuidNext++ * UUID_LEN;
  return uuidPool.slice(at, at + UUID_LEN);
}
