// Team quotas and policy at admission (issue 7): the pure checks, the deployment service over a
// real SQLite store (controller stopped: nothing is started), the tenant API (PATCH/GET), the
// migration, and the CLI (tenant quota / tenant policy / describe tenant) against the same API.
import { mkdtempSync, rmSync } from 'node:fs';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import SQLite from 'better-sqlite3';
import { Kysely, Migrator, SqliteDialect, sql, type Migration } from 'kysely';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { simulatedNode } from '../../src/agent/agent.js';
import { createApi } from '../../src/api/app.js';
import { openApiDocument } from '../../src/api/openapi.js';
import {
  parseCountOrNone,
  parseEngineList,
  parseGpuQuota,
  policyPatch,
  quotaPatch,
} from '../../src/cli/commands/tenant.js';
import type { TenantView } from '../../src/core/api-types.js';
import { InferplaneError, type ErrorDetail } from '../../src/core/errors.js';
import type { DeploymentSpecInput } from '../../src/core/schemas.js';
import { DeploymentController } from '../../src/deploy/controller.js';
import { DeploymentService } from '../../src/deploy/service.js';
import { LocalDriver } from '../../src/runtime/local.js';
import { Inventory } from '../../src/schedule/inventory.js';
import { PackPlacer } from '../../src/schedule/placement.js';
import { openStore, type Db } from '../../src/store/db.js';
import { migrationProvider } from '../../src/store/migrations.js';
import { createLogger } from '../../src/telemetry/logger.js';
import {
  checkPolicy,
  checkQuota,
  compareEngineVersions,
  engineMatches,
  parseEngineRule,
  sumUsage,
} from '../../src/tenancy/quota.js';
import { TenancyService, type Principal } from '../../src/tenancy/tenancy.js';
import { apiCall, closeServers, runCli, serveApiOn } from './api-helpers.js';

const ADMIN = 'ipk_admin_quota_test_0123456789';
const OP: Principal = { kind: 'operator', keyId: 'test' };
let dir: string;
let db: Db;
let tenancy: TenancyService;
let service: DeploymentService;
let app: ReturnType<typeof createApi>;
let teamKey: string;
const servers: Server[] = [];

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'inferplane-quota-'));
  db = await openStore({ sqlitePath: join(dir, 'db.sqlite') });
  const logger = createLogger({ level: 'silent' });
  tenancy = new TenancyService(db);
  const inventory = new Inventory(db);
  await inventory.registerNode(simulatedNode({ name: 'h', gpus: 16, gpuType: 'H100-80GB' }));
  await inventory.registerNode(simulatedNode({ name: 'a', gpus: 16, gpuType: 'A100-80GB' }));
  const placer = new PackPlacer();
  const driver = new LocalDriver({ logDir: join(dir, 'logs'), logger });
  const controller = new DeploymentController({
    db,
    inventory,
    placer,
    driver,
    logger,
    onChange: () => undefined,
  });
  // Stopped before use: apply admits and stores, and no engine process is ever started.
  await controller.stop();
  service = new DeploymentService(db, tenancy, inventory, placer, controller, driver);
  app = createApi({
    tenancy,
    deployments: service,
    inventory,
    logger,
    onChange: () => undefined,
    version: 'test',
  });
  await tenancy.ensureOperatorKey(ADMIN);
  await tenancy.createTenant('team-a');
  await tenancy.createTenant('team-b');
  teamKey = (await tenancy.createKey('team-a')).key;
});

afterEach(async () => {
  await closeServers(servers);
  await db.destroy();
  rmSync(dir, { recursive: true, force: true });
});

const spec = (over: Partial<DeploymentSpecInput> = {}): DeploymentSpecInput => ({
  name: 'web',
  tenant: 'team-a',
  model: 'llama-3.1-8b',
  engine: { name: 'sim', args: {} },
  replicas: 1,
  resources: { gpus: 1, gpuType: 'H100-80GB' },
  ...over,
});

async function refusal(p: Promise<unknown>): Promise<InferplaneError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof InferplaneError) return e;
    throw e;
  }
  throw new Error('expected a refusal, got success');
}

async function stored(): Promise<{ deployments: number; events: number }> {
  const d = await db
    .selectFrom('deployments')
    .select((e) => e.fn.countAll<number>().as('n'))
    .executeTakeFirstOrThrow();
  const ev = await db
    .selectFrom('events')
    .select((e) => e.fn.countAll<number>().as('n'))
    .executeTakeFirstOrThrow();
  return { deployments: Number(d.n), events: Number(ev.n) };
}

