/**
 * Calibration harness of the simulated engine: closed-loop workloads on a {@link VirtualClock}
 * (deterministic, instant) and the reference measurements they are compared with.
 *
 * Metric definitions follow reference/metrics-definitions.md (AIPerf): TTFT per request; ITL per
 * request = (latency − TTFT) / (OSL − 1), only when OSL ≥ 2; p50 with linear interpolation.
 */
import { VirtualClock } from './clock.js';
import { EngineCore, type EngineOptions, type FinishEvent } from './engine.js';

export interface ClosedLoopWorkload {
  concurrency: number;
  /** Requests measured in total (each client sends its next request when one finishes). */
  requests: number;
  /** Prompt length in tokens (shared prefix included). */
  promptTokens: number;
  /** Leading tokens identical in every prompt (prefix-cache workloads). Default 0. */
  sharedPrefixTokens?: number;
  outputTokens: number;
  /** Requests run (one at a time) before the measured ones, e.g. to warm a prefix. Default 0. */
  warmupRequests?: number;
  /** Seed of the prompt token ids. Default 1. */
  seed?: number;
}

export interface ClosedLoopResult {
  ttftMs: number[];
  itlMs: number[];
  ttftP50Ms: number;
  itlP50Ms: number | null;
  /** Σ output tokens / (last finish − first send). */
  outputTokPerSec: number;
  durationSec: number;
  preemptions: number;
  finished: FinishEvent[];
}

/** Percentile with linear interpolation between closest ranks (numpy's default). */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const rank = (p / 100) * (s.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  const a = s[lo] as number;
  const b = s[hi] as number;
  return a + (b - a) * (rank - lo);
}

function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Runs a closed-loop workload on a fresh engine with a virtual clock. */
export function runClosedLoop(
  options: Omit<EngineOptions, 'clock'>,
  w: ClosedLoopWorkload,
): ClosedLoopResult {
  const clock = new VirtualClock();
  const engine = new EngineCore({ ...options, clock });
  const rand = rng(w.seed ?? 1);
  const shared = Array.from({ length: w.sharedPrefixTokens ?? 0 }, () =>
    Math.floor(rand() * 32000),
  );
  const prompt = (): number[] => {
    const ids = shared.slice(0, w.promptTokens);
    while (ids.length < w.promptTokens) ids.push(Math.floor(rand() * 32000));
    return ids;
  };

  for (let i = 0; i < (w.warmupRequests ?? 0); i++) {
    engine.submit({ promptTokenIds: prompt(), maxTokens: w.outputTokens, ignoreEos: true });
    clock.runUntilIdle();
  }
  const preemptionsBefore = engine.stats().preemptions;

  const finished: FinishEvent[] = [];
  let sent = 0;
  const t0 = clock.now();
  let tEnd = t0;
  const send = (): void => {
    if (sent >= w.requests) return;
    sent++;
    engine.submit(
      { promptTokenIds: prompt(), maxTokens: w.outputTokens, ignoreEos: true },
      {
        onFinish: (ev) => {
          finished.push(ev);
          tEnd = clock.now();
          send();
        },
      },
    );
  };
  for (let i = 0; i < w.concurrency; i++) send();
  clock.runUntilIdle();
  engine.close();

  const ttftMs: number[] = [];
  const itlMs: number[] = [];
  let osl = 0;
  for (const ev of finished) {
    osl += ev.completionTokens;
    if (ev.ttftSec !== null) ttftMs.push(ev.ttftSec * 1000);
    if (ev.ttftSec !== null && ev.completionTokens >= 2)
      itlMs.push(((ev.e2eSec - ev.ttftSec) * 1000) / (ev.completionTokens - 1));
  }
  const durationSec = (tEnd - t0) / 1000;
  return {
    ttftMs,
    itlMs,
    ttftP50Ms: percentile(ttftMs, 50),
    itlP50Ms: itlMs.length > 0 ? percentile(itlMs, 50) : null,
    outputTokPerSec: durationSec > 0 ? osl / durationSec : 0,
    durationSec,
    preemptions: engine.stats().preemptions - preemptionsBefore,
    finished,
  };
}

export interface ReferenceCell {
  table: 1 | 2;
  phase: string;
  promptTokens: number;
  sharedPrefixTokens?: number;
  outputTokens: number;
  concurrency: number;
  ttftP50Ms: number;
  itlP50Ms: number | null;
  outputTokPerSec: number | null;
  /** Warm the shared prefix with one request first (prefix-hit cells). */
  warm?: boolean;
  /** Cells that the llamacpp-h100 calibration must match within 15%. */
  target?: boolean;
}

