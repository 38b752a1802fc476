import { describe, expect, it } from 'vitest';
import { InferplaneError } from '../../src/core/errors.js';
import { seededRandom } from '../../src/core/random.js';
import type { TenantLimits } from '../../src/core/types.js';
import {
  TenantLimiter,
  estimateTokens,
  formatResetDuration,
  type Admission,
} from '../../src/gateway/limits.js';
import { clock, ok, refused } from './limits-fixtures.js';

describe('TenantLimiter: no limits', () => {
  it('admits with empty headers and a shared frozen no-op admission', () => {
    const l = new TenantLimiter({ now: clock().now });
    const a = ok(l.admit('t', undefined, 100));
    const b = ok(l.admit('t', {}, 100));
    expect(a.headers).toEqual({});
    expect(a).toBe(b);
    expect(Object.isFrozen(a)).toBe(true);
    expect(Object.isFrozen(a.headers)).toBe(true);
    a.release(10);
    a.release();
    expect(l.inflight('t')).toBe(0);
  });
});

describe('TenantLimiter: requests per second', () => {
  it('bursts to capacity, refuses with the limit named, refills at rps', () => {
    const c = clock();
    const l = new TenantLimiter({ now: c.now });
    const lim: TenantLimits = { requestsPerSecond: 5 };
    const first = ok(l.admit('t', lim, 0));
    expect(first.headers).toEqual({
      'x-ratelimit-limit-requests': '5',
      'x-ratelimit-remaining-requests': '4',
      'x-ratelimit-reset-requests': '0.2s',
    });
    for (let i = 3; i >= 0; i--) {
      expect(ok(l.admit('t', lim, 0)).headers['x-ratelimit-remaining-requests']).toBe(String(i));
    }
    const r = refused(l.admit('t', lim, 0));
    expect(r.error).toBeInstanceOf(InferplaneError);
    expect(r.error.code).toBe('IP_RATE_LIMITED');
    expect(r.error.status).toBe(429);
    expect(r.error.retryAfterS).toBe(1);
    expect(r.error.message).toBe('tenant limit of 5 requests/s exceeded; retry in 0.2 s');
    expect(r.headers).toEqual({
      'x-ratelimit-limit-requests': '5',
      'x-ratelimit-remaining-requests': '0',
      'x-ratelimit-reset-requests': '1s',
    });
    c.advance(199);
    expect(l.admit('t', lim, 0).ok).toBe(false);
    c.advance(1);
    expect(ok(l.admit('t', lim, 0)).headers['x-ratelimit-remaining-requests']).toBe('0');
    expect(l.admit('t', lim, 0).ok).toBe(false);
    // a steady 5/s passes every time (no float drift)
    for (let i = 0; i < 50; i++) {
      c.advance(200);
      expect(l.admit('t', lim, 0).ok).toBe(true);
    }
  });

  it('a fractional rate has capacity 1 and a Retry-After of ceil(seconds)', () => {
    const c = clock();
    const l = new TenantLimiter({ now: c.now });
    const lim = { requestsPerSecond: 0.4 };
    expect(ok(l.admit('t', lim, 0)).headers['x-ratelimit-limit-requests']).toBe('1');
    const r = refused(l.admit('t', lim, 0));
    expect(r.error.retryAfterS).toBe(3); // 2.5 s
    expect(r.error.message).toBe('tenant limit of 0.4 requests/s exceeded; retry in 2.5 s');
    c.advance(1000);
    expect(refused(l.admit('t', lim, 0)).error.retryAfterS).toBe(2); // 1.5 s
  });

  it('tenants are independent', () => {
    const l = new TenantLimiter({ now: clock().now });
    const lim = { requestsPerSecond: 1 };
    expect(l.admit('a', lim, 0).ok).toBe(true);
    expect(l.admit('a', lim, 0).ok).toBe(false);
    expect(l.admit('b', lim, 0).ok).toBe(true);
  });

  it('a lowered limit clamps the bucket', () => {
    const l = new TenantLimiter({ now: clock().now });
    expect(ok(l.admit('t', { requestsPerSecond: 10 }, 0)).headers).toMatchObject({
      'x-ratelimit-remaining-requests': '9',
    });
    expect(ok(l.admit('t', { requestsPerSecond: 2 }, 0)).headers).toMatchObject({
      'x-ratelimit-limit-requests': '2',
      'x-ratelimit-remaining-requests': '1',
    });
  });
});