function api(
  method: string,
  path: string,
  body?: unknown,
  key = ADMIN,
): Promise<{ status: number; json: Record<string, unknown> }> {
  return apiCall(app, key, method, path, body);
}

const errorOf = (json: Record<string, unknown>) =>
  json.error as { code: string; message: string; status: number; details?: ErrorDetail[] };

describe('quota checks (pure)', () => {
  it('sums desired usage by GPU type and replicas', () => {
    expect(
      sumUsage([
        { replicas: 3, resources: { gpus: 2, gpuType: 'H100-80GB' } },
        { replicas: 2, resources: { gpus: 1, gpuType: 'A100-80GB' } },
        { replicas: 1, resources: { gpus: 4, gpuType: 'H100-80GB' } },
        { replicas: 2, resources: { gpus: 0, gpuType: 'H100-80GB' } },
      ]),
    ).toEqual({ deployments: 4, replicas: 8, gpus: { 'H100-80GB': 10, 'A100-80GB': 2 } });
  });

  it('names the quota, used, requested and limit', () => {
    const others = { deployments: 1, replicas: 3, gpus: { 'H100-80GB': 6 } };
    let err: unknown;
    try {
      checkQuota('team-a', { gpus: { 'H100-80GB': 8 }, replicas: 4 }, others, {
        replicas: 2,
        resources: { gpus: 2, gpuType: 'H100-80GB' },
      });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InferplaneError);
    const e = err as InferplaneError;
    expect(e.code).toBe('IP_QUOTA_EXCEEDED');
    expect(e.status).toBe(403);
    expect(e.message).toContain('gpus[H100-80GB]: 6 in use + 4 requested > limit 8');
    expect(e.message).toContain('replicas: 3 in use + 2 requested > limit 4');
    expect(e.details).toEqual([
      {
        path: 'quota.gpus.H100-80GB',
        quota: 'gpus[H100-80GB]',
        used: 6,
        requested: 4,
        limit: 8,
        message: 'quota gpus[H100-80GB]: 6 in use + 4 requested > limit 8',
      },
      {
        path: 'quota.replicas',
        quota: 'replicas',
        used: 3,
        requested: 2,
        limit: 4,
        message: 'quota replicas: 3 in use + 2 requested > limit 4',
      },
    ]);
  });

  it('never refuses a change that does not raise the use a quota counts', () => {
    const others = { deployments: 1, replicas: 10, gpus: { 'H100-80GB': 10 } };
    const old = { replicas: 4, resources: { gpus: 2, gpuType: 'H100-80GB' } };
    const quota = { gpus: { 'H100-80GB': 8 }, replicas: 5 };
    // Already over (quota lowered after the fact): scaling down or staying level passes.
    expect(() => checkQuota('t', quota, others, { ...old, replicas: 3 }, old)).not.toThrow();
    expect(() => checkQuota('t', quota, others, old, old)).not.toThrow();
    expect(() => checkQuota('t', quota, others, { ...old, replicas: 5 }, old)).toThrow(
      /over quota/,
    );
    // A type without a quota is unlimited.
    expect(() =>
      checkQuota('t', { gpus: { 'A100-80GB': 1 } }, others, {
        replicas: 9,
        resources: { gpus: 8, gpuType: 'H100-80GB' },
      }),
    ).not.toThrow();
  });

  it('parses and matches engine rules with simple version ordering', () => {
    expect(parseEngineRule('sim')).toEqual({ engine: 'sim' });
    expect(parseEngineRule('llamacpp@>=b5000')).toEqual({
      engine: 'llamacpp',
      version: 'b5000',
      op: '>=',
    });
    expect(parseEngineRule('vllm@0.8.5')).toEqual({ engine: 'vllm', version: '0.8.5', op: '=' });
    expect(compareEngineVersions('b4999', 'b5000')).toBe(-1);
    expect(compareEngineVersions('b5000', 'b5000')).toBe(0);
    expect(compareEngineVersions('0.10.0', '0.8.5')).toBe(1);
    expect(compareEngineVersions('v1.2', 'v1.2.0')).toBe(0);
    expect(compareEngineVersions('b5000', '5000')).toBeUndefined();
    expect(compareEngineVersions('1.0-rc1', '1.0')).toBeUndefined();
    const min = parseEngineRule('llamacpp@>=b5000');
    expect(engineMatches(min, 'llamacpp', 'b5001')).toBe(true);
    expect(engineMatches(min, 'llamacpp', 'b4999')).toBe(false);
    expect(engineMatches(min, 'llamacpp', undefined)).toBe(false);
    expect(engineMatches(min, 'llamacpp', 'main')).toBe(false);
    expect(engineMatches(min, 'sim', 'b6000')).toBe(false);
    expect(engineMatches(parseEngineRule('vllm@0.8.5'), 'vllm', '0.8.5')).toBe(true);
    expect(engineMatches(parseEngineRule('vllm@0.8.5'), 'vllm', '0.8.6')).toBe(false);
    expect(engineMatches(parseEngineRule('sim'), 'sim', undefined)).toBe(true);
  });

  it('checks a policy rule on update only when the change touches what it governs', () => {
    const base = {
      kind: undefined,
      name: 'web',
      tenant: 't',
      model: 'llama-3.1-8b',
      engine: { name: 'sim', args: {} },
      replicas: 1,
      resources: { gpus: 4, gpuType: 'H100-80GB' },
    };
    const policy = { allowedEngines: ['llamacpp'], maxGpusPerReplica: 2, requireSlo: true };
    expect(() => checkPolicy('t', policy, base)).toThrow(InferplaneError);
    // A scale of a deployment created before the policy passes.
    expect(() => checkPolicy('t', policy, { ...base, replicas: 3 }, base)).not.toThrow();
    // Touching the GPUs per replica brings in maxGpusPerReplica (and requireSlo).
    let e: InferplaneError | undefined;
    try {
      checkPolicy('t', policy, { ...base, resources: { gpus: 3, gpuType: 'H100-80GB' } }, base);
    } catch (x) {
      e = x as InferplaneError;
    }
    expect(e?.code).toBe('IP_POLICY_VIOLATION');
    expect(e?.details?.map((d) => d.rule)).toEqual(['maxGpusPerReplica', 'requireSlo']);
  });
});

