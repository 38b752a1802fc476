/**
 * Hardware and model profiles of the simulated engine, as data.
 *
 * Models: shapes from each model's Hugging Face `config.json` and parameter counts from its model
 * card (Meta Llama 3.1 / Llama 2, Qwen3, Mistral AI Mixtral). GPUs: datasheet numbers (dense tensor
 * throughput, i.e. without 2:4 sparsity) and the memory size that `nvidia-smi` reports (the same MiB
 * figures as `src/agent/agent.ts`). Calibrations: the efficiency factors of the roofline step-time
 * model (see `roofline.ts`), one set per engine behaviour that was measured or assumed.
 */

export type Dtype = 'bf16' | 'f16' | 'fp8';

/** Bytes per element of weights and KV cache for a dtype. */
export function dtypeBytes(dtype: Dtype): number {
  return dtype === 'fp8' ? 1 : 2;
}

export interface MoeProfile {
  /** Experts per MoE layer. */
  experts: number;
  /** Experts each token is routed to. */
  topK: number;
  /** Parameters of all experts of all layers (the part of `params` that is routed). */
  expertParams: number;
}

export interface ModelProfile {
  name: string;
  layers: number;
  hidden: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  ffn: number;
  vocab: number;
  /** Total parameters. */
  params: number;
  /** Parameters used per token (= params for dense models). */
  activeParams: number;
  moe?: MoeProfile;
  /** Native weight dtype of the checkpoint. */
  defaultDtype: Dtype;
  /** Maximum context length of the model. */
  maxModelLen: number;
  source: string;
}

export interface GpuProfile {
  name: string;
  aliases: readonly string[];
  /** Device memory in bytes (as nvidia-smi reports it). */
  memoryBytes: number;
  /** HBM / GDDR bandwidth, bytes per second. */
  memoryBandwidth: number;
  /** Dense bf16/f16 tensor throughput, FLOP/s. */
  bf16Flops: number;
  /** Dense fp8 tensor throughput, FLOP/s; null when the GPU has no fp8 tensor cores. */
  fp8Flops: number | null;
  /** GPU-to-GPU bandwidth per direction, bytes per second (NVLink, or PCIe when there is none). */
  linkBandwidth: number;
  /** Latency of one small all-reduce across the GPUs of a replica, seconds. */
  allReduceLatency: number;
  source: string;
}

/** Efficiency factors of the step-time model; see `roofline.ts` for how each is used. */
export interface Calibration {
  name: string;
  description: string;
  /** Model FLOPs utilisation of the matmuls (fraction of the dense peak). */
  mfu: number;
  /**
   * When set, the matmul MFU of a micro-batch of T tokens is `mfu × T / (T + mfuHalfTokens)`
   * (small batches use the tensor cores poorly); default: constant `mfu`.
   */
  mfuHalfTokens?: number;
  /**
   * How compute and memory time combine in a micro-batch: 'max' (ideal overlap, the roofline;
   * default) or 'sum' (no overlap, as separate kernels in llama.cpp's graph).
   */
  combine?: 'max' | 'sum';
  /** Fraction of the peak memory bandwidth achieved reading weights (η). */
  hbmEfficiency: number;
  /** Fraction of the peak bandwidth achieved reading/writing the KV cache (default η). */
  kvEfficiency?: number;
  /** Attention FLOPs run at `mfu × attentionEfficiency` (default 1). */
  attentionEfficiency?: number;
  /**
   * What one token's attention covers: its own sequence ('sequence', paged attention as in vLLM), or
   * every KV cell in use by the batch ('batch', as llama.cpp's unified KV cache with a mask).
   */
  attentionScope?: 'sequence' | 'batch';
  /** When set, a step is run as micro-batches of this many tokens, each reading the weights once. */
  ubatchTokens?: number;
  /** Fixed cost of every step, ms (scheduling, kernel launches, sampling). */
  stepOverheadMs: number;
  /** Cost per scheduled sequence per step, ms (per-sequence sampling and bookkeeping). */
  perSeqOverheadMs?: number;
  /** Delay before a request reaches the scheduler, ms (HTTP parsing, tokenization). */
  frontendMs?: number;
  /** Extra frontend delay per prompt token, ms (tokenization). */
  frontendMsPerPromptToken?: number;
  /** Engine defaults that this calibration implies (explicit engine options win). */
  defaults?: {
    maxNumSeqs?: number;
    maxNumBatchedTokens?: number;
    enablePrefixCaching?: boolean;
    model?: string;
    gpu?: string;
    dtype?: Dtype;
  };
  source: string;
}

