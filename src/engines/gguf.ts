// GGUF (v3) writer and reader, and a random-weight model synthesizer for tests and benchmarks:
// `inferplane model synth` writes a llama-architecture model that llama.cpp loads and runs, with
// a SentencePiece-style vocabulary (byte fallback: any text tokenizes). The tensor data is
// streamed to the file from a reusable buffer filled by xorshift, so a 13 GB model never sits in
// memory. Spec: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
import { open, type FileHandle } from 'node:fs/promises';

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
export const GGUF_VERSION = 3;
export const GGUF_ALIGNMENT = 32;

/** GGUF metadata value types. */
export const GgufType = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;
export type GgufTypeId = (typeof GgufType)[keyof typeof GgufType];

/** ggml tensor types used here. */
export const GgmlType = { F32: 0, F16: 1 } as const;
export type GgmlTypeId = (typeof GgmlType)[keyof typeof GgmlType];
const GGML_TYPE_SIZE: Record<number, number> = { 0: 4, 1: 2 };

export type GgufScalar = number | bigint | boolean | string;
/** A metadata value with its explicit GGUF type (arrays hold one element type). */
export type GgufValue =
  | { type: Exclude<GgufTypeId, 9>; value: GgufScalar }
  | { type: 9; itemType: Exclude<GgufTypeId, 9>; value: readonly GgufScalar[] };

export const kv = {
  u32: (value: number): GgufValue => ({ type: GgufType.UINT32, value }),
  i32: (value: number): GgufValue => ({ type: GgufType.INT32, value }),
  f32: (value: number): GgufValue => ({ type: GgufType.FLOAT32, value }),
  bool: (value: boolean): GgufValue => ({ type: GgufType.BOOL, value }),
  str: (value: string): GgufValue => ({ type: GgufType.STRING, value }),
  strs: (value: readonly string[]): GgufValue => ({
    type: GgufType.ARRAY,
    itemType: GgufType.STRING,
    value,
  }),
  f32s: (value: readonly number[]): GgufValue => ({
    type: GgufType.ARRAY,
    itemType: GgufType.FLOAT32,
    value,
  }),
  i32s: (value: readonly number[]): GgufValue => ({
    type: GgufType.ARRAY,
    itemType: GgufType.INT32,
    value,
  }),
};

/** A tensor to write: `dims` in ggml order (dims[0] is the contiguous, fastest-varying one). */
export interface TensorSpec {
  name: string;
  dims: number[];
  type: GgmlTypeId;
  /** How to fill it: constant 1 (norm weights) or small random values scaled for `fanIn`. */
  fill: { kind: 'ones' } | { kind: 'random'; fanIn: number };
}

// ---------------------------------------------------------------- header encoding

class ByteSink {
  private buf = Buffer.alloc(1 << 16);
  length = 0;

  private reserve(n: number): void {
    if (this.length + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + n) size *= 2;
    const next = Buffer.alloc(size);
    this.buf.copy(next, 0, 0, this.length);
    this.buf = next;
  }
  u8(v: number): void {
    this.reserve(1);
    this.buf.writeUInt8(v, this.length);
    this.length += 1;
  }
  u32(v: number): void {
    this.reserve(4);
    this.buf.writeUInt32LE(v, this.length);
    this.length += 4;
  }
  i32(v: number): void {
    this.reserve(4);
    this.buf.writeInt32LE(v, this.length);
    this.length += 4;
  }
  u64(v: number | bigint): void {
    this.reserve(8);
    this.buf.writeBigUInt64LE(BigInt(v), this.length);
    this.length += 8;
  }
  f32(v: number): void {
    this.reserve(4);
    this.buf.writeFloatLE(v, this.length);
    this.length += 4;
  }
  str(s: string): void {
    const bytes = Buffer.from(s, 'utf8');
    this.u64(bytes.length);
    this.reserve(bytes.length);
    bytes.copy(this.buf, this.length);
    this.length += bytes.length;
  }
  pad(alignment: number): void {
    const rem = this.length % alignment;
    if (rem === 0) return;
    const n = alignment - rem;
    this.reserve(n);
    this.buf.fill(0, this.length, this.length + n);
    this.length += n;
  }
  bytes(): Buffer {
    return this.buf.subarray(0, this.length);
  }
}

