import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { hashApiKey } from '../../src/core/ids.js';
import { Gateway } from '../../src/gateway/gateway.js';
import { resolveConfig, tracingFromEnv } from '../../src/platform/config.js';
import { createSimServer } from '../../src/sim/server.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { createMetrics } from '../../src/telemetry/metrics.js';
import {
  createTracing,
  formatTraceparent,
  newSpanId,
  newTraceId,
  parseTraceparent,
  type Tracing,
} from '../../src/telemetry/tracing.js';

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT = '00f067aa0ba902b7';
const TP = `00-${TRACE}-${PARENT}-01`;
const TP_RE = /^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/;

describe('traceparent parsing (W3C trace context)', () => {
  it('accepts a valid version-00 header', () => {
    expect(parseTraceparent(TP)).toEqual({ traceId: TRACE, parentId: PARENT, flags: 1 });
    expect(parseTraceparent(`00-${TRACE}-${PARENT}-00`)?.flags).toBe(0);
    expect(parseTraceparent(` ${TP} `)?.traceId).toBe(TRACE); // OWS around a header value
  });

  it.each([
    ['empty', ''],
    ['uppercase hex', `00-${TRACE.toUpperCase()}-${PARENT}-01`],
    ['short trace id', `00-${TRACE.slice(1)}-${PARENT}-01`],
    ['long span id', `00-${TRACE}-${PARENT}0-01`],
    ['wrong separator', `00_${TRACE}-${PARENT}-01`],
    ['non-hex flags', `00-${TRACE}-${PARENT}-0x`],
    ['all-zero trace id', `00-${'0'.repeat(32)}-${PARENT}-01`],
    ['all-zero parent id', `00-${TRACE}-${'0'.repeat(16)}-01`],
    ['version ff', `ff-${TRACE}-${PARENT}-01`],
    ['non-hex version', `0g-${TRACE}-${PARENT}-01`],
    ['version 00 with trailing data', `${TP}-extra`],
    ['future version without a dash after flags', `01-${TRACE}-${PARENT}-01x`],
  ])('rejects %s', (_what, header) => {
    expect(parseTraceparent(header)).toBeUndefined();
  });

  it('parses a future version as version 00 for its known fields', () => {
    expect(parseTraceparent(`01-${TRACE}-${PARENT}-01`)).toEqual({
      traceId: TRACE,
      parentId: PARENT,
      flags: 1,
    });
    expect(parseTraceparent(`cc-${TRACE}-${PARENT}-00-what-the-future-holds`)).toEqual({
      traceId: TRACE,
      parentId: PARENT,
      flags: 0,
    });
  });

  it('formats version 00 with the sampled bit only', () => {
    expect(formatTraceparent(TRACE, PARENT, true)).toBe(TP);
    expect(formatTraceparent(TRACE, PARENT, false)).toBe(`00-${TRACE}-${PARENT}-00`);
  });

  it('generates unique random lowercase-hex ids of the right sizes', () => {
    const traces = new Set<string>();
    const spans = new Set<string>();
    for (let i = 0; i < 20_000; i++) {
      traces.add(newTraceId());
      spans.add(newSpanId());
    }
    expect(traces.size).toBe(20_000);
    expect(spans.size).toBe(20_000);
    for (const t of [...traces].slice(0, 100)) expect(t).toMatch(/^[0-9a-f]{32}$/);
    for (const s of [...spans].slice(0, 100)) expect(s).toMatch(/^[0-9a-f]{16}$/);
  });
});

