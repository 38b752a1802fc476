// Fault tests through real sockets: simulated engines on loopback ports with injected faults, the
// gateway on its own port (the raw serving path, as `inferplane up` mounts it), clients over
// HTTP. Every request must end with a definite answer — complete, or an error status/event — and
// never hang: each call has a deadline far below the test timeout.
import { afterEach, describe, expect, it } from 'vitest';
import { hashApiKey } from '../../src/core/ids.js';
import type { RouteModel, RoutingPolicy } from '../../src/core/types.js';
import { Gateway, type GatewayOptions } from '../../src/gateway/gateway.js';
import type { H1Server } from '../../src/gateway/h1/server.js';
import { createSimServer, type SimServer } from '../../src/sim/server.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { createMetrics } from '../../src/telemetry/metrics.js';

const KEY = 'ipk_faults_key';
const MODEL = 'm';

interface Rig {
  url: string;
  sims: SimServer[];
  simUrls: string[];
  gateway: Gateway;
  metrics: ReturnType<typeof createMetrics>;
  server: H1Server;
}
const rigs: Rig[] = [];

afterEach(async () => {
  for (const r of rigs.splice(0)) {
    const closed = r.server.close();
    r.server.closeAllConnections();
    await closed;
    await r.gateway.close();
    await Promise.all(r.sims.map((s) => s.close()));
  }
});

async function rig(
  n: number,
  policy: RoutingPolicy,
  opts: Partial<GatewayOptions> = {},
): Promise<Rig> {
  const sims: SimServer[] = [];
  const simUrls: string[] = [];
  for (let i = 0; i < n; i++) {
    const s = createSimServer({
      model: 'llama-3.1-8b',
      servedModelName: MODEL,
      timeScale: 0.05,
      replicaIndex: i,
      seed: i + 1,
    });
    sims.push(s);
    simUrls.push(`http://127.0.0.1:${await s.listen(0)}`);
  }
  const metrics = createMetrics({ defaultMetrics: false });
  const gateway = new Gateway({
    metrics,
    logger: createLogger({ level: 'silent' }),
    routing: { scrapeIntervalMs: 50 },
    ...opts,
  });
  const route: RouteModel = {
    model: MODEL,
    deployment: MODEL,
    tenantId: 't',
    tenantName: 't',
    engine: 'sim',
    createdAt: new Date(0).toISOString(),
    endpoints: simUrls.map((url, i) => ({ replicaId: `r${i}`, index: i, url })),
    routing: { policy },
  };
  gateway.update({
    version: 1,
    keys: [{ hash: hashApiKey(KEY), keyId: 'k', role: 'tenant', tenantId: 't', tenantName: 't' }],
    models: [route],
    tenants: [{ id: 't', name: 't', limits: {} }],
  });
  const server = gateway.server((_req, res) => {
    res.writeHead(404);
    res.end();
  });
  await server.listen(0, '127.0.0.1');
  const url = `http://127.0.0.1:${server.address().port}`;
  const r = { url, sims, simUrls, gateway, metrics, server };
  rigs.push(r);
  return r;
}

async function fault(simUrl: string, patch: Record<string, unknown>): Promise<void> {
  const res = await fetch(`${simUrl}/admin/faults`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(patch),
  });
  expect(res.status).toBe(200);
  await res.text();
}

interface Outcome {
  status: number;
  replica: string | null;
  /** Whole body text (SSE or JSON). */
  text: string;
  ms: number;
}

