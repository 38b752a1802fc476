// The approximate prefix index over the engine's KV blocks (route `routing.prefixBlocks`
// tokens): what it matches, how lazily a decision hashes, what a pick records, peer relay.
import { describe, expect, it, vi } from 'vitest';
import { DeploymentSpecSchema } from '../../src/core/schemas.js';
import { countTokens, lookupBlocks } from '../../src/core/tokens.js';
import type { RouteRouting } from '../../src/core/types.js';
import {
  RoutingPipeline,
  prefixBlocksOf,
  seededRandom,
} from '../../src/gateway/routing/pipeline.js';
import { PrefixIndex, type LazyBlockHashes } from '../../src/gateway/routing/prefix-index.js';
import type { SignalSource, SignalView } from '../../src/gateway/routing/signals.js';
import { freshView, simRoute } from './routing-fixtures.js';

const TOKENS: RouteRouting = { policy: 'prefix-aware', prefixSource: 'approximate' };

function fleet(n: number, routing: RouteRouting = TOKENS, view: Partial<SignalView> = {}) {
  const idle = freshView(view);
  const views = new Map<string, SignalView>();
  const source: SignalSource = { view: (id) => views.get(id) ?? idle };
  const route = simRoute(n, routing);
  const p = new RoutingPipeline({ signals: source, random: seededRandom(7), kvEvents: null });
  p.sync({ models: [route] });
  return { p, route, views, source };
}

/** Words, so the toy tokenizer gives ~1 token per 5–6 characters. */
function words(tag: string, n: number): string {
  let s = '';
  for (let i = 0; i < n; i++) s += ` ${tag}${i % 97}`;
  return s;
}

describe('prefixBlocksOf', () => {
  it('is tokens only where the tokenizer is known; auto means tokens for approximate-only routes', () => {
    expect(prefixBlocksOf(simRoute(1, { prefixSource: 'approximate' }))).toBe('tokens');
    expect(prefixBlocksOf(simRoute(1))).toBe('text'); // auto source: KV events first
    expect(prefixBlocksOf(simRoute(1, { prefixSource: 'auto', prefixBlocks: 'tokens' }))).toBe(
      'tokens',
    );
    expect(prefixBlocksOf(simRoute(1, { prefixSource: 'approximate', prefixBlocks: 'text' }))).toBe(
      'text',
    );
    const llama = { ...simRoute(1, { prefixSource: 'approximate' }), engine: 'llamacpp' };
    expect(prefixBlocksOf(llama)).toBe('text');
  });

  it('a deployment asking for token blocks on an engine whose tokenizer is unknown is refused', () => {
    const spec = (engine: string) => ({
      name: 'd',
      tenant: 't',
      model: 'm',
      engine: { name: engine },
      replicas: 1,
      resources: { gpus: 1, gpuType: 'H100-80GB' },
      routing: { prefixBlocks: 'tokens' },
    });
    expect(DeploymentSpecSchema.safeParse(spec('sim')).success).toBe(true);
    const bad = DeploymentSpecSchema.safeParse(spec('llamacpp'));
    expect(bad.success).toBe(false);
    expect(bad.error!.issues[0]!.path).toEqual(['routing', 'prefixBlocks']);
    expect(bad.error!.issues[0]!.message).toMatch(/tokenizer/);
  });
});

