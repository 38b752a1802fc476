// llama.cpp's `llama-server` as an engine: one process per replica serving a GGUF file with the
// OpenAI API, `/health` and Prometheus `/metrics` (with --metrics). The executable comes from the
// cache `inferplane engine install llamacpp` fills (src/engines/install.ts).
import { existsSync, statSync } from 'node:fs';
import { z } from 'zod';
import { InferplaneError } from '../core/errors.js';
import { requireLlamaServer } from './install.js';
import type { EngineAdapter, LaunchCommand, LaunchContext } from './types.js';

const argsSchema = z.strictObject({
  /** Total context size in tokens, shared by the slots (`-c`); default: the model's. */
  ctxSize: z.int().positive().max(10_000_000).optional(),
  /** Parallel decoding slots (`--parallel`). */
  parallel: z.int().positive().max(512).optional(),
  /** Layers offloaded to the GPU (`-ngl`); 0 on CPU builds. */
  gpuLayers: z.int().min(0).max(10_000).optional(),
  /** CPU threads for generation (`--threads`) and prompt processing (`--threads-batch`). */
  threads: z.int().positive().max(1024).optional(),
  threadsBatch: z.int().positive().max(1024).optional(),
  /** Logical batch size (`--batch-size`). */
  batchSize: z.int().positive().max(1_000_000).optional(),
  /** Share one KV cache between the slots (`--kv-unified`). */
  kvUnified: z.boolean().optional(),
  /** Skip the warm-up decode at start (`--no-warmup`). */
  warmup: z.boolean().optional(),
  /** A build installed in the cache, e.g. `b6000-cuda-90` (default: the last one installed). */
  build: z
    .string()
    .regex(/^[A-Za-z0-9._-]+$/)
    .max(128)
    .optional(),
  seed: z.int().nonnegative().optional(),
  /**
   * Host-memory prompt cache in MiB (`--cache-ram`; 0 turns it off). On a GPU with many slots
   * the default cache copies large entries on every request (measured on an H100: throughput
   * collapsed at 16 concurrent requests); 0 keeps each slot's own prefix reuse.
   */
  cacheRam: z.int().min(-1).max(10_000_000).optional(),
  /** Flash attention (`--flash-attn on|off|auto`). */
  flashAttn: z.enum(['on', 'off', 'auto']).optional(),
});

export type LlamaCppArgs = z.infer<typeof argsSchema>;

/** The llama-server argument list for a replica (pure; the executable is resolved apart). */
export function llamaServerArgs(ctx: LaunchContext): string[] {
  const a = ctx.args as LlamaCppArgs;
  // The GGUF file: the deployment's registered model version, fetched and verified.
  const model = ctx.artifactPath ?? '';
  const args = ['--model', model, '--host', ctx.host, '--port', String(ctx.port)];
  // Clients send the deployment name as `model`; llama-server answers to its alias.
  args.push('--alias', ctx.servedModelName);
  args.push('--metrics');
  if (a.ctxSize !== undefined) args.push('--ctx-size', String(a.ctxSize));
  if (a.parallel !== undefined) args.push('--parallel', String(a.parallel));
  // No GPUs assigned: stay on the CPU. With GPUs: what is asked, else llama-server's default
  // (auto: as many layers as fit).
  if (ctx.gpus.length === 0) args.push('--n-gpu-layers', '0');
  else if (a.gpuLayers !== undefined) args.push('--n-gpu-layers', String(a.gpuLayers));
  if (a.threads !== undefined) args.push('--threads', String(a.threads));
  if (a.threadsBatch !== undefined) args.push('--threads-batch', String(a.threadsBatch));
  if (a.batchSize !== undefined) args.push('--batch-size', String(a.batchSize));
  if (a.kvUnified) args.push('--kv-unified');
  if (a.warmup === false) args.push('--no-warmup');
  if (a.seed !== undefined) args.push('--seed', String(a.seed));
  if (a.cacheRam !== undefined) args.push('--cache-ram', String(a.cacheRam));
  if (a.flashAttn !== undefined) args.push('--flash-attn', a.flashAttn);
  return args;
}

let slotsPerDevice = 1;

