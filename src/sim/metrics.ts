/**
 * Prometheus metrics of one simulated server, with vLLM's metric names and a `model_name` label,
 * so dashboards and autoscalers written for vLLM work unchanged.
 *
 * Each instance owns its own prom-client `Registry` (never the global default one): several
 * simulated servers may live in one process. Timings are in simulated seconds.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { EngineCore } from './engine.js';

// Bucket boundaries as in vLLM's own metrics.
const TTFT_BUCKETS = [
  0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
  40.0, 80.0, 160.0, 640.0, 2560.0,
];
const ITL_BUCKETS = [
  0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
  40.0, 80.0,
];
const E2E_BUCKETS = [
  0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
  480.0, 960.0, 1920.0, 7680.0,
];

export interface SimMetricsOptions {
  model: string;
  engine: EngineCore;
}

export class SimMetrics {
  readonly registry = new Registry();
  readonly model: string;
  readonly numRequestsRunning: Gauge<'model_name'>;
  readonly numRequestsWaiting: Gauge<'model_name'>;
  readonly kvCacheUsagePerc: Gauge<'model_name'>;
  readonly promptTokensTotal: Counter<'model_name'>;
  readonly generationTokensTotal: Counter<'model_name'>;
  readonly requestSuccessTotal: Counter<'model_name' | 'finished_reason'>;
  readonly timeToFirstToken: Histogram<'model_name'>;
  readonly interTokenLatency: Histogram<'model_name'>;
  readonly e2eRequestLatency: Histogram<'model_name'>;
  readonly #detach: () => void;

  constructor({ model, engine }: SimMetricsOptions) {
    this.model = model;
    const registers = [this.registry];
    const labels = { model_name: model };
    this.numRequestsRunning = new Gauge({
      name: 'vllm:num_requests_running',
      help: 'Number of requests in model execution batches.',
      labelNames: ['model_name'] as const,
      registers,
      collect() {
        this.set(labels, engine.running);
      },
    });
    this.numRequestsWaiting = new Gauge({
      name: 'vllm:num_requests_waiting',
      help: 'Number of requests waiting to be processed.',
      labelNames: ['model_name'] as const,
      registers,
      collect() {
        this.set(labels, engine.waiting);
      },
    });
    this.kvCacheUsagePerc = new Gauge({
      name: 'vllm:kv_cache_usage_perc',
      help: 'KV-cache usage. 1 means 100 percent usage (not simulated yet: always 0).',
      labelNames: ['model_name'] as const,
      registers,
      collect() {
        this.set(labels, 0);
      },
    });
    this.promptTokensTotal = new Counter({
      name: 'vllm:prompt_tokens_total',
      help: 'Number of prefill tokens processed.',
      labelNames: ['model_name'] as const,
      registers,
    });
    this.generationTokensTotal = new Counter({
      name: 'vllm:generation_tokens_total',
      help: 'Number of generation tokens processed.',
      labelNames: ['model_name'] as const,
      registers,
    });
    this.requestSuccessTotal = new Counter({
      name: 'vllm:request_success_total',
      help: 'Count of finished requests, by finish reason.',
      labelNames: ['model_name', 'finished_reason'] as const,
      registers,
    });
    this.timeToFirstToken = new Histogram({
      name: 'vllm:time_to_first_token_seconds',
      help: 'Histogram of time to first token in seconds.',
      labelNames: ['model_name'] as const,
      buckets: TTFT_BUCKETS,
      registers,
    });
    this.interTokenLatency = new Histogram({
      name: 'vllm:inter_token_latency_seconds',
      help: 'Histogram of inter-token latency in seconds.',
      labelNames: ['model_name'] as const,
      buckets: ITL_BUCKETS,
      registers,
    });
    this.e2eRequestLatency = new Histogram({
      name: 'vllm:e2e_request_latency_seconds',
      help: 'Histogram of end to end request latency in seconds.',
      labelNames: ['model_name'] as const,
      buckets: E2E_BUCKETS,
      registers,
    });

    // Make the label sets exist from the start (zero-valued series), as vLLM does.
    this.promptTokensTotal.inc(labels, 0);
    this.generationTokensTotal.inc(labels, 0);
    for (const reason of ['stop', 'length', 'abort'])
      this.requestSuccessTotal.inc({ ...labels, finished_reason: reason }, 0);

    this.#detach = engine.addListener({
      onPrefill: (ev) => {
        this.promptTokensTotal.inc(labels, ev.promptTokens);
        this.timeToFirstToken.observe(labels, ev.ttftSec);
      },
      onToken: (ev) => {
        this.generationTokensTotal.inc(labels, 1);
        if (ev.sincePrevSec !== null) this.interTokenLatency.observe(labels, ev.sincePrevSec);
      },
      onFinish: (ev) => {
        this.requestSuccessTotal.inc({ ...labels, finished_reason: ev.finishReason }, 1);
        if (ev.finishReason !== 'abort') this.e2eRequestLatency.observe(labels, ev.e2eSec);
      },
    });
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The Prometheus text exposition of this server's metrics. */
  metrics(): Promise<string> {
    return this.registry.metrics();
  }

  /** Stops listening to the engine. */
  detach(): void {
    this.#detach();
  }
}
