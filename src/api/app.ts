// The control-plane HTTP API under /api/v1. Routes only: the logic lives in the layers.
import { Hono, type Context } from 'hono';
import type {
  AuditRecord,
  AuditVerifyResult,
  ListResponse,
  ModelSummary,
  ModelVersion,
  NodeSummary,
} from '../core/api-types.js';
import { InferplaneError, toInferplaneError } from '../core/errors.js';
import {
  KeyCreateSchema,
  TenantCreateSchema,
  TenantPatchSchema,
  parseOrThrow,
  AuditQuerySchema,
} from '../core/schemas.js';
import type { DeploymentService } from '../deploy/service.js';
import type { Inventory } from '../schedule/inventory.js';
import { bearerToken, type Principal, type TenancyService } from '../tenancy/tenancy.js';
import type { Logger } from '../telemetry/logger.js';
import { actorOf, type AuditLog } from '../registry/audit.js';
import type { ModelRegistry } from '../registry/registry.js';
import { openApiDocument } from './openapi.js';

export interface ApiDeps {
  tenancy: TenancyService;
  deployments: DeploymentService;
  inventory: Inventory;
  logger: Logger;
  /** Called after changes the gateway must learn about (keys, tenants). */
  onChange: () => void;
  version: string;
  /** The model registry (/models); the routes answer IP_NOT_FOUND while it is not wired. */
  registry?: ModelRegistry;
  /** The audit log (/audit); the routes answer IP_NOT_FOUND while it is not wired. */
  audit?: AuditLog;
  /** The platform's Prometheus text (/metrics), for the per-team view at /api/v1/metrics. */
  metricsText?: () => Promise<string>;
}

type Env = { Variables: { principal: Principal } };

