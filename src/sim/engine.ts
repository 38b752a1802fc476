/**
 * The timing model of the simulated engine: a vLLM-v1-like step loop over a paged KV cache.
 *
 * `EngineCore` accepts requests ({promptTokens, promptTokenIds, maxTokens, stop, seed, signal}) and
 * emits generated tokens through callbacks. While there is work, one timer drives the loop; each
 * step:
 *
 * 1. schedules: running requests first, in admission order (a decoding request needs 1 token, a
 *    request still in prefill takes its next chunk), then waiting requests FIFO while
 *    `running < maxNumSeqs`, the step's token budget `maxNumBatchedTokens` (chunked prefill: a long
 *    prompt is split across steps) and the KV blocks allow. A request that needs a block when none
 *    is free (even after evicting unreferenced cached blocks) preempts the most recently admitted
 *    running request (recompute: its blocks are freed, its progress reset, it goes to the front of
 *    the waiting queue); no new request is admitted in a step that preempted.
 * 2. prices the step with the roofline model (`roofline.ts`) over exactly the tokens scheduled.
 * 3. when the step's time has elapsed: prefill chunks progress, full prompt blocks become cached
 *    (KV event `BlockStored`), requests whose prefill completed emit their first token, decoding
 *    requests emit one token each, finished requests free their blocks.
 *
 * An idle engine holds no timer. All waits go through a {@link Clock}: `realClock(timeScale)` for
 * servers, a `VirtualClock` for tests and calibration (identical behaviour, no real waiting).
 * Reported timings are simulated seconds, taken from the planned step timeline (no drift).
 *
 * Prefix caching: see `kvcache.ts`. On admission the longest cached prefix of full prompt blocks is
 * reused (at most `numTokens − 1` tokens, so a fully cached prompt still computes its last token,
 * as vLLM does); counted like vLLM (`prefixQueries` += prompt tokens looked up, `prefixHits` +=
 * cached tokens) on a request's first admission (not again after a preemption). Requests without
 * `promptTokenIds` share nothing (no hashes).
 *
 * Requests that can never fit: a prompt needing more blocks than the whole cache finishes at once
 * with reason 'length' and no tokens (so does a prompt longer than `maxModelLen`); a request that
 * alone fills the cache during generation finishes with 'length' at that point. `maxTokens` is
 * capped to `maxModelLen − prompt`. There is no EOS: generation runs to `maxTokens` or a stop string
 * (`ignoreEos` is accepted and changes nothing).
 */
import { realClock, type Clock, type TimerHandle } from './clock.js';
import { blockHashes, KvCacheManager, type KvBlock, type KvEventBatch } from './kvcache.js';
import {
  CALIBRATIONS,
  dtypeBytes,
  findCalibration,
  findGpu,
  findModel,
  GPUS,
  kvBytesPerToken,
  MODELS,
  weightBytes,
  type Calibration,
  type Dtype,
  type GpuProfile,
  type ModelProfile,
} from './profiles.js';
import { stepCost, type RooflineConfig, type StepCost, type StepSeq } from './roofline.js';
import { generatedToken, hashTokens } from './tokenizer.js';

export interface EngineOptions {
  /** Model profile (see `profiles.ts`). Default 'llama-3.1-8b' (or the calibration's model). */
  model?: string;
  /** GPU profile name or alias. Default 'H100-80GB'. */
  gpu?: string;
  /** Tensor-parallel GPUs per replica. Default 1. */
  tp?: number;
  /** Weight and KV dtype. Default: the model's native dtype. */
  dtype?: Dtype;
  /** Calibration of the step-time model, by name or as data. Default 'default' (vLLM-like). */
  calibration?: string | Calibration;
  /** Maximum running requests. Default 256 (or the calibration's). */
  maxNumSeqs?: number;
  /** Token budget per step. Default 8192 (or the calibration's). */
  maxNumBatchedTokens?: number;
  /** Tokens per KV block. Default 16. */
  blockSize?: number;
  /** Fraction of GPU memory for weights, activations and KV cache. Default 0.9. */
  gpuMemoryUtilization?: number;
  /** Number of KV blocks, instead of the memory computation (tests). */
  numGpuBlocksOverride?: number;
  /** Automatic prefix caching. Default true (or the calibration's). */
  enablePrefixCaching?: boolean;
  /** Maximum context length (prompt + generated). Default: the model's. */
  maxModelLen?: number;
  /** Real time = simulated time × timeScale, for the default real clock. Default 1. */
  timeScale?: number;
  /** Clock for every wait. Default `realClock(timeScale)`. */
  clock?: Clock;
}

