// The simulated engine's tokenizer and prefix-cache block hashes, as pure functions shared by the
// simulator (src/sim: the engine tokenizes and hashes with these) and the gateway (precise
// prefix-cache routing computes the same block hashes to match them against the engine's KV events).
// ONE copy: src/sim/tokenizer.ts and src/sim/kvcache.ts re-export from here.
//
// Tokenizer (a deterministic toy, not BPE): text is split with `\s?\w+|[^\w\s]|\s+` (u flag) — a
// word with at most one leading whitespace character, one other code point, or a whitespace run —
// and each piece maps to FNV-1a 32 of its UTF-16 code units, modulo VOCAB_SIZE.
//
// Block hashes (vLLM-style automatic prefix caching): a full block of `blockSize` token ids is
// hashed as FNV-1a 64 over the parent block's hash (8 bytes; none for the first block) followed by
// each token id as 4 little-endian bytes, written as 16 lower-case hex digits. The engine hashes
// floor(promptTokens / blockSize) full blocks of a prompt and looks up at most
// floor((promptTokens − 1) / blockSize) of them (the last token is always computed).
//
// `BlockHasher` is the same tokenizer and hash as one resumable left-to-right pass over a string
// (no regex, no piece strings, hashes as two uint32 halves): the router's hot path. Its state can
// be saved and restored at any code-point boundary, so a caller can skip text it has hashed
// before. Tests check it against `tokenize` + `blockHashes` (and the character classes against the
// regex for every UTF-16 code unit).

/**
 * Whether the gateway can tokenize and hash prompts exactly as the engine does: the engines that
 * use this file's tokenizer and block hash (the simulator).
 */
export function tokenizerKnown(engine: string): boolean {
  return engine === 'sim';
}

/** Size of the simulated vocabulary; token ids are in `[0, VOCAB_SIZE)`. */
export const VOCAB_SIZE = 128_000;

/** The split of the toy tokenizer. */
export const TOKEN_RE = /\s?\w+|[^\w\s]|\s+/gu;

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

// FNV-1a 64-bit, on two 32-bit halves (no BigInt): offset basis 0xcbf29ce484222325,
// prime 0x100000001b3 = 2^40 + 0x1b3.
const OFFSET_HI = 0xcbf29ce4;
const OFFSET_LO = 0x84222325;

/** Lower-case 16-hex-digit form of a 64-bit hash given as two uint32 halves. */
export function hashHex(hi: number, lo: number): string {
  return (hi >>> 0).toString(16).padStart(8, '0') + (lo >>> 0).toString(16).padStart(8, '0');
}

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
  return hashHex(hi, lo);
}

/** Chained hashes of the full blocks of `tokenIds` (at most `maxBlocks`): the engine's per-prompt hashes. */
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

/** Blocks the engine looks up for a prompt of `promptTokens` tokens (it always computes the last). */
export function lookupBlocks(promptTokens: number, blockSize: number): number {
  return promptTokens > 0 ? Math.floor((promptTokens - 1) / blockSize) : 0;
}

// ---------------------------------------------------------------------------------------------
// The one-pass tokenizer + block hasher.

// Classes: 0 other, 1 word, 2 space.
const C_WORD = 1;
const C_SPACE = 2;

/**
 * Character class of every UTF-16 code unit under the u-flag regex: `\w` is [A-Za-z0-9_] (no `i`
 * flag: ASCII only); `\s` is ECMAScript WhiteSpace and LineTerminator. Surrogates are OTHER
 * (astral code points are neither `\w` nor `\s`).
 */
export const CHAR_CLASS: Uint8Array = (() => {
  const t = new Uint8Array(65536);
  for (let c = 48; c <= 57; c++) t[c] = C_WORD;
  for (let c = 65; c <= 90; c++) t[c] = C_WORD;
  for (let c = 97; c <= 122; c++) t[c] = C_WORD;
  t[95] = C_WORD;
  const spaces = [
    0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x20, 0xa0, 0x1680, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000,
    0xfeff,
  ];
  for (const c of spaces) t[c] = C_SPACE;
  for (let c = 0x2000; c <= 0x200a; c++) t[c] = C_SPACE;
  return t;
})();

/** Piece in progress. */
const P_NONE = 0;
const P_WORD = 1;
const P_SPACE = 2;

/**
 * Words of a saved {@link BlockHasher} position before its partial block's token ids (see
 * `saveTo`): pos, bytes, piece, pieceHash, spaceRun, nPartial, tokens, blocks, chained hash hi, lo.
 */
export const HASHER_STATE_WORDS = 10;

/**
 * Tokenizes a string left to right and hashes its full blocks as the engine does (see the file
 * header); the block hashes are appended to `hi` / `lo` (uint32 halves, the hex form is
 * {@link hashHex}). Reads until the text ends, `maxBlocks` blocks are out, or (with `stopAtBytes`)
 * the next code point would cross that UTF-8 byte offset — so a caller can save the state exactly
 * at a byte boundary of the text (on a code-point boundary at or below it).
 */