export const MODELS: Readonly<Record<string, ModelProfile>> = Object.freeze({
  'llama-3.1-8b': {
    name: 'llama-3.1-8b',
    layers: 32,
    hidden: 4096,
    heads: 32,
    kvHeads: 8,
    headDim: 128,
    ffn: 14336,
    vocab: 128256,
    params: 8.03e9,
    activeParams: 8.03e9,
    defaultDtype: 'bf16',
    maxModelLen: 131072,
    source: 'meta-llama/Llama-3.1-8B config.json; 8.03B parameters (model card)',
  },
  'llama-3.1-70b': {
    name: 'llama-3.1-70b',
    layers: 80,
    hidden: 8192,
    heads: 64,
    kvHeads: 8,
    headDim: 128,
    ffn: 28672,
    vocab: 128256,
    params: 70.6e9,
    activeParams: 70.6e9,
    defaultDtype: 'bf16',
    maxModelLen: 131072,
    source: 'meta-llama/Llama-3.1-70B config.json; 70.6B parameters (model card)',
  },
  'qwen3-32b': {
    name: 'qwen3-32b',
    layers: 64,
    hidden: 5120,
    heads: 64,
    kvHeads: 8,
    headDim: 128,
    ffn: 25600,
    vocab: 151936,
    params: 32.8e9,
    activeParams: 32.8e9,
    defaultDtype: 'bf16',
    maxModelLen: 40960,
    source: 'Qwen/Qwen3-32B config.json; 32.8B parameters (model card)',
  },
  'mixtral-8x7b': {
    name: 'mixtral-8x7b',
    layers: 32,
    hidden: 4096,
    heads: 32,
    kvHeads: 8,
    headDim: 128,
    ffn: 14336,
    vocab: 32000,
    params: 46.7e9,
    activeParams: 12.9e9,
    // 8 experts × 3 matrices (w1, w2, w3) × 4096 × 14336 × 32 layers = 45.1B routed parameters;
    // the remaining 1.6B (attention, embeddings, norms, router) are used by every token.
    moe: { experts: 8, topK: 2, expertParams: 8 * 3 * 4096 * 14336 * 32 },
    defaultDtype: 'bf16',
    maxModelLen: 32768,
    source: 'mistralai/Mixtral-8x7B-v0.1 config.json; 46.7B total / 12.9B active (Mistral AI)',
  },
  'llama-2-7b': {
    name: 'llama-2-7b',
    layers: 32,
    hidden: 4096,
    heads: 32,
    kvHeads: 32,
    headDim: 128,
    ffn: 11008,
    vocab: 32000,
    params: 6.74e9,
    activeParams: 6.74e9,
    defaultDtype: 'f16',
    maxModelLen: 4096,
    source:
      'meta-llama/Llama-2-7b config.json; 6.74B parameters; the shape of reference/h100-llamacpp.md',
  },
});

export const GPUS: Readonly<Record<string, GpuProfile>> = Object.freeze({
  'H100-80GB': {
    name: 'H100-80GB',
    aliases: ['H100', 'H100-SXM', 'H100-SXM5', 'H100-80GB-HBM3'],
    memoryBytes: 81559 * 2 ** 20, // 85.52e9
    memoryBandwidth: 3.35e12,
    bf16Flops: 989e12,
    fp8Flops: 1979e12,
    linkBandwidth: 450e9, // NVLink 4: 900 GB/s bidirectional
    allReduceLatency: 6e-6,
    source: 'NVIDIA H100 SXM datasheet (80 GB HBM3, 3.35 TB/s, 989 / 1,979 TFLOP/s dense)',
  },
  'H200-141GB': {
    name: 'H200-141GB',
    aliases: ['H200', 'H200-SXM'],
    memoryBytes: 143771 * 2 ** 20, // nvidia-smi; the datasheet says 141 GB
    memoryBandwidth: 4.8e12,
    bf16Flops: 989e12,
    fp8Flops: 1979e12,
    linkBandwidth: 450e9,
    allReduceLatency: 6e-6,
    source: 'NVIDIA H200 SXM datasheet (141 GB HBM3e, 4.8 TB/s, 989 / 1,979 TFLOP/s dense)',
  },
  'A100-80GB': {
    name: 'A100-80GB',
    aliases: ['A100', 'A100-SXM', 'A100-SXM4-80GB'],
    memoryBytes: 81920 * 2 ** 20,
    memoryBandwidth: 2.039e12,
    bf16Flops: 312e12,
    fp8Flops: null, // no fp8 tensor cores: fp8 weights are dequantised, matmuls run at bf16 rate
    linkBandwidth: 300e9, // NVLink 3: 600 GB/s bidirectional
    allReduceLatency: 8e-6,
    source: 'NVIDIA A100 80GB SXM datasheet (2,039 GB/s, 312 TFLOP/s dense bf16)',
  },
  'L40S-48GB': {
    name: 'L40S-48GB',
    aliases: ['L40S'],
    memoryBytes: 46068 * 2 ** 20,
    memoryBandwidth: 0.864e12,
    bf16Flops: 362e12,
    fp8Flops: 733e12,
    linkBandwidth: 32e9, // no NVLink: PCIe 4.0 x16
    allReduceLatency: 25e-6,
    source: 'NVIDIA L40S datasheet (48 GB GDDR6, 864 GB/s, 362 / 733 TFLOP/s dense)',
  },
  'B200-180GB': {
    name: 'B200-180GB',
    aliases: ['B200'],
    memoryBytes: 183359 * 2 ** 20,
    memoryBandwidth: 8e12,
    bf16Flops: 2250e12,
    fp8Flops: 4500e12,
    linkBandwidth: 900e9, // NVLink 5: 1.8 TB/s bidirectional
    allReduceLatency: 5e-6,
    source: 'NVIDIA DGX B200 per-GPU figures (180 GB HBM3e, 8 TB/s, 2.25 / 4.5 PFLOP/s dense)',
  },
});

