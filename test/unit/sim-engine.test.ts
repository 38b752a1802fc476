import { describe, it, expect } from 'vitest';
import { EngineCore, type FinishEvent, type TokenEvent } from '../../src/sim/engine.js';
import { generatedToken } from '../../src/sim/tokenizer.js';

describe('sim EngineCore', () => {
  it('validates options', () => {
    expect(() => new EngineCore({ timeScale: 0 })).toThrow(RangeError);
    expect(() => new EngineCore({ maxConcurrency: 0 })).toThrow(RangeError);
    expect(() => new EngineCore({ prefillTokensPerSecond: -1 })).toThrow(RangeError);
    expect(new EngineCore().options).toEqual({
      prefillTokensPerSecond: 20000,
      decodeMsPerToken: 10,
      maxConcurrency: 256,
      timeScale: 1,
    });
  });

  it('generates maxTokens tokens with simulated timings', async () => {
    const engine = new EngineCore({
      prefillTokensPerSecond: 1000,
      decodeMsPerToken: 20,
      timeScale: 0.05,
    });
    const tokens: TokenEvent[] = [];
    const h = engine.submit(
      { promptTokens: 100, maxTokens: 5, seed: 3 },
      { onToken: (t) => tokens.push(t) },
    );
    expect(engine.running).toBe(1);
    const ev = await h.done;
    expect(ev.finishReason).toBe('length');
    expect(ev.completionTokens).toBe(5);
    expect(tokens.map((t) => t.index)).toEqual([0, 1, 2, 3, 4]);
    expect(ev.text).toBe(Array.from({ length: 5 }, (_, i) => generatedToken(3, i)).join(''));
    // Simulated: TTFT = 100 / 1000 s = 0.1 s, then 20 ms per token.
    expect(ev.ttftSec).toBeGreaterThanOrEqual(0.1 - 1e-9);
    expect(ev.ttftSec).toBeLessThan(0.1 + 0.2);
    expect(tokens[1]?.sincePrevSec).toBeCloseTo(0.02, 6);
    expect(ev.e2eSec).toBeGreaterThanOrEqual(0.1 + 4 * 0.02 - 1e-9);
    expect(engine.running).toBe(0);
  });

  it('queues beyond maxConcurrency in FIFO order and cancels', async () => {
    const engine = new EngineCore({ decodeMsPerToken: 10, maxConcurrency: 1, timeScale: 0.1 });
    const order: string[] = [];
    const onFinish = (ev: FinishEvent) => order.push(`${ev.requestId}:${ev.finishReason}`);
    const a = engine.submit({ id: 'a', promptTokens: 1, maxTokens: 3 }, { onFinish });
    const b = engine.submit({ id: 'b', promptTokens: 1, maxTokens: 3 }, { onFinish });
    const ctl = new AbortController();
    const c = engine.submit(
      { id: 'c', promptTokens: 1, maxTokens: 3, signal: ctl.signal },
      { onFinish },
    );
    expect(engine.running).toBe(1);
    expect(engine.waiting).toBe(2);
    ctl.abort();
    expect(engine.waiting).toBe(1);
    const evC = await c.done;
    expect(evC.finishReason).toBe('abort');
    expect(evC.ttftSec).toBeNull();
    await a.done;
    const evB = await b.done;
    expect(evB.queueSec).toBeGreaterThan(0);
    expect(order).toEqual(['c:abort', 'a:length', 'b:length']);
    expect(engine.running + engine.waiting).toBe(0);
  });

  it('cancel while running clears timers and frees the slot', async () => {
    const engine = new EngineCore({ decodeMsPerToken: 1000, maxConcurrency: 1, timeScale: 0.01 });
    let tokens = 0;
    const h = engine.submit({ promptTokens: 1, maxTokens: 1000 }, { onToken: () => tokens++ });
    const next = engine.submit({ promptTokens: 1, maxTokens: 1 });
    await new Promise((r) => setTimeout(r, 25));
    expect(tokens).toBeGreaterThan(0);
    h.cancel();
    const seen = tokens;
    expect(engine.running).toBe(1); // `next` got the slot
    expect((await h.done).finishReason).toBe('abort');
    expect((await next.done).finishReason).toBe('length');
    await new Promise((r) => setTimeout(r, 30));
    expect(tokens).toBe(seen);
    expect(engine.running).toBe(0);
  });

  it('stops on a stop string spanning tokens without emitting it', async () => {
    const engine = new EngineCore({ decodeMsPerToken: 1, timeScale: 0.1 });
    const full = Array.from({ length: 12 }, (_, i) => generatedToken(11, i)).join('');
    // A stop string spanning the end of token 4 and the start of token 5.
    const t4 = generatedToken(11, 4);
    const t5 = generatedToken(11, 5);
    const stop = t4.slice(-2) + t5.slice(0, 3);
    const deltas: string[] = [];
    const ev = await engine.submit(
      { promptTokens: 1, maxTokens: 12, seed: 11, stop: [stop] },
      { onToken: (t) => deltas.push(t.delta) },
    ).done;
    expect(ev.finishReason).toBe('stop');
    expect(ev.stopString).toBe(stop);
    expect(ev.text).toBe(full.slice(0, full.indexOf(stop)));
    expect(deltas.join('')).toBe(ev.text);
    expect(ev.completionTokens).toBeLessThanOrEqual(6);
  });
});
