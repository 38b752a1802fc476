import { describe, expect, it } from 'vitest';
import { ArrivalSchedule } from '../../src/bench/arrivals.js';
import type { RequestInput } from '../../src/bench/client.js';
import type { SchedClock } from '../../src/bench/clock.js';
import { runLoad, type Sender } from '../../src/bench/loadgen.js';
import { syntheticWorkload } from '../../src/bench/workloads.js';
import { rec } from './bench-helpers.js';

function gaps(kind: 'constant' | 'poisson' | 'gamma', rate: number, k = 1, n = 20_000): number[] {
  const s = new ArrivalSchedule({ rate, arrival: kind, burstiness: k, seed: 42 });
  let prev = s.next();
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = s.next();
    out.push(t - prev);
    prev = t;
  }
  return out;
}

function meanCv(a: number[]): [number, number] {
  const m = a.reduce((s, x) => s + x, 0) / a.length;
  const sd = Math.sqrt(a.reduce((s, x) => s + (x - m) ** 2, 0) / a.length);
  return [m, sd / m];
}

describe('arrival processes', () => {
  it('constant: exact gaps', () => {
    const [m, cv] = meanCv(gaps('constant', 50));
    expect(m).toBeCloseTo(0.02, 12);
    expect(cv).toBeLessThan(1e-9);
  });

  it('poisson: mean 1/R, CV 1', () => {
    const [m, cv] = meanCv(gaps('poisson', 100));
    expect(Math.abs(m * 100 - 1)).toBeLessThan(0.03);
    expect(Math.abs(cv - 1)).toBeLessThan(0.04);
  });

  it('gamma: mean 1/R, CV 1/sqrt(k)', () => {
    for (const k of [0.25, 4]) {
      const [m, cv] = meanCv(gaps('gamma', 20, k));
      expect(Math.abs(m * 20 - 1)).toBeLessThan(0.04);
      expect(Math.abs(cv - 1 / Math.sqrt(k))).toBeLessThan(0.06);
    }
  });

  it('is seeded, and a ramp starts slow then reaches the rate', () => {
    expect(gaps('poisson', 10, 1, 50)).toEqual(gaps('poisson', 10, 1, 50));
    const s = new ArrivalSchedule({ rate: 100, arrival: 'constant', seed: 1, rampUpSec: 10 });
    // Λ(t) = 100 t² / 20 for t ≤ 10: arrival u at t = sqrt(u/5); after the ramp, every 10 ms.
    expect(s.timeOf(5)).toBeCloseTo(1, 12);
    expect(s.timeOf(500)).toBeCloseTo(10, 12);
    expect(s.timeOf(501)).toBeCloseTo(10.01, 12);
  });
});

/** A fake clock: time only moves when sleeping or when a send "takes" time. */
class FakeClock implements SchedClock {
  t = 1_000_000;
  now(): number {
    return this.t;
  }
  sleepUntil(ns: number): Promise<void> {
    if (ns > this.t) this.t = ns + 100_000; // every wake-up is 0.1 ms late
    return Promise.resolve();
  }
}

describe('open-loop scheduling', () => {
  it('schedules against absolute times from one start instant (no drift from slow sends)', async () => {
    const clock = new FakeClock();
    const seen: { intended: number | null; at: number }[] = [];
    const sender: Sender = {
      send(input: RequestInput) {
        seen.push({ intended: input.intendedNs, at: clock.now() });
        clock.t += 3_000_000; // launching a request "takes" 3 ms of the 10 ms gap
        return Promise.resolve(rec(0, [1], { usageCompletionTokens: 1 }));
      },
    };
    const start = clock.now();
    await runLoad(
      sender,
      syntheticWorkload({ isl: 4, osl: 2, seed: 1 }),
      {
        mode: 'open',
        endpoint: 'chat',
        requestRate: 100,
        arrival: 'constant',
        requestCount: 50,
        seed: 1,
      },
      clock,
    );
    expect(seen).toHaveLength(50);
    seen.forEach((s, i) => {
      expect(s.intended).toBe(start + i * 10_000_000);
      expect((s.at - (s.intended ?? 0)) / 1e6).toBeLessThanOrEqual(0.1 + 1e-9);
    });
  });

  it('closed loop keeps N in flight and honours the request count; warmup is tagged', async () => {
    let inflight = 0;
    let peak = 0;
    const sender: Sender = {
      async send(input) {
        inflight++;
        peak = Math.max(peak, inflight);
        await new Promise((r) => setImmediate(r));
        inflight--;
        return rec(0, [1], { phase: input.phase, usageCompletionTokens: 1 });
      },
    };
    const recs = await runLoad(sender, syntheticWorkload({ isl: 4, osl: 2, seed: 1 }), {
      mode: 'closed',
      endpoint: 'completions',
      concurrency: 4,
      requestCount: 20,
      warmupRequests: 3,
      seed: 1,
    });
    expect(recs.filter((r) => r.phase === 'warmup')).toHaveLength(3);
    expect(recs.filter((r) => r.phase === 'profiling')).toHaveLength(20);
    expect(peak).toBe(4);
  });
});
