// The gateway: the OpenAI surface every inference request crosses. Per request: authenticate the
// key → tenant limits (429) → model → wait in the model's fair queue while every replica is
// saturated (503 beyond it) → pick a replica (version split, breakers, routing pipeline) → proxy,
// relaying streamed chunks as they arrive; a connect failure or a 5xx before the first byte is
// retried once on another replica. It never reads the store: it serves from the last routing
// snapshot the control plane pushed.
//
// Two front doors share one core (`serve`): `server()` is the serving path, raw HTTP/1.1 on
// node:net both ways (./h1: one head parse and one write per answer, streams relayed chunk by
// chunk with backpressure), handing every request it does not take to a node:http listener; and
// `routes()` is a Hono app (model listing, 404s, requests the raw path declines, and in-process
// use in tests).
import { performance } from 'node:perf_hooks';
import process from 'node:process';
import { Buffer } from 'node:buffer';
import { setFlagsFromString } from 'node:v8';
import { createServer as createHttpServer, type RequestListener } from 'node:http';
import { Hono, type Context } from 'hono';
import { InferplaneError, toInferplaneError } from '../core/errors.js';
import { hashApiKey, newRequestId } from '../core/ids.js';
import type {
  KeyEntry,
  RouteEndpoint,
  RouteModel,
  RoutingSnapshot,
  TenantLimits,
} from '../core/types.js';
import { bindCounter, bindGauge, bindHistogram } from '../telemetry/bound-metrics.js';
import { accessFields, accessLogger, type AccessRecord, type Logger } from '../telemetry/logger.js';
import type { Metrics } from '../telemetry/metrics.js';
import {
  createTracing,
  type RequestTrace,
  type TraceAttributes,
  type Tracing,
  type UpstreamTrace,
} from '../telemetry/tracing.js';
import {
  UPSTREAM_PATH,
  clientWantsStreamUsage,
  parseInferenceBody,
  promptParts,
  withStreamUsage,
  type InferenceBody,
  type InferenceKind,
} from './body.js';
import { CircuitBreakers, type BreakerState } from './breaker.js';
import { FairWaitQueue } from './fair-queue.js';
import {
  UpstreamClient,
  UpstreamError,
  type Cancellation,
  type UpstreamBody,
  type UpstreamResponse,
} from './h1/client.js';
import { H1Server, type H1Request, type H1Response } from './h1/server.js';
import { TenantLimiter, completionBudgetOf, estimateTokens, type Admission } from './limits.js';
import { StreamWatcher, pipeToH1, relayWatched, type Usage } from './relay.js';
import type { PickRequest, Picker, RouteDecision, RouteReceipt } from './routing/picker.js';
import type { PeerBoard } from './routing/load-board.js';
import { RoutingPipeline, policyOf } from './routing/pipeline.js';
import type { PrefixIndexOptions } from './routing/prefix-index.js';
import { SignalScraper, type EngineSignals } from './routing/signals.js';

export interface GatewayOptions {
  metrics: Metrics;
  logger: Logger;
  picker?: Picker;
  /** Traces (W3C propagation always; OTLP export when configured). */
  tracing?: Tracing;
  /** Largest request body accepted (bytes). */
  maxBodyBytes?: number;
  /** Largest non-streamed upstream answer relayed (bytes); beyond it the answer is a 502. */
  maxResponseBytes?: number;
  /**
   * Upstream timeouts (ms): connect; first byte (until the response headers: covers queueing and
   * prefill for streams, the whole generation for non-streamed requests); idle between chunks.
   */
  connectTimeoutMs?: number;
  headersTimeoutMs?: number;
  idleTimeoutMs?: number;
  /** Seconds clients are told to wait when no replica is ready. */
  retryAfterS?: number;
  /** Per-replica circuit breakers. */
  breaker?: { failureThreshold?: number; openMs?: number; maxOpenMs?: number };
  /** The per-model queue requests wait in while every replica is saturated. */
  queue?: { maxDepth?: number; maxWaitMs?: number };
  /** Called when a replica relays its first byte of a response (cold start: first token). */
  onServed?: (replicaId: string) => void;
  /** Clock for limits and breakers (ms; tests). */
  now?: () => number;
  /**
   * Gateway processes sharing each tenant's limits (default 1). Until a coordinator sets this
   * process's shares (`limiter.setShares`), it enforces 1/N of every limit.
   */
  limitWorkers?: number;
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
    /** Every pick recorded in the approximate prefix index (to share with other gateway processes). */
    onRecord?: (replicaId: string, hashes: Uint32Array, extraBlocks: number) => void;
    /** The load board shared with the other gateway processes (RoutingPipeline `board`). */
    board?: PeerBoard;
  };
}

interface Compiled {
  version: number;
  keys: Map<string, KeyEntry>;
  models: Map<string, RouteModel>;
  limits: Map<string, TenantLimits>;
}

const BREAKER_VALUE: Record<BreakerState, number> = { closed: 0, 'half-open': 1, open: 2 };
const NO_EXCLUDE: ReadonlySet<string> = new Set();

/** What a front door gives the core. */
interface Incoming {
  /** A request header (lowercase name). */
  header(name: string): string | undefined;
  /**
   * The body as text (the string itself when it is already read: no promise, no await); throws
   * IP_PAYLOAD_TOO_LARGE beyond `max` bytes.
   */
  body(max: number): string | Promise<string>;
  /** Aborted when the client goes away. */
  signal: Cancellation;
}

