// Per-version serving statistics for rollout gates, read from the gateway's own prom-client
// registry (the platform's one `metrics` object). `read()` returns cumulative counters for one
// model + version (summed over tenants and replicas); `windowOf(prev, cur)` turns two readings
// into what happened between them (windowed, not cumulative): p99 TTFT and ITL from histogram
// bucket deltas (interpolated within the bucket, as PromQL's histogram_quantile), and the error
// rate from counter deltas.
//
// Error rate: from `inferplane_gateway_version_requests_total{model,version,outcome}` once the
// gateway feeds it (any series for the model). Until then it falls back to the model-wide
// `inferplane_gateway_requests_total{model,code}` (status >= 500 over all), which counts the
// stable version's errors too: conservative (it can only fail a canary more often), and marked
// `errorSource: 'model'`.
import type { Registry } from 'prom-client';
import type { Metrics } from './metrics.js';

/** Cumulative histogram: [upper bound in seconds, cumulative count], ascending, +Inf last. */
export type Buckets = Array<[number, number]>;

export interface VersionCounters {
  ttft: Buckets;
  itl: Buckets;
  requests: number;
  errors: number;
  /** Where `requests`/`errors` come from: this version, or the whole model (see the header). */
  errorSource: 'version' | 'model';
}

export interface VersionStats {
  read(model: string, version: string): Promise<VersionCounters>;
}

export interface VersionWindow {
  /** p99 in ms; undefined without samples. */
  ttftP99Ms: number | undefined;
  ttftSamples: number;
  itlP99Ms: number | undefined;
  itlSamples: number;
  requests: number;
  errors: number;
  errorRate: number | undefined;
  errorSource: 'version' | 'model';
}

/** The q-quantile (0..1) in seconds of cumulative buckets; undefined when empty. */
export function quantile(q: number, buckets: Buckets): number | undefined {
  const total = buckets.length ? buckets[buckets.length - 1]![1] : 0;
  if (!(total > 0)) return undefined;
  const rank = q * total;
  let prevLe = 0;
  let prevCount = 0;
  for (const [le, count] of buckets) {
    if (count >= rank) {
      if (!Number.isFinite(le)) return prevLe;
      const inBucket = count - prevCount;
      if (inBucket <= 0) return le;
      return prevLe + (le - prevLe) * ((rank - prevCount) / inBucket);
    }
    prevLe = le;
    prevCount = count;
  }
  return prevLe;
}

function deltaBuckets(prev: Buckets, cur: Buckets): Buckets {
  const before = new Map(prev);
  // A counter that went down (a reset) counts from zero.
  return cur.map(([le, c]) => {
    const d = c - (before.get(le) ?? 0);
    return [le, d < 0 ? c : d];
  });
}

/** What happened between two readings of the same model + version. */
export function windowOf(prev: VersionCounters | undefined, cur: VersionCounters): VersionWindow {
  const ttft = prev ? deltaBuckets(prev.ttft, cur.ttft) : cur.ttft;
  const itl = prev ? deltaBuckets(prev.itl, cur.itl) : cur.itl;
  const sameSource = prev !== undefined && prev.errorSource === cur.errorSource;
  let requests = sameSource ? cur.requests - prev.requests : cur.requests;
  let errors = sameSource ? cur.errors - prev.errors : cur.errors;
  if (requests < 0 || errors < 0) {
    requests = cur.requests;
    errors = cur.errors;
  }
  const count = (b: Buckets): number => (b.length ? b[b.length - 1]![1] : 0);
  const ms = (s: number | undefined): number | undefined => (s === undefined ? s : s * 1000);
  return {
    ttftP99Ms: ms(quantile(0.99, ttft)),
    ttftSamples: count(ttft),
    itlP99Ms: ms(quantile(0.99, itl)),
    itlSamples: count(itl),
    requests,
    errors,
    errorRate: requests > 0 ? errors / requests : undefined,
    errorSource: cur.errorSource,
  };
}

interface MetricValue {
  labels: Record<string, string | number | undefined>;
  value: number;
  metricName?: string;
}

async function values(metric: {
  get(): Promise<{ values: MetricValue[] }>;
}): Promise<MetricValue[]> {
  return (await metric.get()).values;
}

async function histogram(
  metric: { get(): Promise<{ values: MetricValue[] }> },
  model: string,
  version: string,
): Promise<Buckets> {
  const sums = new Map<number, number>();
  for (const v of await values(metric)) {
    if (!v.metricName?.endsWith('_bucket')) continue;
    if (v.labels.model !== model || v.labels.version !== version) continue;
    const le = v.labels.le === '+Inf' ? Infinity : Number(v.labels.le);
    sums.set(le, (sums.get(le) ?? 0) + v.value);
  }
  return [...sums.entries()].sort((a, b) => a[0] - b[0]);
}

type Readable = { get(): Promise<{ values: MetricValue[] }> };

/**
 * VersionStats over the platform's registry (see the header), or over `registryOf()` — the
 * registry summed over gateway worker processes — read once per call, by the same metric names.
 */
export function registryVersionStats(
  metrics: Metrics,
  registryOf?: () => Promise<Registry>,
): VersionStats {
  return {
    async read(model, version) {
      const reg = registryOf ? await registryOf() : undefined;
      const pick = (m: Readable): Readable => {
        if (!reg) return m;
        // prom-client metrics carry their name at run time (the typings leave it out).
        const found = reg.getSingleMetric((m as unknown as { name: string }).name) as
          Readable | undefined;
        return found ?? { get: () => Promise.resolve({ values: [] }) };
      };
      const [ttft, itl] = await Promise.all([
        histogram(pick(metrics.streamTtft), model, version),
        histogram(pick(metrics.itl), model, version),
      ]);
      let requests = 0;
      let errors = 0;
      let wired = false;
      for (const v of await values(pick(metrics.versionRequests))) {
        if (v.labels.model !== model) continue;
        wired = true;
        if (v.labels.version !== version) continue;
        requests += v.value;
        if (v.labels.outcome === 'error') errors += v.value;
      }
      if (wired) return { ttft, itl, requests, errors, errorSource: 'version' };
      for (const v of await values(pick(metrics.requests))) {
        if (v.labels.model !== model) continue;
        requests += v.value;
        if (Number(v.labels.code) >= 500) errors += v.value;
      }
      return { ttft, itl, requests, errors, errorSource: 'model' };
    },
  };
}
