// The deployment service and controller over a real SQLite store and the real local runtime
// (simulated engine processes from dist/, built by the global setup).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { simulatedNode } from '../../src/agent/agent.js';
import { InferplaneError } from '../../src/core/errors.js';
import type { DeploymentSpecInput } from '../../src/core/schemas.js';
import { DeploymentController } from '../../src/deploy/controller.js';
import { DeploymentService } from '../../src/deploy/service.js';
import { LocalDriver } from '../../src/runtime/local.js';
import { Inventory } from '../../src/schedule/inventory.js';
import { PackPlacer } from '../../src/schedule/placement.js';
import { openStore, type Db } from '../../src/store/db.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { TenancyService, type Principal } from '../../src/tenancy/tenancy.js';

const OP: Principal = { kind: 'operator', keyId: 'test' };
let dir: string;
let db: Db;
let controller: DeploymentController;
let service: DeploymentService;
let changes = 0;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'inferplane-deploy-'));
  db = await openStore({ sqlitePath: join(dir, 'db.sqlite') });
  const logger = createLogger({ level: 'silent' });
  const tenancy = new TenancyService(db);
  const inventory = new Inventory(db);
  await inventory.registerNode(simulatedNode({ name: 'n1', gpus: 2, gpuType: 'H100-80GB' }));
  await tenancy.createTenant('a');
  await tenancy.createTenant('b');
  const placer = new PackPlacer();
  const driver = new LocalDriver({ logDir: join(dir, 'logs'), logger, probeIntervalMs: 500 });
  controller = new DeploymentController({
    db,
    inventory,
    placer,
    driver,
    logger,
    onChange: () => changes++,
  });
  service = new DeploymentService(db, tenancy, inventory, placer, controller, driver);
  await controller.start();
});

afterAll(async () => {
  await controller.stop();
  await db.destroy();
  rmSync(dir, { recursive: true, force: true });
});

const spec = (over: Partial<DeploymentSpecInput> = {}): DeploymentSpecInput => ({
  name: 'web',
  tenant: 'a',
  model: 'llama-3.1-8b',
  engine: { name: 'sim', args: {} },
  replicas: 2,
  resources: { gpus: 1, gpuType: 'H100-80GB' },
  ...over,
});