/** What the core answers: a whole body, or an upstream stream to relay through its watcher. */
type Outgoing =
  | { status: number; headers: Record<string, string>; body: Buffer | string }
  | {
      status: number;
      headers: Record<string, string>;
      stream: UpstreamBody;
      watcher: StreamWatcher;
    };

/** One request's bookkeeping, settled exactly once (metrics, limits, trace). */
interface Ctx {
  kind: InferenceKind;
  started: bigint;
  reqId: string;
  tenant: string;
  model: string;
  trace: RequestTrace;
  admission: (Admission & { ok: true }) | undefined;
  settled: boolean;
}

/** Per-(tenant, model, version, replica) metric children, resolved once. */
interface Series {
  ttftByte: { observe(v: number): void };
  ttft: { observe(v: number): void };
  itl: { observe(v: number): void };
  e2e: { observe(v: number): void };
  inflight: { inc(): void; dec(): void };
  /** The access line's tenant, model, version and replica fields, serialized once. */
  accessFields: string;
  promptTokens: { inc(v: number): void };
  completionTokens: { inc(v: number): void };
  cachedTokens: { inc(v: number): void };
  /** Per-version outcomes (the rollout gates' error rate). */
  versionOk: { inc(): void };
  versionError: { inc(): void };
  versionCancelled: { inc(): void };
}

/** Per-(tenant, model, code) request counters, resolved once. */
interface Outcome {
  requests: { inc(): void };
  duration: { observe(v: number): void };
}

const ROUTE_KIND: Record<string, InferenceKind | undefined> = {
  '/v1/chat/completions': 'chat',
  '/v1/completions': 'completions',
  '/v1/embeddings': 'embeddings',
};

