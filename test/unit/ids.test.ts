import { describe, expect, it } from 'vitest';
import { newRequestId } from '../../src/core/ids.js';

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('newRequestId', () => {
  it('makes version-4 UUIDs, all different, across pool refills', () => {
    const ids = Array.from({ length: 2000 }, () => newRequestId());
    for (const id of ids) expect(id).toMatch(UUID_V4);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('varies every random hex digit (none stuck, e.g. by an offset error)', () => {
    const ids = Array.from({ length: 600 }, () => newRequestId());
    for (let pos = 0; pos < 36; pos++) {
      const seen = new Set(ids.map((id) => id[pos]));
      if ([8, 13, 18, 23].includes(pos)) expect(seen).toEqual(new Set(['-']));
      else if (pos === 14) expect(seen).toEqual(new Set(['4']));
      else if (pos === 19) expect(seen).toEqual(new Set(['8', '9', 'a', 'b']));
      else expect(seen.size).toBe(16);
    }
  });
});
