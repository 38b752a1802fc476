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
