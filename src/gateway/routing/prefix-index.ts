// Approximate prefix index: which replica has probably cached which prompt prefix.
//
// The prompt (its UTF-8 bytes) is cut into fixed blocks of BLOCK_BYTES = 128 bytes — 128
// characters of ASCII text ≈ 32 tokens at ~4 chars/token, i.e. two vLLM KV blocks of 16 tokens.
// Blocks are hashed as a chain — h(i) = hash(h(i−1), block i) — so a block hash stands for the
// whole prefix up to it, as the engines' own prefix caches do (./text-hash.ts: the definition and
// its WebAssembly SIMD kernel). Only whole blocks count (engines cache whole KV blocks only).
// 32-bit hashes: a false match needs a collision at the exact chain position; the index is a
// routing hint, never a correctness claim.
//
// Storage: ONE fixed-size, set-associative table of (block hash, replica, stamp) entries in typed
// arrays — SETS × WAYS slots, WAYS = 16 — shared by all replicas. No Map, no per-decision
// allocation, no rehash while serving (the table only grows when the fleet's caps grow, on a
// routing-table change). Per replica a clock counts the NEW blocks recorded to it; an entry is
// live while fewer than the replica's cap new blocks were recorded there since it was last
// recorded (an LRU bound per replica, evaluated lazily: expired entries are simply reused). The
// cap is the replica's reported KV cache (numGpuBlocks × blockSize tokens × CHARS_PER_TOKEN /
// BLOCK_BYTES), else a default, and never more than the global cap divided over the replicas.
// Within one record the new blocks are stamped children first, so a prefix's parents expire no
// earlier than its children (the engines also evict a prefix tail first) and every replica's live
// set stays prefix-closed. A full set evicts its expired entries first, then the entry closest to
// expiry. Memory: SLOT_BYTES per slot, slots = next power of two ≥ 1.5 × Σ caps (≤ 1.5 × the
// global cap): bounded by construction.
//
// The same table serves as the index over the engine's own KV blocks (the pipeline's token-block
// index, where the gateway knows the engine's tokenizer): hashes are then the engine's block
// hashes folded to 32 bits, a replica is sized in blocks (`setCacheEntries`: num_gpu_blocks), and
// since tokenizing costs, `matchLengthsLazy` asks for the prompt's hashes only as far as it walks.
//
// `match` walks the prompt's blocks from the first, keeping the replicas that held every block so
// far, and stops at the first block no replica holds: O(matched blocks × WAYS), independent of the
// number of replicas that do not hold the prefix.

import { BLOCK_BYTES, blockHashes } from './text-hash.js';

export { BLOCK_BYTES, blockHashes };

/** Characters per block for ASCII text (the same number: one byte per character). */
export const BLOCK_CHARS = BLOCK_BYTES;
/** Average characters per token assumed to size the index from the engine's KV cache. */
export const CHARS_PER_TOKEN = 4;
/** Entries per set of the table (one scan per lookup). */
export const WAYS = 16;
/** Bytes per table slot: hash (4) + replica (2) + stamp (4). */
export const SLOT_BYTES = 10;

export interface PrefixIndexOptions {
  /** Entries per replica when the replica reports no cache size. Default 16384. */
  defaultEntriesPerReplica?: number;
  /** Upper bound of live entries over all replicas. Default 1,048,576. */
  globalMaxEntries?: number;
  /** Most blocks hashed per prompt (longer prompts: the tail is ignored). Default 8192. */
  maxPromptBlocks?: number;
}

/** A prompt's block hashes produced on demand (the token-block index: tokenizing costs). */
export interface LazyBlockHashes {
  /** Makes at least n hashes ready, if the prompt has them; returns how many are. */
  ensure(n: number): number;
  /** Hash of block i (32 bits), for i below the last `ensure`'s result. */
  at(i: number): number;
  /**
   * Blocks whose hashes are known without producing any (a prompt resumed from cached state):
   * over these, each replica's length is binary-searched instead of walked. Default 0.
   */
  readonly known?: number;
}

