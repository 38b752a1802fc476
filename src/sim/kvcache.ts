/**
 * Paged KV cache with automatic prefix caching, modelled on vLLM v1's `KVCacheManager` /
 * `BlockPool`.
 *
 * - The cache is `numBlocks` blocks of `blockSize` tokens. A request holds a list of blocks (its
 *   block table); a block may be shared by several requests (reference counted).
 * - A full prompt block is identified by a chained hash: `hash(parentHash, tokenIds of the block)`,
 *   see `hashBlock` (src/core/tokens.ts). Once computed, a full block is registered under its hash ("cached").
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

// The block hash and the per-prompt chain live in src/core/tokens.ts (the gateway's precise prefix
// routing computes the same hashes); re-exported here.
export { blockHashes, hashBlock } from '../core/tokens.js';

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
