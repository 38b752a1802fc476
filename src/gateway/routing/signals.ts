// Engine signals for routing: one scraper per endpoint polls `<url>/metrics` (Prometheus text),
// maps the engine's names to one normalized shape, and keeps the last value with its time.
// A signal older than `staleMs` is STALE: the pipeline treats that replica as saturated (never as
// idle), so a replica that stopped answering its metrics does not attract traffic.
//
// The scraper also owns the KV event subscriptions of the precise prefix source (`kvEvents`,
// ./kv-events.ts): the routing pipeline tells it which replicas publish events (`sync` of the
// routing table), the scraper hands it each replica's num_gpu_blocks (the sets' cap) and closes it
// with itself.
import { Agent, request } from 'undici';
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
    const line = text.slice(pos, end);
    pos = end + 1;
    if (line.length === 0 || line.charCodeAt(0) === 35 /* # */) continue;
    const brace = line.indexOf('{');
    const space = line.indexOf(' ');
    const nameEnd = brace >= 0 && (space < 0 || brace < space) ? brace : space;
    if (nameEnd <= 0) continue;
    const name = line.slice(0, nameEnd);
    let rest = line.slice(nameEnd);
    let labels = '';
    if (rest.startsWith('{')) {
      const close = rest.lastIndexOf('}');
      if (close < 0) continue;
      labels = rest.slice(1, close);
      rest = rest.slice(close + 1);
    }
    const value = Number(rest.trim().split(/\s+/)[0]);
    if (!Number.isFinite(value)) continue;
    switch (name) {
      case 'vllm:num_requests_waiting':
      case 'sglang:num_queue_reqs':
      case 'llamacpp:requests_deferred':
        s.waiting += value;
        break;
      case 'vllm:num_requests_running':
      case 'sglang:num_running_reqs':
      case 'llamacpp:requests_processing':
        s.running += value;
        break;
      case 'vllm:kv_cache_usage_perc':
      case 'vllm:gpu_cache_usage_perc':
      case 'llamacpp:kv_cache_usage_ratio':
      case 'sglang:token_usage':
        s.kvUtilization = Math.max(s.kvUtilization, Math.min(1, Math.max(0, value)));
        break;
      case 'vllm:prefix_cache_hits_total':
      case 'vllm:prefix_cache_hits':
        s.prefixHits += value;
        break;
      // llama-server counts prompt_tokens_total without the cached ones: a cached token is
      // both a hit and a query.
      case 'llamacpp:prompt_tokens_cached_total':
        s.prefixHits += value;
        s.prefixQueries += value;
        break;
      case 'vllm:prefix_cache_queries_total':
      case 'vllm:prefix_cache_queries':
      case 'llamacpp:prompt_tokens_total':
        s.prefixQueries += value;
        break;
      case 'vllm:cache_config_info': {
        const bs = Number(/(?:^|,)block_size="(\d+)"/.exec(labels)?.[1] ?? NaN);
        const nb = Number(/(?:^|,)num_gpu_blocks="(\d+)"/.exec(labels)?.[1] ?? NaN);
        if (Number.isFinite(bs)) s.blockSize = bs;
        if (Number.isFinite(nb)) s.numGpuBlocks += nb;
        break;
      }
      default:
        break;
    }
  }
  return s;
}

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

/** Polls every endpoint's metrics; follows the endpoint set given to `sync`. */
export class SignalScraper implements SignalSource {
  private readonly targets = new Map<string, Target>();
  private readonly agent: Agent;
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
    this.agent = new Agent({
      connections: 1,
      keepAliveTimeout: 10_000,
      connect: { timeout: this.timeoutMs },
      headersTimeout: this.timeoutMs,
      bodyTimeout: this.timeoutMs,
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
      const res = await request(t.url + '/metrics', {
        dispatcher: this.agent,
        signal: AbortSignal.timeout(this.timeoutMs),
      });
      const text = await res.body.text();
      if (res.statusCode === 200 && !t.stopped) {
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
    await this.agent.close();
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
