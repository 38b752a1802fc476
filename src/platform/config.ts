// `inferplane up` options → defaults → validated, frozen config, in one place.
import { resolve } from 'node:path';
import { z } from 'zod';
import { InferplaneError } from '../core/errors.js';
import { parseOrThrow } from '../core/schemas.js';

/** Request tracing (W3C trace context always; OTLP export when `otlpEndpoint` is set). */
export const TracingConfigSchema = z.strictObject({
  /** OTLP/HTTP base URL, e.g. `http://127.0.0.1:4318` (spans go to `/v1/traces`). */
  otlpEndpoint: z.url({ protocol: /^https?$/ }).optional(),
  serviceName: z.string().min(1).default('inferplane'),
  /** Fraction of new traces recorded (incoming sampled flags are honoured). */
  sampleRatio: z.number().min(0).max(1).default(1),
  headers: z.record(z.string(), z.string()).optional(),
});

export const UpOptionsSchema = z.strictObject({
  port: z.int().min(0).max(65535).default(8080),
  host: z.string().min(1).default('127.0.0.1'),
  stateDir: z.string().min(1).default('.inferplane'),
  gpus: z.int().min(0).max(1024).default(8),
  gpuType: z.string().default('H100-80GB'),
  /** The node agent: simulated GPUs (`gpus` × `gpuType`), or the real ones read with nvidia-smi. */
  agent: z.enum(['sim', 'nvidia']).default('sim'),
  /** Real GPUs only: replicas that may share one GPU (each is offered as this many slots). */
  gpuSharing: z.int().min(1).max(64).default(1),
  /** Real GPUs only: how often nvidia-smi is read for telemetry. */
  telemetryIntervalMs: z.int().min(100).max(3_600_000).default(5000),
  nodeName: z.string().min(1).optional(),
  demo: z.boolean().default(true),
  adminKey: z.string().min(16).optional(),
  rotateAdminKey: z.boolean().default(false),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** How often the gateway scrapes each replica's engine metrics for routing (ms). */
  signalIntervalMs: z.int().min(10).max(60_000).default(100),
  /** Engine signals older than this make a replica count as saturated (ms). */
  signalStaleMs: z.int().min(100).max(600_000).default(2000),
  /**
   * Gateway processes serving the port (node:cluster workers). 1: the gateway runs in the
   * platform's own process. More: each worker runs the data plane; tenant limits are split between
   * them by demand, metrics are summed.
   */
  gatewayWorkers: z.int().min(1).max(64).default(1),
  /** How often gateway workers report tenant demand and get their limit shares back (ms). */
  limitShareIntervalMs: z.int().min(10).max(10_000).default(100),
  /** Seconds `up` waits for the demo replicas before printing the ready banner. */
  readyTimeoutS: z.number().positive().default(60),
  tracing: TracingConfigSchema.prefault({}),
});

export type UpOptions = z.input<typeof UpOptionsSchema>;
export type PlatformConfig = Readonly<z.infer<typeof UpOptionsSchema> & { stateDir: string }>;

export function resolveConfig(opts: UpOptions): PlatformConfig {
  const parsed = parseOrThrow(UpOptionsSchema, opts, 'options');
  if (parsed.signalStaleMs <= 2 * parsed.signalIntervalMs) {
    throw new InferplaneError(
      'IP_VALIDATION',
      `the signal staleness limit (signalStaleMs, --signal-stale-ms: ${parsed.signalStaleMs} ms) must exceed two scrape intervals (signalIntervalMs, --signal-interval-ms: 2 × ${parsed.signalIntervalMs} ms): one late scrape must not make every replica stale`,
      { details: [{ path: 'signalStaleMs', message: 'too small for signalIntervalMs' }] },
    );
  }
  const tracing = Object.freeze({
    ...parsed.tracing,
    ...(parsed.tracing.headers ? { headers: Object.freeze({ ...parsed.tracing.headers }) } : {}),
  });
  return Object.freeze({ ...parsed, stateDir: resolve(parsed.stateDir), tracing });
}

/**
 * Tracing options from the standard OpenTelemetry environment variables:
 * `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is) or `OTEL_EXPORTER_OTLP_ENDPOINT` (base URL),
 * `OTEL_EXPORTER_OTLP_HEADERS` / `OTEL_EXPORTER_OTLP_TRACES_HEADERS` (`k=v,k2=v2`, values
 * URL-encoded), `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER` (`always_on`, `always_off`,
 * `traceidratio`, `parentbased_*`), `OTEL_TRACES_SAMPLER_ARG` (ratio) and `OTEL_SDK_DISABLED`.
 * Flags given to `up` override these.
 */
export function tracingFromEnv(
  env: Readonly<Record<string, string | undefined>>,
): z.input<typeof TracingConfigSchema> {
  const out: z.input<typeof TracingConfigSchema> = {};
  const endpoint = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || env.OTEL_EXPORTER_OTLP_ENDPOINT;
  if (endpoint && env.OTEL_SDK_DISABLED?.trim().toLowerCase() !== 'true')
    out.otlpEndpoint = endpoint.trim();
  if (env.OTEL_SERVICE_NAME?.trim()) out.serviceName = env.OTEL_SERVICE_NAME.trim();
  const sampler = env.OTEL_TRACES_SAMPLER?.trim().toLowerCase();
  const arg = env.OTEL_TRACES_SAMPLER_ARG?.trim();
  if (sampler === 'always_off' || sampler === 'parentbased_always_off') out.sampleRatio = 0;
  else if (sampler === 'always_on' || sampler === 'parentbased_always_on') out.sampleRatio = 1;
  else if (arg && (sampler === undefined || sampler.endsWith('traceidratio')))
    out.sampleRatio = Number(arg); // validated (0..1) by the schema
  const headers: Record<string, string> = {};
  for (const raw of [env.OTEL_EXPORTER_OTLP_HEADERS, env.OTEL_EXPORTER_OTLP_TRACES_HEADERS]) {
    for (const pair of raw?.split(',') ?? []) {
      const eq = pair.indexOf('=');
      if (eq <= 0) continue;
      const key = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      try {
        if (key) headers[key] = decodeURIComponent(value);
      } catch {
        if (key) headers[key] = value;
      }
    }
  }
  if (Object.keys(headers).length > 0) out.headers = headers;
  return out;
}
