// The API key from `Authorization: Bearer <key>`, parsed by hand on the serving path.
import { describe, expect, it } from 'vitest';
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
});
