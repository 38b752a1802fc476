// Teams and API keys. Keys are stored as sha256 digests; the plaintext is returned once.
import { InferplaneError } from '../core/errors.js';
import { hashApiKey, keyPrefix, newApiKey, newId } from '../core/ids.js';
import { isoNow } from '../core/clock.js';
import {
  NameSchema,
  TenantLimitsPatchSchema,
  TenantLimitsSchema,
  TenantPatchSchema,
  TenantPolicySchema,
  TenantQuotaSchema,
  parseOrThrow,
  type DeploymentSpec,
  type TenantPatch,
} from '../core/schemas.js';
import type {
  CreatedKey,
  Tenant,
  TenantSummary,
  TenantUsage,
  TenantView,
} from '../core/api-types.js';
import type {
  KeyEntry,
  TenantLimits,
  TenantPolicy,
  TenantQuota,
  TenantRoute,
} from '../core/types.js';
import type { Db } from '../store/db.js';
import type { TenantTable } from '../store/schema.js';
import { quotaLines, sumUsage } from './quota.js';

export type Principal =
  | { kind: 'operator'; keyId: string }
  | { kind: 'tenant'; keyId: string; tenantId: string; tenantName: string };

export class TenancyService {
  constructor(private readonly db: Db) {}

  /**
   * Creates a tenant; `limits`, `quota` and `policy` (optional) are validated with their
   * schemas (TenantLimitsSchema, TenantQuotaSchema, TenantPolicySchema).
   */
  async createTenant(
    name: string,
    limits?: unknown,
    quota?: unknown,
    policy?: unknown,
  ): Promise<Tenant> {
    parseOrThrow(NameSchema, name, 'tenant name', 'name');
    const parsed: TenantLimits =
      limits === undefined
        ? {}
        : parseOrThrow(TenantLimitsSchema, limits, 'tenant limits', 'limits');
    const q: TenantQuota =
      quota === undefined ? {} : parseOrThrow(TenantQuotaSchema, quota, 'tenant quota', 'quota');
    const pol: TenantPolicy =
      policy === undefined
        ? {}
        : parseOrThrow(TenantPolicySchema, policy, 'tenant policy', 'policy');
    const existing = await this.findTenant(name);
    if (existing) throw new InferplaneError('IP_TENANT_EXISTS', `tenant ${name} already exists`);
    const tenant = {
      id: newId('ten'),
      name,
      created_at: isoNow(),
      limits: JSON.stringify(canonicalLimits(parsed)),
      quota: JSON.stringify(canonicalQuota(q)),
      policy: JSON.stringify(canonicalPolicy(pol)),
    };
    await this.db.insertInto('tenants').values(tenant).execute();
    return {
      id: tenant.id,
      name,
      createdAt: tenant.created_at,
      limits: canonicalLimits(parsed),
      quota: canonicalQuota(q),
      policy: canonicalPolicy(pol),
    };
  }

  async findTenant(name: string): Promise<Tenant | undefined> {
    const row = await this.db
      .selectFrom('tenants')
      .selectAll()
      .where('name', '=', name)
      .executeTakeFirst();
    return row ? tenantFromRow(row) : undefined;
  }

  /**
   * Changes a tenant's limits, quota and policy in one transaction (body of PATCH
   * /api/v1/tenants/{name}, validated with TenantPatchSchema): within each, a value sets a field,
   * null clears it, an absent field is kept; `quota: null` / `policy: null` clear all.
   */
  async patchTenant(name: string, patch: unknown): Promise<Tenant> {
    const p: TenantPatch = parseOrThrow(TenantPatchSchema, patch, 'tenant');
    return this.db.transaction().execute(async (trx) => {
      const row = await trx
        .selectFrom('tenants')
        .selectAll()
        .where('name', '=', name)
        .executeTakeFirst();
      if (!row) throw new InferplaneError('IP_TENANT_NOT_FOUND', `tenant ${name} not found`);
      const t = tenantFromRow(row);
      const limits = p.limits ? mergeLimits(t.limits, p.limits) : t.limits;
      const quota = p.quota === undefined ? t.quota : mergeQuota(t.quota, p.quota);
      const policy = p.policy === undefined ? t.policy : mergePolicy(t.policy, p.policy);
      await trx
        .updateTable('tenants')
        .set({
          limits: JSON.stringify(limits),
          quota: JSON.stringify(quota),
          policy: JSON.stringify(policy),
        })
        .where('id', '=', row.id)
        .execute();
      return { ...t, limits, quota, policy };
    });
  }

