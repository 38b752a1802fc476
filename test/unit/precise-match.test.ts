// The precise prefix matcher's shortcuts, each checked against the plain version it replaces:
// BlockSet's ancestor-closure count against a recomputation from scratch, the binary-search match
// against a block-by-block walk (closed and non-closed sets), the typed-array checkpoint store
// against the Map-based second-chance policy it replaced, and whole decisions against the same
// decisions forced through the block-by-block walk.
import { describe, expect, it } from 'vitest';
import { blockHashes, chatPromptText, tokenize } from '../../src/core/tokens.js';
import { seededRandom } from '../../src/core/random.js';
import { BlockSet, parseBlockHash, type KvEventHub } from '../../src/gateway/routing/kv-events.js';
import { firstMiss, firstMissClosed, RoutingPipeline } from '../../src/gateway/routing/pipeline.js';
import {
  CHECKPOINT_TEXT_BLOCKS,
  PromptBlockHashes,
} from '../../src/gateway/routing/precise-prefix.js';
import { BLOCK_BYTES, blockHashes as textHashes } from '../../src/gateway/routing/prefix-index.js';
import { freshView, simRoute } from './routing-fixtures.js';

/** Text of `n` characters: random words of `words` (from `rnd`), each followed by a space. */
function wordText(rnd: () => number, words: readonly string[]): (n: number) => string {
  return (n) => {
    let s = '';
    while (s.length < n) s += words[Math.floor(rnd() * words.length)] + ' ';
    return s.slice(0, n);
  };
}

type Pair = [number, number];
const key = (h: Pair): string => `${h[0]}:${h[1]}`;

/**
 * Random chains of 64-bit block hashes (uint32 halves). Some share a common prefix with chain 0 (as
 * real chained hashes do: a block's hash determines its parent's, so chains only share prefixes).
 */
function chains(rnd: () => number, count: number, len: number): Pair[][] {
  const out: Pair[][] = [];
  for (let c = 0; c < count; c++) {
    const shared = c > 0 && rnd() < 0.5 ? Math.floor(rnd() * 9) : 0;
    const chain: Pair[] = out[0] ? out[0].slice(0, Math.min(shared, len)) : [];
    while (chain.length < len)
      chain.push([1 + Math.floor(rnd() * 2 ** 31), Math.floor(rnd() * 2 ** 32)]);
    out.push(chain);
  }
  return out;
}

/** Orphans and unknown-parent blocks of a reference model, from scratch. */
function recount(model: Map<string, string | null | undefined>): {
  orphans: number;
  unknown: number;
} {
  let orphans = 0;
  let unknown = 0;
  for (const parent of model.values()) {
    if (parent === undefined) unknown++;
    else if (parent !== null && !model.has(parent)) orphans++;
  }
  return { orphans, unknown };
}

const halves = (chain: Pair[]): { hi: Uint32Array; lo: Uint32Array } => ({
  hi: Uint32Array.from(chain, (p) => p[0]),
  lo: Uint32Array.from(chain, (p) => p[1]),
});