/** One chat request with a hard deadline: a hang fails the test instead of stalling it. */
async function chat(
  r: Rig,
  opts: { stream?: boolean; maxTokens?: number; deadlineMs?: number; signal?: AbortSignal } = {},
): Promise<Outcome> {
  const t0 = Date.now();
  const deadline = AbortSignal.timeout(opts.deadlineMs ?? 5000);
  const res = await fetch(`${r.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      model: MODEL,
      messages: [{ role: 'user', content: 'tell me about fault tolerance' }],
      max_tokens: opts.maxTokens ?? 8,
      stream: opts.stream ?? false,
    }),
    signal: opts.signal ? AbortSignal.any([opts.signal, deadline]) : deadline,
  });
  const text = await res.text();
  return {
    status: res.status,
    replica: res.headers.get('x-inferplane-replica'),
    text,
    ms: Date.now() - t0,
  };
}

function isCompleteStream(text: string): boolean {
  return text.trimEnd().endsWith('data: [DONE]');
}

async function metric(r: Rig, line: RegExp): Promise<number> {
  const text = await r.metrics.registry.metrics();
  const m = text.split('\n').find((l) => line.test(l));
  return m ? Number(m.split(' ').pop()) : 0;
}

describe('gateway faults through real sockets', () => {
  it('a replica that dies mid-stream: the client gets an SSE error event and a clean end', async () => {
    const r = await rig(1, 'round-robin');
    await fault(r.simUrls[0]!, { disconnect: { afterTokens: 3 } });
    const out = await chat(r, { stream: true, maxTokens: 20 });
    expect(out.status).toBe(200);
    expect(out.text).toMatch(/"code":"IP_UPSTREAM_UNAVAILABLE"/);
    expect(isCompleteStream(out.text)).toBe(true);
    // Non-streamed: a 502 with an OpenAI-shaped error, not a truncated body.
    const whole = await chat(r, { maxTokens: 20 });
    expect(whole.status).toBe(502);
    expect(JSON.parse(whole.text)).toMatchObject({ error: { code: 'IP_UPSTREAM_UNAVAILABLE' } });
    expect(
      await metric(r, /^inferplane_gateway_upstream_errors_total\{model="m",kind="mid_stream"\}/),
    ).toBe(1);
  });

  it('a replica process that crashes: its requests are retried on the other replica', async () => {
    const r = await rig(2, 'round-robin');
    await fault(r.simUrls[0]!, { crash: 'now' });
    await new Promise((res) => setTimeout(res, 50));
    const outs = await Promise.all(Array.from({ length: 10 }, () => chat(r)));
    expect(outs.map((o) => o.status)).toEqual(Array(10).fill(200));
    expect(new Set(outs.map((o) => o.replica))).toEqual(new Set(['1']));
    expect(
      await metric(r, /^inferplane_gateway_retries_total\{model="m",reason="connect"\}/),
    ).toBeGreaterThan(0);
  });

  it('a hung replica: 504 after the first-byte timeout, then its breaker opens and traffic avoids it', async () => {
    const r = await rig(2, 'round-robin', {
      headersTimeoutMs: 400,
      breaker: { failureThreshold: 2, openMs: 60_000 },
    });
    await fault(r.simUrls[0]!, { hang: true });
    const outs: Outcome[] = [];
    for (let i = 0; i < 8; i++) outs.push(await chat(r, { deadlineMs: 3000 }));
    const timeouts = outs.filter((o) => o.status === 504);
    expect(timeouts).toHaveLength(2); // the breaker opens after two
    for (const t of timeouts) {
      expect(JSON.parse(t.text)).toMatchObject({ error: { code: 'IP_UPSTREAM_TIMEOUT' } });
      expect(t.ms).toBeLessThan(2000);
    }
    expect(outs.filter((o) => o.status === 200)).toHaveLength(6);
    expect(r.gateway.breakers.state('r0')).toBe('open');
  });

  it('a replica answering 500s: retried elsewhere, its breaker opens, and it recovers through a half-open probe', async () => {
    const r = await rig(2, 'round-robin', { breaker: { failureThreshold: 3, openMs: 300 } });
    await fault(r.simUrls[0]!, { errorRate: 1 });
    const first = await Promise.all(Array.from({ length: 8 }, () => chat(r)));
    expect(first.map((o) => o.status)).toEqual(Array(8).fill(200));
    expect(first.every((o) => o.replica === '1')).toBe(true);
    expect(r.gateway.breakers.state('r0')).toBe('open');
    expect(await metric(r, /^inferplane_gateway_breaker_state\{model="m",replica="r0"\}/)).toBe(2);
    // The replica heals; after the open period one probe goes to it and closes the breaker.
    await fault(r.simUrls[0]!, { errorRate: null });
    await new Promise((res) => setTimeout(res, 350));
    const after: Outcome[] = [];
    for (let i = 0; i < 6; i++) after.push(await chat(r));
    expect(after.every((o) => o.status === 200)).toBe(true);
    expect(after.some((o) => o.replica === '0')).toBe(true);
    expect(r.gateway.breakers.state('r0')).toBe('closed');
    expect(await metric(r, /^inferplane_gateway_breaker_state\{model="m",replica="r0"\}/)).toBe(0);
  });

  it('a slow replica gets less traffic under load-aware routing; every request completes', async () => {
    const r = await rig(2, 'least-loaded');
    await fault(r.simUrls[0]!, { slowFactor: 500 });
    const outs = await Promise.all(
      Array.from(
        { length: 30 },
        (_, i) =>
          new Promise<Outcome>((res) =>
            setTimeout(() => res(chat(r, { maxTokens: 8, deadlineMs: 30_000 })), i * 50),
          ),
      ),
    );
    expect(outs.every((o) => o.status === 200)).toBe(true);
    const slow = outs.filter((o) => o.replica === '0').length;
    expect(slow).toBeLessThan(outs.length / 3);
  });

  it('all replicas down: every request is answered at once with 502/503 and Retry-After', async () => {
    const r = await rig(2, 'round-robin', { breaker: { failureThreshold: 2, openMs: 60_000 } });
    for (const s of r.sims) s.kill();
    const outs = await Promise.all(Array.from({ length: 6 }, () => chat(r, { deadlineMs: 3000 })));
    for (const o of outs) {
      expect([502, 503]).toContain(o.status);
      expect(o.ms).toBeLessThan(2000);
      expect(JSON.parse(o.text)).toHaveProperty('error.code');
    }
    // Once both breakers are open: 503 IP_NO_READY_REPLICA with Retry-After, nothing attempted.
    const later = await fetch(`${r.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'x' }] }),
    });
    expect(later.status).toBe(503);
    expect(later.headers.get('retry-after')).not.toBeNull();
    expect(((await later.json()) as { error: { code: string } }).error.code).toBe(
      'IP_NO_READY_REPLICA',
    );
  });

  it('a client that disconnects mid-stream cancels the engine work and is counted as 499', async () => {
    const r = await rig(1, 'round-robin');
    const ac = new AbortController();
    const res = await fetch(`${r.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        model: MODEL,
        messages: [{ role: 'user', content: 'a long story please' }],
        max_tokens: 2000,
        stream: true,
      }),
      signal: ac.signal,
    });
    const reader = res.body!.getReader();
    await reader.read(); // the stream is flowing
    expect(r.sims[0]!.engine.stats().running).toBe(1);
    ac.abort();
    const t0 = Date.now();
    while (r.sims[0]!.engine.stats().running > 0 && Date.now() - t0 < 2000) {
      await new Promise((res) => setTimeout(res, 10));
    }
    expect(r.sims[0]!.engine.stats().running).toBe(0);
    // The gateway settled it: in-flight back to 0, counted with nginx's 499.
    const t1 = Date.now();
    while (
      (await metric(r, /^inferplane_gateway_requests_total\{tenant="t",model="m",code="499"\}/)) ===
        0 &&
      Date.now() - t1 < 2000
    ) {
      await new Promise((res) => setTimeout(res, 10));
    }
    expect(
      await metric(r, /^inferplane_gateway_requests_total\{tenant="t",model="m",code="499"\}/),
    ).toBe(1);
    expect(await metric(r, /^inferplane_gateway_inflight_requests\{model="m"\}/)).toBe(0);
  });
});
