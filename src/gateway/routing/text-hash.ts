// Chained 32-bit hashes of a prompt's 128-byte UTF-8 blocks: the approximate prefix index's keys
// (./prefix-index.ts) and the precise source's checkpoint keys (./precise-prefix.ts).
//
// Definition (the JavaScript `digestAndChain` below is the reference):
//   digest(i) = a ^ rotl(c, 7) ^ rotl(d, 14) ^ rotl(e, 21), four lanes a, c, d, e that start at
//               fixed seeds and take the block's 32 little-endian words in turn:
//               lane = imul(lane ^ word, K[lane]); lane ^= lane >>> 15
// (The shift carries each step's high bits down: a product's bits depend only on the factors'
// bits below them, so without it, words differing only in their high bytes — text differing
// only at byte offsets 3 mod 4 — left differences confined to a lane's top bits, where two of
// them cancelled often: "00000832" and "00000836" repeated over a block gave the same digest.)
//   h(i)      = fmix32(h(i − 1) ^ digest(i)), h(−1) = 0x811c9dc5 (murmur3's finalizer)
// h(i) stands for the whole prefix up to block i, as the engines' own prefix-cache hashes do. A
// block's digest does not depend on its parent, so the digests are one pass with no dependency
// from block to block (the CPU overlaps blocks), then the chain is one fmix per block. The digest
// pass runs in a small WebAssembly kernel with 128-bit SIMD (the four lanes are one vector: one
// load, xor and multiply per 16 bytes) where the runtime has it (Node 20 does), else in JavaScript;
// both give the same values (test/unit/text-hash.test.ts). At 32k tokens (128 KiB of text) the
// hashing (after the UTF-8 encode) costs ~8–10 µs in the kernel, ~25–35 µs in JavaScript on the
// 2-core dev machine: the largest part of a routing decision's cost
// (bench/routing-decision.mjs).
//
// Text is UTF-8-encoded straight into the kernel's memory (native, no string slicing or
// concatenation; a long ASCII part copied as Latin-1); the digests are written after it and
// copied out. 32-bit hashes: a false match needs a collision at the exact chain position; the
// index is a routing hint, never a correctness claim.

import { isAscii } from 'node:buffer';

/** Bytes (UTF-8) per block: 128 ≈ 32 tokens of English text. */
export const BLOCK_BYTES = 128;

const H0 = 0x811c9dc5 | 0;
// The lanes' seeds and multipliers, and murmur3's fmix32 multipliers.
const SEED_A = 0x9e3779b9 | 0;
const SEED_C = 0x85ebca6b | 0;
const SEED_D = 0xc2b2ae35 | 0;
const SEED_E = 0x27d4eb2f | 0;
const MUL_AD = 0x01000193;
const MUL_CE = 0x5bd1e995;
const FMIX_1 = 0x85ebca6b | 0;
const FMIX_2 = 0xc2b2ae35 | 0;
const SEEDS = [SEED_A, SEED_C, SEED_D, SEED_E];
const MULS = [MUL_AD, MUL_CE, MUL_AD, MUL_CE];

// ---- the WebAssembly kernel --------------------------------------------------------------------
// One exported function and one memory:
//   (func (export "digest") (param $src i32) (param $n i32) (param $out i32)
//     ;; for each of n blocks at $src, $src + 128, …: out[b] = digest(block b)
//     (loop
//       acc = SEEDS                                     ;; v128.const
//       acc = i32x4.mul(v128.xor(acc, load(src + 16k)), MULS)   ;; k = 0..7, unrolled
//       acc = v128.xor(acc, i32x4.shr_u(acc, 15))
//       store(out, lane0 ^ rotl(lane1, 7) ^ rotl(lane2, 14) ^ rotl(lane3, 21))
//       src += 128; out += 4; br_if (out < end))
//     ;; then the chain over out[]: h = fmix32(h ^ out[b]); out[b] = h
//     (loop …))
// assembled below from opcodes (WebAssembly core spec §5.4; SIMD: 0xfd-prefixed).

const uleb = (n: number): number[] => {
  const o: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n !== 0) b |= 0x80;
    o.push(b);
  } while (n !== 0);
  return o;
};
const sleb = (v: number): number[] => {
  const o: number[] = [];
  let n = v | 0;
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (b & 0x40) === 0) || (n === -1 && (b & 0x40) !== 0)) {
      o.push(b);
      return o;
    }
    o.push(b | 0x80);
  }
};
const vec = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()];
const name = (s: string): number[] => vec([...s].map((c) => [c.charCodeAt(0)]));
const section = (id: number, bytes: number[]): number[] => [id, ...uleb(bytes.length), ...bytes];