describe('admission in the deployment service', () => {
  it('refuses GPUs over a per-type quota, naming it, and stores nothing', async () => {
    await tenancy.patchTenant('team-a', { quota: { gpus: { 'H100-80GB': 8 } } });
    await service.apply(
      spec({ name: 'one', replicas: 3, resources: { gpus: 2, gpuType: 'H100-80GB' } }),
      OP,
    );
    const before = await stored();
    const e = await refusal(
      service.apply(
        spec({ name: 'two', replicas: 2, resources: { gpus: 2, gpuType: 'H100-80GB' } }),
        OP,
      ),
    );
    expect(e.code).toBe('IP_QUOTA_EXCEEDED');
    expect(e.message).toContain('gpus[H100-80GB]: 6 in use + 4 requested > limit 8');
    expect(e.details?.[0]).toMatchObject({
      quota: 'gpus[H100-80GB]',
      used: 6,
      requested: 4,
      limit: 8,
    });
    expect(await stored()).toEqual(before);
    // Exactly at the limit passes; other GPU types are not limited by the H100 quota.
    await service.apply(
      spec({ name: 'two', replicas: 1, resources: { gpus: 2, gpuType: 'H100-80GB' } }),
      OP,
    );
    await service.apply(
      spec({ name: 'a100', replicas: 4, resources: { gpus: 4, gpuType: 'A100-80GB' } }),
      OP,
    );
    // Another team's usage does not count against team-a.
    await service.apply(
      spec({
        name: 'b',
        tenant: 'team-b',
        replicas: 4,
        resources: { gpus: 2, gpuType: 'H100-80GB' },
      }),
      OP,
    );
    expect((await tenancy.usage((await tenancy.getTenant('team-a')).id)).gpus).toEqual({
      'H100-80GB': 8,
      'A100-80GB': 16,
    });
  });

  it('refuses replicas over quota across deployments', async () => {
    await tenancy.patchTenant('team-a', { quota: { replicas: 3 } });
    await service.apply(spec({ name: 'one', replicas: 2 }), OP);
    const e = await refusal(service.apply(spec({ name: 'two', replicas: 2 }), OP));
    expect(e.code).toBe('IP_QUOTA_EXCEEDED');
    expect(e.message).toContain('replicas: 2 in use + 2 requested > limit 3');
    expect(await service.list(OP)).toHaveLength(1);
    // Zero-GPU replicas count as replicas too.
    const z = await refusal(
      service.apply(
        spec({ name: 'cpu', replicas: 2, resources: { gpus: 0, gpuType: 'H100-80GB' } }),
        OP,
      ),
    );
    expect(z.details?.[0]?.quota).toBe('replicas');
  });

  it('counts a rollout canary next to the stable replicas (the promotion peak holds both)', async () => {
    await tenancy.patchTenant('team-a', { quota: { replicas: 3 } });
    const rollout = { steps: [{ weight: 50, pause: '1s' }] };
    await service.apply(spec({ name: 'web', replicas: 2, version: 'v1', rollout }), OP);
    // v2 would run 2 canary replicas beside the 2 stable ones at its peak: 4 > 3.
    const e = await refusal(
      service.apply(spec({ name: 'web', replicas: 2, version: 'v2', rollout }), OP),
    );
    expect(e.code).toBe('IP_QUOTA_EXCEEDED');
    expect(e.message).toContain('replicas: 0 in use + 4 requested');
    expect(e.message).toContain('rollout peak');
    expect((await service.describe('web', OP)).spec.version).toBe('v1');
    // Without a rollout block the replicas are replaced, not doubled: it fits.
    const plain = await service.apply(spec({ name: 'web', replicas: 2, version: 'v2' }), OP);
    expect(plain.result).toBe('updated');
  });

  it('counts the new spec in place of the old one on update (scale)', async () => {
    await tenancy.patchTenant('team-a', { quota: { gpus: { 'H100-80GB': 8 } } });
    await service.apply(spec({ replicas: 3, resources: { gpus: 2, gpuType: 'H100-80GB' } }), OP);
    // 3×2 → 4×2 = 8: the old 6 are not counted twice.
    expect(
      (await service.apply(spec({ replicas: 4, resources: { gpus: 2, gpuType: 'H100-80GB' } }), OP))
        .result,
    ).toBe('updated');
    const e = await refusal(
      service.apply(spec({ replicas: 5, resources: { gpus: 2, gpuType: 'H100-80GB' } }), OP),
    );
    expect(e.details?.[0]).toMatchObject({ used: 0, requested: 10, limit: 8 });
    const d = await service.describe('web', OP);
    expect(d.spec.replicas).toBe(4);
    expect(d.summary.generation).toBe(1);
    // The quota lowered below use: scaling down and re-applying the same spec still pass.
    await tenancy.patchTenant('team-a', { quota: { gpus: { 'H100-80GB': 2 } } });
    expect(
      (await service.apply(spec({ replicas: 4, resources: { gpus: 2, gpuType: 'H100-80GB' } }), OP))
        .result,
    ).toBe('unchanged');
    expect(
      (await service.apply(spec({ replicas: 2, resources: { gpus: 2, gpuType: 'H100-80GB' } }), OP))
        .result,
    ).toBe('updated');
    // Moving to another GPU type frees the old type's use.
    await tenancy.patchTenant('team-a', { quota: { gpus: { 'H100-80GB': 2, 'A100-80GB': 4 } } });
    await service.apply(spec({ replicas: 2, resources: { gpus: 2, gpuType: 'A100-80GB' } }), OP);
    await service.apply(
      spec({ name: 'small', replicas: 2, resources: { gpus: 1, gpuType: 'H100-80GB' } }),
      OP,
    );
  });

  it('applies quotas to operator and team keys alike, through the API as 403', async () => {
    await tenancy.patchTenant('team-a', { quota: { replicas: 1 } });
    const ok = await api('PUT', '/deployments/web', spec(), teamKey);
    expect(ok.status).toBe(201);
    for (const key of [teamKey, ADMIN]) {
      const r = await api('PUT', '/deployments/web2', spec({ name: 'web2' }), key);
      expect(r.status).toBe(403);
      expect(errorOf(r.json)).toMatchObject({
        code: 'IP_QUOTA_EXCEEDED',
        status: 403,
        details: [{ quota: 'replicas', used: 1, requested: 1, limit: 1 }],
      });
    }
    expect((await api('GET', '/deployments/web2')).status).toBe(404);
  });

  it('refuses an engine the policy does not allow, naming the rule', async () => {
    await tenancy.patchTenant('team-a', { policy: { allowedEngines: ['llamacpp'] } });
    const before = await stored();
    const e = await refusal(service.apply(spec(), OP));
    expect(e.code).toBe('IP_POLICY_VIOLATION');
    expect(e.status).toBe(403);
    expect(e.message).toContain('engine sim is not allowed for team-a (allowed: llamacpp)');
    expect(e.details?.[0]).toMatchObject({
      path: 'engine.name',
      rule: 'allowedEngines',
      allowed: ['llamacpp'],
    });
    expect(await stored()).toEqual(before);
    await tenancy.patchTenant('team-a', { policy: { allowedEngines: ['llamacpp', 'sim'] } });
    expect((await service.apply(spec(), OP)).result).toBe('created');
  });

  it('matches engine versions against name@>=version rules', async () => {
    await tenancy.patchTenant('team-a', { policy: { allowedEngines: ['sim@>=b5000'] } });
    const none = await refusal(service.apply(spec(), OP));
    expect(none.code).toBe('IP_POLICY_VIOLATION');
    expect(none.message).toContain('set engine.version');
    const old = await refusal(
      service.apply(spec({ engine: { name: 'sim', version: 'b4999', args: {} } }), OP),
    );
    expect(old.details?.[0]).toMatchObject({ path: 'engine.version', rule: 'allowedEngines' });
    expect(
      (await service.apply(spec({ engine: { name: 'sim', version: 'b5123', args: {} } }), OP))
        .result,
    ).toBe('created');
    expect((await service.describe('web', OP)).spec.engine.version).toBe('b5123');
  });

  it('refuses more GPUs per replica than the policy allows', async () => {
    await tenancy.patchTenant('team-a', { policy: { maxGpusPerReplica: 2 } });
    const e = await refusal(
      service.apply(spec({ resources: { gpus: 4, gpuType: 'H100-80GB' } }), OP),
    );
    expect(e.code).toBe('IP_POLICY_VIOLATION');
    expect(e.details?.[0]).toMatchObject({
      path: 'resources.gpus',
      rule: 'maxGpusPerReplica',
      requested: 4,
      limit: 2,
    });
    await service.apply(spec({ resources: { gpus: 2, gpuType: 'H100-80GB' } }), OP);
  });

  it('requires an slo block when the policy says so; grandfathers existing deployments', async () => {
    await service.apply(spec({ name: 'before' }), OP);
    await tenancy.patchTenant('team-a', { policy: { requireSlo: true } });
    const e = await refusal(service.apply(spec(), OP));
    expect(e.code).toBe('IP_POLICY_VIOLATION');
    expect(e.details?.[0]).toMatchObject({ path: 'slo', rule: 'requireSlo' });
    const empty = await refusal(service.apply(spec({ slo: {} }), OP));
    expect(empty.code).toBe('IP_POLICY_VIOLATION');
    expect((await service.apply(spec({ slo: { ttftP99Ms: 500 } }), OP)).result).toBe('created');
    // A scale of the deployment made before the rule passes; a new model does not.
    expect((await service.apply(spec({ name: 'before', replicas: 2 }), OP)).result).toBe('updated');
    const model = await refusal(
      service.apply(spec({ name: 'before', replicas: 2, model: 'llama-3.1-70b' }), OP),
    );
    expect(model.code).toBe('IP_POLICY_VIOLATION');
  });

  it('keeps apply idempotent with an slo block, and an slo change does not replace replicas', async () => {
    const s = spec({ slo: { ttftP99Ms: 500, itlP99Ms: 50 } });
    expect((await service.apply(s, OP)).result).toBe('created');
    expect((await service.apply(s, OP)).result).toBe('unchanged');
    // Same targets, keys in another order: still unchanged.
    expect((await service.apply(spec({ slo: { itlP99Ms: 50, ttftP99Ms: 500 } }), OP)).result).toBe(
      'unchanged',
    );
    const changed = await service.apply(spec({ slo: { ttftP99Ms: 400, itlP99Ms: 50 } }), OP);
    expect(changed.result).toBe('updated');
    expect(changed.deployment.generation).toBe(1);
    // A spec without slo still round-trips as before (no slo key appears).
    await service.apply(spec({ name: 'plain' }), OP);
    expect('slo' in (await service.describe('plain', OP)).spec).toBe(false);
    expect((await service.apply(spec({ name: 'plain' }), OP)).result).toBe('unchanged');
  });

  it('checks the policy before the quota and both before placement', async () => {
    await tenancy.patchTenant('team-a', {
      quota: { replicas: 1 },
      policy: { maxGpusPerReplica: 1 },
    });
    // Would not fit on any node (32 GPUs per replica) and breaks both: policy is named first.
    const e = await refusal(
      service.apply(spec({ replicas: 2, resources: { gpus: 32, gpuType: 'H100-80GB' } }), OP),
    );
    expect(e.code).toBe('IP_POLICY_VIOLATION');
    await tenancy.patchTenant('team-a', { policy: null });
    const q = await refusal(
      service.apply(spec({ replicas: 2, resources: { gpus: 32, gpuType: 'H100-80GB' } }), OP),
    );
    expect(q.code).toBe('IP_QUOTA_EXCEEDED');
    await tenancy.patchTenant('team-a', { quota: null });
    const p = await refusal(
      service.apply(spec({ replicas: 2, resources: { gpus: 32, gpuType: 'H100-80GB' } }), OP),
    );
    expect(p.code).toBe('IP_PLACEMENT_FAILED');
  });
});

