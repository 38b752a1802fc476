import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  GGUF_ALIGNMENT,
  GgmlType,
  encodeHeader,
  f16ToNumber,
  fillRandom,
  kv,
  llamaModelSpec,
  parseGgufHeader,
  readGguf,
  spmVocab,
  synthModel,
  tensorBytes,
  type TensorSpec,
} from '../../src/engines/gguf.js';

const dir = mkdtempSync(join(tmpdir(), 'inferplane-gguf-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('GGUF encoding', () => {
  it('round-trips metadata and tensor infos with aligned offsets', () => {
    const tensors: TensorSpec[] = [
      { name: 'a', dims: [3], type: GgmlType.F32, fill: { kind: 'ones' } },
      { name: 'b', dims: [5, 7], type: GgmlType.F16, fill: { kind: 'random', fanIn: 5 } },
      { name: 'c', dims: [2, 2], type: GgmlType.F32, fill: { kind: 'ones' } },
    ];
    const layout = encodeHeader(
      [
        ['general.architecture', kv.str('llama')],
        ['x.u32', kv.u32(7)],
        ['x.f32', kv.f32(0.5)],
        ['x.bool', kv.bool(true)],
        ['x.strs', kv.strs(['a', 'ü', ''])],
        ['x.i32s', kv.i32s([-1, 2])],
      ],
      tensors,
    );
    expect(layout.header.length % GGUF_ALIGNMENT).toBe(0);
    expect(layout.header.toString('latin1', 0, 4)).toBe('GGUF');
    const f = parseGgufHeader(layout.header);
    expect(f.version).toBe(3);
    expect(f.dataOffset).toBe(layout.header.length);
    expect(f.metadata.get('general.architecture')).toBe('llama');
    expect(f.metadata.get('x.u32')).toBe(7);
    expect(f.metadata.get('x.f32')).toBe(0.5);
    expect(f.metadata.get('x.bool')).toBe(true);
    expect(f.metadata.get('x.strs')).toEqual(['a', 'ü', '']);
    expect(f.metadata.get('x.i32s')).toEqual([-1, 2]);
    expect(f.tensors.map((t) => [t.name, t.dims, t.type, t.offset])).toEqual([
      ['a', [3], 0, 0],
      ['b', [5, 7], 1, 32], // after 12 bytes, padded to 32
      ['c', [2, 2], 0, 128], // after 70 bytes, padded to 96
    ]);
    expect(layout.dataBytes).toBe(160);
  });

  it('rejects a file that is not GGUF', () => {
    expect(() => parseGgufHeader(Buffer.from('nope, not gguf'))).toThrow(/bad magic/);
  });
});

describe('random fill', () => {
  it('gives finite f16 values below the bound, with both signs and some spread', () => {
    const words = new Uint32Array(4096);
    const seed = fillRandom(words, GgmlType.F16, 0.25, 42);
    expect(seed).not.toBe(42);
    const halves = new Uint16Array(words.buffer);
    const values = [...halves].map(f16ToNumber);
    expect(values.every((v) => Number.isFinite(v) && Math.abs(v) < 0.25 && v !== 0)).toBe(true);
    expect(values.some((v) => v < 0)).toBe(true);
    expect(values.some((v) => v > 0)).toBe(true);
    expect(new Set(values).size).toBeGreaterThan(1000);
    expect(Math.max(...values.map(Math.abs))).toBeGreaterThan(0.125);
  });

  it('gives finite f32 values below the bound', () => {
    const words = new Uint32Array(4096);
    fillRandom(words, GgmlType.F32, 0.05, 7);
    const values = [...new Float32Array(words.buffer)];
    expect(values.every((v) => Number.isFinite(v) && Math.abs(v) < 0.05 && v !== 0)).toBe(true);
    expect(values.some((v) => v < 0)).toBe(true);
  });
});