export interface ResolvedEngineOptions {
  model: string;
  gpu: string;
  tp: number;
  dtype: Dtype;
  /** Name of the calibration (its data: `engine.profile.calibration`). */
  calibration: string;
  maxNumSeqs: number;
  maxNumBatchedTokens: number;
  blockSize: number;
  gpuMemoryUtilization: number;
  numGpuBlocksOverride: number | null;
  enablePrefixCaching: boolean;
  maxModelLen: number;
  timeScale: number;
}

export const DEFAULT_ENGINE_OPTIONS = Object.freeze({
  model: 'llama-3.1-8b',
  gpu: 'H100-80GB',
  tp: 1,
  calibration: 'default',
  maxNumSeqs: 256,
  maxNumBatchedTokens: 8192,
  blockSize: 16,
  gpuMemoryUtilization: 0.9,
  enablePrefixCaching: true,
  timeScale: 1,
});

/** The resolved hardware/model data of an engine (read by metrics and telemetry). */
export interface EngineProfile {
  model: ModelProfile;
  gpu: GpuProfile;
  tp: number;
  dtype: Dtype;
  calibration: Calibration;
  blockSize: number;
  numGpuBlocks: number;
  kvBytesPerToken: number;
  /** Weight bytes, all ranks together. */
  weightBytes: number;
  /** Activation / runtime reserve, all ranks together. */
  activationBytes: number;
  /** GPU memory of the replica (all ranks). */
  gpuMemoryBytes: number;
  gpuMemoryUtilization: number;
}

export type FinishReason = 'stop' | 'length' | 'abort';

export interface EngineRequest {
  /** Request id used in events and logs; generated when absent. */
  id?: string;
  /** Number of prompt tokens. Default: `promptTokenIds.length`. */
  promptTokens?: number;
  /** The prompt token ids (prefix caching keys on them; also seed generation). */
  promptTokenIds?: readonly number[];
  /** Maximum number of tokens to generate. */
  maxTokens: number;
  /** Accepted for API compatibility: the simulator has no EOS token. */
  ignoreEos?: boolean;
  /** Generation stops when the generated text contains one of these; the stop string is not emitted. */
  stop?: readonly string[];
  /** Generation seed: the same seed gives the same text. Default: derived from the prompt. */
  seed?: number;
  /** Aborting the signal cancels the request (same as `handle.cancel()`). */
  signal?: AbortSignal;
}

export interface TokenEvent {
  requestId: string;
  /** 0-based index of the generated token. */
  index: number;
  /** The token's full text. */
  token: string;
  /**
   * Text that may be sent to the client now. It can differ from `token`: text that could be the
   * start of a stop string is held back until it is known not to be, and a matched stop string is cut.
   */
  delta: string;
  /** Simulated seconds since the request arrived (for index 0 this is the TTFT). */
  sinceArrivalSec: number;
  /** Simulated seconds since the previous token (null for the first token). */
  sincePrevSec: number | null;
  /** Whether this is the last token (a finish event follows immediately). */
  last: boolean;
}

export interface PrefillEvent {
  requestId: string;
  promptTokens: number;
  /** Prompt tokens served from the prefix cache. */
  cachedTokens: number;
  /** Simulated seconds spent waiting in the queue. */
  queueSec: number;
  /** Simulated time to first token. */
  ttftSec: number;
}

export interface FinishEvent {
  requestId: string;
  finishReason: FinishReason;
  promptTokens: number;
  /** Prompt tokens served from the prefix cache (at first admission). */
  cachedTokens: number;
  completionTokens: number;
  /** Times the request was preempted (and recomputed). */
  preemptions: number;
  /** The emitted generated text (without the stop string). */
  text: string;
  /** The stop string that ended generation, when finishReason is 'stop'. */
  stopString: string | null;
  /** Simulated seconds waiting in the queue (up to now if aborted while waiting). */
  queueSec: number;
  /** Simulated time to first token, or null when aborted before it. */
  ttftSec: number | null;
  /** Simulated seconds from arrival to finish. */
  e2eSec: number;
}

export interface RequestCallbacks {
  onToken?(ev: TokenEvent): void;
  onFinish?(ev: FinishEvent): void;
}

/** Engine-wide observer (metrics, logging). */
export interface EngineListener {
  onPrefill?(ev: PrefillEvent): void;
  onToken?(ev: TokenEvent): void;
  onFinish?(ev: FinishEvent): void;
}

export interface RequestHandle {
  readonly id: string;
  /** Cancels the request (no-op once finished); it finishes with reason 'abort'. */
  cancel(): void;
  /** Resolves with the finish event; never rejects. */
  readonly done: Promise<FinishEvent>;
}

