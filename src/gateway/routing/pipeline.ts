// The endpoint picker: filters → weighted scorers → picker, with a receipt per decision.
//
// Filters: the route's endpoints are ready ones already (the snapshot lists ready replicas only);
// replicas excluded for this request (a failed attempt) are dropped.
//
// Scorers, each 0..1 (higher is better):
// - prefix:   matched leading blocks / prompt blocks, from the approximate prefix index.
// - queue:    1 / (1 + L/2), L = the engine's running + waiting (+ waiting once more), corrected
//             by this gateway's in-flight changes since the scrape (see loadOf). 1 when idle,
//             1/2 at two requests, 1/3 at four.
// - kv:       min(1, (1 − KV utilization) / 0.25): 1 up to 75 % used, 0 when full.
// - affinity: 1 for the replica that `x-session-id` maps to (rendezvous hashing over the
//             candidates: stable when other replicas come and go), else 0.
// A STALE replica (no signal for staleMs) scores queue = kv = 0: saturated, never idle.
//
// Picker: highest weighted sum; ties (within 1e-9) go to the least loaded (see loadOf; stale = ∞),
// then to the least recently picked, then to a random one (injectable RNG).
//
// Default weights (prefix-aware): prefix 2, queue 2, kv 1, affinity 1. An idle replica without
// the prefix scores 3 (queue 1 × 2 + kv 1 × 1). A replica holding the whole prefix gets 2 for it,
// so it keeps winning while 2·queue + kv > 1: with half its KV free, up to L < 6 requests; with its
// KV 90 % full, up to L < 36 (KV fills with running work, so L is the real limit). Beyond that —
// clearly overloaded — the request spills to an idle replica, which then learns the prefix too
// (hot prefixes spread over several replicas instead of melting one). least-loaded: queue 2, kv 1.
import { seededRandom } from '../../core/random.js';
import { createHash } from 'node:crypto';
import type {
  RouteEndpoint,
  RouteModel,
  RoutingPolicy,
  RoutingSnapshot,
  RoutingWeights,
} from '../../core/types.js';
import type { PickRequest, Picker, ReplicaScores, RouteDecision } from './picker.js';
import { PrefixIndex, type PrefixIndexOptions } from './prefix-index.js';
import type { SignalSource, SignalView } from './signals.js';

export const DEFAULT_POLICY: RoutingPolicy = 'prefix-aware';

export const DEFAULT_WEIGHTS: Record<RoutingPolicy, RoutingWeights> = {
  'round-robin': { prefix: 0, queue: 0, kv: 0, affinity: 0 },
  'least-loaded': { prefix: 0, queue: 2, kv: 1, affinity: 0 },
  'prefix-aware': { prefix: 2, queue: 2, kv: 1, affinity: 1 },
};

export interface PipelineOptions {
  signals: SignalSource;
  index?: PrefixIndex | PrefixIndexOptions;
  /** Uniform [0, 1) random source for tie-breaks (seed it in tests). Default Math.random. */
  random?: () => number;
}

export function policyOf(route: RouteModel): RoutingPolicy {
  return route.routing?.policy ?? DEFAULT_POLICY;
}

export function weightsOf(route: RouteModel): RoutingWeights {
  return { ...DEFAULT_WEIGHTS[policyOf(route)], ...route.routing?.weights };
}

export { seededRandom };

/**
 * The KV scorer is flat (1) up to 1 − KV_KNEE utilization and falls linearly to 0 at 100 %: a
 * scraped KV figure lags like the queue counts, and used as a linear score it steered picks toward
 * whichever replica looked emptiest at the last scrape (measured: worse TTFT than round-robin).
 * It only matters near saturation, where preemption starts.
 */
export const KV_KNEE = 0.25;

const round3 = (x: number): number => Math.round(x * 1000) / 1000;

