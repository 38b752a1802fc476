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
  /** Served model name (the `model_name` label). */
  model: string;
  engine: EngineCore;
  /** Replica index, the `engine` label (as vLLM's data-parallel engine index). Default '0'. */
  engineIndex?: string | number;
}

type L = 'model_name' | 'engine';

export class SimMetrics {
  readonly registry = new Registry();
  readonly model: string;
  readonly numRequestsRunning: Gauge<L>;
  readonly numRequestsWaiting: Gauge<L>;
  readonly kvCacheUsagePerc: Gauge<L>;
  readonly cacheConfigInfo: Gauge<string>;
  readonly prefixCacheQueriesTotal: Counter<L>;
  readonly prefixCacheHitsTotal: Counter<L>;
  readonly numPreemptionsTotal: Counter<L>;
  readonly promptTokensTotal: Counter<L>;
  readonly generationTokensTotal: Counter<L>;
  readonly requestSuccessTotal: Counter<L | 'finished_reason'>;
  readonly timeToFirstToken: Histogram<L>;
  readonly interTokenLatency: Histogram<L>;
  readonly e2eRequestLatency: Histogram<L>;
  readonly #detach: () => void;

  constructor({ model, engine, engineIndex = '0' }: SimMetricsOptions) {
    this.model = model;
    const registers = [this.registry];
    const labels = { model_name: model, engine: String(engineIndex) };
    const labelNames = ['model_name', 'engine'] as const;
    const gauge = (name: string, help: string, read: () => number): Gauge<L> =>
      new Gauge({
        name,
        help,
        labelNames,
        registers,
        collect() {
          this.set(labels, read());
        },
      });
    // Cumulative engine counters exported as Prometheus counters: set from engine.stats() on scrape.
    const counter = (name: string, help: string, read: () => number): Counter<L> =>
      new Counter({
        name,
        help,
        labelNames,
        registers,
        collect() {
          this.reset();
          this.inc(labels, read());
        },
      });
    this.numRequestsRunning = gauge(
      'vllm:num_requests_running',
      'Number of requests in model execution batches.',
      () => engine.running,
    );
    this.numRequestsWaiting = gauge(
      'vllm:num_requests_waiting',
      'Number of requests waiting to be processed.',
      () => engine.waiting,
    );
    this.kvCacheUsagePerc = gauge(
      'vllm:kv_cache_usage_perc',
      'KV-cache usage. 1 means 100 percent usage.',
      () => engine.stats().kvUsage,
    );
    const stats = engine.stats();
    this.cacheConfigInfo = new Gauge({
      name: 'vllm:cache_config_info',
      help: 'Information of the KV cache configuration.',
      labelNames: [
        'model_name',
        'engine',
        'block_size',
        'num_gpu_blocks',
        'gpu_memory_utilization',
        'enable_prefix_caching',
        'cache_dtype',
      ],
      registers,
    });
    this.cacheConfigInfo.set(
      {
        ...labels,
        block_size: String(stats.blockSize),
        num_gpu_blocks: String(stats.numGpuBlocks),
        gpu_memory_utilization: String(engine.options.gpuMemoryUtilization),
        enable_prefix_caching: engine.options.enablePrefixCaching ? 'True' : 'False',
        cache_dtype: engine.options.dtype === 'fp8' ? 'fp8' : 'auto',
      },
      1,
    );
    this.prefixCacheQueriesTotal = counter(
      'vllm:prefix_cache_queries_total',
      'Prefix cache queries, in terms of number of queried tokens.',
      () => engine.stats().prefixQueries,
    );
    this.prefixCacheHitsTotal = counter(
      'vllm:prefix_cache_hits_total',
      'Prefix cache hits, in terms of number of cached tokens.',
      () => engine.stats().prefixHits,
    );
    this.numPreemptionsTotal = counter(
      'vllm:num_preemptions_total',
      'Cumulative number of preemption from the engine.',
      () => engine.stats().preemptions,
    );
    this.promptTokensTotal = counter(
      'vllm:prompt_tokens_total',
      'Number of prefill tokens processed.',
      () => engine.stats().promptTokens,
    );
    this.generationTokensTotal = counter(
      'vllm:generation_tokens_total',
      'Number of generation tokens processed.',
      () => engine.stats().generationTokens,
    );
    this.requestSuccessTotal = new Counter({
      name: 'vllm:request_success_total',
      help: 'Count of finished requests, by finish reason.',
      labelNames: ['model_name', 'engine', 'finished_reason'] as const,
      registers,
    });
    this.timeToFirstToken = new Histogram({
      name: 'vllm:time_to_first_token_seconds',
      help: 'Histogram of time to first token in seconds.',
      labelNames,
      buckets: TTFT_BUCKETS,
      registers,
    });
    this.interTokenLatency = new Histogram({
      name: 'vllm:inter_token_latency_seconds',
      help: 'Histogram of inter-token latency in seconds.',
      labelNames,
      buckets: ITL_BUCKETS,
      registers,
    });
    this.e2eRequestLatency = new Histogram({
      name: 'vllm:e2e_request_latency_seconds',
      help: 'Histogram of end to end request latency in seconds.',
      labelNames,
      buckets: E2E_BUCKETS,
      registers,
    });

    // Make the label sets exist from the start (zero-valued series), as vLLM does.
    for (const reason of ['stop', 'length', 'abort'])
      this.requestSuccessTotal.inc({ ...labels, finished_reason: reason }, 0);

    this.#detach = engine.addListener({
      onPrefill: (ev) => {
        this.timeToFirstToken.observe(labels, ev.ttftSec);
      },
      onToken: (ev) => {
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
