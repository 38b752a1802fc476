/**
 * Paged KV cache with automatic prefix caching, modelled on vLLM v1's `KVCacheManager` /
 * `BlockPool`.
 *
 * - The cache is `numBlocks` blocks of `blockSize` tokens. A request holds a list of blocks (its
 *   block table); a block may be shared by several requests (reference counted).
 * - A full prompt block is identified by a chained hash: `hash(parentHash, tokenIds of the block)`,
 *   see {@link hashBlock}. Once computed, a full block is registered under its hash ("cached").
 * - A block whose reference count falls to 0 goes to the free queue but keeps its hash, so a later
 *   request with the same prefix can reuse it. The free queue is in LRU order: new blocks are taken
 *   from its head, evicting the least recently freed cached block first (a `BlockRemoved` event).
 *   A request's blocks are freed tail first, so the end of a prefix is evicted before its start.
 */

export interface BlockStoredEvent {
  type: 'BlockStored';
  blockHashes: string[];
  /** Hash of the block before the first stored one; null when the first is the prompt's first. */
  parentBlockHash: string | null;
  /** Token ids of the stored blocks, concatenated. */
  tokenIds: number[];
  blockSize: number;
}

export interface BlockRemovedEvent {
  type: 'BlockRemoved';
  blockHashes: string[];
}

export interface AllBlocksClearedEvent {
  type: 'AllBlocksCleared';
}

export type KvEvent = BlockStoredEvent | BlockRemovedEvent | AllBlocksClearedEvent;

export interface KvEventBatch {
  /** Simulated seconds (the engine clock) at which the step that produced the events ended. */
  ts: number;
  events: KvEvent[];
}

// FNV-1a 64-bit, on two 32-bit halves (no BigInt): offset basis 0xcbf29ce484222325,
// prime 0x100000001b3 = 2^40 + 0x1b3.
const OFFSET_HI = 0xcbf29ce4;
const OFFSET_LO = 0x84222325;

/**
 * Hash of one full block: FNV-1a 64-bit over the parent hash's 8 bytes (none for the first block)
 * followed by each token id as 4 little-endian bytes, written as 16 lower-case hex digits. Stable
 * across processes and platforms, so several replicas (and a router) compute the same hashes.
 */
export function hashBlock(
  parentHash: string | null,
  tokenIds: readonly number[],
  start = 0,
  end = tokenIds.length,
): string {
  let hi = OFFSET_HI;
  let lo = OFFSET_LO;
  const feed = (byte: number): void => {
    lo ^= byte & 0xff;
    // (hi, lo) × (2^40 + 0x1b3) mod 2^64
    const a = (lo >>> 0) * 0x1b3;
    const carry = Math.floor(a / 0x1_0000_0000);
    const newLo = a >>> 0;
    hi = (Math.imul(hi, 0x1b3) + carry + (lo << 8)) >>> 0;
    lo = newLo;
  };
  if (parentHash !== null) {
    const p = parentHash.padStart(16, '0');
    const phi = parseInt(p.slice(0, 8), 16);
    const plo = parseInt(p.slice(8, 16), 16);
    for (const w of [phi, plo]) for (let s = 0; s < 32; s += 8) feed(w >>> s);
  }
  for (let i = start; i < end; i++) {
    const t = (tokenIds[i] ?? 0) >>> 0;
    feed(t);
    feed(t >>> 8);
    feed(t >>> 16);
    feed(t >>> 24);
  }
  return (hi >>> 0).toString(16).padStart(8, '0') + (lo >>> 0).toString(16).padStart(8, '0');
}

/** Chained hashes of the full blocks of `tokenIds` (at most `maxBlocks`). */
export function blockHashes(
  tokenIds: readonly number[],
  blockSize: number,
  maxBlocks = Infinity,
): string[] {
  const n = Math.min(Math.floor(tokenIds.length / blockSize), maxBlocks);
  const out: string[] = [];
  let parent: string | null = null;
  for (let b = 0; b < n; b++) {
    parent = hashBlock(parent, tokenIds, b * blockSize, (b + 1) * blockSize);
    out.push(parent);
  }
  return out;
}

