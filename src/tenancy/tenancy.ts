// Teams and API keys. Keys are stored as sha256 digests; the plaintext is returned once.
import { InferplaneError } from '../core/errors.js';
import { hashApiKey, keyPrefix, newApiKey, newId } from '../core/ids.js';
import { isoNow } from '../core/clock.js';
import {
  NameSchema,
  TenantLimitsPatchSchema,
  TenantLimitsSchema,
  parseOrThrow,
} from '../core/schemas.js';
import type { CreatedKey, Tenant, TenantSummary } from '../core/api-types.js';
import type { KeyEntry, TenantLimits, TenantRoute } from '../core/types.js';
import type { Db } from '../store/db.js';

export type Principal =
  | { kind: 'operator'; keyId: string }
  | { kind: 'tenant'; keyId: string; tenantId: string; tenantName: string };

export class TenancyService {
  constructor(private readonly db: Db) {}

  /** Creates a tenant; `limits` (optional) is validated with TenantLimitsSchema. */
  async createTenant(name: string, limits?: unknown): Promise<Tenant> {
    parseOrThrow(NameSchema, name, 'tenant name', 'name');
    const parsed: TenantLimits =
      limits === undefined
        ? {}
        : parseOrThrow(TenantLimitsSchema, limits, 'tenant limits', 'limits');
    const existing = await this.findTenant(name);
    if (existing) throw new InferplaneError('IP_TENANT_EXISTS', `tenant ${name} already exists`);
    const tenant = {
      id: newId('ten'),
      name,
      created_at: isoNow(),
      limits: JSON.stringify(canonicalLimits(parsed)),
    };
    await this.db.insertInto('tenants').values(tenant).execute();
    return { id: tenant.id, name, createdAt: tenant.created_at, limits: canonicalLimits(parsed) };
  }

  async findTenant(name: string): Promise<Tenant | undefined> {
    const row = await this.db
      .selectFrom('tenants')
      .selectAll()
      .where('name', '=', name)
      .executeTakeFirst();
    return row
      ? { id: row.id, name: row.name, createdAt: row.created_at, limits: parseLimits(row.limits) }
      : undefined;
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
      const next: TenantLimits = { ...parseLimits(row.limits) };
      for (const field of LIMIT_FIELDS) {
        const v = p[field];
        if (v === null) delete next[field];
        else if (v !== undefined) next[field] = v;
      }
      const limits = canonicalLimits(next);
      await trx
        .updateTable('tenants')
        .set({ limits: JSON.stringify(limits) })
        .where('id', '=', row.id)
        .execute();
      return { id: row.id, name: row.name, createdAt: row.created_at, limits };
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