function writeScalar(sink: ByteSink, type: GgufTypeId, v: GgufScalar): void {
  switch (type) {
    case GgufType.UINT8:
    case GgufType.INT8:
      sink.u8(Number(v) & 0xff);
      break;
    case GgufType.BOOL:
      sink.u8(v ? 1 : 0);
      break;
    case GgufType.UINT32:
      sink.u32(Number(v));
      break;
    case GgufType.INT32:
      sink.i32(Number(v));
      break;
    case GgufType.FLOAT32:
      sink.f32(Number(v));
      break;
    case GgufType.UINT64:
      sink.u64(typeof v === 'bigint' ? v : BigInt(Number(v)));
      break;
    case GgufType.STRING:
      sink.str(String(v));
      break;
    default:
      throw new Error(`GGUF: unsupported metadata type ${type}`);
  }
}

export interface GgufLayout {
  /** The header, metadata and tensor infos, padded to the alignment. */
  header: Buffer;
  /** Offset of each tensor's data relative to the start of the data section. */
  offsets: number[];
  /** Bytes of tensor data (each tensor padded to the alignment). */
  dataBytes: number;
}

export function tensorBytes(t: Pick<TensorSpec, 'dims' | 'type'>): number {
  return t.dims.reduce((a, b) => a * b, 1) * GGML_TYPE_SIZE[t.type]!;
}

/** Encodes everything before the tensor data. */
export function encodeHeader(
  metadata: ReadonlyArray<[string, GgufValue]>,
  tensors: readonly TensorSpec[],
  alignment = GGUF_ALIGNMENT,
): GgufLayout {
  const sink = new ByteSink();
  sink.u32(GGUF_MAGIC);
  sink.u32(GGUF_VERSION);
  sink.u64(tensors.length);
  sink.u64(metadata.length);
  for (const [key, val] of metadata) {
    sink.str(key);
    sink.u32(val.type);
    if (val.type === GgufType.ARRAY) {
      sink.u32(val.itemType);
      sink.u64(val.value.length);
      for (const item of val.value) writeScalar(sink, val.itemType, item);
    } else writeScalar(sink, val.type, val.value);
  }
  const offsets: number[] = [];
  let offset = 0;
  for (const t of tensors) {
    sink.str(t.name);
    sink.u32(t.dims.length);
    for (const d of t.dims) sink.u64(d);
    sink.u32(t.type);
    sink.u64(offset);
    offsets.push(offset);
    offset += Math.ceil(tensorBytes(t) / alignment) * alignment;
  }
  sink.pad(alignment);
  return { header: Buffer.from(sink.bytes()), offsets, dataBytes: offset };
}

// ---------------------------------------------------------------- random fill

/**
 * Fills `out` (viewed as u32 words) with random small floats of `type` whose magnitude stays
 * below about `maxAbs`, from an xorshift32 state; returns the new state. Each f16 gets a random
 * sign, a mantissa and one of 4 exponents ending at the one of `maxAbs`: values spread over
 * [maxAbs/16, maxAbs) — small enough that activations never overflow, random enough to sample.
 */
export function fillRandom(
  out: Uint32Array,
  type: GgmlTypeId,
  maxAbs: number,
  seed: number,
): number {
  let x = seed >>> 0 || 0x9e3779b9;
  // maxAbs is in [2^e2, 2^(e2+1)): the largest values drawn are in [2^(e2-1), 2^e2).
  const e2 = Math.floor(Math.log2(maxAbs)) - 1;
  if (type === GgmlType.F16) {
    const top = Math.min(30, Math.max(4, e2 + 15)); // biased f16 exponent of the largest values
    const base = (top - 3) << 10;
    for (let i = 0; i < out.length; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      // Two halves: sign (bit 15) + 2 exponent bits (10..11) + mantissa (0..9), per 16 bits.
      const lo = (x & 0x8fff) + base;
      const hi = ((x >>> 16) & 0x8fff) + base;
      // (x & 0x0c00) is 0..3 << 10 added to base: exponent in [top-3, top].
      out[i] = ((hi & 0xffff) << 16) | (lo & 0xffff);
    }
  } else {
    const top = Math.min(254, Math.max(4, e2 + 127));
    const base = (top - 3) << 23;
    for (let i = 0; i < out.length; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      // sign, 2 exponent bits (23..24), 23 mantissa bits
      out[i] = ((x & 0x81ffffff) + base) >>> 0;
    }
  }
  return x >>> 0;
}