const T_I32 = 0x7f;
const T_V128 = 0x7b;
const op = {
  loop: 0x03,
  if: 0x04,
  end: 0x0b,
  brIf: 0x0d,
  return: 0x0f,
  get: 0x20,
  set: 0x21,
  tee: 0x22,
  load: 0x28,
  store: 0x36,
  const: 0x41,
  eqz: 0x45,
  ltU: 0x49,
  add: 0x6a,
  mul: 0x6c,
  shl: 0x74,
  xor: 0x73,
  shrU: 0x76,
  rotl: 0x77,
  void: 0x40,
} as const;
const simd = (code: number): number[] => [0xfd, ...uleb(code)];
const V128_LOAD = 0x00;
const V128_CONST = 0x0c;
const I32X4_EXTRACT = 0x1b;
const V128_XOR = 0x51;
const I32X4_MUL = 0xb5;
const I32X4_SHR_U = 0xad;
const v128 = (lanes: readonly number[]): number[] => [
  ...simd(V128_CONST),
  ...lanes.flatMap((x) => [x & 255, (x >>> 8) & 255, (x >>> 16) & 255, (x >>> 24) & 255]),
];

function assemble(): Uint8Array {
  // Params 0 src, 1 n, 2 out; locals 3 h, 4 p (output cursor), 5 end, 6 acc (v128).
  const [SRC, N, OUT, H, P, END, ACC] = [0, 1, 2, 3, 4, 5, 6];
  const c: number[] = [];
  const e = (...x: (number | number[])[]): void => {
    for (const v of x) {
      if (typeof v === 'number') c.push(v);
      else c.push(...v);
    }
  };
  const get = (i: number): number[] => [op.get, i];
  const set = (i: number): number[] => [op.set, i];
  const i32 = (v: number): number[] => [op.const, ...sleb(v)];
  // if (n == 0) return
  e(get(N), op.eqz, op.if, op.void, op.return, op.end);
  // p = out; end = out + 4n
  e(get(OUT), set(P), get(OUT), get(N), i32(2), op.shl, op.add, set(END));
  // Pass 1: the digests.
  e(op.loop, op.void);
  e(v128(SEEDS), set(ACC));
  for (let k = 0; k < BLOCK_BYTES / 16; k++) {
    // memarg: align 2^4, offset 16k
    e(get(ACC), get(SRC), simd(V128_LOAD), 4, uleb(16 * k), simd(V128_XOR));
    e(v128(MULS), simd(I32X4_MUL), op.tee, ACC);
    e(get(ACC), i32(15), simd(I32X4_SHR_U), simd(V128_XOR), set(ACC));
  }
  e(get(P));
  e(get(ACC), simd(I32X4_EXTRACT), 0);
  e(get(ACC), simd(I32X4_EXTRACT), 1, i32(7), op.rotl, op.xor);
  e(get(ACC), simd(I32X4_EXTRACT), 2, i32(14), op.rotl, op.xor);
  e(get(ACC), simd(I32X4_EXTRACT), 3, i32(21), op.rotl, op.xor);
  e(op.store, 2, 0);
  e(get(SRC), i32(BLOCK_BYTES), op.add, set(SRC));
  e(get(P), i32(4), op.add, op.tee, P, get(END), op.ltU, op.brIf, 0);
  e(op.end);
  // Pass 2: the chain.
  e(i32(H0), set(H), get(OUT), set(P));
  e(op.loop, op.void);
  e(get(H), get(P), op.load, 2, 0, op.xor, set(H));
  e(get(H), get(H), i32(16), op.shrU, op.xor, i32(FMIX_1), op.mul, set(H));
  e(get(H), get(H), i32(13), op.shrU, op.xor, i32(FMIX_2), op.mul, set(H));
  e(get(H), get(H), i32(16), op.shrU, op.xor, set(H));
  e(get(P), get(H), op.store, 2, 0);
  e(get(P), i32(4), op.add, op.tee, P, get(END), op.ltU, op.brIf, 0);
  e(op.end);
  e(op.end);
  const body = [
    ...vec([
      [...uleb(3), T_I32],
      [...uleb(1), T_V128],
    ]),
    ...c,
  ];
  return new Uint8Array([
    ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00], // \0asm, version 1
    ...section(1, vec([[0x60, ...vec([[T_I32], [T_I32], [T_I32]]), ...vec([])]])), // type
    ...section(3, vec([[0]])), // function 0 has type 0
    ...section(5, vec([[0x00, ...uleb(2)]])), // memory: 2 pages, no maximum
    ...section(
      7,
      vec([
        [...name('memory'), 0x02, 0],
        [...name('digest'), 0x00, 0],
      ]),
    ), // exports
    ...section(10, vec([[...uleb(body.length), ...body]])), // code
  ]);
}

