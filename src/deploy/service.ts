// Deployments as the API sees them: admission (schema, tenant, engine, placement), idempotent
// apply, views for get/describe, delete, and logs.
import { isDeepStrictEqual } from 'node:util';
import { isoNow } from '../core/clock.js';
import { InferplaneError } from '../core/errors.js';
import { newId } from '../core/ids.js';
import {
  DeploymentSpecSchema,
  durationMs,
  parseOrThrow,
  type DeploymentSpec,
} from '../core/schemas.js';
import type {
  ApplyResponse,
  DeploymentDetail,
  DeploymentSummary,
  RolloutView,
  ColdStart,
} from '../core/api-types.js';
import type { RouteModel } from '../core/types.js';
import { checkEngineModel, resolveEngine } from '../engines/index.js';
import type { RuntimeDriver } from '../runtime/driver.js';
import type { Inventory } from '../schedule/inventory.js';
import type { Placer } from '../schedule/placement.js';
import type { Db } from '../store/db.js';
import type { DeploymentTable } from '../store/schema.js';
import { checkPolicy, checkQuota } from '../tenancy/quota.js';
import type { Principal, TenancyService } from '../tenancy/tenancy.js';
import type { DeploymentController } from './controller.js';
import { ACTIVE_PHASES } from './rollout.js';
import { actorOf, type AuditLog } from '../registry/audit.js';

/** The fields whose change replaces replicas (a scale alone does not). */
function template(spec: DeploymentSpec): unknown {
  return {
    model: spec.model,
    engine: spec.engine,
    resources: spec.resources,
    ...(spec.version !== undefined ? { version: spec.version } : {}),
    ...(spec.modelVersion !== undefined ? { modelVersion: spec.modelVersion } : {}),
  };
}

export class DeploymentService {
  constructor(
    private readonly db: Db,
    private readonly tenancy: TenancyService,
    private readonly inventory: Inventory,
    private readonly placer: Placer,
    private readonly controller: DeploymentController,
    private readonly driver: RuntimeDriver,
    /** The hash-chained audit log: every apply, delete and rollout action is appended. */
    private readonly audit?: AuditLog,
  ) {}

  private async record(
    principal: Principal,
    action: string,
    name: string,
    before: unknown,
    after: unknown,
    reason: string | null,
  ): Promise<void> {
    await this.audit?.append({
      actor: actorOf(principal),
      action,
      resource: `deployment/${name}`,
      before: before ?? null,
      after: after ?? null,
      reason,
    });
  }

  async apply(input: unknown, principal: Principal): Promise<ApplyResponse> {
    const spec = parseOrThrow(DeploymentSpecSchema, input, 'deployment spec');
    if (principal.kind === 'tenant' && principal.tenantName !== spec.tenant) {
      throw new InferplaneError(
        'IP_FORBIDDEN',
        `this key belongs to tenant ${principal.tenantName} and cannot deploy for ${spec.tenant}`,
      );
    }
    const tenant = await this.tenancy.findTenant(spec.tenant);
    if (!tenant) {
      throw new InferplaneError('IP_VALIDATION', `tenant ${spec.tenant} does not exist`, {
        details: [{ path: 'tenant', message: `tenant ${spec.tenant} does not exist` }],
      });
    }
    const engine = resolveEngine(spec.engine.name, spec.engine.args);
    checkEngineModel(engine.adapter, spec.model, spec.resources.gpuType);
    spec.engine.args = engine.args as DeploymentSpec['engine']['args'];
    if (spec.modelVersion) await this.controller.checkModelVersion(spec.tenant, spec.modelVersion);
    else if (engine.adapter.requiresModelFile) {
      throw new InferplaneError(
        'IP_VALIDATION',
        `engine ${spec.engine.name} serves a model file: name a registered model version (modelVersion)`,
        { details: [{ path: 'modelVersion', message: 'required for this engine' }] },
      );
    }

    return this.controller.exclusive(async () => {
      const existing = await this.db
        .selectFrom('deployments')
        .selectAll()
        .where('name', '=', spec.name)
        .executeTakeFirst();
      if (existing && existing.tenant_id !== tenant.id) {
        throw new InferplaneError(
          'IP_CONFLICT',
          `deployment ${spec.name} already exists for another tenant`,
          { details: [{ path: 'name', message: 'name taken' }] },
        );
      }
      const old = existing ? (JSON.parse(existing.spec) as DeploymentSpec) : undefined;
      if (old && isDeepStrictEqual(old, spec)) {
        return { deployment: await this.summary(existing!), result: 'unchanged' as const };
      }
      const templateChanged = !old || !isDeepStrictEqual(template(old), template(spec));
      await this.admitTeam(spec, tenant.name, tenant.id, existing?.id, old, templateChanged);
      await this.admit(spec, existing?.id, templateChanged);

      const now = isoNow();
      let row: DeploymentTable;
      if (existing) {
        row = {
          ...existing,
          spec: JSON.stringify(spec),
          generation: existing.generation + (templateChanged ? 1 : 0),
          updated_at: now,
        };
        await this.db
          .updateTable('deployments')
          .set({ spec: row.spec, generation: row.generation, updated_at: now })
          .where('id', '=', existing.id)
          .execute();
        // A rollout block: the new template rolls out as a canary (src/deploy/rollout.ts).
        const rolling =
          templateChanged && old
            ? await this.controller.rollouts.onTemplateChange(existing, row, old, spec)
            : false;
        const what = rolling
          ? `spec updated to generation ${row.generation}; rolling out as a canary`
          : templateChanged
            ? `spec updated to generation ${row.generation}; replicas will be replaced`
            : old?.replicas !== spec.replicas
              ? `replicas ${old?.replicas ?? 0} → ${spec.replicas}`
              : !isDeepStrictEqual(old?.slo, spec.slo)
                ? 'SLO targets updated; replicas unchanged'
                : 'routing updated; replicas unchanged';
        await this.controller.recordEvent(row.id, 'Normal', 'Updated', what);
        await this.record(principal, 'deployment.update', spec.name, old, spec, what);
      } else {
        row = {
          id: newId('dep'),
          name: spec.name,
          tenant_id: tenant.id,
          spec: JSON.stringify(spec),
          generation: 1,
          created_at: now,
          updated_at: now,
        };
        await this.db.insertInto('deployments').values(row).execute();
        await this.record(principal, 'deployment.create', spec.name, null, spec, null);
        await this.controller.recordEvent(
          row.id,
          'Normal',
          'Created',
          `deployment created: ${spec.replicas} × ${spec.resources.gpus} ${spec.resources.gpuType}, engine ${spec.engine.name}`,
        );
      }
      this.controller.trigger();
      this.controller.changed();
      return { deployment: await this.summary(row), result: existing ? 'updated' : 'created' };
    });
  }