  /**
   * What a team's deployments ask for now (desired state), optionally leaving one deployment
   * out (admission counts the new spec in its place).
   */
  async usage(tenantId: string, exceptDeploymentId?: string): Promise<TenantUsage> {
    let q = this.db.selectFrom('deployments').select(['spec']).where('tenant_id', '=', tenantId);
    if (exceptDeploymentId !== undefined) q = q.where('id', '!=', exceptDeploymentId);
    const rows = await q.execute();
    return sumUsage(rows.map((r) => JSON.parse(r.spec) as DeploymentSpec));
  }

  /** A tenant with its usage and its quotas together (GET /api/v1/tenants/{name}). */
  async view(name: string): Promise<TenantView> {
    const tenant = await this.getTenant(name);
    const usage = await this.usage(tenant.id);
    return { tenant, usage, quotas: quotaLines(tenant.quota, tenant.limits, usage) };
  }

  /**
   * Changes a tenant's limits: a number sets a field, null clears it (unlimited), an absent
   * field is kept. Returns the tenant with its resulting limits. The caller republishes the
   * routing snapshot (the API's onChange), as for keys.
   */
  async setLimits(name: string, patch: unknown): Promise<Tenant> {
    const p = parseOrThrow(TenantLimitsPatchSchema, patch, 'tenant limits', 'limits');
    return this.db.transaction().execute(async (trx) => {
      const row = await trx
        .selectFrom('tenants')
        .selectAll()
        .where('name', '=', name)
        .executeTakeFirst();
      if (!row) throw new InferplaneError('IP_TENANT_NOT_FOUND', `tenant ${name} not found`);
      const limits = mergeLimits(parseLimits(row.limits), p);
      await trx
        .updateTable('tenants')
        .set({ limits: JSON.stringify(limits) })
        .where('id', '=', row.id)
        .execute();
      return { ...tenantFromRow(row), limits };
    });
  }

  /** Every tenant with its limits, for the gateway's routing snapshot. */
  async tenantRoutes(): Promise<TenantRoute[]> {
    const rows = await this.db
      .selectFrom('tenants')
      .select(['id', 'name', 'limits'])
      .orderBy('name')
      .execute();
    return rows.map((r) => ({ id: r.id, name: r.name, limits: parseLimits(r.limits) }));
  }

  async getTenant(name: string): Promise<Tenant> {
    const t = await this.findTenant(name);
    if (!t) throw new InferplaneError('IP_TENANT_NOT_FOUND', `tenant ${name} not found`);
    return t;
  }

  async listTenants(): Promise<TenantSummary[]> {
    const rows = await this.db
      .selectFrom('tenants as t')
      .select((eb) => [
        't.id',
        't.name',
        't.created_at',
        't.limits',
        't.quota',
        't.policy',
        eb
          .selectFrom('api_keys as k')
          .whereRef('k.tenant_id', '=', 't.id')
          .where('k.revoked_at', 'is', null)
          .select((e) => e.fn.countAll<number>().as('n'))
          .as('keys'),
        eb
          .selectFrom('deployments as d')
          .whereRef('d.tenant_id', '=', 't.id')
          .select((e) => e.fn.countAll<number>().as('n'))
          .as('deployments'),
      ])
      .orderBy('t.name')
      .execute();
    return rows.map((r) => ({
      id: r.id,
      name: r.name,
      createdAt: r.created_at,
      keys: Number(r.keys ?? 0),
      deployments: Number(r.deployments ?? 0),
      limits: parseLimits(r.limits),
      quota: parseQuota(r.quota),
      policy: parsePolicy(r.policy),
    }));
  }

  /** Creates a key for a tenant (or an operator key when tenantName is null). */
  async createKey(
    tenantName: string | null,
    description?: string,
    plaintext?: string,
  ): Promise<CreatedKey> {
    const tenant = tenantName === null ? undefined : await this.getTenant(tenantName);
    const key = plaintext ?? newApiKey();
    const row = {
      id: newId('key'),
      tenant_id: tenant?.id ?? null,
      role: tenant ? ('tenant' as const) : ('operator' as const),
      hash: hashApiKey(key),
      prefix: keyPrefix(key),
      description: description ?? null,
      created_at: isoNow(),
      revoked_at: null,
    };
    await this.db.insertInto('api_keys').values(row).execute();
    return { key, id: row.id, tenant: tenantName, prefix: row.prefix, createdAt: row.created_at };
  }

