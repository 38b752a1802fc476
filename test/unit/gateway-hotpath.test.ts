// The gateway's hot path in process (no socket on the gateway side) against real upstream servers
// on loopback: tenant limits, 5xx retry, circuit breakers, the saturation queue, stream usage,
// embeddings and trace propagation.
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { hashApiKey } from '../../src/core/ids.js';
import type { RouteModel, RoutingSnapshot, TenantLimits } from '../../src/core/types.js';
import { Gateway } from '../../src/gateway/gateway.js';
import type { PickRequest, Picker, RouteDecision } from '../../src/gateway/routing/picker.js';
import { RoundRobinPicker } from '../../src/gateway/routing/picker.js';
import { createSimServer, type SimServer } from '../../src/sim/server.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { createMetrics } from '../../src/telemetry/metrics.js';

const KEY_A = 'ipk_hot_a';
const KEY_B = 'ipk_hot_b';

/** An upstream whose behaviour a test sets: counts hits, records headers. */
interface Fake {
  url: string;
  hits: number;
  headers: IncomingMessage['headers'][];
  bodies: string[];
  mode: 'ok' | '500' | 'stream';
  server: Server;
}

async function fake(mode: Fake['mode'] = 'ok'): Promise<Fake> {
  const f = { hits: 0, headers: [], bodies: [], mode } as unknown as Fake;
  f.server = createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      if (req.url === '/metrics') {
        res.end('');
        return;
      }
      f.hits++;
      f.headers.push(req.headers);
      f.bodies.push(body);
      if (f.mode === '500') {
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end('{"error":{"message":"boom","type":"server_error"}}');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        '{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9}}',
      );
    });
  });
  await new Promise<void>((r) => f.server.listen(0, '127.0.0.1', r));
  f.url = `http://127.0.0.1:${(f.server.address() as AddressInfo).port}`;
  return f;
}

let sim: SimServer;
let simUrl: string;
const fakes: Fake[] = [];
const gateways: Gateway[] = [];

beforeAll(async () => {
  sim = createSimServer({ model: 'llama-3.1-8b', servedModelName: 'm', timeScale: 0.05 });
  simUrl = `http://127.0.0.1:${await sim.listen(0)}`;
});

afterEach(async () => {
  await Promise.all(gateways.splice(0).map((g) => g.close()));
  for (const f of fakes.splice(0)) {
    f.server.closeAllConnections();
    f.server.close();
  }
});

afterAll(async () => {
  await sim.close();
});

function model(
  name: string,
  urls: string[],
  extra: Partial<RouteModel> = {},
  tenantId = 'a',
): RouteModel {
  return {
    model: name,
    deployment: name,
    tenantId,
    tenantName: tenantId,
    engine: 'sim',
    createdAt: new Date(0).toISOString(),
    endpoints: urls.map((url, i) => ({ replicaId: `${name}-r${i}`, index: i, url })),
    routing: { policy: 'round-robin' },
    ...extra,
  };
}

function snap(models: RouteModel[], limits: Record<string, TenantLimits> = {}): RoutingSnapshot {
  return {
    version: 1,
    keys: [
      { hash: hashApiKey(KEY_A), keyId: 'k1', role: 'tenant', tenantId: 'a', tenantName: 'a' },
      { hash: hashApiKey(KEY_B), keyId: 'k2', role: 'tenant', tenantId: 'b', tenantName: 'b' },
    ],
    models,
    tenants: [
      { id: 'a', name: 'a', limits: limits.a ?? {} },
      { id: 'b', name: 'b', limits: limits.b ?? {} },
    ],
  };
}

function gw(opts: Partial<ConstructorParameters<typeof Gateway>[0]> = {}) {
  const metrics = createMetrics({ defaultMetrics: false });
  const g = new Gateway({ metrics, logger: createLogger({ level: 'silent' }), ...opts });
  gateways.push(g);
  return { g, metrics };
}

function call(
  g: Gateway,
  path: string,
  body: unknown,
  key = KEY_A,
  headers: Record<string, string> = {},
): Promise<Response> {
  return Promise.resolve(
    g.routes().request(path, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...headers },
      body: JSON.stringify(body),
    }),
  );
}

const chat = (m: string, extra: Record<string, unknown> = {}) => ({
  model: m,
  messages: [{ role: 'user', content: 'hello there' }],
  max_tokens: 4,
  ...extra,
});

