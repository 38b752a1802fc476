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

interface TenantState {
  req: Bucket | undefined;
  tok: Bucket | undefined;
  inflight: number;
}

function positive(v: number | undefined): v is number {
  return typeof v === 'number' && Number.isFinite(v) && v > 0;
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

function headersOf(req: Bucket | undefined, tok: Bucket | undefined): RateLimitHeaders {
  const h: Record<string, string> = {};
  if (req !== undefined) {
    h['x-ratelimit-limit-requests'] = String(req.capacity);
    h['x-ratelimit-remaining-requests'] = String(Math.max(0, Math.floor(req.level + EPS)));
    h['x-ratelimit-reset-requests'] = formatResetDuration((req.capacity - req.level) / req.rate);
  }
  if (tok !== undefined) {
    h['x-ratelimit-limit-tokens'] = String(tok.capacity);
    h['x-ratelimit-remaining-tokens'] = String(Math.max(0, Math.floor(tok.level + EPS)));
    h['x-ratelimit-reset-tokens'] = formatResetDuration((tok.capacity - tok.level) / tok.rate);
  }
  return h;
}

/** Seconds for a message: one decimal, rounded up, at least 0.1. */
function fmtSeconds(ms: number): string {
  const tenths = Math.max(1, Math.ceil(ms / 100 - 1e-9));
  return String(tenths / 10);
}

export class TenantLimiter {
  readonly #now: () => number;
  readonly #tenants = new Map<string, TenantState>();

  constructor(opts: { now?: () => number } = {}) {
    this.#now = opts.now ?? (() => performance.now());
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
      st = { req: undefined, tok: undefined, inflight: 0 };
      this.#tenants.set(tenantId, st);
    }
    const req = (st.req = syncBucket(
      st.req,
      rps === undefined ? undefined : Math.max(1, rps),
      rps ?? 0,
      now,
    ));
    const tok = (st.tok = syncBucket(st.tok, tpm, (tpm ?? 0) / 60, now));
    const estimate =
      Number.isFinite(estimatedTokens) && estimatedTokens > 0 ? Math.ceil(estimatedTokens) : 0;

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
    if (conc !== undefined && st.inflight >= conc) {
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
      return { ok: false, error, headers: headersOf(req, tok), limit: first ?? 'requests' };
    }

    // Then deduct.
    if (req !== undefined) req.level -= 1;
    if (tok !== undefined) tok.level -= estimate;
    const counted = conc !== undefined;
    if (counted) st.inflight++;
    const state = st;
    const nowFn = this.#now;
    let released = false;
    return {
      ok: true,
      headers: headersOf(req, tok),
      release(actualTokens?: number): void {
        if (released) return;
        released = true;
        if (counted && state.inflight > 0) state.inflight--;
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

  /** Requests admitted and not yet released (counted only while maxConcurrency is set). */
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
  return prompt + completionBudget(body.max_completion_tokens ?? body.max_tokens);
}

function completionBudget(v: unknown): number {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0
    ? Math.ceil(v)
    : DEFAULT_COMPLETION_TOKENS;
}