describe('tenant API: quota, policy, usage', () => {
  it('PATCH sets, merges and clears quota and policy; GET shows them with usage', async () => {
    let r = await api('PATCH', '/tenants/team-a', {
      quota: { gpus: { 'H100-80GB': 8, 'A100-80GB': 2 }, replicas: 10 },
      policy: { allowedEngines: ['sim', 'llamacpp@>=b5000'], maxGpusPerReplica: 4 },
      limits: { requestsPerSecond: 5 },
    });
    expect(r.status).toBe(200);
    const view = r.json as unknown as TenantView;
    expect(view.tenant).toMatchObject({
      name: 'team-a',
      quota: { gpus: { 'A100-80GB': 2, 'H100-80GB': 8 }, replicas: 10 },
      policy: { allowedEngines: ['sim', 'llamacpp@>=b5000'], maxGpusPerReplica: 4 },
      limits: { requestsPerSecond: 5 },
    });
    await service.apply(spec({ replicas: 3, resources: { gpus: 2, gpuType: 'H100-80GB' } }), OP);
    r = await api('GET', '/tenants/team-a', undefined, teamKey);
    expect(r.status).toBe(200);
    const got = r.json as unknown as TenantView;
    expect(got.usage).toEqual({ deployments: 1, replicas: 3, gpus: { 'H100-80GB': 6 } });
    expect(got.quotas).toEqual([
      { quota: 'gpus[A100-80GB]', enforcedBy: 'admission', used: 0, limit: 2 },
      { quota: 'gpus[H100-80GB]', enforcedBy: 'admission', used: 6, limit: 8 },
      { quota: 'replicas', enforcedBy: 'admission', used: 3, limit: 10 },
      { quota: 'requestsPerSecond', enforcedBy: 'gateway', limit: 5 },
      { quota: 'tokensPerMinute', enforcedBy: 'gateway', limit: null },
      { quota: 'maxConcurrency', enforcedBy: 'gateway', limit: null },
    ]);
    // Merge: one type cleared, replicas kept, requireSlo added; limits untouched.
    r = await api('PATCH', '/tenants/team-a', {
      quota: { gpus: { 'A100-80GB': null } },
      policy: { requireSlo: true, maxGpusPerReplica: null },
    });
    expect((r.json as unknown as TenantView).tenant).toMatchObject({
      quota: { gpus: { 'H100-80GB': 8 }, replicas: 10 },
      policy: { allowedEngines: ['sim', 'llamacpp@>=b5000'], requireSlo: true },
      limits: { requestsPerSecond: 5 },
    });
    expect((r.json as unknown as TenantView).tenant.policy.maxGpusPerReplica).toBeUndefined();
    // null clears all of it.
    r = await api('PATCH', '/tenants/team-a', { quota: null, policy: null });
    expect((r.json as unknown as TenantView).tenant).toMatchObject({ quota: {}, policy: {} });
    // The list carries them too.
    const list = await api('GET', '/tenants');
    expect((list.json.items as Array<{ name: string; quota: unknown }>)[0]).toMatchObject({
      name: 'team-a',
      quota: {},
    });
  });

  it('validates the body and names each bad field', async () => {
    const bad = await api('PATCH', '/tenants/team-a', {
      quota: { gpus: { 'H100-80GB': -1 }, replicas: 1.5 },
      policy: { allowedEngines: ['Bad Engine'], extra: 1 },
    });
    expect(bad.status).toBe(400);
    const paths = errorOf(bad.json).details?.map((d) => d.path);
    expect(paths).toEqual(
      expect.arrayContaining([
        'quota.gpus.H100-80GB',
        'quota.replicas',
        'policy.allowedEngines.0',
        'policy',
      ]),
    );
    const empty = await api('PATCH', '/tenants/team-a', { policy: { allowedEngines: [] } });
    expect(empty.status).toBe(400);
    const slo = await api('PUT', '/deployments/web', spec({ slo: { ttftP99Ms: -5 } }));
    expect(errorOf(slo.json).details?.[0]?.path).toBe('slo.ttftP99Ms');
    // A team key cannot change its own quota; unknown tenants are 404.
    expect((await api('PATCH', '/tenants/team-a', { quota: null }, teamKey)).status).toBe(403);
    expect((await api('PATCH', '/tenants/nope', { quota: null })).status).toBe(404);
  });

  it('creates a tenant with quota and policy', async () => {
    const r = await api('POST', '/tenants', {
      name: 'team-c',
      quota: { replicas: 2 },
      policy: { requireSlo: true },
    });
    expect(r.status).toBe(201);
    expect((r.json.tenant as Record<string, unknown>).quota).toEqual({ replicas: 2 });
    const e = await refusal(service.apply(spec({ tenant: 'team-c' }), OP));
    expect(e.code).toBe('IP_POLICY_VIOLATION');
  });

  it('documents the routes, schemas and error details in OpenAPI', () => {
    const doc = openApiDocument('test') as {
      components: { schemas: Record<string, { properties?: Record<string, unknown> }> };
      paths: Record<string, Record<string, { responses?: Record<string, unknown> }>>;
    };
    expect(doc.components.schemas.TenantPatch?.properties).toHaveProperty('quota');
    expect(doc.components.schemas.TenantPatch?.properties).toHaveProperty('policy');
    expect(doc.components.schemas.TenantView?.properties).toHaveProperty('quotas');
    expect(doc.components.schemas.DeploymentSpec?.properties).toHaveProperty('slo');
    expect(doc.paths['/deployments/{name}']?.put?.responses).toHaveProperty('403');
  });
});

