// Per-tenant gateway limits end to end in the control plane: the store migration, the tenancy
// service, the API (in process, real SQLite in a temp dir), the routing snapshot and the CLI
// (against the same API served on an ephemeral port).
import { mkdtempSync, rmSync } from 'node:fs';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import SQLite from 'better-sqlite3';
import { Kysely, Migrator, SqliteDialect, type Migration, sql } from 'kysely';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createApi } from '../../src/api/app.js';
import { openApiDocument } from '../../src/api/openapi.js';
import { formatLimits, parseLimit } from '../../src/cli/commands/tenant.js';
import { InferplaneError } from '../../src/core/errors.js';
import type { RoutingSnapshot } from '../../src/core/types.js';
import { DeploymentController } from '../../src/deploy/controller.js';
import { DeploymentService } from '../../src/deploy/service.js';
import { buildRoutingSnapshot } from '../../src/platform/platform.js';
import { LocalDriver } from '../../src/runtime/local.js';
import { Inventory } from '../../src/schedule/inventory.js';
import { PackPlacer } from '../../src/schedule/placement.js';
import { openStore, type Db } from '../../src/store/db.js';
import { migrationProvider } from '../../src/store/migrations.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { TenancyService } from '../../src/tenancy/tenancy.js';
import { apiCall, closeServers, runCli, serveApiOn } from './api-helpers.js';

const ADMIN = 'ipk_admin_limits_test_0123456789';
let dir: string;
let db: Db;
let tenancy: TenancyService;
let deployments: DeploymentService;
let app: ReturnType<typeof createApi>;
let snapshots: RoutingSnapshot[];
let pending: Promise<void>;
let tenantKey: string;
const servers: Server[] = [];

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'inferplane-limits-'));
  db = await openStore({ sqlitePath: join(dir, 'db.sqlite') });
  const logger = createLogger({ level: 'silent' });
  tenancy = new TenancyService(db);
  const inventory = new Inventory(db);
  const placer = new PackPlacer();
  const driver = new LocalDriver({ logDir: join(dir, 'logs'), logger });
  // Never started: the API's tenant routes and the snapshot only read the store.
  const controller = new DeploymentController({
    db,
    inventory,
    placer,
    driver,
    logger,
    onChange: () => undefined,
  });
  deployments = new DeploymentService(db, tenancy, inventory, placer, controller, driver);
  snapshots = [];
  pending = Promise.resolve();
  // The platform's publish, in miniature: every onChange builds a snapshot the same way.
  const onChange = (): void => {
    pending = pending.then(async () => {
      snapshots.push(await buildRoutingSnapshot(snapshots.length + 1, tenancy, deployments));
    });
  };
  app = createApi({ tenancy, deployments, inventory, logger, onChange, version: 'test' });
  await tenancy.ensureOperatorKey(ADMIN);
  await tenancy.createTenant('other');
  tenantKey = (await tenancy.createKey('other')).key;
});

afterEach(async () => {
  await pending;
  await closeServers(servers);
  await db.destroy();
  rmSync(dir, { recursive: true, force: true });
});

function api(
  method: string,
  path: string,
  body?: unknown,
  key = ADMIN,
): Promise<{ status: number; json: Record<string, unknown> }> {
  return apiCall(app, key, method, path, body);
}

function errorOf(json: Record<string, unknown>): {
  code: string;
  details?: Array<{ path: string; message: string }>;
} {
  return json.error as { code: string; details?: Array<{ path: string; message: string }> };
}

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (e instanceof InferplaneError) return e.code;
    throw e;
  }
  return 'no error';
}