describe('token-block index', () => {
  it('matches in the engine blocks the replica will look up, and sizes replicas from num_gpu_blocks', () => {
    const { p, route } = fleet(4, TOKENS, { numGpuBlocks: 777 });
    const ctx = words('ctx', 600);
    const first = p.pick(route, { exclude: new Set(), prompt: ctx + ' question one' })!;
    p.release(first.endpoint.replicaId);
    expect(first.receipt).toMatchObject({ matchedBlocks: 0, prefixSource: 'approximate' });
    expect(first.receipt.blockTokens).toBe(16);
    p.flushRecords();
    expect(p.tokenIndex.capacity(first.endpoint.replicaId)).toBe(777);
    // The text-block index is not used for this route.
    expect(p.index.stats().entries).toBe(0);
    const ctxBlocks = Math.floor(countTokens(ctx) / 16);
    for (let i = 0; i < 4; i++) {
      const text = ctx + ` question ${i + 2}`;
      const d = p.pick(route, { exclude: new Set(), prompt: text })!;
      p.release(d.endpoint.replicaId);
      expect(d.endpoint.replicaId).toBe(first.endpoint.replicaId);
      // The shared context's whole blocks (exact up to 16 blocks, then ≤ 12.5 % short: checkpoints).
      expect(d.receipt.matchedBlocks).toBeLessThanOrEqual(ctxBlocks);
      expect(d.receipt.matchedBlocks).toBeGreaterThanOrEqual(Math.floor(ctxBlocks * 0.875));
      expect(d.receipt.promptBlocks).toBe(lookupBlocks(countTokens(text), 16));
      const s = d.receipt.scores[d.endpoint.replicaId]!;
      expect(s.prefixSource).toBe('approximate');
      expect(s.prefix).toBeCloseTo(
        (d.receipt.matchedBlocks * 16) / Math.max(countTokens(text), 512),
        3,
      );
    }
    // The same prompt again: every block the engine looks up, at most.
    const again = p.pick(route, { exclude: new Set(), prompt: ctx + ' question 2' })!;
    expect(again.receipt.matchedBlocks).toBe(lookupBlocks(countTokens(ctx + ' question 2'), 16));
  });

  it('a decision hashes only as far as some replica holds the prompt; the pick records it all', () => {
    const { p, route } = fleet(4);
    const text = words('unique', 3000); // ~900 blocks
    const d = p.pick(route, { exclude: new Set(), prompt: text })!;
    // Nothing matched: the walk stopped at the first block.
    expect(p.promptHashes.ready).toBeLessThanOrEqual(2);
    expect(p.tokenIndex.stats().entries).toBe(0);
    p.flushRecords();
    const blocks = Math.floor(countTokens(text) / 16);
    expect(p.promptHashes.ready).toBe(blocks);
    expect(p.tokenIndex.stats().entries).toBeGreaterThan(16); // checkpoints of ~900 blocks
    const again = p.pick(route, { exclude: new Set(), prompt: text })!;
    expect(again.endpoint.replicaId).toBe(d.endpoint.replicaId);
    expect(again.receipt.matchedBlocks).toBe(lookupBlocks(countTokens(text), 16));
  });

  it("caps a match at the blocks the engine looks up (its prompt's last token is computed)", () => {
    const { p, route } = fleet(2);
    const text = words('w', 320); // one token per word: exactly 20 blocks of 16
    expect(countTokens(text)).toBe(320);
    p.pick(route, { exclude: new Set(), prompt: text });
    p.flushRecords();
    const d = p.pick(route, { exclude: new Set(), prompt: text })!;
    expect(d.receipt.matchedBlocks).toBe(19);
    expect(d.receipt.promptBlocks).toBe(19);
  });

  it('records after the pick without being asked: a microtask', async () => {
    const { p, route } = fleet(2);
    const text = words('later', 400);
    p.pick(route, { exclude: new Set(), prompt: text });
    expect(p.tokenIndex.stats().entries).toBe(0);
    await Promise.resolve();
    expect(p.tokenIndex.stats().entries).toBeGreaterThan(0);
  });

  it('queues one microtask for a burst of picks (a decision draining the records leaves it)', async () => {
    const { p, route } = fleet(2);
    const queued = vi.spyOn(globalThis, 'queueMicrotask');
    try {
      for (let i = 0; i < 50; i++)
        p.pick(route, { exclude: new Set(), prompt: words(`b${i}x`, 80) });
      expect(queued).toHaveBeenCalledTimes(1);
      await Promise.resolve();
      p.pick(route, { exclude: new Set(), prompt: words('after', 80) });
      expect(queued).toHaveBeenCalledTimes(2); // the task ran: the next pick queues a new one
    } finally {
      queued.mockRestore();
    }
    await Promise.resolve();
    expect(p.tokenIndex.stats().entries).toBeGreaterThan(0);
  });

  it("learns another gateway process's token-block picks (onRecord → recordPeer)", () => {
    const views = new Map<string, SignalView>();
    const source: SignalSource = { view: (id) => views.get(id) ?? freshView() };
    const route = simRoute(4, TOKENS);
    const b = new RoutingPipeline({ signals: source, random: seededRandom(11), kvEvents: null });
    const a = new RoutingPipeline({
      signals: source,
      random: seededRandom(7),
      kvEvents: null,
      onRecord: (id, hashes, extra) => b.recordPeer(id, hashes.slice(), extra),
    });
    for (const p of [a, b]) p.sync({ models: [route] });
    for (let i = 0; i < 4; i++) {
      const text = words(`peer${i}x`, 500);
      const first = a.pick(route, { exclude: new Set(), prompt: text })!;
      a.release(first.endpoint.replicaId);
      a.flushRecords();
      const seen = b.pick(route, { exclude: new Set(), prompt: text })!;
      b.release(seen.endpoint.replicaId);
      expect(seen.endpoint.replicaId).toBe(first.endpoint.replicaId);
      expect(seen.receipt.matchedBlocks).toBe(lookupBlocks(countTokens(text), 16));
    }
    expect(b.index.stats().entries).toBe(0);
  });
});

