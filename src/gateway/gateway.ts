// The gateway: the OpenAI surface every inference request crosses. It authenticates the key,
// resolves the model to a deployment the key may reach, picks a ready replica and proxies the
// request, relaying streamed chunks as they arrive. It never reads the store: it serves from the
// last routing snapshot the control plane pushed.
import { randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import { Hono, type Context } from 'hono';
import { Agent, errors as undiciErrors, request } from 'undici';
import { InferplaneError, toInferplaneError } from '../core/errors.js';
import { hashApiKey } from '../core/ids.js';
import type { KeyEntry, RouteEndpoint, RouteModel, RoutingSnapshot } from '../core/types.js';
import type { Logger } from '../telemetry/logger.js';
import type { Metrics } from '../telemetry/metrics.js';
import { RoundRobinPicker, type Picker } from './routing/picker.js';

export interface GatewayOptions {
  metrics: Metrics;
  logger: Logger;
  picker?: Picker;
  /** Largest request body accepted (bytes). */
  maxBodyBytes?: number;
  /** Upstream timeouts (ms): connect, until response headers (covers prefill), idle between chunks. */
  connectTimeoutMs?: number;
  headersTimeoutMs?: number;
  idleTimeoutMs?: number;
  /** Seconds clients are told to wait when no replica is ready. */
  retryAfterS?: number;
}

interface Compiled {
  version: number;
  keys: Map<string, KeyEntry>;
  models: Map<string, RouteModel>;
}

type InferenceKind = 'chat' | 'completions';
const UPSTREAM_PATH: Record<InferenceKind, string> = {
  chat: '/v1/chat/completions',
  completions: '/v1/completions',
};

export class Gateway {
  private snap: Compiled = { version: 0, keys: new Map(), models: new Map() };
  private readonly picker: Picker;
  private readonly dispatcher: Agent;
  private readonly maxBodyBytes: number;
  private readonly retryAfterS: number;

  constructor(private readonly o: GatewayOptions) {
    this.picker = o.picker ?? new RoundRobinPicker();
    this.maxBodyBytes = o.maxBodyBytes ?? 16 * 1024 * 1024;
    this.retryAfterS = o.retryAfterS ?? 2;
    this.dispatcher = new Agent({
      keepAliveTimeout: 30_000,
      connect: { timeout: o.connectTimeoutMs ?? 5000 },
      headersTimeout: o.headersTimeoutMs ?? 300_000,
      bodyTimeout: o.idleTimeoutMs ?? 120_000,
    });
  }

  /** Installs a new routing snapshot (atomically: requests see the old or the new one). */
  update(snapshot: RoutingSnapshot): void {
    this.snap = {
      version: snapshot.version,
      keys: new Map(snapshot.keys.map((k) => [k.hash, k])),
      models: new Map(snapshot.models.map((m) => [m.model, m])),
    };
  }

  get snapshotVersion(): number {
    return this.snap.version;
  }

  async close(): Promise<void> {
    await this.dispatcher.close();
  }

  /** The OpenAI routes, to mount at `/v1`. */
  routes(): Hono {
    const app = new Hono();
    app.get('/models', (c) => this.handle(c, () => this.listModels(c)));
    app.post('/chat/completions', (c) => this.handle(c, () => this.infer(c, 'chat')));
    app.post('/completions', (c) => this.handle(c, () => this.infer(c, 'completions')));
    app.all('*', (c) =>
      this.handle(c, () => {
        throw new InferplaneError(
          'IP_NOT_FOUND',
          `no such endpoint: ${c.req.method} ${c.req.path}`,
        );
      }),
    );
    return app;
  }

  private async handle(c: Context, fn: () => Promise<Response> | Response): Promise<Response> {
    try {
      return await fn();
    } catch (e) {
      const err = toInferplaneError(e);
      if (err.status >= 500) this.o.logger.error({ err: e }, 'gateway error');
      return errorResponse(err);
    }
  }

  private authenticate(c: Context): KeyEntry {
    const header = c.req.header('authorization');
    const m = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
    if (!m?.[1]) {
      throw new InferplaneError(
        'IP_UNAUTHENTICATED',
        'You did not provide an API key. Send it as Authorization: Bearer <key>.',
      );
    }
    const entry = this.snap.keys.get(hashApiKey(m[1]));
    if (!entry) throw new InferplaneError('IP_UNAUTHENTICATED', 'Incorrect API key provided.');
    return entry;
  }

  private visible(key: KeyEntry, model: RouteModel): boolean {
    return key.role === 'operator' || key.tenantId === model.tenantId;
  }

  private listModels(c: Context): Response {
    const key = this.authenticate(c);
    const data = [...this.snap.models.values()]
      .filter((m) => this.visible(key, m))
      .sort((a, b) => a.model.localeCompare(b.model))
      .map((m) => ({
        id: m.model,
        object: 'model',
        created: Math.floor(Date.parse(m.createdAt) / 1000),
        owned_by: m.tenantName,
      }));
    return c.json({ object: 'list', data });
  }

  private async infer(c: Context, kind: InferenceKind): Promise<Response> {
    const started = process.hrtime.bigint();
    const reqId = c.req.header('x-request-id') ?? randomUUID();
    // Requests refused before routing are counted too, with bounded label values.
    let tenantLabel = '(unauthenticated)';
    let route: RouteModel | undefined;
    try {
      const key = this.authenticate(c);
      tenantLabel = key.tenantName ?? '(operator)';
      const raw = await this.readBody(c);
      const body = parseInferenceBody(raw, kind);
      route = this.snap.models.get(body.model);
      if (!route || !this.visible(key, route)) {
        throw new InferplaneError(
          'IP_MODEL_NOT_FOUND',
          `The model \`${body.model}\` does not exist or you do not have access to it.`,
          { details: [{ path: 'model', message: 'unknown model' }] },
        );
      }
      return await this.proxy(c, kind, route, raw, reqId, started);
    } catch (e) {
      const err = toInferplaneError(e);
      if (!(e instanceof ProxyRefusal)) {
        const labels = {
          tenant: tenantLabel,
          model: route?.model ?? '(unknown)',
          code: String(err.status),
        };
        this.o.metrics.requests.inc(labels);
        this.o.metrics.requestDuration.observe(
          labels,
          Number(process.hrtime.bigint() - started) / 1e9,
        );
      }
      throw e instanceof ProxyRefusal ? e.error : err;
    }
  }

  private async proxy(
    c: Context,
    kind: InferenceKind,
    route: RouteModel,
    raw: string,
    reqId: string,
    started: bigint,
  ): Promise<Response> {
    const tenant = route.tenantName;
    const log = this.o.logger.child({ reqId, tenant, model: route.model });
    const labels = { tenant, model: route.model };
    const done = (code: number): void => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      this.o.metrics.requests.inc({ ...labels, code: String(code) });
      this.o.metrics.requestDuration.observe({ ...labels, code: String(code) }, seconds);
    };

    let upstream: Awaited<ReturnType<typeof request>> | undefined;
    let endpoint: RouteEndpoint | undefined;
    const tried = new Set<string>();
    try {
      // A connect failure (the replica died since the last snapshot) is retried once elsewhere.
      for (let attempt = 0; attempt < 2 && !upstream; attempt++) {
        endpoint = this.picker.pick(route, tried);
        if (!endpoint) {
          if (attempt === 0) {
            throw new InferplaneError(
              'IP_NO_READY_REPLICA',
              `No ready replica for model ${route.model}; retry shortly.`,
              { retryAfterS: this.retryAfterS },
            );
          }
          break;
        }
        tried.add(endpoint.replicaId);
        try {
          upstream = await request(endpoint.url + UPSTREAM_PATH[kind], {
            method: 'POST',
            dispatcher: this.dispatcher,
            headers: { 'content-type': 'application/json', 'x-request-id': reqId },
            body: raw,
            signal: c.req.raw.signal,
          });
        } catch (e) {
          if (c.req.raw.signal.aborted) {
            throw new InferplaneError('IP_CLIENT_CLOSED', 'the client closed the request');
          }
          this.o.metrics.upstreamErrors.inc({ model: route.model, kind: connectKind(e) });
          log.warn({ replica: endpoint.index, err: errMessage(e) }, 'upstream request failed');
          if (e instanceof undiciErrors.HeadersTimeoutError) {
            throw new InferplaneError(
              'IP_UPSTREAM_TIMEOUT',
              `replica ${endpoint.index} of ${route.model} sent no response in time`,
              { cause: e },
            );
          }
          if (!isConnectError(e)) throw upstreamError(e);
        }
      }
      if (!upstream || !endpoint) {
        throw new InferplaneError(
          'IP_UPSTREAM_UNAVAILABLE',
          `No replica of ${route.model} could be reached; retry shortly.`,
          { retryAfterS: this.retryAfterS },
        );
      }
    } catch (e) {
      const err = toInferplaneError(e);
      done(err.status);
      log.info({ status: err.status, code: err.code }, 'request failed');
      throw new ProxyRefusal(err);
    }

    const status = upstream.statusCode;
    const contentType = headerValue(upstream.headers['content-type']) ?? 'application/json';
    const streaming = contentType.startsWith('text/event-stream');
    const inflight = this.o.metrics.inflight.labels({ model: route.model });
    inflight.inc();
    let finished = false;
    const finish = (outcome: string): void => {
      if (finished) return;
      finished = true;
      inflight.dec();
      done(status);
      log.info(
        {
          status,
          replica: endpoint.index,
          outcome,
          ms: Number(process.hrtime.bigint() - started) / 1e6,
        },
        'request done',
      );
    };
    const body$ = relay(upstream.body, {
      streaming,
      onFirstByte: () =>
        this.o.metrics.ttft.observe(labels, Number(process.hrtime.bigint() - started) / 1e9),
      onEnd: finish,
      onError: (e) => {
        this.o.metrics.upstreamErrors.inc({ model: route.model, kind: 'mid_stream' });
        log.warn({ err: errMessage(e), replica: endpoint.index }, 'upstream failed mid-response');
      },
    });
    const headers: Record<string, string> = {
      'content-type': contentType,
      'x-request-id': reqId,
      'x-inferplane-replica': String(endpoint.index),
    };
    if (streaming) {
      headers['cache-control'] = 'no-cache';
      headers['x-accel-buffering'] = 'no';
    }
    return new Response(body$, { status, headers });
  }

  private async readBody(c: Context): Promise<string> {
    const len = Number(c.req.header('content-length') ?? '0');
    if (len > this.maxBodyBytes) {
      throw new InferplaneError(
        'IP_PAYLOAD_TOO_LARGE',
        `request body of ${len} bytes exceeds the limit of ${this.maxBodyBytes}`,
      );
    }
    const text = await c.req.text();
    if (Buffer.byteLength(text) > this.maxBodyBytes) {
      throw new InferplaneError(
        'IP_PAYLOAD_TOO_LARGE',
        `request body exceeds the limit of ${this.maxBodyBytes} bytes`,
      );
    }
    return text;
  }
}