export class Gateway {
  private snap: Compiled = { version: 0, keys: new Map(), models: new Map(), limits: new Map() };
  private readonly picker: Picker;
  /** The default picker (undefined when one was injected). */
  readonly pipeline: RoutingPipeline | undefined;
  readonly signals: SignalScraper;
  readonly limiter: TenantLimiter;
  readonly breakers: CircuitBreakers;
  private readonly tracing: Tracing;
  /** replica id → model, for the per-replica gauges. */
  private replicaModel = new Map<string, string>();
  private readonly queues = new Map<string, FairWaitQueue>();
  private queueTimer: NodeJS.Timeout | undefined;
  /** By endpoint (objects of the current snapshot), then tenant name. */
  private readonly series = new Map<RouteEndpoint, Map<string, Series>>();
  /**
   * By tenant, model, then status; and routing-decision histograms by model, then policy. Nested
   * maps of strings the snapshot already holds, so a request builds no key string (a key built
   * per request is a new string to concatenate, flatten and hash at every lookup).
   */
  private readonly outcomes = new Map<string, Map<string, Map<number, Outcome>>>();
  private outcomeCount = 0;
  /** Presented key → its entry, for keys seen valid in the current snapshot (saves a sha256). */
  private readonly keyCache = new Map<string, KeyEntry>();
  private readonly decisions = new Map<string, Map<string, { observe(v: number): void }>>();
  private readonly upstream: UpstreamClient;
  private readonly accessLog: (r: AccessRecord) => void;
  private readonly maxBodyBytes: number;
  private readonly maxResponseBytes: number;
  private readonly retryAfterS: number;
  private readonly allowReplica = (id: string): boolean => this.breakers.allow(id);

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
          ...(r.onRecord ? { onRecord: r.onRecord } : {}),
          onRecordError: (e) =>
            o.logger.error({ err: e }, 'recording a pick in the token-block prefix index failed'),
          ...(r.board ? { board: r.board, onRace: () => o.metrics.routingRaces.inc() } : {}),
        });
    this.picker = o.picker ?? this.pipeline!;
    this.tracing = o.tracing ?? createTracing({});
    const now = o.now ? { now: o.now } : {};
    this.limiter = new TenantLimiter({
      ...now,
      ...(o.limitWorkers !== undefined ? { workers: o.limitWorkers } : {}),
    });
    this.breakers = new CircuitBreakers({
      ...o.breaker,
      ...now,
      onChange: (id, state) => this.observeBreaker(id, state),
    });
    this.maxBodyBytes = o.maxBodyBytes ?? 16 * 1024 * 1024;
    this.maxResponseBytes = o.maxResponseBytes ?? 256 * 1024 * 1024;
    this.retryAfterS = o.retryAfterS ?? 2;
    this.accessLog = accessLogger(o.logger);
    this.upstream = new UpstreamClient({
      connectTimeoutMs: o.connectTimeoutMs ?? 5000,
      headersTimeoutMs: o.headersTimeoutMs ?? 300_000,
      idleTimeoutMs: o.idleTimeoutMs ?? 120_000,
    });
  }

  /** Installs a new routing snapshot (atomically: requests see the old or the new one). */
  update(snapshot: RoutingSnapshot): void {
    const limits = new Map<string, TenantLimits>();
    for (const t of snapshot.tenants ?? []) limits.set(t.id, t.limits);
    this.snap = {
      version: snapshot.version,
      keys: new Map(snapshot.keys.map((k) => [k.hash, k])),
      models: new Map(snapshot.models.map((m) => [m.model, m])),
      limits,
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
      this.o.metrics.breakerState.remove(labels);
    }
    this.replicaModel = replicaModel;
    this.series.clear();
    this.keyCache.clear();
    this.outcomes.clear();
    this.outcomeCount = 0;
    this.decisions.clear();
    this.breakers.retain(new Set(replicaModel.keys()));
    this.limiter.retain(new Set(limits.keys()));
    for (const [model, q] of this.queues) {
      if (this.snap.models.has(model)) continue;
      q.clear(
        new InferplaneError('IP_MODEL_NOT_FOUND', `The model \`${model}\` was removed.`, {
          details: [{ path: 'model', message: 'removed while queued' }],
        }),
      );
      this.queues.delete(model);
      this.o.metrics.queueDepth.remove({ model });
    }
    this.signals.sync(endpoints);
    this.pipeline?.sync(snapshot);
    this.pumpQueues();
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
    // Fresh signals may show room: let a queued request of this model try.
    if (s) this.grantIfRoom(model);
  }

  private observeBreaker(replicaId: string, state: BreakerState): void {
    const model = this.replicaModel.get(replicaId) ?? '(unknown)';
    const labels = { model, replica: replicaId };
    this.o.metrics.breakerState.set(labels, BREAKER_VALUE[state]);
    if (state === 'open') this.o.metrics.breakerOpened.inc(labels);
    this.o.logger.warn({ model, replica: replicaId, breaker: state }, 'circuit breaker changed');
  }

  get snapshotVersion(): number {
    return this.snap.version;
  }

  async close(): Promise<void> {
    if (this.queueTimer) clearInterval(this.queueTimer);
    for (const q of this.queues.values()) {
      q.clear(new InferplaneError('IP_SHUTTING_DOWN', 'The gateway is shutting down.'));
    }
    await this.signals.close();
    await this.upstream.close();
    await this.tracing.shutdown();
  }

  // ---------------------------------------------------------------------------------------------
  // Front doors

  /**
   * The serving front door: the inference routes (POST /v1/chat/completions, /v1/completions,
   * /v1/embeddings) on the raw path; every other request, and any the raw parser declines, to
   * `fallback` (node:http). Call `listen` on the result.
   */
  server(fallback: RequestListener, opts: { keepAliveTimeoutMs?: number } = {}): H1Server {
    tuneHeapForServing();
    return new H1Server({
      accepts: (method, path) => method === 'POST' && ROUTE_KIND[path] !== undefined,
      handle: (req, res) => this.serveH1(req, res),
      fallback: createHttpServer(fallback),
      maxBodyBytes: this.maxBodyBytes,
      ...(opts.keepAliveTimeoutMs !== undefined
        ? { keepAliveTimeoutMs: opts.keepAliveTimeoutMs }
        : {}),
    });
  }

  private serveH1(req: H1Request, res: H1Response): void {
    const kind = ROUTE_KIND[req.path]!;
    const text = req.body.toString('utf8');
    const inc: Incoming = {
      header: (name) => req.headers.get(name),
      body: () => text,
      signal: res,
    };
    void this.serve(kind, inc).then(
      (out) => writeH1(res, out),
      (e: unknown) => {
        this.o.logger.error({ err: e }, 'gateway error');
        if (!res.headersSent) writeH1(res, errorOutgoing(toInferplaneError(e)));
        else res.destroy();
      },
    );
  }

  /** The OpenAI routes as a Hono app, to mount at `/v1`. */
  routes(): Hono {
    const app = new Hono();
    app.get('/models', (c) => {
      try {
        return this.listModels(c);
      } catch (e) {
        return toResponse(errorOutgoing(toInferplaneError(e)));
      }
    });
    const infer = (kind: InferenceKind) => async (c: Context) =>
      toResponse(
        await this.serve(kind, {
          header: (name) => c.req.header(name),
          body: async (max) => {
            const len = Number(c.req.header('content-length') ?? '0');
            if (len > max) throw tooLarge(max, len);
            const text = await c.req.text();
            if (Buffer.byteLength(text) > max) throw tooLarge(max);
            return text;
          },
          signal: c.req.raw.signal,
        }),
      );
    app.post('/chat/completions', infer('chat'));
    app.post('/completions', infer('completions'));
    app.post('/embeddings', infer('embeddings'));
    app.all('*', (c) =>
      toResponse(
        errorOutgoing(
          new InferplaneError('IP_NOT_FOUND', `no such endpoint: ${c.req.method} ${c.req.path}`),
        ),
      ),
    );
    return app;
  }

  private authenticate(authorization: string | undefined): KeyEntry {
    const token = authorization === undefined ? undefined : bearerToken(authorization);
    if (token === undefined) {
      throw new InferplaneError(
        'IP_UNAUTHENTICATED',
        'You did not provide an API key. Send it as Authorization: Bearer <key>.',
      );
    }
    const cached = this.keyCache.get(token);
    if (cached) return cached;
    const entry = this.snap.keys.get(hashApiKey(token));
    if (!entry) throw new InferplaneError('IP_UNAUTHENTICATED', 'Incorrect API key provided.');
    // Valid keys only (bounded): a stream of bad keys cannot grow it.
    if (this.keyCache.size >= 4096) this.keyCache.clear();
    this.keyCache.set(token, entry);
    return entry;
  }

  private visible(key: KeyEntry, model: RouteModel): boolean {
    return key.role === 'operator' || key.tenantId === model.tenantId;
  }

  private listModels(c: Context): Response {
    const key = this.authenticate(c.req.header('authorization'));
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

  // ---------------------------------------------------------------------------------------------
  // The core

  /** Settles a request once: metrics, the tenant's limits (with the real token count), trace. */
  private settle(ctx: Ctx, status: number, usage?: Usage): void {
    if (ctx.settled) return;
    ctx.settled = true;
    let out = this.outcomes.get(ctx.tenant)?.get(ctx.model)?.get(status);
    if (!out) {
      const labels = { tenant: ctx.tenant, model: ctx.model, code: String(status) };
      out = {
        requests: bindCounter(this.o.metrics.requests, labels),
        duration: bindHistogram(this.o.metrics.requestDuration, labels),
      };
      // Unauthenticated or unknown-model labels are bounded; keep the cache bounded regardless.
      if (this.outcomeCount >= 10_000) {
        this.outcomes.clear();
        this.outcomeCount = 0;
      }
      let byModel = this.outcomes.get(ctx.tenant);
      if (!byModel)
        this.outcomes.set(ctx.tenant, (byModel = new Map<string, Map<number, Outcome>>()));
      let byStatus = byModel.get(ctx.model);
      if (!byStatus) byModel.set(ctx.model, (byStatus = new Map<number, Outcome>()));
      byStatus.set(status, out);
      this.outcomeCount++;
    }
    out.requests.inc();
    out.duration.observe(Number(process.hrtime.bigint() - ctx.started) / 1e9);
    ctx.admission?.release(usage ? usage.promptTokens + usage.completionTokens : undefined);
    ctx.trace.end({ httpStatus: status });
  }

  /** One inference request, start to answer; never throws (errors become answers). */
  private async serve(kind: InferenceKind, inc: Incoming): Promise<Outgoing> {
    const reqId = inc.header('x-request-id') ?? newRequestId();
    const ctx: Ctx = {
      kind,
      started: process.hrtime.bigint(),
      reqId,
      // Requests refused before routing are counted too, with bounded label values.
      tenant: '(unauthenticated)',
      model: '(unknown)',
      trace: this.tracing.startRequest(
        `POST ${UPSTREAM_PATH[kind]}`,
        inc.header('traceparent'),
        inc.header('tracestate'),
        { 'http.request.method': 'POST', 'url.path': UPSTREAM_PATH[kind] },
      ),
      admission: undefined,
      settled: false,
    };
    let rlHeaders: Record<string, string> | undefined;
    try {
      const key = this.authenticate(inc.header('authorization'));
      ctx.tenant = key.tenantName ?? '(operator)';
      // Limits are the calling tenant's (an operator key has none). Without a tokens/min limit
      // they need nothing from the body: a flood is refused before its body is even read.
      const limits = key.tenantId !== null ? this.snap.limits.get(key.tenantId) : undefined;
      const early = limits !== undefined && limits.tokensPerMinute === undefined;
      if (early) rlHeaders = this.admit(ctx, key.tenantId!, limits, 0);
      const read = inc.body(this.maxBodyBytes);
      const raw = typeof read === 'string' ? read : await read;
      const body = parseInferenceBody(raw, kind);
      const route = this.snap.models.get(body.model);
      if (!route || !this.visible(key, route)) {
        throw new InferplaneError(
          'IP_MODEL_NOT_FOUND',
          `The model \`${body.model}\` does not exist or you do not have access to it.`,
          { details: [{ path: 'model', message: 'unknown model' }] },
        );
      }
      ctx.model = route.model;
      ctx.trace.setAttributes({
        'inferplane.tenant': ctx.tenant,
        'gen_ai.request.model': route.model,
      });
      if (limits !== undefined && !early) {
        rlHeaders = this.admit(ctx, key.tenantId!, limits, estimateTokens(body.parsed, kind));
      }
      const out = await this.proxy(inc, ctx, route, key, raw, body);
      if (rlHeaders) Object.assign(out.headers, rlHeaders);
      return out;
    } catch (e) {
      if (e instanceof HeaderedError) rlHeaders = e.headers;
      const err = toInferplaneError(e instanceof HeaderedError ? e.error : e);
      if (err.code === 'IP_INTERNAL') this.o.logger.error({ err: e, reqId }, 'gateway error');
      this.settle(ctx, err.status);
      if (err.status >= 500 || err.status === 499) {
        this.o.logger.info(
          { reqId, tenant: ctx.tenant, model: ctx.model, status: err.status, code: err.code },
          'request failed',
        );
      }
      return errorOutgoing(err, rlHeaders);
    }
  }

  /**
   * Tenant limits: admits (the admission is settled with the request) or throws IP_RATE_LIMITED
   * carrying the x-ratelimit-* headers. Returns those headers for the answer.
   */
  private admit(
    ctx: Ctx,
    tenantId: string,
    limits: TenantLimits,
    estimate: number,
  ): Record<string, string> | undefined {
    const admission = this.limiter.admit(tenantId, limits, estimate);
    let headers: Record<string, string> | undefined;
    for (const name in admission.headers) (headers ??= {})[name] = admission.headers[name]!;
    if (!admission.ok) {
      this.o.metrics.rateLimited.inc({ tenant: ctx.tenant, limit: admission.limit });
      throw new HeaderedError(admission.error, headers ?? {});
    }
    ctx.admission = admission;
    return headers;
  }

  /** Waits in the model's queue (the caller found every candidate replica saturated). */
  private async waitForRoom(
    route: RouteModel,
    tenantKey: string,
    signal: Cancellation,
  ): Promise<void> {
    const q = this.queueOf(route.model);
    const t0 = performance.now();
    try {
      await q.wait(tenantKey, signal);
      this.o.metrics.queueWait.observe(
        { model: route.model, outcome: 'granted' },
        (performance.now() - t0) / 1000,
      );
    } catch (e) {
      const outcome =
        e instanceof InferplaneError && e.code === 'IP_CLIENT_CLOSED' ? 'cancelled' : 'overloaded';
      this.o.metrics.queueWait.observe(
        { model: route.model, outcome },
        (performance.now() - t0) / 1000,
      );
      throw e;
    }
  }

  private queueOf(model: string): FairWaitQueue {
    let q = this.queues.get(model);
    if (!q) {
      const gauge = this.o.metrics.queueDepth.labels({ model });
      q = new FairWaitQueue({
        maxDepth: this.o.queue?.maxDepth ?? 256,
        maxWaitMs: this.o.queue?.maxWaitMs ?? 30_000,
        retryAfterS: this.retryAfterS,
        ...(this.o.now ? { now: this.o.now } : {}),
        onDepth: (d) => gauge.set(d),
      });
      this.queues.set(model, q);
    }
    if (!this.queueTimer) {
      // A backstop for capacity that frees without a release here (signals, breakers closing).
      this.queueTimer = setInterval(() => this.pumpQueues(), 50);
      this.queueTimer.unref();
    }
    return q;
  }

  /** Lets one waiter of `model` through when a replica has room. */
  private grantIfRoom(model: string): void {
    const q = this.queues.get(model);
    if (!q || q.depth === 0) return;
    const route = this.snap.models.get(model);
    if (!route) return;
    // A fresh request each time: the picker may note a drawn version on it.
    if (!this.picker.saturated?.(route, { exclude: NO_EXCLUDE, allow: this.allowReplica })) {
      q.grant(1);
    }
  }

  private pumpQueues(): void {
    let waiting = false;
    for (const [model, q] of this.queues) {
      if (q.depth === 0) continue;
      waiting = true;
      this.grantIfRoom(model);
    }
    if (!waiting && this.queueTimer) {
      clearInterval(this.queueTimer);
      this.queueTimer = undefined;
    }
  }

  private pickTimed(route: RouteModel, req: PickRequest): RouteDecision | undefined {
    const t0 = process.hrtime.bigint();
    const decision = this.picker.pick(route, req);
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const policy = decision?.receipt.policy ?? policyOf(route);
    let byPolicy = this.decisions.get(route.model);
    if (!byPolicy)
      this.decisions.set(route.model, (byPolicy = new Map<string, { observe(v: number): void }>()));
    let h = byPolicy.get(policy);
    if (!h) {
      h = bindHistogram(this.o.metrics.routingDecision, { model: route.model, policy });
      byPolicy.set(policy, h);
    }
    h.observe(seconds);
    return decision;
  }

  private seriesOf(tenant: string, model: string, ep: RouteEndpoint): Series {
    let byTenant = this.series.get(ep);
    if (!byTenant) {
      byTenant = new Map();
      this.series.set(ep, byTenant);
    }
    let s = byTenant.get(tenant);
    if (!s) {
      const version = ep.version ?? 'default';
      const l = { tenant, model, version, replica: String(ep.index) };
      const m = this.o.metrics;
      s = {
        ttftByte: bindHistogram(m.ttft, { tenant, model }),
        ttft: bindHistogram(m.streamTtft, l),
        itl: bindHistogram(m.itl, l),
        e2e: bindHistogram(m.e2e, l),
        inflight: bindGauge(m.inflight, { model }),
        accessFields: accessFields(tenant, model, version, ep.index),
        promptTokens: bindCounter(m.tokens, { tenant, model, version, kind: 'prompt' }),
        completionTokens: bindCounter(m.tokens, { tenant, model, version, kind: 'completion' }),
        cachedTokens: bindCounter(m.tokens, { tenant, model, version, kind: 'cached' }),
        versionOk: bindCounter(m.versionRequests, { model, version, outcome: 'ok' }),
        versionError: bindCounter(m.versionRequests, { model, version, outcome: 'error' }),
        versionCancelled: bindCounter(m.versionRequests, { model, version, outcome: 'cancelled' }),
      };
      byTenant.set(tenant, s);
    }
    return s;
  }

  private async proxy(
    inc: Incoming,
    ctx: Ctx,
    route: RouteModel,
    key: KeyEntry,
    raw: string,
    body: InferenceBody,
  ): Promise<Outgoing> {
    const signal = inc.signal;
    const tried = new Set<string>();
    // Every field from the start: one object shape, where fields added along the way (here, and
    // by the picker) would move it through a shape per addition.
    const req: PickRequest = {
      exclude: tried,
      allow: this.allowReplica,
      prompt: undefined,
      maxTokens: undefined,
      sessionId: inc.header('x-session-id') || undefined,
      hashes: undefined,
      enginePrompt: undefined,
      version: undefined,
    };
    if (this.picker.needsPrompt?.(route)) {
      req.prompt = promptParts(body.parsed, ctx.kind);
      if (ctx.kind !== 'embeddings') req.maxTokens = completionBudgetOf(body.parsed);
    }
    const debug = inc.header('x-inferplane-debug') === 'route';
    const injected = ctx.kind === 'embeddings' ? undefined : withStreamUsage(raw, body);
    const upstreamBody = injected ?? raw;
    const stripUsage = injected !== undefined && !clientWantsStreamUsage(body);

    if (route.endpoints.length === 0) {
      throw new InferplaneError(
        'IP_NO_READY_REPLICA',
        `No ready replica for model ${route.model}; retry shortly.`,
        { retryAfterS: this.retryAfterS },
      );
    }
    // (Checked here first: an unsaturated model — the usual case — costs no extra await.)
    if (this.picker.saturated?.(route, req)) {
      await this.waitForRoom(route, key.tenantId ?? '(operator)', signal);
    }

    let upstream: UpstreamResponse | undefined;
    let decision: RouteDecision | undefined = this.pickTimed(route, req);
    let retried = false;
    for (;;) {
      if (!decision && tried.size === 0) {
        throw new InferplaneError(
          'IP_NO_READY_REPLICA',
          `Every replica of ${route.model} is failing (circuit breakers open); retry shortly.`,
          { retryAfterS: this.retryAfterS },
        );
      }
      if (!decision) {
        throw new InferplaneError(
          'IP_UPSTREAM_UNAVAILABLE',
          `No replica of ${route.model} could be reached (${tried.size} tried; the others are failing); retry shortly.`,
          { retryAfterS: this.retryAfterS },
        );
      }
      const ep = decision.endpoint;
      tried.add(ep.replicaId);
      if (!this.breakers.acquire(ep.replicaId)) {
        // A half-open replica whose single probe is already out: choose again.
        this.picker.release?.(ep.replicaId);
        decision = this.pickTimed(route, req);
        continue;
      }
      const span = ctx.trace.startUpstream(
        ctx.trace.recording
          ? {
              'inferplane.replica': ep.index,
              'inferplane.version': ep.version ?? 'default',
              'url.full': ep.url + UPSTREAM_PATH[ctx.kind],
              'inferplane.upstream.attempt': retried ? 2 : 1,
              ...receiptAttributes(decision.receipt),
            }
          : NO_ATTRIBUTES,
      );
      let headers =
        'content-type: application/json\r\n' +
        `x-request-id: ${ctx.reqId}\r\ntraceparent: ${span.traceparent}\r\n`;
      if (span.tracestate) headers += `tracestate: ${span.tracestate}\r\n`;
      try {
        upstream = await this.upstream.request(
          ep.url,
          'POST',
          UPSTREAM_PATH[ctx.kind],
          headers,
          upstreamBody,
          signal,
        );
      } catch (e) {
        this.picker.release?.(ep.replicaId);
        if (signal.aborted) {
          this.breakers.cancel(ep.replicaId);
          span.end({ error: 'client closed' });
          throw new InferplaneError('IP_CLIENT_CLOSED', 'the client closed the request');
        }
        this.breakers.onFailure(ep.replicaId);
        span.end({ error: errMessage(e) });
        this.o.metrics.upstreamErrors.inc({ model: route.model, kind: connectKind(e) });
        this.o.logger.warn(
          { reqId: ctx.reqId, model: route.model, replica: ep.index, err: errMessage(e) },
          'upstream request failed',
        );
        if (e instanceof UpstreamError && e.kind === 'headers_timeout') {
          throw new InferplaneError(
            'IP_UPSTREAM_TIMEOUT',
            `replica ${ep.index} of ${route.model} sent no response in time`,
            { cause: e },
          );
        }
        if (!isConnectError(e) || retried) throw upstreamError(e);
        // Refused or reset before anything was sent back: once more, elsewhere.
        retried = true;
        this.o.metrics.retries.inc({ model: route.model, reason: 'connect' });
        decision = this.pickTimed(route, req);
        continue;
      }
      if (upstream.status >= 500) {
        this.breakers.onFailure(ep.replicaId);
        this.o.metrics.upstreamErrors.inc({ model: route.model, kind: 'status_5xx' });
        if (!retried) {
          const next = this.pickTimed(route, req);
          if (next) {
            this.o.logger.warn(
              {
                reqId: ctx.reqId,
                model: route.model,
                replica: ep.index,
                status: upstream.status,
              },
              'upstream answered 5xx; retrying on another replica',
            );
            drain(upstream.body);
            this.picker.release?.(ep.replicaId);
            span.end({ httpStatus: upstream.status });
            this.o.metrics.retries.inc({ model: route.model, reason: 'status_5xx' });
            retried = true;
            upstream = undefined;
            decision = next;
            continue;
          }
        }
      } else {
        this.breakers.onSuccess(ep.replicaId);
      }
      // (Awaited: an async function that returns a promise settles through two more jobs.)
      return await this.respond(
        ctx,
        route,
        decision,
        upstream,
        span,
        stripUsage,
        debug,
        retried,
        signal,
      );
    }
  }

  private async respond(
    ctx: Ctx,
    route: RouteModel,
    decision: RouteDecision,
    upstream: UpstreamResponse,
    span: UpstreamTrace,
    stripUsage: boolean,
    debug: boolean,
    retried: boolean,
    signal: Cancellation,
  ): Promise<Outgoing> {
    const ep = decision.endpoint;
    const status = upstream.status;
    const contentType = upstream.headers.get('content-type') ?? 'application/json';
    const streaming = contentType.startsWith('text/event-stream');
    const series = this.seriesOf(ctx.tenant, route.model, ep);
    series.inflight.inc();
    const elapsed = (): number => Number(process.hrtime.bigint() - ctx.started) / 1e9;
    const watcher = new StreamWatcher({
      streaming,
      stripUsage,
      onFirstByte: () => {
        this.o.onServed?.(ep.replicaId);
        const s = elapsed();
        series.ttftByte.observe(s);
        if (streaming) {
          series.ttft.observe(s);
          span.event('first_token');
        }
      },
      ...(streaming ? { onGap: (s: number) => series.itl.observe(s) } : {}),
      onEnd: (outcome, usage) => {
        series.inflight.dec();
        this.picker.release?.(ep.replicaId);
        const seconds = elapsed();
        series.e2e.observe(seconds);
        if (usage) {
          series.promptTokens.inc(usage.promptTokens);
          series.completionTokens.inc(usage.completionTokens);
          if (usage.cachedTokens > 0) series.cachedTokens.inc(usage.cachedTokens);
        }
        const code = outcome === 'cancelled' ? 499 : status;
        if (outcome === 'cancelled') series.versionCancelled.inc();
        else if (outcome === 'error' || code >= 500) series.versionError.inc();
        else series.versionOk.inc();
        span.end(outcome === 'ok' ? { httpStatus: status } : { error: outcome });
        this.settle(ctx, code, usage);
        this.grantIfRoom(route.model);
        this.accessLog({
          reqId: ctx.reqId,
          fields: series.accessFields,
          status: code,
          outcome,
          retried,
          // To the microsecond: a double of 16-17 significant digits costs several times more
          // to print, and says nothing more.
          ms: Math.round(seconds * 1e6) / 1000,
          traceId: ctx.trace.traceId,
          promptTokens: usage?.promptTokens,
          completionTokens: usage?.completionTokens,
        });
      },
      onError: (e) => {
        this.breakers.onFailure(ep.replicaId);
        this.o.metrics.upstreamErrors.inc({ model: route.model, kind: 'mid_stream' });
        this.o.logger.warn(
          { reqId: ctx.reqId, model: route.model, replica: ep.index, err: errMessage(e) },
          'upstream failed mid-response',
        );
      },
    });
    const headers: Record<string, string> = {
      'content-type': contentType,
      'x-request-id': ctx.reqId,
      'x-inferplane-replica': String(ep.index),
    };
    if (ep.version !== undefined) headers['x-inferplane-version'] = ep.version;
    if (debug) headers['x-inferplane-route'] = JSON.stringify(decision.receipt);
    if (streaming) {
      headers['cache-control'] = 'no-cache';
      headers['x-accel-buffering'] = 'no';
      return { status, headers, stream: upstream.body, watcher };
    }
    // A whole answer: read it all, then send it in one write (no chunked encoding).
    const chunks: Buffer[] = [];
    let size = 0;
    try {
      const max = this.maxResponseBytes;
      const b = upstream.body;
      // Usually the body came with the head and is complete: read now, with no promise.
      let settled = false;
      let failure: Error | undefined;
      let wake: (() => void) | undefined;
      const settle = (e?: Error): void => {
        if (settled) return;
        settled = true;
        failure = e;
        wake?.();
      };
      b.read({
        data: (chunk) => {
          chunks.push(watcher.chunk(chunk));
          size += chunk.length;
          if (size > max) {
            b.destroy();
            settle(
              new InferplaneError(
                'IP_UPSTREAM_UNAVAILABLE',
                `replica ${ep.index} of ${route.model} answered more than ${max} bytes`,
              ),
            );
          }
        },
        end: () => settle(),
        error: (e) => settle(e),
      });
      if (!settled) {
        // The rest is on its way: wait for it, or for the client to go away.
        const onAbort = (): void => {
          b.destroy();
          settle(new InferplaneError('IP_CLIENT_CLOSED', 'the client closed the request'));
        };
        signal.addEventListener('abort', onAbort, { once: true });
        if (signal.aborted) onAbort();
        await new Promise<void>((resolve) => {
          if (settled) resolve();
          else wake = resolve;
        });
        signal.removeEventListener('abort', onAbort);
      }
      if (failure) throw failure;
    } catch (e) {
      if (signal.aborted) {
        watcher.cancel();
        throw new InferplaneError('IP_CLIENT_CLOSED', 'the client closed the request');
      }
      if (e instanceof InferplaneError) {
        watcher.fail(e);
        throw e;
      }
      watcher.fail(e);
      throw new InferplaneError(
        'IP_UPSTREAM_UNAVAILABLE',
        `replica ${ep.index} of ${route.model} failed while answering: ${errMessage(e)}`,
        { cause: e },
      );
    }
    watcher.finish();
    return {
      status,
      headers,
      body: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size),
    };
  }
}