describe('store migration 0002_tenant_limits', () => {
  it('adds limits (default {}) to a database created by the previous version', async () => {
    const path = join(dir, 'old.sqlite');
    // The previous version: only 0001_initial, and a tenant written then.
    const all = await migrationProvider.getMigrations();
    const old: Record<string, Migration> = { '0001_initial': all['0001_initial']! };
    const oldDb = new Kysely<unknown>({
      dialect: new SqliteDialect({ database: new SQLite(path) }),
    });
    const r = await new Migrator({
      db: oldDb,
      provider: { getMigrations: () => Promise.resolve(old) },
    }).migrateToLatest();
    expect(r.error).toBeUndefined();
    await sql`insert into tenants (id, name, created_at) values ('ten_old', 'legacy', '2025-01-01T00:00:00Z')`.execute(
      oldDb,
    );
    const cols = await sql<{ name: string }>`pragma table_info(tenants)`.execute(oldDb);
    expect(cols.rows.map((c) => c.name)).not.toContain('limits');
    await oldDb.destroy();

    const upgraded = await openStore({ sqlitePath: path });
    try {
      const row = await upgraded.selectFrom('tenants').selectAll().executeTakeFirstOrThrow();
      expect(row).toMatchObject({ id: 'ten_old', name: 'legacy', limits: '{}' });
      const t = new TenancyService(upgraded);
      expect((await t.getTenant('legacy')).limits).toEqual({});
      expect((await t.setLimits('legacy', { maxConcurrency: 2 })).limits).toEqual({
        maxConcurrency: 2,
      });
    } finally {
      await upgraded.destroy();
    }
    // Opening again is a no-op (already at the latest migration).
    const again = await openStore({ sqlitePath: path });
    expect((await new TenancyService(again).getTenant('legacy')).limits).toEqual({
      maxConcurrency: 2,
    });
    await again.destroy();
  });
});

describe('TenancyService limits', () => {
  it('creates with limits, patches, clears with null and keeps absent fields', async () => {
    const t = await tenancy.createTenant('team-a', {
      tokensPerMinute: 60000,
      requestsPerSecond: 5,
    });
    expect(t.limits).toEqual({ requestsPerSecond: 5, tokensPerMinute: 60000 });
    expect((await tenancy.getTenant('team-a')).limits).toEqual(t.limits);

    const p1 = await tenancy.setLimits('team-a', { maxConcurrency: 4, requestsPerSecond: 2.5 });
    expect(p1.limits).toEqual({
      requestsPerSecond: 2.5,
      tokensPerMinute: 60000,
      maxConcurrency: 4,
    });
    const p2 = await tenancy.setLimits('team-a', { tokensPerMinute: null });
    expect(p2.limits).toEqual({ requestsPerSecond: 2.5, maxConcurrency: 4 });
    expect((await tenancy.setLimits('team-a', {})).limits).toEqual(p2.limits);

    const list = await tenancy.listTenants();
    expect(list.find((x) => x.name === 'team-a')?.limits).toEqual(p2.limits);
    expect(list.find((x) => x.name === 'other')?.limits).toEqual({});
    expect(await tenancy.tenantRoutes()).toEqual([
      { id: expect.any(String) as string, name: 'other', limits: {} },
      { id: t.id, name: 'team-a', limits: p2.limits },
    ]);
  });

  it('rejects bad limits with IP_VALIDATION and field paths; unknown tenant is 404', async () => {
    const bad = async (p: Promise<unknown>): Promise<string[]> => {
      try {
        await p;
      } catch (e) {
        if (e instanceof InferplaneError && e.code === 'IP_VALIDATION') {
          return (e.details ?? []).map((d) => d.path);
        }
        throw e;
      }
      return [];
    };
    expect(
      await bad(tenancy.createTenant('x', { requestsPerSecond: 0, maxConcurrency: 1.5 })),
    ).toEqual(['limits.requestsPerSecond', 'limits.maxConcurrency']);
    expect(await bad(tenancy.createTenant('x', { burst: 3 }))).toEqual(['limits']);
    expect(await code(tenancy.getTenant('x'))).toBe('IP_TENANT_NOT_FOUND');
    expect(await bad(tenancy.setLimits('other', { tokensPerMinute: -1 }))).toEqual([
      'limits.tokensPerMinute',
    ]);
    expect(await bad(tenancy.setLimits('other', { maxConcurrency: '4' }))).toEqual([
      'limits.maxConcurrency',
    ]);
    expect(await code(tenancy.setLimits('nope', { maxConcurrency: 1 }))).toBe(
      'IP_TENANT_NOT_FOUND',
    );
  });

  it('reads a hand-edited, invalid limits column as unlimited fields instead of failing', async () => {
    await db
      .updateTable('tenants')
      .set({ limits: '{"maxConcurrency":-3,"tokensPerMinute":100,"x":1}' })
      .where('name', '=', 'other')
      .execute();
    expect((await tenancy.getTenant('other')).limits).toEqual({ tokensPerMinute: 100 });
    await db.updateTable('tenants').set({ limits: 'not json' }).execute();
    expect((await tenancy.getTenant('other')).limits).toEqual({});
  });
});