describe('tracing disabled (no endpoint): propagation only', () => {
  const tracing = createTracing({});

  it('keeps the incoming trace id and sampled flag, with a new span id per upstream attempt', () => {
    expect(tracing.exporting).toBe(false);
    const req = tracing.startRequest('/v1/chat/completions', TP, 'vendor=abc,other=1', {
      'http.request.method': 'POST',
    });
    expect(req.traceId).toBe(TRACE);
    const a = req.startUpstream({ 'inferplane.replica': 'r1' });
    const b = req.startUpstream({ 'inferplane.replica': 'r2' });
    for (const up of [a, b]) {
      expect(up.traceparent).toMatch(TP_RE);
      const p = parseTraceparent(up.traceparent);
      expect(p?.traceId).toBe(TRACE);
      expect(p?.parentId).not.toBe(PARENT);
      expect(p?.flags).toBe(1);
      expect(up.tracestate).toBe('vendor=abc,other=1');
      up.event('first_token');
      up.end({ httpStatus: 200 });
    }
    expect(a.traceparent).not.toBe(b.traceparent);
    req.event('first_token');
    req.setAttributes({ x: 1 });
    req.end({ httpStatus: 200 });

    const unsampled = tracing.startRequest('r', `00-${TRACE}-${PARENT}-00`, undefined, {});
    const up = unsampled.startUpstream({});
    expect(up.traceparent.endsWith('-00')).toBe(true);
    expect(up.tracestate).toBeUndefined();
  });

  it.each([
    ['absent', undefined],
    ['malformed', 'garbage'],
    ['all-zero', `00-${'0'.repeat(32)}-${PARENT}-01`],
  ])('starts a fresh trace when the traceparent is %s (and drops tracestate)', (_w, header) => {
    const req = tracing.startRequest('r', header, 'vendor=abc', {});
    expect(req.traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(req.traceId).not.toBe(TRACE);
    const up = req.startUpstream({});
    expect(up.traceparent).toMatch(TP_RE);
    expect(parseTraceparent(up.traceparent)?.traceId).toBe(req.traceId);
    expect(up.tracestate).toBeUndefined();
    expect(tracing.startRequest('r', header, undefined, {}).traceId).not.toBe(req.traceId);
  });

  it('costs a few microseconds per request (micro-benchmark, printed, not asserted)', async () => {
    const attrs = { 'http.request.method': 'POST', 'inferplane.tenant': 't' };
    const run = (n: number, header: string | undefined): number => {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < n; i++) {
        const req = tracing.startRequest('/v1/chat/completions', header, undefined, attrs);
        const up = req.startUpstream(attrs);
        up.end({ httpStatus: 200 });
        req.end({ httpStatus: 200 });
      }
      return Number(process.hrtime.bigint() - t0) / n / 1000;
    };
    run(20_000, TP); // warm-up
    run(20_000, undefined);
    const withParent = run(100_000, TP);
    const fresh = run(100_000, undefined);
    console.log(
      `tracing disabled: startRequest+startUpstream+end ${withParent.toFixed(2)} µs/request ` +
        `with an incoming traceparent, ${fresh.toFixed(2)} µs/request as a new root`,
    );
    await tracing.shutdown();
  });
});

// ---------------------------------------------------------------------------------------------
// A real OTLP/HTTP receiver on 127.0.0.1.

interface OtlpValue {
  stringValue?: string;
  intValue?: string | number;
  doubleValue?: number;
  boolValue?: boolean;
}
interface OtlpKeyValue {
  key: string;
  value: OtlpValue;
}
interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  traceState?: string;
  name: string;
  kind: number;
  attributes?: OtlpKeyValue[];
  events?: { name: string; attributes?: OtlpKeyValue[] }[];
  status?: { code?: number; message?: string };
}
interface OtlpRequest {
  resourceSpans: {
    resource?: { attributes?: OtlpKeyValue[] };
    scopeSpans: { scope?: { name?: string }; spans: OtlpSpan[] }[];
  }[];
}
interface Received {
  path: string;
  headers: IncomingHttpHeaders;
  body: OtlpRequest;
}