/**
 * V8's allocation-site pretenuring watches which allocation sites' objects survive a scavenge and
 * allocates their later objects straight in the old generation. Under serving load it picks
 * request-scoped sites (their objects were in flight when a scavenge ran), so the old generation
 * fills with per-request garbage: scavenges of 4–7 ms and a mark-compact a second at 2,000 req/s,
 * the added p99. Without it, scavenges take 1–2.5 ms and the old generation barely grows (p99 at
 * 2,000 req/s 10.0 → 3.9 ms, CPU per request −10 %; see README, gateway overhead). Process-wide,
 * so it is set when a gateway starts serving, once.
 */
let heapTuned = false;
function tuneHeapForServing(): void {
  if (heapTuned) return;
  heapTuned = true;
  setFlagsFromString('--no-allocation-site-pretenuring');
}

const NO_ATTRIBUTES: TraceAttributes = {};

/** The decision's receipt as span attributes (the trace's copy of `x-inferplane-route`). */
function receiptAttributes(r: RouteReceipt): TraceAttributes {
  const chosen = r.scores[r.replica];
  const a: TraceAttributes = {
    'inferplane.route.policy': r.policy,
    'inferplane.route.matched_blocks': r.matchedBlocks,
    'inferplane.route.prompt_blocks': r.promptBlocks,
    'inferplane.route.decision_us': r.decisionMicros,
    'inferplane.route.scores': JSON.stringify(r.scores),
  };
  if (r.prefixSource !== undefined) a['inferplane.route.prefix_source'] = r.prefixSource;
  if (chosen !== undefined) a['inferplane.route.score'] = chosen.total;
  return a;
}