export class RoutingPipeline implements Picker {
  readonly index: PrefixIndex;
  private readonly signals: SignalSource;
  private readonly random: () => number;
  private readonly inflight = new Map<string, number>();
  /** This gateway's in-flight count per replica when its signals were last scraped. */
  private readonly atScrape = new Map<string, number>();
  private readonly rr = new Map<string, number>();
  /** Pick counter, and the counter value at each replica's last pick (tie-break). */
  private picks = 0;
  private readonly lastPicked = new Map<string, number>();

  constructor(o: PipelineOptions) {
    this.signals = o.signals;
    this.index = o.index instanceof PrefixIndex ? o.index : new PrefixIndex(o.index);
    this.random = o.random ?? Math.random;
  }

  needsPrompt(route: RouteModel): boolean {
    return weightsOf(route).prefix > 0;
  }

  /** Follows the routing table: forgets replicas that left it. */
  sync(snapshot: Pick<RoutingSnapshot, 'models'>): void {
    const ids = new Set<string>();
    for (const m of snapshot.models) for (const e of m.endpoints) ids.add(e.replicaId);
    this.index.retain(ids);
    for (const id of [...this.inflight.keys()]) if (!ids.has(id)) this.inflight.delete(id);
    for (const id of [...this.atScrape.keys()]) if (!ids.has(id)) this.atScrape.delete(id);
    for (const id of [...this.lastPicked.keys()]) if (!ids.has(id)) this.lastPicked.delete(id);
  }

  /** A scrape of `replicaId` just landed: later in-flight changes correct its lagging counts. */
  noteScrape(replicaId: string): void {
    this.atScrape.set(replicaId, this.inflight.get(replicaId) ?? 0);
  }

  release(replicaId: string): void {
    const n = (this.inflight.get(replicaId) ?? 0) - 1;
    if (n > 0) this.inflight.set(replicaId, n);
    else this.inflight.delete(replicaId);
  }

  inflightOf(replicaId: string): number {
    return this.inflight.get(replicaId) ?? 0;
  }

  pick(route: RouteModel, req: PickRequest): RouteDecision | undefined {
    const t0 = performance.now();
    // Filters.
    const cands: RouteEndpoint[] = [];
    for (const e of route.endpoints) if (!req.exclude.has(e.replicaId)) cands.push(e);
    if (cands.length === 0) return undefined;
    const policy = policyOf(route);

    if (policy === 'round-robin') {
      const start = this.rr.get(route.model) ?? 0;
      const ep = cands[start % cands.length]!;
      this.rr.set(route.model, (start + 1) % 1_000_000_007);
      return this.decide(ep, policy, {}, 0, 0, t0);
    }

    const w = weightsOf(route);
    // Prefix matches (only when the prefix scorer counts).
    let matches: Map<string, number> | undefined;
    let promptBlocks = 0;
    if (w.prefix > 0 && req.prompt !== undefined) {
      req.hashes ??= this.index.hash(req.prompt);
      promptBlocks = req.hashes.length;
      if (promptBlocks > 0) matches = this.index.match(req.hashes);
    }
    const affine =
      w.affinity > 0 && req.sessionId !== undefined ? rendezvous(req.sessionId, cands) : undefined;

    const scores: Record<string, ReplicaScores> = {};
    let best: RouteEndpoint[] = [];
    let bestTotal = Number.NEGATIVE_INFINITY;
    const loads = new Map<string, number>();
    for (const e of cands) {
      const v = this.signals.view(e.replicaId);
      if (w.prefix > 0 && v.numGpuBlocks > 0 && v.blockSize > 0) {
        this.index.setCacheTokens(e.replicaId, v.numGpuBlocks * v.blockSize);
      }
      const mine = this.inflight.get(e.replicaId) ?? 0;
      const delta = mine - (this.atScrape.get(e.replicaId) ?? mine);
      const s = score(
        v,
        mine,
        delta,
        promptBlocks,
        matches?.get(e.replicaId) ?? 0,
        affine === e,
        w,
      );
      scores[e.replicaId] = s;
      loads.set(e.replicaId, v.stale ? Number.POSITIVE_INFINITY : loadOf(v, mine, delta));
      if (s.total > bestTotal + 1e-9) {
        bestTotal = s.total;
        best = [e];
      } else if (s.total > bestTotal - 1e-9) {
        best.push(e);
      }
    }
    if (best.length > 1) {
      let least = Number.POSITIVE_INFINITY;
      for (const e of best) least = Math.min(least, loads.get(e.replicaId)!);
      best = best.filter((e) => loads.get(e.replicaId)! === least);
    }
    if (best.length > 1) {
      // Least recently picked: equal replicas take turns (round-robin spacing), which measured
      // clearly better TTFT tails than a random choice among ties under Poisson arrivals.
      let oldest = Number.POSITIVE_INFINITY;
      for (const e of best) oldest = Math.min(oldest, this.lastPicked.get(e.replicaId) ?? -1);
      best = best.filter((e) => (this.lastPicked.get(e.replicaId) ?? -1) === oldest);
    }
    const ep = best.length === 1 ? best[0]! : best[Math.floor(this.random() * best.length)]!;
    const matched = matches?.get(ep.replicaId) ?? 0;
    if (req.hashes && req.hashes.length > 0) this.index.record(ep.replicaId, req.hashes);
    for (const id in scores) {
      const s = scores[id]!;
      s.prefix = round3(s.prefix);
      s.queue = round3(s.queue);
      s.kv = round3(s.kv);
      s.total = round3(s.total);
    }
    return this.decide(ep, policy, scores, matched, promptBlocks, t0);
  }

