/**
 * Deterministic toy tokenizer for the simulated engine.
 *
 * It is not a real BPE tokenizer, but it has the two properties the simulator relies on:
 *
 * 1. Same text → same tokens. Text is split with the regex `\s?\w+|[^\w\s]|\s+` (a word or number
 *    with at most one leading whitespace character attached, a single punctuation/other character,
 *    or a run of whitespace), and each piece is mapped to a stable id: the FNV-1a 32-bit hash of its
 *    UTF-16 code units, modulo a vocabulary of 128 000.
 * 2. Shared prefixes → shared token prefixes. Splitting is left to right and a piece never spans a
 *    word boundary, so two texts that share a prefix share every token of that prefix except
 *    possibly the last one (e.g. "hel" vs "hello"). Appending a message to a chat, or text that
 *    starts at a word boundary, keeps all previous tokens: this is what prefix caching will key on.
 *
 * The tokenizer itself (split, ids, chat flattening) lives in src/core/tokens.ts, shared with the
 * gateway's precise prefix routing; it is re-exported here.
 *
 * Generated text comes from {@link generatedToken}: readable words, each with a leading space, picked
 * deterministically from a seed and the token index.
 */

export {
  chatPromptText,
  countTokens,
  fnv1a32,
  splitTokens,
  tokenId,
  tokenize,
  VOCAB_SIZE,
  type ChatMessageText,
} from '../core/tokens.js';

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

/** FNV-1a 32-bit hash over a sequence of token ids (used to derive default generation seeds). */
export function hashTokens(ids: readonly number[]): number {
  let h = FNV_OFFSET;
  for (const id of ids) {
    h ^= id & 0xff;
    h = Math.imul(h, FNV_PRIME);
    h ^= (id >>> 8) & 0xff;
    h = Math.imul(h, FNV_PRIME);
    h ^= (id >>> 16) & 0xff;
    h = Math.imul(h, FNV_PRIME);
  }
  return h >>> 0;
}

const WORDS = [
  'the',
  'model',
  'token',
  'stream',
  'a',
  'of',
  'and',
  'to',
  'in',
  'is',
  'that',
  'for',
  'it',
  'with',
  'as',
  'on',
  'data',
  'system',
  'request',
  'latency',
  'fast',
  'simple',
  'result',
  'value',
  'time',
  'cache',
  'batch',
  'queue',
  'memory',
  'compute',
  'layer',
  'answer',
  'question',
  'example',
  'light',
  'river',
  'stone',
  'cloud',
  'green',
  'quiet',
  'bright',
  'north',
  'signal',
  'number',
  'world',
  'small',
  'large',
  'first',
  'next',
  'final',
  'because',
  'which',
  'when',
  'then',
  'there',
  'every',
  'some',
  'more',
  'into',
  'over',
  'under',
  'between',
  'again',
  'now',
] as const;

/** 32-bit integer mix (murmur3 finalizer). */
function mix32(x: number): number {
  let h = x >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * The text of generated token `i` (0-based) for a generation seed: a word with a leading space,
 * so a stream reads as (nonsensical) text. Deterministic in `(seed, i)`.
 */
export function generatedToken(seed: number, i: number): string {
  const s = Number.isFinite(seed) ? Math.trunc(seed) % 0x1_0000_0000 : 0;
  const h = mix32(mix32(s >>> 0) ^ Math.imul(i + 1, 0x9e3779b1));
  return ' ' + (WORDS[h % WORDS.length] as string);
}
