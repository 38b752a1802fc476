import { describe, expect, it } from 'vitest';
import {
  computeStats,
  meetsSlos,
  parseGoodput,
  percentileSorted,
  requestMetrics,
  summarize,
} from '../../src/bench/metrics.js';
import { rec } from './bench-helpers.js';

const close = (a: number | null | undefined, b: number) => expect(a).toBeCloseTo(b, 9);

describe('statistics (numpy conventions)', () => {
  it('matches numpy percentiles (linear) and population std on 1..10', () => {
    const s = computeStats([3, 1, 2, 10, 4, 5, 6, 7, 8, 9], 'ms');
    // numpy.percentile(np.arange(1, 11), [1,5,10,25,50,75,90,95,99]); np.std
    close(s.p1, 1.09);
    close(s.p5, 1.45);
    close(s.p10, 1.9);
    close(s.p25, 3.25);
    close(s.p50, 5.5);
    close(s.p75, 7.75);
    close(s.p90, 9.1);
    close(s.p95, 9.55);
    close(s.p99, 9.91);
    close(s.std, 2.8722813232690143);
    expect(s).toMatchObject({ unit: 'ms', avg: 5.5, min: 1, max: 10, count: 10, sum: 55 });
  });

  it('handles one value and interpolation edges', () => {
    expect(percentileSorted([7], 99)).toBe(7);
    expect(percentileSorted([0, 10], 50)).toBe(5);
    const s = computeStats([4], 'x');
    expect([s.avg, s.min, s.max, s.std, s.p1, s.p99, s.count]).toEqual([4, 4, 4, 0, 4, 4, 1]);
  });
});

describe('per-request metrics', () => {
  it('computes every metric from chunk timings and usage', () => {
    const r = rec(0, [10, 15, 22, 30], {
      usagePromptTokens: 100,
      usageCompletionTokens: 4,
      endMs: 31,
    });
    const m = requestMetrics(r);
    expect(m.time_to_first_token).toBe(10);
    expect(m.time_to_second_token).toBe(5);
    expect(m.request_latency).toBe(30);
    close(m.inter_token_latency, 20 / 3);
    close(m.output_token_throughput_per_user, 150);
    expect(m.inter_chunk_latency).toEqual([5, 7, 8]);
    expect(m.output_sequence_length).toBe(4);
    expect(m.input_sequence_length).toBe(100);
  });

  it('falls back to the client tokenizer and skips ITL for OSL < 2', () => {
    const r = rec(5, [25, 45], { outputText: ' a b', clientInputTokens: 50 });
    const m = requestMetrics(r);
    expect(m.output_sequence_length).toBe(2);
    expect(m.input_sequence_length).toBe(50);
    expect(m.inter_token_latency).toBe(20);
    const one = requestMetrics(rec(0, [4], { usageCompletionTokens: 1, usagePromptTokens: 3 }));
    expect(one.inter_token_latency).toBeUndefined();
    expect(one.output_token_throughput_per_user).toBeUndefined();
    expect(one.time_to_second_token).toBeUndefined();
    expect(one.time_to_first_token).toBe(4);
  });

  it('non-streaming: latency only', () => {
    const m = requestMetrics(
      rec(0, [12], { streaming: false, usageCompletionTokens: 3, usagePromptTokens: 2, endMs: 12 }),
    );
    expect(m).toEqual({ request_latency: 12, output_sequence_length: 3, input_sequence_length: 2 });
  });
});

describe('run summary', () => {
  const records = [
    rec(0, [10, 15, 22, 30], { usagePromptTokens: 100, usageCompletionTokens: 4, endMs: 31 }),
    rec(5, [25, 45], { outputText: ' a b', clientInputTokens: 50, endMs: 46 }),
    rec(2, [], { endMs: 50, error: { code: 500, type: 'InternalServerError', message: 'boom' } }),
    rec(-100, [-90], { phase: 'warmup', usageCompletionTokens: 1 }),
  ];

  it('computes duration, throughputs, totals, errors', () => {
    const s = summarize(records);
    close(s.benchmarkDurationSec, 0.05);
    expect(s.requestCount).toBe(2);
    expect(s.errorCount).toBe(1);
    close(s.requestThroughput, 40);
    close(s.outputTokenThroughput, 120);
    close(s.totalTokenThroughput, 3120);
    expect(s.totalIsl).toBe(150);
    expect(s.totalOsl).toBe(6);
    expect(s.goodput).toBeNull();
    expect(s.errorSummary).toEqual([
      { error_details: { code: 500, type: 'InternalServerError', message: 'boom' }, count: 1 },
    ]);
    const ttft = s.metrics.time_to_first_token;
    expect(ttft).toMatchObject({ avg: 15, min: 10, max: 20, std: 5, count: 2, sum: 30, p50: 15 });
    close(ttft?.p1, 10.1);
    close(ttft?.p25, 12.5);
    close(ttft?.p99, 19.9);
    const icl = s.metrics.inter_chunk_latency;
    expect(icl).toMatchObject({ avg: 10, min: 5, max: 20, count: 4, sum: 40, p50: 7.5, p25: 6.5 });
    close(icl?.p90, 16.4);
    close(icl?.std, Math.sqrt(34.5));
    expect(s.metrics.time_to_second_token).toMatchObject({ avg: 12.5, min: 5, max: 20 });
    expect(s.metrics.request_latency).toMatchObject({ avg: 35, min: 30, max: 40 });
    close(s.metrics.inter_token_latency?.avg, (20 / 3 + 20) / 2);
    close(s.metrics.output_token_throughput_per_user?.avg, (150 + 50) / 2);
    expect(s.metrics.output_sequence_length).toMatchObject({ avg: 3, sum: 6 });
    expect(s.metrics.input_sequence_length).toMatchObject({ avg: 75, sum: 150 });
    expect(s.sendLag).toBeNull();
  });

  it('goodput: requests meeting every SLO / duration; good fraction over valid + errors', () => {
    const s = summarize(records, parseGoodput('time_to_first_token:15 inter_token_latency:50'));
    expect(s.goodRequestCount).toBe(1);
    close(s.goodput, 20);
    close(s.goodFraction, 1 / 3);
  });

  it('send lag from intended vs actual send times', () => {
    const s = summarize([rec(1, [2], { intendedNs: 0 }), rec(13, [14], { intendedNs: 10e6 })]);
    expect(s.sendLag).toMatchObject({ min: 1, max: 3, avg: 2 });
  });
});

describe('goodput SLOs', () => {
  it('parses and rejects specs', () => {
    expect(parseGoodput('time_to_first_token:500 inter_token_latency:50')).toEqual({
      time_to_first_token: 500,
      inter_token_latency: 50,
    });
    expect(() => parseGoodput('ttft:5')).toThrow(/unknown/);
    expect(() => parseGoodput('time_to_first_token')).toThrow(/bad/);
  });

  it('latencies pass at ≤ threshold, throughput at ≥, a missing value fails', () => {
    expect(meetsSlos({ time_to_first_token: 500 }, { time_to_first_token: 500 })).toBe(true);
    expect(meetsSlos({ time_to_first_token: 500.1 }, { time_to_first_token: 500 })).toBe(false);
    expect(meetsSlos({}, { inter_token_latency: 50 })).toBe(false);
    expect(
      meetsSlos({ output_token_throughput_per_user: 40 }, { output_token_throughput_per_user: 50 }),
    ).toBe(false);
  });
});