  private decide(
    ep: RouteEndpoint,
    policy: RoutingPolicy,
    scores: Record<string, ReplicaScores>,
    matchedBlocks: number,
    promptBlocks: number,
    t0: number,
  ): RouteDecision {
    this.inflight.set(ep.replicaId, (this.inflight.get(ep.replicaId) ?? 0) + 1);
    this.lastPicked.set(ep.replicaId, ++this.picks);
    return {
      endpoint: ep,
      receipt: {
        policy,
        replica: ep.replicaId,
        index: ep.index,
        scores,
        matchedBlocks,
        promptBlocks,
        decisionMicros: Math.round((performance.now() - t0) * 1000 * 10) / 10,
      },
    };
  }
}

function score(
  v: SignalView,
  mine: number,
  delta: number,
  promptBlocks: number,
  matched: number,
  affine: boolean,
  w: RoutingWeights,
): ReplicaScores {
  const prefix = promptBlocks > 0 ? matched / promptBlocks : 0;
  let queue = 0;
  let kv = 0;
  if (!v.stale) {
    queue = 1 / (1 + loadOf(v, mine, delta) / 2);
    kv = Math.min(1, (1 - Math.min(1, Math.max(0, v.kvUtilization))) / KV_KNEE);
  }
  const affinity = affine ? 1 : 0;
  const total = w.prefix * prefix + w.queue * queue + w.kv * kv + w.affinity * affinity;
  return { prefix, queue, kv, affinity, total };
}

/**
 * Load of a replica in requests. The engine's counts (running + waiting) lag by up to a scrape
 * period; acting on them alone makes every pick in that window avoid (or pile onto) the same
 * replica and the fleet oscillates. So they are corrected by `delta`, the change of this gateway's
 * own in-flight count there since the scrape (exact and instant), and never taken below that
 * in-flight count. A waiting request counts once more (it delays every TTFT behind it).
 */
function loadOf(v: SignalView, mine: number, delta: number): number {
  const waiting = Math.max(0, v.waiting + Math.min(0, delta));
  return Math.max(mine, v.waiting + v.running + delta) + waiting;
}

/** Rendezvous (highest random weight) hashing: the candidate with the highest hash(key, id). */
export function rendezvous(
  key: string,
  cands: readonly RouteEndpoint[],
): RouteEndpoint | undefined {
  let best: RouteEndpoint | undefined;
  let bestH = -1;
  for (const e of cands) {
    const h = createHash('sha1')
      .update(key)
      .update('\0')
      .update(e.replicaId)
      .digest()
      .readUInt32BE(0);
    if (h > bestH) {
      bestH = h;
      best = e;
    }
  }
  return best;
}
