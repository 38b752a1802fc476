// The engine's block hashes of a prompt, at the router, cheaply enough for the hot path.
//
// The prompt the engine sees: a completion's prompt as is; a chat's messages flattened by
// `chatPromptText` (`<|role|>content\n` per message, then `<|assistant|>`). The gateway hands the
// picker the prompt in parts (src/gateway/body.ts `promptParts`: per message `<role>\n`, the
// content's text parts, `\n`); `enginePromptParts` maps those parts back to the engine's text, in
// parts (no concatenated copy).
//
// Tokenizing and hashing a 32k-token prompt costs milliseconds in JavaScript (measured ~2 ms on the
// 2-core dev machine), far over the 200 µs decision budget. Two things keep a decision cheap:
// - Lazy: block hashes are produced only as far as the matcher asks (it stops at the first block
//   no live replica holds), so an unknown prompt costs one block.
// - Checkpoints: every CHECKPOINT_TEXT_BLOCKS × 128 bytes (512 B) of the engine text, the tokenizer's state
//   and the block hashes produced since the previous checkpoint are cached, keyed by (position,
//   chained hash of the text so far) — the approximate index's 128-byte block hashes of the same
//   text, which the pipeline computes anyway. A prompt sharing a cached prefix (a system prompt, a
//   conversation's earlier turns) walks the checkpoints (per 512 B, one slot read through the
//   previous checkpoint's successor hint, or an index read where the hint fails) and tokenizes only
//   the text after the last one. The cache is bounded (`maxCheckpoints`; second-chance eviction:
//   a checkpoint read since it was last passed over survives one more round). Keys are 30-bit
//   integers mixed from (position, text hash) in a typed-array index (`CheckpointStore`: a slot
//   or an index entry read per checkpoint walked, no object touched, the blocks left in place);
//   the checkpoint keeps both and is used only when they match. The checkpoints themselves are
//   flat records in pooled typed arrays, not objects: a full cache adds nothing for the garbage
//   collector to trace or copy, and a decision that saves checkpoints allocates nothing. A 32-bit
//   text hash collision at the same position would give wrong block hashes: a wrong routing hint
//   (never a wrong answer), about entries / 2^32 per lookup.
import { BlockHasher, HASHER_STATE_WORDS } from '../../core/tokens.js';
import { BLOCK_BYTES } from './prefix-index.js';

/** Text blocks (of BLOCK_BYTES) between two checkpoints: 512 B of prompt text. */
export const CHECKPOINT_TEXT_BLOCKS = 4;

const ROLE_OPEN = 60; // '<'
const NON_TEXT = new Set(['[image_url]', '[input_audio]', '[file]', '[image]', '[audio]']);

/** The engine's role marker (`<|role|>`) of a gateway role part (`<role>\n`), or undefined. */
function engineRoleOf(part: string): string | undefined {
  if (part.length < 3 || part.length > 256 || part.charCodeAt(0) !== ROLE_OPEN) return undefined;
  let marker = ENGINE_ROLES.get(part);
  if (marker !== undefined) return marker;
  if (!part.endsWith('>\n')) return undefined;
  const role = part.slice(1, -2);
  if (role.includes('\n')) return undefined;
  marker = `<|${role}|>`;
  if (ENGINE_ROLES.size < 64) ENGINE_ROLES.set(part, marker);
  return marker;
}
/** Role parts seen → their engine markers (at most 64, of at most 256 characters). */
const ENGINE_ROLES = new Map<string, string>();

/**
 * The engine's prompt text, in parts, from the gateway's prompt parts (see the header): a single
 * part is a completion prompt; several are chat messages. Undefined when the parts are not in
 * the gateway's chat shape (then the precise source is not used for the request).
 */
export function enginePromptParts(prompt: string | readonly string[]): string[] | undefined {
  if (typeof prompt === 'string') return [prompt];
  if (prompt.length <= 1) return [...prompt];
  const out: string[] = [];
  let i = 0;
  while (i < prompt.length) {
    const marker = engineRoleOf(prompt[i]!);
    if (marker === undefined) return undefined;
    out.push(marker);
    i++;
    for (;;) {
      if (i >= prompt.length) return undefined;
      const p = prompt[i]!;
      if (p === '\n' && (i + 1 === prompt.length || engineRoleOf(prompt[i + 1]!) !== undefined)) {
        out.push('\n');
        i++;
        break;
      }
      // Non-text content parts (the gateway writes `[type]`) are not in the engine's text.
      if (!NON_TEXT.has(p)) out.push(p);
      i++;
    }
  }
  out.push('<|assistant|>');
  return out;
}