export const CALIBRATIONS: Readonly<Record<string, Calibration>> = Object.freeze({
  default: {
    name: 'default',
    description:
      'vLLM-like: paged attention, CUDA graphs, continuous batching with chunked prefill',
    // Prefill of long prompts with FlashAttention reaches roughly half of the dense peak on H100
    // (vLLM / FA3 measurements are 40-60%); weight streaming reaches ~80% of HBM bandwidth.
    mfu: 0.5,
    hbmEfficiency: 0.8,
    kvEfficiency: 0.8,
    attentionEfficiency: 0.5,
    attentionScope: 'sequence',
    stepOverheadMs: 0.15,
    perSeqOverheadMs: 0.003,
    source: 'assumed (reference/h100-llamacpp.md roofline notes: η ≈ 0.8); not fitted',
  },
  'llamacpp-h100': {
    name: 'llamacpp-h100',
    description:
      'llama.cpp server on one H100 (reference/h100-llamacpp.md): n_batch 2048 split in ubatches ' +
      'of 512 (each reads the weights), no compute/memory overlap, CPU sampling per slot',
    // Fitted by coordinate descent on all reference cells (targets weighted 10×), then rounded:
    // - decode c=1 at 201/1001/1601 prompts (5.92/6.13/6.26 ms) → η 0.8 on 13.5 GB of f16 weights,
    //   KV read slope ≈ 0.2 ms per 1,000 tokens of context (ηkv ≈ 0.9 with sum combine);
    // - decode ITL growing ≈ 0.5-0.7 ms per extra slot (c = 4…32) → perSeqOverheadMs 0.5;
    // - prefill sweep (17/37/65/124 ms for 129…1,901 tokens) → MFU 0.38 per 512-token ubatch,
    //   plus a prompt-length-dependent delay outside the step loop (TTFT − server prompt time
    //   grows from 3 to 13 ms: tokenization, HTTP) → frontend 5 ms + 0.0075 ms per prompt token.
    mfu: 0.38,
    hbmEfficiency: 0.8,
    kvEfficiency: 0.9,
    attentionEfficiency: 0.8,
    attentionScope: 'sequence',
    combine: 'sum',
    ubatchTokens: 512,
    stepOverheadMs: 0.5,
    perSeqOverheadMs: 0.5,
    frontendMs: 5,
    frontendMsPerPromptToken: 0.0075,
    defaults: {
      maxNumSeqs: 48,
      maxNumBatchedTokens: 2048,
      model: 'llama-2-7b',
      gpu: 'H100-80GB',
      dtype: 'f16',
    },
    source: 'fitted to reference/h100-llamacpp.md (bench/sim-calibration.mjs prints the fit)',
  },
});

function norm(s: string): string {
  return s.trim().toLowerCase();
}

/** Looks up a model profile by name (case-insensitive). */
export function findModel(name: string): ModelProfile | undefined {
  const n = norm(name);
  return Object.values(MODELS).find((m) => norm(m.name) === n);
}

/** Looks up a GPU profile by name or alias (case-insensitive). */
export function findGpu(name: string): GpuProfile | undefined {
  const n = norm(name);
  return Object.values(GPUS).find(
    (g) => norm(g.name) === n || g.aliases.some((a) => norm(a) === n),
  );
}

export function findCalibration(name: string): Calibration | undefined {
  const n = norm(name);
  return Object.values(CALIBRATIONS).find((c) => norm(c.name) === n);
}

/** KV-cache bytes per token for the whole model (all layers, K and V, all KV heads). */
export function kvBytesPerToken(model: ModelProfile, dtype: Dtype): number {
  return 2 * model.layers * model.kvHeads * model.headDim * dtypeBytes(dtype);
}

/** Weight bytes of the whole model (all TP ranks together). */
export function weightBytes(model: ModelProfile, dtype: Dtype): number {
  return model.params * dtypeBytes(dtype);
}

/** Dense tensor throughput of one GPU for a dtype (fp8 falls back to bf16 without fp8 cores). */
export function peakFlops(gpu: GpuProfile, dtype: Dtype): number {
  return dtype === 'fp8' ? (gpu.fp8Flops ?? gpu.bf16Flops) : gpu.bf16Flops;
}