  /**
   * Admission by the team's quotas and policy (src/tenancy/quota.ts), before placement: the
   * team's usage by its other deployments plus this spec (in place of `old` on an update).
   * Throws IP_QUOTA_EXCEEDED or IP_POLICY_VIOLATION; nothing has been written yet. Runs inside
   * the controller's exclusive section, so concurrent applies cannot both pass one quota.
   */
  private async admitTeam(
    spec: DeploymentSpec,
    tenantName: string,
    tenantId: string,
    deploymentId: string | undefined,
    old: DeploymentSpec | undefined,
    templateChanged: boolean,
  ): Promise<void> {
    const { quota, policy } = await this.tenancy.getTenant(tenantName);
    checkPolicy(tenantName, policy, spec, old);
    if (quota.replicas === undefined && quota.gpus === undefined) return;
    const others = await this.tenancy.usage(tenantId, deploymentId);
    // A template change with a rollout block runs a canary next to the stable replicas: its peak
    // (promotion) holds both sets, and that peak must fit the quota too.
    const surge = spec.rollout && old && templateChanged ? old : undefined;
    checkQuota(tenantName, quota, others, spec, old, surge);
  }

  /**
   * Admission by placement: every replica that will need GPUs must fit now, counting the GPUs
   * this deployment already holds as free when its replicas are to be replaced.
   */
  private async admit(
    spec: DeploymentSpec,
    deploymentId: string | undefined,
    templateChanged: boolean,
  ): Promise<void> {
    const view = await this.inventory.clusterView();
    let needed = spec.replicas;
    if (deploymentId) {
      const mine = await this.db
        .selectFrom('replicas')
        .select(['idx', 'node', 'gpus'])
        .where('deployment_id', '=', deploymentId)
        .execute();
      for (const r of mine) {
        if (templateChanged || r.idx >= spec.replicas) {
          const set = view.allocated.get(r.node ?? '');
          for (const g of JSON.parse(r.gpus) as number[]) set?.delete(g);
        } else {
          needed -= 1;
        }
      }
    }
    for (let i = 0; i < needed; i++) {
      const p = this.placer.place(
        {
          deployment: spec.name,
          replicaIdx: i,
          gpus: spec.resources.gpus,
          gpuType: spec.resources.gpuType,
        },
        view,
      );
      const set = view.allocated.get(p.node) ?? new Set<number>();
      for (const g of p.gpus) set.add(g);
      view.allocated.set(p.node, set);
    }
  }

