import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { InferplaneError } from '../../src/core/errors.js';
import { hashApiKey } from '../../src/core/ids.js';
import { openStore, type Db } from '../../src/store/db.js';
import { TenancyService, bearerToken } from '../../src/tenancy/tenancy.js';

let db: Db;
let tenancy: TenancyService;

beforeEach(async () => {
  db = await openStore({ sqlitePath: ':memory:' });
  tenancy = new TenancyService(db);
});
afterEach(async () => {
  await db.destroy();
});

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (e instanceof InferplaneError) return e.code;
    throw e;
  }
  return 'no error';
}

describe('TenancyService', () => {
  it('creates tenants once, with valid names only', async () => {
    const t = await tenancy.createTenant('team-a');
    expect(t.id).toMatch(/^ten_/);
    expect(await code(tenancy.createTenant('team-a'))).toBe('IP_TENANT_EXISTS');
    expect(await code(tenancy.createTenant('Team A'))).toBe('IP_VALIDATION');
    expect(await code(tenancy.getTenant('nope'))).toBe('IP_TENANT_NOT_FOUND');
  });

  it('stores keys only as sha256 digests and authenticates them', async () => {
    await tenancy.createTenant('team-a');
    const created = await tenancy.createKey('team-a', 'ci');
    expect(created.key).toMatch(/^ipk_[A-Za-z0-9_-]{43}$/);
    expect(created.prefix).toBe(created.key.slice(0, 10));

    const rows = await db.selectFrom('api_keys').selectAll().execute();
    expect(rows).toHaveLength(1);
    expect(JSON.stringify(rows)).not.toContain(created.key);
    expect(rows[0]!.hash).toBe(hashApiKey(created.key));

    const p = await tenancy.authenticate(created.key);
    expect(p).toMatchObject({ kind: 'tenant', tenantName: 'team-a' });
    expect(await code(tenancy.authenticate('ipk_wrong'))).toBe('IP_UNAUTHENTICATED');
    expect(await code(tenancy.authenticate(undefined))).toBe('IP_UNAUTHENTICATED');
    expect(await code(tenancy.createKey('nope'))).toBe('IP_TENANT_NOT_FOUND');
  });

  it('makes the bootstrap operator key idempotently', async () => {
    const admin = 'ipk_admin_from_env_0123456789';
    await tenancy.ensureOperatorKey(admin);
    await tenancy.ensureOperatorKey(admin);
    expect(await tenancy.hasOperatorKey()).toBe(true);
    expect(await tenancy.authenticate(admin)).toMatchObject({ kind: 'operator' });
    const entries = await tenancy.keyEntries();
    expect(entries.filter((e) => e.role === 'operator')).toHaveLength(1);
  });

  it('creates tenants unlimited by default; setLimits merges, null clears', async () => {
    expect((await tenancy.createTenant('a')).limits).toEqual({});
    expect(
      (await tenancy.setLimits('a', { requestsPerSecond: 5, maxConcurrency: 2 })).limits,
    ).toEqual({ requestsPerSecond: 5, maxConcurrency: 2 });
    expect((await tenancy.setLimits('a', { requestsPerSecond: null })).limits).toEqual({
      maxConcurrency: 2,
    });
    expect(await code(tenancy.setLimits('a', { maxConcurrency: 0 }))).toBe('IP_VALIDATION');
    expect(await code(tenancy.setLimits('b', { maxConcurrency: 1 }))).toBe('IP_TENANT_NOT_FOUND');
  });

  it('counts keys and deployments per tenant', async () => {
    await tenancy.createTenant('a');
    await tenancy.createTenant('b');
    await tenancy.createKey('a');
    await tenancy.createKey('a');
    const list = await tenancy.listTenants();
    expect(list.map((t) => [t.name, t.keys, t.deployments])).toEqual([
      ['a', 2, 0],
      ['b', 0, 0],
    ]);
  });
});

describe('bearerToken', () => {
  it('reads Authorization headers', () => {
    expect(bearerToken('Bearer abc')).toBe('abc');
    expect(bearerToken('bearer   abc  ')).toBe('abc');
    expect(bearerToken(undefined)).toBeUndefined();
    expect(bearerToken('')).toBeUndefined();
  });
});
