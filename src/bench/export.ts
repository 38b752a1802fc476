/**
 * Artifacts of a run, in AIPerf's formats: `profile_export.jsonl` (one MetricRecordInfo per
 * request), `profile_export_aiperf.json` (statistics per metric tag + status, errors, input
 * config), `profile_export_aiperf.csv` (statistics section, blank line, summary section), and our
 * `run_metadata.json` (versions, target, load settings, workload, seed, times, host).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, hostname, platform, release } from 'node:os';
import { join } from 'node:path';
import { packageVersion } from '../core/version.js';
import { toEpochNs, toIso } from './clock.js';
import {
  METRIC_HEADERS,
  METRIC_UNITS,
  PERCENTILES,
  RECORD_METRIC_ORDER,
  requestMetrics,
} from './metrics.js';
import type { MetricStats, RequestRecord, RunSummary, ScalarMetric } from './types.js';

export const JSONL_FILE = 'profile_export.jsonl';
export const JSON_FILE = 'profile_export_aiperf.json';
export const CSV_FILE = 'profile_export_aiperf.csv';
export const METADATA_FILE = 'run_metadata.json';

export interface RunInfo {
  model: string;
  url: string;
  endpoint: string;
  streaming: boolean;
  /** Load settings (mode, concurrency, rate, arrival, counts…). */
  load: Record<string, unknown>;
  /** Workload description (name, lengths, groups…). */
  workload: Record<string, unknown>;
  seed: number;
  cliCommand: string;
  /** Monotonic ns (clock.ts) of the start and end of the profiling phase. */
  startNs: number;
  endNs: number;
  /** Whether the run was stopped early (Ctrl-C). */
  wasCancelled: boolean;
  /** Engine-side figures (scrape.ts), if any. */
  serverMetrics?: unknown;
}

const BIG = '\u0000big:';

function replacer(_k: string, v: unknown): unknown {
  return typeof v === 'bigint' ? BIG + v.toString() : v;
}

/** JSON with bigints written as plain integers (epoch ns exceed 2^53). */
export function jsonWithBigints(value: unknown, indent?: number): string {
  return JSON.stringify(value, replacer, indent).replace(/"\\u0000big:(-?\d+)"/g, '$1');
}

/** One profile_export.jsonl record. */
export function recordInfo(r: RequestRecord): Record<string, unknown> {
  const metrics: Record<string, { value: number | number[]; unit: string }> = {};
  if (r.error === null) {
    const m = requestMetrics(r);
    for (const tag of RECORD_METRIC_ORDER) {
      const v = m[tag];
      if (v !== undefined) metrics[tag] = { value: v, unit: METRIC_UNITS[tag] };
    }
  } else {
    metrics.error_isl = { value: r.usagePromptTokens ?? r.clientInputTokens, unit: 'tokens' };
  }
  return {
    metadata: {
      session_num: r.sessionNum,
      x_request_id: r.requestId,
      x_correlation_id: r.correlationId,
      conversation_id: r.conversationId,
      turn_index: r.turnIndex,
      request_start_ns: toEpochNs(r.startNs),
      request_ack_ns: r.ackNs === null ? null : toEpochNs(r.ackNs),
      request_end_ns: toEpochNs(r.endNs),
      worker_id: 'worker_0',
      record_processor_id: 'record_processor_0',
      benchmark_phase: r.phase,
      was_cancelled: r.cancelled,
      cancellation_time_ns: r.cancellationNs === null ? null : toEpochNs(r.cancellationNs),
      intended_start_ns: r.intendedNs === null ? null : toEpochNs(r.intendedNs),
      cached_tokens: r.usageCachedTokens,
    },
    metrics,
    error: r.error,
  };
}

function scalar(unit: string, avg: number): ScalarMetric {
  return { unit, avg };
}