  async delete(name: string, principal: Principal): Promise<void> {
    const row = await this.getRow(name, principal);
    await this.controller.exclusive(async () => {
      await this.controller.removeReplicas(row.id);
      await this.db.deleteFrom('events').where('deployment_id', '=', row.id).execute();
      await this.db.deleteFrom('deployments').where('id', '=', row.id).execute();
      await this.record(principal, 'deployment.delete', name, JSON.parse(row.spec), null, null);
    });
    this.controller.changed();
  }

  async list(principal: Principal): Promise<DeploymentSummary[]> {
    let q = this.db.selectFrom('deployments').selectAll().orderBy('name');
    if (principal.kind === 'tenant') q = q.where('tenant_id', '=', principal.tenantId);
    const rows = await q.execute();
    return Promise.all(rows.map((r) => this.summary(r)));
  }

  async describe(name: string, principal: Principal, eventLimit = 50): Promise<DeploymentDetail> {
    const row = await this.getRow(name, principal);
    const replicas = await this.db
      .selectFrom('replicas')
      .selectAll()
      .where('deployment_id', '=', row.id)
      .orderBy('idx')
      .execute();
    const events = await this.db
      .selectFrom('events')
      .selectAll()
      .where('deployment_id', '=', row.id)
      .orderBy('id', 'desc')
      .limit(eventLimit)
      .execute();
    return {
      spec: JSON.parse(row.spec) as DeploymentSpec,
      summary: await this.summary(row),
      replicas: replicas.map((r) => ({
        id: r.id,
        index: r.idx,
        state: r.state,
        node: r.node,
        gpus: JSON.parse(r.gpus) as number[],
        port: r.port,
        pid: r.pid,
        restarts: r.restarts,
        startedAt: r.started_at,
        lastError: r.last_error,
        ...(r.cold_start ? { coldStart: JSON.parse(r.cold_start) as ColdStart } : {}),
      })),
      events: events.reverse().map((e) => ({
        time: e.time,
        type: e.type,
        reason: e.reason,
        message: e.message,
        ...(e.replica_idx === null ? {} : { replica: e.replica_idx }),
      })),
    };
  }

  async logs(name: string, principal: Principal, replica: number, tail: number): Promise<string> {
    const row = await this.getRow(name, principal);
    const spec = JSON.parse(row.spec) as DeploymentSpec;
    if (replica < 0 || replica >= Math.max(spec.replicas, 1)) {
      throw new InferplaneError(
        'IP_REPLICA_NOT_FOUND',
        `deployment ${name} has no replica ${replica} (replicas: ${spec.replicas})`,
      );
    }
    return this.driver.logs(name, replica, tail);
  }

  /** Deployments with their ready endpoints, for the gateway's routing snapshot. */
  async routes(): Promise<RouteModel[]> {
    const rows = await this.db
      .selectFrom('deployments as d')
      .innerJoin('tenants as t', 't.id', 'd.tenant_id')
      .select(['d.id', 'd.name', 'd.spec', 'd.tenant_id', 'd.created_at', 't.name as tenant'])
      .execute();
    return rows.map((r) => {
      const spec = JSON.parse(r.spec) as DeploymentSpec;
      const endpoints = this.driver
        .list()
        .filter((s) => s.deployment === r.name && s.state === 'ready' && s.url !== null)
        .sort((a, b) => a.index - b.index)
        .map((s) => ({ replicaId: s.replicaId, index: s.index, url: s.url! }));
      return {
        model: r.name,
        deployment: r.name,
        tenantId: r.tenant_id,
        tenantName: r.tenant,
        engine: spec.engine.name,
        createdAt: r.created_at,
        endpoints,
        ...(spec.routing ? { routing: spec.routing } : {}),
      };
    });
  }

  private async getRow(name: string, principal: Principal): Promise<DeploymentTable> {
    const row = await this.db
      .selectFrom('deployments')
      .selectAll()
      .where('name', '=', name)
      .executeTakeFirst();
    if (!row || (principal.kind === 'tenant' && row.tenant_id !== principal.tenantId)) {
      throw new InferplaneError('IP_DEPLOYMENT_NOT_FOUND', `deployment ${name} not found`);
    }
    return row;
  }

