// The model registry end to end in the control plane: the service on a real SQLite store in a
// temp dir, the API in process (tenant isolation, idempotent register, conflicts), and the CLI
// against the same API served on an ephemeral port.
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { createHash } from 'node:crypto';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createApi } from '../../src/api/app.js';
import { openApiDocument } from '../../src/api/openapi.js';
import { formatBytes, uriArg } from '../../src/cli/commands/model.js';
import type { ModelVersion, RegisterVersionResponse } from '../../src/core/api-types.js';
import { InferplaneError } from '../../src/core/errors.js';
import { DeploymentController } from '../../src/deploy/controller.js';
import { DeploymentService } from '../../src/deploy/service.js';
import { AuditLog } from '../../src/registry/audit.js';
import {
  ModelRegistry,
  formatFromUri,
  type RegistryPrincipal,
} from '../../src/registry/registry.js';
import { LocalDriver } from '../../src/runtime/local.js';
import { Inventory } from '../../src/schedule/inventory.js';
import { PackPlacer } from '../../src/schedule/placement.js';
import { openStore, type Db } from '../../src/store/db.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { TenancyService } from '../../src/tenancy/tenancy.js';
import { apiCall, closeServers, runCli, serveApiOn } from './api-helpers.js';

const ADMIN = 'ipk_admin_registry_test_0123456789';
let dir: string;
let db: Db;
let tenancy: TenancyService;
let audit: AuditLog;
let registry: ModelRegistry;
let app: ReturnType<typeof createApi>;
let keyA: string;
let keyB: string;
let teamA: RegistryPrincipal;
let teamB: RegistryPrincipal;
const operator: RegistryPrincipal = { kind: 'operator', keyId: 'key_op' };
const servers: Server[] = [];

const sha = (s: string | Buffer): string => createHash('sha256').update(s).digest('hex');
const H1 = sha('one');
const H2 = sha('two');

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'inferplane-registry-'));
  db = await openStore({ sqlitePath: join(dir, 'db.sqlite') });
  const logger = createLogger({ level: 'silent' });
  tenancy = new TenancyService(db);
  const inventory = new Inventory(db);
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
  const deployments = new DeploymentService(db, tenancy, inventory, placer, controller, driver);
  audit = new AuditLog(db);
  registry = new ModelRegistry(db, audit);
  app = createApi({
    tenancy,
    deployments,
    inventory,
    logger,
    onChange: () => undefined,
    version: 'test',
    registry,
    audit,
  });
  await tenancy.ensureOperatorKey(ADMIN);
  const a = await tenancy.createTenant('team-a');
  const b = await tenancy.createTenant('team-b');
  const ka = await tenancy.createKey('team-a');
  const kb = await tenancy.createKey('team-b');
  keyA = ka.key;
  keyB = kb.key;
  teamA = { kind: 'tenant', keyId: ka.id, tenantId: a.id, tenantName: 'team-a' };
  teamB = { kind: 'tenant', keyId: kb.id, tenantId: b.id, tenantName: 'team-b' };
});

afterEach(async () => {
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

const errCode = (json: Record<string, unknown>): string => (json.error as { code: string }).code;

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (e instanceof InferplaneError) return e.code;
    throw e;
  }
  return 'no error';
}

function version(v: string, sha256 = H1, extra: Record<string, unknown> = {}): unknown {
  return {
    version: v,
    artifacts: [{ uri: 'https://models.example/llama.gguf', sha256, size: 3 }],
    source: 'hf://meta/llama',
    license: 'llama3.1',
    ...extra,
  };
}