/** A failure already counted by `proxy` (so `infer` does not count it twice). */
class ProxyRefusal extends Error {
  constructor(readonly error: InferplaneError) {
    super(error.message);
  }
}

interface InferenceBody {
  model: string;
}

/** Light validation at the edge: what routing needs; engines validate the rest. */
export function parseInferenceBody(raw: string, kind: InferenceKind): InferenceBody {
  let body: unknown;
  try {
    body = JSON.parse(raw);
  } catch {
    throw new InferplaneError('IP_BAD_REQUEST', 'The request body is not valid JSON.');
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new InferplaneError('IP_BAD_REQUEST', 'The request body must be a JSON object.');
  }
  const b = body as Record<string, unknown>;
  if (typeof b.model !== 'string' || b.model === '') {
    throw new InferplaneError('IP_VALIDATION', 'you must provide a model parameter', {
      details: [{ path: 'model', message: 'required string' }],
    });
  }
  if (kind === 'chat' && (!Array.isArray(b.messages) || b.messages.length === 0)) {
    throw new InferplaneError('IP_VALIDATION', "'messages' must be a non-empty array", {
      details: [{ path: 'messages', message: 'required non-empty array' }],
    });
  }
  if (kind === 'completions' && typeof b.prompt !== 'string' && !Array.isArray(b.prompt)) {
    throw new InferplaneError('IP_VALIDATION', "'prompt' must be a string or an array", {
      details: [{ path: 'prompt', message: 'required' }],
    });
  }
  if (b.stream !== undefined && typeof b.stream !== 'boolean') {
    throw new InferplaneError('IP_VALIDATION', "'stream' must be a boolean", {
      details: [{ path: 'stream', message: 'must be a boolean' }],
    });
  }
  return { model: b.model };
}

