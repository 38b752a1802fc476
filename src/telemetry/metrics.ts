// Platform metrics on one prom-client Registry per platform instance (never the global one, so
// several instances can live in one process in tests).
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

const LATENCY_BUCKETS = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120,
];

export function createMetrics(opts: { defaultMetrics?: boolean } = {}) {
  const registry = new Registry();
  if (opts.defaultMetrics ?? true)
    collectDefaultMetrics({ register: registry, prefix: 'inferplane_' });
  const labels = ['tenant', 'model', 'code'] as const;
  return {
    registry,
    requests: new Counter({
      name: 'inferplane_gateway_requests_total',
      help: 'Requests answered by the gateway, by tenant, model and HTTP status code.',
      labelNames: labels,
      registers: [registry],
    }),
    requestDuration: new Histogram({
      name: 'inferplane_gateway_request_duration_seconds',
      help: 'Time from request arrival to the last byte of the response.',
      labelNames: labels,
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    }),
    ttft: new Histogram({
      name: 'inferplane_gateway_time_to_first_byte_seconds',
      help: 'Time from request arrival to the first byte of the upstream response body (TTFT for streams).',
      labelNames: ['tenant', 'model'] as const,
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    }),
    inflight: new Gauge({
      name: 'inferplane_gateway_inflight_requests',
      help: 'Requests in flight through the gateway.',
      labelNames: ['model'] as const,
      registers: [registry],
    }),
    upstreamErrors: new Counter({
      name: 'inferplane_gateway_upstream_errors_total',
      help: 'Failures talking to an engine replica, by kind.',
      labelNames: ['model', 'kind'] as const,
      registers: [registry],
    }),
    routingDecision: new Histogram({
      name: 'inferplane_gateway_routing_decision_seconds',
      help: 'Time the endpoint picker took per decision (prefix hashing included).',
      labelNames: ['model', 'policy'] as const,
      buckets: [5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2.5e-3, 1e-2],
      registers: [registry],
    }),
    // Per-request serving latency, by tenant, model, version and replica (the replica that served).
    streamTtft: new Histogram({
      name: 'inferplane_gateway_ttft_seconds',
      help: 'Time to first token of streamed responses (request arrival to the first content chunk), by replica.',
      labelNames: ['tenant', 'model', 'version', 'replica'] as const,
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    }),
    itl: new Histogram({
      name: 'inferplane_gateway_inter_token_latency_seconds',
      help: 'Time between successive chunks of a streamed response, as relayed by the gateway.',
      labelNames: ['tenant', 'model', 'version', 'replica'] as const,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    e2e: new Histogram({
      name: 'inferplane_gateway_e2e_seconds',
      help: 'Request arrival to the last byte of a proxied response, by replica.',
      labelNames: ['tenant', 'model', 'version', 'replica'] as const,
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    }),
    // Requests answered per model version (canary gates: the error rate of one version).
    versionRequests: new Counter({
      name: 'inferplane_gateway_version_requests_total',
      help: 'Proxied requests by model, version and outcome (ok, error: status >= 500 or failed mid-response).',
      labelNames: ['model', 'version', 'outcome'] as const,
      registers: [registry],
    }),
    tokens: new Counter({
      name: 'inferplane_gateway_tokens_total',
      help: "Tokens served, from the engines' usage reports, by kind (prompt, completion, cached).",
      labelNames: ['tenant', 'model', 'version', 'kind'] as const,
      registers: [registry],
    }),
    retries: new Counter({
      name: 'inferplane_gateway_retries_total',
      help: 'Requests retried on another replica before the first byte, by reason (connect, status_5xx).',
      labelNames: ['model', 'reason'] as const,
      registers: [registry],
    }),
    routingRaces: new Counter({
      name: 'inferplane_gateway_routing_races_total',
      help: 'Picks withdrawn and made again because another gateway worker took the same replica at the same moment.',
      registers: [registry],
    }),
    breakerState: new Gauge({
      name: 'inferplane_gateway_breaker_state',
      help: 'Circuit breaker of a replica: 0 closed, 1 half-open, 2 open.',
      labelNames: ['model', 'replica'] as const,
      // Several gateway workers each report it: the most open breaker counts.
      aggregator: 'max',
      registers: [registry],
    }),
    breakerOpened: new Counter({
      name: 'inferplane_gateway_breaker_opened_total',
      help: 'Times a replica circuit breaker opened.',
      labelNames: ['model', 'replica'] as const,
      registers: [registry],
    }),
    queueDepth: new Gauge({
      name: 'inferplane_gateway_queue_depth',
      help: 'Requests waiting in the gateway for a replica with room (every replica saturated).',
      labelNames: ['model'] as const,
      registers: [registry],
    }),
    queueWait: new Histogram({
      name: 'inferplane_gateway_queue_wait_seconds',
      help: 'Time requests waited in the gateway queue, by outcome (granted, overloaded, cancelled).',
      labelNames: ['model', 'outcome'] as const,
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    }),
    rateLimited: new Counter({
      name: 'inferplane_gateway_rate_limited_total',
      help: 'Requests refused with 429 by a tenant limit (requests, tokens, concurrency).',
      labelNames: ['tenant', 'limit'] as const,
      registers: [registry],
    }),
    coldStart: new Histogram({
      name: 'inferplane_replica_cold_start_seconds',
      help: 'Replica cold start by phase: artifactFetchMs, artifactVerifyMs, engineStartMs, modelLoadMs, warmupMs, readyMs (launch to ready), firstTokenMs (ready to first byte served).',
      labelNames: ['deployment', 'phase'] as const,
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600],
      registers: [registry],
    }),
    replicaWaiting: new Gauge({
      name: 'inferplane_replica_waiting',
      help: 'Requests waiting in the engine queue, as last scraped by the gateway.',
      labelNames: ['model', 'replica'] as const,
      // Several gateway workers each read the same engine: the largest reading.
      aggregator: 'max',
      registers: [registry],
    }),
    replicaKvUtilization: new Gauge({
      name: 'inferplane_replica_kv_utilization',
      help: 'Engine KV-cache utilization (0..1), as last scraped by the gateway.',
      labelNames: ['model', 'replica'] as const,
      // Several gateway workers each read the same engine: the largest reading.
      aggregator: 'max',
      registers: [registry],
    }),
    replicaSignalAge: new Gauge({
      name: 'inferplane_replica_signal_age_seconds',
      help: 'Age of the engine signals the gateway routes on (stale beyond the limit).',
      labelNames: ['model', 'replica'] as const,
      // Several gateway workers each report it: the freshest reading.
      aggregator: 'min',
      registers: [registry],
    }),
    replicas: new Gauge({
      name: 'inferplane_replicas',
      help: 'Replicas by deployment and state.',
      labelNames: ['deployment', 'state'] as const,
      registers: [registry],
    }),
    gpuMemoryTotal: new Gauge({
      name: 'inferplane_gpu_memory_total_bytes',
      help: 'GPU memory per GPU, as reported by the node agent.',
      labelNames: ['node', 'gpu', 'type', 'vendor'] as const,
      registers: [registry],
    }),
    gatewayWorkers: new Gauge({
      name: 'inferplane_gateway_workers',
      help: 'Gateway worker processes (up --gateway-workers): live (serving) and configured.',
      labelNames: ['state'] as const,
      registers: [registry],
    }),
    gatewayWorkerRestarts: new Counter({
      name: 'inferplane_gateway_worker_restarts_total',
      help: 'Gateway worker processes that died and were replaced.',
      registers: [registry],
    }),
    gpuAllocated: new Gauge({
      name: 'inferplane_gpu_allocated',
      help: '1 when the GPU is allocated to a replica, else 0.',
      labelNames: ['node', 'gpu', 'type'] as const,
      registers: [registry],
    }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