export interface KvBlock {
  readonly id: number;
  refCount: number;
  /** Hash under which the block is cached, or null. */
  hash: string | null;
}

export class KvCacheManager {
  readonly numBlocks: number;
  readonly blockSize: number;
  readonly #blocks: KvBlock[];
  /** Free blocks (refCount 0), least recently freed first (Map keeps insertion order). */
  readonly #free = new Map<number, KvBlock>();
  readonly #cached = new Map<string, KvBlock>();
  #events: KvEvent[] = [];

  constructor(numBlocks: number, blockSize: number) {
    this.numBlocks = numBlocks;
    this.blockSize = blockSize;
    this.#blocks = Array.from({ length: numBlocks }, (_, id) => ({ id, refCount: 0, hash: null }));
    for (const b of this.#blocks) this.#free.set(b.id, b);
  }

  /** Blocks that can be allocated now (uncached, or cached but unreferenced: evictable). */
  get numFree(): number {
    return this.#free.size;
  }

  /** Blocks referenced by at least one request. */
  get numUsed(): number {
    return this.numBlocks - this.#free.size;
  }

  /** Number of blocks registered under a hash (referenced or not). */
  get numCached(): number {
    return this.#cached.size;
  }

  isCached(hash: string): boolean {
    return this.#cached.has(hash);
  }

  /** The cached blocks of the longest cached prefix of `hashes` (at most `maxBlocks`). */
  lookup(hashes: readonly string[], maxBlocks = hashes.length): KvBlock[] {
    const out: KvBlock[] = [];
    const n = Math.min(maxBlocks, hashes.length);
    for (let i = 0; i < n; i++) {
      const b = this.#cached.get(hashes[i] as string);
      if (!b) break;
      out.push(b);
    }
    return out;
  }

  /** Takes a reference on each block (cached blocks leave the free queue). */
  touch(blocks: readonly KvBlock[]): void {
    for (const b of blocks) {
      if (b.refCount === 0) this.#free.delete(b.id);
      b.refCount++;
    }
  }

  /** Allocates `n` fresh blocks, evicting LRU cached ones; null (nothing taken) if fewer are free. */
  allocate(n: number): KvBlock[] | null {
    if (n > this.#free.size) return null;
    const out: KvBlock[] = [];
    const removed: string[] = [];
    const it = this.#free.values();
    for (let i = 0; i < n; i++) {
      const b = it.next().value as KvBlock;
      out.push(b);
    }
    for (const b of out) {
      this.#free.delete(b.id);
      if (b.hash !== null) {
        this.#cached.delete(b.hash);
        removed.push(b.hash);
        b.hash = null;
      }
      b.refCount = 1;
    }
    if (removed.length > 0) this.#events.push({ type: 'BlockRemoved', blockHashes: removed });
    return out;
  }

  /** Drops one reference on each block; blocks reaching 0 join the free queue, last block first. */
  free(blocks: readonly KvBlock[]): void {
    for (let i = blocks.length - 1; i >= 0; i--) {
      const b = blocks[i] as KvBlock;
      if (b.refCount <= 0) continue;
      b.refCount--;
      if (b.refCount === 0) this.#free.set(b.id, b);
    }
  }

  /**
   * Registers a computed full block under `hash`. Returns false (block stays uncached) when the hash
   * is already cached by another block (two requests computed the same prefix at once).
   */
  cacheBlock(block: KvBlock, hash: string): boolean {
    if (block.hash !== null || this.#cached.has(hash)) return false;
    block.hash = hash;
    this.#cached.set(hash, block);
    return true;
  }

  /** Queues an event produced outside the manager (the engine's BlockStored). */
  pushEvent(ev: KvEvent): void {
    this.#events.push(ev);
  }

  /** Drops every cached hash (blocks in use stay allocated). */
  reset(): void {
    for (const b of this.#cached.values()) b.hash = null;
    this.#cached.clear();
    this.#events.push({ type: 'AllBlocksCleared' });
  }

  /** Returns and clears the pending events. */
  takeEvents(): KvEvent[] {
    const ev = this.#events;
    this.#events = [];
    return ev;
  }
}