describe('API /api/v1/tenants limits', () => {
  it('POST accepts limits; GET list and GET one return them', async () => {
    const created = await api('POST', '/tenants', {
      name: 'team-a',
      limits: { requestsPerSecond: 5, maxConcurrency: 4 },
    });
    expect(created.status).toBe(201);
    expect(created.json.tenant).toMatchObject({
      name: 'team-a',
      limits: { requestsPerSecond: 5, maxConcurrency: 4 },
    });
    const plain = await api('POST', '/tenants', { name: 'team-b' });
    expect(plain.json.tenant).toMatchObject({ name: 'team-b', limits: {} });

    const list = await api('GET', '/tenants');
    expect(list.status).toBe(200);
    const items = list.json.items as Array<{ name: string; limits: unknown }>;
    expect(items.map((i) => [i.name, i.limits])).toEqual([
      ['other', {}],
      ['team-a', { requestsPerSecond: 5, maxConcurrency: 4 }],
      ['team-b', {}],
    ]);
    const one = await api('GET', '/tenants/team-a');
    expect(one.status).toBe(200);
    expect(one.json.tenant).toMatchObject({
      name: 'team-a',
      createdAt: expect.any(String) as string,
      limits: { requestsPerSecond: 5, maxConcurrency: 4 },
    });
    expect(errorOf((await api('GET', '/tenants/nope')).json).code).toBe('IP_TENANT_NOT_FOUND');
  });

  it('POST with bad limits is 400 with paths', async () => {
    const r = await api('POST', '/tenants', { name: 'team-a', limits: { tokensPerMinute: 0.5 } });
    expect(r.status).toBe(400);
    expect(errorOf(r.json).code).toBe('IP_VALIDATION');
    expect(errorOf(r.json).details?.map((d) => d.path)).toEqual(['limits.tokensPerMinute']);
  });

  it('PATCH sets and clears limits, republishing a snapshot that carries them', async () => {
    await api('POST', '/tenants', { name: 'team-a', limits: { tokensPerMinute: 60000 } });
    const r = await api('PATCH', '/tenants/team-a', {
      limits: { requestsPerSecond: 5, maxConcurrency: 4 },
    });
    expect(r.status).toBe(200);
    expect((r.json.tenant as { limits: unknown }).limits).toEqual({
      requestsPerSecond: 5,
      tokensPerMinute: 60000,
      maxConcurrency: 4,
    });
    await pending;
    const snap = snapshots.at(-1)!;
    expect(snap.tenants).toEqual([
      { id: expect.any(String) as string, name: 'other', limits: {} },
      {
        id: (r.json.tenant as { id: string }).id,
        name: 'team-a',
        limits: { requestsPerSecond: 5, tokensPerMinute: 60000, maxConcurrency: 4 },
      },
    ]);
    expect(snap.keys.length).toBeGreaterThan(0);
    expect(snap.models).toEqual([]);

    const before = snapshots.length;
    const cleared = await api('PATCH', '/tenants/team-a', {
      limits: { tokensPerMinute: null, maxConcurrency: null },
    });
    expect((cleared.json.tenant as { limits: unknown }).limits).toEqual({ requestsPerSecond: 5 });
    await pending;
    expect(snapshots.length).toBe(before + 1);
    expect(snapshots.at(-1)!.tenants?.find((t) => t.name === 'team-a')?.limits).toEqual({
      requestsPerSecond: 5,
    });
  });

  it('PATCH validates strictly (400 with paths), 404s unknown tenants, needs an operator', async () => {
    const cases: Array<[unknown, string[]]> = [
      [{ limits: { requestsPerSecond: -1 } }, ['limits.requestsPerSecond']],
      [
        { limits: { maxConcurrency: 2.5, tokensPerMinute: 'x' } },
        ['limits.tokensPerMinute', 'limits.maxConcurrency'],
      ],
      [{ limits: { burst: 1 } }, ['limits']],
      [{ limits: {}, name: 'x' }, ['(root)']],
      [{}, ['limits']],
    ];
    for (const [body, paths] of cases) {
      const r = await api('PATCH', '/tenants/other', body);
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(errorOf(r.json).code).toBe('IP_VALIDATION');
      expect(
        errorOf(r.json)
          .details?.map((d) => d.path)
          .sort(),
      ).toEqual([...paths].sort());
    }
    const notJson = await api('PATCH', '/tenants/other', '{');
    expect(errorOf(notJson.json).code).toBe('IP_BAD_REQUEST');

    const missing = await api('PATCH', '/tenants/nope', { limits: { maxConcurrency: 1 } });
    expect(missing.status).toBe(404);
    expect(errorOf(missing.json).code).toBe('IP_TENANT_NOT_FOUND');

    const asTenant = await api(
      'PATCH',
      '/tenants/other',
      { limits: { maxConcurrency: 1 } },
      tenantKey,
    );
    expect(asTenant.status).toBe(403);
    expect(errorOf(asTenant.json).code).toBe('IP_FORBIDDEN');
    const createAsTenant = await api('POST', '/tenants', { name: 'z' }, tenantKey);
    expect(errorOf(createAsTenant.json).code).toBe('IP_FORBIDDEN');
    expect((await tenancy.getTenant('other')).limits).toEqual({});
  });

  it('a tenant key reads only its own tenant', async () => {
    await api('POST', '/tenants', { name: 'team-a' });
    const own = await api('GET', '/tenants/other', undefined, tenantKey);
    expect(own.status).toBe(200);
    expect(own.json.tenant).toMatchObject({ name: 'other', limits: {} });
    const foreign = await api('GET', '/tenants/team-a', undefined, tenantKey);
    expect(errorOf(foreign.json).code).toBe('IP_TENANT_NOT_FOUND');
  });

  it('is in the OpenAPI document', () => {
    const doc = openApiDocument('test') as {
      paths: Record<string, Record<string, unknown>>;
      components: { schemas: Record<string, unknown> };
    };
    expect(Object.keys(doc.paths['/tenants/{name}'] ?? {})).toEqual(
      expect.arrayContaining(['get', 'patch']),
    );
    expect(doc.components.schemas.TenantPatch).toBeTruthy();
    expect(JSON.stringify(doc.components.schemas.TenantCreate)).toContain('tokensPerMinute');
  });
});