describe('vocabulary', () => {
  it('has the special tokens, all 256 byte tokens and exactly the size asked', () => {
    const v = spmVocab(512);
    expect(v.tokens).toHaveLength(512);
    expect(v.scores).toHaveLength(512);
    expect(v.types).toHaveLength(512);
    expect(v.tokens.slice(0, 3)).toEqual(['<unk>', '<s>', '</s>']);
    expect(v.tokens[3]).toBe('<0x00>');
    expect(v.tokens[3 + 0x0a]).toBe('<0x0A>');
    expect(v.tokens[258]).toBe('<0xFF>');
    expect(new Set(v.tokens).size).toBe(512);
    expect(v.tokens).toContain('\u2581the');
    expect(spmVocab(32000).tokens).toHaveLength(32000);
    expect(() => spmVocab(100)).toThrow(/at least/);
  });
});

describe('model synth', () => {
  it('writes a llama model whose header, sizes and data check out', async () => {
    const path = join(dir, 'tiny.gguf');
    const o = {
      arch: 'llama' as const,
      hidden: 64,
      layers: 2,
      heads: 4,
      kvHeads: 2,
      ffn: 128,
      vocab: 300,
      ctx: 256,
    };
    const progress: number[] = [];
    const r = await synthModel(path, o, (p) => progress.push(p.written));
    expect(progress.at(-1)).toBe(r.bytes);
    expect(statSync(path).size).toBe(r.bytes);
    const f = await readGguf(path);
    expect(f.metadata.get('general.architecture')).toBe('llama');
    expect(f.metadata.get('llama.embedding_length')).toBe(64);
    expect(f.metadata.get('llama.block_count')).toBe(2);
    expect(f.metadata.get('llama.attention.head_count_kv')).toBe(2);
    expect(f.metadata.get('llama.context_length')).toBe(256);
    expect((f.metadata.get('tokenizer.ggml.tokens') as string[]).length).toBe(300);
    expect(f.tensors).toHaveLength(3 + 2 * 9);
    const k = f.tensors.find((t) => t.name === 'blk.0.attn_k.weight')!;
    expect(k.dims).toEqual([64, 32]); // head dim 16 x 2 kv heads
    const last = f.tensors.at(-1)!;
    const lastBytes = tensorBytes({ dims: last.dims, type: last.type as 0 | 1 });
    expect(f.dataOffset + last.offset + lastBytes).toBeLessThanOrEqual(r.bytes);
    expect(r.bytes - (f.dataOffset + last.offset + lastBytes)).toBeLessThan(GGUF_ALIGNMENT);
    expect(r.params).toBe(
      2 * 300 * 64 + 64 + 2 * (2 * 64 + 2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128),
    );

    const fh = await open(path, 'r');
    try {
      const norm = f.tensors.find((t) => t.name === 'blk.1.ffn_norm.weight')!;
      const nb = Buffer.alloc(64 * 4);
      await fh.read(nb, 0, nb.length, f.dataOffset + norm.offset);
      expect([...new Float32Array(nb.buffer, nb.byteOffset, 64)].every((v) => v === 1)).toBe(true);
      const q = f.tensors.find((t) => t.name === 'blk.0.attn_q.weight')!;
      expect(q.type).toBe(GgmlType.F16);
      const qb = Buffer.alloc(64 * 64 * 2);
      await fh.read(qb, 0, qb.length, f.dataOffset + q.offset);
      const vals = [...new Uint16Array(qb.buffer, qb.byteOffset, 64 * 64)].map(f16ToNumber);
      const bound = 2 / Math.sqrt(64);
      expect(vals.every((v) => Number.isFinite(v) && Math.abs(v) < bound)).toBe(true);
    } finally {
      await fh.close();
    }
  });

  it('refuses shapes llama.cpp cannot run', () => {
    const base = { arch: 'llama' as const, layers: 1, ffn: 8, vocab: 300 };
    expect(() => llamaModelSpec({ ...base, hidden: 30, heads: 4 })).toThrow(/multiple of heads/);
    expect(() => llamaModelSpec({ ...base, hidden: 64, heads: 4, kvHeads: 3 })).toThrow(/kv-heads/);
  });

  it('writes f32 weights when asked', async () => {
    const path = join(dir, 'f32.gguf');
    await synthModel(path, {
      arch: 'llama',
      hidden: 32,
      layers: 1,
      heads: 2,
      ffn: 64,
      vocab: 260,
      type: 'f32',
    });
    const f = await readGguf(path);
    expect(f.metadata.get('general.file_type')).toBe(0);
    expect(f.tensors.every((t) => t.type === GgmlType.F32)).toBe(true);
  });
});
