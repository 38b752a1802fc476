// The control-plane API contract (`/api/v1` answers): the server builds these, the CLI reads them.
import type { DeploymentSpec } from './schemas.js';
import type { TenantLimits, TenantPolicy, TenantQuota } from './types.js';

export interface DeploymentSummary {
  name: string;
  tenant: string;
  model: string;
  engine: string;
  replicas: { desired: number; ready: number };
  resources: { gpus: number; gpuType: string };
  phase: string;
  generation: number;
  createdAt: string;
  updatedAt: string;
  /** The current or last rollout (see RolloutView). */
  rollout?: {
    phase: string;
    stable: string;
    canary: string;
    canaryWeight: number;
    /** How long the canary's warmup took (null: not warmed yet). */
    warmupMs: number | null;
  };
}

export interface Replica {
  id: string;
  index: number;
  state: string;
  node: string | null;
  gpus: number[];
  port: number | null;
  pid: number | null;
  restarts: number;
  startedAt: string | null;
  lastError: string | null;
  /** Where the time of the latest (re)start went; absent until one is recorded. */
  coldStart?: ColdStart;
}

/**
 * Cold start of a replica, in ms per phase: artifact fetch and verify (a registered model
 * version; 0 on a cache hit), engine start (spawn), model load (process start to healthy:
 * weights loaded, engine ready), warmup (canary replicas of a rollout), ready (launch to ready,
 * in total), first token (ready to the first byte the gateway relayed from it).
 */
export interface ColdStart {
  artifactFetchMs?: number;
  artifactVerifyMs?: number;
  artifactCacheHit?: boolean;
  engineStartMs?: number;
  modelLoadMs?: number;
  warmupMs?: number;
  readyMs?: number;
  firstTokenMs?: number;
  /** A restart of the engine after a crash or failed probes (the artifact is local already). */
  restart?: boolean;
}

export interface DeploymentEvent {
  time: string;
  type: 'Normal' | 'Warning';
  reason: string;
  message: string;
  replica?: number;
}

export interface DeploymentDetail {
  spec: DeploymentSpec;
  summary: DeploymentSummary;
  replicas: Replica[];
  events: DeploymentEvent[];
}

export type ApplyResult = 'created' | 'updated' | 'unchanged';

export interface ApplyResponse {
  deployment: DeploymentSummary;
  result: ApplyResult;
}

export interface TenantSummary {
  id: string;
  name: string;
  createdAt: string;
  keys: number;
  deployments: number;
  /** Gateway limits; an absent field means unlimited. */
  limits: TenantLimits;
  /** Admission quotas (see Tenant). */
  quota?: TenantQuota;
  /** Deployment policy (see Tenant). */
  policy?: TenantPolicy;
}

export interface Tenant {
  id: string;
  name: string;
  createdAt: string;
  /** Gateway limits; an absent field means unlimited. */
  limits: TenantLimits;
  /** Admission quotas; an absent field means unlimited. */
  quota: TenantQuota;
  /** Deployment policy; an absent field means no rule. */
  policy: TenantPolicy;
}

/** What a team's deployments ask for now (desired state, not replicas running). */
export interface TenantUsage {
  deployments: number;
  replicas: number;
  /** GPUs by type: replicas × GPUs per replica, summed. */
  gpus: Record<string, number>;
}

/** One row of a team's quotas: admission quotas with their use, then the gateway limits. */
export interface QuotaLine {
  /** `gpus[H100-80GB]`, `replicas`, `requestsPerSecond`, `tokensPerMinute`, `maxConcurrency`. */
  quota: string;
  /** Enforced when deployments are admitted (`admission`) or per request (`gateway`). */
  enforcedBy: 'admission' | 'gateway';
  /** Current use (admission quotas only; the gateway's rates are on /metrics). */
  used?: number;
  /** null: unlimited. */
  limit: number | null;
}

/** GET/PATCH /api/v1/tenants/{name}. */
export interface TenantView {
  tenant: Tenant;
  usage: TenantUsage;
  /** The team's quotas together: GPUs by type and replicas (admission), rps/tpm/concurrency (gateway). */
  quotas: QuotaLine[];
}

