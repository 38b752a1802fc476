// Request tracing for the gateway: W3C trace context (traceparent/tracestate) is always parsed and
// propagated upstream; OpenTelemetry spans are recorded and exported over OTLP/HTTP only when an
// endpoint is configured. Each instance owns its TracerProvider (never the global one), so several
// platform instances can live in one process.
//
// Disabled path (no endpoint): no SDK object is created per request; a request costs one strict
// header parse and a couple of ids cut from a pooled crypto.randomBytes buffer.
import { randomBytes } from 'node:crypto';
import {
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  TraceFlags,
  createTraceState,
  trace,
  type Span,
  type SpanContext,
  type Tracer,
} from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  BasicTracerProvider,
  BatchSpanProcessor,
  ParentBasedSampler,
  TraceIdRatioBasedSampler,
  type IdGenerator,
} from '@opentelemetry/sdk-trace-base';
import {
  ATTR_ERROR_TYPE,
  ATTR_HTTP_RESPONSE_STATUS_CODE,
  ATTR_HTTP_ROUTE,
  ATTR_SERVICE_NAME,
} from '@opentelemetry/semantic-conventions';

export type TraceAttributes = Record<string, string | number | boolean>;

export interface TracingOptions {
  /** OTLP/HTTP base URL, e.g. `http://127.0.0.1:4318` (spans go to `<url>/v1/traces`; a URL that
   * already ends in `/v1/traces` is used as is). Absent → nothing is recorded or exported. */
  otlpEndpoint?: string | undefined;
  /** `service.name` of the exported resource (default `inferplane`). */
  serviceName?: string | undefined;
  /** Fraction of new traces recorded, 0..1 (default 1). Incoming sampled flags are honoured. */
  sampleRatio?: number | undefined;
  /** Extra headers on OTLP requests (e.g. an auth token for a collector). */
  headers?: Readonly<Record<string, string>> | undefined;
  /** BatchSpanProcessor delay between exports in ms (default 1000). */
  exportDelayMs?: number | undefined;
  /** Timeout of one OTLP export in ms (default 10000). */
  exportTimeoutMs?: number | undefined;
  /** Called when the final flush fails (collector down); shutdown itself never rejects. */
  onError?: ((err: unknown) => void) | undefined;
}

export interface Tracing {
  /** Whether spans are recorded and exported (an endpoint is set). */
  readonly exporting: boolean;
  /** Starts the server span of one gateway request. `traceparent`/`tracestate` are the incoming
   * headers (undefined or malformed → a new root trace). */
  startRequest(
    name: string,
    traceparent: string | undefined,
    tracestate: string | undefined,
    attrs: TraceAttributes,
  ): RequestTrace;
  /** Flushes pending spans and stops the exporter. Idempotent; never rejects (a failed flush goes
   * to `onError`). */
  shutdown(): Promise<void>;
}

export interface RequestTrace {
  /** Whether spans are recorded (exported): attributes that cost work to build can be skipped
   * when not. */
  readonly recording: boolean;
  /** Trace id (32 lowercase hex) for logs. */
  readonly traceId: string;
  /** The gateway's server span id (16 lowercase hex). */
  readonly spanId: string;
  setAttributes(attrs: TraceAttributes): void;
  /** Child client span for one upstream attempt; its `traceparent` goes upstream. */
  startUpstream(attrs: TraceAttributes): UpstreamTrace;
  /** A point in time on the server span, e.g. `first_token`. */
  event(name: string, attrs?: TraceAttributes): void;
  /** Ends the server span: ERROR when `httpStatus >= 500` or `error` is given. Upstream spans
   * still open are ended as errors. Idempotent. */
  end(status: { httpStatus: number; error?: string | undefined }): void;
}

export interface UpstreamTrace {
  /** W3C `traceparent` to send upstream: the request's trace id, this attempt's span id, the
   * sampled flag as decided for the trace. */
  readonly traceparent: string;
  /** The incoming `tracestate`, passed through (undefined when none or the traceparent was bad). */
  readonly tracestate: string | undefined;
  event(name: string, attrs?: TraceAttributes): void;
  /** Ends the client span: ERROR when `error` is given or `httpStatus >= 400`. Idempotent. */
  end(status: { httpStatus?: number | undefined; error?: string | undefined }): void;
}

