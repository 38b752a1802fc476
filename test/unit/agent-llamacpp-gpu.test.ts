// The pieces the H100 run needed beyond the CPU half: llama-server's --cache-ram and
// --flash-attn, CUDA devices of shared GPU slots, a vocabulary in which each benchmark prompt word
// is one token, and building from a carried llama.cpp tree (offline machines).
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PROMPT_WORDS } from '../../src/bench/workloads.js';
import { spmVocab } from '../../src/engines/gguf.js';
import { localSource } from '../../src/engines/install.js';
import { llamaCppEngine, llamaServerArgs } from '../../src/engines/llamacpp.js';
import type { LaunchContext } from '../../src/engines/types.js';

const dir = mkdtempSync(join(tmpdir(), 'inferplane-gpu-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function ctx(args: Record<string, unknown>, gpus: number[] = [0]): LaunchContext {
  return {
    artifactPath: '/m/x.gguf',
    servedModelName: 'd',
    model: 'm',
    host: '127.0.0.1',
    port: 1,
    replicaIndex: 0,
    gpus,
    gpuType: 'H100-80GB',
    args,
  };
}

describe('llamacpp GPU arguments', () => {
  it('passes --cache-ram and --flash-attn when asked', () => {
    const a = llamaServerArgs(ctx({ cacheRam: 0, flashAttn: 'on', gpuLayers: 99 }));
    expect(a[a.indexOf('--cache-ram') + 1]).toBe('0');
    expect(a[a.indexOf('--flash-attn') + 1]).toBe('on');
    expect(a[a.indexOf('--n-gpu-layers') + 1]).toBe('99');
    expect(llamaServerArgs(ctx({}))).not.toContain('--cache-ram');
  });

  it('validates them', () => {
    expect(llamaCppEngine.argsSchema.safeParse({ cacheRam: 0, flashAttn: 'auto' }).success).toBe(
      true,
    );
    expect(llamaCppEngine.argsSchema.safeParse({ flashAttn: 'yes' }).success).toBe(false);
    expect(llamaCppEngine.argsSchema.safeParse({ cacheRam: -2 }).success).toBe(false);
  });
});

describe('vocabulary with the benchmark words', () => {
  it('holds every prefix of each "▁word", so SentencePiece merges reach the whole word', () => {
    const v = new Set(spmVocab(32000, PROMPT_WORDS).tokens);
    for (const w of PROMPT_WORDS) {
      for (let k = 2; k <= w.length; k++) expect(v.has('\u2581' + w.slice(0, k))).toBe(true);
    }
    // Without words, the default vocabulary is unchanged.
    expect(spmVocab(32000).tokens).toEqual(spmVocab(32000, []).tokens);
    expect(spmVocab(32000, PROMPT_WORDS).tokens).toHaveLength(32000);
  });
});

describe('building from a carried llama.cpp tree', () => {
  it('takes version and commit from llama.cpp.info.json when the tree is no checkout', async () => {
    const src = join(dir, 'tree');
    mkdirSync(src);
    writeFileSync(join(src, 'CMakeLists.txt'), '');
    writeFileSync(
      join(src, 'llama.cpp.info.json'),
      JSON.stringify({ tag: 'v0.5.0', commit: 'de3ff815ea7d559ee917f063901b8986f038abc6' }),
    );
    expect(await localSource(src, process.env)).toEqual({
      src,
      version: 'v0.5.0',
      commit: 'de3ff815ea7d559ee917f063901b8986f038abc6',
    });
  });

  it('takes the commit from git when the tree is a checkout of its own', async () => {
    const src = join(dir, 'git');
    mkdirSync(src);
    writeFileSync(join(src, 'CMakeLists.txt'), '');
    const git = (...args: string[]) =>
      execFileSync('git', ['-C', src, ...args], { encoding: 'utf8' }).trim();
    git('init', '-q');
    git('add', '.');
    git('-c', 'user.email=t@t', '-c', 'user.name=t', 'commit', '-q', '-m', 'x');
    const head = git('rev-parse', 'HEAD');
    expect(await localSource(src, process.env)).toEqual({
      src,
      version: head.slice(0, 12),
      commit: head,
    });
  });

  it('refuses a folder that is not a llama.cpp tree', async () => {
    await expect(localSource(join(dir, 'nothing'), process.env)).rejects.toThrow(
      /not a llama.cpp source tree/,
    );
  });
});
