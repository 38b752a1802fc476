// Roles through the control-plane API, for every resource type (issue 7): an operator key sees
// and manages everything; a team's key sees and manages only its own tenant, keys, deployments
// (with their events and logs) and models; another team's key gets 404 for reads of named
// resources (never 200) and 403/404 for writes; no key gets 401. One fresh store per case, so
// every write starts from the same state, and after each refused write the state is checked
// unchanged.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, afterEach, describe, expect, it } from 'vitest';
import { simulatedNode } from '../../src/agent/agent.js';
import { createApi } from '../../src/api/app.js';
import { DeploymentController } from '../../src/deploy/controller.js';
import { DeploymentService } from '../../src/deploy/service.js';
import { AuditLog } from '../../src/registry/audit.js';
import { ModelRegistry } from '../../src/registry/registry.js';
import { LocalDriver } from '../../src/runtime/local.js';
import { Inventory } from '../../src/schedule/inventory.js';
import { PackPlacer } from '../../src/schedule/placement.js';
import { openStore, type Db } from '../../src/store/db.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { createMetrics } from '../../src/telemetry/metrics.js';
import { TenancyService } from '../../src/tenancy/tenancy.js';

const ADMIN = 'ipk_admin_roles_test_0123456789';
type Who = 'operator' | 'own' | 'other' | 'none';
const WHO: readonly Who[] = ['operator', 'own', 'other', 'none'];

let logDir: string;
let db: Db;
let app: ReturnType<typeof createApi>;
const keys: Record<Who, string | undefined> = {
  operator: ADMIN,
  own: undefined,
  other: undefined,
  none: undefined,
};

const SHA = 'a'.repeat(64);
const depSpec = (name: string, tenant: string, replicas = 1): Record<string, unknown> => ({
  name,
  tenant,
  model: 'llama-3.1-8b',
  engine: { name: 'sim', args: {} },
  replicas,
  resources: { gpus: 1, gpuType: 'H100-80GB' },
});
const modelVersion = (version: string, tenant?: string): Record<string, unknown> => ({
  version,
  ...(tenant ? { tenant } : {}),
  artifacts: [{ uri: 'https://models.example/m.gguf', sha256: SHA, size: 1 }],
});

beforeAll(() => {
  logDir = mkdtempSync(join(tmpdir(), 'inferplane-roles-'));
  // Engine output of team-a's replica 0 (no process runs: the controller is stopped).
  mkdirSync(join(logDir, 'a-web'), { recursive: true });
  writeFileSync(join(logDir, 'a-web', 'replica-0.log'), 'engine started\n');
});

afterAll(() => rmSync(logDir, { recursive: true, force: true }));

/**
 * team-a (the "own" team; its key is keys.own) and team-b ("other"): each with a deployment and
 * a registered model. Every case targets team-a's resources.
 */
beforeEach(async () => {
  db = await openStore({ sqlitePath: ':memory:' });
  const logger = createLogger({ level: 'silent' });
  const tenancy = new TenancyService(db);
  const inventory = new Inventory(db);
  await inventory.registerNode(simulatedNode({ name: 'n1', gpus: 8, gpuType: 'H100-80GB' }));
  const placer = new PackPlacer();
  const driver = new LocalDriver({ logDir, logger });
  const controller = new DeploymentController({
    db,
    inventory,
    placer,
    driver,
    logger,
    onChange: () => undefined,
  });
  await controller.stop(); // admission and storage only: no engine is started
  const deployments = new DeploymentService(db, tenancy, inventory, placer, controller, driver);
  const audit = new AuditLog(db);
  const registry = new ModelRegistry(db, audit);
  app = createApi({
    tenancy,
    deployments,
    inventory,
    logger,
    onChange: () => undefined,
    version: 'test',
    registry,
    audit,
    metricsText: () => metrics.registry.metrics(),
  });
  // The platform's registry with series of both teams and a fleet-wide one.
  const metrics = createMetrics({ defaultMetrics: false });
  metrics.requests.inc({ tenant: 'team-a', model: 'a-web', code: '200' }, 3);
  metrics.requests.inc({ tenant: 'team-b', model: 'b-web', code: '200' }, 5);
  metrics.replicas.set({ deployment: 'a-web', state: 'ready' }, 1);
  metrics.replicas.set({ deployment: 'b-web', state: 'ready' }, 1);
  metrics.gpuAllocated.set({ node: 'n1', gpu: '0', type: 'H100-80GB' }, 1);
  await tenancy.ensureOperatorKey(ADMIN);
  await tenancy.createTenant('team-a');
  await tenancy.createTenant('team-b');
  keys.own = (await tenancy.createKey('team-a')).key;
  keys.other = (await tenancy.createKey('team-b')).key;
  const op = { kind: 'operator', keyId: 'setup' } as const;
  await deployments.apply(depSpec('a-web', 'team-a'), op);
  await deployments.apply(depSpec('b-web', 'team-b'), op);
  await registry.register('a-model', modelVersion('1.0', 'team-a'), op);
  await registry.register('b-model', modelVersion('1.0', 'team-b'), op);
});