/** The profile_export_aiperf.json object. */
export function aiperfJson(summary: RunSummary, info: RunInfo): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [tag, s] of Object.entries(summary.metrics)) out[tag] = s;
  out.request_throughput = scalar('requests/sec', summary.requestThroughput);
  out.request_count = scalar('requests', summary.requestCount);
  out.output_token_throughput = scalar('tokens/sec', summary.outputTokenThroughput);
  out.total_token_throughput = scalar('tokens/sec', summary.totalTokenThroughput);
  out.benchmark_duration = scalar('sec', summary.benchmarkDurationSec);
  out.total_isl = scalar('tokens', summary.totalIsl);
  out.total_osl = scalar('tokens', summary.totalOsl);
  out.goodput = summary.goodput === null ? null : scalar('requests/sec', summary.goodput);
  out.good_request_count =
    summary.goodRequestCount === null ? null : scalar('requests', summary.goodRequestCount);
  out.good_fraction = summary.goodFraction === null ? null : scalar('ratio', summary.goodFraction);
  out.error_request_count = summary.errorCount > 0 ? scalar('requests', summary.errorCount) : null;
  out.send_lag = summary.sendLag;
  out.was_cancelled = info.wasCancelled;
  out.start_time = toIso(info.startNs);
  out.end_time = toIso(info.endNs);
  out.error_summary = summary.errorSummary;
  if (info.serverMetrics !== undefined) out.server_metrics = info.serverMetrics;
  out.input_config = {
    endpoint: {
      model_names: [info.model],
      type: info.endpoint,
      streaming: info.streaming,
      url: info.url,
    },
    input: { random_seed: info.seed, workload: info.workload },
    loadgen: info.load,
    cli_command: info.cliCommand,
  };
  return out;
}

function fmt(v: number): string {
  return Number.isFinite(v) ? v.toFixed(2) : '';
}

function csvCell(s: string): string {
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** profile_export_aiperf.csv: statistics section, blank line, summary section. */
export function aiperfCsv(summary: RunSummary): string {
  const cols = ['avg', 'min', 'max', ...PERCENTILES.map((p) => `p${p}`), 'std'] as const;
  const lines = [`Metric,${cols.join(',')}`];
  const stats: [string, MetricStats][] = Object.entries(summary.metrics);
  if (summary.sendLag) stats.push(['send_lag', summary.sendLag]);
  for (const [tag, s] of stats) {
    const name = `${METRIC_HEADERS[tag] ?? tag} (${s.unit})`;
    const vals = cols.map((c) => fmt(s[c as keyof MetricStats] as number));
    lines.push([csvCell(name), ...vals].join(','));
  }
  lines.push('', 'Metric,Value');
  const rows: [string, number | null][] = [
    ['Benchmark Duration (sec)', summary.benchmarkDurationSec],
    ['Request Throughput (requests/sec)', summary.requestThroughput],
    ['Request Count', summary.requestCount],
    ['Output Token Throughput (tokens/sec)', summary.outputTokenThroughput],
    ['Total Token Throughput (tokens/sec)', summary.totalTokenThroughput],
    ['Total ISL (tokens)', summary.totalIsl],
    ['Total OSL (tokens)', summary.totalOsl],
    ['Error Request Count', summary.errorCount],
    ['Goodput (requests/sec)', summary.goodput],
    ['Good Request Count', summary.goodRequestCount],
  ];
  for (const [name, v] of rows) if (v !== null) lines.push(`${csvCell(name)},${fmt(v)}`);
  return lines.join('\n') + '\n';
}

/** run_metadata.json. */
export function runMetadata(info: RunInfo, summary: RunSummary): Record<string, unknown> {
  return {
    tool: 'inferplane bench',
    versions: { inferplane: packageVersion(), node: process.version, undici: undiciVersion() },
    model: info.model,
    endpoint_url: info.url,
    endpoint_type: info.endpoint,
    streaming: info.streaming,
    load: info.load,
    workload: info.workload,
    seed: info.seed,
    cli_command: info.cliCommand,
    start_time: toIso(info.startNs),
    end_time: toIso(info.endNs),
    was_cancelled: info.wasCancelled,
    request_count: summary.requestCount,
    error_request_count: summary.errorCount,
    host: { hostname: hostname(), platform: platform(), release: release(), cpus: cpus().length },
    server_metrics: info.serverMetrics ?? null,
  };
}

function undiciVersion(): string | null {
  // process.versions.undici is the bundled one; ours is the package (kept simple: bundled).
  return process.versions.undici ?? null;
}

/** Writes the four artifact files into `dir` (created if needed). */
export function writeArtifacts(
  dir: string,
  records: readonly RequestRecord[],
  summary: RunSummary,
  info: RunInfo,
): void {
  mkdirSync(dir, { recursive: true });
  let jsonl = '';
  for (const r of records)
    if (r.phase === 'profiling') jsonl += jsonWithBigints(recordInfo(r)) + '\n';
  writeFileSync(join(dir, JSONL_FILE), jsonl);
  writeFileSync(join(dir, JSON_FILE), JSON.stringify(aiperfJson(summary, info), null, 2) + '\n');
  writeFileSync(join(dir, CSV_FILE), aiperfCsv(summary));
  writeFileSync(
    join(dir, METADATA_FILE),
    JSON.stringify(runMetadata(info, summary), null, 2) + '\n',
  );
}
