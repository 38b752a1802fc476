import { afterEach, describe, expect, it } from 'vitest';
import { FaultController, parseFaultSpec, seededRandom } from '../../src/sim/faults.js';
import { createSimServer, type SimServer, type SimServerOptions } from '../../src/sim/server.js';

const MODEL = 'sim-model';
const servers: SimServer[] = [];

async function start(
  opts: Partial<SimServerOptions> = {},
): Promise<{ server: SimServer; base: string }> {
  const server = createSimServer({ servedModelName: MODEL, timeScale: 0.05, seed: 1, ...opts });
  servers.push(server);
  const port = await server.listen(0, '127.0.0.1');
  return { server, base: `http://127.0.0.1:${port}` };
}

afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

function post(base: string, path: string, body: unknown, signal?: AbortSignal): Promise<Response> {
  return fetch(base + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    ...(signal ? { signal } : {}),
  });
}

const complete = (base: string, extra: Record<string, unknown> = {}, signal?: AbortSignal) =>
  post(base, '/v1/completions', { model: MODEL, prompt: 'hello', max_tokens: 4, ...extra }, signal);

async function setFaults(base: string, patch: unknown): Promise<Record<string, unknown>> {
  const res = await post(base, '/admin/faults', patch);
  expect(res.status).toBe(200);
  return (await res.json()) as Record<string, unknown>;
}