/** Reads back an IEEE half (for tests). */
export function f16ToNumber(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (m / 1024);
  if (e === 31) return m ? NaN : s * Infinity;
  return s * 2 ** (e - 15) * (1 + m / 1024);
}

// ---------------------------------------------------------------- llama model synthesis

export interface SynthOptions {
  arch: 'llama';
  hidden: number;
  layers: number;
  heads: number;
  kvHeads?: number;
  ffn: number;
  vocab: number;
  ctx?: number;
  type?: 'f16' | 'f32';
  seed?: number;
  name?: string;
  /**
   * Extra whole words for the vocabulary (as "▁word" pieces), e.g. the words of the benchmark's
   * synthetic prompts, so that one prompt word is one token.
   */
  words?: readonly string[];
}

export interface SynthResult {
  path: string;
  bytes: number;
  tensors: number;
  params: number;
  seconds: number;
  mbPerSecond: number;
}

export interface SynthProgress {
  written: number;
  total: number;
  seconds: number;
}

const SPM_SPACE = '\u2581';
const CHATML_TEMPLATE =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/** Token types of llama.cpp's vocabulary. */
const TOKEN_NORMAL = 1;
const TOKEN_UNKNOWN = 2;
const TOKEN_CONTROL = 3;
const TOKEN_BYTE = 6;

const COMMON_WORDS = (
  'the of and to in is you that it he was for on are as with his they at be this have from or ' +
  'one had by word but not what all were we when your can said there use an each which she do ' +
  'how their if will up other about out many then them these so some her would make like him ' +
  'into time has look two more write go see number no way could people my than first water been ' +
  'call who oil its now find long down day did get come made may part hello hi world model ' +
  'token story once upon a I'
).split(' ');

/**
 * A SentencePiece-style ("llama") vocabulary of exactly `size` tokens: <unk>, <s>, </s>, the 256
 * byte tokens <0x00>..<0xFF> (byte fallback: any text tokenizes), then printable characters,
 * "▁"-prefixed characters, common words and the extra `words`, with scores that favour longer
 * pieces.
 */
export function spmVocab(
  size: number,
  words: readonly string[] = [],
): { tokens: string[]; scores: number[]; types: number[] } {
  if (size < 260) throw new Error('vocab must have at least 260 tokens (3 special + 256 bytes)');
  const tokens: string[] = ['<unk>', '<s>', '</s>'];
  const types: number[] = [TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_CONTROL];
  const scores: number[] = [0, 0, 0];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
    types.push(TOKEN_BYTE);
    scores.push(0);
  }
  const seen = new Set(tokens);
  const pieces: string[] = [SPM_SPACE];
  for (let c = 33; c < 127; c++) pieces.push(String.fromCharCode(c));
  for (let c = 97; c < 123; c++) pieces.push(SPM_SPACE + String.fromCharCode(c));
  for (const w of COMMON_WORDS) pieces.push(SPM_SPACE + w);
  // Every prefix of "▁word" too: SentencePiece merges pairs of pieces, so a word becomes one token
  // only when each step of some merge path is itself a piece (prefix + the next 1–2 letters is).
  for (const w of words) {
    if (!w || /\s/.test(w)) continue;
    for (let k = 2; k <= w.length; k++) pieces.push(SPM_SPACE + w.slice(0, k));
  }
  for (let a = 97; a < 123; a++)
    for (let b = 97; b < 123; b++) pieces.push(String.fromCharCode(a, b));
  let i = 0;
  while (tokens.length < size) {
    const p = i < pieces.length ? pieces[i]! : `${SPM_SPACE}tok${i}`;
    i++;
    if (seen.has(p)) continue;
    seen.add(p);
    tokens.push(p);
    types.push(TOKEN_NORMAL);
    scores.push(-1000 + p.length * 10 - tokens.length / 1e4);
  }
  return { tokens, scores, types };
}