describe('store migration 0004_tenant_quota_policy', () => {
  it('adds quota and policy (default {}) to a database from the previous version', async () => {
    const path = join(dir, 'old.sqlite');
    const all = await migrationProvider.getMigrations();
    const old: Record<string, Migration> = Object.fromEntries(
      Object.entries(all).filter(([k]) => k < '0004'),
    );
    const oldDb = new Kysely<unknown>({
      dialect: new SqliteDialect({ database: new SQLite(path) }),
    });
    const r = await new Migrator({
      db: oldDb,
      provider: { getMigrations: () => Promise.resolve(old) },
    }).migrateToLatest();
    expect(r.error).toBeUndefined();
    await sql`insert into tenants (id, name, created_at, limits) values ('ten_old', 'legacy', '2025-01-01T00:00:00Z', '{"maxConcurrency":2}')`.execute(
      oldDb,
    );
    await oldDb.destroy();
    const upgraded = await openStore({ sqlitePath: path });
    try {
      const row = await upgraded.selectFrom('tenants').selectAll().executeTakeFirstOrThrow();
      expect(row).toMatchObject({ quota: '{}', policy: '{}' });
      const t = new TenancyService(upgraded);
      expect(await t.getTenant('legacy')).toMatchObject({
        limits: { maxConcurrency: 2 },
        quota: {},
        policy: {},
      });
    } finally {
      await upgraded.destroy();
    }
  });
});