afterEach(async () => {
  await db.destroy();
});

async function call(
  who: Who,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; text: string }> {
  const key = keys[who];
  const res = await app.request(path, {
    method,
    headers: {
      ...(key ? { authorization: `Bearer ${key}` } : {}),
      'content-type': 'application/json',
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, text: await res.text() };
}

/** What team-a owns, as the store has it: compared before and after a refused write. */
async function teamAState(): Promise<unknown> {
  const t = await db.selectFrom('tenants').selectAll().where('name', '=', 'team-a').execute();
  const d = await db
    .selectFrom('deployments')
    .select(['name', 'spec', 'generation', 'tenant_id'])
    .orderBy('name')
    .execute();
  const k = await db.selectFrom('api_keys').select(['id', 'tenant_id']).orderBy('id').execute();
  const m = await db.selectFrom('models').select(['name', 'tenant_id']).orderBy('name').execute();
  const v = await db.selectFrom('model_versions').select(['model_id', 'version']).execute();
  return { t, d, k, m, v };
}

interface Row {
  resource: string;
  route: string;
  method: string;
  path: string;
  body?: unknown;
  /** Expected status for operator, own team, other team, no key. */
  expect: Record<Who, number>;
  /** For list routes: what a caller must (not) see of team-a's resources. */
  lists?: string;
  /** A 409 for a global name says the name is taken (deployment names are global). */
  namesTaken?: boolean;
}

const TEAM_A_NAMES = ['team-a', 'a-web', 'a-new', 'a-model'];

/** The same request about names that do not exist anywhere. */
function withMissingNames(path: string, body: unknown): { path: string; body: unknown } {
  const swap = (t: string): string =>
    TEAM_A_NAMES.reduce((acc, n) => acc.split(n).join(`zz-${n}`), t);
  return {
    path: swap(path),
    body: body === undefined ? undefined : (JSON.parse(swap(JSON.stringify(body))) as unknown),
  };
}

const READ_NAMED = { operator: 200, own: 200, other: 404, none: 401 };

const ROWS: Row[] = [
  // Tenants
  {
    resource: 'tenants',
    route: 'list',
    method: 'GET',
    path: '/tenants',
    expect: { operator: 200, own: 200, other: 200, none: 401 },
    lists: '"team-a"',
  },
  { resource: 'tenants', route: 'get', method: 'GET', path: '/tenants/team-a', expect: READ_NAMED },
  {
    resource: 'tenants',
    route: 'create',
    method: 'POST',
    path: '/tenants',
    body: { name: 'team-c' },
    expect: { operator: 201, own: 403, other: 403, none: 401 },
  },
  {
    resource: 'tenants',
    route: 'patch limits/quota/policy',
    method: 'PATCH',
    path: '/tenants/team-a',
    body: { quota: { replicas: 100 }, policy: { requireSlo: true }, limits: { maxConcurrency: 9 } },
    expect: { operator: 200, own: 403, other: 403, none: 401 },
  },
  // Keys
  {
    resource: 'keys',
    route: 'create',
    method: 'POST',
    path: '/tenants/team-a/keys',
    body: { description: 'ci' },
    expect: { operator: 201, own: 201, other: 404, none: 401 },
  },
  // Deployments (events are part of describe; scale is an apply with other replicas)
  {
    resource: 'deployments',
    route: 'list',
    method: 'GET',
    path: '/deployments',
    expect: { operator: 200, own: 200, other: 200, none: 401 },
    lists: '"a-web"',
  },
  {
    resource: 'deployments',
    route: 'describe (spec, replicas, events)',
    method: 'GET',
    path: '/deployments/a-web',
    expect: READ_NAMED,
  },
  {
    resource: 'events',
    route: 'list of a deployment',
    method: 'GET',
    path: '/deployments/a-web/events',
    expect: READ_NAMED,
  },
  {
    resource: 'deployments',
    route: 'logs',
    method: 'GET',
    path: '/deployments/a-web/logs?replica=0',
    expect: READ_NAMED,
  },
  {
    resource: 'deployments',
    route: 'apply (create)',
    method: 'PUT',
    path: '/deployments/a-new',
    body: depSpec('a-new', 'team-a'),
    expect: { operator: 201, own: 201, other: 403, none: 401 },
  },
  {
    resource: 'deployments',
    route: 'apply (update routing)',
    method: 'PUT',
    path: '/deployments/a-web',
    body: { ...depSpec('a-web', 'team-a'), routing: { policy: 'round-robin' } },
    expect: { operator: 200, own: 200, other: 403, none: 401 },
  },
  {
    resource: 'deployments',
    route: 'scale (apply replicas 2)',
    method: 'PUT',
    path: '/deployments/a-web',
    body: depSpec('a-web', 'team-a', 2),
    expect: { operator: 200, own: 200, other: 403, none: 401 },
  },
  {
    // The other team naming itself as the owner: deployment names are global (they are the
    // model names clients send), so this is a conflict; team-a's deployment is untouched.
    resource: 'deployments',
    route: "apply over another team's name",
    method: 'PUT',
    path: '/deployments/a-web',
    body: depSpec('a-web', 'team-b', 3),
    expect: { operator: 409, own: 403, other: 409, none: 401 },
    namesTaken: true,
  },
  {
    resource: 'deployments',
    route: 'delete',
    method: 'DELETE',
    path: '/deployments/a-web',
    expect: { operator: 200, own: 200, other: 404, none: 401 },
  },
  // Nodes (operator only: they show every team's replicas)
  {
    resource: 'nodes',
    route: 'list',
    method: 'GET',
    path: '/nodes',
    expect: { operator: 200, own: 403, other: 403, none: 401 },
  },
  // Models (registry)
  {
    resource: 'models',
    route: 'list',
    method: 'GET',
    path: '/models',
    expect: { operator: 200, own: 200, other: 200, none: 401 },
    lists: '"a-model"',
  },
  {
    resource: 'models',
    route: 'list ?tenant=team-a',
    method: 'GET',
    path: '/models?tenant=team-a',
    expect: { operator: 200, own: 200, other: 200, none: 401 },
    lists: '"a-model"',
  },
  {
    resource: 'models',
    route: 'describe',
    method: 'GET',
    path: '/models/a-model',
    expect: READ_NAMED,
  },
  {
    resource: 'models',
    route: 'describe ?tenant=team-a',
    method: 'GET',
    path: '/models/a-model?tenant=team-a',
    expect: READ_NAMED,
  },
  {
    resource: 'models',
    route: 'versions',
    method: 'GET',
    path: '/models/a-model/versions',
    expect: READ_NAMED,
  },
  {
    resource: 'models',
    route: 'version',
    method: 'GET',
    path: '/models/a-model/versions/1.0',
    expect: READ_NAMED,
  },
  {
    resource: 'models',
    route: 'register version',
    method: 'POST',
    path: '/models/a-model/versions',
    body: modelVersion('2.0', 'team-a'),
    expect: { operator: 201, own: 201, other: 404, none: 401 },
  },
  // Audit log (operator only: it records every team's changes)
  {
    resource: 'audit',
    route: 'list',
    method: 'GET',
    path: '/audit',
    expect: { operator: 200, own: 403, other: 403, none: 401 },
  },
  {
    resource: 'audit',
    route: 'verify',
    method: 'POST',
    path: '/audit/verify',
    expect: { operator: 200, own: 403, other: 403, none: 401 },
  },
];

const CASES = ROWS.flatMap((row) => WHO.map((who) => ({ ...row, who })));

describe('roles through the API: route × {operator, own team, other team, no key}', () => {
  it.each(CASES)('$resource $route as $who', async (c) => {
    const before = await teamAState();
    const r = await call(c.who, c.method, c.path, c.body);
    expect({ status: r.status, body: r.text.slice(0, 300) }).toMatchObject({
      status: c.expect[c.who],
    });
    if (c.who === 'other' || c.who === 'none') {
      // Nothing of team-a's reaches the other team: beyond the names it sent itself, no names,
      // specs, keys or logs of team-a's.
      const sent = `${c.path} ${JSON.stringify(c.body ?? null)}`;
      for (const n of [...TEAM_A_NAMES, 'engine started']) {
        if (!sent.includes(n)) expect(r.text).not.toContain(n);
      }
      if (r.status >= 400) {
        expect(Object.keys(JSON.parse(r.text) as object)).toEqual(['error']);
      }
      // A refusal reads exactly as for names that do not exist: existence is not revealed
      // (but a global deployment name in use is a 409 for everyone).
      if (r.status === 404 || (r.status === 403 && c.who === 'other' && !c.namesTaken)) {
        const m = withMissingNames(c.path, c.body);
        const missing = await call(c.who, c.method, m.path, m.body);
        expect(missing.status).toBe(r.status);
        expect(missing.text.split('zz-').join('')).toBe(r.text);
      }
    }
    if (c.lists && (c.who === 'operator' || c.who === 'own')) expect(r.text).toContain(c.lists);
    if (r.status >= 400) expect(await teamAState()).toEqual(before);
  });

  it('the other team still reaches its own resources the same way', async () => {
    for (const path of [
      '/tenants/team-b',
      '/deployments/b-web',
      '/models/b-model',
      '/models/b-model/versions/1.0',
    ]) {
      expect((await call('other', 'GET', path)).status, path).toBe(200);
    }
    const list = await call('other', 'GET', '/deployments');
    expect(list.text).toContain('b-web');
  });

  it('a team key cannot act on its own team over quota or policy either (403 with the code)', async () => {
    await call('operator', 'PATCH', '/tenants/team-a', { quota: { replicas: 1 } });
    const r = await call('own', 'PUT', '/deployments/a-two', depSpec('a-two', 'team-a'));
    expect(r.status).toBe(403);
    expect(JSON.parse(r.text)).toMatchObject({ error: { code: 'IP_QUOTA_EXCEEDED' } });
  });

  it('the OpenAPI document is public', async () => {
    for (const who of WHO) {
      expect((await call(who, 'GET', '/openapi.json')).status).toBe(200);
    }
  });

  it('metrics: a team key sees only its own series; the operator sees all; no key gets 401', async () => {
    const text = async (who: Who) => {
      const r = await call(who, 'GET', '/metrics');
      return { status: r.status, text: r.text };
    };
    expect((await text('none')).status).toBe(401);
    const all = await text('operator');
    expect(all.status).toBe(200);
    expect(all.text).toContain('tenant="team-b"');
    expect(all.text).toContain('gpu="0"');
    const own = await text('own');
    expect(own.status).toBe(200);
    expect(own.text).toContain(
      'inferplane_gateway_requests_total{tenant="team-a",model="a-web",code="200"} 3',
    );
    expect(own.text).toContain('inferplane_replicas{deployment="a-web",state="ready"} 1');
    expect(own.text).not.toContain('team-b');
    expect(own.text).not.toContain('b-web');
    expect(own.text).not.toContain('gpu="0"'); // fleet-wide series are the operator's
    const other = await text('other');
    expect(other.text).toContain('tenant="team-b"');
    expect(other.text).not.toContain('team-a');
  });
});
