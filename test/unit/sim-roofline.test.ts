import { describe, it, expect } from 'vitest';
import { VirtualClock } from '../../src/sim/clock.js';
import { EngineCore, type EngineOptions } from '../../src/sim/engine.js';
import { CALIBRATIONS, GPUS, MODELS } from '../../src/sim/profiles.js';
import { stepCost, weightBytesTouched } from '../../src/sim/roofline.js';

/** Single-request TTFT and mean decode ITL (seconds) on the virtual clock. */
function single(opts: EngineOptions, promptTokens: number, maxTokens: number) {
  const clock = new VirtualClock();
  const engine = new EngineCore({ ...opts, clock });
  const gaps: number[] = [];
  let ttft = 0;
  engine.submit(
    { promptTokens, maxTokens },
    {
      onToken: (t) => {
        if (t.sincePrevSec === null) ttft = t.sinceArrivalSec;
        else gaps.push(t.sincePrevSec);
      },
    },
  );
  clock.runUntilIdle();
  return { ttft, itl: gaps.length ? gaps.reduce((a, b) => a + b, 0) / gaps.length : NaN };
}

describe('sim roofline step time', () => {
  const h100 = GPUS['H100-80GB'];
  const cal = CALIBRATIONS.default;

  it('single-request decode of Llama-3.1-8B bf16 on H100 is within 10% of the weight floor', () => {
    const floor = (8.03e9 * 2) / (0.8 * 3.35e12); // ≈ 6.0 ms
    expect(floor).toBeCloseTo(0.006, 3);
    const { itl } = single({}, 100, 20);
    expect(Math.abs(itl / floor - 1)).toBeLessThan(0.1);
  });

  it('prefill of 1,000 tokens is within 15% of 2·P·1000/(MFU·peak)', () => {
    const ideal = (2 * 8.03e9 * 1000) / ((cal?.mfu as number) * 989e12);
    const { ttft } = single({}, 1000, 1);
    expect(Math.abs(ttft / ideal - 1)).toBeLessThan(0.15);
  });

  it('prefill and decode tokens of one step are priced together', () => {
    const cfg = {
      model: MODELS['llama-3.1-8b'],
      gpu: h100,
      dtype: 'bf16',
      tp: 1,
      calibration: cal,
    } as Parameters<typeof stepCost>[0];
    const decode = stepCost(cfg, [{ newTokens: 1, contextTokens: 500 }]);
    const prefill = stepCost(cfg, [{ newTokens: 2000, contextTokens: 0 }]);
    const mixed = stepCost(cfg, [
      { newTokens: 2000, contextTokens: 0 },
      { newTokens: 1, contextTokens: 500 },
    ]);
    expect(mixed.seconds).toBeGreaterThan(prefill.seconds);
    expect(mixed.seconds).toBeLessThan(prefill.seconds + decode.seconds);
    expect(decode.memorySeconds).toBeGreaterThan(decode.computeSeconds); // memory bound
    expect(prefill.computeSeconds).toBeGreaterThan(prefill.memorySeconds); // compute bound
    // Long prompts pay for attention (quadratic): 8k tokens cost more than 4 × 2k.
    const long = stepCost(cfg, [{ newTokens: 8000, contextTokens: 0 }]);
    expect(long.flops).toBeGreaterThan(4 * prefill.flops);
  });

  it('TP splits the work across GPUs and adds the all-reduce term', () => {
    const tp2 = single({ model: 'llama-3.1-70b', tp: 2 }, 100, 20).itl;
    const tp4 = single({ model: 'llama-3.1-70b', tp: 4 }, 100, 20).itl;
    const weightsFloor = (tp: number) => (70.6e9 * 2) / (0.8 * 3.35e12 * tp);
    expect(tp2).toBeGreaterThan(weightsFloor(2));
    expect(tp4).toBeGreaterThan(weightsFloor(4));
    // Twice the GPUs: the memory part halves, the comm latency does not; so 0.5 < ratio < 0.6.
    expect(tp4 / tp2).toBeGreaterThan(0.5);
    expect(tp4 / tp2).toBeLessThan(0.6);
    const cfg = (tp: number) =>
      ({
        model: MODELS['llama-3.1-70b'],
        gpu: h100,
        dtype: 'bf16',
        tp,
        calibration: cal,
      }) as Parameters<typeof stepCost>[0];
    const c2 = stepCost(cfg(2), [{ newTokens: 1, contextTokens: 100 }]);
    const c1 = stepCost(cfg(1), [{ newTokens: 1, contextTokens: 100 }]);
    expect(c1.commSeconds).toBe(0);
    // 2 all-reduces × 80 layers × (latency + bytes / NVLink).
    const per = (2 * 0.5 * 8192 * 1 * 2) / 450e9 + 6e-6;
    expect(c2.commSeconds).toBeCloseTo(160 * per, 9);
    expect(c2.memorySeconds).toBeCloseTo(c1.memorySeconds / 2, 9);
  });

  it('MoE: FLOPs use active parameters, bytes the experts touched', () => {
    const mix = MODELS['mixtral-8x7b'];
    if (!mix) throw new Error('missing profile');
    const cfg = {
      model: mix,
      gpu: h100,
      dtype: 'bf16',
      tp: 2,
      calibration: cal,
    } as Parameters<typeof stepCost>[0];
    const s = stepCost(cfg, [{ newTokens: 1000, contextTokens: 0 }]);
    const attn = 4 * 32 * 4096 * ((1000 * 1001) / 2);
    expect(s.flops).toBeCloseTo(2 * 12.9e9 * 1000 + attn, -6);
    // One token touches 2 of 8 experts; a large batch touches them all.
    expect(weightBytesTouched(mix, 'bf16', 1)).toBeCloseTo(12.9e9 * 2, -9);
    expect(weightBytesTouched(mix, 'bf16', 1000)).toBeCloseTo(46.7e9 * 2, -6);
    const d1 = single({ model: 'mixtral-8x7b', tp: 2 }, 10, 5).itl;
    expect(d1).toBeGreaterThan((12.9e9 * 2) / (0.8 * 3.35e12 * 2));
    expect(d1).toBeLessThan((46.7e9 * 2) / (0.8 * 3.35e12 * 2));
  });

  it('fp8 halves the bytes and uses fp8 FLOPs; A100 falls back to bf16 FLOPs', () => {
    const bf = single({}, 100, 10).itl;
    const f8 = single({ dtype: 'fp8' }, 100, 10).itl;
    expect(f8 / bf).toBeGreaterThan(0.45);
    expect(f8 / bf).toBeLessThan(0.6);
    const a100bf = single({ gpu: 'A100-80GB' }, 4000, 1).ttft;
    const a100f8 = single({ gpu: 'A100-80GB', dtype: 'fp8' }, 4000, 1).ttft;
    expect(a100f8 / a100bf).toBeGreaterThan(0.9); // compute bound, same FLOP rate
  });
});