/**
 * GPU sharing on this node: the node agent offers each CUDA device as `n` placement slots
 * (`inferplane up --gpu-sharing n`), slot s being device ⌊s / n⌋. Set by the platform at start.
 */
export function setGpuSharing(n: number): void {
  slotsPerDevice = Math.max(1, Math.floor(n));
}

/** The CUDA devices of placed GPU slots, each once, in order. */
export function cudaDevices(slots: readonly number[], sharing = slotsPerDevice): number[] {
  return [...new Set(slots.map((s) => Math.floor(s / sharing)))];
}

export const llamaCppEngine: EngineAdapter = {
  name: 'llamacpp',
  argsSchema,
  healthPath: '/health',
  metricsPath: '/metrics',
  // Loading a large model from disk (or warming up on CPU) can take minutes.
  startTimeoutMs: 600_000,
  requiresModelFile: true,
  checkModel(): undefined {
    // Any model name: the GGUF file (the registered modelVersion) is what is served; its presence is
    // checked at launch, on the node that runs the replica.
    return undefined;
  },
  launch(ctx: LaunchContext): LaunchCommand {
    const a = ctx.args as LlamaCppArgs;
    const server = requireLlamaServer(a.build !== undefined ? { build: a.build } : {});
    // The model is a registered version, fetched into the node cache and verified by the
    // controller: never a bare path or URI.
    const model = ctx.artifactPath;
    if (model === undefined) {
      throw new InferplaneError(
        'IP_VALIDATION',
        'llamacpp serves a registered model version: name one in the deployment (modelVersion)',
        { details: [{ path: 'modelVersion', message: 'required for llamacpp' }] },
      );
    }
    if (!existsSync(model) || !statSync(model).isFile()) {
      throw new InferplaneError('IP_VALIDATION', `model file not found: ${model}`, {
        details: [{ path: 'modelVersion', message: 'artifact missing from the node cache' }],
      });
    }
    // The replica sees only the GPUs placed for it (none: none); shared GPUs are slots of one
    // device (see setGpuSharing).
    const env: Record<string, string> = { CUDA_VISIBLE_DEVICES: cudaDevices(ctx.gpus).join(',') };
    return { command: server.path, args: llamaServerArgs(ctx), env };
  },
};

/** Normalized engine signals (the shape of src/gateway/routing/signals.ts's EngineSignals). */
export interface LlamaCppSignals {
  waiting: number;
  running: number;
  kvUtilization: number;
  prefixHits: number;
  prefixQueries: number;
  blockSize: number;
  numGpuBlocks: number;
  updatedAt: number;
}

/**
 * Maps llama-server's Prometheus text to the normalized signals:
 * - `llamacpp:requests_processing` → running, `llamacpp:requests_deferred` → waiting;
 * - `llamacpp:kv_cache_usage_ratio` (older servers) → kvUtilization (0 when absent);
 * - `llamacpp:prompt_tokens_cached_total` → prefixHits, and prefixQueries =
 *   `llamacpp:prompt_tokens_total` + cached, since llama-server counts prompt tokens
 *   *excluding* those reused from the cache (hits / queries stays within 0..1);
 * - no paged KV blocks: blockSize and numGpuBlocks stay 0.
 */
export function parseLlamaCppMetrics(text: string, now = 0): LlamaCppSignals {
  const s: LlamaCppSignals = {
    waiting: 0,
    running: 0,
    kvUtilization: 0,
    prefixHits: 0,
    prefixQueries: 0,
    blockSize: 0,
    numGpuBlocks: 0,
    updatedAt: now,
  };
  let promptTokens = 0;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const value = Number(m[3]);
    if (!Number.isFinite(value)) continue;
    switch (m[1]) {
      case 'llamacpp:requests_processing':
        s.running += value;
        break;
      case 'llamacpp:requests_deferred':
        s.waiting += value;
        break;
      case 'llamacpp:kv_cache_usage_ratio':
        s.kvUtilization = Math.max(s.kvUtilization, Math.min(1, Math.max(0, value)));
        break;
      case 'llamacpp:prompt_tokens_cached_total':
        s.prefixHits += value;
        break;
      case 'llamacpp:prompt_tokens_total':
        promptTokens += value;
        break;
      default:
        break;
    }
  }
  s.prefixQueries = promptTokens + s.prefixHits;
  return s;
}