// The part of the WebAssembly API used here (this project's TypeScript libs do not declare it).
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object) => { exports: Record<string, unknown> };
}
interface Kernel {
  memory: { readonly buffer: ArrayBuffer; grow(pages: number): number };
  digest: (src: number, n: number, out: number) => void;
}

function loadKernel(): Kernel | undefined {
  const wasm = (globalThis as { WebAssembly?: WasmApi }).WebAssembly;
  if (!wasm) return undefined;
  try {
    const ex = new wasm.Instance(new wasm.Module(assemble())).exports as unknown as Kernel;
    return { memory: ex.memory, digest: ex.digest };
  } catch {
    return undefined; // no SIMD (or no WebAssembly compiler, e.g. --jitless): JavaScript
  }
}

const kernel = loadKernel();

/** Which implementation hashes here ('js' where WebAssembly SIMD is unavailable). */
export const textHashKernel: 'wasm-simd' | 'js' = kernel ? 'wasm-simd' : 'js';

// The scratch: UTF-8 text from offset 0, the digests after it. In the kernel's memory when there
// is one (grown, never shrunk: at most maxBlocks × 128 B + 1/32 of it), else a plain buffer.
let bytes: Buffer;
let words: Int32Array;
let u32: Uint32Array;
function views(buf: ArrayBuffer, length: number): void {
  bytes = Buffer.from(buf, 0, length);
  words = new Int32Array(buf, 0, length >>> 2);
  u32 = new Uint32Array(buf, 0, length >>> 2);
}
if (kernel) views(kernel.memory.buffer, kernel.memory.buffer.byteLength);
else {
  const b = Buffer.allocUnsafeSlow(1 << 17);
  views(b.buffer, b.length);
}

/** Room for `text` bytes of text plus their digests (and alignment). */
function ensure(text: number): void {
  const need = text + (text >>> 5) + 64;
  if (bytes.length >= need) return;
  const size = Math.max(need, bytes.length * 2);
  if (kernel) {
    kernel.memory.grow(Math.ceil((size - kernel.memory.buffer.byteLength) / 65536));
    views(kernel.memory.buffer, kernel.memory.buffer.byteLength);
  } else {
    const b = Buffer.allocUnsafeSlow(size);
    views(b.buffer, b.length);
  }
}

/** The reference: the hashes of n blocks of `words` into `out` (each block's digest, chained). */
function digestAndChain(words: Int32Array, n: number, out: Uint32Array): void {
  let h = H0;
  let p = 0;
  for (let b = 0; b < n; b++) {
    let a = SEED_A;
    let c = SEED_C;
    let d = SEED_D;
    let e = SEED_E;
    const end = p + (BLOCK_BYTES >>> 2);
    for (; p < end; p += 4) {
      a = Math.imul(a ^ words[p]!, MUL_AD);
      c = Math.imul(c ^ words[p + 1]!, MUL_CE);
      d = Math.imul(d ^ words[p + 2]!, MUL_AD);
      e = Math.imul(e ^ words[p + 3]!, MUL_CE);
      a ^= a >>> 15;
      c ^= c >>> 15;
      d ^= d >>> 15;
      e ^= e >>> 15;
    }
    h ^= a ^ ((c << 7) | (c >>> 25)) ^ ((d << 14) | (d >>> 18)) ^ ((e << 21) | (e >>> 11));
    h ^= h >>> 16; // fmix32
    h = Math.imul(h, FMIX_1);
    h ^= h >>> 13;
    h = Math.imul(h, FMIX_2);
    h ^= h >>> 16;
    out[b] = h;
  }
}

const NO_BLOCKS = new Uint32Array(0);

/**
 * Prompts of at most this many UTF-16 units are encoded here, in JavaScript: a Buffer.write call
 * costs ~1,000 instructions before its first byte (callgrind; the call into C++ and back), once
 * per part — a short chat prompt is four or more parts, most of a few bytes. (At ~200 units the
 * two ways take the same time.)
 */
const SHORT_TEXT = 192;

/**
 * Writes `parts` as UTF-8 into `out` from 0, each part as Buffer.write would write it alone (a
 * surrogate pair is one 4-byte character; an unpaired surrogate, also one split across two
 * parts, is U+FFFD); returns the bytes written. `out` has room for 3 bytes per unit.
 */