describe('CLI tenant limits', () => {
  const serveApi = (): Promise<string> => serveApiOn(app, servers);

  const cli = (args: string[], url = 'http://127.0.0.1:1') => runCli(args, url, ADMIN);

  it('parses limit values (k/M suffixes) and formats them', () => {
    expect(parseLimit('tokensPerMinute', '60k')).toBe(60000);
    expect(parseLimit('tokensPerMinute', '1.5M')).toBe(1_500_000);
    expect(parseLimit('requestsPerSecond', '0.5')).toBe(0.5);
    expect(() => parseLimit('maxConcurrency', '2.5')).toThrow(/positive integer/);
    expect(() => parseLimit('requestsPerSecond', '0')).toThrow(/positive number/);
    expect(() => parseLimit('requestsPerSecond', 'abc')).toThrow(/positive number/);
    expect(formatLimits({ requestsPerSecond: 5, tokensPerMinute: 60000, maxConcurrency: 4 })).toBe(
      '5 rps, 60k tpm, 4 conc',
    );
    expect(formatLimits({ tokensPerMinute: 1_500_000 })).toBe('1.5M tpm');
    expect(formatLimits({ requestsPerSecond: 0.25, tokensPerMinute: 900 })).toBe(
      '0.25 rps, 900 tpm',
    );
    expect(formatLimits({})).toBe('-');
  });

  it('creates with limits, changes and clears them, and shows them in get tenants', async () => {
    const url = await serveApi();
    const created = await cli(['tenant', 'create', 'team-a', '--rps', '5', '--tpm', '60k'], url);
    expect(created).toEqual({
      code: 0,
      out: 'tenant/team-a created (limits: 5 rps, 60k tpm)\n',
      err: '',
    });

    const changed = await cli(
      ['tenant', 'limits', 'team-a', '--max-concurrency', '4', '--tpm', 'none'],
      url,
    );
    expect(changed).toEqual({ code: 0, out: 'tenant/team-a limits: 5 rps, 4 conc\n', err: '' });
    expect((await tenancy.getTenant('team-a')).limits).toEqual({
      requestsPerSecond: 5,
      maxConcurrency: 4,
    });
    await pending;
    expect(snapshots.at(-1)!.tenants?.find((t) => t.name === 'team-a')?.limits).toEqual({
      requestsPerSecond: 5,
      maxConcurrency: 4,
    });

    const shown = await cli(['tenant', 'limits', 'team-a', '--json'], url);
    expect(shown.code).toBe(0);
    expect((JSON.parse(shown.out) as { tenant: { limits: unknown } }).tenant.limits).toEqual({
      requestsPerSecond: 5,
      maxConcurrency: 4,
    });
    const none = await cli(['tenant', 'limits', 'other'], url);
    expect(none.out).toBe('tenant/other limits: none (unlimited)\n');

    const table = await cli(['get', 'tenants'], url);
    expect(table.code).toBe(0);
    const lines = table.out.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^NAME\s+KEYS\s+DEPLOYMENTS\s+LIMITS\s+AGE$/);
    expect(lines[1]).toMatch(/^other\s+1\s+0\s+-\s+\d+s$/);
    expect(lines[2]).toMatch(/^team-a\s+0\s+0\s+5 rps, 4 conc\s+\d+s$/);

    const missing = await cli(['tenant', 'limits', 'nope', '--rps', '1'], url);
    expect(missing.code).toBe(1);
    expect(missing.err).toContain('(IP_TENANT_NOT_FOUND)');
  });

  it('rejects bad numbers as usage errors before sending anything', async () => {
    // No server listens at the default URL: a request would fail with IP_CLI_UNREACHABLE.
    for (const args of [
      ['tenant', 'create', 'a', '--rps', 'fast'],
      ['tenant', 'create', 'a', '--tpm', '-5'],
      ['tenant', 'create', 'a', '--max-concurrency', 'none'],
      ['tenant', 'limits', 'a', '--max-concurrency', '1.5'],
      ['tenant', 'limits', 'a', '--tpm', '2e20'],
    ]) {
      const r = await cli(args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.err).toMatch(/argument '.*' is invalid\. expected a positive/);
      expect(r.err).not.toContain('IP_CLI_UNREACHABLE');
    }
  });

  it('documents the flags in --help', async () => {
    const create = await cli(['tenant', 'create', '--help']);
    expect(create.code).toBe(0);
    expect(create.out).toContain('--rps <n>');
    expect(create.out).toContain('--max-concurrency <n>');
    const limits = await cli(['tenant', 'limits', '--help']);
    expect(limits.out).toContain('--tpm <n|none>');
    expect(limits.out).toContain('clears');
  });
});