function startReceiver(): Promise<{ server: Server; url: string; received: Received[] }> {
  const received: Received[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.method !== 'POST' || req.url !== '/v1/traces') {
        res.writeHead(404).end();
        return;
      }
      let raw = Buffer.concat(chunks);
      if (req.headers['content-encoding'] === 'gzip') raw = gunzipSync(raw);
      if (!String(req.headers['content-type']).startsWith('application/json')) {
        res.writeHead(415).end(); // this receiver decodes OTLP/JSON only
        return;
      }
      received.push({
        path: req.url,
        headers: req.headers,
        body: JSON.parse(raw.toString('utf8')) as OtlpRequest,
      });
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      resolve({ server, url: `http://127.0.0.1:${port}`, received });
    });
  });
}

/** OTLP/JSON ids are hex; accept base64 too (older encoders) so a failure shows the real id. */
function hexId(id: string | undefined): string | undefined {
  if (id === undefined || id === '') return undefined;
  return /^[0-9a-f]+$/.test(id) ? id : Buffer.from(id, 'base64').toString('hex');
}

function attrs(kvs: OtlpKeyValue[] | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const { key, value } of kvs ?? []) {
    out[key] =
      value.stringValue ??
      (value.intValue !== undefined ? Number(value.intValue) : undefined) ??
      value.doubleValue ??
      value.boolValue;
  }
  return out;
}

function spansOf(received: Received[]): (OtlpSpan & { resource: Record<string, unknown> })[] {
  return received.flatMap((r) =>
    r.body.resourceSpans.flatMap((rs) =>
      rs.scopeSpans.flatMap((ss) =>
        ss.spans.map((s) => ({
          ...s,
          traceId: hexId(s.traceId) ?? '',
          spanId: hexId(s.spanId) ?? '',
          parentSpanId: hexId(s.parentSpanId),
          resource: attrs(rs.resource?.attributes),
        })),
      ),
    ),
  );
}

const SPAN_KIND_SERVER = 2;
const SPAN_KIND_CLIENT = 3;
const STATUS_ERROR = 2;

