/**
 * Runs a benchmark end to end: the load (one level, a sweep of levels, or a search for the highest
 * rate meeting the goodput SLOs), engine metrics scraping, and the artifacts of every run.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BenchClient, type ClientOptions } from './client.js';
import { nowNs } from './clock.js';
import { writeArtifacts, type RunInfo } from './export.js';
import { runLoad, type LoadOptions, type Sender } from './loadgen.js';
import { percentileSorted, requestMetrics, summarize } from './metrics.js';
import { MetricsScraper, type ServerMetricsReport } from './scrape.js';
import type { GoodputSlos, RequestRecord, RunSummary } from './types.js';
import type { Workload } from './workloads.js';

export type BaseLoad = Omit<LoadOptions, 'endpoint' | 'onRecord' | 'signal'>;

export interface BenchConfig {
  client: ClientOptions;
  workload: Workload;
  /** Description of the workload for the metadata. */
  workloadInfo: Record<string, unknown>;
  load: BaseLoad;
  /** Sweep: one run per level (closed loop: concurrencies, open loop: rates). */
  sweep?: number[];
  /** Search the highest request rate meeting the goodput SLOs. */
  search?: { maxRate: number; trials: number; minGoodFraction: number };
  goodput?: GoodputSlos;
  artifactsDir: string;
  /** Prometheus URL to scrape; null disables scraping. */
  metricsUrl: string | null;
  cliCommand: string;
  progress?: ProgressTracker;
  signal?: AbortSignal;
  /** Sender override (tests); default: a BenchClient. */
  sender?: Sender & { close?: () => Promise<void> };
  /** Called with each run's directory after its artifacts are written (HTML report). */
  afterRun?: (dir: string) => Promise<void>;
}

export interface RunResult {
  dir: string;
  label: string;
  load: BaseLoad;
  summary: RunSummary;
  records: RequestRecord[];
  server: ServerMetricsReport | null;
}

export interface BenchResult {
  runs: RunResult[];
  /** Highest passing rate of a search (null: none passed, undefined: no search). */
  maxRate?: number | null;
}

/** Running figures for the progress line (last 2,000 values of each latency). */
export class ProgressTracker {
  completed = 0;
  errors = 0;
  total: number | null = null;
  private readonly ttft: number[] = [];
  private readonly itl: number[] = [];
  private tokens = 0;
  private startNs = 0;

  reset(total: number | null): void {
    this.completed = 0;
    this.errors = 0;
    this.total = total;
    this.ttft.length = 0;
    this.itl.length = 0;
    this.tokens = 0;
    this.startNs = nowNs();
  }

  add(r: RequestRecord): void {
    if (r.phase !== 'profiling') return;
    this.completed++;
    if (r.error !== null) {
      this.errors++;
      return;
    }
    const m = requestMetrics(r);
    if (m.time_to_first_token !== undefined) push(this.ttft, m.time_to_first_token);
    if (m.inter_token_latency !== undefined) push(this.itl, m.inter_token_latency);
    this.tokens += m.output_sequence_length ?? 0;
  }

  snapshot(): {
    completed: number;
    total: number | null;
    errors: number;
    ttftP50: number;
    itlP50: number;
    tokPerSec: number;
  } {
    const secs = (nowNs() - this.startNs) / 1e9;
    return {
      completed: this.completed,
      total: this.total,
      errors: this.errors,
      ttftP50: median(this.ttft),
      itlP50: median(this.itl),
      tokPerSec: secs > 0 ? this.tokens / secs : 0,
    };
  }
}

function push(a: number[], v: number): void {
  a.push(v);
  if (a.length > 2000) a.splice(0, a.length - 2000);
}

function median(a: readonly number[]): number {
  return a.length === 0 ? Number.NaN : percentileSorted(Float64Array.from(a).sort(), 50);
}

/** One run at `load`, artifacts in `dir`. */
export async function runOnce(
  cfg: BenchConfig,
  load: BaseLoad,
  dir: string,
  label: string,
): Promise<RunResult> {
  const sender = cfg.sender ?? new BenchClient(cfg.client);
  const scraper = cfg.metricsUrl ? new MetricsScraper(cfg.metricsUrl) : null;
  try {
    if (scraper) await scraper.start();
    cfg.progress?.reset(load.requestCount ?? null);
    const t0 = nowNs();
    const records = await runLoad(sender, cfg.workload, {
      ...load,
      endpoint: cfg.client.endpoint,
      onRecord: (r) => cfg.progress?.add(r),
      ...(cfg.signal ? { signal: cfg.signal } : {}),
    });
    const t1 = nowNs();
    const server = scraper ? await scraper.stop() : null;
    const summary = summarize(records, cfg.goodput);
    const prof = records.filter((r) => r.phase === 'profiling');
    const info: RunInfo = {
      model: cfg.client.model,
      url: cfg.client.baseUrl,
      endpoint: cfg.client.endpoint,
      streaming: cfg.client.stream ?? true,
      load: { ...load, goodput: cfg.goodput ?? null },
      workload: cfg.workloadInfo,
      seed: load.seed,
      cliCommand: cfg.cliCommand,
      startNs: prof.length > 0 ? Math.min(...prof.map((r) => r.startNs)) : t0,
      endNs: prof.length > 0 ? Math.max(...prof.map((r) => r.endNs)) : t1,
      wasCancelled: cfg.signal?.aborted ?? false,
    };
    if (server) info.serverMetrics = server;
    writeArtifacts(dir, records, summary, info);
    if (cfg.afterRun) await cfg.afterRun(dir);
    return { dir, label, load, summary, records, server };
  } finally {
    if (scraper) await scraper.stop();
    if (!cfg.sender && 'close' in sender && typeof sender.close === 'function')
      await sender.close();
  }
}

