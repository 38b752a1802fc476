// Table types for Kysely. SQL stays portable (SQLite embedded, PostgreSQL in a fleet):
// JSON is stored as text, times as ISO-8601 text, booleans as integers.
import type { Generated } from 'kysely';

export interface TenantTable {
  id: string;
  name: string;
  created_at: string;
  /** TenantLimits as JSON ('{}': unlimited); added by migration 0002. */
  limits: Generated<string>;
  /** TenantQuota as JSON ('{}': unlimited); added by migration 0004. */
  quota: Generated<string>;
  /** TenantPolicy as JSON ('{}': no rules); added by migration 0004. */
  policy: Generated<string>;
}

export interface ApiKeyTable {
  id: string;
  /** null for operator keys. */
  tenant_id: string | null;
  role: 'operator' | 'tenant';
  hash: string;
  prefix: string;
  description: string | null;
  created_at: string;
  revoked_at: string | null;
}

export interface DeploymentTable {
  id: string;
  name: string;
  tenant_id: string;
  spec: string;
  generation: number;
  created_at: string;
  updated_at: string;
}

export interface ReplicaTable {
  id: string;
  deployment_id: string;
  idx: number;
  generation: number;
  state: string;
  node: string | null;
  gpus: string;
  port: number | null;
  pid: number | null;
  restarts: number;
  started_at: string | null;
  last_error: string | null;
  created_at: string;
  /** JSON ColdStart of the latest (re)start (null until one is recorded). */
  cold_start: Generated<string | null>;
}

export interface EventTable {
  id: Generated<number>;
  deployment_id: string;
  time: string;
  type: 'Normal' | 'Warning';
  reason: string;
  message: string;
  replica_idx: number | null;
}

export interface NodeTable {
  name: string;
  labels: string;
  gpus: string;
  state: string;
  last_seen: string;
}

/** Model registry and audit log; added by migration 0006. */
export interface ModelTable {
  id: string;
  tenant_id: string;
  name: string;
  created_at: string;
  updated_at: string;
}

export interface ModelVersionTable {
  id: string;
  model_id: string;
  version: string;
  /** 1, 2, ... in registration order within the model. */
  ordinal: number;
  content_hash: string;
  source: string | null;
  license: string | null;
  registered_key: string;
  registered_tenant: string | null;
  created_at: string;
}

export interface ModelArtifactTable {
  version_id: string;
  idx: number;
  uri: string;
  sha256: string;
  size: number | null;
  format: string;
}

export interface AuditLogTable {
  seq: number;
  time: string;
  actor: string;
  action: string;
  resource: string;
  /** Canonical JSON (null: none). */
  before: string | null;
  after: string | null;
  reason: string | null;
  prev_hash: string;
  hash: string;
}

export interface AuditHeadTable {
  id: number;
  seq: number;
  hash: string;
}

/** Rollout state of a deployment (RolloutState JSON, src/deploy/rollout.ts); migration 0005. */
export interface RolloutTable {
  deployment_id: string;
  state: string;
  updated_at: string;
}

export interface Database {
  tenants: TenantTable;
  api_keys: ApiKeyTable;
  deployments: DeploymentTable;
  replicas: ReplicaTable;
  events: EventTable;
  nodes: NodeTable;
  models: ModelTable;
  model_versions: ModelVersionTable;
  model_artifacts: ModelArtifactTable;
  audit_log: AuditLogTable;
  audit_head: AuditHeadTable;
  rollouts: RolloutTable;
}
