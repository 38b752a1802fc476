// Per-tenant limits at the gateway edge: requests per second, tokens per minute, concurrency.
//
// - requestsPerSecond: token bucket of capacity max(1, rps), refilled rps per second; a request
//   takes one token.
// - tokensPerMinute: bucket of capacity tpm, refilled tpm/60 per second. A request is admitted
//   when the bucket holds at least min(estimate, capacity) — so one request larger than the whole
//   minute is not refused forever — and then the estimate is deducted. `release(actual)` corrects
//   by (actual − estimate): the bucket may go negative (debt), which delays later requests.
// - maxConcurrency: requests admitted and not yet released.
// Every check runs first; only an admitted request consumes anything. A refusal is
// IP_RATE_LIMITED naming the limit(s), with `retryAfterS` = ceil(seconds until it would pass),
// at least 1 (concurrency alone: 1, as its wait is unknown).
//
// Headers (OpenAI names), only for the limits that are set, on admission and on refusal:
//   x-ratelimit-limit-requests      bucket capacity, max(1, rps) (the burst)
//   x-ratelimit-remaining-requests  whole requests left in the bucket (after this one)
//   x-ratelimit-reset-requests      time until the bucket is full again
//   x-ratelimit-limit-tokens        tpm
//   x-ratelimit-remaining-tokens    whole tokens left (after this estimate), 0 when in debt
//   x-ratelimit-reset-tokens        time until the bucket is full again
// Durations are Go-style like OpenAI's: "0s", "20ms", "0.2s" (under a minute: seconds with up to
// three decimals, sub-second values under 0.1 s in ms), "1m30s", "6m0s", "1h2m3s"; rounded up to
// the millisecond. maxConcurrency has no header.
//
// A tenant without limits (undefined, or none set) gets one shared frozen admission: no state,
// no allocation, an empty frozen header object, a no-op release. State exists per limited tenant
// only; `retain` drops tenants that left the snapshot (a release after that is harmless).
//
// Several workers (node:cluster processes, or gateway replicas) each run a TenantLimiter built
// with `workers: N`; a coordinator splits every tenant's limits between them by demand
// (LimitShareBalancer in limit-shares.ts) and hands each worker its `LimitShare`s through
// `setShares`, so the tenant's total stays within its configured limits with no per-request
// coordination. A tenant without a share from the coordinator (none yet, or absent from the
// map) uses `{ rate: 1/N }`. With share `rate` r and configured rps, tpm, c the local limits are:
//   requests  rate rps × r per second, capacity max(1, max(1, rps) × r): a worker can always
//             hold one whole request, so a small tenant is not starved on any worker. The burst
//             summed over N workers can therefore exceed the global burst by at most N − 1
//             requests; the sustained rate stays rps (Σ r = 1).
//   tokens    rate tpm/60 × r per second, capacity tpm × r (a request larger than the local
//             capacity passes on a full bucket, as above).
//   in flight share.concurrency ?? ceil(c × r). The coordinator's whole slots sum to c; the
//             default's ceil may exceed c in total until the first shares arrive.
// A share change refills at the old rate up to now, then resizes and clamps the levels (a share
// that grows adds capacity, not tokens). With N = 1 and no shares, r = 1 and everything above is
// exactly the single-process limiter.
// Headers and refusal messages describe the tenant's GLOBAL limits: the limit headers and the
// messages name the configured values; remaining = floor(local level / r), capped at the global
// capacity, is an estimate of the tenant's whole budget (exact only when the other workers hold
// the same fraction of theirs); reset = the local time to full, which is the global one under
// proportional shares. Retry-After is the local wait.
// Demand for the coordinator: every admit() of a limited tenant, admitted or refused, counts one
// attempt and its token estimate on the tenant's state (two increments); requests in flight are
// counted for every limited tenant (so a maxConcurrency set while requests are in flight counts
// them too). `takeDemand()` returns and resets the counters once a round.
import { performance } from 'node:perf_hooks';
import { InferplaneError } from '../core/errors.js';
import type { TenantLimits } from '../core/types.js';

