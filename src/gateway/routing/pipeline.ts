// The endpoint picker: filters → version draw → weighted scorers → picker, with a receipt per
// decision.
//
// Filters: the route's endpoints are ready ones already (the snapshot lists ready replicas only);
// replicas excluded for this request (a failed attempt) and those the gateway's circuit breakers
// refuse (`req.allow`) are dropped.
//
// Version draw (canaries, `route.versionWeights`): a version is drawn by weight among the versions
// that have a usable (filtered) endpoint; weight 0 or absent = no traffic. An endpoint without a
// version belongs to every version. If no positively weighted version has a usable endpoint, all
// usable endpoints compete (availability first; the receipt then has no version). The draw is kept
// in `req.version`, so `saturated`, `pick` and a retry agree while that version stays usable.
// Without `versionWeights` every endpoint competes as one version.
//
// Scorers, each 0..1 (higher is better):
// - prefix:   the share of the prompt the replica would serve from its cache, discounted for short
//             prompts (recomputing a few hundred tokens costs less than queueing behind others),
//             from one of two sources (route `routing.prefixSource`, default auto):
//             precise — the engine's KV event stream (./kv-events.ts: the blocks the replica holds
//             now): the prompt is tokenized and hashed the engine's way (./precise-prefix.ts) and
//             walked block by block while some replica holds every block so far; score = matched
//             blocks × block size / max(prompt tokens, PRECISE_MIN_TOKENS), the matched blocks
//             capped at what the engine looks up (floor((prompt tokens − 1) / block size));
//             approximate — the gateway's own prefix index of what it sent where, in one of two
//             block kinds (route `routing.prefixBlocks`, see prefixBlocksOf): text — matched
//             leading 128-byte blocks / max(prompt blocks, PREFIX_MIN_BLOCKS); tokens (where the
//             gateway knows the engine's tokenizer) — the engine's own blocks, hashed as for
//             precise and scored as precise is; a decision hashes the prompt only as far as some
//             replica's index holds it (PrefixIndex.matchLengthsLazy) and the pick is recorded
//             after the decision (flushRecords, a microtask: the rest of the prompt tokenized,
//             resuming from the checkpoints).
//             auto uses precise for each replica whose stream is live (engine `sim`) and
//             approximate for the others; precise gives replicas without a live stream 0;
//             approximate never subscribes. Every pick is also recorded in the approximate index
//             (so a replica whose stream drops falls back to a warm index) — after the decision,
//             like every approximate record (flushRecords), and so is a precise pick the
//             replica's events do not show yet among the recent picks (`pendingMs`). For routes
//             that may use the precise source, the approximate index hashes the engine's prompt
//             text (the same hashes key the precise checkpoints).
// - queue:    max(0, 1 − (L − Lmin) / LOAD_SPAN), L = the replica's load in requests (see loadOf),
//             Lmin = the least loaded candidate's. Relative and linear: the least loaded scores 1
//             and a replica LOAD_SPAN requests busier scores 0, whatever the absolute level — a
//             hyperbolic 1/(1+L) flattened all differences under heavy load, so a hot prefix piled
//             onto its holder exactly when it mattered most.
// - kv:       min(1, (1 − KV utilization) / KV_KNEE): 1 up to 75 % used, 0 when full.
// - affinity: 1 for the replica that `x-session-id` maps to (rendezvous hashing over the
//             candidates: stable when other replicas come and go), else 0.
// Stale signals (none for staleMs): if some candidate is fresh, a STALE one scores queue = kv = 0
// (saturated, never idle); if every candidate is stale (a broken metrics path), all are scored on
// the gateway's own in-flight counts alone, which are exact — traffic must not stall on metrics.
//
// Picker: highest weighted sum; ties (within 1e-9) go to the least loaded, then to the least
// recently picked (by this process or a peer on the load board), then to a random one (injectable
// RNG).
//
// Default weights (prefix-aware): prefix 2, queue 2, kv 1, affinity 1. A replica holding the whole
// prefix gains 2 for it and so keeps the request while it is less than LOAD_SPAN (8) requests
// busier than the least loaded candidate; beyond that the request spills to the least loaded
// replica, which then learns the prefix too (a hot prefix spreads over as many replicas as its
// load needs, instead of melting one). least-loaded: queue 2, kv 1.
//
// Saturation (`saturated`, the gateway queues instead of sending): every candidate is saturated,
// a candidate being saturated when the gateway's in-flight count to it ≥ maxInflight, or its
// FRESH signals show waiting ≥ maxWaiting or KV utilization ≥ maxKvUtilization. A stale candidate
// counts as saturated only if some candidate is fresh; with every candidate stale, only the
// in-flight cap applies (a broken metrics endpoint must not stall traffic). Defaults in
// DEFAULT_SATURATION; set per gateway through PipelineOptions.
//
// Several gateway processes (`up --gateway-workers N`): each counts its own in-flight requests
// exactly and publishes them, with its pick times, on the load board (load-board.ts) at each
// change; a decision reads the others' there and adds them wherever an in-flight count is used
// above (load, the in-flight cap, the tie-break's pick times), so between scrapes no process routes
// as if the replicas' other clients were idle. Two processes deciding at the same moment (each
// read the board before the other published) would both take the same idle replica: after
// publishing its pick, a process reads the board again, and if a peer took that replica after
// this decision's read and before this pick, it withdraws the pick and decides once more.
import { performance } from 'node:perf_hooks';
import { seededRandom } from '../../core/random.js';
import { createHash } from 'node:crypto';
import type {
  PrefixBlocks,
  PrefixSource,
  RouteEndpoint,
  RouteModel,
  RoutingPolicy,
  RoutingSnapshot,
  RoutingWeights,
} from '../../core/types.js';
import { lookupBlocks, tokenizerKnown } from '../../core/tokens.js';
import type { BlockSet, KvEventHub } from './kv-events.js';
import type { PeerBoard } from './load-board.js';
import type { PickRequest, Picker, ReplicaScores, RouteDecision, RouteReceipt } from './picker.js';
import {
  enginePromptParts,
  PromptBlockHashes,
  type PromptHashCacheOptions,
} from './precise-prefix.js';
import {
  BLOCK_BYTES,
  CHARS_PER_TOKEN,
  PrefixIndex,
  type LazyBlockHashes,
  type PrefixIndexOptions,
} from './prefix-index.js';
import type { SignalSource, SignalView } from './signals.js';

