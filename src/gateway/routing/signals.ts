// Engine signals for routing: one scraper per endpoint polls `<url>/metrics` (Prometheus text),
// maps the engine's names to one normalized shape, and keeps the last value with its time.
// A signal older than `staleMs` is STALE: the pipeline treats that replica as saturated (never as
// idle), so a replica that stopped answering its metrics does not attract traffic.
//
// The scraper also owns the KV event subscriptions of the precise prefix source (`kvEvents`,
// ./kv-events.ts): the routing pipeline tells it which replicas publish events (`sync` of the
// routing table), the scraper hands it each replica's num_gpu_blocks (the sets' cap) and closes it
// with itself.
import { performance } from 'node:perf_hooks';
import { Buffer } from 'node:buffer';
import { UpstreamClient, type UpstreamBody } from '../h1/client.js';
import { KvEventHub, type KvEventOptions } from './kv-events.js';

/** Normalized engine signals (DESIGN.md, "Engine signals"). */
export interface EngineSignals {
  waiting: number;
  running: number;
  /** KV-cache usage, 0..1. */
  kvUtilization: number;
  /** Cumulative prefix-cache hits and queries, in tokens (vLLM) — absent: 0. */
  prefixHits: number;
  prefixQueries: number;
  /** Tokens per KV block and GPU blocks (vLLM `cache_config_info`); 0 when not reported. */
  blockSize: number;
  numGpuBlocks: number;
  /** When the scrape that produced these values finished (ms, the scraper's clock). */
  updatedAt: number;
}

/** What the pipeline reads per replica. */
export interface SignalView {
  waiting: number;
  running: number;
  kvUtilization: number;
  /** True when there is no signal or it is older than the staleness limit. */
  stale: boolean;
  /** Age of the signal in ms (Infinity when never scraped). */
  ageMs: number;
  blockSize: number;
  numGpuBlocks: number;
}

export interface SignalSource {
  view(replicaId: string): SignalView;
}

const NEVER: SignalView = {
  waiting: 0,
  running: 0,
  kvUtilization: 1,
  stale: true,
  ageMs: Number.POSITIVE_INFINITY,
  blockSize: 0,
  numGpuBlocks: 0,
};

/** Parses the Prometheus text of vLLM, SGLang or llama.cpp into signals (sums over label sets). */
export function parseEngineMetrics(text: string, now: number): EngineSignals {
  const s: EngineSignals = {
    waiting: 0,
    running: 0,
    kvUtilization: 0,
    prefixHits: 0,
    prefixQueries: 0,
    blockSize: 0,
    numGpuBlocks: 0,
    updatedAt: now,
  };
  let pos = 0;
  while (pos < text.length) {
    let end = text.indexOf('\n', pos);
    if (end < 0) end = text.length;
    const start = pos;
    pos = end + 1;
    if (end === start || text.charCodeAt(start) === 35 /* # */) continue;
    // The name runs to '{' or ' '; only the few series read here are looked at further (an
    // engine's page is mostly histogram buckets).
    let nameEnd = start;
    for (; nameEnd < end; nameEnd++) {
      const c = text.charCodeAt(nameEnd);
      if (c === 123 /* { */ || c === 32) break;
    }
    if (nameEnd === start || nameEnd === end) continue;
    const kind = SERIES.get(text.slice(start, nameEnd));
    if (kind === undefined) continue;
    let labels = '';
    let valueAt = nameEnd;
    if (text.charCodeAt(nameEnd) === 123) {
      const close = text.lastIndexOf('}', end - 1);
      if (close < nameEnd) continue;
      labels = text.slice(nameEnd + 1, close);
      valueAt = close + 1;
    }
    const value = Number(text.slice(valueAt, end).trim().split(/\s+/)[0]);
    if (!Number.isFinite(value)) continue;
    switch (kind) {
      case Series.Waiting:
        s.waiting += value;
        break;
      case Series.Running:
        s.running += value;
        break;
      case Series.KvUsage:
        s.kvUtilization = Math.max(s.kvUtilization, Math.min(1, Math.max(0, value)));
        break;
      case Series.PrefixHits:
        s.prefixHits += value;
        break;
      // llama-server counts prompt_tokens_total without the cached ones: a cached token is
      // both a hit and a query.
      case Series.CachedTokens:
        s.prefixHits += value;
        s.prefixQueries += value;
        break;
      case Series.PrefixQueries:
        s.prefixQueries += value;
        break;
      case Series.CacheConfig: {
        const bs = Number(/(?:^|,)block_size="(\d+)"/.exec(labels)?.[1] ?? NaN);
        const nb = Number(/(?:^|,)num_gpu_blocks="(\d+)"/.exec(labels)?.[1] ?? NaN);
        if (Number.isFinite(bs)) s.blockSize = bs;
        if (Number.isFinite(nb)) s.numGpuBlocks += nb;
        break;
      }
    }
  }
  return s;
}