describe('BlockSet ancestor closure', () => {
  it('counts orphans and unknown parents like a recount from scratch, under churn', () => {
    const rnd = seededRandom(11);
    const cs = chains(rnd, 12, 40);
    const set = new BlockSet();
    // key → parent key (null: root, undefined: unknown), the first time the block was added.
    const model = new Map<string, string | null | undefined>();
    let closedSeen = 0;
    let openSeen = 0;
    for (let step = 0; step < 6000; step++) {
      const c = cs[Math.floor(rnd() * cs.length)]!;
      const b = Math.floor(rnd() * c.length);
      const h = c[b]!;
      const r = rnd();
      if (r < 0.5) {
        // Stored as a BlockStored event would: with its parent (rarely without).
        const how = rnd();
        const parent = b === 0 ? null : how < 0.05 ? undefined : key(c[b - 1]!);
        const added =
          parent === null
            ? set.addRoot(h[0], h[1])
            : parent === undefined
              ? set.add(h[0], h[1])
              : set.addChild(h[0], h[1], c[b - 1]![0], c[b - 1]![1]);
        expect(added).toBe(!model.has(key(h)));
        if (added) model.set(key(h), parent);
      } else if (r < 0.97) {
        // Removed: mostly tail first (the engine's order), sometimes anywhere.
        expect(set.delete(h[0], h[1])).toBe(model.delete(key(h)));
      } else if (r < 0.975) {
        set.clear();
        model.clear();
      } else {
        // A whole chain stored in order, then evicted tail first: stays closed if it was.
        for (let i = 0; i < c.length; i++) {
          const p = c[i]!;
          const parent = i === 0 ? null : key(c[i - 1]!);
          const added =
            i === 0
              ? set.addRoot(p[0], p[1])
              : set.addChild(p[0], p[1], c[i - 1]![0], c[i - 1]![1]);
          if (added) model.set(key(p), parent);
        }
      }
      const want = recount(model);
      expect(set.size).toBe(model.size);
      expect({ orphans: set.orphans, unknown: set.unknown }).toEqual(want);
      // The first-block filter: every block that may be a prompt's first (a root, or its parent
      // unknown) is found; what is absent is not.
      for (const [k, parent] of model) {
        if (parent !== null && parent !== undefined) continue;
        const [hi, lo] = k.split(':').map(Number) as [number, number];
        expect(set.hasFirst(hi, lo)).toBe(true);
      }
      if (!model.has(key(h))) expect(set.hasFirst(h[0], h[1])).toBe(false);
      if (set.closed) closedSeen++;
      else openSeen++;
    }
    expect(closedSeen).toBeGreaterThan(50);
    expect(openSeen).toBeGreaterThan(50);
  });

  it('binary search equals the block-by-block walk on every closed set; the walk is used otherwise', () => {
    const rnd = seededRandom(12);
    for (let trial = 0; trial < 400; trial++) {
      const cs = chains(rnd, 6, 1 + Math.floor(rnd() * 300));
      const set = new BlockSet();
      // Each chain held up to a random length, stored root first with parents.
      for (const c of cs) {
        const upto = Math.floor(rnd() * (c.length + 1));
        for (let i = 0; i < upto; i++) {
          if (i === 0) set.addRoot(c[i]![0], c[i]![1]);
          else set.addChild(c[i]![0], c[i]![1], c[i - 1]![0], c[i - 1]![1]);
        }
      }
      // Holes (non-monotone: a missing block before held ones) in some trials, evictions from
      // the tail (monotone) in others.
      const holes = rnd() < 0.5;
      for (let k = 0; k < 5; k++) {
        const c = cs[Math.floor(rnd() * cs.length)]!;
        const b = Math.floor(rnd() * c.length);
        if (holes) set.delete(c[b]![0], c[b]![1]);
        else for (let i = c.length - 1; i >= b; i--) set.delete(c[i]![0], c[i]![1]);
      }
      for (const c of cs) {
        const { hi, lo } = halves(c);
        const h = { hi: (i: number) => hi[i]!, lo: (i: number) => lo[i]! };
        const walk = firstMiss(set, hi, lo, c.length);
        if (set.closed) expect(firstMissClosed(set, h, c.length)).toBe(walk);
        // A non-closed set may hold blocks after its first miss: the walk is the only exact answer.
        let heldAfter = false;
        for (let i = walk + 1; i < c.length; i++) heldAfter ||= set.has(hi[i]!, lo[i]!);
        if (heldAfter) expect(set.closed).toBe(false);
      }
    }
  });
});

