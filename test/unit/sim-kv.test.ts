import { describe, it, expect } from 'vitest';
import { VirtualClock } from '../../src/sim/clock.js';
import { EngineCore, type EngineOptions, type FinishEvent } from '../../src/sim/engine.js';
import { blockHashes, hashBlock, type KvEvent } from '../../src/sim/kvcache.js';
import { SimMetrics } from '../../src/sim/metrics.js';

function virtual(opts: EngineOptions = {}) {
  const clock = new VirtualClock();
  const engine = new EngineCore({ ...opts, clock });
  const events: { ts: number; events: KvEvent[] }[] = [];
  engine.onKvEvent((b) => events.push(b));
  /** Runs one request to completion and returns its finish event. */
  const run = (ids: number[], maxTokens = 1): FinishEvent => {
    let ev: FinishEvent | undefined;
    engine.submit({ promptTokenIds: ids, maxTokens }, { onFinish: (e) => (ev = e) });
    clock.runUntilIdle();
    if (!ev) throw new Error('not finished');
    return ev;
  };
  return { engine, clock, events, run };
}

function seeded(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
}

const ids = (n: number, base: number) => Array.from({ length: n }, (_, i) => base + i);

describe('sim KV cache and prefix caching', () => {
  it('hashes blocks with a stable chained FNV-1a 64', () => {
    const h1 = hashBlock(null, [1, 2, 3]);
    expect(h1).toMatch(/^[0-9a-f]{16}$/);
    expect(hashBlock(null, [1, 2, 3])).toBe(h1);
    expect(hashBlock(h1, [1, 2, 3])).not.toBe(h1);
    // FNV-1a 64 of the empty input is the offset basis.
    expect(hashBlock(null, [])).toBe('cbf29ce484222325');
    // FNV-1a 64 of the single byte 'a' (0x61).
    expect(hashBlock(null, [0x61]).length).toBe(16);
    const hs = blockHashes(ids(40, 7), 16);
    expect(hs).toHaveLength(2);
    expect(hs[1]).toBe(hashBlock(hs[0] as string, ids(40, 7), 16, 32));
  });

  it('KV capacity follows the documented formula', () => {
    const e = new EngineCore();
    // Independent computation: Llama-3.1-8B bf16 on one H100 at utilisation 0.9.
    const mem = 81559 * 2 ** 20 * 0.9;
    const weights = 8.03e9 * 2;
    const act = 2 ** 30 + 8192 * (4 * 4096 + 3 * 14336) * 2 + 256 * 128256 * 4;
    const kvPerToken = 2 * 32 * 8 * 128 * 2; // 128 KiB
    const expected = Math.floor((mem - weights - act) / (16 * kvPerToken));
    expect(e.profile.numGpuBlocks).toBe(expected);
    expect(e.stats().numGpuBlocks).toBe(expected);
    expect(expected).toBeGreaterThan(25_000); // ~450k tokens, like vLLM's log for this setup
    expect(new EngineCore({ numGpuBlocksOverride: 10 }).stats().numGpuBlocks).toBe(10);
    // TP: memory and weights are totals over the ranks.
    const tp2 = new EngineCore({ model: 'llama-3.1-70b', tp: 2 });
    const mem2 = 2 * 81559 * 2 ** 20 * 0.9;
    const act2 = 2 * (2 ** 30 + 8192 * (4 * 8192 + (3 * 28672) / 2) * 2 + 256 * 128256 * 4);
    expect(tp2.profile.numGpuBlocks).toBe(
      Math.floor((mem2 - 70.6e9 * 2 - act2) / (16 * 2 * 80 * 8 * 128 * 2)),
    );
  });

  it('a repeated prompt only pays for its uncached suffix', async () => {
    const { engine, events, run } = virtual();
    const metrics = new SimMetrics({ model: 'm', engine, engineIndex: 3 });
    const prompt = ids(1000, 1000);
    const first = run(prompt);
    expect(first.cachedTokens).toBe(0);
    const second = run(prompt);
    // 62 full blocks (992 tokens) are cached; 8 tokens are computed.
    expect(second.cachedTokens).toBe(992);
    const suffixOnly = run(ids(8, 50_000));
    expect(second.ttftSec as number).toBeLessThan((first.ttftSec as number) / 3);
    expect(second.ttftSec as number).toBeCloseTo(suffixOnly.ttftSec as number, 3);
    const s = engine.stats();
    expect(s.prefixQueries).toBe(2008);
    expect(s.prefixHits).toBe(992);
    const text = await metrics.metrics();
    expect(text).toContain('vllm:prefix_cache_hits_total{model_name="m",engine="3"} 992');
    expect(text).toContain('vllm:prefix_cache_queries_total{model_name="m",engine="3"} 2008');
    expect(text).toMatch(/vllm:cache_config_info\{[^}]*block_size="16"[^}]*\} 1/);
    expect(text).not.toContain('_total_total');
    metrics.detach();

    // BlockStored events chain their parents.
    const stored = events
      .flatMap((b) => b.events)
      .filter((e): e is Extract<KvEvent, { type: 'BlockStored' }> => e.type === 'BlockStored');
    const firstStore = stored[0];
    expect(firstStore?.parentBlockHash).toBeNull();
    expect(firstStore?.blockHashes).toEqual(blockHashes(prompt, 16));
    expect(firstStore?.tokenIds).toEqual(prompt.slice(0, 992));
    expect(firstStore?.blockSize).toBe(16);
    // The fully cached second prompt stores nothing new; an identical fully cached prompt of
    // exactly 62 blocks recomputes its last token but does not store it twice.
    expect(
      stored.filter((e) => e.blockHashes.includes(firstStore?.blockHashes[0] as string)),
    ).toHaveLength(1);
  });

  it('chunked prefill stores blocks step by step with parent chaining', () => {
    const { events, run } = virtual({ maxNumBatchedTokens: 64 });
    const prompt = ids(200, 3);
    run(prompt);
    const stored = events
      .flatMap((b) => b.events)
      .filter((e): e is Extract<KvEvent, { type: 'BlockStored' }> => e.type === 'BlockStored');
    expect(stored.length).toBeGreaterThanOrEqual(3);
    const all = blockHashes(prompt, 16);
    let k = 0;
    for (const ev of stored) {
      expect(ev.parentBlockHash).toBe(k === 0 ? null : all[k - 1]);
      expect(ev.blockHashes).toEqual(all.slice(k, k + ev.blockHashes.length));
      k += ev.blockHashes.length;
    }
    expect(k).toBe(12);
    // Batches carry the step's simulated end time, increasing.
    const ts = events.map((b) => b.ts);
    expect([...ts].sort((a, b) => a - b)).toEqual(ts);
  });

  it('evicts least recently used blocks and reports BlockRemoved', () => {
    const { engine, events, run } = virtual({ numGpuBlocksOverride: 8 });
    const a = ids(49, 100); // 3 full blocks + 1 token → 4 blocks
    const b = ids(49, 200);
    const c = ids(49, 300);
    run(a);
    run(b);
    expect(run(a).cachedTokens).toBe(48); // still cached
    run(c); // needs 4 blocks: evicts b's (least recently used), tail first
    const removed = events
      .flatMap((x) => x.events)
      .filter((e): e is Extract<KvEvent, { type: 'BlockRemoved' }> => e.type === 'BlockRemoved')
      .flatMap((e) => e.blockHashes);
    const hb = blockHashes(b, 16);
    expect(removed).toEqual([hb[2], hb[1], hb[0]]);
    expect(run(a).cachedTokens).toBe(48);
    expect(run(b).cachedTokens).toBe(0);
    engine.resetPrefixCache();
    expect(events.at(-1)?.events).toEqual([{ type: 'AllBlocksCleared' }]);
    expect(run(a).cachedTokens).toBe(0);
  });

  /**
   * Independent LRU model of the same block sequence: each request looks up its longest cached
   * prefix, takes its P + 1 blocks (the partial last block is never cached), evicting least
   * recently freed blocks, and frees them tail first.
   */
  function lruHitRate(seq: number[], P: number, C: number): number {
    const lru = new Map<string, true>(); // key → present, oldest first
    let hits = 0;
    let queries = 0;
    let anon = 0;
    for (const g of seq) {
      const keys = Array.from({ length: P }, (_, i) => `${g}:${i}`);
      let h = 0;
      while (h < P && lru.has(keys[h] as string)) h++;
      hits += h * 16;
      queries += P * 16 + 1;
      for (const k of keys.slice(0, h)) lru.delete(k); // in use
      while (lru.size > C - (P + 1)) lru.delete(lru.keys().next().value as string);
      for (const k of keys.slice(h)) lru.delete(k); // duplicates are recomputed
      lru.set(`anon${anon++}`, true);
      for (let i = P - 1; i >= 0; i--) lru.set(keys[i] as string, true);
    }
    return hits / queries;
  }

  it('LRU hit rate matches an independent LRU simulation, and collapses past capacity', () => {
    const P = 4; // 4 full blocks + 1 token per prompt
    const C = 64;
    const prompts = (g: number) => ids(P * 16 + 1, 1_000_000 * (g + 1));
    const measure = (seq: number[]) => {
      const { engine, run } = virtual({ numGpuBlocksOverride: C });
      for (const g of seq) run(prompts(g));
      const s = engine.stats();
      return s.prefixHits / s.prefixQueries;
    };
    // Uniform random over 16 prompts (80 blocks > 64): partial hits.
    const rand = seeded(42);
    const random = Array.from({ length: 400 }, () => Math.floor(rand() * 16));
    const hrRandom = measure(random);
    expect(hrRandom).toBeGreaterThan(0.3);
    expect(hrRandom).toBeLessThan(0.9);
    expect(Math.abs(hrRandom - lruHitRate(random, P, C))).toBeLessThan(0.02);
    // Cyclic over a working set that fits: everything hits after the first pass.
    const fits = Array.from({ length: 200 }, (_, i) => i % 10);
    expect(Math.abs(measure(fits) - lruHitRate(fits, P, C))).toBeLessThan(0.02);
    expect(measure(fits)).toBeGreaterThan(0.9);
    // Cyclic over more than C blocks: LRU thrashes, hit rate ~0.
    const cyclic = Array.from({ length: 200 }, (_, i) => i % 16);
    expect(measure(cyclic)).toBeLessThan(0.02);
    expect(lruHitRate(cyclic, P, C)).toBeLessThan(0.02);
  });

  it('requests without token ids share nothing', () => {
    const { engine, run } = virtual();
    engine.submit({ promptTokens: 500, maxTokens: 1 });
    run([]);
    const ev = run(ids(0, 0));
    expect(ev.cachedTokens).toBe(0);
    expect(engine.stats().prefixHits).toBe(0);
  });
});