describe('prompt-hash checkpoint cache sized to the fleet', () => {
  // One checkpoint per 512 B of the text the replicas' KV caches hold (reported num_gpu_blocks
  // × block size tokens × 4 bytes), between 65,536 and 1,048,576.
  it('follows the replicas reported on token-block and text-block routes', () => {
    const { p, route } = fleet(8, TOKENS, { numGpuBlocks: 100_000 });
    expect(p.promptHashes.checkpointCap).toBe(65_536); // before any decision: the floor
    const pick = (r = route) =>
      p.release(p.pick(r, { exclude: new Set(), prompt: 'a b c' })!.endpoint.replicaId);
    pick();
    expect(p.promptHashes.checkpointCap).toBe((8 * 100_000 * 16 * 4) / 512);
    // Replicas leave the routing table: the cap follows them down to its floor.
    const two = simRoute(2, TOKENS);
    p.sync({ models: [two] });
    pick(two);
    expect(p.promptHashes.checkpointCap).toBe(65_536);

    // A text-block route (the same estimate through the text index) and a very large fleet.
    const text = fleet(8, { ...TOKENS, prefixBlocks: 'text' }, { numGpuBlocks: 100_000 });
    text.p.release(
      text.p.pick(text.route, { exclude: new Set(), prompt: 'a b c' })!.endpoint.replicaId,
    );
    expect(text.p.promptHashes.checkpointCap).toBe(100_000);
    const big = fleet(64, TOKENS, { numGpuBlocks: 10_000_000 });
    big.p.release(
      big.p.pick(big.route, { exclude: new Set(), prompt: 'a b c' })!.endpoint.replicaId,
    );
    expect(big.p.promptHashes.checkpointCap).toBe(1 << 20);
  });
});

describe('token-block index: a failed record', () => {
  it('is counted and reported, and loses neither the decision nor the next one', async () => {
    const errors: unknown[] = [];
    let fail = true;
    const p = new RoutingPipeline({
      signals: { view: () => freshView() },
      random: seededRandom(1),
      kvEvents: null,
      onRecord: () => {
        if (fail) throw new Error('relay down');
      },
      onRecordError: (e) => errors.push(e),
    });
    const route = simRoute(2, TOKENS);
    p.sync({ models: [route] });
    const text = words('f', 400);
    const d = p.pick(route, { exclude: new Set(), prompt: text })!;
    expect(d.endpoint.replicaId).toMatch(/^r[01]$/);
    await Promise.resolve();
    expect(p.recordFailures).toBe(1);
    expect(String(errors[0])).toMatch(/relay down/);
    // The failing pick's record still reached this index (the relay failed after it); the next
    // decision sees it, and a pending record flushed by a pick fails the same quiet way.
    fail = false;
    const again = p.pick(route, { exclude: new Set(), prompt: text })!;
    expect(again.endpoint.replicaId).toBe(d.endpoint.replicaId);
    fail = true;
    expect(p.pick(route, { exclude: new Set(), prompt: text })).toBeDefined();
    expect(p.recordFailures).toBe(2);
  });
});

