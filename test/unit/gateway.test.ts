// The gateway app is a value: it is exercised in process (no socket on the gateway side), against
// real upstream servers on loopback.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashApiKey } from '../../src/core/ids.js';
import type { RouteModel, RoutingSnapshot } from '../../src/core/types.js';
import { Gateway } from '../../src/gateway/gateway.js';
import { createSimServer, type SimServer } from '../../src/sim/server.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { createMetrics } from '../../src/telemetry/metrics.js';

const KEY_A = 'ipk_tenant_a_key';
const KEY_B = 'ipk_tenant_b_key';
let sim: SimServer;
let simUrl: string;
let sim2: SimServer;
let sim2Url: string;
let dying: Server;
let dyingUrl: string;
let gateway: Gateway;
let metrics: ReturnType<typeof createMetrics>;

function snapshot(): RoutingSnapshot {
  const ep = (url: string, i: number) => ({ replicaId: `r${i}`, index: i, url });
  const model = (
    name: string,
    tenantId: string,
    endpoints: ReturnType<typeof ep>[],
    routing?: RouteModel['routing'],
  ) => ({
    model: name,
    deployment: name,
    tenantId,
    tenantName: tenantId,
    engine: 'sim',
    createdAt: new Date(0).toISOString(),
    endpoints,
    ...(routing ? { routing } : {}),
  });
  return {
    version: 1,
    keys: [
      { hash: hashApiKey(KEY_A), keyId: 'k1', role: 'tenant', tenantId: 'a', tenantName: 'a' },
      { hash: hashApiKey(KEY_B), keyId: 'k2', role: 'tenant', tenantId: 'b', tenantName: 'b' },
    ],
    models: [
      model('m', 'a', [ep(simUrl, 0)]),
      model('down', 'a', []),
      // replica 0 refuses connections (nothing listens on port 1), replica 1 serves. Round-robin,
      // so that replica 0 keeps being tried (prefix-aware routing would avoid it: its metrics
      // never answer, so it counts as saturated) and the retry path is exercised.
      model('flaky', 'a', [ep('http://127.0.0.1:1', 0), ep(sim2Url, 1)], {
        policy: 'round-robin',
      }),
      model('dies', 'a', [ep(dyingUrl, 0)]),
    ],
  };
}

beforeAll(async () => {
  sim = createSimServer({ model: 'llama-3.1-8b', servedModelName: 'm', timeScale: 0.1 });
  simUrl = `http://127.0.0.1:${await sim.listen(0)}`;
  sim2 = createSimServer({ model: 'llama-3.1-8b', servedModelName: 'flaky', timeScale: 0.1 });
  sim2Url = `http://127.0.0.1:${await sim2.listen(0)}`;
  // An upstream that sends two SSE chunks and then drops the connection.
  dying = createServer((req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.write('data: {"choices":[{"text":"a"}]}\n\n');
    res.write('data: {"choices":[{"text":"b"}]}\n\n');
    setTimeout(() => res.socket?.destroy(), 20);
  });
  await new Promise<void>((r) => dying.listen(0, '127.0.0.1', r));
  dyingUrl = `http://127.0.0.1:${(dying.address() as AddressInfo).port}`;
  metrics = createMetrics({ defaultMetrics: false });
  gateway = new Gateway({ metrics, logger: createLogger({ level: 'silent' }) });
  gateway.update(snapshot());
});

afterAll(async () => {
  await gateway.close();
  await sim.close();
  await sim2.close();
  dying.closeAllConnections();
  await new Promise((r) => dying.close(r));
});

function call(path: string, body: unknown, key = KEY_A): Promise<Response> {
  return Promise.resolve(
    gateway.routes().request(path, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    }),
  );
}

const chat = (model: string, extra: Record<string, unknown> = {}) => ({
  model,
  messages: [{ role: 'user', content: 'hello' }],
  max_tokens: 3,
  ...extra,
});