async function until<T>(fn: () => Promise<T | undefined>, what: string): Promise<T> {
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    const v = await fn();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out: ${what}`);
}

async function errorCode(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (e instanceof InferplaneError) return e.code;
    throw e;
  }
  return 'no error';
}

const ready = (n: number) => async () => {
  const d = await service.describe('web', OP);
  return d.replicas.filter((r) => r.state === 'ready').length === n && d.replicas.length === n
    ? d
    : undefined;
};

describe('deployments', () => {
  it('creates, places each replica on its own GPU and routes to the ready ones', async () => {
    const out = await service.apply(spec(), OP);
    expect(out.result).toBe('created');
    const d = await until(ready(2), '2 ready replicas');
    expect(d.replicas.map((r) => r.gpus)).toEqual([[0], [1]]);
    expect(d.summary.phase).toBe('Ready');
    const routes = await service.routes();
    expect(routes.find((r) => r.model === 'web')?.endpoints).toHaveLength(2);
    expect(changes).toBeGreaterThan(0);
  });

  it('is idempotent: the same spec changes nothing', async () => {
    const before = await service.describe('web', OP);
    expect((await service.apply(spec(), OP)).result).toBe('unchanged');
    const after = await service.describe('web', OP);
    expect(after.replicas.map((r) => r.pid)).toEqual(before.replicas.map((r) => r.pid));
  });

  it('scales without restarting the replicas it keeps', async () => {
    const before = await service.describe('web', OP);
    const out = await service.apply(spec({ replicas: 1 }), OP);
    expect(out.result).toBe('updated');
    expect(out.deployment.generation).toBe(1);
    const d = await until(ready(1), '1 ready replica');
    expect(d.replicas[0]!.id).toBe(before.replicas[0]!.id);
    expect(d.replicas[0]!.pid).toBe(before.replicas[0]!.pid);
    expect(d.events.map((e) => e.reason)).toContain('ScaledDown');
  });

  it('changes routing without restarting replicas; the route carries it', async () => {
    const before = await service.describe('web', OP);
    const routing = { policy: 'least-loaded' as const, weights: { kv: 2 } };
    const out = await service.apply(spec({ replicas: 1, routing }), OP);
    expect(out.result).toBe('updated');
    expect(out.deployment.generation).toBe(1);
    const after = await service.describe('web', OP);
    expect(after.replicas.map((r) => r.pid)).toEqual(before.replicas.map((r) => r.pid));
    expect((await service.routes()).find((r) => r.model === 'web')?.routing).toEqual(routing);
    await service.apply(spec({ replicas: 1 }), OP);
    expect((await service.routes()).find((r) => r.model === 'web')?.routing).toBeUndefined();
  });

  it('replaces replicas when the template changes', async () => {
    const before = await service.describe('web', OP);
    const out = await service.apply(
      spec({ replicas: 1, engine: { name: 'sim', args: { maxNumSeqs: 64 } } }),
      OP,
    );
    expect(out.deployment.generation).toBe(2);
    const d = await until(async () => {
      const x = await ready(1)();
      return x && x.replicas[0]!.id !== before.replicas[0]!.id ? x : undefined;
    }, 'replacement');
    expect(d.events.map((e) => e.reason)).toContain('Replaced');
  });

  it('admits only what fits, counting GPUs the deployment already holds', async () => {
    // 'web' holds 1 of 2 GPUs: another 2-GPU replica does not fit...
    expect(
      await errorCode(
        service.apply(
          spec({ name: 'big', replicas: 1, resources: { gpus: 2, gpuType: 'H100-80GB' } }),
          OP,
        ),
      ),
    ).toBe('IP_PLACEMENT_FAILED');
    // ...but 'web' itself may grow to 2 GPUs per replica, since its replica is replaced.
    const out = await service.apply(
      spec({
        replicas: 1,
        resources: { gpus: 2, gpuType: 'H100-80GB' },
        engine: { name: 'sim', args: { maxNumSeqs: 64 } },
      }),
      OP,
    );
    expect(out.result).toBe('updated');
    const d = await until(async () => {
      const x = await ready(1)();
      return x && x.replicas[0]!.gpus.length === 2 ? x : undefined;
    }, '2-GPU replica');
    expect(d.replicas[0]!.gpus).toEqual([0, 1]);
  });

  it('keeps tenants apart', async () => {
    const b: Principal = { kind: 'tenant', keyId: 'kb', tenantId: 'x', tenantName: 'b' };
    expect(await errorCode(service.apply(spec(), b))).toBe('IP_FORBIDDEN');
    expect(await errorCode(service.describe('web', b))).toBe('IP_DEPLOYMENT_NOT_FOUND');
    expect(await service.list(b)).toEqual([]);
    expect(await errorCode(service.apply(spec({ tenant: 'nope' }), OP))).toBe('IP_VALIDATION');
    expect(await errorCode(service.apply(spec({ engine: { name: 'vllm9' } }), OP))).toBe(
      'IP_VALIDATION',
    );
  });

  it('deletes: engines stop and the route goes away', async () => {
    const d = await service.describe('web', OP);
    const pid = d.replicas[0]!.pid!;
    await service.delete('web', OP);
    expect(() => process.kill(pid, 0)).toThrow();
    expect((await service.routes()).find((r) => r.model === 'web')).toBeUndefined();
    expect(await errorCode(service.describe('web', OP))).toBe('IP_DEPLOYMENT_NOT_FOUND');
    const orphans = await db.selectFrom('events').select('id').execute();
    expect(orphans).toEqual([]);
  });
});