describe('token-block index: what a request takes from the cache', () => {
  it('a pick also counts its partial last block and its output (max_tokens) as allocated', () => {
    const seen: number[] = [];
    const p = new RoutingPipeline({
      signals: { view: () => freshView() },
      random: seededRandom(1),
      kvEvents: null,
      onRecord: (_id, _h, extra) => seen.push(extra),
    });
    const route = simRoute(2, TOKENS);
    p.sync({ models: [route] });
    const text = words('w', 330); // 330 tokens: 20 whole blocks + 10 tokens
    p.pick(route, { exclude: new Set(), prompt: text, maxTokens: 40 });
    p.pick(route, { exclude: new Set(), prompt: words('v', 320) }); // no max_tokens: 0 output
    p.flushRecords();
    // ceil((330 + 40) / 16) − 20 = 4; ceil(320 / 16) − 20 = 0.
    expect(seen).toEqual([4, 0]);
  });

  it("extra blocks age the replica's entries: LRU over what the engine allocates", () => {
    const chain = (salt: number, n: number) =>
      Uint32Array.from(
        { length: n },
        (_, i) => (Math.imul(salt + 1, 0x9e3779b1) ^ (i * 7919)) >>> 0,
      );
    for (const [extra, live] of [
      [0, true],
      [5, false],
    ] as const) {
      const index = new PrefixIndex();
      index.setCacheEntries('r', 100);
      index.record('r', chain(0, 10), extra);
      // 9 more prompts of 10 new blocks: 90 ticks without extra blocks, 135 with 5 each.
      for (let k = 1; k <= 9; k++) index.record('r', chain(k, 10), extra);
      expect(index.match(chain(0, 10)).has('r')).toBe(live);
      expect(index.match(chain(9, 10)).get('r')).toBe(10);
    }
  });
});

describe('PrefixIndex.matchLengthsLazy', () => {
  it('gives matchLengths over the whole prompt, reading hashes only as far as needed', () => {
    const rnd = seededRandom(3);
    const index = new PrefixIndex({ defaultEntriesPerReplica: 1 << 14, maxPromptBlocks: 600 });
    // Prompts as chained hashes (a block's hash stands for its whole prefix, as the engine's do)
    // over a tree of shared prefixes: block i's content is i before the fork, i ^ salt after.
    const variant = (len: number, fork: number, salt: number) => {
      const out = new Uint32Array(len);
      let h = 0x811c9dc5;
      for (let i = 0; i < len; i++) {
        h = Math.imul(h ^ (i < fork ? i : i ^ salt), 0x01000193);
        h ^= h >>> 15;
        out[i] = h >>> 0;
      }
      return out;
    };
    for (let r = 0; r < 6; r++) {
      for (let j = 0; j < 3; j++) {
        const len = 1 + Math.floor(rnd() * 650);
        index.record(`r${r}`, variant(len, Math.floor(rnd() * len), 0x5bd1e995 * (r + 1)));
      }
    }
    let partial = 0;
    for (let t = 0; t < 200; t++) {
      const len = 1 + Math.floor(rnd() * 700);
      const fork = Math.floor(rnd() * len);
      const salt = t % 3 === 0 ? 0x5bd1e995 * (1 + (t % 6)) : 0x1234567 + t;
      const h = variant(len, fork, salt);
      const want = Array.from(index.matchLengths(h));
      let read = 0;
      // Half the prompts come with some blocks known up front (a resumed prompt).
      const known = t % 2 ? Math.floor(rnd() * len) : 0;
      const src: LazyBlockHashes = {
        ensure: (n) => (read = Math.max(read, Math.min(n, len))),
        at: (i) => {
          if (i >= Math.max(read, known)) throw new Error(`read ${i} before ensure`);
          return h[i]!;
        },
        known,
      };
      const got = Array.from(index.matchLengthsLazy(src));
      expect(got.slice(0, want.length)).toEqual(want);
      const longest = Math.max(0, ...want);
      if (longest > 16 && longest < Math.min(len, 600)) partial++;
      // Read at most to the checkpoint after the longest match (+ one block): never the rest.
      if (longest < Math.min(len, 600) && longest >= known)
        expect(read).toBeLessThanOrEqual(longest * 1.25 + 2);
    }
    // The case that matters was exercised: matches ending between checkpoints, past block 16.
    expect(partial).toBeGreaterThan(20);
  });
});
