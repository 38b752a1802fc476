/**
 * Types shared by the benchmark (`inferplane bench`): one record per request with raw timings, the
 * derived per-request metrics and the run-level summary. Times are nanoseconds on the monotonic
 * clock of {@link ./clock.ts} (plain numbers: exact integers for ~104 days of process uptime).
 */

/** Error of a failed request, as AIPerf's ErrorDetails. */
export interface ErrorDetails {
  /** HTTP status, or 499 for a client cancellation, or null for a transport error. */
  code: number | null;
  type: string;
  message: string;
}

export type BenchmarkPhase = 'warmup' | 'profiling';

/** Raw timings and counts of one request (what the client saw). */
export interface RequestRecord {
  /** Sequential request number (0-based) within its phase. */
  sessionNum: number;
  /** Sent as X-Request-ID. */
  requestId: string;
  /** Same for every turn of a multi-turn session (X-Correlation-ID). */
  correlationId: string;
  /** Workload conversation the request came from. */
  conversationId: string;
  turnIndex: number;
  phase: BenchmarkPhase;
  /** When the scheduler meant to send it (open loop / trace replay), else null. */
  intendedNs: number | null;
  /** Just before the request was sent. */
  startNs: number;
  /** Response headers received, or null. */
  ackNs: number | null;
  /** Last byte of the response (or the error / cancellation). */
  endNs: number;
  /** Arrival time of every streamed chunk with non-empty content (or the one non-streaming answer). */
  chunkNs: number[];
  /** Whether the response was streamed. */
  streaming: boolean;
  /** Server-reported token counts, when the answer carried `usage`. */
  usagePromptTokens: number | null;
  usageCompletionTokens: number | null;
  /** Cached prompt tokens reported by the server (usage.prompt_tokens_details.cached_tokens). */
  usageCachedTokens: number | null;
  /** Prompt token count by the client tokenizer (fallback for ISL). */
  clientInputTokens: number;
  /** Generated text (for the client-tokenizer OSL fallback and multi-turn history). */
  outputText: string;
  cancelled: boolean;
  cancellationNs: number | null;
  error: ErrorDetails | null;
  /** Which replica served it, when an Inferplane gateway said so (`x-inferplane-replica`). */
  servedBy?: string;
}

/** Per-request metrics derived from a record (ms, tokens, tokens/s/user). Absent = not defined. */
export interface RequestMetrics {
  time_to_first_token?: number;
  time_to_second_token?: number;
  request_latency?: number;
  inter_token_latency?: number;
  inter_chunk_latency?: number[];
  output_sequence_length?: number;
  input_sequence_length?: number;
  output_token_throughput_per_user?: number;
}

/** Statistics of one metric (AIPerf's JsonMetricResult). */
export interface MetricStats {
  unit: string;
  avg: number;
  min: number;
  max: number;
  std: number;
  p1: number;
  p5: number;
  p10: number;
  p25: number;
  p50: number;
  p75: number;
  p90: number;
  p95: number;
  p99: number;
  count: number;
  sum: number;
}

/** A single-valued run metric, written as `{unit, avg}` like AIPerf. */
export interface ScalarMetric {
  unit: string;
  avg: number;
}

/** `--goodput` thresholds: metric tag → threshold (ms for latencies, tokens/s for throughput). */
export type GoodputSlos = Record<string, number>;

export interface RunSummary {
  /** Per-request metric tag → statistics (only metrics with at least one value). */
  metrics: Record<string, MetricStats>;
  benchmarkDurationSec: number;
  requestCount: number;
  errorCount: number;
  requestThroughput: number;
  outputTokenThroughput: number;
  totalTokenThroughput: number;
  totalIsl: number;
  totalOsl: number;
  /** Null when no SLOs were given. */
  goodput: number | null;
  goodRequestCount: number | null;
  goodFraction: number | null;
  /** Scheduling error (actual − intended send time, ms) where sends were scheduled. */
  sendLag: MetricStats | null;
  /** Errors grouped by (code, type, message). */
  errorSummary: { error_details: ErrorDetails; count: number }[];
}