describe('Gateway (in process)', () => {
  it('proxies to the replica and labels the response', async () => {
    const res = await call('/chat/completions', chat('m'));
    expect(res.status).toBe(200);
    expect(res.headers.get('x-inferplane-replica')).toBe('0');
    const body = (await res.json()) as { usage: { completion_tokens: number } };
    expect(body.usage.completion_tokens).toBe(3);
  });

  it('hides other tenants’ models behind a 404', async () => {
    const res = await call('/chat/completions', chat('m'), KEY_B);
    expect(res.status).toBe(404);
    const body = (await res.json()) as { error: { code: string; type: string; param: string } };
    expect(body.error).toMatchObject({ code: 'IP_MODEL_NOT_FOUND', param: 'model' });
    const models = await gateway.routes().request('/models', {
      headers: { authorization: `Bearer ${KEY_B}` },
    });
    expect(((await models.json()) as { data: unknown[] }).data).toEqual([]);
  });

  it('answers 503 with Retry-After when no replica is ready', async () => {
    const res = await call('/chat/completions', chat('down'));
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('2');
  });

  it('retries a refused connection on another replica', async () => {
    for (let i = 0; i < 3; i++) {
      const res = await call('/chat/completions', chat('flaky'));
      expect(res.status).toBe(200);
      expect(res.headers.get('x-inferplane-replica')).toBe('1');
      await res.text();
    }
    const text = await metrics.registry.metrics();
    expect(text).toMatch(
      /inferplane_gateway_upstream_errors_total\{model="flaky",kind="connect"\} [1-9]/,
    );
  });

  it('ends a stream whose upstream dies with an SSE error event, not a hang', async () => {
    const res = await call('/completions', { model: 'dies', prompt: 'x', stream: true });
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text).toContain('"text":"b"');
    expect(text).toContain('"code":"IP_UPSTREAM_UNAVAILABLE"');
    expect(text.trimEnd().endsWith('data: [DONE]')).toBe(true);
  });

  it('times out an upstream that never answers (504) or stalls mid-stream (SSE error)', async () => {
    const hang = createServer((req, res) => {
      req.resume();
      if (req.url === '/v1/completions') {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write('data: {"choices":[{"text":"a"}]}\n\n'); // then nothing more
      } // chat: never answers at all
    });
    await new Promise<void>((r) => hang.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(hang.address() as AddressInfo).port}`;
    const gw = new Gateway({
      metrics: createMetrics({ defaultMetrics: false }),
      logger: createLogger({ level: 'silent' }),
      headersTimeoutMs: 200,
      idleTimeoutMs: 200,
    });
    const snap = snapshot();
    snap.models.push({
      ...snap.models[0]!,
      model: 'hang',
      endpoints: [{ replicaId: 'h', index: 0, url }],
    });
    gw.update(snap);
    try {
      const req = (path: string, body: unknown) =>
        gw.routes().request(path, {
          method: 'POST',
          headers: { authorization: `Bearer ${KEY_A}`, 'content-type': 'application/json' },
          body: JSON.stringify(body),
        });
      const res = await req('/chat/completions', chat('hang'));
      expect(res.status).toBe(504);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe(
        'IP_UPSTREAM_TIMEOUT',
      );
      const stream = await req('/completions', { model: 'hang', prompt: 'x', stream: true });
      const text = await stream.text();
      expect(text).toContain('"code":"IP_UPSTREAM_UNAVAILABLE"');
      expect(text.trimEnd().endsWith('data: [DONE]')).toBe(true);
    } finally {
      await gw.close();
      hang.closeAllConnections();
      await new Promise((r) => hang.close(r));
    }
  });

  it('waits for a whole answer whose body arrives after its head; refuses one over the limit', async () => {
    const body = JSON.stringify({ choices: [{ message: { content: 'x'.repeat(200) } }] });
    const late = createServer((req, res) => {
      req.resume();
      res.writeHead(200, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(body),
      });
      res.write(body.slice(0, 10)); // the head and a little, the rest 100 ms later
      setTimeout(() => res.end(body.slice(10)), 100);
    });
    await new Promise<void>((r) => late.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(late.address() as AddressInfo).port}`;
    const gws = [undefined, 100].map(
      (maxResponseBytes) =>
        new Gateway({
          metrics: createMetrics({ defaultMetrics: false }),
          logger: createLogger({ level: 'silent' }),
          ...(maxResponseBytes ? { maxResponseBytes } : {}),
        }),
    );
    const snap = snapshot();
    snap.models.push({
      ...snap.models[0]!,
      model: 'late',
      endpoints: [{ replicaId: 'l', index: 0, url }],
    });
    for (const gw of gws) gw.update(snap);
    try {
      const ask = (gw: Gateway) =>
        gw.routes().request('/chat/completions', {
          method: 'POST',
          headers: { authorization: `Bearer ${KEY_A}`, 'content-type': 'application/json' },
          body: JSON.stringify(chat('late')),
        });
      const whole = await ask(gws[0]!);
      expect(whole.status).toBe(200);
      expect(await whole.text()).toBe(body);
      const over = await ask(gws[1]!);
      expect(over.status).toBe(502);
      expect(await over.text()).toContain('answered more than 100 bytes');
    } finally {
      for (const gw of gws) await gw.close();
      late.closeAllConnections();
      await new Promise((r) => late.close(r));
    }
  });

  it('refuses bodies over the limit', async () => {
    const small = new Gateway({
      metrics: createMetrics({ defaultMetrics: false }),
      logger: createLogger({ level: 'silent' }),
      maxBodyBytes: 100,
    });
    small.update(snapshot());
    const res = await small.routes().request('/chat/completions', {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY_A}`, 'content-type': 'application/json' },
      body: JSON.stringify(chat('m', { pad: 'x'.repeat(200) })),
    });
    expect(res.status).toBe(413);
    await small.close();
  });

  it('counts requests by tenant, model and code', async () => {
    await call('/chat/completions', chat('nope'));
    const text = await metrics.registry.metrics();
    expect(text).toMatch(/inferplane_gateway_requests_total\{tenant="a",model="m",code="200"\} \d/);
    expect(text).toMatch(
      /inferplane_gateway_requests_total\{tenant="a",model="\(unknown\)",code="404"\} 1/,
    );
  });
});