/** isSpace's characters, for strings of latin1 characters (what HTTP header values are). */
const ANY_SPACE = /\s/;

function isSpace(c: number): boolean {
  return c === 32 || (c >= 9 && c <= 13) || c === 0xa0;
}

/**
 * The token of `Bearer <token>` (scheme case-insensitive, surrounding whitespace allowed), or
 * undefined. Without a regular expression: no match array per request.
 */
export function bearerToken(header: string): string | undefined {
  if (header.length < 8) return undefined;
  // The usual form, `Bearer <token>`, with builtins (a character loop over a sliced string costs
  // ~50 instructions a character); anything else takes the general path below.
  if (header.startsWith('Bearer ')) {
    const token = header.slice(7);
    if (token.length > 0 && !ANY_SPACE.test(token)) return token;
  }
  const scheme = 'bearer';
  for (let i = 0; i < scheme.length; i++) {
    if ((header.charCodeAt(i) | 0x20) !== scheme.charCodeAt(i)) return undefined;
  }
  let i = scheme.length;
  if (!isSpace(header.charCodeAt(i))) return undefined;
  while (i < header.length && isSpace(header.charCodeAt(i))) i++;
  const start = i;
  while (i < header.length && !isSpace(header.charCodeAt(i))) i++;
  const end = i;
  while (i < header.length && isSpace(header.charCodeAt(i))) i++;
  if (end === start || i !== header.length) return undefined;
  return header.slice(start, end);
}

