import { describe, it, expect } from 'vitest';
import { VirtualClock } from '../../src/sim/clock.js';
import {
  EngineCore,
  type EngineOptions,
  type FinishEvent,
  type TokenEvent,
} from '../../src/sim/engine.js';
import { SimMetrics } from '../../src/sim/metrics.js';
import { generatedToken } from '../../src/sim/tokenizer.js';

function virtual(opts: EngineOptions = {}): { engine: EngineCore; clock: VirtualClock } {
  const clock = new VirtualClock();
  return { engine: new EngineCore({ ...opts, clock }), clock };
}

describe('sim EngineCore', () => {
  it('validates options with the option name in the RangeError', () => {
    expect(() => new EngineCore({ timeScale: 0 })).toThrow(/timeScale/);
    expect(() => new EngineCore({ maxNumSeqs: 0 })).toThrow(/maxNumSeqs/);
    expect(() => new EngineCore({ maxNumBatchedTokens: 1.5 })).toThrow(/maxNumBatchedTokens/);
    expect(() => new EngineCore({ blockSize: -16 })).toThrow(/blockSize/);
    expect(() => new EngineCore({ gpuMemoryUtilization: 1.5 })).toThrow(/gpuMemoryUtilization/);
    expect(() => new EngineCore({ model: 'gpt-17' })).toThrow(/model/);
    expect(() => new EngineCore({ gpu: 'TPU' })).toThrow(/gpu/);
    expect(() => new EngineCore({ tp: 0 })).toThrow(/tp/);
    expect(() => new EngineCore({ calibration: 'nope' })).toThrow(/calibration/);
    expect(() => new EngineCore({ numGpuBlocksOverride: 0 })).toThrow(RangeError);
    // 70B in bf16 does not fit on one 80 GB GPU.
    expect(() => new EngineCore({ model: 'llama-3.1-70b' })).toThrow(RangeError);
    const e = new EngineCore();
    expect(e.options).toMatchObject({
      model: 'llama-3.1-8b',
      gpu: 'H100-80GB',
      tp: 1,
      dtype: 'bf16',
      calibration: 'default',
      maxNumSeqs: 256,
      maxNumBatchedTokens: 8192,
      blockSize: 16,
      gpuMemoryUtilization: 0.9,
      enablePrefixCaching: true,
      timeScale: 1,
    });
    expect(Object.isFrozen(e.options)).toBe(true);
    expect(new EngineCore({ gpu: 'h100-sxm' }).profile.gpu.name).toBe('H100-80GB');
    expect(new EngineCore({ calibration: 'llamacpp-h100' }).options).toMatchObject({
      model: 'llama-2-7b',
      dtype: 'f16',
      maxNumBatchedTokens: 2048,
    });
  });

  it('generates maxTokens tokens with step-loop timings on the virtual clock', () => {
    const { engine, clock } = virtual();
    const tokens: TokenEvent[] = [];
    let fin: FinishEvent | undefined;
    engine.submit(
      { promptTokens: 100, maxTokens: 5, seed: 3 },
      { onToken: (t) => tokens.push(t), onFinish: (e) => (fin = e) },
    );
    expect(engine.waiting).toBe(1);
    expect(tokens).toHaveLength(0); // nothing synchronous
    clock.runUntilIdle();
    expect(fin?.finishReason).toBe('length');
    expect(fin?.completionTokens).toBe(5);
    expect(fin?.preemptions).toBe(0);
    expect(tokens.map((t) => t.index)).toEqual([0, 1, 2, 3, 4]);
    expect(fin?.text).toBe(Array.from({ length: 5 }, (_, i) => generatedToken(3, i)).join(''));
    // Equal decode steps; TTFT = one prefill step; e2e = TTFT + 4 decode steps.
    const itl = tokens[1]?.sincePrevSec as number;
    expect(itl).toBeGreaterThan(0.005);
    for (const t of tokens.slice(2)) expect(t.sincePrevSec).toBeCloseTo(itl, 6);
    expect(fin?.e2eSec).toBeCloseTo((fin?.ttftSec as number) + 4 * itl, 6);
    expect(engine.running + engine.waiting).toBe(0);
    expect(clock.pending).toBe(0); // idle engine = no timer
    const s = engine.stats();
    expect(s.promptTokens).toBe(100);
    expect(s.generationTokens).toBe(5);
    expect(s.usedBlocks).toBe(0);
  });

  it('behaves identically on the real clock (simulated timings)', async () => {
    const run = async (engine: EngineCore, step?: () => void) => {
      const tokens: TokenEvent[] = [];
      const h = engine.submit(
        { promptTokens: 300, maxTokens: 4 },
        { onToken: (t) => tokens.push(t) },
      );
      step?.();
      const ev = await h.done;
      return { ev, gaps: tokens.map((t) => t.sincePrevSec) };
    };
    const { engine: ve, clock } = virtual();
    const v = await run(ve, () => clock.runUntilIdle());
    const r = await run(new EngineCore({ timeScale: 0.01 }));
    expect(r.ev.ttftSec).toBeCloseTo(v.ev.ttftSec as number, 6);
    expect(r.gaps).toHaveLength(v.gaps.length);
    expect(r.gaps[0]).toBeNull();
    for (const [i, g] of v.gaps.entries()) if (g !== null) expect(r.gaps[i]).toBeCloseTo(g, 6);
  });

  it('queues beyond maxNumSeqs in FIFO order and cancels', async () => {
    const { engine, clock } = virtual({ maxNumSeqs: 1 });
    const order: string[] = [];
    const onFinish = (ev: FinishEvent) => order.push(`${ev.requestId}:${ev.finishReason}`);
    const a = engine.submit({ id: 'a', promptTokens: 1, maxTokens: 3 }, { onFinish });
    const b = engine.submit({ id: 'b', promptTokens: 1, maxTokens: 3 }, { onFinish });
    const ctl = new AbortController();
    const c = engine.submit(
      { id: 'c', promptTokens: 1, maxTokens: 3, signal: ctl.signal },
      { onFinish },
    );
    clock.advance(); // first step starts
    expect(engine.running).toBe(1);
    expect(engine.waiting).toBe(2);
    ctl.abort();
    expect(engine.waiting).toBe(1);
    clock.runUntilIdle();
    const evC = await c.done;
    expect(evC.finishReason).toBe('abort');
    expect(evC.ttftSec).toBeNull();
    await a.done;
    const evB = await b.done;
    expect(evB.queueSec).toBeGreaterThan(0);
    expect(order).toEqual(['c:abort', 'a:length', 'b:length']);
    expect(engine.running + engine.waiting).toBe(0);
  });

  it('cancel while running frees the slot and its blocks', () => {
    const { engine, clock } = virtual({ maxNumSeqs: 1 });
    let tokens = 0;
    const h = engine.submit({ promptTokens: 100, maxTokens: 1000 }, { onToken: () => tokens++ });
    let nextDone = false;
    engine.submit({ promptTokens: 1, maxTokens: 1 }, { onFinish: () => (nextDone = true) });
    clock.runUntil(100);
    expect(tokens).toBeGreaterThan(5);
    expect(engine.stats().usedBlocks).toBe(Math.ceil((100 + tokens) / 16));
    h.cancel();
    expect(engine.stats().usedBlocks).toBe(0);
    const seen = tokens;
    clock.runUntilIdle();
    expect(nextDone).toBe(true);
    expect(tokens).toBe(seen);
    expect(engine.running).toBe(0);
  });

  it('stops on a stop string spanning tokens without emitting it', () => {
    const { engine, clock } = virtual();
    const full = Array.from({ length: 12 }, (_, i) => generatedToken(11, i)).join('');
    // A stop string spanning the end of token 4 and the start of token 5.
    const t4 = generatedToken(11, 4);
    const t5 = generatedToken(11, 5);
    const stop = t4.slice(-2) + t5.slice(0, 3);
    const deltas: string[] = [];
    let ev: FinishEvent | undefined;
    engine.submit(
      { promptTokens: 1, maxTokens: 12, seed: 11, stop: [stop], ignoreEos: true },
      { onToken: (t) => deltas.push(t.delta), onFinish: (e) => (ev = e) },
    );
    clock.runUntilIdle();
    expect(ev?.finishReason).toBe('stop');
    expect(ev?.stopString).toBe(stop);
    expect(ev?.text).toBe(full.slice(0, full.indexOf(stop)));
    expect(deltas.join('')).toBe(ev?.text);
    expect(ev?.completionTokens).toBeLessThanOrEqual(6);
  });

  it('chunked prefill: a long prompt takes several steps while decodes keep going', () => {
    const { engine, clock } = virtual({ maxNumBatchedTokens: 512 });
    const decodeTimes: number[] = [];
    engine.submit(
      { promptTokens: 16, maxTokens: 200 },
      { onToken: () => decodeTimes.push(clock.now()) },
    );
    clock.runUntil(30); // the short request is decoding
    const before = decodeTimes.length;
    let longTtft = 0;
    const submittedAt = clock.now();
    engine.submit(
      { promptTokens: 4000, maxTokens: 1 },
      { onToken: () => (longTtft = clock.now() - submittedAt) },
    );
    const steps: number[] = [];
    while (longTtft === 0 && clock.advance()) steps.push(engine.lastStep?.seconds ?? 0);
    // 4000 prompt tokens with 511 per step (one goes to the decode) → at least 8 steps.
    const during = decodeTimes.filter((t) => t > submittedAt).length;
    expect(during).toBeGreaterThanOrEqual(8);
    expect(decodeTimes.length - before).toBe(during);
    expect(longTtft).toBeGreaterThan(0);
    clock.runUntilIdle();
  });

  it('preempts under KV pressure, counts it, and still completes every request', async () => {
    const { engine, clock } = virtual({ numGpuBlocksOverride: 24, enablePrefixCaching: false });
    const metrics = new SimMetrics({ model: 'm', engine });
    const done: Promise<FinishEvent>[] = [];
    for (let i = 0; i < 6; i++)
      done.push(engine.submit({ promptTokens: 40, maxTokens: 60, seed: i }).done);
    clock.runUntilIdle();
    const evs = await Promise.all(done);
    for (const [i, ev] of evs.entries()) {
      expect(ev.finishReason).toBe('length');
      expect(ev.completionTokens).toBe(60);
      expect(ev.text).toBe(Array.from({ length: 60 }, (_, k) => generatedToken(i, k)).join(''));
    }
    const s = engine.stats();
    expect(s.preemptions).toBeGreaterThan(0);
    expect(evs.reduce((n, e) => n + e.preemptions, 0)).toBe(s.preemptions);
    expect(s.usedBlocks).toBe(0);
    const text = await metrics.metrics();
    expect(text).toContain(
      `vllm:num_preemptions_total{model_name="m",engine="0"} ${s.preemptions}`,
    );
    metrics.detach();
  });

  it('finishes requests that can never fit with length, without deadlock', () => {
    const { engine, clock } = virtual({ numGpuBlocksOverride: 4 });
    const evs: FinishEvent[] = [];
    engine.submit({ promptTokens: 100, maxTokens: 5 }, { onFinish: (e) => evs.push(e) });
    engine.submit({ promptTokens: 40, maxTokens: 100 }, { onFinish: (e) => evs.push(e) });
    engine.submit({ promptTokens: 10, maxTokens: 3 }, { onFinish: (e) => evs.push(e) });
    clock.runUntilIdle();
    expect(evs.map((e) => [e.promptTokens, e.finishReason, e.completionTokens])).toEqual([
      [100, 'length', 0], // 7 blocks needed > 4
      [10, 'length', 3],
      // Alone, it fills the 4 blocks: 64 computed tokens (40 prompt + 24 generated) → 25 sampled.
      [40, 'length', 25],
    ]);
  });

  it('setSlowFactor scales step times; close aborts and clears timers', async () => {
    const { engine, clock } = virtual();
    const gaps: number[] = [];
    engine.submit(
      { promptTokens: 10, maxTokens: 4 },
      { onToken: (t) => t.sincePrevSec !== null && gaps.push(t.sincePrevSec) },
    );
    clock.runUntilIdle();
    engine.setSlowFactor(3);
    const slow: number[] = [];
    engine.submit(
      { promptTokens: 10, maxTokens: 4 },
      { onToken: (t) => t.sincePrevSec !== null && slow.push(t.sincePrevSec) },
    );
    clock.runUntilIdle();
    expect(slow[1]).toBeCloseTo(3 * (gaps[1] as number), 9);
    expect(() => engine.setSlowFactor(0)).toThrow(RangeError);
    const h = engine.submit({ promptTokens: 10, maxTokens: 100 });
    clock.runUntil(clock.now() + 50);
    engine.close();
    expect((await h.done).finishReason).toBe('abort');
    expect(clock.pending).toBe(0);
    const late = await engine.submit({ promptTokens: 1, maxTokens: 1 }).done;
    expect(late.finishReason).toBe('abort');
  });
});