  /** Makes sure an operator key with this plaintext exists (INFERPLANE_ADMIN_KEY). */
  async ensureOperatorKey(plaintext: string): Promise<void> {
    const hash = hashApiKey(plaintext);
    const row = await this.db
      .selectFrom('api_keys')
      .select(['id', 'role', 'revoked_at'])
      .where('hash', '=', hash)
      .executeTakeFirst();
    if (row?.role === 'operator' && row.revoked_at === null) return;
    if (row) {
      throw new InferplaneError('IP_CONFLICT', 'the admin key is already in use as a tenant key');
    }
    await this.createKey(null, 'bootstrap operator key', plaintext);
  }

  async hasOperatorKey(): Promise<boolean> {
    const row = await this.db
      .selectFrom('api_keys')
      .select('id')
      .where('role', '=', 'operator')
      .where('revoked_at', 'is', null)
      .executeTakeFirst();
    return row !== undefined;
  }

  /** Every live key, for the gateway's routing snapshot and API authentication. */
  async keyEntries(): Promise<KeyEntry[]> {
    const rows = await this.db
      .selectFrom('api_keys as k')
      .leftJoin('tenants as t', 't.id', 'k.tenant_id')
      .select(['k.id', 'k.hash', 'k.role', 'k.tenant_id', 't.name'])
      .where('k.revoked_at', 'is', null)
      .execute();
    return rows.map((r) => ({
      hash: r.hash,
      keyId: r.id,
      role: r.role,
      tenantId: r.tenant_id,
      tenantName: r.name,
    }));
  }

  async authenticate(key: string | undefined): Promise<Principal> {
    if (!key) {
      throw new InferplaneError(
        'IP_UNAUTHENTICATED',
        'missing API key: send Authorization: Bearer <key>',
      );
    }
    const row = await this.db
      .selectFrom('api_keys as k')
      .leftJoin('tenants as t', 't.id', 'k.tenant_id')
      .select(['k.id', 'k.role', 'k.tenant_id', 't.name'])
      .where('k.hash', '=', hashApiKey(key))
      .where('k.revoked_at', 'is', null)
      .executeTakeFirst();
    if (!row) throw new InferplaneError('IP_UNAUTHENTICATED', 'invalid API key');
    if (row.role === 'operator') return { kind: 'operator', keyId: row.id };
    return {
      kind: 'tenant',
      keyId: row.id,
      tenantId: row.tenant_id ?? '',
      tenantName: row.name ?? '',
    };
  }
}

const LIMIT_FIELDS = ['requestsPerSecond', 'tokensPerMinute', 'maxConcurrency'] as const;

/** The limits with their fields in a fixed order (stable JSON, stable snapshots). */
function canonicalLimits(l: TenantLimits): TenantLimits {
  const out: TenantLimits = {};
  for (const field of LIMIT_FIELDS) {
    const v = l[field];
    if (v !== undefined) out[field] = v;
  }
  return out;
}

function mergeLimits(current: TenantLimits, p: NonNullable<TenantPatch['limits']>): TenantLimits {
  const next: TenantLimits = { ...current };
  for (const field of LIMIT_FIELDS) {
    const v = p[field];
    if (v === null) delete next[field];
    else if (v !== undefined) next[field] = v;
  }
  return canonicalLimits(next);
}

function tenantFromRow(
  row: Pick<TenantTable, 'id' | 'name' | 'created_at'> & {
    limits: string;
    quota: string;
    policy: string;
  },
): Tenant {
  return {
    id: row.id,
    name: row.name,
    createdAt: row.created_at,
    limits: parseLimits(row.limits),
    quota: parseQuota(row.quota),
    policy: parsePolicy(row.policy),
  };
}

function mergeQuota(current: TenantQuota, p: TenantPatch['quota']): TenantQuota {
  if (!p) return {};
  const next: TenantQuota = { ...current, gpus: { ...current.gpus } };
  if (p.gpus === null) delete next.gpus;
  else if (p.gpus !== undefined) {
    for (const [type, n] of Object.entries(p.gpus)) {
      if (n === null) delete next.gpus![type];
      else next.gpus![type] = n;
    }
  }
  if (p.replicas === null) delete next.replicas;
  else if (p.replicas !== undefined) next.replicas = p.replicas;
  return canonicalQuota(next);
}