export function createApi(deps: ApiDeps): Hono<Env> {
  const app = new Hono<Env>();

  app.onError((e, c) => {
    const err = toInferplaneError(e);
    if (err.status >= 500) deps.logger.error({ err: e, path: c.req.path }, 'api error');
    const headers: Record<string, string> = {};
    if (err.retryAfterS !== undefined) headers['retry-after'] = String(err.retryAfterS);
    return c.json(err.toJSON(), err.status as 400, headers);
  });
  app.notFound((c) => {
    const err = new InferplaneError(
      'IP_NOT_FOUND',
      `no such endpoint: ${c.req.method} ${c.req.path}`,
    );
    return c.json(err.toJSON(), 404);
  });

  app.get('/openapi.json', (c) => c.json(openApiDocument(deps.version)));

  app.use('*', async (c, next) => {
    const principal = await deps.tenancy.authenticate(bearerToken(c.req.header('authorization')));
    c.set('principal', principal);
    await next();
  });

  const operatorOnly = (c: Context<Env>): void => {
    if (c.get('principal').kind !== 'operator') {
      throw new InferplaneError('IP_FORBIDDEN', 'this action needs an operator key');
    }
  };

  // Deployments
  app.get('/deployments', async (c) =>
    c.json({ items: await deps.deployments.list(c.get('principal')) }),
  );
  app.get('/deployments/:name', async (c) =>
    c.json(await deps.deployments.describe(c.req.param('name'), c.get('principal'))),
  );
  app.get('/deployments/:name/events', async (c) => {
    const d = await deps.deployments.describe(c.req.param('name'), c.get('principal'));
    return c.json({ items: d.events });
  });
  // Prometheus text, scoped to the caller: an operator gets every series; a team key only the
  // series labelled with its tenant or one of its deployments (the unauthenticated /metrics of
  // the platform is for the operator's scraper).
  app.get('/metrics', async (c) => {
    if (!deps.metricsText) throw new InferplaneError('IP_NOT_FOUND', 'metrics are not enabled');
    const text = await deps.metricsText();
    const p = c.get('principal');
    const body =
      p.kind === 'operator'
        ? text
        : filterMetrics(
            text,
            p.tenantName,
            new Set((await deps.deployments.list(p)).map((d) => d.name)),
          );
    return c.body(body, 200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
  });
  app.put('/deployments/:name', async (c) => {
    const body = await jsonBody(c);
    const name = c.req.param('name');
    if (typeof body === 'object' && body !== null && 'name' in body && body.name !== name) {
      throw new InferplaneError('IP_VALIDATION', `spec name does not match the URL (${name})`, {
        details: [{ path: 'name', message: `must equal ${name}` }],
      });
    }
    const withName = typeof body === 'object' && body !== null ? { name, ...body } : body;
    const out = await deps.deployments.apply(withName, c.get('principal'));
    return c.json(out, out.result === 'created' ? 201 : 200);
  });
  app.delete('/deployments/:name', async (c) => {
    const name = c.req.param('name');
    await deps.deployments.delete(name, c.get('principal'));
    return c.json({ deleted: name });
  });
  app.get('/deployments/:name/logs', async (c) => {
    const replica = intQuery(c, 'replica', 0);
    const tail = intQuery(c, 'tail', 200);
    const text = await deps.deployments.logs(
      c.req.param('name'),
      c.get('principal'),
      replica,
      Math.min(tail, 100_000),
    );
    return c.text(text);
  });

  // Rollouts: status (step, weights, gates), promote, abort, undo.
  app.get('/deployments/:name/rollout', async (c) =>
    c.json(await deps.deployments.rolloutStatus(c.req.param('name'), c.get('principal'))),
  );
  app.post('/deployments/:name/rollout/promote', async (c) =>
    c.json(await deps.deployments.rolloutPromote(c.req.param('name'), c.get('principal'))),
  );
  app.post('/deployments/:name/rollout/abort', async (c) =>
    c.json(await deps.deployments.rolloutAbort(c.req.param('name'), c.get('principal'))),
  );
  app.post('/deployments/:name/rollout/undo', async (c) => {
    const out = await deps.deployments.rolloutUndo(c.req.param('name'), c.get('principal'));
    deps.onChange();
    return c.json(out);
  });

  // Tenants and keys
  app.get('/tenants', async (c) => {
    const p = c.get('principal');
    const all = await deps.tenancy.listTenants();
    return c.json({ items: p.kind === 'operator' ? all : all.filter((t) => t.id === p.tenantId) });
  });
  /** Appends to the audit log (when enabled) on behalf of the request's principal. */
  const record = async (
    c: Context<Env>,
    action: string,
    resource: string,
    before: unknown,
    after: unknown,
  ): Promise<void> => {
    if (!deps.audit) return;
    await deps.audit.append({
      actor: actorOf(c.get('principal')),
      action,
      resource,
      before: before ?? null,
      after: after ?? null,
      reason: c.req.header('x-inferplane-reason') ?? null,
    });
  };

  app.post('/tenants', async (c) => {
    operatorOnly(c);
    const { name, limits, quota, policy } = parseOrThrow(
      TenantCreateSchema,
      await jsonBody(c),
      'tenant',
    );
    const tenant = await deps.tenancy.createTenant(name, limits, quota, policy);
    await record(c, 'tenant.create', `tenant/${name}`, null, tenant);
    deps.onChange();
    return c.json({ tenant }, 201);
  });
  app.get('/tenants/:name', async (c) => {
    const name = c.req.param('name');
    const p = c.get('principal');
    // A tenant key sees only its own tenant; others read as not found (as for deployments).
    if (p.kind === 'tenant' && p.tenantName !== name) {
      throw new InferplaneError('IP_TENANT_NOT_FOUND', `tenant ${name} not found`);
    }
    // The tenant with its usage and its quotas together (admission quotas and gateway limits).
    return c.json(await deps.tenancy.view(name));
  });
  app.patch('/tenants/:name', async (c) => {
    operatorOnly(c);
    const patch = parseOrThrow(TenantPatchSchema, await jsonBody(c), 'tenant');
    const name = c.req.param('name');
    const before = await deps.tenancy.getTenant(name);
    const after = await deps.tenancy.patchTenant(name, patch);
    await record(c, 'tenant.update', `tenant/${name}`, before, after);
    deps.onChange();
    return c.json(await deps.tenancy.view(name));
  });
  app.post('/tenants/:name/keys', async (c) => {
    const name = c.req.param('name');
    const p = c.get('principal');
    if (p.kind === 'tenant' && p.tenantName !== name) {
      throw new InferplaneError('IP_TENANT_NOT_FOUND', `tenant ${name} not found`);
    }
    const raw = c.req.header('content-length') === '0' ? {} : await jsonBody(c, {});
    const { description } = parseOrThrow(KeyCreateSchema, raw, 'key');
    const key = await deps.tenancy.createKey(name, description);
    // The key's id and prefix only: never the key or its digest.
    await record(c, 'key.create', `key/${name}/${key.id}`, null, {
      id: key.id,
      tenant: key.tenant,
      prefix: key.prefix,
      ...(description !== undefined ? { description } : {}),
    });
    deps.onChange();
    return c.json(key, 201);
  });

  // Nodes
  app.get('/nodes', async (c) => {
    operatorOnly(c);
    const nodes = await deps.inventory.listNodes();
    const body: ListResponse<NodeSummary> = {
      items: nodes.map((n) => ({
        name: n.name,
        state: n.state,
        labels: n.labels,
        lastSeen: n.lastSeen,
        gpuTotal: n.gpus.length,
        gpuFree: n.gpus.filter((g) => !n.allocations.has(g.index)).length,
        gpus: n.gpus.map((g) => ({
          index: g.index,
          uuid: g.uuid,
          type: g.type,
          memoryMiB: g.memoryMiB,
          vendor: g.vendor,
          replica: n.allocations.get(g.index) ?? null,
        })),
      })),
    };
    return c.json(body);
  });

  // Model registry: models (per tenant) → immutable versions → artifacts.
  const registry = (): ModelRegistry => {
    if (!deps.registry) {
      throw new InferplaneError('IP_NOT_FOUND', 'the model registry is not enabled on this server');
    }
    return deps.registry;
  };
  const modelScope = (c: Context): { tenant?: string } => {
    const tenant = c.req.query('tenant');
    return tenant ? { tenant } : {};
  };
  app.get('/models', async (c) => {
    const body: ListResponse<ModelSummary> = {
      items: await registry().list(c.get('principal'), modelScope(c)),
    };
    return c.json(body);
  });
  app.get('/models/:name', async (c) =>
    c.json(await registry().describe(c.req.param('name'), c.get('principal'), modelScope(c))),
  );
  app.get('/models/:name/versions', async (c) => {
    const body: ListResponse<ModelVersion> = {
      items: await registry().versions(c.req.param('name'), c.get('principal'), modelScope(c)),
    };
    return c.json(body);
  });
  app.get('/models/:name/versions/:version', async (c) =>
    c.json({
      version: await registry().getVersion(
        c.req.param('name'),
        c.req.param('version'),
        c.get('principal'),
        modelScope(c),
      ),
    }),
  );
  app.post('/models/:name/versions', async (c) => {
    const out = await registry().register(
      c.req.param('name'),
      await jsonBody(c),
      c.get('principal'),
    );
    return c.json(out, out.result === 'created' ? 201 : 200);
  });

  // Audit log (operator): the hash-chained record of every change.
  const audit = (): AuditLog => {
    if (!deps.audit) {
      throw new InferplaneError('IP_NOT_FOUND', 'the audit log is not enabled on this server');
    }
    return deps.audit;
  };
  app.get('/audit', async (c) => {
    operatorOnly(c);
    const q = parseOrThrow(AuditQuerySchema, c.req.query(), 'audit query');
    const body: ListResponse<AuditRecord> = { items: await audit().list(q) };
    return c.json(body);
  });
  app.post('/audit/verify', async (c) => {
    operatorOnly(c);
    const result: AuditVerifyResult = await audit().verify();
    return c.json(result);
  });

  return app;
}

async function jsonBody(c: Context, fallback?: unknown): Promise<unknown> {
  const text = await c.req.text();
  if (text.trim() === '' && fallback !== undefined) return fallback;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new InferplaneError('IP_BAD_REQUEST', 'the request body is not valid JSON');
  }
}

