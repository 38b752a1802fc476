// Splitting tenant limits between workers: the limiter's shares and demand accounting, the
// balancer's split, and both together on a fake clock (takeDemand → report → compute →
// setShares every 100 simulated ms).
import { describe, expect, it } from 'vitest';
import { seededRandom } from '../../src/core/random.js';
import type { TenantLimits } from '../../src/core/types.js';
import { LimitShareBalancer } from '../../src/gateway/limit-shares.js';
import { TenantLimiter, type LimitShare, type TenantDemand } from '../../src/gateway/limits.js';
import { clock, ok, refused } from './limits-fixtures.js';

function demand(attempts: number, inflight = 0, tokens = 0): TenantDemand {
  return { attempts, tokens, inflight };
}

/** One worker's report: tenant → demand. */
function rep(entries: Record<string, TenantDemand>): Map<string, TenantDemand> {
  return new Map(Object.entries(entries));
}

function rates(out: Map<string, Map<string, LimitShare>>, tenant: string): number[] {
  return [...out.values()].map((m) => m.get(tenant)!.rate);
}

function slots(out: Map<string, Map<string, LimitShare>>, tenant: string): number[] {
  return [...out.values()].map((m) => m.get(tenant)!.concurrency!);
}

function sum(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0);
}

describe('TenantLimiter: shares', () => {
  it('splits the requests bucket by the default share; headers describe the global limit', () => {
    const c = clock();
    const l = new TenantLimiter({ now: c.now, workers: 2 });
    const lim = { requestsPerSecond: 100 };
    expect(ok(l.admit('t', lim, 0)).headers).toEqual({
      'x-ratelimit-limit-requests': '100',
      'x-ratelimit-remaining-requests': '98', // 49 of 50 locally, / 0.5
      'x-ratelimit-reset-requests': '20ms', // 1 at 50/s
    });
    for (let i = 0; i < 49; i++) ok(l.admit('t', lim, 0));
    const r = refused(l.admit('t', lim, 0));
    expect(r.error.message).toBe('tenant limit of 100 requests/s exceeded; retry in 0.1 s');
    expect(r.headers['x-ratelimit-remaining-requests']).toBe('0');
    expect(r.headers['x-ratelimit-reset-requests']).toBe('1s'); // 50 at 50/s
    c.advance(20);
    expect(l.admit('t', lim, 0).ok).toBe(true); // 50/s locally
    expect(l.admit('t', lim, 0).ok).toBe(false);
  });

  it('a small tenant can hold one whole request on every worker', () => {
    const c = clock();
    const l = new TenantLimiter({ now: c.now, workers: 4 });
    const lim = { requestsPerSecond: 1 };
    expect(ok(l.admit('t', lim, 0)).headers).toEqual({
      'x-ratelimit-limit-requests': '1',
      'x-ratelimit-remaining-requests': '0',
      'x-ratelimit-reset-requests': '4s', // 0.25/s locally
    });
    const r = refused(l.admit('t', lim, 0));
    expect(r.error.retryAfterS).toBe(4);
    expect(r.error.message).toBe('tenant limit of 1 requests/s exceeded; retry in 4 s');
  });

  it('setShares refills at the old rate up to now, then resizes and clamps', () => {
    const c = clock();
    const l = new TenantLimiter({ now: c.now, workers: 2 });
    const lim = { requestsPerSecond: 10 }; // 5/s locally, capacity 5
    for (let i = 0; i < 5; i++) ok(l.admit('t', lim, 0));
    expect(l.admit('t', lim, 0).ok).toBe(false);
    c.advance(400); // 2 at the old 5/s
    l.setShares(new Map([['t', { rate: 0.1 }]])); // 1/s, capacity 1: clamped from 2 to 1
    expect(ok(l.admit('t', lim, 0)).headers).toMatchObject({
      'x-ratelimit-limit-requests': '10',
      'x-ratelimit-remaining-requests': '0',
      'x-ratelimit-reset-requests': '1s', // 1 at 1/s
    });
    expect(l.admit('t', lim, 0).ok).toBe(false);
    c.advance(400); // 0.4 at 1/s: remaining estimates 0.4 / 0.1 of the global budget
    expect(refused(l.admit('t', lim, 0)).headers['x-ratelimit-remaining-requests']).toBe('4');
    c.advance(600);
    // growing: capacity 9.5; the level keeps its 1 (no tokens added) and refills at 9.5/s
    l.setShares(new Map([['t', { rate: 0.95 }]]));
    c.advance(100);
    expect(ok(l.admit('t', lim, 0)).headers['x-ratelimit-remaining-requests']).toBe('1'); // 0.95
    expect(l.admit('t', lim, 0).ok).toBe(false);
    // a tenant absent from the map goes back to the default 1/2
    l.setShares(new Map());
    c.advance(1000);
    for (let i = 0; i < 5; i++) ok(l.admit('t', lim, 0));
    expect(l.admit('t', lim, 0).ok).toBe(false);
  });

  it('a share set before the tenant is first seen applies to its first request', () => {
    const l = new TenantLimiter({ now: clock().now, workers: 2 });
    l.setShares(new Map([['t', { rate: 0.05 }]]));
    const lim = { requestsPerSecond: 100 }; // capacity 5
    for (let i = 0; i < 5; i++) ok(l.admit('t', lim, 0));
    expect(l.admit('t', lim, 0).ok).toBe(false);
  });

  it('splits the tokens bucket: headers still name tpm, remaining scaled up', () => {
    const c = clock();
    const l = new TenantLimiter({ now: c.now, workers: 2 });
    const lim = { tokensPerMinute: 600 }; // 300 locally, 5/s
    expect(ok(l.admit('t', lim, 100)).headers).toEqual({
      'x-ratelimit-limit-tokens': '600',
      'x-ratelimit-remaining-tokens': '400',
      'x-ratelimit-reset-tokens': '20s',
    });
    // larger than the local capacity: passes on a full bucket only
    const r = refused(l.admit('t', lim, 1000));
    expect(r.error.message).toBe('tenant limit of 600 tokens/min exceeded; retry in 20 s');
    c.advance(20_000);
    expect(ok(l.admit('t', lim, 1000)).headers['x-ratelimit-remaining-tokens']).toBe('0');
  });

  it('concurrency: the share’s slots, else ceil(c × rate); messages name the global limit', () => {
    const l = new TenantLimiter({ now: clock().now, workers: 2 });
    const lim = { maxConcurrency: 3 };
    ok(l.admit('t', lim, 0));
    ok(l.admit('t', lim, 0)); // ceil(1.5)
    expect(refused(l.admit('t', lim, 0)).error.message).toBe(
      'tenant limit of 3 concurrent requests reached; retry in 1 s',
    );
    l.setShares(new Map([['t', { rate: 0.5, concurrency: 3 }]]));
    ok(l.admit('t', lim, 0));
    expect(l.admit('t', lim, 0).ok).toBe(false);
    l.setShares(new Map([['u', { rate: 0.5, concurrency: 0 }]]));
    expect(refused(l.admit('u', lim, 0)).limit).toBe('concurrency');
  });

  it('takeDemand counts attempts (refused too), token estimates and requests in flight', () => {
    const l = new TenantLimiter({ now: clock().now, workers: 2 });
    const lim = { requestsPerSecond: 2 }; // capacity 1 locally
    const a = ok(l.admit('t', lim, 10));
    expect(l.admit('t', lim, 20).ok).toBe(false);
    ok(l.admit('u', { tokensPerMinute: 6000 }, 5)).release();
    l.admit('free', undefined, 7);
    l.admit('free', {}, 7);
    expect(l.takeDemand()).toEqual(
      new Map([
        ['t', { attempts: 2, tokens: 30, inflight: 1 }],
        ['u', { attempts: 1, tokens: 5, inflight: 0 }],
      ]),
    );
    // counters reset; a tenant with requests in flight still reports
    expect(l.takeDemand()).toEqual(new Map([['t', { attempts: 0, tokens: 0, inflight: 1 }]]));
    a.release();
    expect(l.takeDemand()).toEqual(new Map());
  });

  it('ignores a share rate that is not positive, clamps one above 1, ignores bad slots', () => {
    const l = new TenantLimiter({ now: clock().now, workers: 2 });
    const lim = { requestsPerSecond: 10, maxConcurrency: 8 };
    const burst = (t: string): number => {
      let n = 0;
      while (l.admit(t, lim, 0).ok) n++;
      return n;
    };
    l.setShares(
      new Map<string, LimitShare>([
        ['zero', { rate: 0, concurrency: -1 }],
        ['nan', { rate: Number.NaN }],
        ['big', { rate: 2, concurrency: 100 }],
      ]),
    );
    expect(burst('zero')).toBe(4); // the default 1/2: 5 requests, but ceil(8 / 2) = 4 in flight
    expect(burst('nan')).toBe(4);
    expect(burst('big')).toBe(10); // rate 1: the whole bucket
  });

  it('rejects a worker count that is not a positive integer', () => {
    expect(() => new TenantLimiter({ workers: 0 })).toThrow(RangeError);
    expect(() => new TenantLimiter({ workers: 1.5 })).toThrow(RangeError);
  });
});