/** A 30-bit key from (text blocks, text hash); the checkpoint keeps both to check a hit. */
function keyOf(k: number, hash: number): number {
  return (hash ^ Math.imul(k, 0x9e3779b1)) & 0x3fffffff;
}

// A checkpoint's record (uint32 words): the first block of its hashes (`R_FROM`), their count
// (`R_BLOCKS`), then the hasher's position (`BlockHasher#saveTo`: HASHER_STATE_WORDS plus the
// partial block's ids, at R_STATE), then the hashes' high halves, then their low halves.
const R_FROM = 0;
const R_BLOCKS = 1;
const R_STATE = 2;
/** Where a record's hashes start: after its hasher state (`nPartial` at R_STATE + 5). */
function hashesAt(buf: Uint32Array, at: number): number {
  return at + R_STATE + HASHER_STATE_WORDS + buf[at + R_STATE + 5]!;
}

/**
 * Records live in per-size-class pools: class c holds records of up to 2^(c + MIN_CLASS_BITS)
 * words, in chunks of CHUNK_WORDS (never copied when a pool grows: a chunk is added), with a
 * free list per class. A record is at (class, offset): the chunk is offset >>> CHUNK_BITS.
 */
const MIN_CLASS_BITS = 4;
const CHUNK_BITS = 16;
const CHUNK_WORDS = 1 << CHUNK_BITS;
const CHUNK_MASK = CHUNK_WORDS - 1;
/** Largest record kept (words); a larger checkpoint (block size in the thousands) is not cached. */
const MAX_RECORD_WORDS = CHUNK_WORDS;
/** Words in a record of size class c. */
const classWords = (c: number): number => 1 << (c + MIN_CLASS_BITS);

/** Size class of a record of `words` words. */
function classOf(words: number): number {
  return Math.max(0, 32 - Math.clz32(words - 1) - MIN_CLASS_BITS);
}

class RecordPool {
  /** Per class: its chunks, its words handed out (bump), its freed offsets. */
  private readonly chunks: Uint32Array[][] = [];
  private readonly used: number[] = [];
  private readonly free: number[][] = [];
  /** Words in chunks (all classes), for stats. */
  words = 0;

  /** Offset of a new record of class c (uninitialized). */
  alloc(c: number): number {
    while (this.chunks.length <= c) {
      this.chunks.push([]);
      this.used.push(0);
      this.free.push([]);
    }
    const f = this.free[c]!.pop();
    if (f !== undefined) return f;
    const off = this.used[c]!;
    const list = this.chunks[c]!;
    if (off >>> CHUNK_BITS >= list.length) {
      list.push(new Uint32Array(CHUNK_WORDS));
      this.words += CHUNK_WORDS;
    }
    this.used[c] = off + classWords(c);
    return off;
  }

  release(c: number, off: number): void {
    this.free[c]!.push(off);
  }

  chunk(c: number, off: number): Uint32Array {
    return this.chunks[c]![off >>> CHUNK_BITS]!;
  }
}

/** Per save, entries passed over (a second chance) and removed at most (see `evict`). */
const EVICT_PASSES = 256;
const EVICT_REMOVALS = 16;
/** Entries reserved beyond the cap: the pending removals of a prompt, a shrinking cap's excess. */
const RESERVE_EXTRA = 4096;

/** Int32 fields per index entry: key + 1 (0: empty), text hash, data slot. */
const E = 3;

/**
 * Int32 fields per data slot, together (a walk reads a slot's fields with one cache line): its
 * index key (−1 once removed), text hash, first block, successor hint (see `follow`), read flag,
 * record class and offset.
 */
const SW = 8;
const S_KEY = 0;
const S_HASH = 1;
const S_FROM = 2;
const S_SUCC = 3;
const S_REF = 4;
const S_CLASS = 5;
const S_OFF = 6;

