// Data shapes shared across layers (no behaviour here).

export interface GpuInfo {
  index: number;
  uuid: string;
  /** Normalised type name, e.g. H100-80GB. */
  type: string;
  memoryMiB: number;
  /** 'sim' for simulated GPUs, 'nvidia' for real ones. */
  vendor: 'sim' | 'nvidia';
}

export interface NodeInfo {
  name: string;
  labels: Record<string, string>;
  gpus: GpuInfo[];
}

export type NodeState = 'ready' | 'not-ready' | 'quarantined';

/** Replica states, in lifecycle order. */
export const REPLICA_STATES = [
  'pending',
  'starting',
  'ready',
  'unhealthy',
  'restarting',
  'stopping',
  'stopped',
  'failed',
] as const;
export type ReplicaState = (typeof REPLICA_STATES)[number];

/** A key the gateway accepts: the snapshot carries sha256 digests only, never plaintext. */
export interface KeyEntry {
  hash: string;
  keyId: string;
  role: 'operator' | 'tenant';
  tenantId: string | null;
  tenantName: string | null;
}

export interface RouteEndpoint {
  replicaId: string;
  index: number;
  /** Engine base URL, e.g. http://127.0.0.1:41234 */
  url: string;
  /** The model version this replica serves (canaries: several versions behind one model). */
  version?: string;
}

/** How the gateway picks a replica for a deployment (see src/gateway/routing/pipeline.ts). */
export const ROUTING_POLICIES = ['round-robin', 'least-loaded', 'prefix-aware'] as const;
export type RoutingPolicy = (typeof ROUTING_POLICIES)[number];

export interface RoutingWeights {
  prefix: number;
  queue: number;
  kv: number;
  affinity: number;
}

/**
 * Where the prefix scorer learns which replica holds which prompt prefix: `approximate` — the
 * gateway's own index of what it sent where; `precise` — the engine's KV event stream (the
 * simulator's `/kv/events`; replicas without a live stream score 0); `auto` — precise for the
 * replicas whose stream is up, approximate for the others.
 */
export const PREFIX_SOURCES = ['auto', 'approximate', 'precise'] as const;
export type PrefixSource = (typeof PREFIX_SOURCES)[number];

/**
 * What the approximate prefix index cuts a prompt into: `text` — 128-byte blocks of the prompt
 * text (no tokenizer needed); `tokens` — the engine's own KV blocks (`block_size` tokens, the
 * engine's block hash), where the gateway knows the engine's tokenizer (engine `sim`); `auto` —
 * tokens where the tokenizer is known and the route routes on the approximate index alone
 * (`prefixSource: approximate`), text otherwise.
 */
export const PREFIX_BLOCKS = ['auto', 'text', 'tokens'] as const;
export type PrefixBlocks = (typeof PREFIX_BLOCKS)[number];

export interface RouteRouting {
  /** Default: prefix-aware. */
  policy?: RoutingPolicy;
  /** Overrides of the policy's default scorer weights. */
  weights?: Partial<RoutingWeights>;
  /** Source of the prefix scorer's matches. Default: auto. */
  prefixSource?: PrefixSource;
  /** Blocks of the approximate prefix index. Default: auto. */
  prefixBlocks?: PrefixBlocks;
}

export interface RouteModel {
  /** The model name clients send (the deployment name). */
  model: string;
  deployment: string;
  tenantId: string;
  tenantName: string;
  engine: string;
  createdAt: string;
  /** Ready endpoints only. */
  endpoints: RouteEndpoint[];
  /** Routing policy of the deployment; absent: prefix-aware with default weights. */
  routing?: RouteRouting;
  /**
   * Traffic split across versions (canary), version → weight (any non-negative scale). Applied
   * before the picker: a version is drawn by weight among those with a usable endpoint, then the
   * pipeline scores that version's endpoints. Absent: all endpoints compete as one version.
   */
  versionWeights?: Record<string, number>;
}

/** Per-tenant limits the gateway enforces; an absent field means unlimited. */
export interface TenantLimits {
  /** Sustained requests per second (token bucket; burst of max(1, requestsPerSecond)). */
  requestsPerSecond?: number;
  /** Prompt + completion tokens per minute: estimated at admission, corrected from `usage`. */
  tokensPerMinute?: number;
  /** Requests in flight at once. */
  maxConcurrency?: number;
}

/**
 * A team's admission quotas, checked when a deployment is created or changed (desired state:
 * replicas × GPUs per replica). An absent field means unlimited. Requests/s and tokens/min are
 * the gateway's TenantLimits.
 */
export interface TenantQuota {
  /** GPUs by type (e.g. {"H100-80GB": 8}); a type not listed is unlimited. */
  gpus?: Record<string, number>;
  /** Replicas across all the team's deployments. */
  replicas?: number;
}

/** A team's deployment policy; an absent field means no rule. */
export interface TenantPolicy {
  /** `name`, `name@version` or `name@>=version` entries; a deployment must match one. */
  allowedEngines?: string[];
  /** Most GPUs one replica may use. */
  maxGpusPerReplica?: number;
  /** Deployments must carry `slo` with at least one target. */
  requireSlo?: boolean;
}

export interface TenantRoute {
  id: string;
  name: string;
  limits: TenantLimits;
}

/** What the control plane sends the gateway; the gateway never reads the store. */
export interface RoutingSnapshot {
  version: number;
  keys: KeyEntry[];
  models: RouteModel[];
  /** Tenants with their limits (absent or missing tenant: unlimited). */
  tenants?: TenantRoute[];
}