/** reference/h100-llamacpp.md: llama.cpp server, Llama-2-7B shape f16, one H100 80GB HBM3. */
export const LLAMACPP_H100_REFERENCE: readonly ReferenceCell[] = Object.freeze([
  // Table 1: 1,000-token unique prompts, 128 output tokens (ignore_eos).
  {
    table: 1,
    phase: 'unique',
    promptTokens: 1001,
    outputTokens: 128,
    concurrency: 1,
    ttftP50Ms: 60,
    itlP50Ms: 6.1,
    outputTokPerSec: 154,
    target: true,
  },
  {
    table: 1,
    phase: 'unique',
    promptTokens: 1001,
    outputTokens: 128,
    concurrency: 16,
    ttftP50Ms: 233,
    itlP50Ms: 20.7,
    outputTokPerSec: 624,
    target: true,
  },
  {
    table: 1,
    phase: 'unique',
    promptTokens: 1001,
    outputTokens: 128,
    concurrency: 48,
    ttftP50Ms: 289,
    itlP50Ms: 49.6,
    outputTokPerSec: 904,
    target: true,
  },
  {
    table: 1,
    phase: 'shared 1500+100',
    promptTokens: 1600,
    sharedPrefixTokens: 1500,
    outputTokens: 128,
    concurrency: 16,
    ttftP50Ms: 93,
    itlP50Ms: 24.6,
    outputTokPerSec: 559,
    warm: true,
  },
  // Table 2: calibration sweep.
  ...[
    [129, 17.1],
    [513, 37.1],
    [1025, 65.0],
    [1901, 124.0],
  ].map(([p, ttft]): ReferenceCell => ({
    table: 2,
    phase: 'prefill',
    promptTokens: p as number,
    outputTokens: 2,
    concurrency: 1,
    ttftP50Ms: ttft as number,
    itlP50Ms: null,
    outputTokPerSec: null,
  })),
  ...[
    [1, 21.7, 5.92, 167],
    [4, 80.2, 8.11, 476],
    [8, 98.3, 9.53, 806],
    [16, 167.3, 16.62, 935],
    [32, 271.8, 29.19, 1064],
  ].map(([c, ttft, itl, tps]): ReferenceCell => ({
    table: 2,
    phase: 'decode',
    promptTokens: 201,
    outputTokens: 256,
    concurrency: c as number,
    ttftP50Ms: ttft as number,
    itlP50Ms: itl as number,
    outputTokPerSec: tps as number,
  })),
  ...[
    [1, 61.9, 6.13, 152],
    [16, 250.9, 22.97, 572],
    [32, 274.2, 37.25, 808],
  ].map(([c, ttft, itl, tps]): ReferenceCell => ({
    table: 2,
    phase: 'reference',
    promptTokens: 1001,
    outputTokens: 128,
    concurrency: c as number,
    ttftP50Ms: ttft as number,
    itlP50Ms: itl as number,
    outputTokPerSec: tps as number,
  })),
  {
    table: 2,
    phase: 'prefix miss',
    promptTokens: 1601,
    outputTokens: 64,
    concurrency: 1,
    ttftP50Ms: 104.1,
    itlP50Ms: 6.26,
    outputTokPerSec: 128,
  },
  {
    table: 2,
    phase: 'prefix hit',
    promptTokens: 1601,
    sharedPrefixTokens: 1501,
    outputTokens: 64,
    concurrency: 1,
    ttftP50Ms: 26.7,
    itlP50Ms: 6.17,
    outputTokPerSec: 152,
    warm: true,
  },
  {
    table: 2,
    phase: 'prefix hit',
    promptTokens: 1601,
    sharedPrefixTokens: 1501,
    outputTokens: 64,
    concurrency: 16,
    ttftP50Ms: 117.2,
    itlP50Ms: 19.83,
    outputTokPerSec: 527,
    warm: true,
  },
]);

export interface CellResult {
  cell: ReferenceCell;
  sim: ClosedLoopResult;
  ttftErrPct: number;
  itlErrPct: number | null;
}

/** Runs one reference cell with `requestsPerClient` requests per client (default 4, at least 8). */
export function runReferenceCell(
  options: Omit<EngineOptions, 'clock'>,
  cell: ReferenceCell,
  requestsPerClient = 4,
): CellResult {
  const sim = runClosedLoop(options, {
    concurrency: cell.concurrency,
    requests: Math.max(8, requestsPerClient * cell.concurrency),
    promptTokens: cell.promptTokens,
    sharedPrefixTokens: cell.sharedPrefixTokens ?? 0,
    outputTokens: cell.outputTokens,
    warmupRequests: cell.warm ? 1 : 0,
  });
  const err = (s: number, r: number): number => ((s - r) / r) * 100;
  return {
    cell,
    sim,
    ttftErrPct: err(sim.ttftP50Ms, cell.ttftP50Ms),
    itlErrPct:
      cell.itlP50Ms !== null && sim.itlP50Ms !== null ? err(sim.itlP50Ms, cell.itlP50Ms) : null,
  };
}