function writeShortUtf8(parts: readonly string[], out: Uint8Array): number {
  let o = 0;
  for (let k = 0; k < parts.length; k++) {
    const p = parts[k]!;
    const n = p.length;
    for (let i = 0; i < n; i++) {
      let c = p.charCodeAt(i);
      if (c < 0x80) {
        out[o++] = c;
        continue;
      }
      if (c < 0x800) {
        out[o++] = 0xc0 | (c >> 6);
        out[o++] = 0x80 | (c & 0x3f);
        continue;
      }
      if (c >= 0xd800 && c <= 0xdfff) {
        const next = i + 1 < n ? p.charCodeAt(i + 1) : 0;
        if (c <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
          c = 0x10000 + ((c - 0xd800) << 10) + (next - 0xdc00);
          i++;
          out[o++] = 0xf0 | (c >> 18);
          out[o++] = 0x80 | ((c >> 12) & 0x3f);
          out[o++] = 0x80 | ((c >> 6) & 0x3f);
          out[o++] = 0x80 | (c & 0x3f);
          continue;
        }
        c = 0xfffd; // unpaired
      }
      out[o++] = 0xe0 | (c >> 12);
      out[o++] = 0x80 | ((c >> 6) & 0x3f);
      out[o++] = 0x80 | (c & 0x3f);
    }
  }
  return o;
}

/** A character whose Latin-1 byte is not its code (above U+00FF). */
// eslint-disable-next-line no-control-regex -- a class from U+0000: every Latin-1 character
const WIDE_CHAR = /[^\x00-\xff]/;

/**
 * Chained hashes of the whole BLOCK_BYTES blocks of `text` (at most `maxBlocks`; the tail after
 * them is ignored). `text` may be given in parts (e.g. chat messages): they are encoded one after
 * the other, which hashes the same as their concatenation without building (and flattening) the
 * concatenated string. `js`: use the JavaScript reference even where the kernel is loaded (tests).
 */
export function blockHashes(
  text: string | readonly string[],
  maxBlocks = 8192,
  js = false,
): Uint32Array {
  const parts = typeof text === 'string' ? [text] : text;
  // + 3: a multi-byte character across the last block's end still fills that block.
  const limit = maxBlocks * BLOCK_BYTES + 3;
  let chars = 0;
  for (const p of parts) chars += p.length;
  ensure(Math.min(chars * 3, limit)); // ≤ 3 UTF-8 bytes per UTF-16 unit: never cut below the limit
  const cap = Math.min(bytes.length, limit);
  let len = 0;
  if (chars <= SHORT_TEXT && chars * 3 <= cap) len = writeShortUtf8(parts, bytes);
  else {
    for (const p of parts) {
      if (len >= cap) break;
      // A long ASCII part is copied as Latin-1 (its UTF-8 bytes: ~1.5 µs for 128 KiB here, the
      // UTF-8 encoder ~17 µs). ASCII: the Latin-1 bytes are (isAscii: one SIMD pass) and no
      // character is above U+00FF (whose Latin-1 byte is only its low byte) — a test V8 answers
      // without reading the string when the string is stored one byte per character, as text
      // without such characters is. (Buffer.byteLength, the check before, is that fast only from
      // optimized code whose caller V8 inlined it into: ~18 µs at 128 KiB otherwise, as measured
      // inside the gateway's decision.)
      let wrote = 0;
      let ascii = false;
      if (p.length >= 1024) {
        wrote = bytes.write(p, len, cap - len, 'latin1');
        ascii = isAscii(bytes.subarray(len, len + wrote)) && !WIDE_CHAR.test(p);
      }
      if (!ascii) wrote = bytes.write(p, len, cap - len, 'utf8');
      len += wrote;
      // A part cut short (the limit is reached) ends the prompt. Below the limit, only a character
      // that did not fit (≤ 4 bytes) cuts a UTF-8 part short, so its byte length (a pass over a
      // possibly long string) is counted only that close to it.
      if (!ascii && len < cap && cap - len < 4 && wrote < Buffer.byteLength(p)) break;
    }
  }
  const n = Math.min(Math.floor(len / BLOCK_BYTES), maxBlocks);
  if (n === 0) return NO_BLOCKS;
  if (kernel && !js) {
    const out = (len + 15) & ~15;
    kernel.digest(0, n, out);
    return u32.slice(out >>> 2, (out >>> 2) + n);
  }
  const out = new Uint32Array(n);
  digestAndChain(words, n, out);
  return out;
}
