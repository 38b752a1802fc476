/**
 * The timing model of the simulated engine.
 *
 * `EngineCore` accepts requests ({promptTokens, maxTokens, stop, seed, signal}) and emits generated
 * tokens over time through callbacks. The current model is deliberately simple:
 *
 * - at most `maxConcurrency` requests run at once; the rest wait in a FIFO queue;
 * - once admitted, a request spends `promptTokens / prefillTokensPerSecond` seconds in prefill, at
 *   the end of which its first token is emitted (so TTFT = queue wait + prefill);
 * - then one token every `decodeMsPerToken` until `maxTokens` tokens were generated or a stop string
 *   appears in the generated text.
 *
 * Everything is timer driven (one timer per running request, no busy loops). Timers are scheduled
 * against the planned timeline (admission time + prefill + k × decode) so they do not drift.
 *
 * Time is simulated: `timeScale` multiplies every real wait (0.1 runs ten times faster), while all
 * reported timings (TTFT, inter-token gaps, e2e) are in simulated seconds. The simulated clock is
 * the real monotonic clock divided by `timeScale`; token timestamps are the planned ones, queue waits
 * are measured.
 *
 * Later work (continuous batching, paged KV cache, prefix caching, roofline step times) is meant to
 * replace the per-request timers with a step loop behind the same `submit`/callbacks interface.
 */
import { generatedToken, hashTokens } from './tokenizer.js';

export interface EngineOptions {
  /** Prefill throughput in prompt tokens per simulated second. Default 20 000. */
  prefillTokensPerSecond?: number;
  /** Simulated milliseconds per decoded token. Default 10. */
  decodeMsPerToken?: number;
  /** Maximum number of running requests; extra requests wait in FIFO order. Default 256. */
  maxConcurrency?: number;
  /** Real time = simulated time × timeScale. Default 1 (must be > 0). */
  timeScale?: number;
}

export type ResolvedEngineOptions = Required<EngineOptions>;

export const DEFAULT_ENGINE_OPTIONS: ResolvedEngineOptions = Object.freeze({
  prefillTokensPerSecond: 20_000,
  decodeMsPerToken: 10,
  maxConcurrency: 256,
  timeScale: 1,
});

export type FinishReason = 'stop' | 'length' | 'abort';

export interface EngineRequest {
  /** Request id used in events and logs; generated when absent. */
  id?: string;
  /** Number of prompt tokens (drives prefill time). */
  promptTokens: number;
  /** The prompt token ids, when known (kept for prefix caching; also seeds generation). */
  promptTokenIds?: readonly number[];
  /** Maximum number of tokens to generate. */
  maxTokens: number;
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
  /** Simulated seconds spent waiting in the queue. */
  queueSec: number;
  /** Simulated time to first token. */
  ttftSec: number;
}

export interface FinishEvent {
  requestId: string;
  finishReason: FinishReason;
  promptTokens: number;
  completionTokens: number;
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

type State = 'waiting' | 'running' | 'finished';

interface Req {
  id: string;
  promptTokens: number;
  maxTokens: number;
  stop: readonly string[];
  maxStopLen: number;
  seed: number;
  callbacks: RequestCallbacks;
  state: State;
  /** Simulated ms at arrival / admission. */
  arrivalMs: number;
  admitMs: number;
  /** Real ms at admission (timeline origin for timers). */
  admitRealMs: number;
  prefillMs: number;
  timer: NodeJS.Timeout | null;
  generated: number;
  text: string;
  emittedLen: number;
  lastTokenSimMs: number;
  ttftSec: number | null;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | null;
  resolve: (ev: FinishEvent) => void;
}

function positive(name: string, v: number): number {
  if (!Number.isFinite(v) || v <= 0) throw new RangeError(`${name} must be a positive number`);
  return v;
}

function nonNegative(name: string, v: number): number {
  if (!Number.isFinite(v) || v < 0) throw new RangeError(`${name} must be a non-negative number`);
  return v;
}

export function resolveEngineOptions(opts: EngineOptions = {}): ResolvedEngineOptions {
  const o = { ...DEFAULT_ENGINE_OPTIONS };
  if (opts.prefillTokensPerSecond !== undefined)
    o.prefillTokensPerSecond = positive('prefillTokensPerSecond', opts.prefillTokensPerSecond);
  if (opts.decodeMsPerToken !== undefined)
    o.decodeMsPerToken = nonNegative('decodeMsPerToken', opts.decodeMsPerToken);
  if (opts.maxConcurrency !== undefined) {
    if (!Number.isInteger(opts.maxConcurrency) || opts.maxConcurrency < 1)
      throw new RangeError('maxConcurrency must be a positive integer');
    o.maxConcurrency = opts.maxConcurrency;
  }
  if (opts.timeScale !== undefined) o.timeScale = positive('timeScale', opts.timeScale);
  return o;
}

let nextRequestNumber = 0;

export class EngineCore {
  readonly options: ResolvedEngineOptions;
  readonly #waiting = new Set<Req>();
  readonly #running = new Set<Req>();
  readonly #listeners = new Set<EngineListener>();

  constructor(options: EngineOptions = {}) {
    this.options = Object.freeze(resolveEngineOptions(options));
  }

  /** Number of requests admitted and generating (prefill or decode). */
  get running(): number {
    return this.#running.size;
  }

  /** Number of requests waiting for a slot. */
  get waiting(): number {
    return this.#waiting.size;
  }

  /** Simulated clock, in milliseconds (monotonic; arbitrary origin). */
  nowMs(): number {
    return performance.now() / this.options.timeScale;
  }

  /** Adds an engine-wide listener; returns a function that removes it. */
  addListener(listener: EngineListener): () => void {
    this.#listeners.add(listener);
    return () => {
      this.#listeners.delete(listener);
    };
  }

