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
 * Generated text comes from {@link generatedToken}: readable words, each with a leading space, picked
 * deterministically from a seed and the token index.
 */

/** Size of the simulated vocabulary; token ids are in `[0, VOCAB_SIZE)`. */
export const VOCAB_SIZE = 128_000;

const TOKEN_RE = /\s?\w+|[^\w\s]|\s+/gu;

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

/** FNV-1a 32-bit hash of a string's UTF-16 code units (unsigned). */
export function fnv1a32(s: string): number {
  let h = FNV_OFFSET;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, FNV_PRIME);
  }
  return h >>> 0;
}

/** Stable id of one token string. */
export function tokenId(piece: string): number {
  return fnv1a32(piece) % VOCAB_SIZE;
}

/** Splits text into token strings (concatenating them gives back the text). */
export function splitTokens(text: string): string[] {
  return text.match(TOKEN_RE) ?? [];
}

/** Tokenizes text into ids. */
export function tokenize(text: string): number[] {
  const pieces = splitTokens(text);
  const ids = new Array<number>(pieces.length);
  for (let i = 0; i < pieces.length; i++) ids[i] = tokenId(pieces[i] as string);
  return ids;
}

/** Number of tokens in text, without building the id array. */
export function countTokens(text: string): number {
  let n = 0;
  TOKEN_RE.lastIndex = 0;
  while (TOKEN_RE.exec(text) !== null) n++;
  TOKEN_RE.lastIndex = 0;
  return n;
}

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

export interface ChatMessageText {
  role: string;
  content: string;
}

/**
 * Flattens chat messages into one prompt string: `<|role|>content\n` per message, then (by default)
 * `<|assistant|>` as the generation prompt. Earlier messages produce the same prefix whatever follows.
 */
export function chatPromptText(
  messages: readonly ChatMessageText[],
  addGenerationPrompt = true,
): string {
  let out = '';
  for (const m of messages) out += `<|${m.role}|>${m.content}\n`;
  if (addGenerationPrompt) out += '<|assistant|>';
  return out;
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