describe('TenantLimiter: tokens per minute', () => {
  it('deducts the estimate and refuses when the bucket holds less', () => {
    const c = clock();
    const l = new TenantLimiter({ now: c.now });
    const lim = { tokensPerMinute: 600 }; // 10 tokens/s
    expect(ok(l.admit('t', lim, 100)).headers).toEqual({
      'x-ratelimit-limit-tokens': '600',
      'x-ratelimit-remaining-tokens': '500',
      'x-ratelimit-reset-tokens': '10s',
    });
    expect(ok(l.admit('t', lim, 500)).headers['x-ratelimit-remaining-tokens']).toBe('0');
    const r = refused(l.admit('t', lim, 100));
    expect(r.error.code).toBe('IP_RATE_LIMITED');
    expect(r.error.retryAfterS).toBe(10);
    expect(r.error.message).toBe('tenant limit of 600 tokens/min exceeded; retry in 10 s');
    expect(r.headers['x-ratelimit-reset-tokens']).toBe('1m0s');
    c.advance(9_999);
    expect(l.admit('t', lim, 100).ok).toBe(false);
    c.advance(1);
    expect(ok(l.admit('t', lim, 100)).headers['x-ratelimit-remaining-tokens']).toBe('0');
  });

  it('admits one request larger than the bucket when it is full, leaving debt', () => {
    const c = clock();
    const l = new TenantLimiter({ now: c.now });
    const lim = { tokensPerMinute: 600 };
    expect(ok(l.admit('t', lim, 1000)).headers).toMatchObject({
      'x-ratelimit-remaining-tokens': '0',
      'x-ratelimit-reset-tokens': '1m40s', // 1000 tokens at 10/s
    });
    const r = refused(l.admit('t', lim, 10));
    expect(r.error.retryAfterS).toBe(41); // from -400 to 10
    // the huge one again waits for a full bucket only (600), not 1000
    c.advance(100_000);
    expect(l.admit('t', lim, 1000).ok).toBe(true);
  });

  it('release corrects the estimate: more usage is debt, less is refunded (capped)', () => {
    const c = clock();
    const l = new TenantLimiter({ now: c.now });
    const lim = { tokensPerMinute: 600 };
    ok(l.admit('t', lim, 100)).release(300); // 600 - 300
    expect(ok(l.admit('t', lim, 0)).headers['x-ratelimit-remaining-tokens']).toBe('300');
    ok(l.admit('t', lim, 200)).release(50); // 300 - 50
    expect(ok(l.admit('t', lim, 0)).headers['x-ratelimit-remaining-tokens']).toBe('250');
    ok(l.admit('t', lim, 200)).release(1000); // 250 - 1000 = -750
    const r = refused(l.admit('t', lim, 1));
    expect(r.error.retryAfterS).toBe(76); // 751 tokens at 10/s = 75.1 s
    c.advance(200_000);
    const big = ok(l.admit('t', lim, 500)); // 100 left
    c.advance(30_000); // 400
    big.release(0); // 900, capped at capacity
    expect(ok(l.admit('t', lim, 0)).headers['x-ratelimit-remaining-tokens']).toBe('600');
  });

  it('release without usage keeps the estimate; a second release is a no-op', () => {
    const l = new TenantLimiter({ now: clock().now });
    const lim = { tokensPerMinute: 600 };
    const a = ok(l.admit('t', lim, 100));
    a.release();
    a.release(500);
    expect(ok(l.admit('t', lim, 0)).headers['x-ratelimit-remaining-tokens']).toBe('500');
  });
});