describe('ModelRegistry service', () => {
  it('registers versions with provenance, lists, describes, and keeps registration order', async () => {
    const r1 = await registry.register('llama-3.1-8b', version('1'), teamA);
    expect(r1.result).toBe('created');
    expect(r1.version).toMatchObject({
      model: 'llama-3.1-8b',
      tenant: 'team-a',
      version: '1',
      artifacts: [
        { uri: 'https://models.example/llama.gguf', sha256: H1, size: 3, format: 'gguf' },
      ],
      provenance: {
        source: 'hf://meta/llama',
        license: 'llama3.1',
        registeredBy: { keyId: teamA.keyId, tenant: 'team-a' },
      },
    });
    expect(r1.version.contentHash).toMatch(/^[0-9a-f]{64}$/);
    const r2 = await registry.register('llama-3.1-8b', version('0.9', H2), teamA);
    expect(r2.model).toMatchObject({ name: 'llama-3.1-8b', versions: 2, latest: '0.9' });

    const list = await registry.list(teamA);
    expect(list.map((m) => [m.name, m.tenant, m.versions, m.latest])).toEqual([
      ['llama-3.1-8b', 'team-a', 2, '0.9'],
    ]);
    const d = await registry.describe('llama-3.1-8b', teamA);
    expect(d.versions.map((v) => v.version)).toEqual(['1', '0.9']);
    expect((await registry.getVersion('llama-3.1-8b', '0.9', teamA)).artifacts[0]?.sha256).toBe(H2);
    expect(
      (await registry.resolve({ tenant: 'team-a', name: 'llama-3.1-8b', version: '1' }))
        .contentHash,
    ).toBe(r1.version.contentHash);
    expect(await code(registry.getVersion('llama-3.1-8b', '7', teamA))).toBe('IP_MODEL_NOT_FOUND');
  });

  it('is idempotent for the same content and rejects changed content with IP_CONFLICT', async () => {
    await registry.register('m', version('1'), teamA);
    const again = await registry.register('m', version('1', H1, { reason: 'retry' }), teamA);
    expect(again.result).toBe('unchanged');
    expect((await registry.versions('m', teamA)).length).toBe(1);

    for (const changed of [
      version('1', H2),
      version('1', H1, { license: 'mit' }),
      version('1', H1, { source: 'elsewhere' }),
      {
        version: '1',
        artifacts: [{ uri: 'https://models.example/other.gguf', sha256: H1 }],
        source: 'hf://meta/llama',
        license: 'llama3.1',
      },
      {
        version: '1',
        artifacts: [{ uri: 'https://models.example/llama.gguf', sha256: H1, size: 4 }],
        source: 'hf://meta/llama',
        license: 'llama3.1',
      },
    ]) {
      try {
        await registry.register('m', changed, teamA);
        expect.unreachable('should conflict');
      } catch (e) {
        expect((e as InferplaneError).code).toBe('IP_CONFLICT');
        expect((e as InferplaneError).details?.length).toBeGreaterThan(0);
      }
    }
    // Unchanged: still one version with the original content.
    expect((await registry.getVersion('m', '1', teamA)).artifacts[0]?.sha256).toBe(H1);
  });

  it('hashes a file:// artifact registered without sha256, and infers the format', async () => {
    const file = join(dir, 'weights.safetensors');
    writeFileSync(file, Buffer.alloc(300_000, 7));
    const uri = pathToFileURL(file).href;
    const seen: number[] = [];
    const reg = new ModelRegistry(db, audit, { onHashProgress: (_u, p) => seen.push(p.bytes) });
    const r = await reg.register('st', { version: '1', artifacts: [{ uri }] }, teamA);
    expect(r.version.artifacts[0]).toEqual({
      uri,
      sha256: sha(Buffer.alloc(300_000, 7)),
      size: 300_000,
      format: 'safetensors',
    });
    expect(seen.at(-1)).toBe(300_000);
    // The same file again, now with the sha256 given: the same content.
    expect(
      (
        await reg.register(
          'st',
          { version: '1', artifacts: [{ uri, sha256: sha(Buffer.alloc(300_000, 7)) }] },
          teamA,
        )
      ).result,
    ).toBe('unchanged');
  });

  it('validates: http without sha256, unknown format, unreadable file, bad names', async () => {
    const bad = async (name: string, body: unknown, p = teamA): Promise<string[]> => {
      try {
        await registry.register(name, body, p);
      } catch (e) {
        const err = e as InferplaneError;
        return [err.code, ...(err.details ?? []).map((d) => d.path)];
      }
      return ['no error'];
    };
    expect(
      await bad('m', { version: '1', artifacts: [{ uri: 'https://x.example/m.gguf' }] }),
    ).toEqual(['IP_VALIDATION', 'artifacts.0.sha256']);
    expect(
      await bad('m', { version: '1', artifacts: [{ uri: 'https://x.example/m.bin', sha256: H1 }] }),
    ).toEqual(['IP_VALIDATION', 'artifacts.0.format']);
    expect(
      await bad('m', { version: '1', artifacts: [{ uri: 'file:///nonexistent/m.gguf' }] }),
    ).toEqual(['IP_VALIDATION', 'artifacts.0.sha256']);
    expect(
      await bad('m', { version: '1', artifacts: [{ uri: 's3://bucket/m.gguf', sha256: H1 }] }),
    ).toEqual(['IP_VALIDATION', 'artifacts.0.uri']);
    expect((await bad('Bad Name', version('1')))[0]).toBe('IP_VALIDATION');
    expect(await bad('m', version('no spaces'))).toEqual(['IP_VALIDATION', 'version']);
    expect(await bad('m', version('1'), operator)).toEqual(['IP_VALIDATION', 'tenant']);
    expect(await bad('m', version('1', H1, { tenant: 'ghost' }), operator)).toEqual([
      'IP_TENANT_NOT_FOUND',
    ]);
    expect(formatFromUri('https://h/x/model.Q4_K_M.gguf?download=1')).toBe('gguf');
    expect(formatFromUri('file:///m/model.plan')).toBe('trt-engine');
    expect(formatFromUri('file:///m/model.onnx')).toBe('onnx');
  });

  it('isolates tenants: a team sees, reads and registers only into its own models', async () => {
    await registry.register('shared-name', version('1'), teamB);
    expect(await registry.list(teamA)).toEqual([]);
    expect(await code(registry.describe('shared-name', teamA))).toBe('IP_MODEL_NOT_FOUND');
    expect(await code(registry.versions('shared-name', teamA))).toBe('IP_MODEL_NOT_FOUND');
    expect(await code(registry.getVersion('shared-name', '1', teamA))).toBe('IP_MODEL_NOT_FOUND');
    expect(await code(registry.describe('shared-name', teamA, { tenant: 'team-b' }))).toBe(
      'IP_MODEL_NOT_FOUND',
    );
    expect(
      await code(registry.register('shared-name', version('2', H1, { tenant: 'team-b' }), teamA)),
    ).toBe('IP_TENANT_NOT_FOUND');
    // Team A's own model of the same name is its own: no conflict with team B's.
    expect((await registry.register('shared-name', version('1', H2), teamA)).result).toBe(
      'created',
    );
    expect((await registry.getVersion('shared-name', '1', teamB)).artifacts[0]?.sha256).toBe(H1);
    // An operator sees both; the bare name is then ambiguous.
    expect((await registry.list(operator)).map((m) => m.tenant)).toEqual(['team-a', 'team-b']);
    expect((await registry.list(operator, { tenant: 'team-b' })).length).toBe(1);
    expect(await code(registry.describe('shared-name', operator))).toBe('IP_VALIDATION');
    expect(
      (await registry.describe('shared-name', operator, { tenant: 'team-b' })).model.tenant,
    ).toBe('team-b');
    // An operator registers into a named tenant.
    const r = await registry.register(
      'ops-model',
      version('1', H1, { tenant: 'team-b' }),
      operator,
    );
    expect(r.version.provenance.registeredBy).toEqual({ keyId: 'key_op', tenant: null });
    expect((await registry.list(teamB)).map((m) => m.name)).toEqual(['ops-model', 'shared-name']);
  });

  it('appends audit records for model.create and model.version.register, not for no-ops', async () => {
    await registry.register('m', version('1', H1, { reason: 'first import' }), teamA);
    await registry.register('m', version('1'), teamA);
    await registry.register('m', version('2', H2), teamA);
    await code(registry.register('m', version('2', H1), teamA));
    const recs = await audit.list({ resource: 'model/team-a/m' });
    expect(recs.map((r) => [r.action, r.resource, r.actor])).toEqual([
      ['model.create', 'model/team-a/m', `tenant/team-a/${teamA.keyId}`],
      ['model.version.register', 'model/team-a/m@1', `tenant/team-a/${teamA.keyId}`],
      ['model.version.register', 'model/team-a/m@2', `tenant/team-a/${teamA.keyId}`],
    ]);
    expect(recs[1]?.reason).toBe('first import');
    expect(recs[1]?.before).toBeNull();
    expect((recs[2]?.after as ModelVersion).artifacts[0]?.sha256).toBe(H2);
    expect((await audit.verify()).ok).toBe(true);
  });
});