// ---------------------------------------------------------------------------------------------
// W3C trace context

export interface ParsedTraceparent {
  traceId: string;
  parentId: string;
  /** Trace flags byte (only bit 0, sampled, has a meaning in version 00). */
  flags: number;
}

const ZERO_TRACE_ID = '00000000000000000000000000000000';
const ZERO_SPAN_ID = '0000000000000000';
const TRACEPARENT_LEN = 55; // 00-<32>-<16>-<2>
const MAX_TRACESTATE_LEN = 8192;

function isLowerHex(s: string, from: number, to: number): boolean {
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    if (!((c >= 48 && c <= 57) || (c >= 97 && c <= 102))) return false;
  }
  return true;
}

/**
 * Strict W3C Trace Context `traceparent` parse. Version `00` must be exactly 55 characters;
 * a higher version (not `ff`) is parsed as version 00 for its first 55 characters, which must be
 * followed by the end of the header or `-` (forward compatibility, as the spec asks). Ids are
 * lowercase hex and must not be all zeros. Returns undefined when invalid.
 */
export function parseTraceparent(header: string | undefined): ParsedTraceparent | undefined {
  if (header === undefined) return undefined;
  const h = header.trim();
  if (h.length < TRACEPARENT_LEN) return undefined;
  if (!isLowerHex(h, 0, 2) || h[2] !== '-' || h[35] !== '-' || h[52] !== '-') return undefined;
  const version = h.slice(0, 2);
  if (version === 'ff') return undefined;
  if (version === '00') {
    if (h.length !== TRACEPARENT_LEN) return undefined;
  } else if (h.length > TRACEPARENT_LEN && h[TRACEPARENT_LEN] !== '-') {
    return undefined;
  }
  if (!isLowerHex(h, 3, 35) || !isLowerHex(h, 36, 52) || !isLowerHex(h, 53, 55)) return undefined;
  const traceId = h.slice(3, 35);
  const parentId = h.slice(36, 52);
  if (traceId === ZERO_TRACE_ID || parentId === ZERO_SPAN_ID) return undefined;
  return { traceId, parentId, flags: parseInt(h.slice(53, 55), 16) };
}

/** `00-<traceId>-<spanId>-<flags>`; only the sampled bit is kept (version 00 defines no other). */
export function formatTraceparent(traceId: string, spanId: string, sampled: boolean): string {
  return `00-${traceId}-${spanId}-${sampled ? '01' : '00'}`;
}

/** Passes `tracestate` through when it is plausible (printable ASCII, bounded); else drops it. */
function cleanTracestate(raw: string | undefined): string | undefined {
  if (raw === undefined) return undefined;
  const s = raw.trim();
  if (s.length === 0 || s.length > MAX_TRACESTATE_LEN) return undefined;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c > 0x7e) return undefined;
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// Ids: cut from a pooled crypto.randomBytes buffer, hex-encoded once per refill (one syscall
// and one encoding per 512 trace+span ids; an id is then a slice of that string).

const POOL_SIZE = 8192;
let poolHex = '';
let poolOffset = POOL_SIZE;

function randomHex(bytes: number, zero: string): string {
  for (;;) {
    if (poolOffset + bytes > POOL_SIZE) {
      poolHex = randomBytes(POOL_SIZE).toString('hex');
      poolOffset = 0;
    }
    const s = poolHex.slice(poolOffset * 2, (poolOffset + bytes) * 2);
    poolOffset += bytes;
    // All-zero ids are invalid (probability 2^-64 or less). The first character rules nearly
    // every id out without comparing it whole (a slice against a constant: a call into the runtime).
    if (s.charCodeAt(0) !== 48 || s !== zero) return s;
  }
}

/** A random 16-byte trace id, 32 lowercase hex. */
export function newTraceId(): string {
  return randomHex(16, ZERO_TRACE_ID);
}

