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
//   conversation's earlier turns) walks the checkpoints (a Map lookup per 512 B) and tokenizes only
//   the text after the last one. The cache is bounded (`maxCheckpoints`; second-chance eviction:
//   a checkpoint read since it was last passed over survives one more round). Map keys are 30-bit
//   integers (V8 small integers: no allocation, fast hashing) mixed from (position, text hash); the
//   checkpoint keeps both and is used only when they match. A 32-bit text hash collision at the
//   same position would give wrong block hashes: a wrong routing hint (never a wrong answer),
//   about entries / 2^32 per lookup.
import { BlockHasher, type BlockHasherState } from '../../core/tokens.js';
import { BLOCK_BYTES } from './prefix-index.js';

/** Text blocks (of BLOCK_BYTES) between two checkpoints: 512 B of prompt text. */
export const CHECKPOINT_TEXT_BLOCKS = 4;

const ROLE_OPEN = 60; // '<'
const NON_TEXT = new Set(['[image_url]', '[input_audio]', '[file]', '[image]', '[audio]']);

function roleOf(part: string): string | undefined {
  if (part.length < 3 || part.length > 256 || part.charCodeAt(0) !== ROLE_OPEN) return undefined;
  if (!part.endsWith('>\n')) return undefined;
  const role = part.slice(1, -2);
  return role.includes('\n') ? undefined : role;
}

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
    const role = roleOf(prompt[i]!);
    if (role === undefined) return undefined;
    out.push(`<|${role}|>`);
    i++;
    for (;;) {
      if (i >= prompt.length) return undefined;
      const p = prompt[i]!;
      if (p === '\n' && (i + 1 === prompt.length || roleOf(prompt[i + 1]!) !== undefined)) {
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

/** A 30-bit Map key from (text blocks, text hash); the checkpoint keeps both to check a hit. */
function keyOf(k: number, hash: number): number {
  return (hash ^ Math.imul(k, 0x9e3779b1)) & 0x3fffffff;
}

interface Checkpoint {
  /** Text blocks before it, and the text's chained hash there. */
  k: number;
  hash: number;
  /** Read since it was last passed over for eviction. */
  ref: boolean;
  state: BlockHasherState;
  /** Index of the first block in hi/lo (the previous checkpoint's block count). */
  from: number;
  hi: Uint32Array;
  lo: Uint32Array;
}

export interface PromptHashCacheOptions {
  /** Checkpoints kept, each 512 B of prompt text and ~0.3 KiB of memory. Default 65536. */
  maxCheckpoints?: number;
}

/**
 * Produces one prompt's engine block hashes lazily (see the header); one instance is reused for
 * every decision (`begin` starts a prompt).
 */
export class PromptBlockHashes {
  private readonly maxCheckpoints: number;
  /** Per block size: key (text position, text hash) → checkpoint, in insertion order. */
  private readonly caches = new Map<number, Map<number, Checkpoint>>();
  private hasher: BlockHasher = new BlockHasher(16, 256);
  private cache: Map<number, Checkpoint> = new Map();
  private parts: readonly string[] = [];
  private textHashes: ArrayLike<number> = [];
  private partIdx = 0;
  private partStart = 0;
  private textLen = 0;
  /** Text blocks at the next checkpoint, and the block count at the last one. */
  private nextCp = CHECKPOINT_TEXT_BLOCKS;
  private cpBlocks = 0;
  /** Checkpoints read and written by the current prompt (receipt / tests). */
  reused = 0;
  saved = 0;

  constructor(o: PromptHashCacheOptions = {}) {
    this.maxCheckpoints = Math.max(1, o.maxCheckpoints ?? 65_536);
  }

  /**
   * Starts a prompt: the engine text in parts, the approximate index's block hashes of that same
   * text (checkpoint keys), the engine's block size.
   */
  begin(parts: readonly string[], textHashes: ArrayLike<number>, blockSize: number): void {
    if (this.hasher.blockSize !== blockSize) this.hasher = new BlockHasher(blockSize, 256);
    let cache = this.caches.get(blockSize);
    if (!cache) {
      cache = new Map();
      this.caches.set(blockSize, cache);
    }
    this.cache = cache;
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
    let last: Checkpoint | undefined;
    let k = CHECKPOINT_TEXT_BLOCKS;
    for (; k <= textHashes.length; k += CHECKPOINT_TEXT_BLOCKS) {
      const th = textHashes[k - 1]! | 0;
      const cp = cache.get(keyOf(k, th));
      if (!cp || cp.k !== k || cp.hash !== th) break;
      cp.ref = true;
      const m = cp.hi.length;
      if (m > 0) {
        // A loop: TypedArray#set costs more than copying the few blocks of one checkpoint.
        if (h.hi.length < cp.from + m) h.setBlock(cp.from + m - 1, 0, 0);
        const dh = h.hi;
        const dl = h.lo;
        const sh = cp.hi;
        const sl = cp.lo;
        for (let j = 0; j < m; j++) {
          dh[cp.from + j] = sh[j]!;
          dl[cp.from + j] = sl[j]!;
        }
      }
      last = cp;
      this.reused++;
    }
    this.nextCp = k;
    if (last) h.restore(last.state);
    this.cpBlocks = h.blocks;
  }

  /** Block hashes ready now (without reading further). */
  get ready(): number {
    return this.hasher.blocks;
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

  /** Block hashes so far, high and low halves (re-read after `ensure`: they may grow). */
  get his(): Uint32Array {
    return this.hasher.hi;
  }

  get los(): Uint32Array {
    return this.hasher.lo;
  }

  /** Block hash i (uint32 halves); valid for i < the last `ensure`'s result. */
  hi(i: number): number {
    return this.hasher.hi[i]!;
  }

  lo(i: number): number {
    return this.hasher.lo[i]!;
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
    const th = this.textHashes[k - 1]! | 0;
    const key = keyOf(k, th);
    const cp: Checkpoint = {
      k,
      hash: th,
      ref: false,
      state: h.save(),
      from: this.cpBlocks,
      hi: h.hi.slice(this.cpBlocks, h.blocks),
      lo: h.lo.slice(this.cpBlocks, h.blocks),
    };
    this.cache.delete(key);
    this.cache.set(key, cp);
    this.saved++;
    const cache = this.cache;
    while (cache.size > this.maxCheckpoints) {
      const [oldKey, old] = cache.entries().next().value as [number, Checkpoint];
      cache.delete(oldKey);
      if (old.ref) {
        old.ref = false;
        cache.set(oldKey, old);
      }
    }
    this.cpBlocks = h.blocks;
    this.nextCp = k + CHECKPOINT_TEXT_BLOCKS;
  }
}