describe('prompt-hash checkpoint store', () => {
  /** The store's 30-bit index key of checkpoint (k, text hash). */
  const key30 = (k: number, hash: number): number => (hash ^ Math.imul(k, 0x9e3779b1)) & 0x3fffffff;
  /** The policy of the typed-array store as a Map in insertion order keyed by (k, text hash). */
  class MapModel {
    private readonly m = new Map<string, { k: number; hash: number; ref: boolean }>();
    constructor(private readonly max: number) {}
    private static key(k: number, hash: number): string {
      return `${k}:${hash}`;
    }
    walk(th: Uint32Array): number {
      let k = CHECKPOINT_TEXT_BLOCKS;
      let reused = 0;
      for (; k <= th.length; k += CHECKPOINT_TEXT_BLOCKS) {
        const h = th[k - 1]! | 0;
        const cp = this.m.get(MapModel.key(k, h));
        if (!cp) break;
        cp.ref = true;
        reused++;
      }
      return reused;
    }
    save(k: number, hash: number): void {
      const key = MapModel.key(k, hash);
      this.m.delete(key);
      this.m.set(key, { k, hash, ref: false });
      // At most 256 second chances and 16 removals per save (the store's bounded eviction).
      let passes = 256;
      let removed = 0;
      while (this.m.size > this.max && removed < 16) {
        const [oldKey, old] = this.m.entries().next().value!;
        this.m.delete(oldKey);
        if (old.ref && passes > 0) {
          passes--;
          old.ref = false;
          this.m.set(oldKey, old);
        } else removed++;
      }
    }
    get size(): number {
      return this.m.size;
    }
  }

  it('reuses and evicts exactly as the Map-based second-chance cache, with the same hashes', () => {
    const rnd = seededRandom(13);
    const text = wordText(rnd, 'one two three four five six seven eight nine ten'.split(' '));
    const prefixes = Array.from({ length: 6 }, () => text(2000 + Math.floor(rnd() * 4000)));
    const max = 40;
    const ph = new PromptBlockHashes({ maxCheckpoints: max });
    const model = new MapModel(max);
    for (let i = 0; i < 300; i++) {
      const p = prefixes[Math.floor(rnd() * prefixes.length)]!;
      const prompt = p.slice(0, Math.floor(rnd() * p.length)) + text(Math.floor(rnd() * 1500));
      const th = textHashes(prompt);
      ph.begin([prompt], th, 16);
      expect(ph.reused).toBe(model.walk(th));
      // Read a random share of the prompt: checkpoints are saved as the hasher passes them.
      const all = rnd() < 0.5;
      const n = ph.ensure(all ? Infinity : Math.floor(rnd() * 200));
      // The model saves the same checkpoints: those the hasher passed.
      let k = (ph.reused + 1) * CHECKPOINT_TEXT_BLOCKS;
      for (let s = 0; s < ph.saved; s++, k += CHECKPOINT_TEXT_BLOCKS) model.save(k, th[k - 1]! | 0);
      expect(ph.checkpoints).toBe(model.size);
      if (all) {
        const want = blockHashes(tokenize(prompt), 16);
        expect(n).toBe(want.length);
        for (let b = 0; b < n; b += 7) {
          const [hi, lo] = parseBlockHash(want[b])!;
          expect([ph.hi(b), ph.lo(b)]).toEqual([hi, lo]);
        }
      }
    }
  });

  it('bounds the work of one save: 256 second chances, 16 removals (a lowered cap settles over saves)', () => {
    const rnd = seededRandom(31);
    const text = wordText(rnd, 'north south east west up down left right'.split(' '));
    const cp = CHECKPOINT_TEXT_BLOCKS * BLOCK_BYTES;
    const long = text(300 * cp + 50); // 300 checkpoints
    const ph = new PromptBlockHashes({ maxCheckpoints: 300, maxCheckpointsLimit: 1000 });
    ph.begin([long], textHashes(long), 16);
    ph.ensure(Infinity);
    expect(ph.checkpoints).toBe(300);
    ph.begin([long], textHashes(long), 16); // every entry read: all have a second chance
    expect(ph.reused).toBe(300);
    const other = text(cp + 50);
    ph.begin([other], textHashes(other), 16);
    ph.ensure(Infinity);
    expect(ph.checkpoints).toBe(300);
    // The save passed over the 256 oldest (now at the back, unread) and removed the 257th: the
    // long prompt resumes through its first 256 checkpoints (a full scan would have passed over
    // all 300, and removed the new one).
    ph.begin([long], textHashes(long), 16);
    expect(ph.reused).toBe(256);

    // A cap lowered by `fitFleet` (replicas gone): each save removes up to 16, no more.
    ph.fitFleet(1000 * cp);
    expect(ph.checkpointCap).toBe(1000);
    const many = text(400 * cp + 50);
    ph.begin([many], textHashes(many), 16);
    ph.ensure(Infinity);
    const before = ph.checkpoints;
    expect(before).toBeGreaterThan(400);
    ph.fitFleet(0);
    expect(ph.checkpointCap).toBe(300);
    const counts: number[] = [];
    for (let i = 0; i < 30; i++) {
      const t = text(cp + 50);
      ph.begin([t], textHashes(t), 16);
      ph.ensure(Infinity);
      counts.push(ph.checkpoints);
    }
    expect(counts[0]).toBe(before + 1 - 16);
    expect(counts.at(-1)).toBe(300);
  });

  it('keeps both of two checkpoints whose 30-bit index keys collide', () => {
    // Two one-checkpoint prompts (512 B, then a few words) whose text hashes at block 4 give the same 30-bit key
    // (found by a birthday search over numbered prompts; checked here, as the hash defines it).
    const prompt = (i: number): string => `${String(i).padStart(8, '0').repeat(64)} and more`;
    const [a, b] = [prompt(41_520), prompt(79_558)];
    const [ta, tb] = [textHashes(a), textHashes(b)];
    expect(ta[3]).not.toBe(tb[3]);
    expect(key30(4, ta[3]! | 0)).toBe(key30(4, tb[3]! | 0));
    const ph = new PromptBlockHashes({ maxCheckpoints: 100 });
    for (const [t, th] of [
      [a, ta],
      [b, tb],
    ] as const) {
      ph.begin([t], th, 16);
      ph.ensure(Infinity);
      expect(ph.saved).toBe(1);
    }
    expect(ph.checkpoints).toBe(2);
    for (const [t, th] of [
      [a, ta],
      [b, tb],
    ] as const) {
      ph.begin([t], th, 16);
      expect(ph.reused).toBe(1);
      const n = ph.ensure(Infinity);
      const want = blockHashes(tokenize(t), 16);
      expect(n).toBe(want.length);
      for (let i = 0; i < n; i++) expect([ph.hi(i), ph.lo(i)]).toEqual(parseBlockHash(want[i]!));
    }
  });

  it('walks a prompt seen before through successor hints: an index read where prompts branch', () => {
    const rnd = seededRandom(41);
    const text = wordText(rnd, 'red green blue cyan magenta yellow black white'.split(' '));
    const cp = CHECKPOINT_TEXT_BLOCKS * BLOCK_BYTES;
    const shared = text(150 * cp);
    const [a, b] = [shared + text(150 * cp + 50), shared + text(150 * cp + 50)];
    const ph = new PromptBlockHashes({ maxCheckpoints: 10_000 });
    const walk = (t: string): [number, number] => {
      ph.begin([t], textHashes(t), 16);
      const r: [number, number] = [ph.reused, ph.walkIndexReads];
      const n = ph.ensure(Infinity);
      const want = blockHashes(tokenize(t), 16);
      expect(n).toBe(want.length);
      for (let i = 0; i < n; i += 5) expect([ph.hi(i), ph.lo(i)]).toEqual(parseBlockHash(want[i]!));
      return r;
    };
    expect(walk(a)).toEqual([0, 1]); // nothing cached: the first lookup misses
    // A's 300 checkpoints: the first through the index, every next one through its hint.
    expect(walk(a)).toEqual([300, 1]);
    // B shares A's first 150: at the 151st the hint (A's) fails, the index has none of B's.
    expect(walk(b)).toEqual([150, 2]);
    // The 150th's hint now points at B's 151st: A pays one more index read there, and so on.
    expect(walk(a)).toEqual([300, 2]);
    expect(walk(b)).toEqual([300, 2]);
    expect(walk(b)).toEqual([300, 1]);
  });
});