export class BlockHasher {
  readonly blockSize: number;
  /** Full-block hashes so far (only the first `blocks` entries are valid). */
  hi: Uint32Array;
  lo: Uint32Array;
  pos = 0;
  bytes = 0;
  /** Tokens finalized so far (a piece in progress is not counted until it ends). */
  tokens = 0;
  blocks = 0;
  /** True once `end()` was called: `tokens` is the text's token count. */
  ended = false;
  private piece = P_NONE;
  private pieceHash = 0;
  private spaceRun = 0;
  private readonly partial: Int32Array;
  private nPartial = 0;
  private chi = 0;
  private clo = 0;

  constructor(blockSize: number, capacity = 64) {
    if (!(Number.isInteger(blockSize) && blockSize > 0))
      throw new RangeError('BlockHasher: blockSize must be a positive integer');
    this.blockSize = blockSize;
    this.partial = new Int32Array(blockSize);
    this.hi = new Uint32Array(Math.max(1, capacity));
    this.lo = new Uint32Array(Math.max(1, capacity));
  }

  /** Back to the start of a (new) text. */
  reset(): void {
    this.pos = 0;
    this.bytes = 0;
    this.tokens = 0;
    this.blocks = 0;
    this.ended = false;
    this.piece = P_NONE;
    this.pieceHash = 0;
    this.spaceRun = 0;
    this.nPartial = 0;
  }

  /** Words `saveTo` writes: {@link HASHER_STATE_WORDS} plus the partial block's token ids. */
  get stateWords(): number {
    return HASHER_STATE_WORDS + this.nPartial;
  }

  /**
   * Writes the current position (the block hashes so far are not part of it: see `blocks`) as
   * `stateWords` uint32 words at `buf[at]`: flat, so a cache of positions holds no objects.
   */
  saveTo(buf: Uint32Array, at: number): void {
    buf[at] = this.pos;
    buf[at + 1] = this.bytes;
    buf[at + 2] = this.piece;
    buf[at + 3] = this.pieceHash;
    buf[at + 4] = this.spaceRun;
    buf[at + 5] = this.nPartial;
    buf[at + 6] = this.tokens;
    buf[at + 7] = this.blocks;
    buf[at + 8] = this.chi;
    buf[at + 9] = this.clo;
    const p = this.partial;
    const o = at + HASHER_STATE_WORDS;
    for (let t = 0; t < this.nPartial; t++) buf[o + t] = p[t]!;
  }

  /**
   * Continues from a position `saveTo` wrote at `buf[at]`, of a text with the same content up to
   * that position; the caller has put that text's first `blocks` block hashes in `hi` / `lo` (see
   * {@link setBlock}) or reads them from where it keeps them.
   */
  restoreFrom(buf: Uint32Array, at: number): void {
    this.pos = buf[at]!;
    this.bytes = buf[at + 1]!;
    this.piece = buf[at + 2]!;
    this.pieceHash = buf[at + 3]! | 0;
    this.spaceRun = buf[at + 4]!;
    const n = buf[at + 5]!;
    this.nPartial = n;
    this.tokens = buf[at + 6]!;
    this.blocks = buf[at + 7]!;
    this.chi = buf[at + 8]!;
    this.clo = buf[at + 9]!;
    const p = this.partial;
    const o = at + HASHER_STATE_WORDS;
    for (let t = 0; t < n; t++) p[t] = buf[o + t]!;
    this.ended = false;
    this.ensureCapacity(this.blocks + 1);
  }

  /** Writes block hash `i` (restoring hashes saved elsewhere); grows the arrays. */
  setBlock(i: number, hi: number, lo: number): void {
    this.ensureCapacity(i + 1);
    this.hi[i] = hi;
    this.lo[i] = lo;
  }

