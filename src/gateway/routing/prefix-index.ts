// Approximate prefix index: which replica has probably cached which prompt prefix.
//
// The prompt (its UTF-8 bytes) is cut into fixed blocks of BLOCK_BYTES = 128 bytes — 128
// characters of ASCII text ≈ 32 tokens at ~4 chars/token, i.e. two vLLM KV blocks of 16 tokens.
// (64-byte blocks double the index work per request for no routing benefit: a 32k-token prompt is
// 1,024 blocks at 128 bytes.) Blocks are hashed as a chain — h(i) = hash(h(i−1), block i) — so a
// block hash stands for the whole prefix up to it, as the engines' own prefix caches do. Only
// whole blocks count (engines cache whole KV blocks only).
//
// Per replica the index keeps an approximate LRU set of block hashes, bounded in entries: the
// replica's reported cache (numGpuBlocks × blockSize tokens × CHARS_PER_TOKEN / BLOCK_BYTES),
// else a default, and never more than the global cap divided over the replicas. The set is two
// generations (a "young" and an "old" Map, each at most half the cap): `record` adds a prompt's
// blocks to the young one; when it is full it becomes the old one and the previous old one is
// dropped whole. A block survives between cap/2 and cap insertions after its last use — LRU up to
// a factor of two — at the cost of one Map.set per block (a true LRU's delete+set costs ~4× more
// and dominated the decision). A record's blocks all land in one generation, so every replica's
// set stays prefix-closed (a block's parents are held whenever it is), and `match` finds a
// replica's matched length by binary search: O(replicas × log blocks) lookups. Memory is bounded
// by the caps alone (plus one prompt's blocks of slack per replica).
//
// Hashes are 30-bit (FNV-style over 32-bit words, chained; small integers are the fastest Map
// keys). A false match needs a 30-bit collision at the exact chain position; the index is a
// routing hint, never a correctness claim.

/** Bytes (UTF-8) per block: 128 ≈ 32 tokens of English text. */
export const BLOCK_BYTES = 128;
/** Characters per block for ASCII text (the same number: one byte per character). */
export const BLOCK_CHARS = BLOCK_BYTES;
/** Average characters per token assumed to size the index from the engine's KV cache. */
export const CHARS_PER_TOKEN = 4;

export interface PrefixIndexOptions {
  /** Entries per replica when the replica reports no cache size. Default 16384. */
  defaultEntriesPerReplica?: number;
  /** Upper bound of all entries over all replicas. Default 1,048,576. */
  globalMaxEntries?: number;
  /** Most blocks hashed per prompt (longer prompts: the tail is ignored). Default 8192. */
  maxPromptBlocks?: number;
}

// Reused encode buffer (grows to the largest prompt prefix hashed, at most maxBlocks blocks).
let scratch = Buffer.allocUnsafeSlow(1 << 16);
let scratchWords = new Int32Array(scratch.buffer, scratch.byteOffset, scratch.length >>> 2);

/**
 * Chained hashes of the whole BLOCK_BYTES blocks of `text` (at most `maxBlocks`). `text` may be
 * given in parts (e.g. chat messages): they are encoded one after the other, which hashes the same
 * as their concatenation without building (and flattening) the concatenated string.
 */
export function blockHashes(text: string | readonly string[], maxBlocks = 8192): Uint32Array {
  const parts = typeof text === 'string' ? [text] : text;
  const limit = maxBlocks * BLOCK_BYTES;
  let chars = 0;
  for (const p of parts) chars += p.length;
  const want = Math.min(chars * 3, limit);
  if (scratch.length < want) {
    scratch = Buffer.allocUnsafeSlow(Math.min(limit, Math.max(want, scratch.length * 2)));
    scratchWords = new Int32Array(scratch.buffer, scratch.byteOffset, scratch.length >>> 2);
  }
  const cap = Math.min(scratch.length, limit);
  let len = 0;
  for (const p of parts) {
    if (len >= cap) break;
    const wrote = scratch.write(p, len, cap - len, 'utf8');
    len += wrote;
    // A part cut short (the buffer is full) ends the prompt.
    if (wrote < Buffer.byteLength(p) && len < cap) break;
  }
  const n = Math.min(Math.floor(len / BLOCK_BYTES), maxBlocks);
  const words = scratchWords;
  const per = BLOCK_BYTES >>> 2;
  const out = new Uint32Array(n);
  let h = 0x811c9dc5 | 0;
  let p = 0;
  for (let b = 0; b < n; b++) {
    // Seeded by the parent hash: the chain.
    h = Math.imul(h ^ 0x9e3779b9, 0x01000193);
    const end = p + per;
    for (; p < end; p++) h = Math.imul(h ^ words[p]!, 0x01000193);
    h ^= h >>> 15;
    out[b] = h & 0x3fffffff;
  }
  return out;
}

