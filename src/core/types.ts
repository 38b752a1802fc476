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

export interface RouteRouting {
  /** Default: prefix-aware. */
  policy?: RoutingPolicy;
  /** Overrides of the policy's default scorer weights. */
  weights?: Partial<RoutingWeights>;
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
}

/** What the control plane sends the gateway; the gateway never reads the store. */
export interface RoutingSnapshot {
  version: number;
  keys: KeyEntry[];
  models: RouteModel[];
}