  private async summary(row: DeploymentTable): Promise<DeploymentSummary> {
    const spec = JSON.parse(row.spec) as DeploymentSpec;
    const tenant = await this.db
      .selectFrom('tenants')
      .select('name')
      .where('id', '=', row.tenant_id)
      .executeTakeFirst();
    const reps = await this.db
      .selectFrom('replicas')
      .select(['state', 'restarts', 'generation'])
      .where('deployment_id', '=', row.id)
      .execute();
    // During a rollout the stable version serves: its ready replicas count.
    const rollout = await this.controller.rollouts.get(row.id);
    const rolling = rollout !== undefined && ACTIVE_PHASES.includes(rollout.phase);
    const servingGen = rolling ? rollout.stable.generation : row.generation;
    const ready = reps.filter((r) => r.state === 'ready' && r.generation === servingGen).length;
    let phase: string;
    if (rolling) phase = 'RollingOut';
    else if (spec.replicas === 0) phase = 'Stopped';
    else if (ready >= spec.replicas) phase = 'Ready';
    else if (this.controller.unschedulable.has(row.id)) phase = 'Unschedulable';
    else if (reps.some((r) => r.state === 'restarting' || r.state === 'unhealthy'))
      phase = 'Degraded';
    else phase = 'Progressing';
    return {
      name: row.name,
      tenant: tenant?.name ?? '?',
      model: spec.model,
      engine: spec.engine.name,
      replicas: { desired: spec.replicas, ready },
      resources: spec.resources,
      phase,
      generation: row.generation,
      createdAt: row.created_at,
      updatedAt: row.updated_at,
      ...(rollout
        ? {
            rollout: {
              phase: rollout.phase,
              stable: rollout.stable.version,
              canary: rollout.canary.version,
              canaryWeight: rollout.weight,
              warmupMs: rollout.warmupMs,
            },
          }
        : {}),
    };
  }

  // ---------------------------------------------------------------------------------------------
  // Rollouts (src/deploy/rollout.ts)

  /** GET /deployments/{name}/rollout: phase, step, weights and each gate against its threshold. */
  async rolloutStatus(name: string, principal: Principal): Promise<RolloutView> {
    const row = await this.getRow(name, principal);
    return this.rolloutView(row);
  }

  async rolloutPromote(name: string, principal: Principal): Promise<RolloutView> {
    const row = await this.getRow(name, principal);
    await this.controller.rollouts.promote(row);
    await this.record(principal, 'rollout.promote', name, null, null, null);
    return this.rolloutView(row);
  }

  async rolloutAbort(name: string, principal: Principal): Promise<RolloutView> {
    const row = await this.getRow(name, principal);
    await this.controller.rollouts.abort(row);
    await this.record(principal, 'rollout.abort', name, null, null, null);
    return this.rolloutView(row);
  }

  /** Re-applies the previous stable spec (it rolls out like any change); see rollout.ts. */
  async rolloutUndo(name: string, principal: Principal): Promise<ApplyResponse> {
    const row = await this.getRow(name, principal);
    const spec = await this.controller.rollouts.undoSpec(row);
    return this.apply(spec, principal);
  }

  private async rolloutView(row: DeploymentTable): Promise<RolloutView> {
    const spec = JSON.parse(row.spec) as DeploymentSpec;
    const st = await this.controller.rollouts.get(row.id);
    const r = spec.rollout;
    const iso = (ms: number | null | undefined): string | null =>
      ms === null || ms === undefined ? null : new Date(ms).toISOString();
    if (!st) {
      const version = this.controller.rollouts.labelOf(undefined, spec, row.generation);
      return {
        deployment: row.name,
        phase: 'None',
        stable: { version, generation: row.generation },
        canary: null,
        step: 0,
        steps: r?.steps.length ?? 0,
        weights: { [version]: 100 },
        gates: [],
        intervalMs: r ? durationMs(r.interval) : null,
        warmupMs: null,
        startedAt: null,
        finishedAt: null,
      };
    }
    const active = ACTIVE_PHASES.includes(st.phase);
    const weights: Record<string, number> =
      st.phase === 'Completed'
        ? { [st.canary.version]: 100 }
        : st.phase === 'RolledBack' || st.phase === 'RollingBack'
          ? { [st.stable.version]: 100, [st.canary.version]: 0 }
          : { [st.stable.version]: 100 - st.weight, [st.canary.version]: st.weight };
    return {
      deployment: row.name,
      phase: st.phase,
      stable: { version: st.stable.version, generation: st.stable.generation },
      canary: { version: st.canary.version, generation: st.canary.generation },
      step: Math.max(0, st.step + 1),
      steps: r?.steps.length ?? 0,
      weights,
      gates: st.gates,
      intervalMs: r ? durationMs(r.interval) : null,
      warmupMs: st.warmupMs,
      startedAt: iso(st.startedAt),
      finishedAt: iso(st.finishedAt),
      ...(st.failedGate ? { failedGate: st.failedGate } : {}),
      ...(st.reason ? { reason: st.reason } : {}),
      ...(st.rollbackMs !== undefined ? { rollbackMs: st.rollbackMs } : {}),
      ...(active && r && st.step >= 0 && st.step < r.steps.length
        ? { pauseMs: durationMs(r.steps[st.step]!.pause) }
        : {}),
    };
  }
}