interface Replica {
  young: Map<number, true>;
  old: Map<number, true>;
  cap: number;
  /** Cap derived from the engine's cache (0: unknown). */
  cacheEntries: number;
}

export class PrefixIndex {
  private readonly replicas = new Map<string, Replica>();
  private readonly defaultEntries: number;
  private readonly globalMax: number;
  readonly maxPromptBlocks: number;

  constructor(o: PrefixIndexOptions = {}) {
    this.defaultEntries = o.defaultEntriesPerReplica ?? 16384;
    this.globalMax = o.globalMaxEntries ?? 1 << 20;
    this.maxPromptBlocks = o.maxPromptBlocks ?? 8192;
  }

  hash(text: string | readonly string[]): Uint32Array {
    return blockHashes(text, this.maxPromptBlocks);
  }

  /** Sizes a replica from its reported KV cache (tokens = numGpuBlocks × blockSize). */
  setCacheTokens(replicaId: string, tokens: number): void {
    const r = this.replica(replicaId);
    const entries = Math.max(1, Math.floor((tokens * CHARS_PER_TOKEN) / BLOCK_BYTES));
    if (r.cacheEntries === entries) return;
    r.cacheEntries = entries;
    this.recap();
  }

  /** For each replica holding the first block: how many leading blocks it holds. */
  match(hashes: ArrayLike<number>): Map<string, number> {
    const out = new Map<string, number>();
    const n = hashes.length;
    if (n === 0) return out;
    const first = hashes[0]!;
    for (const [id, r] of this.replicas) {
      const { young, old } = r;
      if (!young.has(first) && !old.has(first)) continue;
      // Largest k with block k−1 held (sets are prefix-closed).
      let lo = 1;
      let hi = n;
      while (lo < hi) {
        const mid = (lo + hi + 1) >>> 1;
        const h = hashes[mid - 1]!;
        if (young.has(h) || old.has(h)) lo = mid;
        else hi = mid - 1;
      }
      out.set(id, lo);
    }
    return out;
  }

  /** Records that `replicaId` now holds (has just been sent) the prefix `hashes`. */
  record(replicaId: string, hashes: ArrayLike<number>): void {
    const r = this.replica(replicaId);
    const young = r.young;
    const n = hashes.length;
    // The young generation is prefix-closed too: skip the leading blocks it already holds (a hot
    // context costs a binary search, not one Map.set per block).
    let lo = 0;
    let hi = n;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (young.has(hashes[mid - 1]!)) lo = mid;
      else hi = mid - 1;
    }
    for (let i = lo; i < n; i++) young.set(hashes[i]!, true);
    this.evict(r);
  }

  /** Forgets a replica (it left the routing table). */
  remove(replicaId: string): void {
    if (this.replicas.delete(replicaId)) this.recap();
  }

  /** Keeps only the listed replicas. */
  retain(replicaIds: ReadonlySet<string>): void {
    let changed = false;
    for (const id of [...this.replicas.keys()]) {
      if (!replicaIds.has(id)) changed = this.replicas.delete(id) || changed;
    }
    if (changed) this.recap();
  }

  /** Sizes for the memory check: replicas and entries over all replicas (both generations). */
  stats(): { replicas: number; entries: number } {
    let entries = 0;
    for (const r of this.replicas.values()) entries += r.young.size + r.old.size;
    return { replicas: this.replicas.size, entries };
  }

  capacity(replicaId: string): number {
    return this.replicas.get(replicaId)?.cap ?? 0;
  }

  private replica(replicaId: string): Replica {
    let r = this.replicas.get(replicaId);
    if (!r) {
      r = { young: new Map(), old: new Map(), cap: this.defaultEntries, cacheEntries: 0 };
      this.replicas.set(replicaId, r);
      this.recap();
    }
    return r;
  }

  private recap(): void {
    const share = Math.max(1, Math.floor(this.globalMax / Math.max(1, this.replicas.size)));
    for (const r of this.replicas.values()) {
      r.cap = Math.min(r.cacheEntries > 0 ? r.cacheEntries : this.defaultEntries, share);
      this.evict(r);
    }
  }

  private evict(r: Replica): void {
    const half = Math.max(1, r.cap >>> 1);
    if (r.young.size >= half) {
      r.old = r.young;
      r.young = new Map();
    }
    if (r.old.size > half) r.old = new Map(); // the cap shrank
  }
}