async function waitFor(cond: () => boolean, timeoutMs = 2000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error('timed out waiting for condition');
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Reads a whole SSE stream; `error` is set when the body read failed (connection cut). */
async function readStream(
  res: Response,
): Promise<{ tokens: number; done: boolean; error: unknown }> {
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  const decoder = new TextDecoder();
  let buf = '';
  let tokens = 0;
  let done = false;
  let error: unknown = null;
  try {
    for (;;) {
      const r = await reader.read();
      if (r.done) break;
      buf += decoder.decode(r.value, { stream: true });
      let i: number;
      while ((i = buf.indexOf('\n\n')) !== -1) {
        const data = buf.slice(6, i);
        buf = buf.slice(i + 2);
        if (data === '[DONE]') done = true;
        else {
          const c = JSON.parse(data) as { choices: { text?: string }[] };
          if ((c.choices[0]?.text ?? '') !== '') tokens++;
        }
      }
    }
  } catch (err) {
    error = err;
  }
  return { tokens, done, error };
}

describe('fault spec and controller', () => {
  it('validates specs and merges patches', () => {
    expect(() => parseFaultSpec({ errorRate: 2 })).toThrow(/errorRate/);
    expect(() => parseFaultSpec({ crash: 'later' })).toThrow();
    expect(() => parseFaultSpec({ bogus: 1 })).toThrow();
    const slow: number[] = [];
    const f = new FaultController({ seed: 3, onSlowFactor: (x) => slow.push(x) });
    expect(f.apply({ slowFactor: 2, gpu: { eccSbe: 1 } })).toEqual({
      slowFactor: 2,
      gpu: { eccSbe: 1 },
    });
    expect(f.apply({ gpu: { thermal: true }, errorRate: 0.1 })).toEqual({
      slowFactor: 2,
      errorRate: 0.1,
      gpu: { eccSbe: 1, thermal: true },
    });
    expect(f.slowFactor).toBe(3); // 2 × 1.5 (thermal)
    expect(f.apply({ slowFactor: null, gpu: { eccSbe: null } })).toEqual({
      errorRate: 0.1,
      gpu: { thermal: true },
    });
    expect(f.apply({ clear: true, hang: true })).toEqual({ hang: true });
    expect(f.slowFactor).toBe(1);
    expect(slow).toEqual([2, 3, 1.5, 1]);
    expect(() => f.apply({ slowFactor: 0 })).toThrow(/slowFactor/);
    expect(f.spec).toEqual({ hang: true }); // unchanged by a rejected patch
  });

  it('records an Xid event each time one is set; clear forgets them', () => {
    const f = new FaultController({ now: () => new Date('2026-01-01T00:00:00Z') });
    f.apply({ gpu: { xid: 79 } });
    f.apply({ gpu: { xid: 48, index: 1 } });
    f.apply({ errorRate: 0.5 });
    expect(f.xidEvents).toEqual([
      { gpu: 0, code: 79, time: '2026-01-01T00:00:00.000Z', message: 'GPU has fallen off the bus' },
      { gpu: 1, code: 48, time: '2026-01-01T00:00:00.000Z', message: 'Double Bit ECC Error' },
    ]);
    f.clear();
    expect(f.xidEvents).toEqual([]);
    expect(f.spec).toEqual({});
  });

  it('counts requests for crash.afterRequests from when it is set', () => {
    const f = new FaultController({ spec: { crash: { afterRequests: 2 } } });
    expect([f.onArrival(), f.onArrival(), f.onArrival()]).toEqual(['serve', 'serve', 'crash']);
    const g = new FaultController();
    g.onArrival();
    g.apply({ crash: { afterRequests: 1 } });
    expect([g.onArrival(), g.onArrival()]).toEqual(['serve', 'crash']);
    g.apply({ crash: 'now' });
    expect(g.onArrival()).toBe('crash');
  });

  it('draws are seeded', () => {
    const a = seededRandom(42);
    const b = seededRandom(42);
    const xs = Array.from({ length: 5 }, () => a());
    expect(Array.from({ length: 5 }, () => b())).toEqual(xs);
    expect(xs.every((x) => x >= 0 && x < 1)).toBe(true);
    const f1 = new FaultController({ seed: 9, spec: { errorRate: 0.5 } });
    const f2 = new FaultController({ seed: 9, spec: { errorRate: 0.5 } });
    const d1 = Array.from({ length: 50 }, () => f1.shouldError());
    expect(Array.from({ length: 50 }, () => f2.shouldError())).toEqual(d1);
  });
});

describe('fault injection over HTTP', () => {
  it('GET /admin/faults shows the state; bad patches get 400', async () => {
    const { base } = await start({ faults: { slowFactor: 2 }, seed: 5 });
    const state = (await (await fetch(base + '/admin/faults')).json()) as Record<string, unknown>;
    expect(state).toMatchObject({ replica: 0, seed: 5, faults: { slowFactor: 2 }, slow_factor: 2 });
    const bad = await post(base, '/admin/faults', { errorRate: 'lots' });
    expect(bad.status).toBe(400);
    const err = (await bad.json()) as { error: { type: string; message: string } };
    expect(err.error.type).toBe('invalid_request_error');
    expect(err.error.message).toMatch(/errorRate/);
    const notJson = await fetch(base + '/admin/faults', { method: 'POST', body: '{' });
    expect(notJson.status).toBe(400);
    await notJson.arrayBuffer();
    expect(await setFaults(base, { clear: true })).toMatchObject({ faults: {}, slow_factor: 1 });
  });

  it('crash now: answers the admin call, then the replica is gone', async () => {
    const crashes: string[] = [];
    const { server, base } = await start({
      onCrash: (srv, reason) => {
        crashes.push(reason);
        srv.kill();
      },
    });
    const state = await setFaults(base, { crash: 'now' });
    expect(state.faults).toEqual({ crash: 'now' });
    await waitFor(() => server.crashed);
    expect(crashes).toEqual(['fault: crash now']);
    await expect(fetch(base + '/health')).rejects.toThrow();
  });

  it('crash after N requests: request N+1 gets no answer and the replica dies', async () => {
    const { server, base } = await start({ faults: { crash: { afterRequests: 2 } } });
    for (let i = 0; i < 2; i++) expect((await complete(base)).status).toBe(200);
    await expect(complete(base)).rejects.toThrow();
    expect(server.crashed).toBe(true);
    await expect(fetch(base + '/health')).rejects.toThrow();
  });

  it('crash after N requests cuts the streams in flight', async () => {
    const { server, base } = await start({ timeScale: 1 });
    const stream = await complete(base, { stream: true, max_tokens: 5000 });
    await setFaults(base, { crash: { afterRequests: 0 } });
    const reading = readStream(stream);
    await expect(complete(base)).rejects.toThrow();
    expect(server.crashed).toBe(true);
    const r = await reading;
    expect(r.done).toBe(false);
    expect(r.error).not.toBeNull();
  });

  it('hang: requests and /health get no answer; /metrics and admin still answer', async () => {
    const { server, base } = await start();
    await setFaults(base, { hang: true });
    await expect(complete(base, {}, AbortSignal.timeout(300))).rejects.toThrow();
    await expect(fetch(base + '/health', { signal: AbortSignal.timeout(300) })).rejects.toThrow();
    expect((await fetch(base + '/metrics')).status).toBe(200);
    expect(server.engine.running).toBe(0); // nothing was submitted
    await setFaults(base, { hang: null });
    expect((await fetch(base + '/health')).status).toBe(200);
    expect((await complete(base)).status).toBe(200);
  });

  it('slow factor: latency grows by about the factor', async () => {
    const { base } = await start({ timeScale: 0.5 });
    const timed = async (): Promise<number> => {
      const t0 = performance.now();
      const res = await complete(base, { max_tokens: 40, ignore_eos: true });
      await res.json();
      return performance.now() - t0;
    };
    await timed(); // warm up
    const base1 = Math.min(await timed(), await timed());
    await setFaults(base, { slowFactor: 4 });
    const slow = Math.min(await timed(), await timed());
    expect(slow / base1).toBeGreaterThan(2.5);
    expect(slow / base1).toBeLessThan(6);
  });

  it('error rate 1: every request gets an OpenAI-shaped 500', async () => {
    const { server, base } = await start({ faults: { errorRate: 1 } });
    for (const stream of [false, true]) {
      const res = await complete(base, { stream });
      expect(res.status).toBe(500);
      expect(await res.json()).toEqual({
        error: {
          message: expect.stringMatching(/fault injection/) as unknown,
          type: 'server_error',
          param: null,
          code: 'simulated_fault',
        },
      });
    }
    expect(server.engine.running + server.engine.waiting).toBe(0);
    // Validation comes first: a bad request is still a 400.
    expect((await complete(base, { max_tokens: 'x' })).status).toBe(400);
  });

  it('error rate 0.5 with a seed: about half, the same ones every time', async () => {
    const statuses = async (): Promise<number[]> => {
      const { base } = await start({ faults: { errorRate: 0.5 }, seed: 1234 });
      const out: number[] = [];
      for (let i = 0; i < 40; i++) {
        const res = await complete(base, { max_tokens: 1 });
        out.push(res.status);
        await res.arrayBuffer();
      }
      return out;
    };
    const a = await statuses();
    const errors = a.filter((s) => s === 500).length;
    expect(errors).toBeGreaterThanOrEqual(10);
    expect(errors).toBeLessThanOrEqual(30);
    expect(a.filter((s) => s !== 500 && s !== 200)).toEqual([]);
    expect(await statuses()).toEqual(a);
  });

  it('disconnect after N tokens: the stream is cut without [DONE]', async () => {
    const { server, base } = await start({ faults: { disconnect: { afterTokens: 3 } } });
    const res = await complete(base, { stream: true, max_tokens: 20, ignore_eos: true });
    expect(res.status).toBe(200);
    const r = await readStream(res);
    expect(r.done).toBe(false);
    expect(r.tokens).toBe(3);
    expect(r.error).not.toBeNull();
    // Non-streaming: the connection is dropped before the answer.
    await expect(complete(base, { max_tokens: 20, ignore_eos: true })).rejects.toThrow();
    // Short requests finish before the cut.
    const short = await complete(base, { stream: true, max_tokens: 3 });
    expect((await readStream(short)).done).toBe(true);
    await waitFor(() => server.engine.running === 0);
    const metrics = await (await fetch(base + '/metrics')).text();
    expect(metrics).toMatch(/vllm:request_success_total\{[^}]*finished_reason="abort"[^}]*\} 2\n/);
  });

  it('disconnect rate 0.5 cuts some streams, not all', async () => {
    const { base } = await start({ faults: { disconnect: { afterTokens: 1, rate: 0.5 } } });
    let cut = 0;
    for (let i = 0; i < 20; i++) {
      const r = await readStream(await complete(base, { stream: true, max_tokens: 4 }));
      if (!r.done) cut++;
    }
    expect(cut).toBeGreaterThanOrEqual(4);
    expect(cut).toBeLessThanOrEqual(16);
  });

  it('GPU faults show in /telemetry/gpus; thermal also slows the engine', async () => {
    const { base } = await start({ tp: 2, replicaIndex: 1 });
    const state = await setFaults(base, {
      gpu: { xid: 79, eccSbe: 5, eccDbe: 2, thermal: true, index: 1 },
    });
    expect(state.slow_factor).toBe(1.5);
    type Gpus = {
      gpus: {
        index: number;
        temperature_c: number;
        ecc_sbe_total: number;
        ecc_dbe_total: number;
        xid_events: { code: number; time: string; message: string }[];
        clocks_throttle_reasons: string[];
      }[];
    };
    const t = (await (await fetch(base + '/telemetry/gpus')).json()) as Gpus;
    expect(t.gpus.map((g) => g.index)).toEqual([2, 3]);
    const [healthy, faulty] = t.gpus;
    expect(healthy).toMatchObject({
      ecc_sbe_total: 0,
      ecc_dbe_total: 0,
      xid_events: [],
      clocks_throttle_reasons: [],
    });
    expect(healthy!.temperature_c).toBeLessThan(85);
    expect(faulty).toMatchObject({
      temperature_c: 92,
      ecc_sbe_total: 5,
      ecc_dbe_total: 2,
      clocks_throttle_reasons: ['HW Thermal Slowdown'],
    });
    expect(faulty!.xid_events).toEqual([
      { code: 79, time: expect.any(String) as unknown, message: 'GPU has fallen off the bus' },
    ]);
    // Xid 48 (double-bit ECC error) implies an uncorrected ECC count.
    await setFaults(base, { clear: true, gpu: { xid: 48 } });
    const t2 = (await (await fetch(base + '/telemetry/gpus')).json()) as Gpus;
    expect(t2.gpus[0]).toMatchObject({ ecc_dbe_total: 1, clocks_throttle_reasons: [] });
    expect(t2.gpus[0]!.xid_events.map((e) => e.code)).toEqual([48]);
  });
});