/**
 * The checkpoints of one block size: at most `max` of them and `maxWords` words of records
 * (their size classes'), evicted in insertion order with a second chance (an entry read since it
 * was last passed over moves to the back once): the policy of a Map in insertion order, in typed
 * arrays. The index (open addressing, linear probing, backward-shift deletion) is keyed by the
 * 30-bit `keyOf` and holds per entry its key, text hash and data slot (k is implied by the key
 * and the hash); checkpoints whose keys collide each keep their entry (one is matched on its (k,
 * text hash); saving one already cached replaces it). A data slot holds the checkpoint's key,
 * hash, first block, read flag, record place and a successor hint: the slot of the checkpoint
 * that last came after it in a prompt. A prompt's walk reads its first checkpoint through the
 * index and each next one through the hint where it holds, so that walking a prompt seen before
 * reads its slots' fields — saved one after another, mostly in consecutive slots — instead of an
 * index entry per checkpoint at a random place (256 cache misses for a 32k-token prompt: p50 20
 * µs, p99 ~180 µs of a decision on the 2-core dev machine; 5 / 46 µs through the hints). The
 * order is a doubly-linked list over data slots; the record (hasher state, block hashes; flat,
 * in a `RecordPool`) is read only where a prompt resumes.
 */
class CheckpointStore {
  private tab = new Int32Array(E * 64);
  private mask = 63;
  /** Per data slot: its SW fields (S_KEY …); previous and next in insertion order (−1: none). */
  private sl = new Int32Array(SW * 32);
  private prev = new Int32Array(32);
  private next = new Int32Array(32);
  private slots = 0;
  private readonly freeSlots: number[] = [];
  private readonly pendingSlots: number[] = [];
  private readonly pool = new RecordPool();
  private head = -1;
  private tail = -1;
  size = 0;
  /** The first block of the checkpoint the last successful `read` or `follow` found. */
  readFrom = 0;
  /** Words of the live records (their size classes'). */
  liveWords = 0;
  /** Lookups through the index so far (`read`, and `follow` where the hint failed). */
  indexReads = 0;
  /** Checkpoints the index and slot arrays are sized for (see `reserve`). */
  private reserved = 0;

  constructor(
    /** Checkpoints kept at most (lowered: the next save evicts down to it). */
    public max: number,
    private readonly maxWords: number,
  ) {}

  /** Index entry position of the checkpoint (k, hash), or −1. */
  private find(k: number, hash: number): number {
    const t = this.tab;
    const mask = this.mask;
    const want = keyOf(k, hash) + 1;
    for (let p = (want - 1) & mask; ; p = (p + 1) & mask) {
      const o = E * p;
      const e = t[o]!;
      // Equal keys and hashes imply equal k: keyOf is a bijection of k < 2^30 for a given hash.
      if (e === want && t[o + 1] === hash) return p;
      if (e === 0) return -1;
    }
  }

  /** Index entry position of data slot s (its key `key`). */
  private entryOf(key: number, s: number): number {
    const t = this.tab;
    const mask = this.mask;
    const want = key + 1;
    for (let p = key & mask; ; p = (p + 1) & mask) {
      const o = E * p;
      if (t[o] === want && t[o + 2] === s) return p;
    }
  }

  /**
   * Data slot of the checkpoint (k, hash) if cached (and marks it read; its first block is then
   * in `readFrom`), else −1.
   */
  read(k: number, hash: number): number {
    this.indexReads++;
    const p = this.find(k, hash);
    if (p < 0) return -1;
    const s = this.tab[E * p + 2]!;
    const o = SW * s;
    this.sl[o + S_REF] = 1;
    this.readFrom = this.sl[o + S_FROM]!;
    return s;
  }

