// The API key from `Authorization: Bearer <key>`, parsed by hand on the serving path.
import { describe, expect, it } from 'vitest';
import { seededRandom } from '../../src/core/random.js';
import { bearerToken } from '../../src/gateway/gateway.js';

describe('bearerToken', () => {
  it('reads the token, whatever the scheme case and surrounding whitespace', () => {
    expect(bearerToken('Bearer ip-abc')).toBe('ip-abc');
    expect(bearerToken('bearer ip-abc')).toBe('ip-abc');
    expect(bearerToken('BEARER \t ip-abc  ')).toBe('ip-abc');
    expect(bearerToken('Bearer\tx')).toBe('x');
  });

  it('is undefined for anything else', () => {
    for (const h of [
      '',
      'Bearer',
      'Bearer ',
      'Bearer    ',
      'Bearerx abc',
      'Basic abc',
      'Bearer a b',
      'Token ip-abc',
      ' Bearer ip-abc',
    ]) {
      expect(bearerToken(h), JSON.stringify(h)).toBeUndefined();
    }
  });

  // The `Bearer <token>` fast path and the general path agree with one definition: scheme
  // (any case), whitespace (latin1: tab, LF, VT, FF, CR, space, NBSP), a token, whitespace.
  it('agrees with the definition on random headers', () => {
    const rand = seededRandom(42);
    const parts = ['Bearer ', 'bearer', 'BEARER', ' ', '\t', '\x0b', '\xa0', 'ab', 'x-1', '=', 'B'];
    const reference = (h: string) => /^bearer\s+(\S+)\s*$/i.exec(h)?.[1];
    for (let n = 0; n < 5000; n++) {
      let h = n % 2 === 0 ? 'Bearer ' : '';
      const len = Math.floor(rand() * 6);
      for (let i = 0; i < len; i++) h += parts[Math.floor(rand() * parts.length)]!;
      expect(bearerToken(h), JSON.stringify(h)).toBe(reference(h));
    }
  });
});
