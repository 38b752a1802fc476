import { describe, expect, it } from 'vitest';
import {
  BlockHasher,
  blockHashes,
  CHAR_CLASS,
  hashBlock,
  hashHex,
  lookupBlocks,
  tokenize,
} from '../../src/core/tokens.js';
import { seededRandom } from '../../src/core/random.js';

const hexes = (h: BlockHasher): string[] =>
  Array.from({ length: h.blocks }, (_, i) => hashHex(h.hi[i]!, h.lo[i]!));

function randomText(rnd: () => number, n: number): string {
  const alphabet = [
    'a',
    'Z',
    '9',
    '_',
    ' ',
    ' ',
    '  ',
    '\n',
    '\t',
    '.',
    ',',
    'é',
    '中',
    '\u00a0',
    '\u2003',
    '\ud83d\ude00',
    '\ud800',
    '\udc00',
    'word',
    ' word',
    '<|user|>',
    '\u3000',
    '\ufeff',
  ];
  let s = '';
  while (s.length < n) s += alphabet[Math.floor(rnd() * alphabet.length)]!;
  return s;
}

describe('core tokens: one-pass BlockHasher = tokenize + blockHashes', () => {
  it('classes every UTF-16 code unit as the regex does', () => {
    for (let c = 0; c < 65536; c++) {
      const ch = String.fromCharCode(c);
      const want = /\w/u.test(ch) ? 1 : /\s/u.test(ch) ? 2 : 0;
      if (CHAR_CLASS[c] !== want)
        throw new Error(`class of U+${c.toString(16)}: ${CHAR_CLASS[c]} ≠ ${want}`);
    }
  });

  it('gives the engine block hashes on random texts (any block size), and the token count', () => {
    const rnd = seededRandom(3);
    for (let k = 0; k < 300; k++) {
      const text = randomText(rnd, Math.floor(rnd() * 600));
      const bs = [1, 2, 3, 16][k % 4]!;
      const ids = tokenize(text);
      const h = new BlockHasher(bs, 1);
      expect(h.run(text)).toBe(true);
      h.end();
      expect(h.tokens).toBe(ids.length);
      expect(hexes(h)).toEqual(blockHashes(ids, bs));
    }
  });

  it('stops at a byte offset and resumes from a saved state with the same result', () => {
    const rnd = seededRandom(4);
    for (let k = 0; k < 100; k++) {
      const text = randomText(rnd, 400);
      const whole = new BlockHasher(4);
      whole.run(text);
      whole.end();
      const part = new BlockHasher(4);
      const cut = 1 + Math.floor(rnd() * Buffer.byteLength(text));
      expect(part.run(text, Infinity, cut)).toBe(false);
      expect(part.bytes).toBeLessThanOrEqual(cut);
      expect(part.bytes).toBe(Buffer.byteLength(text.slice(0, part.pos)));
      // Saved flat at an offset of a larger buffer (as the checkpoint store keeps it).
      const saved = new Uint32Array(3 + part.stateWords).fill(0xdeadbeef);
      part.saveTo(saved, 3);
      const again = new BlockHasher(4);
      again.run('something else entirely'); // restoring replaces all of its state
      for (let i = 0; i < part.blocks; i++) again.setBlock(i, part.hi[i]!, part.lo[i]!);
      again.restoreFrom(saved, 3);
      expect(again.blocks).toBe(part.blocks);
      expect(again.pos).toBe(part.pos);
      again.run(text);
      again.end();
      expect(hexes(again)).toEqual(hexes(whole));
      expect(again.tokens).toBe(whole.tokens);
    }
  });

  it('stops after maxBlocks; hashes the hex way hashBlock does; lookupBlocks', () => {
    const text = ' word'.repeat(100);
    const h = new BlockHasher(16);
    expect(h.run(text, 2)).toBe(false);
    expect(h.blocks).toBe(2);
    const ids = tokenize(text);
    expect(hashHex(h.hi[1]!, h.lo[1]!)).toBe(hashBlock(hashBlock(null, ids, 0, 16), ids, 16, 32));
    expect(lookupBlocks(32, 16)).toBe(1);
    expect(lookupBlocks(33, 16)).toBe(2);
    expect(lookupBlocks(0, 16)).toBe(0);
  });
});