/** The metadata and tensor list of a random llama model (no data). */
export function llamaModelSpec(o: SynthOptions): {
  metadata: Array<[string, GgufValue]>;
  tensors: TensorSpec[];
} {
  const kvHeads = o.kvHeads ?? o.heads;
  if (o.hidden % o.heads !== 0) throw new Error('hidden must be a multiple of heads');
  if (o.heads % kvHeads !== 0) throw new Error('heads must be a multiple of kv-heads');
  const headDim = o.hidden / o.heads;
  if (headDim % 2 !== 0) throw new Error('hidden / heads must be even (rotary embeddings)');
  const wtype = o.type === 'f32' ? GgmlType.F32 : GgmlType.F16;
  const vocab = spmVocab(o.vocab, o.words);
  const metadata: Array<[string, GgufValue]> = [
    ['general.architecture', kv.str('llama')],
    ['general.name', kv.str(o.name ?? 'inferplane-synth')],
    ['general.alignment', kv.u32(GGUF_ALIGNMENT)],
    ['general.file_type', kv.u32(wtype === GgmlType.F32 ? 0 : 1)],
    ['llama.context_length', kv.u32(o.ctx ?? 2048)],
    ['llama.embedding_length', kv.u32(o.hidden)],
    ['llama.block_count', kv.u32(o.layers)],
    ['llama.feed_forward_length', kv.u32(o.ffn)],
    ['llama.attention.head_count', kv.u32(o.heads)],
    ['llama.attention.head_count_kv', kv.u32(kvHeads)],
    ['llama.rope.dimension_count', kv.u32(headDim)],
    ['llama.rope.freq_base', kv.f32(10000)],
    ['llama.attention.layer_norm_rms_epsilon', kv.f32(1e-5)],
    ['llama.vocab_size', kv.u32(o.vocab)],
    ['tokenizer.ggml.model', kv.str('llama')],
    ['tokenizer.ggml.tokens', kv.strs(vocab.tokens)],
    ['tokenizer.ggml.scores', kv.f32s(vocab.scores)],
    ['tokenizer.ggml.token_type', kv.i32s(vocab.types)],
    ['tokenizer.ggml.unknown_token_id', kv.u32(0)],
    ['tokenizer.ggml.bos_token_id', kv.u32(1)],
    ['tokenizer.ggml.eos_token_id', kv.u32(2)],
    ['tokenizer.ggml.add_bos_token', kv.bool(true)],
    ['tokenizer.ggml.add_eos_token', kv.bool(false)],
    ['tokenizer.chat_template', kv.str(CHATML_TEMPLATE)],
  ];
  const h = o.hidden;
  const kvDim = headDim * kvHeads;
  const mat = (name: string, inDim: number, outDim: number): TensorSpec => ({
    name,
    dims: [inDim, outDim],
    type: wtype,
    fill: { kind: 'random', fanIn: inDim },
  });
  const norm = (name: string): TensorSpec => ({
    name,
    dims: [h],
    type: GgmlType.F32,
    fill: { kind: 'ones' },
  });
  const tensors: TensorSpec[] = [
    // Embeddings are not a matmul input: give them unit-ish scale.
    {
      name: 'token_embd.weight',
      dims: [h, o.vocab],
      type: wtype,
      fill: { kind: 'random', fanIn: 4 },
    },
  ];
  for (let l = 0; l < o.layers; l++) {
    const p = `blk.${l}.`;
    tensors.push(
      norm(p + 'attn_norm.weight'),
      mat(p + 'attn_q.weight', h, h),
      mat(p + 'attn_k.weight', h, kvDim),
      mat(p + 'attn_v.weight', h, kvDim),
      mat(p + 'attn_output.weight', h, h),
      norm(p + 'ffn_norm.weight'),
      mat(p + 'ffn_gate.weight', h, o.ffn),
      mat(p + 'ffn_up.weight', h, o.ffn),
      mat(p + 'ffn_down.weight', o.ffn, h),
    );
  }
  tensors.push(norm('output_norm.weight'), mat('output.weight', h, o.vocab));
  return { metadata, tensors };
}