export interface EngineStats {
  numGpuBlocks: number;
  blockSize: number;
  /** Blocks referenced by running requests. */
  usedBlocks: number;
  /** usedBlocks / numGpuBlocks (0..1). */
  kvUsage: number;
  /** Prompt tokens looked up in the prefix cache (cumulative). */
  prefixQueries: number;
  /** Prompt tokens found in the prefix cache (cumulative, multiples of blockSize). */
  prefixHits: number;
  preemptions: number;
  /** Prompt tokens of requests whose prefill completed (cumulative). */
  promptTokens: number;
  /** Generated tokens (cumulative). */
  generationTokens: number;
  running: number;
  waiting: number;
}

type State = 'pending' | 'waiting' | 'running' | 'finished';

interface Req {
  id: string;
  promptTokens: number;
  promptIds: readonly number[] | null;
  hashes: string[] | null;
  maxTokens: number;
  stop: readonly string[];
  maxStopLen: number;
  seed: number;
  callbacks: RequestCallbacks;
  state: State;
  /** Simulated ms at arrival. */
  arrivalMs: number;
  /** Simulated ms at which it reaches the scheduler (arrival + frontend delay). */
  readyMs: number;
  /** Simulated ms of the start of the first step that scheduled it (null before). */
  admitMs: number | null;
  /** Tokens whose KV is computed. */
  numComputed: number;
  /** Prompt blocks already registered in the cache (or found there). */
  numStoredBlocks: number;
  blocks: KvBlock[];
  cachedTokens: number;
  looked: boolean;
  preemptions: number;
  prefillDone: boolean;
  frontendTimer: TimerHandle | null;
  generated: number;
  text: string;
  emittedLen: number;
  lastTokenMs: number;
  ttftSec: number | null;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | null;
  resolve: (ev: FinishEvent) => void;
}

interface Scheduled {
  req: Req;
  n: number;
}

function positive(name: string, v: number): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0)
    throw new RangeError(`${name} must be a positive number`);
  return v;
}

function positiveInt(name: string, v: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1)
    throw new RangeError(`${name} must be a positive integer`);
  return v;
}

function resolveCalibration(c: string | Calibration): Calibration {
  if (typeof c === 'string') {
    const cal = findCalibration(c);
    if (!cal)
      throw new RangeError(
        `calibration: unknown '${c}' (known: ${Object.keys(CALIBRATIONS).join(', ')})`,
      );
    return cal;
  }
  if (typeof c !== 'object' || c === null || typeof c.name !== 'string')
    throw new RangeError('calibration must be a calibration name or a Calibration object');
  const frac = (k: string, v: number | undefined): void => {
    if (v !== undefined && (typeof v !== 'number' || !(v > 0) || v > 1))
      throw new RangeError(`calibration.${k} must be in (0, 1]`);
  };
  const nonNeg = (k: string, v: number | undefined): void => {
    if (v !== undefined && (typeof v !== 'number' || !Number.isFinite(v) || v < 0))
      throw new RangeError(`calibration.${k} must be a non-negative number`);
  };
  frac('mfu', c.mfu);
  frac('hbmEfficiency', c.hbmEfficiency);
  frac('kvEfficiency', c.kvEfficiency);
  frac('attentionEfficiency', c.attentionEfficiency);
  nonNeg('stepOverheadMs', c.stepOverheadMs);
  nonNeg('perSeqOverheadMs', c.perSeqOverheadMs);
  nonNeg('frontendMs', c.frontendMs);
  nonNeg('frontendMsPerPromptToken', c.frontendMsPerPromptToken);
  if (c.ubatchTokens !== undefined) positiveInt('calibration.ubatchTokens', c.ubatchTokens);
  return Object.freeze({ ...c });
}