  /**
   * Reads `text` from `pos` (see the class comment for where it stops). Returns true when the
   * whole text was read (then call `end()` to finish the last piece). A text given in parts is
   * read part by part, `base` being the part's offset in the whole (`pos` counts from the start of
   * the whole text).
   */
  run(text: string, maxBlocks = Infinity, stopAtBytes = Infinity, base = 0): boolean {
    const cls = CHAR_CLASS;
    const len = text.length;
    let i = this.pos - base;
    let bytes = this.bytes;
    let piece = this.piece;
    let h = this.pieceHash;
    let run = this.spaceRun;
    while (i < len) {
      if (this.blocks >= maxBlocks) break;
      const c = text.charCodeAt(i);
      let units = 1;
      let nb: number;
      if (c < 0x80) nb = 1;
      else if (c < 0x800) nb = 2;
      else if (c >= 0xd800 && c <= 0xdbff && i + 1 < len) {
        const d = text.charCodeAt(i + 1);
        if (d >= 0xdc00 && d <= 0xdfff) {
          units = 2;
          nb = 4;
        } else nb = 3;
      } else nb = 3;
      if (bytes + nb > stopAtBytes) break;
      const k = cls[c]!;
      if (k === C_WORD) {
        if (piece === P_WORD) h = Math.imul(h ^ c, FNV_PRIME);
        else if (piece === P_SPACE && run === 1) {
          piece = P_WORD;
          h = Math.imul(h ^ c, FNV_PRIME);
        } else {
          if (piece === P_SPACE) this.token(h);
          piece = P_WORD;
          h = Math.imul(FNV_OFFSET ^ c, FNV_PRIME);
        }
      } else if (k === C_SPACE) {
        if (piece === P_SPACE) {
          run++;
          h = Math.imul(h ^ c, FNV_PRIME);
        } else {
          if (piece === P_WORD) this.token(h);
          piece = P_SPACE;
          run = 1;
          h = Math.imul(FNV_OFFSET ^ c, FNV_PRIME);
        }
      } else {
        if (piece !== P_NONE) this.token(h);
        piece = P_NONE;
        let o = Math.imul(FNV_OFFSET ^ c, FNV_PRIME);
        if (units === 2) o = Math.imul(o ^ text.charCodeAt(i + 1), FNV_PRIME);
        this.token(o);
      }
      i += units;
      bytes += nb;
    }
    this.pos = base + i;
    this.bytes = bytes;
    this.piece = piece;
    this.pieceHash = h;
    this.spaceRun = run;
    return i >= len;
  }

  /** The text ended: the piece in progress is a token. */
  end(): void {
    if (this.ended) return;
    if (this.piece !== P_NONE) this.token(this.pieceHash);
    this.piece = P_NONE;
    this.ended = true;
  }

  private token(h: number): void {
    this.tokens++;
    this.partial[this.nPartial++] = (h >>> 0) % VOCAB_SIZE;
    if (this.nPartial === this.blockSize) this.block();
  }

  /** FNV-1a 64 of (parent hash, the partial block's ids). */
  private block(): void {
    // (hi, lo) ← ((hi, lo) ^ byte) × (2^40 + 0x1b3) mod 2^64, per byte; lo × 0x1b3 < 2^41, so its
    // high part (the carry into hi) is (lo × 0x1b3) / 2^32 truncated.
    let hi = OFFSET_HI;
    let lo = OFFSET_LO;
    let a: number;
    if (this.blocks > 0) {
      // The parent's bytes: hi's 4 (low byte first), then lo's 4.
      for (let w = 0; w < 2; w++) {
        const v = w === 0 ? this.chi : this.clo;
        for (let s = 0; s < 32; s += 8) {
          lo = (lo ^ ((v >>> s) & 0xff)) >>> 0;
          a = lo * 0x1b3;
          hi = (Math.imul(hi, 0x1b3) + ((a / 0x1_0000_0000) | 0) + (lo << 8)) | 0;
          lo = a >>> 0;
        }
      }
    }
    const p = this.partial;
    for (let t = 0; t < this.blockSize; t++) {
      const v = p[t]!;
      lo = (lo ^ (v & 0xff)) >>> 0;
      a = lo * 0x1b3;
      hi = (Math.imul(hi, 0x1b3) + ((a / 0x1_0000_0000) | 0) + (lo << 8)) | 0;
      lo = a >>> 0;
      lo = (lo ^ ((v >>> 8) & 0xff)) >>> 0;
      a = lo * 0x1b3;
      hi = (Math.imul(hi, 0x1b3) + ((a / 0x1_0000_0000) | 0) + (lo << 8)) | 0;
      lo = a >>> 0;
      lo = (lo ^ ((v >>> 16) & 0xff)) >>> 0;
      a = lo * 0x1b3;
      hi = (Math.imul(hi, 0x1b3) + ((a / 0x1_0000_0000) | 0) + (lo << 8)) | 0;
      lo = a >>> 0;
      lo = (lo ^ (v >>> 24)) >>> 0;
      a = lo * 0x1b3;
      hi = (Math.imul(hi, 0x1b3) + ((a / 0x1_0000_0000) | 0) + (lo << 8)) | 0;
      lo = a >>> 0;
    }
    hi >>>= 0;
    this.nPartial = 0;
    this.ensureCapacity(this.blocks + 1);
    this.hi[this.blocks] = hi;
    this.lo[this.blocks] = lo;
    this.blocks++;
    this.chi = hi;
    this.clo = lo;
  }

  private ensureCapacity(n: number): void {
    if (n <= this.hi.length) return;
    const size = Math.max(n, this.hi.length * 2);
    const hi = new Uint32Array(size);
    const lo = new Uint32Array(size);
    hi.set(this.hi);
    lo.set(this.lo);
    this.hi = hi;
    this.lo = lo;
  }
}