describe('registry API /api/v1/models', () => {
  it('registers (201), is idempotent (200), conflicts (409), lists and describes', async () => {
    const r1 = await api('POST', '/models/llama/versions', version('1'), keyA);
    expect(r1.status).toBe(201);
    expect((r1.json as unknown as RegisterVersionResponse).result).toBe('created');
    const r2 = await api('POST', '/models/llama/versions', version('1'), keyA);
    expect(r2.status).toBe(200);
    expect(r2.json.result).toBe('unchanged');
    const r3 = await api('POST', '/models/llama/versions', version('1', H2), keyA);
    expect(r3.status).toBe(409);
    expect(errCode(r3.json)).toBe('IP_CONFLICT');

    const list = await api('GET', '/models', undefined, keyA);
    expect(list.status).toBe(200);
    expect((list.json.items as Array<{ name: string }>).map((m) => m.name)).toEqual(['llama']);
    const d = await api('GET', '/models/llama', undefined, keyA);
    expect((d.json.versions as unknown[]).length).toBe(1);
    const vs = await api('GET', '/models/llama/versions', undefined, keyA);
    expect((vs.json.items as ModelVersion[])[0]?.version).toBe('1');
    const v = await api('GET', '/models/llama/versions/1', undefined, keyA);
    expect((v.json.version as ModelVersion).artifacts[0]?.format).toBe('gguf');
    expect((await api('GET', '/models/llama/versions/9', undefined, keyA)).status).toBe(404);

    const bad = await api('POST', '/models/llama/versions', { version: '2' }, keyA);
    expect(bad.status).toBe(400);
    expect(errCode(bad.json)).toBe('IP_VALIDATION');
  });

  it('team A cannot list, read or register into team B: 404', async () => {
    expect((await api('POST', '/models/b-model/versions', version('1'), keyB)).status).toBe(201);
    expect((await api('GET', '/models', undefined, keyA)).json.items).toEqual([]);
    expect((await api('GET', '/models?tenant=team-b', undefined, keyA)).json.items).toEqual([]);
    for (const path of [
      '/models/b-model',
      '/models/b-model?tenant=team-b',
      '/models/b-model/versions',
      '/models/b-model/versions/1',
    ]) {
      const r = await api('GET', path, undefined, keyA);
      expect(r.status, path).toBe(404);
      expect(errCode(r.json)).toBe('IP_MODEL_NOT_FOUND');
    }
    const w = await api(
      'POST',
      '/models/b-model/versions',
      version('2', H1, { tenant: 'team-b' }),
      keyA,
    );
    expect(w.status).toBe(404);
    // Nothing was written into team B.
    expect(
      ((await api('GET', '/models/b-model', undefined, keyB)).json.versions as unknown[]).length,
    ).toBe(1);
    // The operator sees it, by tenant.
    const op = await api('GET', '/models/b-model?tenant=team-b');
    expect(op.status).toBe(200);
  });

  it('answers IP_NOT_FOUND when the registry is not wired, and documents the routes', async () => {
    const logger = createLogger({ level: 'silent' });
    const bare = createApi({
      tenancy,
      deployments: undefined as unknown as DeploymentService,
      inventory: new Inventory(db),
      logger,
      onChange: () => undefined,
      version: 'test',
    });
    const res = await bare.request('/models', { headers: { authorization: `Bearer ${ADMIN}` } });
    expect(res.status).toBe(404);
    const doc = openApiDocument('test') as {
      paths: Record<string, unknown>;
      components: { schemas: Record<string, unknown> };
    };
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining([
        '/models',
        '/models/{name}',
        '/models/{name}/versions',
        '/models/{name}/versions/{version}',
        '/audit',
        '/audit/verify',
      ]),
    );
    expect(doc.components.schemas.ModelVersionCreate).toBeDefined();
  });
});

