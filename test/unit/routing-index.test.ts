// The approximate prefix index: chained block hashes, leading-block matches, bounded LRU sets.
import { describe, expect, it } from 'vitest';
import {
  BLOCK_CHARS,
  PrefixIndex,
  blockHashes,
  isCheckpoint,
} from '../../src/gateway/routing/prefix-index.js';

const text = (seed: number, blocks: number) =>
  Array.from({ length: blocks }, (_, i) => `[${seed}:${i}]`.padEnd(BLOCK_CHARS, '.')).join('');

describe('blockHashes', () => {
  it('hashes whole blocks only, as a chain', () => {
    expect(blockHashes('x'.repeat(BLOCK_CHARS - 1))).toHaveLength(0);
    expect(blockHashes('x'.repeat(BLOCK_CHARS * 3 + 5))).toHaveLength(3);
    const a = blockHashes(text(1, 4));
    const b = blockHashes(text(1, 2) + text(2, 2));
    expect([...b.slice(0, 2)]).toEqual([...a.slice(0, 2)]);
    expect(b[2]).not.toBe(a[2]);
    // Same block content after a different parent: a different hash.
    const c = blockHashes(text(9, 1) + text(1, 4).slice(BLOCK_CHARS));
    expect(c[1]).not.toBe(a[1]);
    expect(blockHashes(text(1, 100), 10)).toHaveLength(10);
  });
});

describe('PrefixIndex', () => {
  it('matches the leading blocks each replica holds', () => {
    const idx = new PrefixIndex();
    const shared = text(1, 8);
    idx.record('a', idx.hash(shared + text(2, 4)));
    idx.record('b', idx.hash(shared.slice(0, BLOCK_CHARS * 3)));
    const m = idx.match(idx.hash(shared + text(3, 4)));
    expect(m.get('a')).toBe(8);
    expect(m.get('b')).toBe(3);
    expect(m.has('c')).toBe(false);
    expect(idx.match(idx.hash(text(7, 4))).size).toBe(0);
    expect(idx.match(new Uint32Array(0)).size).toBe(0);
  });

  it('hashes UTF-8 bytes: non-ASCII text works and differs', () => {
    const a = blockHashes('é'.repeat(BLOCK_CHARS));
    expect(a).toHaveLength(2);
    expect(blockHashes('è'.repeat(BLOCK_CHARS))[0]).not.toBe(a[0]);
  });

  it('evicts least recently used blocks beyond the cap, children before parents', () => {
    const idx = new PrefixIndex({ defaultEntriesPerReplica: 8 });
    const old = idx.hash(text(1, 4));
    idx.record('a', old);
    idx.record('a', idx.hash(text(2, 4)));
    idx.match(old); // a match does not refresh
    idx.record('a', idx.hash(text(1, 1))); // refreshes block 0 of text 1
    idx.record('a', idx.hash(text(3, 3)));
    expect(idx.stats().entries).toBeLessThanOrEqual(8);
    // text 1: block 0 survived (recent), blocks 1..3 evicted → 1 leading block.
    expect(idx.match(old).get('a')).toBe(1);
    expect(idx.match(idx.hash(text(3, 3))).get('a')).toBe(3);
  });

  it('sizes a replica from its KV cache and caps the total', () => {
    const idx = new PrefixIndex({ globalMaxEntries: 1000, defaultEntriesPerReplica: 500 });
    idx.setCacheTokens('a', 3200); // 3200 tokens × 4 chars / 128 = 100 entries
    expect(idx.capacity('a')).toBe(100);
    idx.setCacheTokens('b', 1_000_000);
    expect(idx.capacity('b')).toBe(500); // global 1000 / 2 replicas
    idx.setCacheTokens('c', 1_000_000);
    expect(idx.capacity('c')).toBe(333);
    idx.remove('c');
    idx.retain(new Set(['a']));
    expect(idx.stats().replicas).toBe(1);
  });

  it('forgets a removed replica everywhere', () => {
    const idx = new PrefixIndex();
    const h = idx.hash(text(1, 4));
    idx.record('a', h);
    idx.record('b', h);
    idx.remove('a');
    expect([...idx.match(h).keys()]).toEqual(['b']);
    idx.remove('b');
    expect(idx.stats()).toMatchObject({ replicas: 0, entries: 0 });
  });

  it('stays bounded after 100k records of random prompts', () => {
    const idx = new PrefixIndex({ defaultEntriesPerReplica: 2000, globalMaxEntries: 10_000 });
    let seed = 1;
    const rnd = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0);
    for (let i = 0; i < 100_000; i++) {
      const blocks = 1 + ((rnd() >>> 16) % 8);
      const h = new Uint32Array(blocks);
      for (let b = 0; b < blocks; b++) h[b] = rnd();
      idx.record(`r${(rnd() >>> 16) % 8}`, h);
    }
    const s = idx.stats();
    expect(s.replicas).toBe(8);
    expect(s.entries).toBeLessThanOrEqual(8 * (1250 + 8)); // cap + one prompt of slack
  });
});

describe('PrefixIndex checkpoints and table', () => {
  it('indexes every block of the first 16, then 8 checkpoints per doubling', () => {
    expect(Array.from({ length: 16 }, (_, i) => isCheckpoint(i)).every(Boolean)).toBe(true);
    let n = 0;
    for (let i = 512; i < 1024; i++) if (isCheckpoint(i)) n++;
    expect(n).toBe(8);
    const idx = new PrefixIndex();
    const long = text(1, 100);
    idx.record('a', idx.hash(long));
    expect(idx.match(idx.hash(long)).get('a')).toBe(100);
    // A prompt sharing 70 leading blocks: matched length rounded down to a checkpoint (≤ 12.5 %).
    const m = idx.match(idx.hash(long.slice(0, 70 * BLOCK_CHARS) + text(2, 30))).get('a')!;
    expect(m).toBeLessThanOrEqual(70);
    expect(m).toBeGreaterThanOrEqual(Math.floor(70 * 0.875));
  });

  it('keeps its table size fixed while serving (memory bounded by the caps)', () => {
    const idx = new PrefixIndex({ defaultEntriesPerReplica: 1000 });
    for (let r = 0; r < 4; r++) idx.setCacheTokens(`r${r}`, 32_000); // 1000 entries each
    const bytes = idx.stats().bytes;
    for (let i = 0; i < 5000; i++) idx.record(`r${i % 4}`, idx.hash(text(i, 1 + (i % 40))));
    const s = idx.stats();
    expect(s.bytes).toBe(bytes);
    expect(s.entries).toBeLessThanOrEqual(4 * 1000);
    // The most recent prompts are still found.
    expect(idx.match(idx.hash(text(4999, 40))).get('r3')).toBe(40);
  });
});