function mergePolicy(current: TenantPolicy, p: TenantPatch['policy']): TenantPolicy {
  if (!p) return {};
  const next: TenantPolicy = { ...current };
  if (p.allowedEngines === null) delete next.allowedEngines;
  else if (p.allowedEngines !== undefined) next.allowedEngines = p.allowedEngines;
  if (p.maxGpusPerReplica === null) delete next.maxGpusPerReplica;
  else if (p.maxGpusPerReplica !== undefined) next.maxGpusPerReplica = p.maxGpusPerReplica;
  if (p.requireSlo === null) delete next.requireSlo;
  else if (p.requireSlo !== undefined) next.requireSlo = p.requireSlo;
  return canonicalPolicy(next);
}

/** The quota with GPU types sorted and empty parts dropped (stable JSON). */
function canonicalQuota(q: TenantQuota): TenantQuota {
  const out: TenantQuota = {};
  const types = Object.keys(q.gpus ?? {}).sort();
  if (types.length > 0) out.gpus = Object.fromEntries(types.map((t) => [t, q.gpus![t]!]));
  if (q.replicas !== undefined) out.replicas = q.replicas;
  return out;
}

function canonicalPolicy(p: TenantPolicy): TenantPolicy {
  const out: TenantPolicy = {};
  if (p.allowedEngines !== undefined) out.allowedEngines = [...new Set(p.allowedEngines)];
  if (p.maxGpusPerReplica !== undefined) out.maxGpusPerReplica = p.maxGpusPerReplica;
  if (p.requireSlo !== undefined) out.requireSlo = p.requireSlo;
  return out;
}

function parseJsonObject(text: string): Record<string, unknown> {
  try {
    const raw: unknown = JSON.parse(text);
    return typeof raw === 'object' && raw !== null ? (raw as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

/** Reads the stored quota column; bad fields (edited by hand) are dropped (unlimited). */
export function parseQuota(text: string): TenantQuota {
  const raw = parseJsonObject(text);
  const out: TenantQuota = {};
  const gpus = TenantQuotaSchema.shape.gpus.safeParse(raw.gpus);
  if (gpus.success && gpus.data !== undefined) out.gpus = gpus.data;
  const replicas = TenantQuotaSchema.shape.replicas.safeParse(raw.replicas);
  if (replicas.success && replicas.data !== undefined) out.replicas = replicas.data;
  return canonicalQuota(out);
}

/** Reads the stored policy column; bad rules (edited by hand) are dropped. */
export function parsePolicy(text: string): TenantPolicy {
  const raw = parseJsonObject(text);
  const out: TenantPolicy = {};
  const engines = TenantPolicySchema.shape.allowedEngines.safeParse(raw.allowedEngines);
  if (engines.success && engines.data !== undefined) out.allowedEngines = engines.data;
  const max = TenantPolicySchema.shape.maxGpusPerReplica.safeParse(raw.maxGpusPerReplica);
  if (max.success && max.data !== undefined) out.maxGpusPerReplica = max.data;
  const slo = TenantPolicySchema.shape.requireSlo.safeParse(raw.requireSlo);
  if (slo.success && slo.data !== undefined) out.requireSlo = slo.data;
  return out;
}

/**
 * Reads the stored limits column. Rows are written validated; should one not parse (edited by
 * hand), its bad fields are dropped (unlimited) rather than failing every read and snapshot.
 */
export function parseLimits(text: string): TenantLimits {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return {};
  }
  if (typeof raw !== 'object' || raw === null) return {};
  const out: TenantLimits = {};
  for (const field of LIMIT_FIELDS) {
    const v = TenantLimitsSchema.shape[field].safeParse((raw as Record<string, unknown>)[field]);
    if (v.success && v.data !== undefined) out[field] = v.data;
  }
  return out;
}

/** Bearer token from an Authorization header (also accepts a bare key). */
export function bearerToken(header: string | null | undefined): string | undefined {
  if (!header) return undefined;
  const m = /^Bearer\s+(.+)$/i.exec(header.trim());
  return (m?.[1] ?? header).trim() || undefined;
}