/** A refusal that carries response headers (x-ratelimit-* on a 429). */
class HeaderedError extends Error {
  constructor(
    readonly error: InferplaneError,
    readonly headers: Record<string, string>,
  ) {
    super(error.message);
  }
}

/** Writes an answer on the raw path. */
function writeH1(res: H1Response, out: Outgoing): void {
  if (res.destroyed) {
    if ('stream' in out) {
      out.stream.destroy();
      out.watcher.cancel();
    }
    return;
  }
  if ('stream' in out) {
    res.writeHead(out.status, out.headers);
    pipeToH1(out.stream, res, out.watcher);
    return;
  }
  res.send(out.status, out.headers, out.body);
}

/** Reads and discards a body, so its connection can be reused. */
function drain(body: UpstreamBody): void {
  body.read({ data: () => undefined, end: () => undefined, error: () => undefined });
}

/** Turns an answer into a Web Response (the Hono front door). */
function toResponse(out: Outgoing): Response {
  if ('stream' in out) {
    return new Response(relayWatched(out.stream, out.watcher), {
      status: out.status,
      headers: out.headers,
    });
  }
  return new Response(out.body, { status: out.status, headers: out.headers });
}

function errorOutgoing(err: InferplaneError, extra?: Record<string, string>): Outgoing {
  const headers: Record<string, string> = { 'content-type': 'application/json', ...extra };
  if (err.retryAfterS !== undefined) headers['retry-after'] = String(err.retryAfterS);
  return { status: err.status, headers, body: JSON.stringify(err.toOpenAI()) };
}

function tooLarge(max: number, len?: number): InferplaneError {
  return new InferplaneError(
    'IP_PAYLOAD_TOO_LARGE',
    len !== undefined
      ? `request body of ${len} bytes exceeds the limit of ${max}`
      : `request body exceeds the limit of ${max} bytes`,
  );
}

function isConnectError(e: unknown): boolean {
  return (
    e instanceof UpstreamError &&
    e.beforeResponse &&
    (e.kind === 'connect' || e.kind === 'connect_timeout' || e.kind === 'reset')
  );
}

function connectKind(e: unknown): string {
  if (e instanceof UpstreamError && e.kind === 'headers_timeout') return 'first_byte_timeout';
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