/** A random 8-byte span id, 16 lowercase hex. */
export function newSpanId(): string {
  return randomHex(8, ZERO_SPAN_ID);
}

const pooledIdGenerator: IdGenerator = {
  generateTraceId: newTraceId,
  generateSpanId: newSpanId,
};

// ---------------------------------------------------------------------------------------------
// Disabled path: ids and propagation only.

class PropagatingRequest implements RequestTrace {
  readonly recording = false;
  readonly traceId: string;
  private span: string | undefined;
  private readonly sampled: boolean;
  private readonly tracestate: string | undefined;

  /** Made when first asked for (nothing on the serving path needs the server span's id). */
  get spanId(): string {
    return (this.span ??= newSpanId());
  }

  constructor(traceparent: string | undefined, tracestate: string | undefined) {
    const parent = parseTraceparent(traceparent);
    if (parent) {
      this.traceId = parent.traceId;
      this.sampled = (parent.flags & 1) === 1;
      this.tracestate = cleanTracestate(tracestate);
    } else {
      // Nothing is recorded here, so a trace we start is not marked sampled.
      this.traceId = newTraceId();
      this.sampled = false;
      this.tracestate = undefined;
    }
  }

  setAttributes(): void {}
  event(): void {}
  end(): void {}

  startUpstream(): UpstreamTrace {
    return {
      traceparent: formatTraceparent(this.traceId, newSpanId(), this.sampled),
      tracestate: this.tracestate,
      event: noop,
      end: noop,
    };
  }
}

function noop(): void {}

// ---------------------------------------------------------------------------------------------
// Exporting path: OpenTelemetry SDK spans.

function isServerError(status: { httpStatus: number; error?: string | undefined }): boolean {
  return status.error !== undefined || status.httpStatus >= 500 || status.httpStatus <= 0;
}

class SpanUpstream implements UpstreamTrace {
  readonly traceparent: string;
  private ended = false;

  constructor(
    private readonly span: Span,
    readonly tracestate: string | undefined,
    private readonly owner: SpanRequest,
  ) {
    const sc = span.spanContext();
    this.traceparent = formatTraceparent(sc.traceId, sc.spanId, (sc.traceFlags & 1) === 1);
  }

  event(name: string, attrs?: TraceAttributes): void {
    if (!this.ended) this.span.addEvent(name, attrs);
  }

  end(status: { httpStatus?: number | undefined; error?: string | undefined }): void {
    if (this.ended) return;
    this.ended = true;
    this.owner.forget(this);
    if (status.httpStatus !== undefined)
      this.span.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, status.httpStatus);
    const failed =
      status.error !== undefined || status.httpStatus === undefined || status.httpStatus >= 400;
    if (failed) {
      const message = status.error ?? `HTTP ${status.httpStatus ?? 'no response'}`;
      this.span.setAttribute(ATTR_ERROR_TYPE, status.error ?? String(status.httpStatus ?? 'error'));
      this.span.setStatus({ code: SpanStatusCode.ERROR, message });
    }
    this.span.end();
  }
}

class SpanRequest implements RequestTrace {
  readonly recording = true;
  readonly traceId: string;
  readonly spanId: string;
  private readonly open = new Set<SpanUpstream>();
  private attempts = 0;
  private ended = false;

  constructor(
    private readonly tracer: Tracer,
    private readonly route: string,
    private readonly span: Span,
    private readonly tracestate: string | undefined,
  ) {
    const sc = span.spanContext();
    this.traceId = sc.traceId;
    this.spanId = sc.spanId;
  }

  setAttributes(attrs: TraceAttributes): void {
    if (!this.ended) this.span.setAttributes(attrs);
  }

  event(name: string, attrs?: TraceAttributes): void {
    if (!this.ended) this.span.addEvent(name, attrs);
  }