const CHUNK_BYTES = 8 * 1024 * 1024;

/**
 * Writes a GGUF file: header, then each tensor's data streamed in chunks from two reusable
 * buffers (one being written while the next is filled). `onProgress` is called per chunk.
 */
export async function writeGguf(
  path: string,
  metadata: ReadonlyArray<[string, GgufValue]>,
  tensors: readonly TensorSpec[],
  opts: { seed?: number; onProgress?: (p: SynthProgress) => void } = {},
): Promise<{ bytes: number; seconds: number }> {
  const started = performance.now();
  const layout = encodeHeader(metadata, tensors);
  const total = layout.header.length + layout.dataBytes;
  const fh: FileHandle = await open(path, 'w');
  let seed = (opts.seed ?? 1234) >>> 0 || 1;
  try {
    let pos = 0;
    const write = async (buf: Uint8Array): Promise<void> => {
      let off = 0;
      while (off < buf.length) {
        const { bytesWritten } = await fh.write(buf, off, buf.length - off, pos);
        off += bytesWritten;
        pos += bytesWritten;
      }
    };
    await write(layout.header);
    const bufs = [Buffer.allocUnsafe(CHUNK_BYTES), Buffer.allocUnsafe(CHUNK_BYTES)];
    let which = 0;
    let pending: Promise<void> = Promise.resolve();
    let lastReport = 0;
    const report = (): void => {
      const now = performance.now();
      if (opts.onProgress && (now - lastReport > 200 || pos >= total)) {
        lastReport = now;
        opts.onProgress({ written: pos, total, seconds: (now - started) / 1000 });
      }
    };
    for (let ti = 0; ti < tensors.length; ti++) {
      const t = tensors[ti]!;
      const nbytes = tensorBytes(t);
      const padded = Math.ceil(nbytes / GGUF_ALIGNMENT) * GGUF_ALIGNMENT;
      let left = padded;
      let dataLeft = nbytes;
      const maxAbs = t.fill.kind === 'random' ? 2 / Math.sqrt(t.fill.fanIn) : 1;
      while (left > 0) {
        const n = Math.min(left, CHUNK_BYTES);
        const buf = bufs[which]!;
        which ^= 1;
        const words = new Uint32Array(buf.buffer, buf.byteOffset, Math.ceil(n / 4));
        if (t.fill.kind === 'ones') {
          const ones = new Float32Array(buf.buffer, buf.byteOffset, Math.floor(n / 4));
          ones.fill(1);
        } else {
          seed = fillRandom(words, t.type, maxAbs, seed);
        }
        const dataN = Math.min(n, dataLeft);
        if (dataN < n) buf.fill(0, dataN, n); // alignment padding
        dataLeft -= dataN;
        left -= n;
        // At most one write in flight: wait for the previous one before reusing its buffer.
        await pending;
        report();
        pending = write(buf.subarray(0, n));
      }
    }
    await pending;
    report();
  } finally {
    await fh.close();
  }
  return { bytes: total, seconds: (performance.now() - started) / 1000 };
}

/** Writes a random llama model to `path`. */
export async function synthModel(
  path: string,
  o: SynthOptions,
  onProgress?: (p: SynthProgress) => void,
): Promise<SynthResult> {
  const { metadata, tensors } = llamaModelSpec(o);
  const params = tensors.reduce((a, t) => a + t.dims.reduce((x, y) => x * y, 1), 0);
  const { bytes, seconds } = await writeGguf(path, metadata, tensors, {
    ...(o.seed !== undefined ? { seed: o.seed } : {}),
    ...(onProgress ? { onProgress } : {}),
  });
  return {
    path,
    bytes,
    tensors: tensors.length,
    params,
    seconds,
    mbPerSecond: bytes / 1e6 / Math.max(seconds, 1e-9),
  };
}

// ---------------------------------------------------------------- reader

export interface GgufTensorInfo {
  name: string;
  dims: number[];
  type: number;
  offset: number;
}

export interface GgufFile {
  version: number;
  metadata: Map<string, GgufScalar | GgufScalar[]>;
  tensors: GgufTensorInfo[];
  /** Absolute file offset of the tensor data section. */
  dataOffset: number;
}