  submit(request: EngineRequest, callbacks: RequestCallbacks = {}): RequestHandle {
    const promptTokens = Math.max(0, Math.floor(request.promptTokens));
    const maxTokens = Math.max(0, Math.floor(request.maxTokens));
    const stop = (request.stop ?? []).filter((s) => s.length > 0);
    const id = request.id ?? `req-${++nextRequestNumber}`;
    const seed = request.seed ?? (request.promptTokenIds ? hashTokens(request.promptTokenIds) : 0);
    const realNow = performance.now();
    const now = realNow / this.options.timeScale;
    let resolve!: (ev: FinishEvent) => void;
    const done = new Promise<FinishEvent>((r) => {
      resolve = r;
    });
    const req: Req = {
      id,
      promptTokens,
      maxTokens,
      stop,
      maxStopLen: stop.reduce((m, s) => Math.max(m, s.length), 0),
      seed,
      callbacks,
      state: 'waiting',
      arrivalMs: now,
      admitMs: now,
      admitRealMs: 0,
      prefillMs: (promptTokens / this.options.prefillTokensPerSecond) * 1000,
      timer: null,
      generated: 0,
      text: '',
      emittedLen: 0,
      lastTokenSimMs: 0,
      ttftSec: null,
      signal: request.signal,
      onAbort: null,
      resolve,
    };
    const handle: RequestHandle = { id, cancel: () => this.#cancel(req), done };

    if (request.signal) {
      if (request.signal.aborted) {
        // Never call back synchronously from submit().
        this.#waiting.add(req);
        queueMicrotask(() => this.#cancel(req));
        return handle;
      }
      req.onAbort = () => this.#cancel(req);
      request.signal.addEventListener('abort', req.onAbort, { once: true });
    }
    this.#waiting.add(req);
    this.#pump(realNow);
    return handle;
  }

  /** Cancels every waiting and running request (each finishes with 'abort'). */
  abortAll(): void {
    for (const req of [...this.#waiting, ...this.#running]) this.#cancel(req);
  }

  #pump(realNow = performance.now()): void {
    while (this.#running.size < this.options.maxConcurrency && this.#waiting.size > 0) {
      const req = this.#waiting.values().next().value as Req;
      this.#waiting.delete(req);
      this.#admit(req, realNow);
    }
  }

  #admit(req: Req, realNow: number): void {
    req.state = 'running';
    this.#running.add(req);
    req.admitRealMs = realNow;
    req.admitMs = req.admitRealMs / this.options.timeScale;
    if (req.maxTokens === 0) {
      // Nothing to generate: finish after prefill.
      this.#schedule(req, req.prefillMs, () => this.#finish(req, 'length', null));
      return;
    }
    this.#schedule(req, req.prefillMs, () => this.#emitToken(req));
  }

  /** Schedules `fn` at `simOffsetMs` simulated ms after admission. */
  #schedule(req: Req, simOffsetMs: number, fn: () => void): void {
    const target = req.admitRealMs + simOffsetMs * this.options.timeScale;
    const delay = Math.max(0, target - performance.now());
    req.timer = setTimeout(() => {
      req.timer = null;
      fn();
    }, delay);
  }

  #emitToken(req: Req): void {
    if (req.state !== 'running') return;
    const index = req.generated;
    const plannedMs = req.admitMs + req.prefillMs + index * this.options.decodeMsPerToken;
    const token = generatedToken(req.seed, index);
    req.generated++;
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

    const sinceArrivalSec = (plannedMs - req.arrivalMs) / 1000;
    let sincePrevSec: number | null = null;
    if (index === 0) {
      req.ttftSec = sinceArrivalSec;
      const ev: PrefillEvent = {
        requestId: req.id,
        promptTokens: req.promptTokens,
        queueSec: (req.admitMs - req.arrivalMs) / 1000,
        ttftSec: sinceArrivalSec,
      };
      for (const l of this.#listeners) safeCall(() => l.onPrefill?.(ev));
    } else {
      sincePrevSec = (plannedMs - req.lastTokenSimMs) / 1000;
    }
    req.lastTokenSimMs = plannedMs;

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

    if (last) {
      this.#finish(req, stopString !== null ? 'stop' : 'length', stopString, plannedMs);
      return;
    }
    this.#schedule(req, req.prefillMs + req.generated * this.options.decodeMsPerToken, () =>
      this.#emitToken(req),
    );
  }

  #cancel(req: Req): void {
    if (req.state === 'finished') return;
    this.#finish(req, 'abort', null);
  }

  #finish(req: Req, reason: FinishReason, stopString: string | null, atSimMs?: number): void {
    if (req.state === 'finished') return;
    const wasWaiting = req.state === 'waiting';
    req.state = 'finished';
    if (req.timer) {
      clearTimeout(req.timer);
      req.timer = null;
    }
    if (req.signal && req.onAbort) req.signal.removeEventListener('abort', req.onAbort);
    req.onAbort = null;
    if (wasWaiting) this.#waiting.delete(req);
    else this.#running.delete(req);

    const now = atSimMs ?? this.nowMs();
    const ev: FinishEvent = {
      requestId: req.id,
      finishReason: reason,
      promptTokens: req.promptTokens,
      completionTokens: req.generated,
      text: req.text.slice(0, req.emittedLen),
      stopString,
      queueSec: ((wasWaiting ? now : req.admitMs) - req.arrivalMs) / 1000,
      ttftSec: req.ttftSec,
      e2eSec: (now - req.arrivalMs) / 1000,
    };
    safeCall(() => req.callbacks.onFinish?.(ev));
    for (const l of this.#listeners) safeCall(() => l.onFinish?.(ev));
    req.resolve(ev);
    this.#pump();
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