describe('prompt-hash checkpoint records', () => {
  /** Every block hash the prompt's reader gives, read one by one (checkpoints) and materialized. */
  function readAll(ph: PromptBlockHashes, n: number): { each: string[]; flat: string[] } {
    const each: string[] = [];
    for (let b = 0; b < n; b++) each.push(`${ph.hi(b).toString(16)}:${ph.lo(b).toString(16)}`);
    ph.materialize();
    const flat: string[] = [];
    for (let b = 0; b < n; b++) flat.push(`${ph.his[b]!.toString(16)}:${ph.los[b]!.toString(16)}`);
    return { each, flat };
  }
  const want = (prompt: string, bs: number): string[] =>
    blockHashes(tokenize(prompt), bs).map((h) => {
      const [hi, lo] = parseBlockHash(h)!;
      return `${hi.toString(16)}:${lo.toString(16)}`;
    });

  it('resumes with the engine hashes at block sizes 1, 3, 16 and 64, over multi-byte text', () => {
    const rnd = seededRandom(21);
    const text = wordText(rnd, [
      'alpha',
      'βeta',
      'γάμμα',
      '😀',
      'd',
      ' ',
      '  ',
      ',',
      'naïve',
      '漢字',
      'x\ny',
    ]);
    for (const bs of [1, 3, 16, 64]) {
      const ph = new PromptBlockHashes({ maxCheckpoints: 1000 });
      const base = text(6000);
      for (let i = 0; i < 12; i++) {
        const prompt = base.slice(0, 1000 + Math.floor(rnd() * 5000)) + text(rnd() * 800);
        ph.begin([prompt], textHashes(prompt), bs);
        if (i > 0) expect(ph.reused).toBeGreaterThan(0);
        const n = ph.ensure(Infinity);
        const w = want(prompt, bs);
        expect(n).toBe(w.length);
        const got = readAll(ph, n);
        expect(got.each).toEqual(w);
        expect(got.flat).toEqual(w);
        expect(ph.promptTokens).toBe(tokenize(prompt).length);
      }
      expect(ph.checkpointBytes).toBeGreaterThan(0);
    }
  });

  it('bounds the records by bytes (block size 1: a hash per token) and still resumes right', () => {
    const rnd = seededRandom(23);
    const text = wordText(rnd, 'a b c dd ee , . ! 1 22'.split(' '));
    const bound = 64 * 1024;
    const ph = new PromptBlockHashes({ maxCheckpoints: 100_000, maxCheckpointBytes: bound });
    const bases = Array.from({ length: 2 }, () => text(8000));
    let reusedAny = 0;
    for (let i = 0; i < 60; i++) {
      const base = bases[i % bases.length]!;
      const prompt = base.slice(0, 2000 + Math.floor(rnd() * 6000)) + text(300);
      ph.begin([prompt], textHashes(prompt), 1);
      reusedAny += ph.reused;
      const n = ph.ensure(Infinity);
      expect(ph.liveCheckpointBytes).toBeLessThanOrEqual(bound);
      if (i % 6 === 0) {
        const w = want(prompt, 1);
        expect(n).toBe(w.length);
        expect(readAll(ph, n).each).toEqual(w);
      }
    }
    // Each checkpoint here keeps ~200–500 hashes (2–4 KiB): the bytes bind, not the count.
    expect(ph.checkpoints).toBeLessThan(64);
    expect(ph.liveCheckpointBytes).toBeGreaterThan(bound / 2);
    expect(reusedAny).toBeGreaterThan(0);
  });

  it('keeps the records a prompt resumed through until it is done, when its own saves evict them', () => {
    // A full cache of checkpoints all read since last passed over: the prompt's saves evict,
    // in one round, the oldest entries, which are the ones it walked. Their records must still
    // hold the right hashes when the prompt reads its resumed blocks after those saves.
    const rnd = seededRandom(22);
    const text = wordText(rnd, 'lorem ipsum dolor sit amet consectetur adipiscing elit'.split(' '));
    const shared = text(CHECKPOINT_TEXT_BLOCKS * 128 * 6 + 100); // 6 checkpoints
    const ph = new PromptBlockHashes({ maxCheckpoints: 8 });
    ph.begin([shared], textHashes(shared), 16);
    ph.ensure(Infinity);
    expect(ph.saved).toBe(6);
    for (let round = 0; round < 3; round++) {
      const prompt = shared + text(CHECKPOINT_TEXT_BLOCKS * 128 * 12); // 12 more to save
      ph.begin([prompt], textHashes(prompt), 16);
      expect(ph.reused).toBe(6);
      const n = ph.ensure(Infinity);
      expect(ph.saved).toBeGreaterThanOrEqual(12);
      const w = want(prompt, 16);
      const got = readAll(ph, n);
      expect(got.each).toEqual(w);
      expect(got.flat).toEqual(w);
      // The shared prefix again, so that its checkpoints are back and walked next round.
      ph.begin([shared], textHashes(shared), 16);
      ph.ensure(Infinity);
      expect(ph.checkpoints).toBeLessThanOrEqual(8);
    }
  });
});