  /**
   * `read(k, hash)` for the checkpoint after slot s in a prompt: first through s's successor
   * hint — the checkpoint that last followed s in a prompt (saved after it, or found after it by
   * a walk) — checked against (k, hash), so that a walk along a prompt seen before reads the
   * slots' fields (in the order they were saved: mostly consecutive slots) instead of one index
   * entry per checkpoint at a random place; else through the index, and the hint is repaired.
   */
  follow(s: number, k: number, hash: number): number {
    const sl = this.sl;
    const n = sl[SW * s + S_SUCC]!;
    if (n >= 0) {
      const o = SW * n;
      if (sl[o + S_HASH] === hash && sl[o + S_KEY] === keyOf(k, hash)) {
        sl[o + S_REF] = 1;
        this.readFrom = sl[o + S_FROM]!;
        return n;
      }
    }
    const r = this.read(k, hash);
    if (r >= 0) sl[SW * s + S_SUCC] = r;
    return r;
  }

  /** Notes that checkpoint slot `b` followed slot `a` in a prompt (see `follow`). */
  setSuccessor(a: number, b: number): void {
    this.sl[SW * a + S_SUCC] = b;
  }

  /** The chunk holding the slot's record; the record is at `at(slot)` in it. */
  chunk(slot: number): Uint32Array {
    return this.pool.chunk(this.sl[SW * slot + S_CLASS]!, this.sl[SW * slot + S_OFF]!);
  }

  at(slot: number): number {
    return this.sl[SW * slot + S_OFF]! & CHUNK_MASK;
  }

  /** Pool memory (bytes, all records' chunks). */
  get poolBytes(): number {
    return this.pool.words * 4;
  }

  /**
   * Saves a checkpoint (replacing the entry under its key), then evicts down to `max`: the
   * hasher's position and its block hashes from `from` on. Its data slot, or −1 when the record
   * is too large.
   */
  save(k: number, hash: number, h: BlockHasher, from: number): number {
    const n = h.blocks - from;
    const words = R_STATE + h.stateWords + 2 * n;
    if (words > MAX_RECORD_WORDS || classWords(classOf(words)) > this.maxWords) return -1;
    if (this.reserved < this.max) this.reserve(this.max);
    const key = keyOf(k, hash);
    const old = this.find(k, hash);
    if (old >= 0) this.remove(old);
    // A new slot, at the back of the order.
    let s = this.freeSlots.pop();
    if (s === undefined) {
      s = this.slots++;
      if (s >= this.prev.length) this.growSlots();
    }
    const c = classOf(words);
    const off = this.pool.alloc(c);
    const buf = this.pool.chunk(c, off);
    const at = off & CHUNK_MASK;
    buf[at + R_FROM] = from;
    buf[at + R_BLOCKS] = n;
    h.saveTo(buf, at + R_STATE);
    const hi = h.hi;
    const lo = h.lo;
    const o = hashesAt(buf, at);
    for (let j = 0; j < n; j++) {
      buf[o + j] = hi[from + j]!;
      buf[o + n + j] = lo[from + j]!;
    }
    const sl = this.sl;
    const so = SW * s;
    sl[so + S_KEY] = key;
    sl[so + S_HASH] = hash;
    sl[so + S_FROM] = from;
    sl[so + S_SUCC] = -1;
    sl[so + S_REF] = 0;
    sl[so + S_CLASS] = c;
    sl[so + S_OFF] = off;
    this.liveWords += classWords(c);
    this.link(s);
    if ((this.size + 1) * 2 > this.mask + 1) this.resizeIndex(2 * (this.mask + 1));
    const t = this.tab;
    let p = key & this.mask;
    while (t[E * p] !== 0) p = (p + 1) & this.mask;
    t[E * p] = key + 1;
    t[E * p + 1] = hash;
    t[E * p + 2] = s;
    this.size++;
    this.evict();
    return s;
  }

  /**
   * Evicts down to the bounds, the oldest first, with a second chance for an entry read since it
   * was last passed over — but in one save at most EVICT_PASSES such entries are passed over
   * (then the oldest goes, read or not; a walk reads up to 256, one per 512 B of a 32k-token
   * prompt, so the passes keep up with the reads) and at most EVICT_REMOVALS removed. A cache whose entries
   * were all read since last passed over would otherwise be scanned whole by one decision, and a
   * bound just lowered (`fitFleet`, replicas gone) emptied down in one; it then settles over the
   * next saves (each adds one entry and removes up to EVICT_REMOVALS).
   */
  private evict(): void {
    const sl = this.sl;
    let passes = EVICT_PASSES;
    let removed = 0;
    while ((this.size > this.max || this.liveWords > this.maxWords) && removed < EVICT_REMOVALS) {
      const h = this.head;
      const o = SW * h;
      if (sl[o + S_REF] !== 0 && passes > 0) {
        passes--;
        sl[o + S_REF] = 0;
        this.unlink(h);
        this.link(h);
      } else {
        this.remove(this.entryOf(sl[o + S_KEY]!, h));
        removed++;
      }
    }
  }

