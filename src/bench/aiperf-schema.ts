/**
 * Zod schemas of AIPerf's export files, written from AIPerf's documentation and export models
 * (github.com/ai-dynamo/aiperf — docs/tutorials/working-with-profile-exports.md;
 * aiperf/common/models/record_models.py: MetricRecordInfo, MetricRecordMetadata, MetricValue;
 * error_models.py: ErrorDetails; export_models.py: JsonMetricResult and the JSON export). Our
 * exports are validated against them so tools that read AIPerf's files read ours.
 */
import { z } from 'zod';

/** ErrorDetails: HTTP status (or custom code), error class name, message. */
export const errorDetailsSchema = z.object({
  code: z.number().int().nullable(),
  type: z.string().nullable(),
  message: z.string(),
});

/** MetricValue: a scalar or a list, with its unit. */
export const metricValueSchema = z.object({
  value: z.union([z.number(), z.array(z.number())]),
  unit: z.string(),
});

/** Epoch nanoseconds: integers beyond 2^53 (zod's int() is limited to safe integers). */
const epochNs = z.number().refine(Number.isInteger, 'expected an integer number of ns');

/** MetricRecordMetadata of one request. */
export const metricRecordMetadataSchema = z.looseObject({
  session_num: z.number().int().nonnegative(),
  x_request_id: z.string().nullable(),
  x_correlation_id: z.string().nullable(),
  conversation_id: z.string().nullable(),
  turn_index: z.number().int().nonnegative(),
  request_start_ns: epochNs,
  request_ack_ns: epochNs.nullable(),
  request_end_ns: epochNs,
  worker_id: z.string(),
  record_processor_id: z.string(),
  benchmark_phase: z.enum(['warmup', 'profiling']),
  was_cancelled: z.boolean(),
  cancellation_time_ns: epochNs.nullable(),
});

/** MetricRecordInfo: one line of profile_export.jsonl. */
export const metricRecordInfoSchema = z.looseObject({
  metadata: metricRecordMetadataSchema,
  metrics: z.record(z.string(), metricValueSchema),
  error: errorDetailsSchema.nullable(),
});

const stat = z.number().nullable().optional();

/** JsonMetricResult: a metric's statistics in profile_export_aiperf.json. */
export const jsonMetricResultSchema = z.object({
  unit: z.string(),
  avg: stat,
  p1: stat,
  p5: stat,
  p10: stat,
  p25: stat,
  p50: stat,
  p75: stat,
  p90: stat,
  p95: stat,
  p99: stat,
  min: stat,
  max: stat,
  std: stat,
  count: z.number().int().nullable().optional(),
  sum: stat,
});

const optMetric = jsonMetricResultSchema.nullable().optional();

/** profile_export_aiperf.json (metric tags at the top level, then status, errors and config). */
export const profileExportJsonSchema = z.looseObject({
  request_throughput: jsonMetricResultSchema,
  request_count: jsonMetricResultSchema,
  benchmark_duration: jsonMetricResultSchema,
  request_latency: optMetric,
  time_to_first_token: optMetric,
  time_to_second_token: optMetric,
  inter_token_latency: optMetric,
  inter_chunk_latency: optMetric,
  output_token_throughput: optMetric,
  output_token_throughput_per_user: optMetric,
  output_sequence_length: optMetric,
  input_sequence_length: optMetric,
  total_isl: optMetric,
  total_osl: optMetric,
  goodput: optMetric,
  good_request_count: optMetric,
  error_request_count: optMetric,
  was_cancelled: z.boolean(),
  start_time: z.string(),
  end_time: z.string(),
  error_summary: z.array(z.object({ error_details: errorDetailsSchema, count: z.number().int() })),
  input_config: z.looseObject({
    endpoint: z.looseObject({
      model_names: z.array(z.string()),
      type: z.string(),
      streaming: z.boolean(),
      url: z.string(),
    }),
    input: z.looseObject({}).optional(),
    loadgen: z.looseObject({}).optional(),
    cli_command: z.string().optional(),
  }),
});

export type ProfileExportJson = z.infer<typeof profileExportJsonSchema>;
export type MetricRecordInfo = z.infer<typeof metricRecordInfoSchema>;
export type JsonMetricResult = z.infer<typeof jsonMetricResultSchema>;