class ByteReader {
  pos = 0;
  constructor(private readonly buf: Buffer) {}
  need(n: number): void {
    if (this.pos + n > this.buf.length) throw new RangeError('GGUF: truncated header');
  }
  u8(): number {
    this.need(1);
    return this.buf.readUInt8(this.pos++);
  }
  u32(): number {
    this.need(4);
    const v = this.buf.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }
  i32(): number {
    this.need(4);
    const v = this.buf.readInt32LE(this.pos);
    this.pos += 4;
    return v;
  }
  u64(): number {
    this.need(8);
    const v = this.buf.readBigUInt64LE(this.pos);
    this.pos += 8;
    return Number(v);
  }
  f32(): number {
    this.need(4);
    const v = this.buf.readFloatLE(this.pos);
    this.pos += 4;
    return v;
  }
  str(): string {
    const n = this.u64();
    this.need(n);
    const s = this.buf.toString('utf8', this.pos, this.pos + n);
    this.pos += n;
    return s;
  }
  scalar(type: number): GgufScalar {
    switch (type) {
      case GgufType.UINT8:
        return this.u8();
      case GgufType.INT8:
        return (this.u8() << 24) >> 24;
      case GgufType.BOOL:
        return this.u8() !== 0;
      case GgufType.UINT16:
        this.need(2);
        this.pos += 2;
        return this.buf.readUInt16LE(this.pos - 2);
      case GgufType.INT16:
        this.need(2);
        this.pos += 2;
        return this.buf.readInt16LE(this.pos - 2);
      case GgufType.UINT32:
        return this.u32();
      case GgufType.INT32:
        return this.i32();
      case GgufType.FLOAT32:
        return this.f32();
      case GgufType.UINT64:
      case GgufType.INT64:
        return this.u64();
      case GgufType.FLOAT64: {
        this.need(8);
        this.pos += 8;
        return this.buf.readDoubleLE(this.pos - 8);
      }
      case GgufType.STRING:
        return this.str();
      default:
        throw new Error(`GGUF: unknown metadata type ${type}`);
    }
  }
}

/** Reads a GGUF file's header, metadata and tensor infos (not the data). */
export async function readGguf(path: string, maxHeaderBytes = 64 * 1024 * 1024): Promise<GgufFile> {
  const fh = await open(path, 'r');
  try {
    const { size } = await fh.stat();
    const len = Math.min(size, maxHeaderBytes);
    const buf = Buffer.alloc(len);
    await fh.read(buf, 0, len, 0);
    return parseGgufHeader(buf);
  } finally {
    await fh.close();
  }
}

export function parseGgufHeader(buf: Buffer): GgufFile {
  const r = new ByteReader(buf);
  if (buf.length < 4 || r.u32() !== GGUF_MAGIC) throw new Error('not a GGUF file (bad magic)');
  const version = r.u32();
  if (version < 2 || version > 3) throw new Error(`unsupported GGUF version ${version}`);
  const nTensors = r.u64();
  const nKv = r.u64();
  const metadata = new Map<string, GgufScalar | GgufScalar[]>();
  for (let i = 0; i < nKv; i++) {
    const key = r.str();
    const type = r.u32();
    if (type === GgufType.ARRAY) {
      const itemType = r.u32();
      const n = r.u64();
      const arr: GgufScalar[] = new Array<GgufScalar>(n);
      for (let j = 0; j < n; j++) arr[j] = r.scalar(itemType);
      metadata.set(key, arr);
    } else metadata.set(key, r.scalar(type));
  }
  const tensors: GgufTensorInfo[] = [];
  for (let i = 0; i < nTensors; i++) {
    const name = r.str();
    const nd = r.u32();
    const dims: number[] = [];
    for (let j = 0; j < nd; j++) dims.push(r.u64());
    const type = r.u32();
    const offset = r.u64();
    tensors.push({ name, dims, type, offset });
  }
  const alignment = Number(metadata.get('general.alignment') ?? GGUF_ALIGNMENT);
  const dataOffset = Math.ceil(r.pos / alignment) * alignment;
  return { version, metadata, tensors, dataOffset };
}
