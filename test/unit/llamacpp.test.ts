import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { InferplaneError } from '../../src/core/errors.js';
import { getEngine, resolveEngine } from '../../src/engines/index.js';
import {
  NOT_INSTALLED_MESSAGE,
  cacheRoot,
  cmakeArgs,
  findLlamaServer,
  parseBuildProgress,
  parseComputeCaps,
  requireLlamaServer,
  variantName,
} from '../../src/engines/install.js';
import {
  llamaCppEngine,
  llamaServerArgs,
  parseLlamaCppMetrics,
} from '../../src/engines/llamacpp.js';
import type { LaunchContext } from '../../src/engines/types.js';

const dir = mkdtempSync(join(tmpdir(), 'inferplane-llamacpp-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(() => vi.unstubAllEnvs());

/** A launch context; `modelPath` stands for the verified artifact the controller passes. */
function ctx(all: Record<string, unknown>, gpus: number[] = []): LaunchContext {
  const { modelPath, ...args } = all;
  return {
    ...(typeof modelPath === 'string' ? { artifactPath: modelPath } : {}),
    servedModelName: 'team-a-tiny',
    model: 'tiny',
    host: '127.0.0.1',
    port: 4321,
    replicaIndex: 0,
    gpus,
    gpuType: 'H100-80GB',
    args,
  };
}

/** A fake installed build under `<cache>/engines/llamacpp/<key>/`. */
function fakeBuild(cache: string, key: string, current = true): string {
  const d = join(cache, 'engines', 'llamacpp', key);
  mkdirSync(join(d, 'bin'), { recursive: true });
  const bin = join(d, 'bin', 'llama-server');
  writeFileSync(bin, '#!/bin/sh\n');
  chmodSync(bin, 0o755);
  writeFileSync(
    join(d, 'build.json'),
    JSON.stringify({ path: bin, version: 'b1', commit: 'abc', variant: 'cpu', key }),
  );
  if (current)
    writeFileSync(join(cache, 'engines', 'llamacpp', 'current.json'), JSON.stringify({ key }));
  return bin;
}

describe('llamacpp adapter', () => {
  it('is registered and validates its args', () => {
    expect(getEngine('llamacpp')).toBe(llamaCppEngine);
    const ok = resolveEngine('llamacpp', { parallel: 2, threads: 1 });
    expect(ok.args).toEqual({ parallel: 2, threads: 1 });
    const bad = (args: unknown): string[] => {
      try {
        resolveEngine('llamacpp', args);
        return [];
      } catch (e) {
        expect(e).toBeInstanceOf(InferplaneError);
        expect((e as InferplaneError).code).toBe('IP_VALIDATION');
        return ((e as InferplaneError).details ?? []).map((d) => d.path);
      }
    };
    // The model file comes from the deployment's modelVersion; the service refuses a llamacpp
    // deployment without one (requiresModelFile).
    expect(bad({})).toEqual([]);
    expect(llamaCppEngine.requiresModelFile).toBe(true);
    // A bare path is not accepted: deployments name a registered model version.
    expect(bad({ modelPath: '/x.gguf' }).length).toBe(1);
    expect(bad({ parallel: 0 })).toEqual(['engine.args.parallel']);
    expect(bad({ build: '../../bin' })).toEqual(['engine.args.build']);
    expect(bad({ nope: 1 }).length).toBe(1);
    expect(llamaCppEngine.healthPath).toBe('/health');
    expect(llamaCppEngine.metricsPath).toBe('/metrics');
    expect(llamaCppEngine.startTimeoutMs).toBeGreaterThanOrEqual(120_000);
    expect(llamaCppEngine.checkModel?.('anything', 'H100-80GB')).toBeUndefined();
  });

  it('builds the llama-server command line', () => {
    const args = llamaServerArgs(
      ctx({
        modelPath: '/m/x.gguf',
        ctxSize: 4096,
        parallel: 4,
        threads: 2,
        kvUnified: true,
        warmup: false,
      }),
    );
    const flag = (f: string): string | undefined => args[args.indexOf(f) + 1];
    expect(flag('--model')).toBe('/m/x.gguf');
    expect(flag('--host')).toBe('127.0.0.1');
    expect(flag('--port')).toBe('4321');
    expect(flag('--alias')).toBe('team-a-tiny');
    expect(flag('--ctx-size')).toBe('4096');
    expect(flag('--parallel')).toBe('4');
    expect(flag('--threads')).toBe('2');
    expect(flag('--n-gpu-layers')).toBe('0'); // no GPUs placed: CPU
    expect(args).toContain('--metrics');
    expect(args).toContain('--kv-unified');
    expect(args).toContain('--no-warmup');

    const gpu = llamaServerArgs(ctx({ modelPath: '/m/x.gguf', gpuLayers: 33 }, [2, 3]));
    expect(gpu[gpu.indexOf('--n-gpu-layers') + 1]).toBe('33');
    expect(llamaServerArgs(ctx({ modelPath: '/m/x.gguf' }, [1]))).not.toContain('--n-gpu-layers');
  });

  it('launches the installed build with only its GPUs visible', () => {
    const cache = join(dir, 'cache-launch');
    const bin = fakeBuild(cache, 'b1-cpu');
    const model = join(dir, 'm.gguf');
    writeFileSync(model, 'GGUF');
    vi.stubEnv('INFERPLANE_CACHE_DIR', cache);
    vi.stubEnv('INFERPLANE_LLAMA_SERVER', '');
    const cmd = llamaCppEngine.launch(ctx({ modelPath: model }, [1, 2]));
    expect(cmd.command).toBe(bin);
    expect(cmd.env.CUDA_VISIBLE_DEVICES).toBe('1,2');
    expect(cmd.args).toContain('--alias');

    // A model file that is not there: a clear error naming the field.
    try {
      llamaCppEngine.launch(ctx({ modelPath: join(dir, 'missing.gguf') }));
      expect.unreachable();
    } catch (e) {
      expect((e as InferplaneError).code).toBe('IP_VALIDATION');
      expect((e as InferplaneError).message).toMatch(/model file not found/);
    }
  });

  it('says how to install llama-server when it is missing', () => {
    const model = join(dir, 'm2.gguf');
    writeFileSync(model, 'GGUF');
    vi.stubEnv('INFERPLANE_CACHE_DIR', join(dir, 'empty-cache'));
    vi.stubEnv('INFERPLANE_LLAMA_SERVER', '');
    expect(() => llamaCppEngine.launch(ctx({ modelPath: model }))).toThrow(NOT_INSTALLED_MESSAGE);
    try {
      requireLlamaServer();
    } catch (e) {
      expect((e as InferplaneError).code).toBe('IP_VALIDATION');
      expect((e as InferplaneError).message).toContain(
        'llama-server is not installed: run `inferplane engine install llamacpp`',
      );
    }
  });
});

describe('llama-server cache', () => {
  it('resolves the cache root from the environment', () => {
    expect(cacheRoot({ INFERPLANE_CACHE_DIR: '/c' })).toBe('/c');
    expect(cacheRoot({ XDG_CACHE_HOME: '/x' })).toBe('/x/inferplane');
    expect(cacheRoot({ HOME: '/home/u' })).toBe('/home/u/.cache/inferplane');
  });

  it('finds the current build, a named build, or an explicit executable', () => {
    const cache = join(dir, 'cache-find');
    fakeBuild(cache, 'b2-cuda-90', false);
    const cpu = fakeBuild(cache, 'b2-cpu');
    const env = { INFERPLANE_CACHE_DIR: cache };
    expect(findLlamaServer({ env })?.path).toBe(cpu);
    expect(findLlamaServer({ env, build: 'b2-cuda-90' })?.key).toBe('b2-cuda-90');
    expect(findLlamaServer({ env, build: 'b9-cpu' })).toBeUndefined();
    expect(findLlamaServer({ env, build: '../x' })).toBeUndefined();
    expect(findLlamaServer({ env: { ...env, INFERPLANE_LLAMA_SERVER: cpu } })?.key).toBe('custom');
    expect(findLlamaServer({ env: { INFERPLANE_CACHE_DIR: join(dir, 'none') } })).toBeUndefined();
  });

  it('parses build progress, compute capabilities and picks the cmake flags', () => {
    expect(parseBuildProgress('[51/204] Building CXX object x.o')).toBeCloseTo(25, 0);
    expect(parseBuildProgress('[ 45%] Building CXX object x.o')).toBe(45);
    expect(parseBuildProgress('-- Configuring done')).toBeUndefined();
    expect(parseComputeCaps('9.0\n9.0\n8.6\n')).toEqual(['86', '90']);
    expect(parseComputeCaps('')).toEqual([]);
    const cpu = cmakeArgs({ cuda: false, cudaArchs: [] });
    expect(cpu).toContain('-DGGML_NATIVE=OFF');
    expect(cpu).toContain('-DBUILD_SHARED_LIBS=OFF');
    expect(cpu.some((a) => a.startsWith('-DGGML_CUDA'))).toBe(false);
    const cuda = cmakeArgs({ cuda: true, cudaArchs: ['80', '90'] });
    expect(cuda).toContain('-DGGML_CUDA=ON');
    expect(cuda).toContain('-DCMAKE_CUDA_ARCHITECTURES=80;90');
    expect(variantName(false, [])).toBe('cpu');
    expect(variantName(true, ['80', '90'])).toBe('cuda-80-90');
  });
});

describe('llama.cpp metrics', () => {
  it('maps llama-server metrics to the normalized signals', () => {
    const text = [
      '# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed',
      '# TYPE llamacpp:prompt_tokens_total counter',
      'llamacpp:prompt_tokens_total 300',
      'llamacpp:prompt_tokens_cached_total 100',
      'llamacpp:tokens_predicted_total 42',
      'llamacpp:requests_processing 2',
      'llamacpp:requests_deferred 3',
      'llamacpp:kv_cache_usage_ratio 0.25',
      'llamacpp:spec_decode_num_accepted_tokens_per_pos_total{position="0"} 5',
      'garbage line',
      '',
    ].join('\n');
    expect(parseLlamaCppMetrics(text, 7)).toEqual({
      waiting: 3,
      running: 2,
      kvUtilization: 0.25,
      prefixHits: 100,
      prefixQueries: 400, // processed (uncached) + cached
      blockSize: 0,
      numGpuBlocks: 0,
      updatedAt: 7,
    });
    expect(parseLlamaCppMetrics('').running).toBe(0);
  });
});
