/**
 * Benchmark metrics, defined as AIPerf defines them (see shared/reference/metrics-definitions.md):
 * per-request TTFT, TTST, latency, ITL, ICL, ISL/OSL and per-user throughput from chunk arrival
 * times; run-level duration, throughputs and goodput; and numpy-style statistics.
 */
import { countTokens } from '../sim/tokenizer.js';
import type {
  ErrorDetails,
  GoodputSlos,
  MetricStats,
  RequestMetrics,
  RequestRecord,
  RunSummary,
} from './types.js';

const NS_PER_MS = 1e6;

/** Percentile with linear interpolation between closest ranks (numpy's default), on sorted data. */
export function percentileSorted(sorted: ArrayLike<number>, p: number): number {
  const n = sorted.length;
  if (n === 0) return Number.NaN;
  if (n === 1) return sorted[0] as number;
  const idx = (p / 100) * (n - 1);
  const lo = Math.floor(idx);
  const hi = Math.min(lo + 1, n - 1);
  const a = sorted[lo] as number;
  const b = sorted[hi] as number;
  return a + (b - a) * (idx - lo);
}

export const PERCENTILES = [1, 5, 10, 25, 50, 75, 90, 95, 99] as const;

/** avg, min, max, population std, p1…p99, count and sum of values (which must be non-empty). */
export function computeStats(values: readonly number[], unit: string): MetricStats {
  const sorted = Float64Array.from(values).sort();
  const n = sorted.length;
  let sum = 0;
  for (let i = 0; i < n; i++) sum += sorted[i] as number;
  const avg = n > 0 ? sum / n : Number.NaN;
  let sq = 0;
  for (let i = 0; i < n; i++) {
    const d = (sorted[i] as number) - avg;
    sq += d * d;
  }
  return {
    unit,
    avg,
    min: n > 0 ? (sorted[0] as number) : Number.NaN,
    max: n > 0 ? (sorted[n - 1] as number) : Number.NaN,
    std: n > 0 ? Math.sqrt(sq / n) : Number.NaN,
    p1: percentileSorted(sorted, 1),
    p5: percentileSorted(sorted, 5),
    p10: percentileSorted(sorted, 10),
    p25: percentileSorted(sorted, 25),
    p50: percentileSorted(sorted, 50),
    p75: percentileSorted(sorted, 75),
    p90: percentileSorted(sorted, 90),
    p95: percentileSorted(sorted, 95),
    p99: percentileSorted(sorted, 99),
    count: n,
    sum,
  };
}

/** Unit of each per-request metric tag. */
export const METRIC_UNITS: Record<keyof RequestMetrics, string> = {
  time_to_first_token: 'ms',
  time_to_second_token: 'ms',
  request_latency: 'ms',
  inter_token_latency: 'ms',
  inter_chunk_latency: 'ms',
  output_sequence_length: 'tokens',
  input_sequence_length: 'tokens',
  output_token_throughput_per_user: 'tokens/sec/user',
};

/** Human-readable names (CSV and console), as AIPerf prints them. */
export const METRIC_HEADERS: Record<string, string> = {
  time_to_first_token: 'Time to First Token',
  time_to_second_token: 'Time to Second Token',
  request_latency: 'Request Latency',
  inter_token_latency: 'Inter Token Latency',
  inter_chunk_latency: 'Inter Chunk Latency',
  output_sequence_length: 'Output Sequence Length',
  input_sequence_length: 'Input Sequence Length',
  output_token_throughput_per_user: 'Output Token Throughput Per User',
  request_throughput: 'Request Throughput',
  output_token_throughput: 'Output Token Throughput',
  total_token_throughput: 'Total Token Throughput',
  request_count: 'Request Count',
  benchmark_duration: 'Benchmark Duration',
  total_isl: 'Total ISL',
  total_osl: 'Total OSL',
  goodput: 'Goodput',
  good_request_count: 'Good Request Count',
  error_request_count: 'Error Request Count',
  send_lag: 'Send Timing Error',
};

/** Order of per-request metrics in tables and exports. */
export const RECORD_METRIC_ORDER: readonly (keyof RequestMetrics)[] = [
  'time_to_first_token',
  'time_to_second_token',
  'request_latency',
  'inter_token_latency',
  'inter_chunk_latency',
  'output_token_throughput_per_user',
  'output_sequence_length',
  'input_sequence_length',
];

/** OSL: server usage when present, else the client tokenizer on the generated text. */
export function outputTokens(r: RequestRecord): number {
  return r.usageCompletionTokens ?? countTokens(r.outputText);
}

/** ISL: server usage when present, else the client tokenizer count of the prompt. */
export function inputTokens(r: RequestRecord): number {
  return r.usagePromptTokens ?? r.clientInputTokens;
}

