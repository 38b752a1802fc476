/**
 * Roofline step-time model of the simulated engine.
 *
 * One engine step runs the model over exactly the tokens scheduled in it (prefill chunks and decode
 * tokens together). Its time is
 *
 *   step = Σ_micro-batches [ max(compute, memory) + comm ] + stepOverhead + perSeq × sequences
 *   (then × slowFactor, applied by the engine)
 *
 * per micro-batch (the whole step is one micro-batch unless the calibration sets `ubatchTokens`,
 * as llama.cpp does with n_ubatch), with T tokens:
 *
 * - compute = 2 · activeParams · T / (MFU · peak · tp)
 *           + attnFLOPs / (MFU · attentionEfficiency · peak · tp),
 *   attnFLOPs = 4 · layers · heads · headDim · (query, key) pairs (QKᵀ and PV, 2 FLOPs per MAC).
 *   Pairs: 'sequence' scope (paged attention): a chunk of n new tokens after c cached ones attends
 *   causally, n·c + n(n+1)/2 pairs; 'batch' scope (llama.cpp unified KV cache with a mask): every
 *   token of the micro-batch is scored against every KV cell in use, T · cellsInUse pairs.
 * - memory = weightBytes / (η · BW · tp) + kvBytes / (ηkv · BW · tp), where
 *   weightBytes = params · dtypeBytes for dense models; for MoE the shared part plus the experts
 *   the micro-batch touches: with T tokens routed top-k of E experts uniformly, the expected
 *   fraction of experts touched per layer is 1 − (1 − k/E)^T;
 *   kvBytes = (Σ context tokens read + T tokens written) · kvBytesPerToken ('batch' scope reads all
 *   cells in use once per micro-batch).
 * - comm (tp > 1): two all-reduces per layer (after attention and after the MLP), each moving
 *   2 · (tp−1)/tp · hidden · T · 2 bytes over the GPU link, plus a fixed latency per all-reduce.
 *
 * Weights and KV are split evenly across the tp ranks, so per-GPU work is the total / tp.
 */
import {
  dtypeBytes,
  kvBytesPerToken,
  peakFlops,
  type Calibration,
  type Dtype,
  type GpuProfile,
  type ModelProfile,
} from './profiles.js';

export interface RooflineConfig {
  model: ModelProfile;
  gpu: GpuProfile;
  dtype: Dtype;
  tp: number;
  calibration: Calibration;
}

/** One sequence's share of a step. */
export interface StepSeq {
  /** Tokens computed for this sequence in the step (a prefill chunk, or 1 for decode). */
  newTokens: number;
  /** Tokens of this sequence already in the KV cache before the step. */
  contextTokens: number;
}

export interface StepCost {
  seconds: number;
  flops: number;
  bytes: number;
  computeSeconds: number;
  memorySeconds: number;
  commSeconds: number;
  overheadSeconds: number;
  microBatches: number;
}

/** Activation bytes per element moved by the TP all-reduces (bf16). */
const ACT_BYTES = 2;

/** Weight bytes read by a micro-batch of `tokens` tokens (all ranks together). */
export function weightBytesTouched(model: ModelProfile, dtype: Dtype, tokens: number): number {
  const b = dtypeBytes(dtype);
  if (!model.moe) return model.params * b;
  const { experts, topK, expertParams } = model.moe;
  const fraction = 1 - Math.pow(1 - topK / experts, Math.max(1, tokens));
  return (model.params - expertParams + expertParams * fraction) * b;
}

/** Time of one step over `seqs`; `cellsInUse` = KV tokens held by all running sequences. */
export function stepCost(
  cfg: RooflineConfig,
  seqs: readonly StepSeq[],
  cellsInUse?: number,
): StepCost {
  const { model, gpu, dtype, tp, calibration: cal } = cfg;
  const peak = peakFlops(gpu, dtype) * tp;
  const bw = gpu.memoryBandwidth * tp;
  const eta = cal.hbmEfficiency;
  const etaKv = cal.kvEfficiency ?? eta;
  const attnEff = cal.attentionEfficiency ?? 1;
  const kvB = kvBytesPerToken(model, dtype);
  const dAttn = model.heads * model.headDim;
  const scope = cal.attentionScope ?? 'sequence';
  const cells = cellsInUse ?? seqs.reduce((s, q) => s + q.contextTokens + q.newTokens, 0);

  // Split the step's tokens (in schedule order) into micro-batches.
  const ub = cal.ubatchTokens && cal.ubatchTokens > 0 ? cal.ubatchTokens : Infinity;
  const micro: StepSeq[][] = [];
  let cur: StepSeq[] = [];
  let room = ub;
  for (const q of seqs) {
    let left = q.newTokens;
    let ctx = q.contextTokens;
    while (left > 0) {
      const n = Math.min(left, room);
      cur.push({ newTokens: n, contextTokens: ctx });
      left -= n;
      ctx += n;
      room -= n;
      if (room === 0) {
        micro.push(cur);
        cur = [];
        room = ub;
      }
    }
  }
  if (cur.length > 0) micro.push(cur);

  let flops = 0;
  let bytes = 0;
  let compute = 0;
  let memory = 0;
  let comm = 0;
  let seconds = 0;
  for (const mb of micro) {
    const t = mb.reduce((s, q) => s + q.newTokens, 0);
    let pairs = 0;
    let kvRead = 0;
    if (scope === 'batch') {
      pairs = t * cells;
      kvRead = cells;
    } else {
      for (const q of mb) {
        pairs += q.newTokens * q.contextTokens + (q.newTokens * (q.newTokens + 1)) / 2;
        kvRead += q.contextTokens;
      }
    }
    const mmFlops = 2 * model.activeParams * t;
    const attnFlops = 4 * model.layers * dAttn * pairs;
    const wBytes = weightBytesTouched(model, dtype, t);
    const kvBytes = (kvRead + t) * kvB;
    const mfu = cal.mfuHalfTokens ? (cal.mfu * t) / (t + cal.mfuHalfTokens) : cal.mfu;
    const c = mmFlops / (mfu * peak) + attnFlops / (cal.mfu * attnEff * peak);
    const m = wBytes / (eta * bw) + kvBytes / (etaKv * bw);
    let cm = 0;
    if (tp > 1) {
      const perAllReduce =
        (2 * ((tp - 1) / tp) * model.hidden * t * ACT_BYTES) / gpu.linkBandwidth +
        gpu.allReduceLatency;
      cm = 2 * model.layers * perAllReduce;
    }
    flops += mmFlops + attnFlops;
    bytes += wBytes + kvBytes;
    compute += c;
    memory += m;
    comm += cm;
    seconds += (cal.combine === 'sum' ? c + m : Math.max(c, m)) + cm;
  }
  const overhead = (cal.stepOverheadMs + (cal.perSeqOverheadMs ?? 0) * seqs.length) / 1000;
  seconds += overhead;
  return {
    seconds,
    flops,
    bytes,
    computeSeconds: compute,
    memorySeconds: memory,
    commSeconds: comm,
    overheadSeconds: overhead,
    microBatches: micro.length,
  };
}