interface Replica {
  /** 1-based slot in the per-replica arrays (0 marks an empty table entry). */
  slot: number;
  cap: number;
  /** Cap derived from the engine's cache (0: unknown). */
  cacheEntries: number;
}

const MIN_SLOTS = 4096;
/** Int32 fields per table slot: hash, owner (replica slot), stamp. */
const F = 3;

/**
 * Whether block position i is a checkpoint (indexed): every block of the first 16, then
 * CHECKPOINTS_PER_OCTAVE evenly spaced per doubling of the position. A function of the position
 * only, so prompts sharing a prefix index the same positions.
 */
export function isCheckpoint(i: number): boolean {
  if (i < 16) return true;
  const octave = 31 - Math.clz32(i + 1); // ≥ 4
  const step = 1 << (octave - 3); // 8 per octave
  return (i + 1) % step === 0;
}

export class PrefixIndex {
  private readonly replicas = new Map<string, Replica>();
  private readonly bySlot: (string | undefined)[] = [undefined];
  private readonly freeSlots: number[] = [];
  private readonly defaultEntries: number;
  private readonly globalMax: number;
  readonly maxPromptBlocks: number;
  /** Σ over the replicas of their reported cache in this index's blocks (the engines' KV size). */
  reportedEntries = 0;
  /** Checkpoint positions in order, and how many checkpoints lie below each position. */
  private readonly cps: Int32Array;
  private readonly cpBelow: Int32Array;

  // The table: SETS × WAYS slots of F int32 fields each (interleaved: one set is contiguous).
  private table = new Int32Array(MIN_SLOTS * F);
  private slots = MIN_SLOTS;
  private setMask = MIN_SLOTS / WAYS - 1;

  // Per replica slot: clock (prompt blocks newly cached there), cap (blocks), match output.
  private clock = new Int32Array(16);
  private caps = new Int32Array(16);
  private lens = new Int32Array(16);
  private readonly holders: number[] = [];
  private readonly touched: number[] = [];
  /** Sink of record's prefetch reads (kept, so they are not optimized away). */
  prefetched = 0;

  constructor(o: PrefixIndexOptions = {}) {
    this.defaultEntries = o.defaultEntriesPerReplica ?? 16384;
    this.globalMax = o.globalMaxEntries ?? 1 << 20;
    this.maxPromptBlocks = o.maxPromptBlocks ?? 8192;
    const cps: number[] = [];
    this.cpBelow = new Int32Array(this.maxPromptBlocks + 1);
    for (let i = 0; i < this.maxPromptBlocks; i++) {
      this.cpBelow[i] = cps.length;
      if (isCheckpoint(i)) cps.push(i);
    }
    this.cpBelow[this.maxPromptBlocks] = cps.length;
    this.cps = Int32Array.from(cps);
  }

  hash(text: string | readonly string[]): Uint32Array {
    return blockHashes(text, this.maxPromptBlocks);
  }

  /** Sizes a replica from its reported KV cache (tokens = numGpuBlocks × blockSize). */
  setCacheTokens(replicaId: string, tokens: number): void {
    this.setCacheEntries(replicaId, Math.floor((tokens * CHARS_PER_TOKEN) / BLOCK_BYTES));
  }

  /**
   * Sizes a replica in the index's own blocks: for an index over the engine's KV blocks (token
   * blocks), the engine's reported `num_gpu_blocks`.
   */
  setCacheEntries(replicaId: string, blocks: number): void {
    const r = this.replica(replicaId);
    const entries = Math.max(1, Math.floor(blocks));
    if (r.cacheEntries === entries) return;
    r.cacheEntries = entries;
    this.recap();
  }

  /** The replica's slot (1-based; 0 when unknown): index into {@link matchLengths}' result. */
  slotOf(replicaId: string): number {
    return this.replicas.get(replicaId)?.slot ?? 0;
  }