  /**
   * Frees the data slots (and records) removed since the last call. Until then a removed
   * checkpoint's record stays as it was: a prompt that resumed through it reads its block hashes
   * after its own saves, whose evictions may remove it (a hot cache, every entry read since it was
   * last passed over, evicts in one round whatever was oldest: possibly one this prompt walked).
   */
  settle(): void {
    const pending = this.pendingSlots;
    // Freed in reverse, so that a prompt's next saves take them in their old order.
    for (let q = pending.length - 1; q >= 0; q--) {
      const s = pending[q]!;
      this.pool.release(this.sl[SW * s + S_CLASS]!, this.sl[SW * s + S_OFF]!);
      this.freeSlots.push(s);
    }
    pending.length = 0;
  }

  /** Removes the index entry at position p; its data slot is freed by the next `settle`. */
  private remove(p: number): void {
    const t = this.tab;
    const mask = this.mask;
    const s = t[E * p + 2]!;
    this.unlink(s);
    this.liveWords -= classWords(this.sl[SW * s + S_CLASS]!);
    // No longer a checkpoint (a successor hint to it fails); the record stays until `settle`.
    this.sl[SW * s + S_KEY] = -1;
    this.pendingSlots.push(s);
    let hole = p;
    for (let j = (p + 1) & mask; ; j = (j + 1) & mask) {
      const e = t[E * j]!;
      if (e === 0) break;
      const home = (e - 1) & mask;
      if (((j - home) & mask) >= ((j - hole) & mask)) {
        t.copyWithin(E * hole, E * j, E * j + E);
        hole = j;
      }
    }
    t.fill(0, E * hole, E * hole + E);
    this.size--;
  }

  private link(s: number): void {
    this.prev[s] = this.tail;
    this.next[s] = -1;
    if (this.tail >= 0) this.next[this.tail] = s;
    else this.head = s;
    this.tail = s;
  }

  private unlink(s: number): void {
    const a = this.prev[s]!;
    const b = this.next[s]!;
    if (a >= 0) this.next[a] = b;
    else this.head = b;
    if (b >= 0) this.prev[b] = a;
    else this.tail = a;
  }

  /**
   * Sizes the index and the slot arrays for `n` checkpoints (and some pending removals), so that
   * saves up to the cap do not double them: a doubling rehashes every entry, 47–61 ms at 131k
   * entries inside one decision (bench/routing-decision.mjs section 1e, before). Done at the
   * first save and when the cap rises (`fitFleet`: then once over the entries cached so far).
   * The arrays' pages are touched only as entries fill them.
   */
  private reserve(n: number): void {
    this.reserved = n;
    const room = n + RESERVE_EXTRA;
    let slots = this.mask + 1;
    while (slots < 2 * room) slots *= 2;
    if (slots > this.mask + 1) this.resizeIndex(slots);
    if (this.prev.length < room) this.growSlots(room);
  }

  private growSlots(min = this.prev.length * 2): void {
    const n = Math.max(min, this.prev.length * 2);
    const grow = (a: Int32Array<ArrayBuffer>, w: number): Int32Array<ArrayBuffer> => {
      const b = new Int32Array(n * w);
      b.set(a);
      return b;
    };
    this.sl = grow(this.sl, SW);
    this.prev = grow(this.prev, 1);
    this.next = grow(this.next, 1);
  }

  /** Rehashes the index into `slots` entries (a power of two). */
  private resizeIndex(slots: number): void {
    const old = this.tab;
    const mask = (this.mask = slots - 1);
    const t = new Int32Array(E * slots);
    this.tab = t;
    for (let o = 0; o < old.length; o += E) {
      const e = old[o]!;
      if (e === 0) continue;
      let p = (e - 1) & mask;
      while (t[E * p] !== 0) p = (p + 1) & mask;
      const q = E * p;
      t[q] = e;
      t[q + 1] = old[o + 1]!;
      t[q + 2] = old[o + 2]!;
    }
  }
}