const enum Series {
  Waiting,
  Running,
  KvUsage,
  PrefixHits,
  CachedTokens,
  PrefixQueries,
  CacheConfig,
}

/** The series read, by name (vLLM, SGLang, llama.cpp). */
const SERIES = new Map<string, Series>([
  ['vllm:num_requests_waiting', Series.Waiting],
  ['sglang:num_queue_reqs', Series.Waiting],
  ['llamacpp:requests_deferred', Series.Waiting],
  ['vllm:num_requests_running', Series.Running],
  ['sglang:num_running_reqs', Series.Running],
  ['llamacpp:requests_processing', Series.Running],
  ['vllm:kv_cache_usage_perc', Series.KvUsage],
  ['vllm:gpu_cache_usage_perc', Series.KvUsage],
  ['llamacpp:kv_cache_usage_ratio', Series.KvUsage],
  ['sglang:token_usage', Series.KvUsage],
  ['vllm:prefix_cache_hits_total', Series.PrefixHits],
  ['vllm:prefix_cache_hits', Series.PrefixHits],
  ['llamacpp:prompt_tokens_cached_total', Series.CachedTokens],
  ['vllm:prefix_cache_queries_total', Series.PrefixQueries],
  ['vllm:prefix_cache_queries', Series.PrefixQueries],
  ['llamacpp:prompt_tokens_total', Series.PrefixQueries],
  ['vllm:cache_config_info', Series.CacheConfig],
]);

export interface ScraperOptions {
  /** Poll period per endpoint (ms). Default 100. */
  intervalMs?: number;
  /** Per-scrape timeout (ms). Default 500. */
  timeoutMs?: number;
  /** Signals older than this are stale (ms). Default 2000. */
  staleMs?: number;
  /** Clock (ms); injectable for tests. */
  now?: () => number;
  /** Called after each scrape attempt (ok or not) with the current signals, if any. */
  onScrape?: (replicaId: string, signals: EngineSignals | undefined) => void;
  /** Options of the KV event subscriptions (precise prefix source). */
  kvEvents?: KvEventOptions;
}

interface Target {
  replicaId: string;
  url: string;
  timer: NodeJS.Timeout | undefined;
  inFlight: boolean;
  stopped: boolean;
  signals: EngineSignals | undefined;
}

/** A metrics page larger than this is not read (a misbehaving endpoint). */
const MAX_METRICS_BYTES = 4 * 1024 * 1024;

/** A whole response body as UTF-8 text; rejects past `max` bytes (the connection is dropped). */
function readText(body: UpstreamBody, max: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    body.read({
      data: (c) => {
        size += c.length;
        if (size > max) {
          body.destroy();
          reject(new Error(`metrics page larger than ${max} bytes`));
          return;
        }
        chunks.push(c);
      },
      end: () => resolve(Buffer.concat(chunks, size).toString('utf8')),
      error: reject,
    });
  });
}

/** Polls every endpoint's metrics; follows the endpoint set given to `sync`. */
export class SignalScraper implements SignalSource {
  private readonly targets = new Map<string, Target>();
  /** The gateway's own raw HTTP/1.1 client (a scrape costs a fraction of an undici request). */
  private readonly client: UpstreamClient;
  private readonly intervalMs: number;
  private readonly timeoutMs: number;
  readonly staleMs: number;
  private readonly now: () => number;
  private closed = false;
  /** KV event subscriptions (the pipeline picks the replicas; see the header). */
  readonly kvEvents: KvEventHub;

