// The control-plane API contract (`/api/v1` answers): the server builds these, the CLI reads them.
import type { DeploymentSpec } from './schemas.js';
import type { TenantLimits } from './types.js';

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
}

export interface Tenant {
  id: string;
  name: string;
  createdAt: string;
  /** Gateway limits; an absent field means unlimited. */
  limits: TenantLimits;
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