export interface PromptHashCacheOptions {
  /**
   * Checkpoints kept at least (per engine block size), each 512 B of prompt text; `fitFleet`
   * raises the bound to cover the text the fleet's KV caches hold, up to `maxCheckpointsLimit`. A checkpoint's record (the tokenizer state and
   * the block hashes since the previous one) takes 128 or 256 B at block size 16 (its size class;
   * ~40 words for English text), plus 64–88 B of index and slot arrays (32 B of slot fields, 8
   * of order links, 24–48 of index at a load of ½–¼): 8.8 MiB of records at the
   * default 65536 in bench/routing-decision.mjs section 2b. No objects: nothing for the GC.
   */
  maxCheckpoints?: number;
  /** The most checkpoints `fitFleet` sets (per engine block size). Default 1,048,576 (~230 MiB). */
  maxCheckpointsLimit?: number;
  /**
   * Bytes of checkpoint records kept per engine block size (their size classes'), default 256
   * MiB: the bound that holds at small block sizes, where a checkpoint keeps one hash per token
   * (block size 1: up to 8 KiB per checkpoint, so ~32k checkpoints). The pools keep the chunks
   * they grew to (free lists per size class).
   */
  maxCheckpointBytes?: number;
}

/**
 * Produces one prompt's engine block hashes lazily (see the header); one instance is reused for
 * every decision (`begin` starts a prompt). The blocks before the last checkpoint a prompt resumes
 * from stay in the checkpoints (not copied): `hi(i)` / `lo(i)` find them there.
 */
export class PromptBlockHashes {
  private maxCheckpoints: number;
  private readonly minCheckpoints: number;
  private readonly checkpointsLimit: number;
  private readonly maxCheckpointWords: number;
  /** Per block size: the checkpoint store. */
  private readonly caches = new Map<number, CheckpointStore>();
  private hasher: BlockHasher = new BlockHasher(16, 256);
  private cache: CheckpointStore;
  private parts: readonly string[] = [];
  private textHashes: ArrayLike<number> = [];
  private partIdx = 0;
  private partStart = 0;
  private textLen = 0;
  /** Text blocks at the next checkpoint, and the block count at the last one. */
  private nextCp = CHECKPOINT_TEXT_BLOCKS;
  private cpBlocks = 0;
  /** Data slots of the checkpoints the current prompt resumed through, their first blocks. */
  private walk = new Int32Array(64);
  private walkFrom = new Int32Array(64);
  private walked = 0;
  /** Blocks restored from checkpoints (not in the hasher's arrays). */
  private restored = 0;
  /** Data slot of the prompt's last checkpoint so far (walked or saved), or −1. */
  private lastSlot = -1;
  /** Checkpoints read and written by the current prompt (receipt / tests). */
  reused = 0;
  saved = 0;
  /** Index lookups of the current prompt's walk (the others went through successor hints). */
  walkIndexReads = 0;

  constructor(o: PromptHashCacheOptions = {}) {
    this.maxCheckpoints = this.minCheckpoints = Math.max(1, o.maxCheckpoints ?? 65_536);
    this.checkpointsLimit = Math.max(this.minCheckpoints, o.maxCheckpointsLimit ?? 1 << 20);
    this.maxCheckpointWords = Math.max(1, Math.floor((o.maxCheckpointBytes ?? 256 * 2 ** 20) / 4));
    this.cache = this.storeOf(16);
  }

  private storeOf(blockSize: number): CheckpointStore {
    let c = this.caches.get(blockSize);
    if (!c) {
      c = new CheckpointStore(this.maxCheckpoints, this.maxCheckpointWords);
      this.caches.set(blockSize, c);
    }
    return c;
  }

