/**
 * Engine correlation: scrapes the target's Prometheus `/metrics` before and after the run (and
 * periodically during it) and reports the server-side prefix-cache hit rate, queue length and KV
 * cache usage next to the client's numbers. Understands vLLM names (also served by the simulator)
 * and llama.cpp's. A target without /metrics is skipped silently.
 */
import { request } from 'undici';
import { computeStats } from './metrics.js';
import type { MetricStats } from './types.js';

/** Sum of every sample of each metric name (labels ignored). */
export type Samples = Map<string, number>;

/** Parses Prometheus text exposition: `name{labels} value [timestamp]` lines, summed per name. */
export function parsePrometheus(text: string): Samples {
  const out: Samples = new Map();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    let nameEnd = line.search(/[{\s]/);
    if (nameEnd < 0) continue;
    const name = line.slice(0, nameEnd);
    if (line[nameEnd] === '{') {
      // Skip the label set (values may contain spaces and braces inside quotes).
      let i = nameEnd + 1;
      let inQ = false;
      for (; i < line.length; i++) {
        const ch = line[i];
        if (inQ) {
          if (ch === '\\') i++;
          else if (ch === '"') inQ = false;
        } else if (ch === '"') inQ = true;
        else if (ch === '}') break;
      }
      nameEnd = i + 1;
    }
    const parts = line.slice(nameEnd).trim().split(/\s+/);
    const v = Number(parts[0]);
    if (parts[0] === undefined || parts[0] === '' || Number.isNaN(v)) continue;
    out.set(name, (out.get(name) ?? 0) + v);
  }
  return out;
}

const HITS = [
  'vllm:prefix_cache_hits_total',
  'vllm:gpu_prefix_cache_hits_total',
  'sglang:cache_hit_total',
];
const QUERIES = ['vllm:prefix_cache_queries_total', 'vllm:gpu_prefix_cache_queries_total'];
const WAITING = [
  'vllm:num_requests_waiting',
  'llamacpp:requests_deferred',
  'sglang:num_queue_reqs',
];
const RUNNING = [
  'vllm:num_requests_running',
  'llamacpp:requests_processing',
  'sglang:num_running_reqs',
];
const KV = [
  'vllm:kv_cache_usage_perc',
  'vllm:gpu_cache_usage_perc',
  'llamacpp:kv_cache_usage_ratio',
];
const PROMPT_TOKENS = ['vllm:prompt_tokens_total', 'llamacpp:prompt_tokens_total'];
const GEN_TOKENS = ['vllm:generation_tokens_total', 'llamacpp:tokens_predicted_total'];

function pick(s: Samples, names: readonly string[]): number | null {
  for (const n of names) {
    const v = s.get(n);
    if (v !== undefined) return v;
  }
  return null;
}

export interface ServerMetricsReport {
  metrics_url: string;
  /** Prefix-cache hits / queries over the run (counter deltas), or null when not exported. */
  prefix_cache_hit_rate: number | null;
  prefix_cache_hits: number | null;
  prefix_cache_queries: number | null;
  prompt_tokens: number | null;
  generation_tokens: number | null;
  /** Samples of the waiting queue length / running requests / KV cache usage (0–1). */
  num_requests_waiting: MetricStats | null;
  num_requests_running: MetricStats | null;
  kv_cache_usage: MetricStats | null;
  samples: number;
}

async function fetchText(url: string, timeoutMs: number): Promise<string | null> {
  try {
    const res = await request(url, { method: 'GET', signal: AbortSignal.timeout(timeoutMs) });
    if (res.statusCode !== 200) {
      await res.body.dump();
      return null;
    }
    return await res.body.text();
  } catch {
    return null;
  }
}

/** The default metrics URL of an OpenAI base URL (drops a trailing /v1). */
export function defaultMetricsUrl(baseUrl: string): string {
  return baseUrl.replace(/\/+$/, '').replace(/\/v1$/, '') + '/metrics';
}

export class MetricsScraper {
  private before: Samples | null = null;
  private last: Samples | null = null;
  private readonly waiting: number[] = [];
  private readonly running: number[] = [];
  private readonly kv: number[] = [];
  private timer: NodeJS.Timeout | null = null;
  private pending: Promise<void> = Promise.resolve();
  private available = false;
  private report: ServerMetricsReport | null | undefined;

  constructor(
    readonly url: string,
    private readonly intervalMs = 1000,
  ) {}

  private async scrape(): Promise<Samples | null> {
    const text = await fetchText(this.url, 2000);
    if (text === null) return null;
    const s = parsePrometheus(text);
    const w = pick(s, WAITING);
    const r = pick(s, RUNNING);
    const k = pick(s, KV);
    if (w !== null) this.waiting.push(w);
    if (r !== null) this.running.push(r);
    if (k !== null) this.kv.push(k);
    this.last = s;
    return s;
  }

  /** First scrape; starts periodic sampling when the endpoint answers. */
  async start(): Promise<boolean> {
    this.before = await this.scrape();
    this.available = this.before !== null;
    if (this.available) {
      this.timer = setInterval(() => {
        this.pending = this.pending.then(async () => {
          await this.scrape();
        });
      }, this.intervalMs);
      this.timer.unref();
    }
    return this.available;
  }

  /** Last scrape and the report; null when the endpoint never answered. */
  async stop(): Promise<ServerMetricsReport | null> {
    if (this.report !== undefined) return this.report;
    this.report = await this.finish();
    return this.report;
  }

  private async finish(): Promise<ServerMetricsReport | null> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.pending;
    if (!this.available || this.before === null) return null;
    const after = (await this.scrape()) ?? this.last ?? this.before;
    const delta = (names: readonly string[]) => {
      const a = pick(after, names);
      const b = pick(this.before as Samples, names);
      return a === null || b === null ? null : a - b;
    };
    const hits = delta(HITS);
    const queries = delta(QUERIES);
    return {
      metrics_url: this.url,
      prefix_cache_hit_rate:
        hits !== null && queries !== null && queries > 0 ? hits / queries : null,
      prefix_cache_hits: hits,
      prefix_cache_queries: queries,
      prompt_tokens: delta(PROMPT_TOKENS),
      generation_tokens: delta(GEN_TOKENS),
      num_requests_waiting: this.waiting.length > 0 ? computeStats(this.waiting, 'requests') : null,
      num_requests_running: this.running.length > 0 ? computeStats(this.running, 'requests') : null,
      kv_cache_usage: this.kv.length > 0 ? computeStats(this.kv, 'ratio') : null,
      samples: this.waiting.length,
    };
  }
}