/** Options → defaults (engine, then the calibration's) → validated values. */
export function resolveEngineOptions(opts: EngineOptions = {}): ResolvedEngineOptions {
  const cal = resolveCalibration(opts.calibration ?? DEFAULT_ENGINE_OPTIONS.calibration);
  const d = cal.defaults ?? {};
  const modelName = opts.model ?? d.model ?? DEFAULT_ENGINE_OPTIONS.model;
  const model = findModel(modelName);
  if (!model)
    throw new RangeError(
      `model: unknown '${modelName}' (known: ${Object.keys(MODELS).join(', ')})`,
    );
  const gpuName = opts.gpu ?? d.gpu ?? DEFAULT_ENGINE_OPTIONS.gpu;
  const gpu = findGpu(gpuName);
  if (!gpu)
    throw new RangeError(`gpu: unknown '${gpuName}' (known: ${Object.keys(GPUS).join(', ')})`);
  const dtype = opts.dtype ?? d.dtype ?? model.defaultDtype;
  if (dtype !== 'bf16' && dtype !== 'f16' && dtype !== 'fp8')
    throw new RangeError(`dtype must be 'bf16', 'f16' or 'fp8'`);
  const tp = positiveInt('tp', opts.tp ?? DEFAULT_ENGINE_OPTIONS.tp);
  const util = opts.gpuMemoryUtilization ?? DEFAULT_ENGINE_OPTIONS.gpuMemoryUtilization;
  if (typeof util !== 'number' || !Number.isFinite(util) || util <= 0 || util > 1)
    throw new RangeError('gpuMemoryUtilization must be in (0, 1]');
  const override = opts.numGpuBlocksOverride;
  if (override !== undefined) positiveInt('numGpuBlocksOverride', override);
  const enablePrefixCaching =
    opts.enablePrefixCaching ?? d.enablePrefixCaching ?? DEFAULT_ENGINE_OPTIONS.enablePrefixCaching;
  if (typeof enablePrefixCaching !== 'boolean')
    throw new RangeError('enablePrefixCaching must be a boolean');
  return {
    model: model.name,
    gpu: gpu.name,
    tp,
    dtype,
    calibration: cal.name,
    maxNumSeqs: positiveInt(
      'maxNumSeqs',
      opts.maxNumSeqs ?? d.maxNumSeqs ?? DEFAULT_ENGINE_OPTIONS.maxNumSeqs,
    ),
    maxNumBatchedTokens: positiveInt(
      'maxNumBatchedTokens',
      opts.maxNumBatchedTokens ??
        d.maxNumBatchedTokens ??
        DEFAULT_ENGINE_OPTIONS.maxNumBatchedTokens,
    ),
    blockSize: positiveInt('blockSize', opts.blockSize ?? DEFAULT_ENGINE_OPTIONS.blockSize),
    gpuMemoryUtilization: util,
    numGpuBlocksOverride: override ?? null,
    enablePrefixCaching,
    maxModelLen: positiveInt('maxModelLen', opts.maxModelLen ?? model.maxModelLen),
    timeScale: positive('timeScale', opts.timeScale ?? DEFAULT_ENGINE_OPTIONS.timeScale),
  };
}

/** One GiB per GPU of non-activation runtime memory (CUDA context, NCCL, CUDA graphs). */
export const RUNTIME_RESERVE_BYTES_PER_GPU = 2 ** 30;

/**
 * Activation / runtime reserve of a replica (all ranks), a documented estimate of what vLLM's
 * profiling run finds: per GPU, {@link RUNTIME_RESERVE_BYTES_PER_GPU} plus the peak live tensors of
 * one layer for a full step of `maxNumBatchedTokens` tokens (residual, q/k/v and attention output
 * ≈ 4 × hidden, gate/up/product ≈ 3 × ffn / tp, 2 bytes each), plus fp32 logits for `maxNumSeqs`.
 */
export function activationReserveBytes(
  model: ModelProfile,
  tp: number,
  maxNumBatchedTokens: number,
  maxNumSeqs: number,
): number {
  const perGpu =
    RUNTIME_RESERVE_BYTES_PER_GPU +
    maxNumBatchedTokens * (4 * model.hidden + (3 * model.ffn) / tp) * 2 +
    maxNumSeqs * model.vocab * 4;
  return tp * perGpu;
}

/**
 * KV blocks of a replica: floor((gpuMemory × tp × util − weights − activations) /
 * (blockSize × kvBytesPerToken)), all quantities over all tp ranks (each rank holds 1/tp of the
 * weights and of every KV block).
 */
export function computeNumGpuBlocks(o: ResolvedEngineOptions): number {
  const model = findModel(o.model) as ModelProfile;
  const gpu = findGpu(o.gpu) as GpuProfile;
  const budget = gpu.memoryBytes * o.tp * o.gpuMemoryUtilization;
  const free =
    budget -
    weightBytes(model, o.dtype) -
    activationReserveBytes(model, o.tp, o.maxNumBatchedTokens, o.maxNumSeqs);
  return Math.floor(free / (o.blockSize * kvBytesPerToken(model, o.dtype)));
}

let nextRequestNumber = 0;