describe('precise decisions: binary search vs block-by-block walk', () => {
  const view = freshView({ kvUtilization: 0.1, ageMs: 1, numGpuBlocks: 100_000 });
  const R = 8;
  const route = simRoute(R);

  it('gives the same receipts when every set must be walked (parents unknown)', () => {
    const rnd = seededRandom(14);
    const text = wordText(rnd, 'red green blue cyan magenta yellow black white'.split(' '));
    const contexts = Array.from({ length: 10 }, () => text(6000 + Math.floor(rnd() * 14000)));
    // Two copies of every replica's set: with parents (closed unless holes are made: the binary
    // search) and without (unknown parents: always the walk).
    const fast = Array.from({ length: R }, () => new BlockSet());
    const slow = Array.from({ length: R }, () => new BlockSet());
    for (let r = 0; r < R; r++) {
      for (let c = 0; c < 3; c++) {
        const ctx = contexts[Math.floor(rnd() * contexts.length)]!;
        const engineText = chatPromptText([{ role: 'system', content: ctx }], false);
        const hs = blockHashes(tokenize(engineText), 16).map((h) => parseBlockHash(h)!);
        const upto = rnd() < 0.7 ? hs.length : Math.floor(rnd() * (hs.length + 1));
        for (let i = 0; i < upto; i++) {
          const [hi, lo] = hs[i]!;
          if (i === 0) fast[r]!.addRoot(hi, lo);
          else fast[r]!.addChild(hi, lo, hs[i - 1]![0], hs[i - 1]![1]);
          slow[r]!.add(hi, lo);
        }
        // Holes on some replicas: non-monotone, their sets are no longer closed.
        if (r % 2 === 1 && upto > 2) {
          const [hi, lo] = hs[Math.floor(rnd() * (upto - 1))]!;
          fast[r]!.delete(hi, lo);
          slow[r]!.delete(hi, lo);
        }
      }
    }
    expect(fast.some((s) => s.closed)).toBe(true);
    expect(fast.some((s) => !s.closed)).toBe(true);
    const hub = (sets: BlockSet[]): KvEventHub =>
      ({
        blocks: (id: string) => sets[Number(id.slice(1))],
        live: () => true,
        sync: () => {},
      }) as unknown as KvEventHub;
    const make = (sets: BlockSet[]): RoutingPipeline =>
      new RoutingPipeline({
        signals: { view: () => view },
        kvEvents: hub(sets),
        random: seededRandom(1),
      });
    const a = make(fast);
    const b = make(slow);
    let matched = 0;
    for (let i = 0; i < 300; i++) {
      const ctx = contexts[Math.floor(rnd() * contexts.length)]!;
      const cut = rnd() < 0.2 ? Math.floor(rnd() * ctx.length) : ctx.length;
      const prompt = [
        '<system>\n',
        ctx.slice(0, cut),
        '\n',
        '<user>\n',
        text(50 + Math.floor(rnd() * 600)),
        '\n',
      ];
      const da = a.pick(route, { exclude: new Set(), prompt })!;
      const db = b.pick(route, { exclude: new Set(), prompt })!;
      expect(da.receipt.scores).toEqual(db.receipt.scores);
      expect(da.receipt.replica).toBe(db.receipt.replica);
      expect(da.receipt.matchedBlocks).toBe(db.receipt.matchedBlocks);
      expect(da.receipt.promptBlocks).toBe(db.receipt.promptBlocks);
      matched += da.receipt.matchedBlocks;
      a.release(da.endpoint.replicaId);
      b.release(db.endpoint.replicaId);
    }
    expect(matched).toBeGreaterThan(1000);
    // The checkpoints were used (the binary search ran over resumed blocks).
    expect(a.promptHashes.checkpoints).toBeGreaterThan(50);
  });

  it('stops at a hole before the resumed blocks end (a non-closed set is walked)', () => {
    const ctx = 'Tell me about the ocean and its many currents, please. '.repeat(120);
    const engineText = chatPromptText([{ role: 'system', content: ctx }], false);
    const hs = blockHashes(tokenize(engineText), 16).map((h) => parseBlockHash(h)!);
    expect(hs.length).toBeGreaterThan(60);
    const sets = Array.from({ length: R }, () => new BlockSet());
    for (const r of [1, 2]) {
      for (let i = 0; i < hs.length; i++) {
        const [hi, lo] = hs[i]!;
        if (i === 0) sets[r]!.addRoot(hi, lo);
        else sets[r]!.addChild(hi, lo, hs[i - 1]![0], hs[i - 1]![1]);
      }
    }
    // r1: a hole at block 10 (then not closed); r2: evicted from block 30 on (closed).
    sets[1]!.delete(hs[10]![0], hs[10]![1]);
    for (let i = hs.length - 1; i >= 30; i--) sets[2]!.delete(hs[i]![0], hs[i]![1]);
    expect(sets[1]!.closed).toBe(false);
    expect(sets[2]!.closed).toBe(true);
    const hub = {
      blocks: (id: string) => sets[Number(id.slice(1))],
      live: () => true,
      sync: () => {},
    } as unknown as KvEventHub;
    const p = new RoutingPipeline({ signals: { view: () => view }, kvEvents: hub });
    for (const q of ['first?', 'second?', 'third?']) {
      const d = p.pick(route, {
        exclude: new Set(),
        prompt: ['<system>\n', ctx, '\n', '<user>\n', q, '\n'],
      })!;
      expect(d.receipt.scores['r1']!.matchedBlocks).toBe(10);
      expect(d.receipt.scores['r2']!.matchedBlocks).toBe(30);
      p.release(d.endpoint.replicaId);
    }
    // The later decisions resumed past the hole (block 10) from checkpoints (512 B ≈ 6 blocks each).
    expect(p.promptHashes.reused).toBeGreaterThanOrEqual(3);
  });
});