export interface RateLimitHeaders {
  readonly [name: string]: string;
}

export type Admission =
  | {
      ok: true;
      headers: RateLimitHeaders;
      /** Call exactly once when the request ends; usage corrects the token estimate. Idempotent. */
      release(actualTokens?: number): void;
    }
  | {
      ok: false;
      error: InferplaneError;
      headers: RateLimitHeaders;
      /** The first limit that refused (metrics label). */
      limit: LimitKind;
    };

export type LimitKind = 'requests' | 'tokens' | 'concurrency';

const EMPTY_HEADERS: RateLimitHeaders = Object.freeze({});
const NO_LIMITS: Admission = Object.freeze({
  ok: true as const,
  headers: EMPTY_HEADERS,
  release(): void {},
});

interface Bucket {
  capacity: number;
  /** Units per millisecond. */
  rate: number;
  level: number;
  at: number;
}

/**
 * This worker's part of one tenant's limits, from the coordinator: `rate` is its fraction (0..1]
 * of the tenant's requests/s and tokens/min, `concurrency` its whole number of in-flight slots
 * (may be 0; absent: ceil(maxConcurrency × rate)).
 */
export interface LimitShare {
  rate: number;
  concurrency?: number;
}

/** One tenant's demand on one worker since the last `takeDemand()`. */
export interface TenantDemand {
  /** admit() calls, admitted or refused. */
  attempts: number;
  /** Sum of their token estimates. */
  tokens: number;
  /** Requests admitted and not yet released, now. */
  inflight: number;
}

interface TenantState {
  req: Bucket | undefined;
  tok: Bucket | undefined;
  /** Admitted and not yet released (every limited tenant). */
  inflight: number;
  /** This worker's fraction of the tenant's rates. */
  rate: number;
  /** In-flight slots from the coordinator, or -1: ceil(maxConcurrency × rate). */
  slots: number;
  /** The configured limits of the last admit (0: unset): a share change resizes with them. */
  rps: number;
  tpm: number;
  /** Since the last takeDemand(). */
  attempts: number;
  tokens: number;
}

/** A share's rate, in (0, 1]; anything else falls back to `fallback`. */
function shareRate(s: LimitShare | undefined, fallback: number): number {
  if (s === undefined || !(typeof s.rate === 'number' && s.rate > 0)) return fallback;
  return s.rate >= 1 ? 1 : s.rate;
}

/** A share's whole slots, or -1 (none given, or not a non-negative number). */
function shareSlots(s: LimitShare | undefined): number {
  const c = s?.concurrency;
  return typeof c === 'number' && c >= 0 && c !== Infinity ? Math.floor(c) : -1;
}

/** Requests bucket capacity for configured rps and share rate. */
function reqCapacity(rps: number, rate: number): number {
  return Math.max(1, Math.max(1, rps) * rate);
}

function positive(v: number | undefined): v is number {
  return typeof v === 'number' && Number.isFinite(v) && v > 0;
}

/** Whether any of the tenant's limits is in force (what `admit` counts as a limit). */
export function hasLimits(l: TenantLimits): boolean {
  return positive(l.requestsPerSecond) || positive(l.tokensPerMinute) || positive(l.maxConcurrency);
}

/** Creates, updates (limit changed: clamp the level) or drops a bucket, then refills it. */
function syncBucket(
  b: Bucket | undefined,
  capacity: number | undefined,
  perSecond: number,
  now: number,
): Bucket | undefined {
  if (capacity === undefined) return undefined;
  const rate = perSecond / 1000;
  if (b === undefined) return { capacity, rate, level: capacity, at: now };
  refill(b, now); // at the old rate up to now
  if (b.capacity !== capacity || b.rate !== rate) {
    b.capacity = capacity;
    b.rate = rate;
    if (b.level > capacity) b.level = capacity;
  }
  return b;
}

function refill(b: Bucket, now: number): void {
  const dt = now - b.at;
  if (dt > 0) {
    const level = b.level + dt * b.rate;
    b.level = level > b.capacity ? b.capacity : level;
    b.at = now;
  }
}