describe('TenantLimiter: concurrency', () => {
  it('counts in-flight requests; release is idempotent', () => {
    const l = new TenantLimiter({ now: clock().now });
    const lim = { maxConcurrency: 2 };
    const a = ok(l.admit('t', lim, 0));
    expect(a.headers).toEqual({});
    const b = ok(l.admit('t', lim, 0));
    expect(l.inflight('t')).toBe(2);
    const r = refused(l.admit('t', lim, 0));
    expect(r.error.code).toBe('IP_RATE_LIMITED');
    expect(r.error.retryAfterS).toBe(1);
    expect(r.error.message).toBe('tenant limit of 2 concurrent requests reached; retry in 1 s');
    expect(l.inflight('t')).toBe(2);
    a.release();
    a.release();
    expect(l.inflight('t')).toBe(1);
    const c = ok(l.admit('t', lim, 0));
    expect(l.inflight('t')).toBe(2);
    b.release();
    c.release();
    expect(l.inflight('t')).toBe(0);
  });
});

describe('TenantLimiter: combined', () => {
  it('a refusal consumes nothing from the other limits', () => {
    const l = new TenantLimiter({ now: clock().now });
    const lim = { requestsPerSecond: 10, tokensPerMinute: 600, maxConcurrency: 1 };
    const a = ok(l.admit('t', lim, 700)); // tokens: -100
    expect(a.headers).toEqual({
      'x-ratelimit-limit-requests': '10',
      'x-ratelimit-remaining-requests': '9',
      'x-ratelimit-reset-requests': '0.1s',
      'x-ratelimit-limit-tokens': '600',
      'x-ratelimit-remaining-tokens': '0',
      'x-ratelimit-reset-tokens': '1m10s',
    });
    const r = refused(l.admit('t', lim, 50));
    expect(r.error.message).toBe(
      'tenant limit of 600 tokens/min exceeded; tenant limit of 1 concurrent requests reached; retry in 15 s',
    );
    expect(r.limit).toBe('tokens'); // the first limit that refused
    expect(r.error.retryAfterS).toBe(15);
    expect(r.headers['x-ratelimit-remaining-requests']).toBe('9');
    expect(l.inflight('t')).toBe(1);
    a.release(700);
    expect(l.inflight('t')).toBe(0);
    const r2 = refused(l.admit('t', lim, 50));
    expect(r2.error.message).toBe('tenant limit of 600 tokens/min exceeded; retry in 15 s');
    expect(r2.headers['x-ratelimit-remaining-requests']).toBe('9');
    expect(l.inflight('t')).toBe(0);
  });

  it('retain drops state of tenants that left; a late release is harmless', () => {
    const l = new TenantLimiter({ now: clock().now });
    const lim = { requestsPerSecond: 1, maxConcurrency: 1 };
    const a = ok(l.admit('a', lim, 0));
    ok(l.admit('b', lim, 0));
    l.retain(new Set(['b']));
    expect(l.inflight('a')).toBe(0);
    expect(l.inflight('b')).toBe(1);
    const a2 = ok(l.admit('a', lim, 0)); // fresh bucket, fresh counter
    expect(l.inflight('a')).toBe(1);
    a.release(); // belongs to the dropped state
    expect(l.inflight('a')).toBe(1);
    a2.release();
    expect(l.inflight('a')).toBe(0);
    expect(l.admit('b', lim, 0).ok).toBe(false);
  });
});