describe('inferplane model (CLI)', () => {
  const serveApi = (): Promise<string> => serveApiOn(app, servers);

  const cli = (args: string[], url: string, key = ADMIN) => runCli(args, url, key);

  it('parses arguments and formats sizes', () => {
    expect(uriArg('https://h/m.gguf')).toBe('https://h/m.gguf');
    expect(uriArg('/abs/m.gguf')).toBe('file:///abs/m.gguf');
    expect(uriArg('file:///abs/m.gguf')).toBe('file:///abs/m.gguf');
    expect(() => uriArg('s3://b/m.gguf')).toThrow(/file/);
    expect(formatBytes(512)).toBe('512 B');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    expect(formatBytes(3 * 1024 ** 3)).toBe('3 GiB');
    expect(formatBytes(null)).toBe('-');
  });

  it('register (hashing a local file), list, versions, describe; conflict exits 1', async () => {
    const url = await serveApi();
    const file = join(dir, 'tiny.gguf');
    writeFileSync(file, 'GGUF tiny model bytes');
    const reg = await cli(
      ['model', 'register', 'tiny', '--version', '1', '--uri', file, '--license', 'mit'],
      url,
      keyA,
    );
    expect(reg.err).toBe('');
    expect(reg.code).toBe(0);
    expect(reg.out).toMatch(
      /^model\/tiny version 1 registered \(gguf, 21 B, sha256 [0-9a-f]{12}\)/,
    );
    const again = await cli(
      [
        'model',
        'register',
        'tiny',
        '--version',
        '1',
        '--uri',
        `file://${file}`,
        '--license',
        'mit',
      ],
      url,
      keyA,
    );
    expect(again.out).toMatch(/unchanged/);

    writeFileSync(file, 'GGUF changed bytes!!!');
    const conflict = await cli(
      ['model', 'register', 'tiny', '--version', '1', '--uri', file, '--license', 'mit'],
      url,
      keyA,
    );
    expect(conflict.code).toBe(1);
    expect(conflict.err).toMatch(/IP_CONFLICT/);
    expect(conflict.err).toMatch(/artifacts\.0\.sha256/);

    const list = await cli(['model', 'list'], url, keyA);
    expect(list.out.split('\n')[0]).toMatch(/^NAME\s+TENANT\s+VERSIONS\s+LATEST\s+AGE$/);
    expect(list.out).toMatch(/tiny\s+team-a\s+1\s+1\s+/);
    const json = JSON.parse((await cli(['model', 'list', '--json'], url, keyA)).out) as {
      items: Array<{ name: string }>;
    };
    expect(json.items.map((m) => m.name)).toEqual(['tiny']);

    const vs = await cli(['model', 'versions', 'tiny'], url, keyA);
    expect(vs.out).toMatch(/^VERSION\s+FORMAT\s+SIZE\s+SHA256\s+SOURCE\s+LICENSE\s+AGE/);
    expect(vs.out).toMatch(/1\s+gguf\s+21 B\s+[0-9a-f]{12}\s+-\s+mit/);

    const d = await cli(['model', 'describe', 'tiny', '--version', '1'], url, keyA);
    expect(d.out).toMatch(/Registered by:\s+key_\w+ \(tenant team-a\)/);
    expect(d.out).toMatch(/SHA256:\s+[0-9a-f]{64}/);
    const dm = await cli(['model', 'describe', 'tiny'], url, keyA);
    expect(dm.out).toMatch(/Latest:\s+1/);

    // Team B sees nothing of it; the operator must name the tenant to register.
    expect((await cli(['model', 'describe', 'tiny'], url, keyB)).code).toBe(1);
    const op = await cli(
      ['model', 'register', 'x', '--version', '1', '--uri', 'https://h/x.onnx', '--sha256', H1],
      url,
    );
    expect(op.code).toBe(1);
    expect(op.err).toMatch(/IP_VALIDATION/);
    const bad = await cli(
      ['model', 'register', 'x', '--version', '1', '--uri', 'https://h/x.onnx', '--sha256', 'zz'],
      url,
    );
    expect(bad.code).toBe(2);
  });

  it('shares the model group with model synth', async () => {
    const r = await cli(['model', '--help'], 'http://127.0.0.1:1');
    expect(r.code).toBe(0);
    for (const sub of ['register', 'list', 'versions', 'describe']) expect(r.out).toContain(sub);
  });
});