/** Tolerance for float drift in refills (0.005 × 200 ms must be a whole token). */
const EPS = 1e-9;

/** Milliseconds until the bucket holds `need`. */
function waitMs(b: Bucket, need: number): number {
  return b.level + EPS >= need ? 0 : (need - b.level) / b.rate;
}

/** Go-style duration, rounded up to the millisecond: "0s", "20ms", "0.2s", "6m0s", "1h2m3s". */
export function formatResetDuration(ms: number): string {
  const total = Math.max(0, Math.ceil(ms - 1e-6));
  if (total === 0) return '0s';
  if (total < 100) return `${total}ms`;
  const h = Math.floor(total / 3_600_000);
  const m = Math.floor((total % 3_600_000) / 60_000);
  const secMs = total % 60_000;
  const s = String(secMs / 1000);
  if (h > 0) return `${h}h${m}m${s}s`;
  if (m > 0) return `${m}m${s}s`;
  return `${s}s`;
}

/**
 * Headers for the tenant's global limits from this worker's buckets (share `rate`): limit = the
 * configured value, remaining = floor(local level / rate) capped at it (an estimate), reset = the
 * local time to full.
 */
function headersOf(
  req: Bucket | undefined,
  tok: Bucket | undefined,
  rps: number,
  tpm: number,
  rate: number,
): RateLimitHeaders {
  const h: Record<string, string> = {};
  if (req !== undefined) {
    const cap = Math.max(1, rps);
    h['x-ratelimit-limit-requests'] = String(cap);
    h['x-ratelimit-remaining-requests'] = String(remaining(req.level, rate, cap));
    h['x-ratelimit-reset-requests'] = formatResetDuration((req.capacity - req.level) / req.rate);
  }
  if (tok !== undefined) {
    h['x-ratelimit-limit-tokens'] = String(tpm);
    h['x-ratelimit-remaining-tokens'] = String(remaining(tok.level, rate, tpm));
    h['x-ratelimit-reset-tokens'] = formatResetDuration((tok.capacity - tok.level) / tok.rate);
  }
  return h;
}

/** Whole units left of the global budget, estimated from a local level: 0 when in debt. */
function remaining(level: number, rate: number, globalCap: number): number {
  const n = Math.floor(level / rate + EPS);
  const cap = Math.floor(globalCap + EPS);
  return n <= 0 ? 0 : n > cap ? cap : n;
}

/** Seconds for a message: one decimal, rounded up, at least 0.1. */
function fmtSeconds(ms: number): string {
  const tenths = Math.max(1, Math.ceil(ms / 100 - 1e-9));
  return String(tenths / 10);
}

export class TenantLimiter {
  readonly #now: () => number;
  readonly #tenants = new Map<string, TenantState>();
  /** 1 / workers: the rate of a tenant without a share. */
  readonly #defaultRate: number;
  #shares: ReadonlyMap<string, LimitShare> = new Map();

  /**
   * `workers`: how many limiters share each tenant's limits (default 1: this one enforces them
   * whole). A positive integer.
   */
  constructor(opts: { now?: () => number; workers?: number } = {}) {
    this.#now = opts.now ?? (() => performance.now());
    const workers = opts.workers ?? 1;
    if (!Number.isInteger(workers) || workers < 1) {
      throw new RangeError(`workers must be a positive integer, got ${workers}`);
    }
    this.#defaultRate = 1 / workers;
  }