  /**
   * Sizes the cache for the fleet: `bytes` of prompt text in the replicas' KV caches (their
   * reported size), a checkpoint per CHECKPOINT_TEXT_BLOCKS × BLOCK_BYTES of it — between
   * `maxCheckpoints` and `maxCheckpointsLimit`. A smaller cap than the cache's working set turns
   * the decisions for prompts that replicas still hold into full tokenizations (milliseconds at
   * 32k tokens), as its oldest checkpoints go first. The memory is taken only as prompts fill it.
   */
  fitFleet(bytes: number): void {
    const want = Math.ceil(bytes / (CHECKPOINT_TEXT_BLOCKS * BLOCK_BYTES));
    const max = Math.min(this.checkpointsLimit, Math.max(this.minCheckpoints, want));
    if (max === this.maxCheckpoints) return;
    this.maxCheckpoints = max;
    for (const c of this.caches.values()) c.max = max;
  }

  /** The current bound on checkpoints per engine block size (see `fitFleet`). */
  get checkpointCap(): number {
    return this.maxCheckpoints;
  }

  /**
   * Starts a prompt: the engine text in parts, the approximate index's block hashes of that same
   * text (checkpoint keys), the engine's block size.
   */
  begin(parts: readonly string[], textHashes: ArrayLike<number>, blockSize: number): void {
    if (this.hasher.blockSize !== blockSize) this.hasher = new BlockHasher(blockSize, 256);
    const cache = (this.cache = this.storeOf(blockSize));
    // The previous prompt's reads are over: the checkpoints its saves evicted can be reused.
    cache.settle();
    this.parts = parts;
    this.textHashes = textHashes;
    this.partIdx = 0;
    this.partStart = 0;
    let len = 0;
    for (const p of parts) len += p.length;
    this.textLen = len;
    this.reused = 0;
    this.saved = 0;
    const h = this.hasher;
    h.reset();
    // The cached checkpoints this text passes, from the first, while there is one: one index
    // entry read each, nothing copied.
    let j = 0;
    let k = CHECKPOINT_TEXT_BLOCKS;
    const max = textHashes.length;
    if (this.walk.length < (max >>> 2) + 1) {
      this.walk = new Int32Array((max >>> 2) + 64);
      this.walkFrom = new Int32Array((max >>> 2) + 64);
    }
    const walk = this.walk;
    // The first checkpoint through the index, the next ones through their predecessors'
    // successor hints where those hold (`CheckpointStore.follow`).
    const reads0 = cache.indexReads;
    let s = k <= max ? cache.read(k, textHashes[k - 1]! | 0) : -1;
    const walkFrom = this.walkFrom;
    if (s >= 0) {
      walkFrom[j] = cache.readFrom;
      walk[j++] = s;
      for (k += CHECKPOINT_TEXT_BLOCKS; k <= max; k += CHECKPOINT_TEXT_BLOCKS) {
        const n = cache.follow(s, k, textHashes[k - 1]! | 0);
        if (n < 0) break;
        walkFrom[j] = cache.readFrom;
        walk[j++] = s = n;
      }
    }
    this.lastSlot = s;
    this.walkIndexReads = cache.indexReads - reads0;
    this.nextCp = k;
    this.walked = j;
    this.reused = j;
    this.restored = 0;
    if (j > 0) {
      const last = walk[j - 1]!;
      h.restoreFrom(cache.chunk(last), cache.at(last) + R_STATE);
      this.restored = h.blocks;
    }
    this.cpBlocks = h.blocks;
  }

  /** Block hashes ready now (without reading further). */
  get ready(): number {
    return this.hasher.blocks;
  }

  /** Blocks resumed from checkpoints: block i < this is in a checkpoint, not in the hasher. */
  get resumed(): number {
    return this.restored;
  }

  /** Block hashes ready (≥ n unless the prompt has fewer full blocks). */
  ensure(n: number): number {
    const h = this.hasher;
    const parts = this.parts;
    while (h.blocks < n && !h.ended) {
      while (this.partIdx < parts.length && h.pos >= this.partStart + parts[this.partIdx]!.length) {
        this.partStart += parts[this.partIdx]!.length;
        this.partIdx++;
      }
      if (this.partIdx >= parts.length) {
        h.end();
        break;
      }
      const cp = this.nextCp <= this.textHashes.length ? this.nextCp * BLOCK_BYTES : Infinity;
      const done = h.run(parts[this.partIdx]!, n, cp, this.partStart);
      if (!done && h.blocks < n) this.checkpoint();
    }
    return h.blocks;
  }