  /** Table slot holding a LIVE entry (h, r), or −1. */
  private find(h: number, r: number): number {
    const t = this.table;
    const base = (h & this.setMask) * WAYS * F;
    const end = base + WAYS * F;
    for (let w = base; w < end; w += F) {
      if (t[w] === h && t[w + 1] === r) {
        return (this.clock[r]! - t[w + 2]!) >>> 0 < this.caps[r]! ? w : -1;
      }
    }
    return -1;
  }

  /** Leading checkpoints (of the first `m`) that replica slot r holds: binary search. */
  private held(hashes: ArrayLike<number>, r: number, m: number): number {
    const cps = this.cps;
    let lo = 0;
    let hi = m;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (this.find(hashes[cps[mid - 1]!]! | 0, r) >= 0) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  /** Appends to `out` the replica slots holding a live entry of block hash h0. */
  private holdersOf(h0: number, out: number[]): void {
    const t = this.table;
    const base = (h0 & this.setMask) * WAYS * F;
    const end = base + WAYS * F;
    for (let w = base; w < end; w += F) {
      if (t[w] !== h0) continue;
      const r = t[w + 1]!;
      if (r === 0 || (this.clock[r]! - t[w + 2]!) >>> 0 >= this.caps[r]!) continue;
      out.push(r);
    }
  }

  /** `held` over hashes produced on demand (all of the first `m` checkpoints' are known). */
  private heldLazy(src: LazyBlockHashes, r: number, m: number): number {
    const cps = this.cps;
    let lo = 0;
    let hi = m;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (this.find(src.at(cps[mid - 1]!) | 0, r) >= 0) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  /**
   * Matched leading blocks per replica slot (see {@link slotOf}); 0 for replicas without the first
   * block. Lengths are exact up to 16 blocks, then rounded down to a checkpoint (≤ 12.5 % short).
   * The returned array is reused: valid until the next call.
   */
  matchLengths(hashes: ArrayLike<number>): Int32Array {
    const lens = this.lens;
    for (const s of this.touched) lens[s] = 0;
    this.touched.length = 0;
    const n = Math.min(hashes.length, this.maxPromptBlocks);
    if (n === 0) return lens;
    // Holders of the first block, then each one's length by binary search over the checkpoints
    // (every replica's live set is prefix-closed).
    this.holdersOf(hashes[0]! | 0, this.touched);
    const m = this.cpBelow[n]!;
    for (const r of this.touched) {
      const k = this.held(hashes, r, m);
      lens[r] = k === m ? n : this.cps[k - 1]! + 1;
    }
    return lens;
  }

  /**
   * `matchLengths` over hashes produced on demand (`src.ensure`): the checkpoints are walked in
   * order and the hashes read only as far as some replica holds every checkpoint so far (plus
   * the one it lacks), so a prompt nobody holds costs its first block. The same lengths as
   * `matchLengths` over all of the prompt's hashes (every replica's live set is prefix-closed).
   */
  matchLengthsLazy(src: LazyBlockHashes): Int32Array {
    const lens = this.lens;
    for (const s of this.touched) lens[s] = 0;
    const alive = this.touched;
    alive.length = 0;
    if (src.ensure(1) < 1) return lens;
    this.holdersOf(src.at(0) | 0, alive);
    if (alive.length === 0) return lens;
    const cps = this.cps;
    const max = this.maxPromptBlocks;
    // Replicas still holding every checkpoint so far are alive[0, live); the others keep their
    // length in lens (and stay in `touched`, to be cleared next time).
    let live = alive.length;
    // Over the checkpoints among the known blocks: each holder's length by binary search.
    const known = Math.min(src.known ?? 0, max);
    const m = known > 0 ? this.cpBelow[known]! : 0;
    let k0 = 1;
    if (m > 1) {
      let kept = 0;
      for (let j = 0; j < live; j++) {
        const r = alive[j]!;
        const k = this.heldLazy(src, r, m);
        if (k === m) {
          alive[j] = alive[kept]!;
          alive[kept++] = r;
        } else lens[r] = cps[k - 1]! + 1;
      }
      live = kept;
      k0 = m;
    }
    for (let k = k0; live > 0; k++) {
      const p = k < cps.length ? cps[k]! : max;
      const ready = p < max ? src.ensure(p + 1) : max;
      if (ready <= p) {
        // The prompt (or the index's limit) ends before checkpoint k: the live ones hold it all.
        const n = Math.min(ready, max);
        for (let j = 0; j < live; j++) lens[alive[j]!] = n;
        break;
      }
      const h = src.at(p) | 0;
      const held = cps[k - 1]! + 1;
      let m = 0;
      for (let j = 0; j < live; j++) {
        const r = alive[j]!;
        if (this.find(h, r) >= 0) {
          alive[j] = alive[m]!;
          alive[m++] = r;
        } else lens[r] = held;
      }
      live = m;
    }
    return lens;
  }

  /** For each replica holding the first block: how many leading blocks it holds. */
  match(hashes: ArrayLike<number>): Map<string, number> {
    const lens = this.matchLengths(hashes);
    const out = new Map<string, number>();
    for (const s of this.touched) if (lens[s]! > 0) out.set(this.bySlot[s]!, lens[s]!);
    return out;
  }

  /**
   * Records that `replicaId` now holds (has just been sent) the prefix `hashes`. `extraBlocks`:
   * further blocks the request takes in the replica's cache beyond the prompt's whole blocks
   * (its last, partial block and its output, for an index over the engine's blocks): they age
   * the replica's entries as the engine's allocation evicts its cached blocks.
   */
  record(replicaId: string, hashes: ArrayLike<number>, extraBlocks = 0): void {
    const r = this.replica(replicaId).slot;
    const n = Math.min(hashes.length, this.maxPromptBlocks);
    if (n === 0) return;
    const m = this.cpBelow[n]!;
    const cps = this.cps;
    const t = this.table;
    const { clock, caps } = this;
    // One read of each checkpoint's set first: independent loads, so their cache misses (the
    // table is megabytes, the sets random) overlap instead of stalling the scans below one by one
    // (a decision 6–8 % faster at p50 at 32k tokens, `bench/routing-decision.mjs --baseline`).
    let touch = 0;
    for (let k = 0; k < m; k++) touch ^= t[((hashes[cps[k]!]! & this.setMask) * WAYS * F) | 1]!;
    this.prefetched = touch;
    const km = this.held(hashes, r, m);
    const matched = km === m ? n : km > 0 ? cps[km - 1]! + 1 : 0;
    const clock0 = clock[r]!;
    const fresh = n - matched;
    const ticks = fresh + Math.max(0, Math.floor(extraBlocks));
    const now = (clock0 + ticks) | 0;
    // The held checkpoints are refreshed (the newest stamp)...
    for (let k = 0; k < km; k++) {
      const w = this.find(hashes[cps[k]!]! | 0, r);
      if (w >= 0) t[w + 2] = now;
    }
    // ...the new ones stamped as if the blocks were cached tail first: block i gets
    // clock0 + (n − i), so a prefix's parents are never older than its children.
    for (let k = km; k < m; k++) {
      const i = cps[k]!;
      const h = hashes[i]! | 0;
      const base = (h & this.setMask) * WAYS * F;
      const end = base + WAYS * F;
      let victim = -1;
      let victimAge = -1;
      for (let w = base; w < end; w += F) {
        const o = t[w + 1]!;
        let age: number;
        if (o === 0) {
          victim = w;
          break;
        }
        if (o === r) {
          if (t[w] === h) {
            victim = w;
            break;
          }
          // Entries this record stamped (refreshed or new) are kept.
          const ahead = (t[w + 2]! - clock0) >>> 0;
          if (ahead >= 1 && ahead <= ticks) continue;
          age = ((clock0 - t[w + 2]!) >>> 0) / Math.max(1, caps[r]!);
        } else {
          age = ((clock[o]! - t[w + 2]!) >>> 0) / Math.max(1, caps[o]!);
        }
        if (age > victimAge) {
          victimAge = age;
          victim = w;
        }
      }
      if (victim < 0) continue; // a set full of this record's own entries: skip the checkpoint
      t[victim] = h;
      t[victim + 1] = r;
      t[victim + 2] = (clock0 + (n - i)) | 0;
    }
    clock[r] = now;
  }

  /** Forgets a replica (it left the routing table). */
  remove(replicaId: string): void {
    const r = this.replicas.get(replicaId);
    if (!r) return;
    this.replicas.delete(replicaId);
    const s = r.slot;
    const t = this.table;
    for (let w = 1; w < t.length; w += F) if (t[w] === s) t[w] = 0;
    this.bySlot[s] = undefined;
    this.clock[s] = 0;
    this.caps[s] = 0;
    this.freeSlots.push(s);
    this.recap();
  }

  /** Keeps only the listed replicas. */
  retain(replicaIds: ReadonlySet<string>): void {
    for (const id of [...this.replicas.keys()]) if (!replicaIds.has(id)) this.remove(id);
  }

  /** Sizes for the memory check: replicas, live entries over all replicas, table slots and bytes. */
  stats(): { replicas: number; entries: number; slots: number; bytes: number } {
    let entries = 0;
    const { table: t, clock, caps } = this;
    for (let w = 0; w < t.length; w += F) {
      const o = t[w + 1]!;
      if (o !== 0 && (clock[o]! - t[w + 2]!) >>> 0 < caps[o]!) entries++;
    }
    return {
      replicas: this.replicas.size,
      entries,
      slots: this.slots,
      bytes: t.byteLength,
    };
  }

  capacity(replicaId: string): number {
    return this.replicas.get(replicaId)?.cap ?? 0;
  }

  private replica(replicaId: string): Replica {
    let r = this.replicas.get(replicaId);
    if (!r) {
      let slot = this.freeSlots.pop();
      if (slot === undefined) {
        slot = this.bySlot.length;
        this.bySlot.push(undefined);
      }
      this.bySlot[slot] = replicaId;
      if (slot >= this.clock.length) this.growReplicaArrays(slot + 1);
      r = { slot, cap: this.defaultEntries, cacheEntries: 0 };
      this.replicas.set(replicaId, r);
      this.recap();
    }
    return r;
  }

  private growReplicaArrays(min: number): void {
    const size = Math.max(min, this.clock.length * 2);
    const grow = (a: Int32Array) => {
      const b = new Int32Array(size);
      b.set(a);
      return b;
    };
    this.clock = grow(this.clock);
    this.caps = grow(this.caps);
    this.lens = grow(this.lens);
  }

  private recap(): void {
    const share = Math.max(1, Math.floor(this.globalMax / Math.max(1, this.replicas.size)));
    let total = 0;
    let reported = 0;
    for (const r of this.replicas.values()) {
      r.cap = Math.min(r.cacheEntries > 0 ? r.cacheEntries : this.defaultEntries, share);
      this.caps[r.slot] = r.cap;
      total += r.cap;
      reported += r.cacheEntries;
    }
    this.reportedEntries = reported;
    // Σ caps bounds the live blocks; checkpoints are at most that many entries (all of them for
    // prompts up to 16 blocks, ~6 % of a 32k-token prompt's).
    let slots = MIN_SLOTS;
    while (slots < total) slots *= 2;
    if (slots > this.slots) this.resize(slots);
  }

  /** Grows the table (on a routing-table change only), keeping the live entries. */
  private resize(slots: number): void {
    const old = this.table;
    const { clock, caps } = this;
    const t = new Int32Array(slots * F);
    this.table = t;
    this.slots = slots;
    this.setMask = slots / WAYS - 1;
    for (let w = 0; w < old.length; w += F) {
      const o = old[w + 1]!;
      if (o === 0 || (clock[o]! - old[w + 2]!) >>> 0 >= caps[o]!) continue;
      const h = old[w]!;
      const base = (h & this.setMask) * WAYS * F;
      for (let v = base; v < base + WAYS * F; v += F) {
        if (t[v + 1] === 0) {
          t[v] = h;
          t[v + 1] = o;
          t[v + 2] = old[w + 2]!;
          break;
        }
      }
    }
  }
}