  /**
   * Replaces this worker's shares (the coordinator's latest round). A tenant absent from the map
   * goes back to `{ rate: 1/workers }`. A rate outside (0, 1] is clamped to 1 or, when not
   * positive, ignored (default rate); a negative or non-numeric concurrency is ignored.
   * Buckets refill at the old rate up to now, then take the new rate and capacity (levels
   * clamped).
   */
  setShares(shares: ReadonlyMap<string, LimitShare>): void {
    this.#shares = new Map(shares);
    const now = this.#now();
    for (const [id, st] of this.#tenants) {
      const s = this.#shares.get(id);
      st.slots = shareSlots(s);
      const rate = shareRate(s, this.#defaultRate);
      if (rate === st.rate) continue;
      st.rate = rate;
      if (st.req !== undefined) {
        syncBucket(st.req, reqCapacity(st.rps, rate), st.rps * rate, now);
      }
      if (st.tok !== undefined) syncBucket(st.tok, st.tpm * rate, (st.tpm / 60) * rate, now);
    }
  }

  /**
   * Each limited tenant's demand since the last call (attempts, token estimates) and its
   * requests in flight now, for tenants with either; resets the attempt and token counters.
   */
  takeDemand(): Map<string, TenantDemand> {
    const out = new Map<string, TenantDemand>();
    for (const [id, st] of this.#tenants) {
      if (st.attempts === 0 && st.inflight === 0) continue;
      out.set(id, { attempts: st.attempts, tokens: st.tokens, inflight: st.inflight });
      st.attempts = 0;
      st.tokens = 0;
    }
    return out;
  }

  admit(tenantId: string, limits: TenantLimits | undefined, estimatedTokens: number): Admission {
    if (limits === undefined) return NO_LIMITS;
    const rps = positive(limits.requestsPerSecond) ? limits.requestsPerSecond : undefined;
    const tpm = positive(limits.tokensPerMinute) ? limits.tokensPerMinute : undefined;
    const conc = positive(limits.maxConcurrency) ? Math.floor(limits.maxConcurrency) : undefined;
    if (rps === undefined && tpm === undefined && conc === undefined) return NO_LIMITS;

    const now = this.#now();
    let st = this.#tenants.get(tenantId);
    if (st === undefined) {
      const s = this.#shares.get(tenantId);
      st = {
        req: undefined,
        tok: undefined,
        inflight: 0,
        rate: shareRate(s, this.#defaultRate),
        slots: shareSlots(s),
        rps: 0,
        tpm: 0,
        attempts: 0,
        tokens: 0,
      };
      this.#tenants.set(tenantId, st);
    }
    const rate = st.rate;
    st.rps = rps ?? 0;
    st.tpm = tpm ?? 0;
    const req = (st.req = syncBucket(
      st.req,
      rps === undefined ? undefined : reqCapacity(rps, rate),
      (rps ?? 0) * rate,
      now,
    ));
    const tok = (st.tok = syncBucket(
      st.tok,
      tpm === undefined ? undefined : tpm * rate,
      ((tpm ?? 0) / 60) * rate,
      now,
    ));
    const estimate =
      Number.isFinite(estimatedTokens) && estimatedTokens > 0 ? Math.ceil(estimatedTokens) : 0;
    st.attempts++;
    st.tokens += estimate;

    // All checks first.
    let first: LimitKind | undefined;
    let refused: string[] | undefined;
    let maxWait = 0;
    if (req !== undefined && req.level + EPS < 1) {
      const w = waitMs(req, 1);
      maxWait = Math.max(maxWait, w);
      (refused ??= []).push(`tenant limit of ${rps} requests/s exceeded`);
      first ??= 'requests';
    }
    if (tok !== undefined) {
      const need = Math.min(estimate, tok.capacity);
      if (tok.level + EPS < need) {
        const w = waitMs(tok, need);
        maxWait = Math.max(maxWait, w);
        (refused ??= []).push(`tenant limit of ${tpm} tokens/min exceeded`);
        first ??= 'tokens';
      }
    }
    if (
      conc !== undefined &&
      st.inflight >= (st.slots >= 0 ? st.slots : rate === 1 ? conc : Math.ceil(conc * rate - 1e-9))
    ) {
      maxWait = Math.max(maxWait, 1000);
      (refused ??= []).push(`tenant limit of ${conc} concurrent requests reached`);
      first ??= 'concurrency';
    }
    if (refused !== undefined) {
      const retryAfterS = Math.max(1, Math.ceil(maxWait / 1000 - 1e-9));
      const error = new InferplaneError(
        'IP_RATE_LIMITED',
        `${refused.join('; ')}; retry in ${fmtSeconds(maxWait)} s`,
        { retryAfterS },
      );
      return {
        ok: false,
        error,
        headers: headersOf(req, tok, st.rps, st.tpm, rate),
        limit: first ?? 'requests',
      };
    }

    // Then deduct.
    if (req !== undefined) req.level -= 1;
    if (tok !== undefined) tok.level -= estimate;
    st.inflight++;
    const state = st;
    const nowFn = this.#now;
    let released = false;
    return {
      ok: true,
      headers: headersOf(req, tok, st.rps, st.tpm, rate),
      release(actualTokens?: number): void {
        if (released) return;
        released = true;
        if (state.inflight > 0) state.inflight--;
        if (
          tok !== undefined &&
          state.tok === tok &&
          typeof actualTokens === 'number' &&
          Number.isFinite(actualTokens) &&
          actualTokens >= 0
        ) {
          refill(tok, nowFn());
          tok.level -= actualTokens - estimate;
          if (tok.level > tok.capacity) tok.level = tok.capacity;
        }
      },
    };
  }

  /** Drop the state of tenants not in this set (the snapshot changed). */
  retain(tenantIds: ReadonlySet<string>): void {
    for (const id of this.#tenants.keys()) if (!tenantIds.has(id)) this.#tenants.delete(id);
  }

  /** Requests admitted and not yet released (counted for every limited tenant). */
  inflight(tenantId: string): number {
    return this.#tenants.get(tenantId)?.inflight ?? 0;
  }
}

const DEFAULT_COMPLETION_TOKENS = 256;

/** Characters of a string, or tokens of a pre-tokenized prompt, in `x` (string | array). */
function measure(x: unknown, acc: { chars: number; tokens: number }): void {
  if (typeof x === 'string') {
    acc.chars += x.length;
  } else if (Array.isArray(x)) {
    for (const e of x as unknown[]) {
      if (typeof e === 'string') acc.chars += e.length;
      else if (typeof e === 'number') acc.tokens += 1;
      else if (Array.isArray(e)) acc.tokens += e.length; // number[][]: token ids
    }
  }
}

/**
 * Tokens a request may use, for the tokens-per-minute limit: ceil(prompt characters / 4) plus
 * `max_completion_tokens` ?? `max_tokens` ?? 256 (chat, completions; 0 for embeddings). The prompt
 * is the text parts of chat messages' content, the completion `prompt` or the embeddings `input`
 * (string or array of strings; token-id arrays count one per id). `n` is not multiplied in.
 * Reads the parsed body in place: no serialization.
 */
export function estimateTokens(
  body: Record<string, unknown>,
  kind: 'chat' | 'completions' | 'embeddings',
): number {
  const acc = { chars: 0, tokens: 0 };
  if (kind === 'chat') {
    const messages = body.messages;
    if (Array.isArray(messages)) {
      for (const m of messages as unknown[]) {
        if (typeof m !== 'object' || m === null) continue;
        const content = (m as { content?: unknown }).content;
        if (typeof content === 'string') acc.chars += content.length;
        else if (Array.isArray(content)) {
          for (const part of content as unknown[]) {
            if (typeof part !== 'object' || part === null) continue;
            const text = (part as { text?: unknown }).text;
            if (typeof text === 'string') acc.chars += text.length;
          }
        }
      }
    }
  } else {
    measure(kind === 'completions' ? body.prompt : body.input, acc);
  }
  const prompt = Math.ceil(acc.chars / 4) + acc.tokens;
  if (kind === 'embeddings') return prompt;
  return prompt + completionBudgetOf(body);
}

/**
 * The completion tokens a request may generate: its `max_completion_tokens` / `max_tokens`, else
 * DEFAULT_COMPLETION_TOKENS (used for the tokens/min estimate and by the token-block prefix
 * index, which counts the KV blocks a request allocates).
 */
export function completionBudgetOf(body: Record<string, unknown>): number {
  return completionBudget(body.max_completion_tokens ?? body.max_tokens);
}

function completionBudget(v: unknown): number {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0
    ? Math.ceil(v)
    : DEFAULT_COMPLETION_TOKENS;
}