describe('LimitShareBalancer', () => {
  const LIMITS = new Map<string, TenantLimits>([
    ['t', { requestsPerSecond: 100, maxConcurrency: 7 }],
  ]);

  it('rates sum to 1 and lie in (0, 1]; every known worker gets every limited tenant', () => {
    const b = new LimitShareBalancer();
    const rnd = seededRandom(7);
    const limits = new Map<string, TenantLimits>([
      ['t', { requestsPerSecond: 100, maxConcurrency: 7 }],
      ['u', { tokensPerMinute: 1000 }],
      ['v', { maxConcurrency: 2 }],
      ['none', {}],
    ]);
    for (let round = 0; round < 20; round++) {
      for (const w of ['a', 'b', 'c']) {
        const r = new Map<string, TenantDemand>();
        for (const t of ['t', 'u', 'v']) {
          if (rnd() < 0.7) {
            r.set(t, demand(Math.floor(rnd() * 50), Math.floor(rnd() * 3), rnd() * 5000));
          }
        }
        b.report(w, r);
      }
      const out = b.compute(limits);
      expect([...out.keys()]).toEqual(['a', 'b', 'c']);
      for (const m of out.values()) expect([...m.keys()].sort()).toEqual(['t', 'u', 'v']);
      for (const t of ['t', 'u', 'v']) {
        const rs = rates(out, t);
        expect(sum(rs)).toBeCloseTo(1, 12);
        for (const r of rs) expect(r > 0 && r <= 1).toBe(true);
      }
      expect(sum(slots(out, 't'))).toBe(7);
      expect(sum(slots(out, 'v'))).toBe(2);
      expect(out.get('a')!.get('u')!.concurrency).toBeUndefined();
    }
  });

  it('an idle worker keeps the floor of 0.1/N', () => {
    const b = new LimitShareBalancer();
    b.report('a', rep({ t: demand(100) }));
    b.report('b', rep({}));
    b.report('c', rep({}));
    const rs = rates(b.compute(LIMITS), 't');
    expect(rs[0]).toBeCloseTo(0.1 / 3 + 0.9, 12);
    expect(rs[1]).toBeCloseTo(0.1 / 3, 12);
    expect(rs[2]).toBeCloseTo(0.1 / 3, 12);
  });

  it('all idle: an equal split', () => {
    const b = new LimitShareBalancer();
    for (const w of ['a', 'b', 'c', 'd']) b.report(w, rep({}));
    const out = b.compute(LIMITS);
    expect(rates(out, 't')).toEqual([0.25, 0.25, 0.25, 0.25]);
    expect(slots(out, 't')).toEqual([2, 2, 2, 1]); // 7 = 1.75 × 4, largest remainder in order
  });

  it('one worker: the whole limit', () => {
    const b = new LimitShareBalancer();
    b.report('a', rep({ t: demand(3) }));
    expect(b.compute(LIMITS).get('a')!.get('t')).toEqual({ rate: 1, concurrency: 7 });
  });

  it('concurrency sums to c exactly, including c < workers', () => {
    const rnd = seededRandom(3);
    for (let c = 1; c <= 9; c++) {
      for (let k = 0; k < 30; k++) {
        const b = new LimitShareBalancer();
        for (const w of ['a', 'b', 'c', 'd', 'e']) {
          const r = rnd();
          b.report(w, r < 0.3 ? rep({}) : rep({ t: demand(Math.floor(r * 20), 0) }));
        }
        const s = slots(b.compute(new Map([['t', { maxConcurrency: c }]])), 't');
        expect(sum(s)).toBe(c);
        for (const x of s) expect(Number.isInteger(x) && x >= 0).toBe(true);
      }
    }
    const b = new LimitShareBalancer();
    for (const w of ['a', 'b', 'c', 'd']) b.report(w, rep({}));
    expect(slots(b.compute(new Map([['t', { maxConcurrency: 2 }]])), 't')).toEqual([1, 1, 0, 0]);
  });

  it('every worker with demand gets a slot when c allows, however skewed the demand', () => {
    const b = new LimitShareBalancer();
    b.report('a', rep({ t: demand(1000) }));
    b.report('b', rep({ t: demand(1) }));
    b.report('c', rep({ t: demand(0, 1) }));
    b.report('d', rep({}));
    expect(slots(b.compute(new Map([['t', { maxConcurrency: 3 }]])), 't')).toEqual([1, 1, 1, 0]);
    // c short of the workers with demand: the larger demand first
    const b2 = new LimitShareBalancer();
    b2.report('a', rep({ t: demand(1) }));
    b2.report('b', rep({ t: demand(50) }));
    b2.report('c', rep({ t: demand(9) }));
    expect(slots(b2.compute(new Map([['t', { maxConcurrency: 2 }]])), 't')).toEqual([0, 1, 1]);
  });

  it('never fewer slots than in flight unless they exceed c (then larger demand first)', () => {
    const b = new LimitShareBalancer();
    b.report('a', rep({ t: demand(0, 3) })); // 3 in flight, no new attempts
    b.report('b', rep({ t: demand(100) }));
    expect(slots(b.compute(new Map([['t', { maxConcurrency: 4 }]])), 't')).toEqual([3, 1]);
    const b2 = new LimitShareBalancer();
    b2.report('a', rep({ t: demand(1, 3) }));
    b2.report('b', rep({ t: demand(10, 3) })); // 6 in flight > 4
    expect(slots(b2.compute(new Map([['t', { maxConcurrency: 4 }]])), 't')).toEqual([1, 3]);
  });

  it('removing a worker drops it and its smoothed demand', () => {
    const b = new LimitShareBalancer();
    b.report('a', rep({ t: demand(100) }));
    b.report('b', rep({ t: demand(100) }));
    b.report('c', rep({}));
    b.compute(LIMITS);
    b.removeWorker('b');
    b.removeWorker('nobody');
    expect(b.workers()).toEqual(['a', 'c']);
    const out = b.compute(LIMITS);
    expect([...out.keys()]).toEqual(['a', 'c']);
    expect(sum(rates(out, 't'))).toBeCloseTo(1, 12);
    expect(sum(slots(out, 't'))).toBe(7);
    // back with no demand: starts from its new report, not from the 100 it had
    b.report('b', rep({}));
    const again = b.compute(LIMITS);
    expect(again.get('b')!.get('t')!.rate).toBeCloseTo(0.1 / 3, 12);
  });

  it('a tenant whose limits vanished is dropped, and starts over when they return', () => {
    const b = new LimitShareBalancer();
    b.report('a', rep({ t: demand(100) }));
    b.report('b', rep({}));
    b.compute(LIMITS);
    b.report('a', rep({}));
    b.report('b', rep({ t: demand(100) }));
    const gone = b.compute(new Map([['t', {}]]));
    expect(gone.get('a')!.has('t')).toBe(false);
    const back = b.compute(LIMITS); // the same reports: a 0, b 100, not smoothed with the past
    expect(rates(back, 't')[1]).toBeCloseTo(0.05 + 0.9, 12);
  });

  it('smooths demand with an EWMA of alpha 0.5 and converges to the demand ratio', () => {
    const b = new LimitShareBalancer();
    const limits = new Map([['t', { requestsPerSecond: 10 }]]);
    const rateA = (): number => b.compute(limits).get('a')!.get('t')!.rate;
    b.report('a', rep({ t: demand(100) }));
    b.report('b', rep({}));
    expect(rateA()).toBeCloseTo(0.95, 12);
    // the traffic moves to b: d_a 100 → 50 → 25 → 12.5, d_b 0 → 50 → 75 → 87.5
    b.report('a', rep({}));
    b.report('b', rep({ t: demand(100) }));
    expect(rateA()).toBeCloseTo(0.05 + 0.9 * 0.5, 12);
    expect(rateA()).toBeCloseTo(0.05 + 0.9 * 0.25, 12);
    expect(rateA()).toBeCloseTo(0.05 + 0.9 * 0.125, 12);
    // a steady 3:1 converges to 0.05 + 0.9 × 0.75
    b.report('a', rep({ t: demand(27, 3) }));
    b.report('b', rep({ t: demand(10) }));
    let r = 0;
    for (let i = 0; i < 30; i++) r = rateA();
    expect(r).toBeCloseTo(0.725, 6);
  });

  it('weighs by token estimates when only tokensPerMinute is set', () => {
    const b = new LimitShareBalancer();
    b.report('a', rep({ t: demand(1, 0, 900) }));
    b.report('b', rep({ t: demand(9, 0, 100) }));
    expect(rates(b.compute(new Map([['t', { tokensPerMinute: 6000 }]])), 't')[0]).toBeCloseTo(
      0.05 + 0.9 * 0.9,
      12,
    );
    // with requests/s set too, attempts count (the EWMA starts over in the new unit)
    expect(
      rates(b.compute(new Map([['t', { tokensPerMinute: 6000, requestsPerSecond: 5 }]])), 't')[0],
    ).toBeCloseTo(0.05 + 0.9 * 0.1, 12);
  });
});

