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

export interface Database {
  tenants: TenantTable;
  api_keys: ApiKeyTable;
  deployments: DeploymentTable;
  replicas: ReplicaTable;
  events: EventTable;
  nodes: NodeTable;
}