export class EngineCore {
  readonly options: Readonly<ResolvedEngineOptions>;
  readonly profile: Readonly<EngineProfile>;
  readonly clock: Clock;
  readonly #roof: RooflineConfig;
  readonly #kv: KvCacheManager;
  readonly #waiting: Req[] = [];
  readonly #running: Req[] = [];
  readonly #pending = new Set<Req>();
  readonly #listeners = new Set<EngineListener>();
  readonly #kvListeners = new Set<(batch: KvEventBatch) => void>();
  #timer: TimerHandle | null = null;
  #inStep = false;
  #current: { sched: Scheduled[]; endMs: number } | null = null;
  #lastEndMs = -Infinity;
  #slowFactor = 1;
  #closed = false;
  #lastStep: StepCost | null = null;
  #stats = {
    prefixQueries: 0,
    prefixHits: 0,
    preemptions: 0,
    promptTokens: 0,
    generationTokens: 0,
  };

  constructor(options: EngineOptions = {}) {
    const o = resolveEngineOptions(options);
    this.options = Object.freeze(o);
    this.clock = options.clock ?? realClock(o.timeScale);
    const model = findModel(o.model) as ModelProfile;
    const gpu = findGpu(o.gpu) as GpuProfile;
    const calibration = resolveCalibration(options.calibration ?? o.calibration);
    const numGpuBlocks = o.numGpuBlocksOverride ?? computeNumGpuBlocks(o);
    if (numGpuBlocks < 1)
      throw new RangeError(
        `gpuMemoryUtilization: ${o.model} (${o.dtype}) does not fit on ${o.tp} × ${o.gpu} with room for a KV cache`,
      );
    this.profile = Object.freeze({
      model,
      gpu,
      tp: o.tp,
      dtype: o.dtype,
      calibration,
      blockSize: o.blockSize,
      numGpuBlocks,
      kvBytesPerToken: kvBytesPerToken(model, o.dtype),
      weightBytes: model.params * dtypeBytes(o.dtype),
      activationBytes: activationReserveBytes(model, o.tp, o.maxNumBatchedTokens, o.maxNumSeqs),
      gpuMemoryBytes: gpu.memoryBytes * o.tp,
      gpuMemoryUtilization: o.gpuMemoryUtilization,
    });
    this.#roof = { model, gpu, dtype: o.dtype, tp: o.tp, calibration };
    this.#kv = new KvCacheManager(numGpuBlocks, o.blockSize);
  }

  /** Number of requests admitted and generating (prefill or decode). */
  get running(): number {
    return this.#running.length;
  }

  /** Number of requests waiting for admission (including those still in the frontend). */
  get waiting(): number {
    return this.#waiting.length + this.#pending.size;
  }

  /** Simulated clock, in milliseconds (monotonic; arbitrary origin). */
  nowMs(): number {
    return this.clock.now();
  }

  /** Cost breakdown of the last step that was started (null before the first). */
  get lastStep(): StepCost | null {
    return this.#lastStep;
  }

  stats(): EngineStats {
    const used = this.#kv.numUsed;
    return {
      numGpuBlocks: this.#kv.numBlocks,
      blockSize: this.#kv.blockSize,
      usedBlocks: used,
      kvUsage: used / this.#kv.numBlocks,
      ...this.#stats,
      running: this.running,
      waiting: this.waiting,
    };
  }

  /** Multiplies every subsequent step time by `f` (fault injection; 1 = normal). */
  setSlowFactor(f: number): void {
    positive('slowFactor', f);
    this.#slowFactor = f;
  }

  get slowFactor(): number {
    return this.#slowFactor;
  }

  /** Adds an engine-wide listener; returns a function that removes it. */
  addListener(listener: EngineListener): () => void {
    this.#listeners.add(listener);
    return () => {
      this.#listeners.delete(listener);
    };
  }

  /** Subscribes to KV-cache events, delivered in one batch per step; returns an unsubscribe. */
  onKvEvent(listener: (batch: KvEventBatch) => void): () => void {
    this.#kvListeners.add(listener);
    return () => {
      this.#kvListeners.delete(listener);
    };
  }

  /** Drops every cached prefix block (emits `AllBlocksCleared` at once). */
  resetPrefixCache(): void {
    this.#kv.reset();
    this.#flushKvEvents(this.clock.now());
  }

  submit(request: EngineRequest, callbacks: RequestCallbacks = {}): RequestHandle {
    const ids = request.promptTokenIds ?? null;
    const promptTokens = Math.max(0, Math.floor(request.promptTokens ?? ids?.length ?? 0));
    const maxTokens = Math.max(
      0,
      Math.min(Math.floor(request.maxTokens), this.options.maxModelLen - promptTokens),
    );
    const stop = (request.stop ?? []).filter((s) => s.length > 0);
    const id = request.id ?? `req-${++nextRequestNumber}`;
    const seed = request.seed ?? (ids ? hashTokens(ids) : 0);
    const now = this.clock.now();
    let resolve!: (ev: FinishEvent) => void;
    const done = new Promise<FinishEvent>((r) => {
      resolve = r;
    });
    const req: Req = {
      id,
      promptTokens,
      promptIds: ids,
      hashes: null,
      maxTokens,
      stop,
      maxStopLen: stop.reduce((m, s) => Math.max(m, s.length), 0),
      seed,
      callbacks,
      state: 'pending',
      arrivalMs: now,
      readyMs: now,
      admitMs: null,
      numComputed: 0,
      numStoredBlocks: 0,
      blocks: [],
      cachedTokens: 0,
      looked: false,
      preemptions: 0,
      prefillDone: false,
      frontendTimer: null,
      generated: 0,
      text: '',
      emittedLen: 0,
      lastTokenMs: now,
      ttftSec: null,
      signal: request.signal,
      onAbort: null,
      resolve,
    };
    const handle: RequestHandle = { id, cancel: () => this.#cancel(req), done };
    this.#pending.add(req);

    if (this.#closed || request.signal?.aborted) {
      // Never call back synchronously from submit().
      queueMicrotask(() => this.#cancel(req));
      return handle;
    }
    if (request.signal) {
      req.onAbort = () => this.#cancel(req);
      request.signal.addEventListener('abort', req.onAbort, { once: true });
    }
    const cal = this.profile.calibration;
    const frontendMs = (cal.frontendMs ?? 0) + (cal.frontendMsPerPromptToken ?? 0) * promptTokens;
    req.readyMs = now + frontendMs;
    if (frontendMs > 0) {
      req.frontendTimer = this.clock.setTimer(frontendMs, () => {
        req.frontendTimer = null;
        this.#enqueue(req);
      });
    } else {
      this.#enqueue(req);
    }
    return handle;
  }

  /** Cancels every waiting and running request (each finishes with 'abort'). */
  abortAll(): void {
    for (const req of [...this.#pending, ...this.#waiting, ...this.#running]) this.#cancel(req);
  }

  /** Aborts everything and clears timers; later submissions finish with 'abort'. */
  close(): void {
    this.#closed = true;
    this.abortAll();
    if (this.#timer) this.clock.clearTimer(this.#timer);
    this.#timer = null;
    this.#current = null;
  }

  #enqueue(req: Req): void {
    if (req.state !== 'pending') return;
    this.#pending.delete(req);
    req.state = 'waiting';
    this.#waiting.push(req);
    this.#kick(req.readyMs);
  }

  /**
   * Starts the loop when idle, after the current synchronous code, with the step starting at `atMs`
   * (the planned time, not the time the timer fires: a late real timer does not shift timings).
   */
  #kick(atMs: number): void {
    if (this.#timer || this.#inStep || this.#closed) return;
    this.#timer = this.clock.setTimer(0, () => {
      this.#timer = null;
      this.#startStep(Math.max(atMs, this.#lastEndMs));
    });
  }

  #startStep(startMs: number): void {
    // Callbacks run while scheduling (requests that can never fit finish): they may submit.
    this.#inStep = true;
    let sched: Scheduled[];
    try {
      sched = this.#schedule(startMs);
      for (let guard = 0; sched.length === 0 && this.#waiting.length > 0 && guard < 1000; guard++)
        sched = this.#schedule(startMs);
    } finally {
      this.#inStep = false;
    }
    if (this.#closed) return;
    if (sched.length === 0) {
      this.#flushKvEvents(startMs);
      return; // idle
    }
    // Under a late real clock a request may have arrived after the planned start.
    let start = startMs;
    for (const s of sched) if (s.req.readyMs > start) start = s.req.readyMs;
    for (const s of sched) if (s.req.admitMs === null) s.req.admitMs = start;
    const seqs: StepSeq[] = sched.map((s) => ({
      newTokens: s.n,
      contextTokens: s.req.numComputed,
    }));
    let cells = 0;
    for (const r of this.#running) cells += r.numComputed;
    for (const s of sched) cells += s.n;
    const cost = stepCost(this.#roof, seqs, cells);
    this.#lastStep = cost;
    const endMs = start + cost.seconds * 1000 * this.#slowFactor;
    this.#current = { sched, endMs };
    this.#timer = this.clock.setTimer(endMs - this.clock.now(), () => {
      this.#timer = null;
      this.#endStep();
    });
  }

  #schedule(startMs: number): Scheduled[] {
    const B = this.options.blockSize;
    const out: Scheduled[] = [];
    let budget = this.options.maxNumBatchedTokens;
    let preempted = false;

    for (let i = 0; i < this.#running.length && budget > 0;) {
      const req = this.#running[i] as Req;
      const total = req.promptTokens + req.generated;
      const n = Math.min(total - req.numComputed, budget);
      if (n <= 0) {
        i++;
        continue;
      }
      const need = Math.ceil((req.numComputed + n) / B) - req.blocks.length;
      let ok = true;
      while (need > 0 && this.#kv.numFree < need) {
        const victim = this.#running[this.#running.length - 1] as Req;
        if (victim === req) {
          if (this.#running.length === 1) {
            // Alone and out of blocks: the cache cannot hold this sequence.
            this.#finish(req, 'length', null, startMs);
          } else {
            this.#preempt(req);
            preempted = true;
          }
          ok = false;
          break;
        }
        this.#preempt(victim);
        preempted = true;
      }
      if (!ok) break;
      if (need > 0) req.blocks.push(...(this.#kv.allocate(need) as KvBlock[]));
      out.push({ req, n });
      budget -= n;
      i++;
    }

    if (preempted) return out;
    while (
      this.#waiting.length > 0 &&
      this.#running.length < this.options.maxNumSeqs &&
      budget > 0
    ) {
      const req = this.#waiting[0] as Req;
      const total = req.promptTokens + req.generated;
      if (
        req.promptTokens > this.options.maxModelLen ||
        Math.ceil((total + 1) / B) > this.#kv.numBlocks
      ) {
        this.#finish(req, 'length', null, startMs);
        continue;
      }
      let hits: KvBlock[] = [];
      if (this.options.enablePrefixCaching && req.promptIds) {
        req.hashes ??= blockHashes(req.promptIds, B, Math.floor(req.promptTokens / B));
        hits = this.#kv.lookup(req.hashes, Math.floor((total - 1) / B));
      }
      const cached = hits.length * B;
      const n = Math.min(total - cached, budget);
      const need = Math.ceil((cached + n) / B) - hits.length;
      const evictableHits = hits.reduce((s, b) => s + (b.refCount === 0 ? 1 : 0), 0);
      if (this.#kv.numFree - evictableHits < need) break;
      this.#kv.touch(hits);
      const fresh = this.#kv.allocate(need) as KvBlock[];
      req.blocks = [...hits, ...fresh];
      req.numComputed = cached;
      req.numStoredBlocks = hits.length;
      if (!req.looked) {
        req.looked = true;
        req.cachedTokens = cached;
        this.#stats.prefixQueries += total;
        this.#stats.prefixHits += cached;
      }
      this.#waiting.shift();
      req.state = 'running';
      this.#running.push(req);
      out.push({ req, n });
      budget -= n;
    }
    return out;
  }

  #preempt(req: Req): void {
    const i = this.#running.lastIndexOf(req);
    if (i !== -1) this.#running.splice(i, 1);
    this.#kv.free(req.blocks);
    req.blocks = [];
    req.numComputed = 0;
    req.numStoredBlocks = 0;
    req.preemptions++;
    this.#stats.preemptions++;
    req.state = 'waiting';
    this.#waiting.unshift(req);
  }

  #endStep(): void {
    const cur = this.#current;
    this.#current = null;
    if (!cur) return;
    const t = cur.endMs;
    this.#lastEndMs = t;
    this.#inStep = true;
    try {
      for (const { req, n } of cur.sched) {
        if (req.state !== 'running') continue; // cancelled during the step
        req.numComputed += n;
        this.#storeBlocks(req);
        if (req.numComputed < req.promptTokens + req.generated) continue; // prefill goes on
        if (!req.prefillDone) {
          req.prefillDone = true;
          this.#stats.promptTokens += req.promptTokens;
          const ttftSec = (t - req.arrivalMs) / 1000;
          const ev: PrefillEvent = {
            requestId: req.id,
            promptTokens: req.promptTokens,
            cachedTokens: req.cachedTokens,
            queueSec: ((req.admitMs ?? t) - req.arrivalMs) / 1000,
            ttftSec,
          };
          for (const l of this.#listeners) safeCall(() => l.onPrefill?.(ev));
          if (req.maxTokens === 0) {
            req.ttftSec = ttftSec;
            this.#finish(req, 'length', null, t);
            continue;
          }
        }
        this.#emitToken(req, t);
      }
      this.#flushKvEvents(t);
    } finally {
      this.#inStep = false;
    }
    if (!this.#closed) this.#startStep(t);
  }

  /** Registers the request's newly completed full prompt blocks; queues BlockStored events. */
  #storeBlocks(req: Req): void {
    if (!this.options.enablePrefixCaching || !req.promptIds || !req.hashes) return;
    const B = this.options.blockSize;
    const full = Math.min(Math.floor(req.numComputed / B), req.hashes.length);
    let batch: string[] = [];
    let batchStart = req.numStoredBlocks;
    const flush = (): void => {
      if (batch.length === 0) return;
      const ids = req.promptIds as readonly number[];
      this.#kv.pushEvent({
        type: 'BlockStored',
        blockHashes: batch,
        parentBlockHash: batchStart > 0 ? (req.hashes?.[batchStart - 1] ?? null) : null,
        tokenIds: ids.slice(batchStart * B, (batchStart + batch.length) * B),
        blockSize: B,
      });
      batch = [];
    };
    for (let k = req.numStoredBlocks; k < full; k++) {
      const hash = req.hashes[k] as string;
      const block = req.blocks[k];
      if (block && this.#kv.cacheBlock(block, hash)) {
        if (batch.length === 0) batchStart = k;
        batch.push(hash);
      } else {
        flush();
      }
    }
    flush();
    if (full > req.numStoredBlocks) req.numStoredBlocks = full;
  }

  #flushKvEvents(atMs: number): void {
    const events = this.#kv.takeEvents();
    if (events.length === 0 || this.#kvListeners.size === 0) return;
    const batch: KvEventBatch = { ts: atMs / 1000, events };
    for (const l of this.#kvListeners) safeCall(() => l(batch));
  }

  #emitToken(req: Req, atMs: number): void {
    const index = req.generated;
    const token = generatedToken(req.seed, index);
    req.generated++;
    this.#stats.generationTokens++;
    const prevLen = req.text.length;
    req.text += token;

    let stopString: string | null = null;
    let cut = req.text.length;
    if (req.stop.length > 0) {
      // Earliest stop match in the region the new token could complete.
      const from = Math.max(0, prevLen - req.maxStopLen + 1);
      let best = -1;
      for (const s of req.stop) {
        const at = req.text.indexOf(s, from);
        if (at !== -1 && (best === -1 || at < best)) {
          best = at;
          stopString = s;
        }
      }
      if (best !== -1) cut = best;
    }
    const lastByLength = req.generated >= req.maxTokens;
    const last = stopString !== null || lastByLength;
    let emitTo = cut;
    if (!last && req.stop.length > 0) emitTo = req.text.length - heldBack(req.text, req.stop);
    emitTo = Math.max(emitTo, req.emittedLen);
    const delta = req.text.slice(req.emittedLen, emitTo);
    req.emittedLen = emitTo;
    if (stopString !== null) req.text = req.text.slice(0, cut);

    const sinceArrivalSec = Math.max(0, (atMs - req.arrivalMs) / 1000);
    let sincePrevSec: number | null = null;
    if (index === 0) req.ttftSec = sinceArrivalSec;
    else sincePrevSec = (atMs - req.lastTokenMs) / 1000;
    req.lastTokenMs = atMs;

    const tev: TokenEvent = {
      requestId: req.id,
      index,
      token,
      delta,
      sinceArrivalSec,
      sincePrevSec,
      last,
    };
    safeCall(() => req.callbacks.onToken?.(tev));
    for (const l of this.#listeners) safeCall(() => l.onToken?.(tev));
    if (req.state !== 'running') return; // cancelled from a callback
    if (last) this.#finish(req, stopString !== null ? 'stop' : 'length', stopString, atMs);
  }

  #cancel(req: Req): void {
    if (req.state === 'finished') return;
    this.#finish(req, 'abort', null);
  }

  #finish(req: Req, reason: FinishReason, stopString: string | null, atMs?: number): void {
    if (req.state === 'finished') return;
    const prev = req.state;
    req.state = 'finished';
    if (req.frontendTimer) {
      this.clock.clearTimer(req.frontendTimer);
      req.frontendTimer = null;
    }
    if (req.signal && req.onAbort) req.signal.removeEventListener('abort', req.onAbort);
    req.onAbort = null;
    if (prev === 'pending') this.#pending.delete(req);
    else if (prev === 'waiting') {
      const i = this.#waiting.indexOf(req);
      if (i !== -1) this.#waiting.splice(i, 1);
    } else {
      const i = this.#running.indexOf(req);
      if (i !== -1) this.#running.splice(i, 1);
    }
    this.#kv.free(req.blocks);
    req.blocks = [];

    const now = atMs ?? Math.max(this.clock.now(), req.arrivalMs);
    const ev: FinishEvent = {
      requestId: req.id,
      finishReason: reason,
      promptTokens: req.promptTokens,
      cachedTokens: req.cachedTokens,
      completionTokens: req.generated,
      preemptions: req.preemptions,
      text: req.text.slice(0, req.emittedLen),
      stopString,
      queueSec: ((req.admitMs ?? now) - req.arrivalMs) / 1000,
      ttftSec: req.ttftSec,
      e2eSec: (now - req.arrivalMs) / 1000,
    };
    safeCall(() => req.callbacks.onFinish?.(ev));
    for (const l of this.#listeners) safeCall(() => l.onFinish?.(ev));
    req.resolve(ev);
    // A cancellation can free room for waiting requests while the engine is idle.
    if (!this.#inStep && this.#current === null && this.#waiting.length > 0)
      this.#kick(Math.max(this.clock.now(), this.#lastEndMs));
  }
}

/** Length of the longest suffix of `text` that is a proper prefix of a stop string. */
function heldBack(text: string, stop: readonly string[]): number {
  let hold = 0;
  for (const s of stop) {
    for (let len = Math.min(s.length - 1, text.length); len > hold; len--) {
      if (text.endsWith(s.slice(0, len))) {
        hold = len;
        break;
      }
    }
  }
  return hold;
}

/** Callback errors must not break the engine's timers; report them and go on. */
function safeCall(fn: () => void): void {
  try {
    fn();
  } catch (err) {
    console.error('sim engine: callback threw', err);
  }
}