describe('CLI: tenant quota, tenant policy, describe tenant', () => {
  it('parses flags', () => {
    expect(parseGpuQuota('H100-80GB=8')).toEqual({ 'H100-80GB': 8 });
    expect(parseGpuQuota('A100-80GB=none,L40S-48GB=0', { 'H100-80GB': 8 })).toEqual({
      'H100-80GB': 8,
      'A100-80GB': 'none',
      'L40S-48GB': 0,
    });
    expect(() => parseGpuQuota('H100-80GB')).toThrow(/TYPE=N/);
    expect(() => parseGpuQuota('H100-80GB=-1')).toThrow(/non-negative/);
    expect(parseCountOrNone('none')).toBe('none');
    expect(() => parseCountOrNone('1.5')).toThrow();
    expect(parseEngineList('sim, llamacpp@>=b5000')).toEqual(['sim', 'llamacpp@>=b5000']);
    expect(parseEngineList('none')).toBe('none');
    expect(() => parseEngineList('Sim!')).toThrow(/name@version/);
    expect(quotaPatch({ gpus: { 'H100-80GB': 8, 'A100-80GB': 'none' }, replicas: 'none' })).toEqual(
      { quota: { gpus: { 'H100-80GB': 8, 'A100-80GB': null }, replicas: null } },
    );
    expect(quotaPatch({})).toBeUndefined();
    expect(quotaPatch({ clear: true })).toEqual({ quota: null });
    expect(() => quotaPatch({ clear: true, replicas: 2 })).toThrow(/--clear/);
    expect(policyPatch({ allowEngines: ['sim'], maxGpusPerReplica: 2, requireSlo: true })).toEqual({
      policy: { allowedEngines: ['sim'], maxGpusPerReplica: 2, requireSlo: true },
    });
    expect(policyPatch({ allowEngines: 'none', requireSlo: false })).toEqual({
      policy: { allowedEngines: null, requireSlo: null },
    });
    expect(policyPatch({ clear: true })).toEqual({ policy: null });
  });

  const listen = (): Promise<string> => serveApiOn(app, servers);

  const cli = (args: string[], url: string) => runCli(args, url, ADMIN);

  it('sets, shows and clears through the API, with --json and --help', async () => {
    const url = await listen();
    let r = await cli(
      ['tenant', 'quota', 'team-a', '--gpus', 'H100-80GB=8', '--replicas', '4'],
      url,
    );
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/gpus\[H100-80GB\]\s+admission\s+0\s+8/);
    expect(r.out).toMatch(/replicas\s+admission\s+0\s+4/);
    await service.apply(spec({ replicas: 3, resources: { gpus: 2, gpuType: 'H100-80GB' } }), OP);
    r = await cli(['tenant', 'quota', 'team-a', '--json'], url);
    expect((JSON.parse(r.out) as TenantView).usage.gpus).toEqual({ 'H100-80GB': 6 });
    r = await cli(
      ['tenant', 'policy', 'team-a', '--allow-engines', 'sim,llamacpp@>=b5000', '--require-slo'],
      url,
    );
    expect(r.code).toBe(0);
    expect(r.out).toContain('engines: sim, llamacpp@>=b5000; SLO required');
    r = await cli(
      ['tenant', 'policy', 'team-a', '--no-require-slo', '--max-gpus-per-replica', '2'],
      url,
    );
    expect(r.out).toContain('engines: sim, llamacpp@>=b5000; max GPUs/replica: 2\n');
    r = await cli(['describe', 'tenant', 'team-a'], url);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/Policy:\s+engines: sim, llamacpp@>=b5000; max GPUs\/replica: 2/);
    expect(r.out).toMatch(/gpus\[H100-80GB\]\s+admission\s+6\s+8/);
    expect(r.out).toMatch(/requestsPerSecond\s+gateway\s+-\s+unlimited/);
    r = await cli(['describe', 'tenant', 'team-a', '--json'], url);
    expect((JSON.parse(r.out) as TenantView).tenant.quota).toEqual({
      gpus: { 'H100-80GB': 8 },
      replicas: 4,
    });
    r = await cli(['tenant', 'quota', 'team-a', '--clear'], url);
    expect(r.out).toMatch(/gpus\[H100-80GB\]\s+admission\s+6\s+unlimited/);
    r = await cli(['tenant', 'policy', 'team-a', '--clear'], url);
    expect(r.out).toBe('tenant/team-a policy: none\n');
    // Usage errors exit 2 before any request.
    r = await cli(['tenant', 'quota', 'team-a', '--clear', '--replicas', '2'], url);
    expect(r.code).toBe(2);
    expect(r.err).toContain('--clear cannot be combined');
    r = await cli(['tenant', 'quota', 'team-a', '--gpus', 'H100'], 'http://127.0.0.1:1');
    expect(r.code).toBe(2);
    r = await cli(['tenant', 'quota', '--help'], url);
    expect(r.code).toBe(0);
    expect(r.out).toContain('--gpus <TYPE=N,...>');
    r = await cli(['tenant', 'policy', '--help'], url);
    expect(r.out).toContain('--no-require-slo');
    // The API's refusal reaches the CLI with its code.
    r = await cli(['tenant', 'quota', 'nope', '--replicas', '1'], url);
    expect(r.code).toBe(1);
    expect(r.err).toContain('IP_TENANT_NOT_FOUND');
  });
});