interface RelayHooks {
  streaming: boolean;
  onFirstByte: () => void;
  onEnd: (outcome: 'ok' | 'error' | 'cancelled') => void;
  onError: (e: unknown) => void;
}

/**
 * Relays an upstream body chunk by chunk (no buffering). If the client goes away, the upstream
 * body is destroyed, which closes the upstream connection and cancels the engine's work. If the
 * upstream dies mid-stream, an SSE client gets an error event and a clean end, never a hang.
 */
export function relay(body: Readable, hooks: RelayHooks): ReadableStream<Uint8Array> {
  const it: AsyncIterator<Buffer, undefined> = body[Symbol.asyncIterator]();
  let first = true;
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        try {
          const next = await it.next();
          if (next.done) {
            hooks.onEnd('ok');
            controller.close();
            return;
          }
          if (first) {
            first = false;
            hooks.onFirstByte();
          }
          controller.enqueue(next.value);
        } catch (e) {
          hooks.onError(e);
          hooks.onEnd('error');
          if (hooks.streaming) {
            const event = {
              error: {
                message: 'The model replica failed while streaming; the response is incomplete.',
                type: 'api_error',
                param: null,
                code: 'IP_UPSTREAM_UNAVAILABLE',
              },
            };
            controller.enqueue(Buffer.from(`data: ${JSON.stringify(event)}\n\ndata: [DONE]\n\n`));
            controller.close();
          } else {
            controller.error(e);
          }
        }
      },
      cancel() {
        body.destroy();
        hooks.onEnd('cancelled');
      },
    },
    { highWaterMark: 0 },
  );
}

export function errorResponse(err: InferplaneError): Response {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (err.retryAfterS !== undefined) headers['retry-after'] = String(err.retryAfterS);
  return new Response(JSON.stringify(err.toOpenAI()), { status: err.status, headers });
}

function headerValue(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

function isConnectError(e: unknown): boolean {
  if (e instanceof undiciErrors.ConnectTimeoutError) return true;
  const code = (e as { code?: string }).code;
  return code === 'ECONNREFUSED' || code === 'ECONNRESET' || code === 'UND_ERR_SOCKET';
}

function connectKind(e: unknown): string {
  return isConnectError(e) ? 'connect' : 'request';
}

function upstreamError(e: unknown): InferplaneError {
  return new InferplaneError(
    'IP_UPSTREAM_UNAVAILABLE',
    `upstream request failed: ${errMessage(e)}`,
    {
      cause: e,
    },
  );
}

function errMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