describe('TenantLimiter: workers = 1', () => {
  it('admits exactly as the default on a deterministic sequence, with or without empty shares', () => {
    const c = clock();
    const base = new TenantLimiter({ now: c.now });
    const one = new TenantLimiter({ now: c.now, workers: 1 });
    const rnd = seededRandom(5);
    const limits: Array<TenantLimits | undefined> = [
      undefined,
      { requestsPerSecond: 5 },
      { requestsPerSecond: 0.4, tokensPerMinute: 600 },
      { tokensPerMinute: 1000, maxConcurrency: 2 },
      { requestsPerSecond: 2.5, tokensPerMinute: 333.3, maxConcurrency: 3 },
    ];
    const held: Array<[Admission & { ok: true }, Admission & { ok: true }]> = [];
    const view = (a: Admission): unknown =>
      a.ok ? a.headers : [a.headers, a.error.message, a.error.retryAfterS, a.limit];
    let admitted = 0;
    for (let i = 0; i < 5000; i++) {
      c.advance(Math.floor(rnd() * 300));
      const t = Math.floor(rnd() * limits.length);
      const est = Math.floor(rnd() * 400);
      const a = base.admit(`t${t}`, limits[t], est);
      const b = one.admit(`t${t}`, limits[t], est);
      expect(b.ok).toBe(a.ok);
      expect(view(b)).toEqual(view(a));
      if (a.ok && b.ok) {
        held.push([a, b]);
        admitted++;
      }
      if (held.length > 0 && rnd() < 0.5) {
        const [x, y] = held.splice(Math.floor(rnd() * held.length), 1)[0]!;
        const used = rnd() < 0.3 ? undefined : Math.floor(rnd() * 600);
        x.release(used);
        y.release(used);
      }
      if (i % 500 === 0) one.setShares(new Map()); // no shares: still the whole limit
      expect(one.inflight(`t${t}`)).toBe(base.inflight(`t${t}`));
    }
    expect(admitted).toBeGreaterThan(500);
    expect(admitted).toBeLessThan(4500);
  });
});

describe('formatResetDuration', () => {
  it('formats Go-style durations rounded up to the millisecond', () => {
    expect(formatResetDuration(0)).toBe('0s');
    expect(formatResetDuration(-5)).toBe('0s');
    expect(formatResetDuration(0.3)).toBe('1ms');
    expect(formatResetDuration(20)).toBe('20ms');
    expect(formatResetDuration(200)).toBe('0.2s');
    expect(formatResetDuration(1000)).toBe('1s');
    expect(formatResetDuration(1500)).toBe('1.5s');
    expect(formatResetDuration(60_000)).toBe('1m0s');
    expect(formatResetDuration(90_500)).toBe('1m30.5s');
    expect(formatResetDuration(360_000)).toBe('6m0s');
    expect(formatResetDuration(3_723_000)).toBe('1h2m3s');
  });
});

describe('estimateTokens', () => {
  it('chat: text of string and part contents / 4, plus the completion budget', () => {
    const messages = [
      { role: 'system', content: 'abcd' },
      {
        role: 'user',
        content: [{ type: 'text', text: 'hello' }, { type: 'image_url', image_url: {} }, null],
      },
      null,
      { role: 'assistant' },
    ];
    expect(estimateTokens({ messages }, 'chat')).toBe(3 + 256);
    expect(estimateTokens({ messages, max_tokens: 10 }, 'chat')).toBe(13);
    expect(estimateTokens({ messages, max_tokens: 10, max_completion_tokens: 5 }, 'chat')).toBe(8);
    expect(estimateTokens({ messages, max_completion_tokens: null, max_tokens: 7 }, 'chat')).toBe(
      10,
    );
    expect(estimateTokens({}, 'chat')).toBe(256);
  });

  it('completions: prompt string, string array or token ids', () => {
    expect(estimateTokens({ prompt: 'abcdefgh', max_tokens: 0 }, 'completions')).toBe(2);
    expect(estimateTokens({ prompt: ['abc', 'defgh'], max_tokens: 1 }, 'completions')).toBe(3);
    expect(estimateTokens({ prompt: [1, 2, 3] }, 'completions')).toBe(259);
    expect(estimateTokens({ prompt: [[1, 2], [3]], max_tokens: 0 }, 'completions')).toBe(3);
  });

  it('embeddings: input only, no completion budget', () => {
    expect(estimateTokens({ input: 'abcdefghi', max_tokens: 100 }, 'embeddings')).toBe(3);
    expect(estimateTokens({ input: ['ab', 'cd'] }, 'embeddings')).toBe(1);
    expect(estimateTokens({}, 'embeddings')).toBe(0);
  });
});
