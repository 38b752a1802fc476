// Routing through the in-process gateway against real simulated engines: receipts in the debug
// header, prefix stickiness, signal gauges, per-deployment policy.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashApiKey } from '../../src/core/ids.js';
import type { RouteModel, RoutingSnapshot } from '../../src/core/types.js';
import { Gateway } from '../../src/gateway/gateway.js';
import type { RouteReceipt } from '../../src/gateway/routing/picker.js';
import { seededRandom } from '../../src/gateway/routing/pipeline.js';
import { createSimServer, type SimServer } from '../../src/sim/server.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { createMetrics } from '../../src/telemetry/metrics.js';

const KEY = 'ipk_routing_key';
const sims: SimServer[] = [];
const urls: string[] = [];
let gateway: Gateway;
let metrics: ReturnType<typeof createMetrics>;

function model(name: string, routing?: RouteModel['routing']): RouteModel {
  return {
    model: name,
    deployment: name,
    tenantId: 'a',
    tenantName: 'a',
    engine: 'sim',
    createdAt: new Date(0).toISOString(),
    endpoints: urls.map((url, i) => ({ replicaId: `r${i}`, index: i, url })),
    ...(routing ? { routing } : {}),
  };
}

function snapshot(): RoutingSnapshot {
  return {
    version: 1,
    keys: [{ hash: hashApiKey(KEY), keyId: 'k', role: 'tenant', tenantId: 'a', tenantName: 'a' }],
    models: [model('m')],
  };
}

beforeAll(async () => {
  for (let i = 0; i < 3; i++) {
    const s = createSimServer({ model: 'llama-3.1-8b', servedModelName: 'm', timeScale: 0.05 });
    sims.push(s);
    urls.push(`http://127.0.0.1:${await s.listen(0)}`);
  }
  metrics = createMetrics({ defaultMetrics: false });
  gateway = new Gateway({
    metrics,
    logger: createLogger({ level: 'silent' }),
    // A generous staleness limit: a loaded CI machine must not turn these tests into staleness tests.
    routing: { scrapeIntervalMs: 50, staleMs: 60_000, random: seededRandom(1) },
  });
  gateway.update(snapshot());
  // Wait (by polling, not a fixed time) until every replica has a fresh signal.
  for (let i = 0; i < 200; i++) {
    if (['r0', 'r1', 'r2'].every((id) => !gateway.signals.view(id).stale)) break;
    await new Promise((r) => setTimeout(r, 10));
  }
});

afterAll(async () => {
  await gateway.close();
  await Promise.all(sims.map((s) => s.close()));
});

async function chat(
  modelName: string,
  content: string,
  headers: Record<string, string> = {},
): Promise<{ replica: string; receipt: RouteReceipt | null }> {
  const res = await gateway.routes().request('/chat/completions', {
    method: 'POST',
    headers: {
      authorization: `Bearer ${KEY}`,
      'content-type': 'application/json',
      'x-inferplane-debug': 'route',
      ...headers,
    },
    body: JSON.stringify({
      model: modelName,
      messages: [
        { role: 'system', content },
        { role: 'user', content: 'and the question?' },
      ],
      max_tokens: 2,
    }),
  });
  expect(res.status).toBe(200);
  await res.text();
  const raw = res.headers.get('x-inferplane-route');
  return {
    replica: res.headers.get('x-inferplane-replica') ?? '',
    receipt: raw ? (JSON.parse(raw) as RouteReceipt) : null,
  };
}

describe('KV-cache-aware routing through the gateway', () => {
  it('returns the decision receipt on x-inferplane-debug: route, only then', async () => {
    const ctx = 'A shared system prompt about GPUs and caches. '.repeat(40);
    const first = await chat('m', ctx);
    expect(first.receipt).toMatchObject({ policy: 'prefix-aware', matchedBlocks: 0 });
    expect(first.receipt!.promptBlocks).toBeGreaterThan(10);
    expect(Object.keys(first.receipt!.scores).sort()).toEqual(['r0', 'r1', 'r2']);
    expect(first.receipt!.decisionMicros).toBeGreaterThanOrEqual(0);
    expect(String(first.receipt!.index)).toBe(first.replica);

    const again = await chat('m', ctx);
    expect(again.replica).toBe(first.replica);
    expect(again.receipt!.matchedBlocks).toBe(again.receipt!.promptBlocks);

    const res = await gateway.routes().request('/chat/completions', {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'hi' }] }),
    });
    expect(res.headers.get('x-inferplane-route')).toBeNull();
    await res.text();
  });

  it('keeps a session on one replica with x-session-id', async () => {
    // A heavy affinity weight makes the outcome independent of load noise between scrapes (the
    // default weight, 1, only prefers the session's replica among similarly loaded ones).
    const snap = snapshot();
    snap.models = [model('m', { weights: { affinity: 10 } })];
    gateway.update(snap);
    try {
      const seen = new Set<string>();
      for (let i = 0; i < 4; i++) {
        const r = await chat('m', `short ${i}`, { 'x-session-id': 'user-7' });
        seen.add(r.replica);
        expect(r.receipt!.scores[`r${r.replica}`]!.affinity).toBe(1);
        const others = Object.entries(r.receipt!.scores).filter(([id]) => id !== `r${r.replica}`);
        expect(others.every(([, s]) => s.affinity === 0)).toBe(true);
      }
      expect(seen.size).toBe(1);
    } finally {
      gateway.update(snapshot());
    }
  });

  it('honours a per-deployment round-robin policy', async () => {
    const snap = snapshot();
    snap.version = 2;
    snap.models = [model('m', { policy: 'round-robin' })];
    gateway.update(snap);
    try {
      const seen: string[] = [];
      for (let i = 0; i < 3; i++) {
        const r = await chat('m', 'same prompt '.repeat(50));
        expect(r.receipt!.policy).toBe('round-robin');
        seen.push(r.replica);
      }
      expect([...new Set(seen)].sort()).toEqual(['0', '1', '2']);
    } finally {
      gateway.update(snapshot());
    }
  });

  it('exports the decision histogram and the scraped signals per replica', async () => {
    const text = await metrics.registry.metrics();
    expect(text).toMatch(
      /inferplane_gateway_routing_decision_seconds_count\{model="m",policy="prefix-aware"\} [1-9]/,
    );
    expect(text).toMatch(/inferplane_replica_waiting\{model="\w+",replica="r0"\} \d/);
    expect(text).toMatch(/inferplane_replica_kv_utilization\{model="\w+",replica="r1"\} [\d.]/);
    expect(text).toMatch(
      /inferplane_replica_signal_age_seconds\{model="\w+",replica="r2"\} [\d.e-]+/,
    );
  });
});