export const DEFAULT_POLICY: RoutingPolicy = 'prefix-aware';

export const DEFAULT_WEIGHTS: Record<RoutingPolicy, RoutingWeights> = {
  'round-robin': { prefix: 0, queue: 0, kv: 0, affinity: 0 },
  'least-loaded': { prefix: 0, queue: 2, kv: 1, affinity: 0 },
  'prefix-aware': { prefix: 2, queue: 2, kv: 1, affinity: 1 },
};

/** When every candidate is saturated (see the header). */
export interface SaturationOptions {
  /** Engine waiting queue at or above which a replica is saturated. Default 8. */
  maxWaiting: number;
  /** KV-cache utilization (0..1) at or above which a replica is saturated. Default 0.98. */
  maxKvUtilization: number;
  /** This gateway's in-flight requests to one replica at or above which it is saturated. 256. */
  maxInflight: number;
}

/**
 * Defaults: 8 waiting requests is a second batch queued behind the running one (vLLM admits up to
 * max_num_seqs = 256 at once, so waiting > 0 already means the batch is full or KV is short);
 * 0.98 KV is where preemption (recompute) starts; 256 in flight is vLLM's default max_num_seqs.
 */
export const DEFAULT_SATURATION: SaturationOptions = Object.freeze({
  maxWaiting: 8,
  maxKvUtilization: 0.98,
  maxInflight: 256,
});

export interface PipelineOptions {
  signals: SignalSource;
  index?: PrefixIndex | PrefixIndexOptions;
  /** The approximate index over the engine's KV blocks (routes with token blocks). */
  tokenIndex?: PrefixIndexOptions;
  /** Uniform [0, 1) random source for tie-breaks and version draws (seed it in tests). */
  random?: () => number;
  /** Saturation thresholds (see the header); missing fields take DEFAULT_SATURATION's. */
  saturation?: Partial<SaturationOptions>;
  /**
   * KV event subscriptions for the precise prefix source. Default: the signal source's
   * `kvEvents` (the SignalScraper's hub, closed with it); null: no precise source.
   */
  kvEvents?: KvEventHub | null;
  /** The precise source's prompt-hash checkpoint cache. */
  precise?: PromptHashCacheOptions;
  /**
   * How long (ms; a pick is remembered for this to twice this) the precise source counts this
   * gateway's own recent picks while no replica's events show the prompt — the window before the
   * engine's BlockStored events arrive. Default RECENT_MS; 0 turns it off.
   */
  pendingMs?: number;
  /**
   * Called with every pick recorded in the approximate index (the replica now holds that
   * prefix), for other gateway processes to learn it too (`recordPeer`).
   */
  onRecord?: (replicaId: string, hashes: Uint32Array, extraBlocks: number) => void;
  /**
   * The load board shared with the other gateway processes of this machine (load-board.ts):
   * their in-flight counts and pick times, read at each decision, and this process's, written at
   * each change.
   */
  board?: PeerBoard;
  /**
   * Called when recording a pick in the token-block index failed after the decision (a microtask:
   * the request is unaffected, the index misses that prompt; counted in `recordFailures`).
   */
  onRecordError?: (err: unknown) => void;
  /** Called when a pick is withdrawn because a peer took the same replica at once (see the header). */
  onRace?: () => void;
}

export function prefixSourceOf(route: RouteModel): PrefixSource {
  return route.routing?.prefixSource ?? 'auto';
}

/**
 * The approximate index's blocks for the route (route `routing.prefixBlocks`, see PREFIX_BLOCKS):
 * `tokens` only where the gateway knows the engine's tokenizer; `auto` is tokens there when the
 * route routes on the approximate index alone.
 */
export function prefixBlocksOf(route: RouteModel): Exclude<PrefixBlocks, 'auto'> {
  if (!tokenizerKnown(route.engine)) return 'text';
  const b = route.routing?.prefixBlocks ?? 'auto';
  if (b !== 'auto') return b;
  return prefixSourceOf(route) === 'approximate' ? 'tokens' : 'text';
}

/** Whether the route's approximate prefix matches come from the token-block index. */
function usesTokenIndex(route: RouteModel): boolean {
  return prefixSourceOf(route) !== 'precise' && prefixBlocksOf(route) === 'tokens';
}