describe('tracing with OTLP export', () => {
  let server: Server | undefined;
  let tracing: Tracing | undefined;
  afterEach(async () => {
    await tracing?.shutdown();
    await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
    server = undefined;
    tracing = undefined;
  });

  it('exports server and client spans with linkage, attributes, events and error status', async () => {
    const rx = await startReceiver();
    server = rx.server;
    tracing = createTracing(
      {
        otlpEndpoint: rx.url,
        serviceName: 'inferplane-test',
        headers: { authorization: 'Bearer collector-token' },
        exportDelayMs: 60_000, // only the flush on shutdown exports
      },
      '0.1.0',
    );
    expect(tracing.exporting).toBe(true);

    // Request 1: incoming sampled traceparent; a failed attempt, a retry that streams.
    const req = tracing.startRequest('/v1/chat/completions', TP, 'vendor=abc', {
      'http.request.method': 'POST',
      'inferplane.tenant': 'team-a',
    });
    expect(req.traceId).toBe(TRACE);
    req.setAttributes({ 'gen_ai.request.model': 'demo-llama-8b', 'inferplane.stream': true });
    const first = req.startUpstream({
      'inferplane.replica': 'r1',
      'inferplane.version': 'v1',
      'url.full': 'http://127.0.0.1:9001/v1/chat/completions',
    });
    first.end({ httpStatus: 503, error: 'upstream_overloaded' });
    const second = req.startUpstream({
      'inferplane.replica': 'r2',
      'inferplane.version': 'v2',
      'url.full': 'http://127.0.0.1:9002/v1/chat/completions',
    });
    second.event('first_token', { 'inferplane.ttft_ms': 12.5 });
    req.event('first_token');
    second.end({ httpStatus: 200 });
    req.end({ httpStatus: 200 });

    // Request 2: new root, fails with no upstream answer; an attempt left open is closed for it.
    const req2 = tracing.startRequest('/v1/completions', undefined, undefined, {
      'http.request.method': 'POST',
    });
    const dangling = req2.startUpstream({ 'inferplane.replica': 'r1' });
    req2.end({ httpStatus: 502, error: 'upstream_unavailable' });

    // Request 3: the caller decided not to sample: nothing exported, flag propagated as 00.
    const req3 = tracing.startRequest('/v1/models', `00-${TRACE}-${PARENT}-00`, undefined, {});
    const up3 = req3.startUpstream({});
    expect(up3.traceparent).toMatch(new RegExp(`^00-${TRACE}-[0-9a-f]{16}-00$`));
    up3.end({ httpStatus: 200 });
    req3.end({ httpStatus: 200 });

    await tracing.shutdown();

    expect(rx.received.length).toBeGreaterThan(0);
    expect(rx.received[0]?.headers.authorization).toBe('Bearer collector-token');
    const spans = spansOf(rx.received);
    expect(spans.map((s) => s.name).sort()).toEqual([
      'gateway /v1/chat/completions',
      'gateway /v1/completions',
      'upstream /v1/chat/completions',
      'upstream /v1/chat/completions',
      'upstream /v1/completions',
    ]);
    expect(spans[0]?.resource['service.name']).toBe('inferplane-test');

    const server1 = spans.find((s) => s.name === 'gateway /v1/chat/completions')!;
    expect(server1.kind).toBe(SPAN_KIND_SERVER);
    expect(server1.traceId).toBe(TRACE);
    expect(server1.parentSpanId).toBe(PARENT);
    expect(server1.spanId).toBe(req.spanId);
    expect(server1.traceState).toBe('vendor=abc');
    expect(attrs(server1.attributes)).toMatchObject({
      'http.route': '/v1/chat/completions',
      'http.request.method': 'POST',
      'http.response.status_code': 200,
      'inferplane.tenant': 'team-a',
      'gen_ai.request.model': 'demo-llama-8b',
      'inferplane.stream': true,
      'inferplane.upstream.attempts': 2,
    });
    expect(server1.events?.map((e) => e.name)).toEqual(['first_token']);
    expect(server1.status?.code ?? 0).not.toBe(STATUS_ERROR);

    const clients = spans
      .filter((s) => s.name === 'upstream /v1/chat/completions')
      .sort(
        (a, b) =>
          Number(attrs(a.attributes)['inferplane.upstream.attempt']) -
          Number(attrs(b.attributes)['inferplane.upstream.attempt']),
      );
    for (const [i, c] of clients.entries()) {
      expect(c.kind).toBe(SPAN_KIND_CLIENT);
      expect(c.traceId).toBe(TRACE);
      expect(c.parentSpanId).toBe(server1.spanId);
      // What went upstream names exactly this client span.
      expect([first, second][i]?.traceparent).toBe(`00-${TRACE}-${c.spanId}-01`);
      expect([first, second][i]?.tracestate).toBe('vendor=abc');
    }
    expect(attrs(clients[0]?.attributes)).toMatchObject({
      'inferplane.upstream.attempt': 1,
      'inferplane.replica': 'r1',
      'inferplane.version': 'v1',
      'url.full': 'http://127.0.0.1:9001/v1/chat/completions',
      'http.response.status_code': 503,
      'error.type': 'upstream_overloaded',
    });
    expect(clients[0]?.status).toMatchObject({
      code: STATUS_ERROR,
      message: 'upstream_overloaded',
    });
    expect(attrs(clients[1]?.attributes)).toMatchObject({
      'inferplane.replica': 'r2',
      'inferplane.version': 'v2',
      'http.response.status_code': 200,
    });
    expect(clients[1]?.status?.code ?? 0).not.toBe(STATUS_ERROR);
    expect(clients[1]?.events?.[0]?.name).toBe('first_token');
    expect(attrs(clients[1]?.events?.[0]?.attributes)).toEqual({ 'inferplane.ttft_ms': 12.5 });

    const server2 = spans.find((s) => s.name === 'gateway /v1/completions')!;
    expect(server2.traceId).toBe(req2.traceId);
    expect(server2.traceId).not.toBe(TRACE);
    expect(server2.parentSpanId).toBeUndefined();
    expect(server2.status).toMatchObject({ code: STATUS_ERROR, message: 'upstream_unavailable' });
    expect(attrs(server2.attributes)).toMatchObject({
      'http.response.status_code': 502,
      'error.type': 'upstream_unavailable',
    });
    const client2 = spans.find((s) => s.name === 'upstream /v1/completions')!;
    expect(client2.parentSpanId).toBe(server2.spanId);
    expect(dangling.traceparent).toBe(`00-${server2.traceId}-${client2.spanId}-01`);
    expect(client2.status?.code).toBe(STATUS_ERROR);
  });

  it('samples new roots by ratio: ratio 0 exports nothing but still propagates', async () => {
    const rx = await startReceiver();
    server = rx.server;
    tracing = createTracing({ otlpEndpoint: `${rx.url}/`, sampleRatio: 0 });
    const req = tracing.startRequest('/v1/models', undefined, undefined, {});
    const up = req.startUpstream({});
    expect(up.traceparent).toMatch(new RegExp(`^00-${req.traceId}-[0-9a-f]{16}-00$`));
    up.end({ httpStatus: 200 });
    req.end({ httpStatus: 200 });
    // An incoming sampled trace is still recorded (parent-based).
    const sampled = tracing.startRequest('/v1/models', TP, undefined, {});
    sampled.end({ httpStatus: 200 });
    await tracing.shutdown();
    const spans = spansOf(rx.received);
    expect(spans.map((s) => [s.name, s.traceId])).toEqual([['gateway /v1/models', TRACE]]);
  });

  it('keeps several instances apart and survives an unreachable collector', async () => {
    const a = await startReceiver();
    const b = await startReceiver();
    const ta = createTracing({ otlpEndpoint: a.url, serviceName: 'a' });
    const tb = createTracing({ otlpEndpoint: b.url, serviceName: 'b' });
    const errors: unknown[] = [];
    const dead = createTracing({
      otlpEndpoint: 'http://127.0.0.1:9',
      exportTimeoutMs: 2000,
      onError: (e) => errors.push(e),
    });
    ta.startRequest('ra', undefined, undefined, {}).end({ httpStatus: 200 });
    tb.startRequest('rb', undefined, undefined, {}).end({ httpStatus: 200 });
    dead.startRequest('rd', undefined, undefined, {}).end({ httpStatus: 200 });
    await Promise.all([ta.shutdown(), tb.shutdown(), dead.shutdown()]);
    await ta.shutdown(); // idempotent
    expect(errors.length).toBe(1);
    expect(spansOf(a.received).map((s) => [s.name, s.resource['service.name']])).toEqual([
      ['gateway ra', 'a'],
    ]);
    expect(spansOf(b.received).map((s) => [s.name, s.resource['service.name']])).toEqual([
      ['gateway rb', 'b'],
    ]);
    await Promise.all([a, b].map((x) => new Promise((r) => x.server.close(r))));
  });
});