/** Metrics of one successful request. Failed requests have none (AIPerf: error records only). */
export function requestMetrics(r: RequestRecord): RequestMetrics {
  const m: RequestMetrics = {};
  if (r.error !== null) return m;
  const c = r.chunkNs;
  const osl = outputTokens(r);
  m.input_sequence_length = inputTokens(r);
  m.output_sequence_length = osl;
  if (!r.streaming || c.length === 0) {
    m.request_latency = (r.endNs - r.startNs) / NS_PER_MS;
    return m;
  }
  const first = c[0] as number;
  const last = c[c.length - 1] as number;
  const ttft = (first - r.startNs) / NS_PER_MS;
  const latency = (last - r.startNs) / NS_PER_MS;
  m.time_to_first_token = ttft;
  if (c.length >= 2) m.time_to_second_token = ((c[1] as number) - first) / NS_PER_MS;
  m.request_latency = latency;
  if (osl >= 2) {
    const itl = (latency - ttft) / (osl - 1);
    m.inter_token_latency = itl;
    if (itl > 0) m.output_token_throughput_per_user = 1000 / itl;
  }
  if (c.length >= 2) {
    const icl = new Array<number>(c.length - 1);
    for (let i = 1; i < c.length; i++)
      icl[i - 1] = ((c[i] as number) - (c[i - 1] as number)) / NS_PER_MS;
    m.inter_chunk_latency = icl;
  }
  return m;
}

/** Metrics where a higher value is better (an SLO is a floor, not a ceiling). */
const HIGHER_IS_BETTER = new Set(['output_token_throughput_per_user']);

/** Whether a request meets every SLO (a missing value fails). */
export function meetsSlos(m: RequestMetrics, slos: GoodputSlos): boolean {
  for (const [tag, threshold] of Object.entries(slos)) {
    const v = (m as Record<string, unknown>)[tag];
    if (typeof v !== 'number' || !Number.isFinite(v)) return false;
    if (HIGHER_IS_BETTER.has(tag) ? v < threshold : v > threshold) return false;
  }
  return true;
}

/** Parses `--goodput "time_to_first_token:500 inter_token_latency:50"` (space or comma separated). */
export function parseGoodput(spec: string): GoodputSlos {
  const out: GoodputSlos = {};
  for (const part of spec.split(/[\s,]+/).filter((s) => s.length > 0)) {
    const m = /^([a-z_]+)[:=]([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)$/i.exec(part);
    if (!m)
      throw new Error(
        `bad goodput SLO '${part}' (expected tag:value, e.g. time_to_first_token:500)`,
      );
    const tag = m[1] as string;
    if (!(tag in METRIC_UNITS) || tag === 'inter_chunk_latency')
      throw new Error(`unknown goodput metric '${tag}'`);
    out[tag] = Number(m[2]);
  }
  return out;
}

function errorKey(e: ErrorDetails): string {
  return `${e.code ?? ''}\u0000${e.type}\u0000${e.message}`;
}

/** Run-level summary of the profiling records. */
export function summarize(records: readonly RequestRecord[], slos?: GoodputSlos): RunSummary {
  const prof = records.filter((r) => r.phase === 'profiling');
  const values = new Map<string, number[]>();
  const push = (tag: string, v: number) => {
    let a = values.get(tag);
    if (!a) values.set(tag, (a = []));
    a.push(v);
  };
  let firstSend = Number.POSITIVE_INFINITY;
  let lastResponse = Number.NEGATIVE_INFINITY;
  let totalIsl = 0;
  let totalOsl = 0;
  let valid = 0;
  let good = 0;
  const lags: number[] = [];
  const errors = new Map<string, { error_details: ErrorDetails; count: number }>();
  for (const r of prof) {
    if (r.startNs < firstSend) firstSend = r.startNs;
    if (r.endNs > lastResponse) lastResponse = r.endNs;
    if (r.intendedNs !== null) lags.push((r.startNs - r.intendedNs) / NS_PER_MS);
    if (r.error !== null) {
      const k = errorKey(r.error);
      const e = errors.get(k);
      if (e) e.count++;
      else errors.set(k, { error_details: r.error, count: 1 });
      continue;
    }
    valid++;
    const m = requestMetrics(r);
    for (const tag of RECORD_METRIC_ORDER) {
      const v = m[tag];
      if (typeof v === 'number') push(tag, v);
      else if (Array.isArray(v)) for (const x of v) push(tag, x);
    }
    totalIsl += m.input_sequence_length ?? 0;
    totalOsl += m.output_sequence_length ?? 0;
    if (slos && meetsSlos(m, slos)) good++;
  }
  const metrics: Record<string, MetricStats> = {};
  for (const tag of RECORD_METRIC_ORDER) {
    const v = values.get(tag);
    if (v && v.length > 0) metrics[tag] = computeStats(v, METRIC_UNITS[tag]);
  }
  const durationSec = prof.length > 0 ? Math.max(0, lastResponse - firstSend) / 1e9 : 0;
  const per = (x: number) => (durationSec > 0 ? x / durationSec : 0);
  const errorCount = prof.length - valid;
  const hasSlos = slos !== undefined && Object.keys(slos).length > 0;
  return {
    metrics,
    benchmarkDurationSec: durationSec,
    requestCount: valid,
    errorCount,
    requestThroughput: per(valid),
    outputTokenThroughput: per(totalOsl),
    totalTokenThroughput: per(totalIsl + totalOsl),
    totalIsl,
    totalOsl,
    goodput: hasSlos ? per(good) : null,
    goodRequestCount: hasSlos ? good : null,
    goodFraction: hasSlos ? (prof.length > 0 ? good / prof.length : 0) : null,
    sendLag: lags.length > 0 ? computeStats(lags, 'ms') : null,
    errorSummary: [...errors.values()],
  };
}
