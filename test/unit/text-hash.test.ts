// The prompt block hashes: the WebAssembly SIMD kernel, the JavaScript reference and the written
// definition give the same values.
import { describe, expect, it } from 'vitest';
import { seededRandom } from '../../src/gateway/routing/pipeline.js';
import { BLOCK_BYTES, blockHashes, textHashKernel } from '../../src/gateway/routing/text-hash.js';

// The definition in text-hash.ts' header, written out independently (DataView, per block).
function byDefinition(text: string | Buffer, maxBlocks = 8192): number[] {
  const buf = typeof text === 'string' ? Buffer.from(text, 'utf8') : text;
  const n = Math.min(Math.floor(buf.length / BLOCK_BYTES), maxBlocks);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.length);
  const rotl = (x: number, r: number) => (x << r) | (x >>> (32 - r));
  const fmix = (x: number) => {
    x ^= x >>> 16;
    x = Math.imul(x, 0x85ebca6b);
    x ^= x >>> 13;
    x = Math.imul(x, 0xc2b2ae35);
    return x ^ (x >>> 16);
  };
  const out: number[] = [];
  let h = 0x811c9dc5 | 0;
  for (let b = 0; b < n; b++) {
    const lanes = [0x9e3779b9 | 0, 0x85ebca6b | 0, 0xc2b2ae35 | 0, 0x27d4eb2f | 0];
    const k = [0x01000193, 0x5bd1e995, 0x01000193, 0x5bd1e995];
    for (let w = 0; w < BLOCK_BYTES / 4; w++) {
      const word = dv.getInt32(b * BLOCK_BYTES + 4 * w, true);
      const x = Math.imul(lanes[w % 4]! ^ word, k[w % 4]!);
      lanes[w % 4] = x ^ (x >>> 15);
    }
    const d = lanes[0]! ^ rotl(lanes[1]!, 7) ^ rotl(lanes[2]!, 14) ^ rotl(lanes[3]!, 21);
    h = fmix(h ^ d);
    out.push(h >>> 0);
  }
  return out;
}

const alphabet = ['a', 'Z', ' ', '.', '\n', 'é', 'ß', '日', '本', '😀', '∑', '{', '"'];
function randomText(rnd: () => number, chars: number): string {
  let s = '';
  while (s.length < chars) s += alphabet[Math.floor(rnd() * alphabet.length)];
  return s;
}