describe('gateway spans carry the routing receipt', () => {
  it("the upstream span has the decision's policy, scores and matched blocks", async () => {
    const rx = await startReceiver();
    const sim = createSimServer({ model: 'llama-3.1-8b', servedModelName: 'm', timeScale: 0.1 });
    const simUrl = `http://127.0.0.1:${await sim.listen(0)}`;
    const tracing = createTracing({ otlpEndpoint: rx.url, exportDelayMs: 60_000 }, '0.1.0');
    const gateway = new Gateway({
      metrics: createMetrics({ defaultMetrics: false }),
      logger: createLogger({ level: 'silent' }),
      tracing,
    });
    try {
      gateway.update({
        version: 1,
        keys: [
          { hash: hashApiKey('k'), keyId: 'k', role: 'tenant', tenantId: 't', tenantName: 't' },
        ],
        models: [
          {
            model: 'm',
            deployment: 'm',
            tenantId: 't',
            tenantName: 't',
            engine: 'sim',
            createdAt: new Date(0).toISOString(),
            endpoints: [{ replicaId: 'r0', index: 0, url: simUrl }],
            routing: { policy: 'prefix-aware', prefixSource: 'approximate' },
          },
        ],
      });
      const app = gateway.routes();
      const res = await app.request('/chat/completions', {
        method: 'POST',
        headers: { authorization: 'Bearer k', 'content-type': 'application/json' },
        body: JSON.stringify({
          model: 'm',
          messages: [{ role: 'user', content: 'word '.repeat(200) }],
          max_tokens: 2,
        }),
      });
      expect(res.status).toBe(200);
      await res.text();
    } finally {
      await gateway.close();
      await sim.close();
    }
    await tracing.shutdown();
    await new Promise((r) => rx.server.close(r));
    const up = spansOf(rx.received).find((sp) => sp.name.startsWith('upstream'));
    expect(up).toBeDefined();
    const a = attrs(up!.attributes);
    expect(a).toMatchObject({
      'inferplane.route.policy': 'prefix-aware',
      'inferplane.route.prefix_source': 'approximate',
      'inferplane.replica': 0,
    });
    expect(Number(a['inferplane.route.prompt_blocks'])).toBeGreaterThan(0);
    expect(Number(a['inferplane.route.matched_blocks'])).toBeGreaterThanOrEqual(0);
    expect(Number(a['inferplane.route.decision_us'])).toBeGreaterThan(0);
    const scores = JSON.parse(String(a['inferplane.route.scores'])) as Record<string, unknown>;
    expect(Object.keys(scores)).toEqual(['r0']);
    expect(typeof a['inferplane.route.score']).toBe('number');
  });
});