  constructor(private readonly o: ScraperOptions = {}) {
    this.kvEvents = new KvEventHub(o.kvEvents);
    this.intervalMs = o.intervalMs ?? 100;
    this.timeoutMs = o.timeoutMs ?? 500;
    this.staleMs = o.staleMs ?? 2000;
    this.now = o.now ?? (() => performance.now());
    this.client = new UpstreamClient({
      connectTimeoutMs: this.timeoutMs,
      headersTimeoutMs: this.timeoutMs,
      idleTimeoutMs: this.timeoutMs,
      keepAliveMs: 10_000,
      maxIdlePerOrigin: 1,
    });
  }

  /** Starts scrapers for new endpoints and stops those no longer listed (keyed by replica id). */
  sync(endpoints: Iterable<{ replicaId: string; url: string }>): void {
    if (this.closed) return;
    const want = new Map<string, string>();
    for (const e of endpoints) want.set(e.replicaId, e.url);
    for (const [id, t] of this.targets) {
      if (want.get(id) !== t.url) this.stop(t);
    }
    for (const [replicaId, url] of want) {
      if (this.targets.has(replicaId)) continue;
      const t: Target = {
        replicaId,
        url,
        timer: undefined,
        inFlight: false,
        stopped: false,
        signals: undefined,
      };
      this.targets.set(replicaId, t);
      this.schedule(t, 0);
    }
  }

  /** Replica ids scraped now. */
  get replicaIds(): string[] {
    return [...this.targets.keys()];
  }

  signals(replicaId: string): EngineSignals | undefined {
    return this.targets.get(replicaId)?.signals;
  }

  /** Sets signals directly (tests, or signals pushed by another source). */
  set(replicaId: string, signals: EngineSignals): void {
    const t = this.targets.get(replicaId);
    if (t) t.signals = signals;
    this.kvEvents.setCapacity(replicaId, signals.numGpuBlocks);
  }

  view(replicaId: string): SignalView {
    return viewOf(this.targets.get(replicaId)?.signals, this.now(), this.staleMs);
  }

  /** Scrapes one endpoint now (also used by the timer). Never throws. */
  async scrapeOnce(replicaId: string): Promise<void> {
    const t = this.targets.get(replicaId);
    if (!t || t.inFlight || t.stopped) return;
    t.inFlight = true;
    try {
      const res = await this.client.request(t.url, 'GET', '/metrics', '', '');
      const text = await readText(res.body, MAX_METRICS_BYTES);
      if (res.status === 200 && !t.stopped) {
        t.signals = parseEngineMetrics(text, this.now());
        this.kvEvents.setCapacity(t.replicaId, t.signals.numGpuBlocks);
      }
    } catch {
      // Keep the last value: it goes stale by itself.
    } finally {
      t.inFlight = false;
    }
    if (!t.stopped) this.o.onScrape?.(t.replicaId, t.signals);
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const t of [...this.targets.values()]) this.stop(t);
    await this.kvEvents.close();
    await this.client.close();
  }

  private schedule(t: Target, delay: number): void {
    if (t.stopped) return;
    t.timer = setTimeout(() => {
      t.timer = undefined;
      void this.scrapeOnce(t.replicaId).finally(() => this.schedule(t, this.intervalMs));
    }, delay);
    t.timer.unref();
  }

  private stop(t: Target): void {
    t.stopped = true;
    if (t.timer) clearTimeout(t.timer);
    t.timer = undefined;
    this.targets.delete(t.replicaId);
  }
}

export function viewOf(s: EngineSignals | undefined, now: number, staleMs: number): SignalView {
  if (!s) return NEVER;
  const ageMs = Math.max(0, now - s.updatedAt);
  return {
    waiting: s.waiting,
    running: s.running,
    kvUtilization: s.kvUtilization,
    stale: ageMs > staleMs,
    ageMs,
    blockSize: s.blockSize,
    numGpuBlocks: s.numGpuBlocks,
  };
}