describe('text block hashes', () => {
  it('uses the WebAssembly SIMD kernel on this runtime', () => {
    expect(textHashKernel).toBe('wasm-simd');
  });

  it('kernel, JavaScript reference and definition agree (ASCII, multi-byte, block edges)', () => {
    const rnd = seededRandom(7);
    const lengths = [0, 1, 127, 128, 129, 255, 256, 4096 + 3];
    for (let i = 0; i < 60; i++) lengths.push(Math.floor(rnd() * 20_000));
    for (const len of lengths) {
      const t = randomText(rnd, len);
      const want = byDefinition(t);
      expect([...blockHashes(t)]).toEqual(want);
      expect([...blockHashes(t, 8192, true)]).toEqual(want);
    }
  });

  it('blocks differing only in the high bytes of their words do not collide', () => {
    // An 8-digit number repeated over a block: numbers differing in their last digit differ at
    // byte offsets 7, 15, … — the top byte of every other word. Without the shift after each
    // multiply those differences stayed in a lane's top bits and cancelled: 832 and 836 collided.
    const seen = new Map<number, number>();
    for (let i = 0; i < 20_000; i++) {
      const [h] = blockHashes(
        String(i)
          .padStart(8, '0')
          .repeat(BLOCK_BYTES / 8),
      );
      const other = seen.get(h!);
      expect(other === undefined ? undefined : [other, i]).toBeUndefined();
      seen.set(h!, i);
    }
    expect(blockHashes('00000832'.repeat(16))).not.toEqual(blockHashes('00000836'.repeat(16)));
  });

  it('hashes parts as their concatenation, and stops at maxBlocks', () => {
    const rnd = seededRandom(11);
    for (let i = 0; i < 30; i++) {
      const t = randomText(rnd, 1000 + Math.floor(rnd() * 5000));
      const cuts = [0, Math.floor(rnd() * t.length), Math.floor(rnd() * t.length), t.length];
      cuts.sort((a, b) => a - b);
      // Do not split a surrogate pair: a lone half encodes as U+FFFD.
      const parts = cuts.slice(1).map((c, k) => t.slice(cuts[k], c));
      if (parts.some((p) => /^[\uDC00-\uDFFF]/.test(p))) continue;
      expect([...blockHashes(parts)]).toEqual(byDefinition(t));
      const max = 1 + Math.floor(rnd() * 20);
      expect([...blockHashes(parts, max)]).toEqual(byDefinition(t, max));
      expect([...blockHashes(parts, max, true)]).toEqual(byDefinition(t, max));
    }
  });

  it('short prompts (encoded in JavaScript) hash as the UTF-8 that Buffer writes of each part', () => {
    // Lone surrogates (and pairs split across two parts) are U+FFFD, as Buffer writes them.
    const rnd = seededRandom(17);
    const chars = [...alphabet, '\uD83D', '\uDE00', '\u07FF', '\u0800', '\uFFFF', '\u0080', '\x7f'];
    let blocks = 0;
    for (let i = 0; i < 2000; i++) {
      const count = 1 + Math.floor(rnd() * 6);
      const parts: string[] = [];
      for (let k = 0; k < count; k++) {
        let p = '';
        const len = Math.floor(rnd() * 60);
        while (p.length < len) p += chars[Math.floor(rnd() * chars.length)];
        parts.push(p);
      }
      const want = byDefinition(Buffer.concat(parts.map((p) => Buffer.from(p, 'utf8'))));
      expect([...blockHashes(parts)], JSON.stringify(parts)).toEqual(want);
      expect([...blockHashes(parts, 8192, true)]).toEqual(want);
      blocks += want.length;
    }
    expect(blocks).toBeGreaterThan(1000); // prompts of zero, one and more blocks
  });

  it('long ASCII parts (copied as Latin-1) hash as their UTF-8, also when cut at maxBlocks', () => {
    const rnd = seededRandom(13);
    const ascii = (n: number) => randomText(rnd, n).replace(/[^\x20-\x7e\n]/g, 'k');
    for (let i = 0; i < 20; i++) {
      const parts = [
        ascii(1024 + Math.floor(rnd() * 3000)),
        '<é>\n',
        ascii(2000),
        '日本',
        ascii(1500),
      ];
      const whole = parts.join('');
      expect([...blockHashes(parts)]).toEqual(byDefinition(whole));
      // A limit inside the first, the third or the last part.
      for (const max of [3, 25, 40, 1 + Math.floor(rnd() * 60)]) {
        expect([...blockHashes(parts, max)]).toEqual(byDefinition(whole, max));
      }
    }
  });

  it('long parts whose Latin-1 bytes look ASCII but are not (characters above U+00FF) hash as UTF-8', () => {
    const rnd = seededRandom(17);
    const ascii = (n: number) => randomText(rnd, n).replace(/[^\x20-\x7e\n]/g, 'k');
    // Ł (U+0141) as Latin-1 is 0x41 'A'; 😀 (U+D83D U+DE00) is 0x3D 0x00; ‚ (U+201A) is 0x1A.
    for (const odd of ['Ł', '😀', '\u201a', 'é', '\u00ff']) {
      for (const at of [0, 700, 2047]) {
        const body = ascii(2048);
        const part = body.slice(0, at) + odd + body.slice(at);
        const parts = [ascii(300), part, ascii(1200)];
        const whole = parts.join('');
        expect([...blockHashes(parts)]).toEqual(byDefinition(whole));
        expect([...blockHashes(part)]).toEqual(byDefinition(part));
        // Cut inside the part, before and after the odd character.
        for (const max of [4, 8, 12, 19]) {
          expect([...blockHashes(parts, max)]).toEqual(byDefinition(whole, max));
        }
      }
    }
  });

  it('grows its memory for long prompts and returns independent copies', () => {
    const rnd = seededRandom(3);
    const small = randomText(rnd, 3000);
    const first = blockHashes(small);
    const big = randomText(rnd, 400_000); // up to ~1.2 MB of UTF-8: past the initial 128 KiB
    const hb = blockHashes(big);
    expect(hb.length).toBe(Math.min(8192, Math.floor(Buffer.byteLength(big) / BLOCK_BYTES)));
    expect([...hb]).toEqual(byDefinition(big));
    expect([...blockHashes(big, 8192, true)]).toEqual([...hb]);
    // The first result was not overwritten by later calls, and hashing after growth is unchanged.
    expect([...first]).toEqual(byDefinition(small));
    expect([...blockHashes(small)]).toEqual([...first]);
  });

  it('a prefix keeps its hashes; a changed block changes it and every later one', () => {
    const rnd = seededRandom(5);
    const t = randomText(rnd, 4000).replace(/[^\x20-\x7e]/g, 'x'); // ASCII: 1 byte per char
    const a = blockHashes(t);
    const changed = t.slice(0, 300) + (t[300] === 'q' ? 'r' : 'q') + t.slice(301);
    const b = blockHashes(changed);
    expect([...b.slice(0, 2)]).toEqual([...a.slice(0, 2)]); // blocks 0, 1 (bytes 0–255)
    for (let i = 2; i < a.length; i++) expect(b[i]).not.toBe(a[i]);
  });
});
