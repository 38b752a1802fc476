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
import type { PickRequest, Picker, RouteReceipt } from './routing/picker.js';
import { RoutingPipeline, policyOf } from './routing/pipeline.js';
import type { PrefixIndexOptions } from './routing/prefix-index.js';
import { SignalScraper, type EngineSignals } from './routing/signals.js';

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
  /** Engine-signal scraping and the default pipeline's knobs. */
  routing?: {
    /** Metrics poll period per endpoint (ms). Default 100. */
    scrapeIntervalMs?: number;
    /** Per-scrape timeout (ms). Default 500. */
    scrapeTimeoutMs?: number;
    /** Signals older than this make a replica count as saturated (ms). Default 2000. */
    staleMs?: number;
    /** Tie-break random source (seeded in tests). */
    random?: () => number;
    index?: PrefixIndexOptions;
  };
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
  /** The default picker (undefined when one was injected). */
  readonly pipeline: RoutingPipeline | undefined;
  readonly signals: SignalScraper;
  /** replica id → model, for the per-replica signal gauges. */
  private replicaModel = new Map<string, string>();
  private readonly dispatcher: Agent;
  private readonly maxBodyBytes: number;
  private readonly retryAfterS: number;

  constructor(private readonly o: GatewayOptions) {
    const r = o.routing ?? {};
    this.signals = new SignalScraper({
      ...(r.scrapeIntervalMs !== undefined ? { intervalMs: r.scrapeIntervalMs } : {}),
      ...(r.scrapeTimeoutMs !== undefined ? { timeoutMs: r.scrapeTimeoutMs } : {}),
      ...(r.staleMs !== undefined ? { staleMs: r.staleMs } : {}),
      onScrape: (id, s) => this.observeSignals(id, s),
    });
    this.pipeline = o.picker
      ? undefined
      : new RoutingPipeline({
          signals: this.signals,
          ...(r.index ? { index: r.index } : {}),
          ...(r.random ? { random: r.random } : {}),
        });
    this.picker = o.picker ?? this.pipeline!;
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
    const endpoints: RouteEndpoint[] = [];
    const replicaModel = new Map<string, string>();
    for (const m of snapshot.models) {
      for (const e of m.endpoints) {
        endpoints.push(e);
        replicaModel.set(e.replicaId, m.model);
      }
    }
    for (const [id, model] of this.replicaModel) {
      if (replicaModel.get(id) === model) continue;
      const labels = { model, replica: id };
      this.o.metrics.replicaWaiting.remove(labels);
      this.o.metrics.replicaKvUtilization.remove(labels);
      this.o.metrics.replicaSignalAge.remove(labels);
    }
    this.replicaModel = replicaModel;
    this.signals.sync(endpoints);
    this.pipeline?.sync(snapshot);
  }

  private observeSignals(replicaId: string, s: EngineSignals | undefined): void {
    if (s) this.pipeline?.noteScrape(replicaId);
    const model = this.replicaModel.get(replicaId);
    if (model === undefined) return;
    const labels = { model, replica: replicaId };
    const v = this.signals.view(replicaId);
    if (s) {
      this.o.metrics.replicaWaiting.set(labels, s.waiting);
      this.o.metrics.replicaKvUtilization.set(labels, s.kvUtilization);
    }
    // Never scraped: report the staleness limit's worth of age rather than Infinity.
    const age = Number.isFinite(v.ageMs) ? v.ageMs : this.signals.staleMs * 2;
    this.o.metrics.replicaSignalAge.set(labels, age / 1000);
  }

  get snapshotVersion(): number {
    return this.snap.version;
  }

  async close(): Promise<void> {
    await this.signals.close();
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
      const pickReq: PickRequest = { exclude: new Set<string>() };
      if (this.picker.needsPrompt?.(route)) pickReq.prompt = promptParts(body.parsed, kind);
      const session = c.req.header('x-session-id');
      if (session) pickReq.sessionId = session;
      const debug = c.req.header('x-inferplane-debug') === 'route';
      return await this.proxy(c, kind, route, raw, reqId, started, pickReq, debug);
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
    pickReq: PickRequest,
    debug: boolean,
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
    let receipt: RouteReceipt | undefined;
    const tried = new Set<string>();
    const req: PickRequest = { ...pickReq, exclude: tried };
    const policy = policyOf(route);
    try {
      // A connect failure (the replica died since the last snapshot) is retried once elsewhere.
      for (let attempt = 0; attempt < 2 && !upstream; attempt++) {
        const t0 = process.hrtime.bigint();
        const decision = this.picker.pick(route, req);
        this.o.metrics.routingDecision.observe(
          { model: route.model, policy: decision?.receipt.policy ?? policy },
          Number(process.hrtime.bigint() - t0) / 1e9,
        );
        endpoint = decision?.endpoint;
        receipt = decision?.receipt;
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
          this.picker.release?.(endpoint.replicaId);
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
      this.picker.release?.(endpoint.replicaId);
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
    if (debug && receipt) headers['x-inferplane-route'] = JSON.stringify(receipt);
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
  /** The parsed body (for the prompt text, read only when routing needs it). */
  parsed: Record<string, unknown>;
}

/**
 * The prompt for prefix hashing, as parts to read in order (no concatenated copy of a long
 * prompt): the completion prompt, or the chat messages flattened deterministically — `<role>\n`,
 * the text parts of the content, `\n` — for each message.
 */
export function promptParts(body: Record<string, unknown>, kind: InferenceKind): string[] {
  if (kind === 'completions') {
    const p = body.prompt;
    if (typeof p === 'string') return [p];
    if (Array.isArray(p)) return [p.map((x) => (typeof x === 'string' ? x : String(x))).join('\n')];
    return [];
  }
  const messages = Array.isArray(body.messages) ? (body.messages as unknown[]) : [];
  const out: string[] = [];
  for (const m of messages) {
    if (typeof m !== 'object' || m === null) continue;
    const msg = m as { role?: unknown; content?: unknown };
    out.push(`<${typeof msg.role === 'string' ? msg.role : '?'}>\n`);
    const content = msg.content;
    if (typeof content === 'string') out.push(content);
    else if (Array.isArray(content)) {
      for (const part of content as unknown[]) {
        const p = part as { type?: unknown; text?: unknown } | null;
        if (p && typeof p.text === 'string') out.push(p.text);
        else if (p && typeof p.type === 'string') out.push(`[${p.type}]`);
      }
    }
    out.push('\n');
  }
  return out;
}

/** The flattened prompt as one string (what `promptParts` hashes as). */
export function promptText(body: Record<string, unknown>, kind: InferenceKind): string {
  return promptParts(body, kind).join('');
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
  return { model: b.model, parsed: b };
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