  startUpstream(attrs: TraceAttributes): UpstreamTrace {
    this.attempts++;
    const span = this.tracer.startSpan(
      `upstream ${this.route}`,
      {
        kind: SpanKind.CLIENT,
        attributes: { 'inferplane.upstream.attempt': this.attempts, ...attrs },
      },
      trace.setSpan(ROOT_CONTEXT, this.span),
    );
    const up = new SpanUpstream(span, this.tracestate, this);
    if (!this.ended && span.isRecording()) this.open.add(up);
    return up;
  }

  forget(up: SpanUpstream): void {
    this.open.delete(up);
  }

  end(status: { httpStatus: number; error?: string | undefined }): void {
    if (this.ended) return;
    this.ended = true;
    for (const up of [...this.open]) up.end({ error: 'request ended before the upstream attempt' });
    this.span.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, status.httpStatus);
    if (this.attempts > 0) this.span.setAttribute('inferplane.upstream.attempts', this.attempts);
    if (isServerError(status)) {
      const message = status.error ?? `HTTP ${status.httpStatus}`;
      this.span.setAttribute(ATTR_ERROR_TYPE, status.error ?? String(status.httpStatus));
      this.span.setStatus({ code: SpanStatusCode.ERROR, message });
    }
    this.span.end();
  }
}

function tracesUrl(endpoint: string): string {
  const base = endpoint.replace(/\/+$/, '');
  return base.endsWith('/v1/traces') ? base : `${base}/v1/traces`;
}

function createExportingTracing(
  endpoint: string,
  opts: TracingOptions,
  instrumentationVersion: string | undefined,
): Tracing {
  const ratio = Math.min(1, Math.max(0, opts.sampleRatio ?? 1));
  const exporter = new OTLPTraceExporter({
    url: tracesUrl(endpoint),
    headers: { ...(opts.headers ?? {}) },
    timeoutMillis: opts.exportTimeoutMs ?? 10_000,
  });
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: opts.serviceName ?? 'inferplane' }),
    sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(ratio) }),
    idGenerator: pooledIdGenerator,
    spanProcessors: [
      new BatchSpanProcessor(exporter, {
        scheduledDelayMillis: opts.exportDelayMs ?? 1000,
        exportTimeoutMillis: opts.exportTimeoutMs ?? 10_000,
        maxQueueSize: 4096,
        maxExportBatchSize: 512,
      }),
    ],
  });
  const tracer = provider.getTracer('inferplane-gateway', instrumentationVersion);
  let shutdown: Promise<void> | undefined;

  return {
    exporting: true,
    startRequest(name, traceparent, tracestate, attrs) {
      const parent = parseTraceparent(traceparent);
      const state = parent ? cleanTracestate(tracestate) : undefined;
      let ctx = ROOT_CONTEXT;
      if (parent) {
        const sc: SpanContext = {
          traceId: parent.traceId,
          spanId: parent.parentId,
          traceFlags: parent.flags & TraceFlags.SAMPLED,
          isRemote: true,
          ...(state !== undefined ? { traceState: createTraceState(state) } : {}),
        };
        ctx = trace.setSpanContext(ROOT_CONTEXT, sc);
      }
      const span = tracer.startSpan(
        `gateway ${name}`,
        { kind: SpanKind.SERVER, attributes: { [ATTR_HTTP_ROUTE]: name, ...attrs } },
        ctx,
      );
      return new SpanRequest(tracer, name, span, state);
    },
    shutdown() {
      shutdown ??= provider.shutdown().catch((err: unknown) => opts.onError?.(err));
      return shutdown;
    },
  };
}

/**
 * Tracing for one platform instance. With `otlpEndpoint`, spans are recorded by a private
 * TracerProvider and exported in batches over OTLP/HTTP (JSON); without it, only W3C trace
 * context is propagated.
 */
export function createTracing(opts: TracingOptions = {}, version?: string): Tracing {
  const endpoint = opts.otlpEndpoint?.trim();
  if (endpoint) return createExportingTracing(endpoint, opts, version);
  return {
    exporting: false,
    startRequest(_name, traceparent, tracestate) {
      return new PropagatingRequest(traceparent, tracestate);
    },
    shutdown() {
      return Promise.resolve();
    },
  };
}