function intQuery(c: Context, name: string, dflt: number): number {
  const v = c.req.query(name);
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) {
    throw new InferplaneError(
      'IP_VALIDATION',
      `query parameter ${name} must be a non-negative integer`,
      {
        details: [{ path: name, message: 'must be a non-negative integer' }],
      },
    );
  }
  return n;
}

/**
 * The samples of a Prometheus text exposition that belong to one team: labelled `tenant` with
 * its name, or `deployment` / `model` with one of its deployments. Global series (GPUs, process)
 * and other teams' series are dropped; a family's HELP/TYPE lines are kept when a sample is.
 */
export function filterMetrics(
  text: string,
  tenant: string,
  deployments: ReadonlySet<string>,
): string {
  const out: string[] = [];
  let meta: string[] = [];
  let family = '';
  let kept = false;
  const mine = (labels: string): boolean => {
    for (const m of labels.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
      const [, k, v] = m;
      if (k === 'tenant' && v === tenant) return true;
      if ((k === 'deployment' || k === 'model') && deployments.has(v!)) return true;
    }
    return false;
  };
  for (const line of text.split('\n')) {
    if (line.startsWith('# HELP ') || line.startsWith('# TYPE ')) {
      const name = line.split(' ')[2] ?? '';
      if (name !== family) {
        family = name;
        meta = [];
        kept = false;
      }
      meta.push(line);
      continue;
    }
    const brace = line.indexOf('{');
    if (line === '' || brace === -1) continue;
    if (!mine(line.slice(brace + 1, line.lastIndexOf('}')))) continue;
    if (!kept) {
      out.push(...meta);
      kept = true;
    }
    out.push(line);
  }
  return out.length > 0 ? out.join('\n') + '\n' : '';
}