function levelLoad(base: BaseLoad, level: number): BaseLoad {
  return base.mode === 'closed'
    ? { ...base, concurrency: level }
    : { ...base, mode: 'open', requestRate: level };
}

function levelLabel(base: BaseLoad, level: number): string {
  return base.mode === 'closed' ? `concurrency-${level}` : `rate-${level}`;
}

/** Key figures of a run for sweep/search summaries. */
export function runFigures(r: RunResult): Record<string, unknown> {
  const s = r.summary;
  return {
    label: r.label,
    dir: r.dir,
    concurrency: r.load.mode === 'closed' ? (r.load.concurrency ?? 1) : null,
    request_rate: r.load.mode === 'open' ? (r.load.requestRate ?? null) : null,
    request_count: s.requestCount,
    error_request_count: s.errorCount,
    request_throughput: s.requestThroughput,
    output_token_throughput: s.outputTokenThroughput,
    ttft_p50: s.metrics.time_to_first_token?.p50 ?? null,
    ttft_p99: s.metrics.time_to_first_token?.p99 ?? null,
    itl_p50: s.metrics.inter_token_latency?.p50 ?? null,
    itl_p99: s.metrics.inter_token_latency?.p99 ?? null,
    request_latency_p50: s.metrics.request_latency?.p50 ?? null,
    goodput: s.goodput,
    good_fraction: s.goodFraction,
    send_lag_p50: s.sendLag?.p50 ?? null,
    send_lag_p99: s.sendLag?.p99 ?? null,
    prefix_cache_hit_rate: r.server?.prefix_cache_hit_rate ?? null,
  };
}

function csvValue(v: unknown): string {
  return typeof v === 'number' || typeof v === 'string' || typeof v === 'boolean' ? String(v) : '';
}

/** Runs the configured benchmark: a single run, a sweep, or a max-rate search. */
export async function runBench(cfg: BenchConfig): Promise<BenchResult> {
  if (cfg.search) {
    const { maxRate, trials, minGoodFraction } = cfg.search;
    if (!cfg.goodput || Object.keys(cfg.goodput).length === 0)
      throw new Error('--search-max-rate needs --goodput SLOs');
    const runs: RunResult[] = [];
    const trialsOut: Record<string, unknown>[] = [];
    let lo = 0;
    let hi = maxRate;
    let best: number | null = null;
    for (let t = 0; t < Math.max(1, trials) && !cfg.signal?.aborted; t++) {
      const rate = t === 0 ? hi : (lo + hi) / 2;
      const label = `search-${t + 1}-rate-${Number(rate.toFixed(3))}`;
      const r = await runOnce(
        cfg,
        { ...cfg.load, mode: 'open', requestRate: rate },
        join(cfg.artifactsDir, label),
        label,
      );
      runs.push(r);
      const pass = (r.summary.goodFraction ?? 0) >= minGoodFraction;
      trialsOut.push({ ...runFigures(r), pass });
      if (pass) {
        best = rate;
        lo = rate;
        if (t === 0) break;
      } else hi = rate;
    }
    mkdirSync(cfg.artifactsDir, { recursive: true });
    writeFileSync(
      join(cfg.artifactsDir, 'search_summary.json'),
      JSON.stringify(
        {
          max_rate: best,
          min_good_fraction: minGoodFraction,
          goodput: cfg.goodput,
          trials: trialsOut,
        },
        null,
        2,
      ) + '\n',
    );
    return { runs, maxRate: best };
  }
  if (cfg.sweep && cfg.sweep.length > 0) {
    const runs: RunResult[] = [];
    for (const level of cfg.sweep) {
      if (cfg.signal?.aborted) break;
      const label = levelLabel(cfg.load, level);
      runs.push(
        await runOnce(cfg, levelLoad(cfg.load, level), join(cfg.artifactsDir, label), label),
      );
    }
    mkdirSync(cfg.artifactsDir, { recursive: true });
    const rows = runs.map(runFigures);
    writeFileSync(
      join(cfg.artifactsDir, 'sweep_summary.json'),
      JSON.stringify({ levels: rows }, null, 2) + '\n',
    );
    const cols = Object.keys(rows[0] ?? {});
    const csv = [
      cols.join(','),
      ...rows.map((r) => cols.map((c) => csvValue(r[c])).join(',')),
    ].join('\n');
    writeFileSync(join(cfg.artifactsDir, 'sweep_summary.csv'), csv + '\n');
    return { runs };
  }
  return { runs: [await runOnce(cfg, cfg.load, cfg.artifactsDir, 'run')] };
}