export interface CreatedKey {
  /** Plaintext key: shown once. */
  key: string;
  id: string;
  /** null for operator keys. */
  tenant: string | null;
  prefix: string;
  createdAt: string;
}

export interface NodeGpu {
  index: number;
  uuid: string;
  type: string;
  memoryMiB: number;
  vendor: 'sim' | 'nvidia';
  /** Id of the replica holding the GPU. */
  replica: string | null;
}

export interface NodeSummary {
  name: string;
  state: string;
  lastSeen: string;
  gpus: NodeGpu[];
  gpuTotal: number;
  gpuFree: number;
  labels: Record<string, string>;
}

export interface ListResponse<T> {
  items: T[];
}

// Model registry (`/api/v1/models`) and audit log (`/api/v1/audit`).

export interface ModelArtifact {
  uri: string;
  sha256: string;
  /** Bytes; null when not known at registration (an http(s) URL registered without a size). */
  size: number | null;
  format: 'gguf' | 'safetensors' | 'onnx' | 'trt-engine';
}

export interface ModelProvenance {
  source: string | null;
  license: string | null;
  /** The API key that registered the version, and its tenant (null for an operator key). */
  registeredBy: { keyId: string; tenant: string | null };
}

export interface ModelVersion {
  model: string;
  tenant: string;
  version: string;
  artifacts: ModelArtifact[];
  provenance: ModelProvenance;
  /** sha256 of the version's canonical content (artifacts, source, license). */
  contentHash: string;
  createdAt: string;
}

export interface ModelSummary {
  name: string;
  tenant: string;
  versions: number;
  /** The most recently registered version. */
  latest: string | null;
  createdAt: string;
  updatedAt: string;
}

export interface ModelDetail {
  model: ModelSummary;
  versions: ModelVersion[];
}

export interface RegisterVersionResponse {
  model: ModelSummary;
  version: ModelVersion;
  /** `unchanged`: the same content was already registered under this version (idempotent). */
  result: 'created' | 'unchanged';
}

export interface AuditRecord {
  seq: number;
  time: string;
  /** `operator/<keyId>`, `tenant/<tenant>/<keyId>` or `system/<component>`. */
  actor: string;
  action: string;
  /** e.g. `model/<tenant>/<name>@<version>`, `deployment/<name>`, `tenant/<name>`. */
  resource: string;
  before: unknown;
  after: unknown;
  reason: string | null;
  /** Hash of the previous record (the genesis hash for seq 1). */
  prevHash: string;
  hash: string;
}

export interface AuditVerifyResult {
  ok: boolean;
  /** Records checked. */
  checked: number;
  /** The last record's seq and hash (null when the log is empty). */
  head: { seq: number; hash: string } | null;
  /** The first record found broken, why, and the record as stored (when it exists). */
  firstBad?: { seq: number; reason: string; record?: AuditRecord };
}

/** One rollout gate evaluated over the last interval: the canary's value against the threshold. */
export interface RolloutGate {
  gate: 'ttftP99Ms' | 'itlP99Ms' | 'errorRate' | 'gpuMemoryPct' | 'probe';
  /** pending: too few samples in the window; unavailable: the engine cannot report it. */
  status: 'passed' | 'failed' | 'pending' | 'unavailable';
  value: number | string | null;
  threshold: number | string;
  samples?: number;
  note?: string;
}

/** GET /api/v1/deployments/{name}/rollout. */
export interface RolloutView {
  deployment: string;
  /** None, Warming, Progressing, Promoting, RollingBack, Completed, RolledBack. */
  phase: string;
  stable: { version: string; generation: number };
  canary: { version: string; generation: number } | null;
  /** 1-based step in force (0 while warming up). */
  step: number;
  steps: number;
  /** version → share of traffic (%). */
  weights: Record<string, number>;
  gates: RolloutGate[];
  failedGate?: RolloutGate;
  reason?: string;
  intervalMs: number | null;
  pauseMs?: number;
  warmupMs: number | null;
  /** Rollback: from the traffic shift to the canary torn down. */
  rollbackMs?: number;
  startedAt: string | null;
  finishedAt: string | null;
}