  /** The data slot of the walked checkpoint holding resumed block i < `resumed`. */
  private holder(i: number): number {
    const from = this.walkFrom;
    let a = 0;
    let b = this.walked - 1;
    // The last walked checkpoint whose first block is ≤ i (ones without blocks are skipped).
    while (a < b) {
      const m = (a + b + 1) >>> 1;
      if (from[m]! <= i) a = m;
      else b = m - 1;
    }
    return this.walk[a]!;
  }

  /** Block hash i (uint32 halves); valid for i < the last `ensure`'s result. */
  hi(i: number): number {
    if (i >= this.restored) return this.hasher.hi[i]!;
    return this.resumedHash(i, 0);
  }

  lo(i: number): number {
    if (i >= this.restored) return this.hasher.lo[i]!;
    return this.resumedHash(i, 1);
  }

  /** Resumed block i's high (half 0) or low (half 1) hash, from its checkpoint's record. */
  private resumedHash(i: number, half: number): number {
    const cache = this.cache;
    const s = this.holder(i);
    const buf = cache.chunk(s);
    const at = cache.at(s);
    const n = buf[at + R_BLOCKS]!;
    const j = i - buf[at + R_FROM]!;
    return j < n ? buf[hashesAt(buf, at) + half * n + j]! : 0;
  }

  /**
   * Copies the resumed blocks (in the checkpoints) into the hasher's arrays, so that `his` /
   * `los` hold every block: for callers that read all of them in order.
   */
  materialize(): void {
    if (this.restored === 0) return;
    const h = this.hasher;
    const cache = this.cache;
    const dh = h.hi;
    const dl = h.lo;
    for (let q = 0; q < this.walked; q++) {
      const s = this.walk[q]!;
      const buf = cache.chunk(s);
      const at = cache.at(s);
      const from = buf[at + R_FROM]!;
      const n = buf[at + R_BLOCKS]!;
      const o = hashesAt(buf, at);
      // A loop: TypedArray#set costs more than copying the few blocks of one checkpoint.
      for (let j = 0; j < n; j++) {
        dh[from + j] = buf[o + j]!;
        dl[from + j] = buf[o + n + j]!;
      }
    }
    this.restored = 0;
  }

  /** Block hashes so far, high and low halves, when `resumed` is 0 (see `materialize`). */
  get his(): Uint32Array {
    return this.hasher.hi;
  }

  get los(): Uint32Array {
    return this.hasher.lo;
  }

  /** True when the whole prompt was read: `tokens` is then exact. */
  get ended(): boolean {
    return this.hasher.ended;
  }

  /** Prompt tokens: exact once ended, else extrapolated from the share of the text read. */
  get promptTokens(): number {
    const h = this.hasher;
    if (h.ended || h.pos === 0) return h.tokens;
    return Math.max(h.tokens, Math.round((h.tokens * this.textLen) / h.pos));
  }

  /** Checkpoints cached over all block sizes. */
  get checkpoints(): number {
    let n = 0;
    for (const c of this.caches.values()) n += c.size;
    return n;
  }

  /** The hasher stopped at the next checkpoint's byte offset: cache its state. */
  private checkpoint(): void {
    const h = this.hasher;
    const k = this.nextCp;
    const s = this.cache.save(k, this.textHashes[k - 1]! | 0, h, this.cpBlocks);
    if (s >= 0) {
      this.saved++;
      if (this.lastSlot >= 0) this.cache.setSuccessor(this.lastSlot, s);
    }
    this.lastSlot = s;
    this.cpBlocks = h.blocks;
    this.nextCp = k + CHECKPOINT_TEXT_BLOCKS;
  }

  /** Bytes of the checkpoint records' pools (all block sizes; the index and slots apart). */
  get checkpointBytes(): number {
    let n = 0;
    for (const c of this.caches.values()) n += c.poolBytes;
    return n;
  }

  /** Bytes of the live checkpoint records (all block sizes; each bounded by maxCheckpointBytes). */
  get liveCheckpointBytes(): number {
    let n = 0;
    for (const c of this.caches.values()) n += c.liveWords * 4;
    return n;
  }
}