/** Whether the route's replicas are subscribed to for precise prefix data (engine `sim`). */
export function wantsKvEvents(route: RouteModel): boolean {
  return (
    route.engine === 'sim' &&
    prefixSourceOf(route) !== 'approximate' &&
    policyOf(route) !== 'round-robin' &&
    weightsOf(route).prefix > 0
  );
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
/** Load difference (requests) over which the queue score falls from 1 to 0 (see the header). */
export const LOAD_SPAN = 8;
/** Prompts shorter than this many index blocks (~512 tokens) get a proportionally smaller prefix score. */
export const PREFIX_MIN_BLOCKS = 16;
/** How long a generation of the precise source's recent picks lasts (ms; see RoutingPipeline). */
export const RECENT_MS = 1000;
const RECENT_INDEX: PrefixIndexOptions = {
  defaultEntriesPerReplica: 4096,
  globalMaxEntries: 1 << 16,
};
const NO_REPLICAS: ReadonlySet<string> = new Set();

/** The same floor for the precise source, in tokens. */
export const PRECISE_MIN_TOKENS = 512;
/** Fields per candidate in the flat score array. */
const FIELDS = 8;
/** Prefix sources by code: 1 the text-block index, 2 KV events, 3 the token-block index. */
const SOURCES = [undefined, 'approximate', 'precise', 'approximate'] as const;

const round3 = (x: number): number => Math.round(x * 1000) / 1000;
/** ms since the epoch, sub-ms: comparable between the processes of one machine. */
const sharedClock = (): number => performance.timeOrigin + performance.now();
const NO_EXCLUDE: ReadonlySet<string> = new Set();
/** A decision's board reads (saturation check, then the pick) share one read of it (ms). */
const BOARD_READ_MS = 0.05;

export class RoutingPipeline implements Picker {
  readonly index: PrefixIndex;
  /**
   * The approximate index over the engine's KV blocks (`prefixBlocks` tokens): keyed by the
   * engine's block hashes (folded to 32 bits), sized from each replica's `num_gpu_blocks`.
   */
  readonly tokenIndex: PrefixIndex;
  private readonly signals: SignalSource;
  private readonly random: () => number;
  private readonly saturation: SaturationOptions;
  private readonly inflight = new Map<string, number>();
  private readonly board: PeerBoard | undefined;
  /** When the board was last read (performance.now(), and on the shared clock). */
  private boardReadAt = Number.NEGATIVE_INFINITY;
  private boardReadClock = Number.NEGATIVE_INFINITY;
  /** Inside the second decision after a race (see the header): no third. */
  private redeciding = false;
  private readonly onRace: (() => void) | undefined;
  /** This gateway's in-flight count per replica when its signals were last scraped. */
  private readonly atScrape = new Map<string, number>();
  private readonly rr = new Map<string, number>();
  /**
   * When this process last picked each replica (tie-break; its peers' are on the board): a clock
   * shared by the processes of one machine (ms since the epoch, sub-ms resolution), strictly
   * increasing within this process.
   */
  private lastPickAt = 0;
  private readonly lastPicked = new Map<string, number>();
  /** The replica's pick time before the last `claim` (for withdrawing it). */
  private prevPicked = -1;
  // Per-decision scratch (reused: no allocation per candidate).
  private views: SignalView[] = [];
  private loads = new Float64Array(64);
  private sets: (BlockSet | undefined)[] = [];
  private plen = new Int32Array(64);
  private alive = new Int32Array(64);
  /** KV event subscriptions (precise prefix source); undefined: approximate only. */
  readonly kvEvents: KvEventHub | undefined;
  /** The engine's block hashes of the prompt being routed (precise source). */
  readonly promptHashes: PromptBlockHashes;
  /**
   * This gateway's own picks of the last pendingMs–2×pendingMs for precise-source routes, in two
   * generations: the engine's BlockStored events for a prompt arrive only after its prefill, so
   * a repeat sent meanwhile would find no replica holding it (see pick).
   */
  private readonly recent = [new PrefixIndex(RECENT_INDEX), new PrefixIndex(RECENT_INDEX)];
  private recentSince = 0;
  private readonly pendingMs: number;
  private readonly onRecord: PipelineOptions['onRecord'];
  private readonly onRecordError: PipelineOptions['onRecordError'];
  /** Replica ids in the routing table (peer picks for others are dropped). */
  private routed: ReadonlySet<string> = new Set();
  /** Per replica: its block set's `removedAt` when its recent picks were last checked. */
  private readonly recentEpoch = new Map<string, number>();
  /** Replicas of routes whose approximate index is the token-block one (peer picks go there). */
  private tokenRouted: ReadonlySet<string> = new Set();
  /**
   * Picks to record in an approximate index, done after the decision (`flushRecords`): nothing
   * the decision needs, so not on its path. In the token-block index a pick needs all of the
   * prompt's engine blocks, which the decision's walk does not produce (it stops at the first
   * block no replica holds) — recording tokenizes the rest of the prompt; in the text-block index
   * the record updates a set per checkpoint of a table of megabytes (~10 µs at 32k tokens).
   */
  private toRecord: PendingRecord[] = [];
  private recordScheduled = false;
  private tokenHashes = new Uint32Array(256);
  /** The fleet's KV text (bytes) the checkpoint cache was last sized for, and a token block's size. */
  private fleetBytes = -1;
  private fleetBlockTokens = 16;
  /** The token-block walk's view of `promptHashes` (32-bit folds of the engine's hashes). */
  private readonly lazyTokens: LazyBlockHashes;
  /** Picks whose record failed (the microtask's errors: a routing hint lost, never a request). */
  recordFailures = 0;
  /** The microtask (one at a time: a pick while it is queued adds to `toRecord` only). */
  private readonly flushTask = (): void => {
    this.recordScheduled = false;
    this.flush();
  };
  private readonly flush = (): void => {
    try {
      this.flushRecords();
    } catch (e) {
      this.recordFailures++;
      this.onRecordError?.(e);
    }
  };

  constructor(o: PipelineOptions) {
    this.signals = o.signals;
    this.index = o.index instanceof PrefixIndex ? o.index : new PrefixIndex(o.index);
    this.tokenIndex = new PrefixIndex(o.tokenIndex);
    this.random = o.random ?? Math.random;
    this.saturation = Object.freeze({ ...DEFAULT_SATURATION, ...o.saturation });
    this.kvEvents =
      o.kvEvents === null
        ? undefined
        : (o.kvEvents ?? (o.signals as { kvEvents?: KvEventHub }).kvEvents);
    this.promptHashes = new PromptBlockHashes(o.precise);
    const ph = this.promptHashes;
    this.lazyTokens = {
      ensure: (n) => ph.ensure(n),
      at: (i) => foldHash(ph.hi(i), ph.lo(i)),
      // Resumed from checkpoints (or hashed already): no tokenizing to read them.
      get known() {
        return ph.ready;
      },
    };
    this.pendingMs = o.pendingMs ?? RECENT_MS;
    this.onRecord = o.onRecord;
    this.onRecordError = o.onRecordError;
    this.board = o.board;
    this.onRace = o.onRace;
  }

  needsPrompt(route: RouteModel): boolean {
    return weightsOf(route).prefix > 0;
  }

  /** Follows the routing table: forgets replicas that left it. */
  sync(snapshot: Pick<RoutingSnapshot, 'models'>): void {
    const ids = new Set<string>();
    for (const m of snapshot.models) for (const e of m.endpoints) ids.add(e.replicaId);
    this.routed = ids;
    this.index.retain(ids);
    const tokenIds = new Set<string>();
    for (const m of snapshot.models)
      if (usesTokenIndex(m)) for (const e of m.endpoints) tokenIds.add(e.replicaId);
    this.tokenRouted = tokenIds;
    this.tokenIndex.retain(tokenIds);
    // Picks not recorded yet for replicas that left: dropped (not given index space again).
    if (this.toRecord.length > 0) this.toRecord = this.toRecord.filter((r) => ids.has(r.replicaId));
    this.board?.retain(ids);
    if (this.kvEvents) {
      const targets: RouteEndpoint[] = [];
      for (const m of snapshot.models) if (wantsKvEvents(m)) targets.push(...m.endpoints);
      this.kvEvents.sync(targets);
    }
    for (const id of [...this.inflight.keys()]) if (!ids.has(id)) this.inflight.delete(id);
    for (const id of [...this.atScrape.keys()]) if (!ids.has(id)) this.atScrape.delete(id);
    for (const id of [...this.lastPicked.keys()]) if (!ids.has(id)) this.lastPicked.delete(id);
    for (const id of [...this.recentEpoch.keys()]) if (!ids.has(id)) this.recentEpoch.delete(id);
    for (const r of this.recent) r.retain(ids);
  }

  /** A scrape of `replicaId` just landed: later in-flight changes correct its lagging counts. */
  noteScrape(replicaId: string): void {
    this.readBoard();
    this.atScrape.set(replicaId, this.inflightTotal(replicaId));
  }

  release(replicaId: string): void {
    const n = (this.inflight.get(replicaId) ?? 0) - 1;
    if (n > 0) this.inflight.set(replicaId, n);
    else this.inflight.delete(replicaId);
    this.board?.publish(replicaId, n > 0 ? n : 0, this.lastPicked.get(replicaId) ?? -1);
  }

  /** The peers' side of the board, read at most once per BOARD_READ_MS (a decision's reads). */
  private readBoard(): void {
    if (!this.board) return;
    const now = performance.now();
    if (now - this.boardReadAt < BOARD_READ_MS) return;
    this.boardReadAt = now;
    this.boardReadClock = sharedClock();
    this.board.refresh();
  }

  /** This process's own in-flight requests to the replica. */
  inflightOf(replicaId: string): number {
    return this.inflight.get(replicaId) ?? 0;
  }

  /** Peers' in-flight requests to the replica, as of this process's last read of the board. */
  peerInflightOf(replicaId: string): number {
    return this.board ? this.board.inflight(replicaId) : 0;
  }

  /** In-flight requests to the replica from this process and its peers. */
  private inflightTotal(replicaId: string): number {
    return (this.inflight.get(replicaId) ?? 0) + (this.board ? this.board.inflight(replicaId) : 0);
  }

  /** When any process last picked the replica (tie-break; -1: never). */
  private lastPickOf(replicaId: string): number {
    const mine = this.lastPicked.get(replicaId) ?? -1;
    return this.board ? Math.max(mine, this.board.lastPick(replicaId)) : mine;
  }

  /**
   * The endpoints this request may go to: filtered (exclude, allow), then narrowed to the drawn
   * version when the route has version weights (see the header). Sets `req.version`.
   */
  candidates(route: RouteModel, req: PickRequest): RouteEndpoint[] {
    const exclude = req.exclude ?? NO_EXCLUDE;
    const allow = req.allow;
    const usable: RouteEndpoint[] = [];
    for (const e of route.endpoints) {
      if (exclude.has(e.replicaId)) continue;
      if (allow && !allow(e.replicaId)) continue;
      usable.push(e);
    }
    const weights = route.versionWeights;
    if (!weights || usable.length === 0) {
      // (Cleared, not deleted: a deleted property turns the object into a dictionary.)
      req.version = undefined;
      return usable;
    }
    const has = (v: string): boolean => {
      for (const e of usable) if (e.version === undefined || e.version === v) return true;
      return false;
    };
    let version = req.version;
    if (version === undefined || !((weights[version] ?? 0) > 0) || !has(version)) {
      version = undefined;
      let total = 0;
      for (const v in weights) if (weights[v]! > 0 && has(v)) total += weights[v]!;
      if (total > 0) {
        let u = this.random() * total;
        for (const v in weights) {
          if (!(weights[v]! > 0) || !has(v)) continue;
          version = v;
          u -= weights[v]!;
          if (u < 0) break;
        }
      }
    }
    if (version === undefined) {
      req.version = undefined;
      return usable;
    }
    req.version = version;
    return usable.filter((e) => e.version === undefined || e.version === version);
  }

  /** Whether every candidate of this request is saturated (see the header); sets `req.version`. */
  saturated(route: RouteModel, req: PickRequest): boolean {
    const cands = this.candidates(route, req);
    if (cands.length === 0) return false;
    const s = this.saturation;
    let anyFresh = false;
    this.readBoard();
    const views = this.viewsOf(cands);
    for (const v of views) anyFresh ||= !v.stale;
    for (let i = 0; i < cands.length; i++) {
      const v = views[i]!;
      if (this.inflightTotal(cands[i]!.replicaId) >= s.maxInflight) continue;
      if (v.stale) {
        if (anyFresh) continue;
        return false;
      }
      if (v.waiting >= s.maxWaiting || v.kvUtilization >= s.maxKvUtilization) continue;
      return false;
    }
    return true;
  }

  pick(route: RouteModel, req: PickRequest): RouteDecision | undefined {
    if (this.toRecord.length > 0) this.flush();
    const t0 = performance.now();
    const cands = this.candidates(route, req);
    if (cands.length === 0) return undefined;
    const policy = policyOf(route);
    this.readBoard();

    if (policy === 'round-robin') {
      const start = this.rr.get(route.model) ?? 0;
      const ep = cands[start % cands.length]!;
      this.rr.set(route.model, (start + 1) % 1_000_000_007);
      this.claim(ep.replicaId);
      return this.decide(ep, policy, () => ({}), NO_PREFIX, t0, req.version);
    }

    const w = weightsOf(route);
    const index = this.index;
    const source = prefixSourceOf(route);
    const kvEvents = this.kvEvents;
    // Prefix matches (only when the prefix scorer counts).
    let lens: Int32Array | undefined;
    let promptBlocks = 0;
    let engineText: readonly string[] | undefined;
    let preciseOn = false;
    const tokenRoute = w.prefix > 0 && req.prompt !== undefined && usesTokenIndex(route);
    if (w.prefix > 0 && req.prompt !== undefined) {
      preciseOn = kvEvents !== undefined && source !== 'approximate' && route.engine === 'sim';
      if (preciseOn || tokenRoute) {
        if (req.enginePrompt === undefined)
          req.enginePrompt = enginePromptParts(req.prompt) ?? null;
        engineText = req.enginePrompt ?? undefined;
      }
      req.hashes ??= index.hash(engineText ?? req.prompt);
      promptBlocks = req.hashes.length;
    }
    const affine =
      w.affinity > 0 && req.sessionId !== undefined ? rendezvous(req.sessionId, cands) : undefined;

    // Signals and loads.
    const n = cands.length;
    const views = this.viewsOf(cands);
    if (this.loads.length < n) this.loads = new Float64Array(n * 2);
    const loads = this.loads;
    let anyFresh = false;
    // The token-block index needs the engine's block size (the first candidate reporting one;
    // replicas of one route run one engine configuration) and the engine's prompt text.
    let tokenBs = 0;
    for (let i = 0; i < n; i++) {
      const v = views[i]!;
      if (!v.stale) anyFresh = true;
      if (w.prefix > 0 && v.numGpuBlocks > 0 && v.blockSize > 0) {
        if (tokenRoute && engineText !== undefined) {
          this.tokenIndex.setCacheEntries(cands[i]!.replicaId, v.numGpuBlocks);
          if (tokenBs === 0) tokenBs = v.blockSize;
        } else index.setCacheTokens(cands[i]!.replicaId, v.numGpuBlocks * v.blockSize);
      }
    }
    if (tokenBs > 0) this.fleetBlockTokens = tokenBs;
    // The checkpoint cache covers the text the fleet's KV caches hold (their reported sizes).
    const fleet =
      index.reportedEntries * BLOCK_BYTES +
      this.tokenIndex.reportedEntries * this.fleetBlockTokens * CHARS_PER_TOKEN;
    if (fleet !== this.fleetBytes) {
      this.fleetBytes = fleet;
      this.promptHashes.fitFleet(fleet);
    }
    let minLoad = Number.POSITIVE_INFINITY;
    for (let i = 0; i < n; i++) {
      const v = views[i]!;
      const id = cands[i]!.replicaId;
      const mine = this.inflightTotal(id);
      let load: number;
      if (!anyFresh) load = mine;
      else if (v.stale) load = Number.POSITIVE_INFINITY;
      else load = loadOf(v, mine, mine - (this.atScrape.get(id) ?? mine));
      loads[i] = load;
      if (load < minLoad) minLoad = load;
    }
    // Precise matches for the candidates with a live KV event stream.
    const sets = this.sets;
    sets.length = n;
    let precise = 0;
    let blockSize = 0;
    for (let i = 0; i < n; i++) {
      let set: BlockSet | undefined;
      if (preciseOn && engineText !== undefined) {
        const bs = views[i]!.blockSize;
        set =
          bs > 0 && (blockSize === 0 || bs === blockSize)
            ? kvEvents!.blocks(cands[i]!.replicaId)
            : undefined;
        if (set) {
          blockSize = bs;
          precise++;
        }
      }
      sets[i] = set;
    }
    let preciseTokens = 0;
    if (precise > 0) preciseTokens = this.matchPrecise(engineText!, req.hashes!, blockSize, n);
    // No replica's events show any of the prompt: if this gateway sent it somewhere in the last
    // second or two, its events may simply not have arrived yet; that pick counts (in the
    // approximate index's blocks) for the replicas with a stream.
    let pending: [Int32Array, Int32Array] | undefined;
    if (this.pendingMs > 0 && precise > 0 && promptBlocks > 0 && !this.anyPreciseMatch(n)) {
      this.rotateRecent(t0);
      for (let i = 0; i < n; i++) {
        if (sets[i] !== undefined) this.checkRecent(cands[i]!.replicaId, sets[i]!);
      }
      const [a, b] = this.recent as [PrefixIndex, PrefixIndex];
      const la = a.matchLengths(req.hashes!);
      const lb = b.matchLengths(req.hashes!);
      pending = [la, lb];
    }
    // Approximate matches for the others: the token-block index (walked as far as some replica
    // holds every checkpoint so far, hashing on demand), else the text-block index.
    let tlens: Int32Array | undefined;
    let tokenTokens = 0;
    let tokenCap = Number.POSITIVE_INFINITY;
    if (tokenBs > 0 && precise < n) {
      const ph = this.promptHashes;
      ph.begin(engineText!, req.hashes!, tokenBs);
      tlens = this.tokenIndex.matchLengthsLazy(this.lazyTokens);
      tokenTokens = ph.promptTokens;
      if (ph.ended) tokenCap = lookupBlocks(tokenTokens, tokenBs);
    } else if (promptBlocks > 0 && precise < n && source !== 'precise')
      lens = index.matchLengths(req.hashes!);
    const plen = this.plen;

    // Scores go to a flat array (FIELDS per candidate); the receipt's per-replica objects are
    // built only when read (x-inferplane-debug), so a decision allocates one small array.
    const raw = scoreTable(n * FIELDS);
    let bestTotal = Number.NEGATIVE_INFINITY;
    let best = -1;
    let ties = 0;
    const denom = Math.max(promptBlocks, PREFIX_MIN_BLOCKS);
    for (let i = 0; i < n; i++) {
      const e = cands[i]!;
      const v = views[i]!;
      let matched = 0;
      let prefix = 0;
      let src = 0;
      if (sets[i] !== undefined) {
        matched = plen[i]!;
        prefix = (matched * blockSize) / Math.max(preciseTokens, PRECISE_MIN_TOKENS);
        src = 2;
        if (pending) {
          const [a, b] = this.recent as [PrefixIndex, PrefixIndex];
          const sent = Math.max(
            pending[0][a.slotOf(e.replicaId)] ?? 0,
            pending[1][b.slotOf(e.replicaId)] ?? 0,
          );
          if (sent > 0 && sent / denom > prefix) {
            matched = sent;
            prefix = sent / denom;
            src = 1;
          }
        }
      } else if (tlens) {
        matched = Math.min(tlens[this.tokenIndex.slotOf(e.replicaId)]!, tokenCap);
        prefix = (matched * tokenBs) / Math.max(tokenTokens, PRECISE_MIN_TOKENS);
        src = 3;
      } else if (lens) {
        matched = lens[index.slotOf(e.replicaId)]!;
        prefix = matched / denom;
        src = 1;
      }
      let queue = 0;
      let kv = 0;
      if (!anyFresh) {
        queue = Math.max(0, 1 - (loads[i]! - minLoad) / LOAD_SPAN);
        kv = 1;
      } else if (!v.stale) {
        queue = Math.max(0, 1 - (loads[i]! - minLoad) / LOAD_SPAN);
        kv = Math.min(1, (1 - Math.min(1, Math.max(0, v.kvUtilization))) / KV_KNEE);
      }
      const affinity = affine === e ? 1 : 0;
      const total = w.prefix * prefix + w.queue * queue + w.kv * kv + w.affinity * affinity;
      const o = i * FIELDS;
      raw[o] = prefix;
      raw[o + 1] = queue;
      raw[o + 2] = kv;
      raw[o + 3] = affinity;
      raw[o + 4] = total;
      raw[o + 5] = src;
      raw[o + 6] = matched;
      raw[o + 7] = loads[i]!;
      if (total > bestTotal + 1e-9) {
        bestTotal = total;
        best = i;
        ties = 1;
      } else if (total > bestTotal - 1e-9) {
        ties++;
        // Tie-break: least loaded, then least recently picked (equal replicas take turns: measured
        // clearly better TTFT tails than a random choice under Poisson arrivals), then random.
        const b = best;
        if (loads[i]! < loads[b]!) best = i;
        else if (loads[i] === loads[b]) {
          const li = this.lastPickOf(e.replicaId);
          const lb = this.lastPickOf(cands[b]!.replicaId);
          if (li < lb || (li === lb && this.random() * ties < 1)) best = i;
        }
      }
    }
    const ep = cands[best]!;
    const at = this.claim(ep.replicaId);
    if (this.board && !this.redeciding && this.raced(ep.replicaId, at)) {
      this.onRace?.();
      this.redeciding = true;
      try {
        const again = this.pick(route, req);
        if (again) return again;
      } finally {
        this.redeciding = false;
      }
      this.claim(ep.replicaId); // (no second pick: the same candidates give one) keep this one
    }
    const textBlocks = req.hashes !== undefined && req.hashes.length > 0 && w.prefix > 0;
    if (tokenBs > 0 || textBlocks) {
      this.toRecord.push({
        replicaId: ep.replicaId,
        parts: tokenBs > 0 ? engineText! : NO_PARTS,
        textHashes: req.hashes!,
        blockSize: tokenBs,
        maxTokens: req.maxTokens ?? 0,
        // Only a pick the replica's events do not show yet is remembered (see `pending` above).
        recentOf:
          textBlocks && sets[best] !== undefined && this.pendingMs > 0 && this.plen[best] === 0
            ? sets[best]
            : undefined,
      });
      if (!this.recordScheduled) {
        this.recordScheduled = true;
        queueMicrotask(this.flushTask);
      }
    }
    const src = raw[best * FIELDS + 5]!;
    const matched = raw[best * FIELDS + 6]!;
    const prefixInfo: PrefixInfo =
      src === 2
        ? {
            source: 'precise',
            matched,
            prompt: lookupBlocks(preciseTokens, blockSize),
            blockTokens: blockSize,
          }
        : src === 3
          ? {
              source: 'approximate',
              matched,
              prompt: lookupBlocks(tokenTokens, tokenBs),
              blockTokens: tokenBs,
            }
          : { source: src === 1 ? 'approximate' : undefined, matched, prompt: promptBlocks };
    return this.decide(ep, policy, lazyScores(cands, raw), prefixInfo, t0, req.version);
  }

  /**
   * Counts a pick of the replica (in flight, its pick time) and publishes it on the board;
   * returns the pick time.
   */
  private claim(replicaId: string): number {
    const count = (this.inflight.get(replicaId) ?? 0) + 1;
    this.inflight.set(replicaId, count);
    this.prevPicked = this.lastPicked.get(replicaId) ?? -1;
    const at = Math.max(sharedClock(), this.lastPickAt + 0.001);
    this.lastPickAt = at;
    this.lastPicked.set(replicaId, at);
    this.board?.publish(replicaId, count, at);
    return at;
  }

  /**
   * Whether a peer picked the replica after this decision read the board and before this pick
   * (`at`, already published): then this decision did not see it, and the pick is withdrawn
   * (in-flight count and pick time back as they were; true). The peer, if it reads the board
   * only now, sees this pick as later than its own and keeps its pick.
   */
  private raced(replicaId: string, at: number): boolean {
    const board = this.board!;
    const before = this.boardReadClock;
    board.refresh();
    this.boardReadAt = performance.now();
    this.boardReadClock = sharedClock();
    const peer = board.lastPick(replicaId);
    if (!(peer > before && peer < at)) return false;
    const count = (this.inflight.get(replicaId) ?? 1) - 1;
    if (count > 0) this.inflight.set(replicaId, count);
    else this.inflight.delete(replicaId);
    const prev = this.prevPicked;
    if (prev > 0) this.lastPicked.set(replicaId, prev);
    else this.lastPicked.delete(replicaId);
    board.publish(replicaId, count, prev > 0 ? prev : -1);
    return true;
  }

  /** Whether some candidate's KV events show at least the prompt's first block. */
  private anyPreciseMatch(n: number): boolean {
    for (let i = 0; i < n; i++) if (this.sets[i] !== undefined && this.plen[i]! > 0) return true;
    return false;
  }

  /**
   * Forgets a replica's recent picks once its events show it lost blocks (an eviction or a
   * clear since they were made): from then on only its events say what it holds.
   */
  private checkRecent(replicaId: string, set: BlockSet): void {
    if (this.recentEpoch.get(replicaId) === set.removedAt) return;
    this.recentEpoch.set(replicaId, set.removedAt);
    this.recent[0]!.remove(replicaId);
    this.recent[1]!.remove(replicaId);
  }

  /**
   * A pick another gateway process made (its `onRecord`): the replica holds that prefix now.
   * Only for replicas in this pipeline's routing table (a late message about one that left is
   * dropped, not given index space).
   */
  recordPeer(replicaId: string, hashes: ArrayLike<number>, extraBlocks = 0): void {
    if (hashes.length === 0 || !this.routed.has(replicaId)) return;
    if (this.tokenRouted.has(replicaId)) this.tokenIndex.record(replicaId, hashes, extraBlocks);
    else this.index.record(replicaId, hashes);
  }

  /**
   * Records the picks waiting (see `toRecord`) in their index and offers them to the peers: a
   * text-block pick as its hashes; a token-block pick with the prompt's engine blocks hashed to
   * the end (resuming from the checkpoints its decision passed, and leaving new ones for the next
   * prompt sharing it). Runs as a microtask after the pick (the request is on its way by then:
   * the gateway writes it to the upstream connection synchronously) and, at the latest, before
   * the next decision.
   */
  flushRecords(): void {
    const q = this.toRecord;
    if (q.length === 0) return;
    try {
      for (let j = 0; j < q.length; j++) {
        const r = q[j]!;
        if (r.blockSize > 0) this.recordTokens(r);
        else {
          this.index.record(r.replicaId, r.textHashes);
          this.onRecord?.(r.replicaId, r.textHashes, 0);
        }
        if (r.recentOf !== undefined) {
          this.rotateRecent(performance.now());
          this.checkRecent(r.replicaId, r.recentOf);
          this.recent[0]!.record(r.replicaId, r.textHashes);
        }
      }
    } finally {
      q.length = 0;
    }
  }

  /** Hashes one pick's prompt to its end and records it in the token-block index. */
  private recordTokens(r: PendingRecord): void {
    if (!this.tokenRouted.has(r.replicaId)) return;
    const ph = this.promptHashes;
    const max = this.tokenIndex.maxPromptBlocks;
    ph.begin(r.parts, r.textHashes, r.blockSize);
    const n = Math.min(ph.ensure(max), max);
    if (n === 0) return;
    ph.materialize();
    if (this.tokenHashes.length < n) this.tokenHashes = new Uint32Array(n * 2);
    const out = this.tokenHashes;
    const his = ph.his;
    const los = ph.los;
    for (let i = 0; i < n; i++) out[i] = foldHash(his[i]!, los[i]!);
    const hashes = out.subarray(0, n);
    // The blocks the request takes beyond its prompt's whole ones: the partial last block and
    // its output (up to max_tokens) — allocated from the replica's cache like any others.
    const tokens = ph.promptTokens;
    const bs = r.blockSize;
    const extra = Math.ceil((tokens + r.maxTokens) / bs) - Math.floor(tokens / bs);
    this.tokenIndex.record(r.replicaId, hashes, extra);
    this.onRecord?.(r.replicaId, hashes, extra);
  }

  /** Starts a new generation of recent picks every pendingMs (the oldest is forgotten). */
  private rotateRecent(now: number): void {
    if (now - this.recentSince < this.pendingMs) return;
    const older = this.recent[1]!;
    older.retain(NO_REPLICAS);
    this.recent[1] = this.recent[0]!;
    this.recent[0] = older;
    this.recentSince = now;
  }

  /**
   * Fills `plen[i]` for every candidate with a block set (`sets[i]`): the leading blocks of the
   * prompt it holds — the index of the first block it lacks — capped at what the engine looks up.
   * The same result as walking the engine's block hashes one by one while some candidate holds
   * every block so far, with less probing: over the blocks resumed from checkpoints (known
   * without tokenizing), a candidate whose set is ancestor-closed (`BlockSet.closed`: then the
   * blocks it holds of any prompt are a prefix of it) is binary-searched — is the last such
   * block held, else where does holding stop — and any other candidate is walked block by block;
   * past them, the candidates holding all of them are walked as before, hashing lazily (the
   * hasher then reads exactly as far as the one-by-one walk would). Returns the prompt's tokens
   * (exact when the walk read the whole prompt, else extrapolated).
   */
  private matchPrecise(
    text: readonly string[],
    textHashes: Uint32Array,
    blockSize: number,
    n: number,
  ): number {
    if (this.plen.length < n) {
      this.plen = new Int32Array(n * 2);
      this.alive = new Int32Array(n * 2);
    }
    const { sets, plen, alive } = this;
    const ph = this.promptHashes;
    ph.begin(text, textHashes, blockSize);
    // At least one block, so that the prompt's size can be extrapolated when nothing matches.
    ph.ensure(1);
    let live = 0;
    for (let i = 0; i < n; i++) {
      plen[i] = 0;
      if (sets[i] !== undefined && sets[i]!.size > 0) alive[live++] = i;
    }
    // Blocks resumed from checkpoints: per candidate, its first missing one among them.
    // Block 0 first, for every candidate: most candidates lack it (a probe each), as in a walk.
    const r0 = ph.resumed;
    if (r0 > 0 && live > 0) {
      const hi0 = ph.hi(0);
      const lo0 = ph.lo(0);
      let k = 0;
      let walked = false;
      for (let j = 0; j < live; j++) {
        const i = alive[j]!;
        const set = sets[i]!;
        let m: number;
        if (!set.hasFirst(hi0, lo0)) m = 0;
        else if (set.closed) m = firstMissClosed(set, ph, r0);
        else {
          if (!walked) {
            ph.materialize();
            walked = true;
          }
          m = firstMiss(set, ph.his, ph.los, r0);
        }
        if (m >= r0) alive[k++] = i;
        else plen[i] = m;
      }
      live = k;
    }
    // Further blocks: hashed as far as some candidate holds every block so far.
    let b = r0;
    let ready = ph.ready;
    let his = ph.his;
    let los = ph.los;
    while (live > 0) {
      if (b >= ready) {
        ready = ph.ensure(b + 1);
        if (ready <= b) break;
        his = ph.his;
        los = ph.los;
      }
      const hi = his[b]!;
      const lo = los[b]!;
      let k = 0;
      for (let j = 0; j < live; j++) {
        const i = alive[j]!;
        const set = sets[i]!;
        if (b === 0 ? set.hasFirst(hi, lo) : set.has(hi, lo)) alive[k++] = i;
        else plen[i] = b;
      }
      live = k;
      b++;
    }
    for (let j = 0; j < live; j++) plen[alive[j]!] = b;
    const tokens = ph.promptTokens;
    if (ph.ended) {
      const cap = lookupBlocks(tokens, blockSize);
      for (let i = 0; i < n; i++) if (plen[i]! > cap) plen[i] = cap;
    }
    return tokens;
  }

  private viewsOf(cands: readonly RouteEndpoint[]): SignalView[] {
    const views = this.views;
    // (Only when it changes: storing an array's length is a call into the runtime.)
    if (views.length !== cands.length) views.length = cands.length;
    for (let i = 0; i < cands.length; i++) views[i] = this.signals.view(cands[i]!.replicaId);
    return views;
  }

  private decide(
    ep: RouteEndpoint,
    policy: RoutingPolicy,
    scores: () => Record<string, ReplicaScores>,
    prefix: PrefixInfo,
    t0: number,
    version: string | undefined,
  ): RouteDecision {
    return {
      endpoint: ep,
      receipt: new Receipt(
        policy,
        ep,
        scores,
        prefix,
        Math.round((performance.now() - t0) * 1000 * 10) / 10,
        version,
      ),
    };
  }
}

/**
 * A decision's receipt; its per-replica scores are built only when read (the debug header, a
 * recorded span). A class, not an object literal with a `get scores()`: that getter is a new
 * function in every literal, so V8 gave every receipt a hidden class of its own — allocated in
 * the old generation, ~300 B a decision: most of what the gateway promoted (a mark-compact
 * every 3–10 s at 10k req/s, each stalling its loop 20–30 ms in all).
 */
class Receipt implements RouteReceipt {
  readonly policy: RoutingPolicy;
  readonly replica: string;
  readonly index: number;
  readonly matchedBlocks: number;
  readonly promptBlocks: number;
  readonly prefixSource?: 'precise' | 'approximate';
  readonly blockTokens?: number;
  readonly decisionMicros: number;
  readonly version?: string;
  #make: (() => Record<string, ReplicaScores>) | undefined;
  #built: Record<string, ReplicaScores> | undefined;

  constructor(
    policy: RoutingPolicy,
    ep: RouteEndpoint,
    scores: () => Record<string, ReplicaScores>,
    prefix: PrefixInfo,
    decisionMicros: number,
    version: string | undefined,
  ) {
    this.policy = policy;
    this.replica = ep.replicaId;
    this.index = ep.index;
    this.matchedBlocks = prefix.matched;
    this.promptBlocks = prefix.prompt;
    if (prefix.source !== undefined) this.prefixSource = prefix.source;
    if (prefix.blockTokens !== undefined) this.blockTokens = prefix.blockTokens;
    this.decisionMicros = decisionMicros;
    if (version !== undefined) this.version = version;
    this.#make = scores;
  }

  get scores(): Record<string, ReplicaScores> {
    if (this.#built === undefined) {
      this.#built = this.#make!();
      this.#make = undefined;
    }
    return this.#built;
  }

  /** The receipt as the debug header sends it (the scores included, in the fields' order). */
  toJSON(): RouteReceipt {
    return {
      policy: this.policy,
      replica: this.replica,
      index: this.index,
      scores: this.scores,
      matchedBlocks: this.matchedBlocks,
      promptBlocks: this.promptBlocks,
      ...(this.prefixSource !== undefined ? { prefixSource: this.prefixSource } : {}),
      ...(this.blockTokens !== undefined ? { blockTokens: this.blockTokens } : {}),
      decisionMicros: this.decisionMicros,
      ...(this.version !== undefined ? { version: this.version } : {}),
    };
  }
}

/** A pick waiting to be recorded (`flushRecords`); blockSize 0: in the text-block index. */
interface PendingRecord {
  replicaId: string;
  /** The engine's prompt text (token-block records only). */
  parts: readonly string[];
  /** The prompt's text-block hashes: what a text record stores; a token record's checkpoint keys. */
  textHashes: Uint32Array;
  blockSize: number;
  maxTokens: number;
  /**
   * The replica's KV event set when the pick is also remembered among the recent picks (a
   * precise-source pick its events do not show yet; see `pendingMs`).
   */
  recentOf: BlockSet | undefined;
}
const NO_PARTS: readonly string[] = [];

interface PrefixInfo {
  source: 'precise' | 'approximate' | undefined;
  matched: number;
  prompt: number;
  blockTokens?: number;
}
const NO_PREFIX: PrefixInfo = { source: undefined, matched: 0, prompt: 0 };

/**
 * A zeroed array of doubles in the JavaScript heap. Not a Float64Array: a typed array of more than
 * 64 bytes gets its own backing store outside the heap (allocated, zeroed and tracked one by one:
 * ~3.5 µs for 64 replicas' table on the 2-core dev machine, page faults included, against < 1 µs
 * here, where young objects are bump-allocated in memory already mapped). (The prompt's block
 * hashes stay a Uint32Array: as an array of doubles, twice the bytes in the young generation, the
 * token-block decision's p99 was 1.7–2.6× worse side by side, its scavenges landing in decisions.)
 */
function scoreTable(len: number): number[] {
  return new Array<number>(len).fill(0);
}

/** The receipt's per-replica scores, built from the flat array when first read. */
function lazyScores(
  cands: readonly RouteEndpoint[],
  raw: readonly number[],
): () => Record<string, ReplicaScores> {
  return () => {
    const out: Record<string, ReplicaScores> = {};
    for (let i = 0; i < cands.length; i++) {
      const o = i * FIELDS;
      const source = SOURCES[raw[o + 5]!];
      out[cands[i]!.replicaId] = {
        prefix: round3(raw[o]!),
        queue: round3(raw[o + 1]!),
        kv: round3(raw[o + 2]!),
        affinity: raw[o + 3]!,
        total: round3(raw[o + 4]!),
        ...(source !== undefined ? { prefixSource: source, matchedBlocks: raw[o + 6]! } : {}),
        ...(Number.isFinite(raw[o + 7]) ? { load: round3(raw[o + 7]!) } : {}),
      };
    }
    return out;
  };
}

/**
 * Load of a replica in requests. The engine's counts (running + waiting) lag by up to a scrape
 * period; acting on them alone makes every pick in that window avoid (or pile onto) the same
 * replica and the fleet oscillates. So they are corrected by `delta`, the change of this gateway's
 * in-flight count there since the scrape (its own, exact and instant, plus its peer processes',
 * a few ms behind), and never taken below that in-flight count (so with this gateway as the only
 * client the load is never stale). A waiting request counts once more (it delays every TTFT
 * behind it).
 */
function loadOf(v: SignalView, mine: number, delta: number): number {
  const waiting = Math.max(0, v.waiting + Math.min(0, delta));
  return Math.max(mine, v.waiting + v.running + delta) + waiting;
}

/** The engine's 64-bit block hash (two uint32 halves) folded to the index's 32 bits. */
function foldHash(hi: number, lo: number): number {
  return (hi ^ Math.imul(lo, 0x9e3779b1)) >>> 0;
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

/** The first of the prompt's blocks [0, n) that `set` lacks (n: none), probing each in order. */
export function firstMiss(set: BlockSet, his: Uint32Array, los: Uint32Array, n: number): number {
  for (let b = 0; b < n; b++) if (!set.has(his[b]!, los[b]!)) return b;
  return n;
}

/** Block hashes by position (PromptBlockHashes). */
export interface BlockHashes {
  hi(i: number): number;
  lo(i: number): number;
}

/**
 * `firstMiss` for an ancestor-closed set (`set.closed`): what it holds of the prompt's chained
 * blocks is a prefix of them, so a binary search finds where it ends (log2 n probes).
 */
export function firstMissClosed(set: BlockSet, h: BlockHashes, n: number): number {
  if (n <= 0) return 0;
  if (set.has(h.hi(n - 1), h.lo(n - 1))) return n;
  // Invariant: every block before lo is held; block hi is not.
  let lo = 0;
  let hi = n - 1;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (set.has(h.hi(mid), h.lo(mid))) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