function metricValue(text: string, name: string, labels: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`));
  return line ? Number(line.split(' ').pop()) : 0;
}

describe('tenant limits', () => {
  it('refuses past requests/s with 429, Retry-After and x-ratelimit-* headers', async () => {
    const { g, metrics } = gw();
    g.update(snap([model('m', [simUrl])], { a: { requestsPerSecond: 2 } }));
    const codes: number[] = [];
    let refused: Response | undefined;
    for (let i = 0; i < 3; i++) {
      const r = await call(g, '/chat/completions', chat('m'));
      codes.push(r.status);
      if (r.status === 429) refused = r;
      else {
        expect(r.headers.get('x-ratelimit-limit-requests')).toBe('2');
        await r.text();
      }
    }
    expect(codes).toEqual([200, 200, 429]);
    // Refused before the body is read (no tokens/min limit): the model is not known yet.
    expect(Number(refused!.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(refused!.headers.get('x-ratelimit-remaining-requests')).toBe('0');
    const err = (await refused!.json()) as {
      error: { code: string; type: string; message: string };
    };
    expect(err.error.code).toBe('IP_RATE_LIMITED');
    expect(err.error.type).toBe('rate_limit_exceeded');
    expect(err.error.message).toMatch(/2 requests\/s/);
    // Tenant b has no limits and is not affected.
    g.update(snap([model('m', [simUrl], {}, 'b')], { a: { requestsPerSecond: 2 } }));
    for (let i = 0; i < 4; i++) {
      const r = await call(g, '/chat/completions', chat('m'), KEY_B);
      expect(r.status).toBe(200);
      expect(r.headers.get('x-ratelimit-limit-requests')).toBeNull();
      await r.text();
    }
    const text = await metrics.registry.metrics();
    expect(
      metricValue(text, 'inferplane_gateway_rate_limited_total', 'tenant="a",limit="requests"'),
    ).toBe(1);
    expect(
      metricValue(
        text,
        'inferplane_gateway_requests_total',
        'tenant="a",model="(unknown)",code="429"',
      ),
    ).toBe(1);
  });

  it('limits concurrent requests and frees the slot when a stream ends', async () => {
    const { g } = gw();
    g.update(snap([model('m', [simUrl])], { a: { maxConcurrency: 1 } }));
    const first = await call(g, '/chat/completions', chat('m', { stream: true, max_tokens: 30 }));
    expect(first.status).toBe(200);
    const second = await call(g, '/chat/completions', chat('m'));
    expect(second.status).toBe(429);
    expect(((await second.json()) as { error: { message: string } }).error.message).toMatch(
      /1 concurrent/,
    );
    await first.text(); // the stream ends: the slot is free again
    const third = await call(g, '/chat/completions', chat('m'));
    expect(third.status).toBe(200);
    await third.text();
  });

  it('charges tokens/min from usage, not the estimate', async () => {
    const up = await fake();
    fakes.push(up);
    const { g } = gw();
    // 9 real tokens per request (the fake's usage); the estimate is larger (max_tokens 400).
    g.update(snap([model('m', [up.url])], { a: { tokensPerMinute: 1000 } }));
    const r1 = await call(g, '/chat/completions', chat('m', { max_tokens: 400 }));
    expect(r1.status).toBe(200);
    // While admitted, the estimate (~404) was deducted.
    expect(Number(r1.headers.get('x-ratelimit-remaining-tokens'))).toBeLessThan(600);
    await r1.text();
    // After the correction only 9 were charged: a second 400-token estimate still fits twice.
    const r2 = await call(g, '/chat/completions', chat('m', { max_tokens: 400 }));
    expect(Number(r2.headers.get('x-ratelimit-remaining-tokens'))).toBeGreaterThan(500);
    await r2.text();
  });
});

describe('resilience', () => {
  it('retries a 5xx once on another replica, then opens that replica’s breaker', async () => {
    const bad = await fake('500');
    const good = await fake('ok');
    fakes.push(bad, good);
    const { g, metrics } = gw({ breaker: { failureThreshold: 3, openMs: 60_000 } });
    g.update(snap([model('m', [bad.url, good.url])]));
    for (let i = 0; i < 8; i++) {
      const r = await call(g, '/chat/completions', chat('m'));
      expect(r.status).toBe(200);
      expect(r.headers.get('x-inferplane-replica')).toBe('1');
      await r.text();
    }
    // Round-robin sends every other request to the bad replica until 3 failures open it.
    expect(bad.hits).toBe(3);
    expect(good.hits).toBe(8);
    const text = await metrics.registry.metrics();
    expect(
      metricValue(text, 'inferplane_gateway_retries_total', 'model="m",reason="status_5xx"'),
    ).toBe(3);
    expect(metricValue(text, 'inferplane_gateway_breaker_state', 'model="m",replica="m-r0"')).toBe(
      2,
    );
    expect(
      metricValue(text, 'inferplane_gateway_breaker_opened_total', 'model="m",replica="m-r0"'),
    ).toBe(1);
  });

  it('relays the 5xx when no other replica is left, and 503s once every breaker is open', async () => {
    const a = await fake('500');
    const b = await fake('500');
    fakes.push(a, b);
    const { g } = gw({ breaker: { failureThreshold: 2, openMs: 60_000 } });
    g.update(snap([model('m', [a.url, b.url])]));
    const r1 = await call(g, '/chat/completions', chat('m'));
    expect(r1.status).toBe(500); // tried both: the second answer is relayed
    expect(((await r1.json()) as { error: { message: string } }).error.message).toBe('boom');
    expect(a.hits + b.hits).toBe(2);
    const r2 = await call(g, '/chat/completions', chat('m'));
    expect(r2.status).toBe(500);
    await r2.text();
    // Both breakers are open now: refused at once, with Retry-After, nothing sent.
    const r3 = await call(g, '/chat/completions', chat('m'));
    expect(r3.status).toBe(503);
    expect(r3.headers.get('retry-after')).not.toBeNull();
    expect(((await r3.json()) as { error: { message: string } }).error.message).toMatch(
      /circuit breakers open/,
    );
    expect(a.hits + b.hits).toBe(4);
  });

  it('half-opens after the open period, probes once, and closes on success', async () => {
    let t = 0;
    const up = await fake('500');
    fakes.push(up);
    const { g, metrics } = gw({ now: () => t, breaker: { failureThreshold: 2, openMs: 1000 } });
    g.update(snap([model('m', [up.url])]));
    for (let i = 0; i < 2; i++) await (await call(g, '/chat/completions', chat('m'))).text();
    expect(g.breakers.state('m-r0')).toBe('open');
    expect((await call(g, '/chat/completions', chat('m'))).status).toBe(503);
    expect(up.hits).toBe(2);
    up.mode = 'ok';
    t = 1001; // the open period is over: one probe goes through and closes the breaker
    const probe = await call(g, '/chat/completions', chat('m'));
    expect(probe.status).toBe(200);
    await probe.text();
    expect(g.breakers.state('m-r0')).toBe('closed');
    const text = await metrics.registry.metrics();
    expect(metricValue(text, 'inferplane_gateway_breaker_state', 'model="m",replica="m-r0"')).toBe(
      0,
    );
  });
});

/** A picker whose saturation a test switches (round-robin underneath). */
class SwitchPicker implements Picker {
  full = true;
  private readonly rr = new RoundRobinPicker();
  pick(route: RouteModel, req: PickRequest): RouteDecision | undefined {
    return this.rr.pick(route, req);
  }
  saturated(): boolean {
    return this.full;
  }
}

describe('the saturation queue', () => {
  it('holds requests while every replica is saturated and lets them through when room appears', async () => {
    const picker = new SwitchPicker();
    const { g, metrics } = gw({ picker, queue: { maxDepth: 4, maxWaitMs: 10_000 } });
    g.update(snap([model('m', [simUrl])]));
    const pending = [0, 1, 2].map(() => call(g, '/chat/completions', chat('m')));
    await new Promise((r) => setTimeout(r, 100));
    let text = await metrics.registry.metrics();
    expect(metricValue(text, 'inferplane_gateway_queue_depth', 'model="m"')).toBe(3);
    // Depth 4: one more fits, the one after is refused at once (503, Retry-After).
    const fourth = call(g, '/chat/completions', chat('m'));
    await new Promise((r) => setTimeout(r, 20));
    const fifth = await call(g, '/chat/completions', chat('m'));
    expect(fifth.status).toBe(503);
    expect(fifth.headers.get('retry-after')).not.toBeNull();
    expect(((await fifth.json()) as { error: { code: string } }).error.code).toBe('IP_OVERLOADED');
    pending.push(fourth);
    picker.full = false; // room: the backstop timer grants waiters
    const done = await Promise.all(pending);
    expect(done.map((r) => r.status)).toEqual([200, 200, 200, 200]);
    await Promise.all(done.map((r) => r.text()));
    text = await metrics.registry.metrics();
    expect(metricValue(text, 'inferplane_gateway_queue_depth', 'model="m"')).toBe(0);
    expect(text).toMatch(
      /inferplane_gateway_queue_wait_seconds_count\{model="m",outcome="granted"\} 4/,
    );
  });

  it('times out a queued request with 503 IP_OVERLOADED', async () => {
    const picker = new SwitchPicker();
    const { g } = gw({ picker, queue: { maxDepth: 4, maxWaitMs: 200 } });
    g.update(snap([model('m', [simUrl])]));
    const r = await call(g, '/chat/completions', chat('m'));
    expect(r.status).toBe(503);
    expect(r.headers.get('retry-after')).not.toBeNull();
    expect(((await r.json()) as { error: { code: string } }).error.code).toBe('IP_OVERLOADED');
  });
});

describe('per-series state', () => {
  it('binds one series per (endpoint, tenant), not one per request, and drops them on update', async () => {
    const { g, metrics } = gw();
    g.update(snap([model('m', [simUrl])]));
    const series = (g as unknown as { series: Map<unknown, Map<string, unknown>> }).series;
    for (let i = 0; i < 20; i++) {
      expect((await call(g, '/chat/completions', chat('m'))).status).toBe(200);
    }
    expect((await call(g, '/chat/completions', chat('m'), KEY_A)).status).toBe(200);
    expect(series.size).toBe(1);
    expect([...series.values()][0]!.size).toBe(1);
    const text = await metrics.registry.metrics();
    expect(text).toMatch(
      /inferplane_gateway_e2e_seconds_count\{tenant="a",model="m",version="default",replica="0"\} 21/,
    );
    expect(text).toMatch(/inferplane_gateway_inflight_requests\{model="m"\} 0/);
    g.update(snap([model('m', [simUrl])]));
    expect(series.size).toBe(0);
  });
});

describe('usage, embeddings and traces', () => {
  it('asks a stream for usage, counts the tokens, and drops the usage chunk the client did not ask for', async () => {
    const { g, metrics } = gw();
    g.update(snap([model('m', [simUrl])]));
    const plain = await (
      await call(g, '/chat/completions', chat('m', { stream: true, max_tokens: 5 }))
    ).text();
    expect(plain).not.toMatch(/"usage"/);
    expect(plain.trimEnd().endsWith('data: [DONE]')).toBe(true);
    const asked = await (
      await call(
        g,
        '/chat/completions',
        chat('m', { stream: true, max_tokens: 5, stream_options: { include_usage: true } }),
      )
    ).text();
    expect(asked).toMatch(/"usage":\{"prompt_tokens":\d+,"completion_tokens":5/);
    const text = await metrics.registry.metrics();
    expect(
      metricValue(
        text,
        'inferplane_gateway_tokens_total',
        'tenant="a",model="m",version="default",kind="completion"',
      ),
    ).toBe(10);
    expect(text).toMatch(
      /inferplane_gateway_ttft_seconds_count\{tenant="a",model="m",version="default",replica="0"\} 2/,
    );
    expect(text).toMatch(
      /inferplane_gateway_inter_token_latency_seconds_count\{tenant="a",model="m",version="default",replica="0"\} [1-9]/,
    );
  });

  it('passes /v1/embeddings through', async () => {
    const { g, metrics } = gw();
    g.update(snap([model('m', [simUrl])]));
    const r = await call(g, '/embeddings', { model: 'm', input: ['a b c', 'd e'], dimensions: 8 });
    expect(r.status).toBe(200);
    const body = (await r.json()) as {
      data: { embedding: number[] }[];
      usage: { prompt_tokens: number };
    };
    expect(body.data).toHaveLength(2);
    expect(body.data[0]!.embedding).toHaveLength(8);
    const text = await metrics.registry.metrics();
    expect(
      metricValue(
        text,
        'inferplane_gateway_tokens_total',
        'tenant="a",model="m",version="default",kind="prompt"',
      ),
    ).toBe(body.usage.prompt_tokens);
    const bad = await call(g, '/embeddings', { model: 'm' });
    expect(bad.status).toBe(400);
  });

  it('propagates W3C traceparent upstream with the incoming trace id and a new span id', async () => {
    const up = await fake();
    fakes.push(up);
    const { g } = gw();
    g.update(snap([model('m', [up.url])]));
    const incoming = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    await (await call(g, '/chat/completions', chat('m'), KEY_A, { traceparent: incoming })).text();
    const tp = up.headers[0]!.traceparent as string;
    expect(tp).toMatch(/^00-0af7651916cd43dd8448eb211c80319c-[0-9a-f]{16}-01$/);
    expect(tp).not.toBe(incoming);
    // No incoming context: a fresh trace still goes upstream.
    await (await call(g, '/chat/completions', chat('m'))).text();
    expect(up.headers[1]!.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/);
    // A stream request gets stream_options spliced in; a non-stream one is sent unchanged.
    expect(up.bodies[0]).toBe(JSON.stringify(chat('m')));
  });
});
