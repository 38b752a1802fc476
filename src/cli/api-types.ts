// Shapes of the control-plane API answers the CLI reads (`/api/v1`).

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
  spec: Record<string, unknown>;
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
}

export interface Tenant {
  id: string;
  name: string;
  createdAt: string;
}

export interface CreatedKey {
  /** Plaintext key: shown once. */
  key: string;
  id: string;
  tenant: string;
  prefix: string;
  createdAt: string;
}

export interface NodeGpu {
  index: number;
  type: string;
  memoryMiB: number;
  replica: string | null;
}

export interface NodeSummary {
  name: string;
  state: string;
  gpus: NodeGpu[];
  gpuTotal: number;
  gpuFree: number;
  labels: Record<string, string>;
}

export interface ListResponse<T> {
  items: T[];
}