describe('tracing config', () => {
  it('defaults to no export and reads the standard OpenTelemetry variables', () => {
    expect(resolveConfig({}).tracing).toEqual({ serviceName: 'inferplane', sampleRatio: 1 });
    const env = {
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318',
      OTEL_SERVICE_NAME: 'gw-eu',
      OTEL_TRACES_SAMPLER: 'parentbased_traceidratio',
      OTEL_TRACES_SAMPLER_ARG: '0.25',
      OTEL_EXPORTER_OTLP_HEADERS: 'authorization=Bearer%20tok,x-team=a',
    };
    const config = resolveConfig({ tracing: tracingFromEnv(env) });
    expect(config.tracing).toEqual({
      otlpEndpoint: 'http://collector:4318',
      serviceName: 'gw-eu',
      sampleRatio: 0.25,
      headers: { authorization: 'Bearer tok', 'x-team': 'a' },
    });
    expect(Object.isFrozen(config.tracing)).toBe(true);
    expect(Object.isFrozen(config.tracing.headers)).toBe(true);
    expect(tracingFromEnv({ ...env, OTEL_SDK_DISABLED: 'true' }).otlpEndpoint).toBeUndefined();
    expect(tracingFromEnv({ OTEL_TRACES_SAMPLER: 'always_off' }).sampleRatio).toBe(0);
    // The flag given to `up` wins over the environment.
    expect(
      resolveConfig({
        tracing: { ...tracingFromEnv(env), otlpEndpoint: 'http://127.0.0.1:4318' },
      }).tracing.otlpEndpoint,
    ).toBe('http://127.0.0.1:4318');
  });

  it('rejects a bad endpoint or ratio', () => {
    expect(() => resolveConfig({ tracing: { otlpEndpoint: 'not a url' } })).toThrow();
    expect(() => resolveConfig({ tracing: { otlpEndpoint: 'ftp://x:21' } })).toThrow();
    expect(() =>
      resolveConfig({ tracing: tracingFromEnv({ OTEL_TRACES_SAMPLER_ARG: '2' }) }),
    ).toThrow();
  });

  it('constructs tracing from the platform config', async () => {
    const t = createTracing(resolveConfig({}).tracing);
    expect(t.exporting).toBe(false);
    await t.shutdown();
  });
});