/** N limiters on one clock and a balancer; `round()` is one coordinator round. */
function cluster(
  workers: string[],
  limits: Map<string, TenantLimits>,
): {
  c: ReturnType<typeof clock>;
  limiters: Map<string, TenantLimiter>;
  round: () => void;
} {
  const c = clock();
  const limiters = new Map(
    workers.map((w) => [w, new TenantLimiter({ now: c.now, workers: workers.length })]),
  );
  const balancer = new LimitShareBalancer();
  const round = (): void => {
    for (const [w, l] of limiters) balancer.report(w, l.takeDemand());
    const shares = balancer.compute(limits);
    for (const [w, l] of limiters) l.setShares(shares.get(w)!);
  };
  return { c, limiters, round };
}

describe('limiters and balancer together (100 ms rounds, fake clock)', () => {
  const RPS = new Map([['t', { requestsPerSecond: 100 }]]);

  it('all traffic on one worker: it admits close to the whole limit', () => {
    const { c, limiters, round } = cluster(['a', 'b'], RPS);
    const a = limiters.get('a')!;
    let admitted = 0;
    for (let ms = 0; ms < 5300; ms++) {
      if (ms % 100 === 0) round();
      if (ms === 300) admitted = 0; // after three rounds (and the initial burst)
      if (ms % 5 === 0 && a.admit('t', RPS.get('t'), 0).ok) admitted++; // 200/s offered
      c.advance(1);
    }
    // 0.95 of the rate (b keeps the idle floor of 0.05)
    expect(admitted).toBeGreaterThanOrEqual(5 * 85);
    expect(admitted).toBeLessThanOrEqual(5 * 100);
  });

  for (const [name, toA] of [
    ['50/50', 0.5],
    ['80/20', 0.8],
  ] as const) {
    it(`traffic split ${name} at 300 req/s offered: the total stays at the limit`, () => {
      const { c, limiters, round } = cluster(['a', 'b'], RPS);
      const a = limiters.get('a')!;
      const b = limiters.get('b')!;
      let admitted = 0;
      let sent = 0;
      for (let ms = 0; ms < 6000; ms++) {
        if (ms % 100 === 0) round();
        if (ms === 1000) admitted = 0; // after the initial burst
        if (ms % 10 === 0) {
          for (let k = 0; k < 3; k++) {
            // deterministic spread: the fraction toA of all requests goes to a
            const l = Math.floor((sent + 1) * toA) > Math.floor(sent * toA) ? a : b;
            sent++;
            const adm = l.admit('t', RPS.get('t'), 0);
            if (adm.ok) {
              admitted++;
              adm.release();
            }
          }
        }
        c.advance(1);
      }
      expect(admitted).toBeGreaterThanOrEqual(0.9 * 500);
      expect(admitted).toBeLessThanOrEqual(1.05 * 500);
    });
  }

  it('concurrency 4 over 2 workers: never more than 4 in flight; a worker alone gets all 4', () => {
    const CONC = new Map([['t', { maxConcurrency: 4 }]]);
    const { c, limiters, round } = cluster(['a', 'b'], CONC);
    const rnd = seededRandom(11);
    const held = new Map<TenantLimiter, Array<() => void>>(
      [...limiters.values()].map((l) => [l, []]),
    );
    const total = (): number => sum([...limiters.values()].map((l) => l.inflight('t')));
    let admittedOn = new Set<TenantLimiter>();
    round();
    for (let ms = 0; ms < 3000; ms++) {
      if (ms % 100 === 0) round();
      for (const l of limiters.values()) {
        const mine = held.get(l)!;
        if (rnd() < 0.3) {
          const adm = l.admit('t', CONC.get('t'), 0);
          if (adm.ok) {
            mine.push(() => adm.release());
            admittedOn.add(l);
          }
        }
        if (mine.length > 0 && rnd() < 0.1) mine.splice(Math.floor(rnd() * mine.length), 1)[0]!();
        expect(total()).toBeLessThanOrEqual(4);
      }
      c.advance(1);
    }
    expect(admittedOn.size).toBe(2);
    // b's clients leave; a's keep coming and hold their requests
    const b = limiters.get('b')!;
    for (const release of held.get(b)!.splice(0)) release();
    const a = limiters.get('a')!;
    admittedOn = new Set();
    for (let ms = 0; ms < 1000; ms++) {
      if (ms % 100 === 0) round();
      const adm = a.admit('t', CONC.get('t'), 0);
      if (adm.ok) held.get(a)!.push(() => adm.release());
      expect(total()).toBeLessThanOrEqual(4);
      c.advance(1);
    }
    expect(a.inflight('t')).toBe(4);
  });

  it('a worker that never saw the tenant leaves all the slots to the other at once', () => {
    const CONC = new Map([['t', { maxConcurrency: 4 }]]);
    const { limiters, round } = cluster(['a', 'b'], CONC);
    const a = limiters.get('a')!;
    expect(a.admit('t', CONC.get('t'), 0).ok).toBe(true);
    expect(a.admit('t', CONC.get('t'), 0).ok).toBe(true);
    expect(a.admit('t', CONC.get('t'), 0).ok).toBe(false); // ceil(4 × 1/2) before any round
    round();
    expect(a.admit('t', CONC.get('t'), 0).ok).toBe(true);
    expect(a.admit('t', CONC.get('t'), 0).ok).toBe(true);
    expect(a.admit('t', CONC.get('t'), 0).ok).toBe(false);
    expect(limiters.get('b')!.admit('t', CONC.get('t'), 0).ok).toBe(false); // 0 slots
  });
});
