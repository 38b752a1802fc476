// The deployment controller: makes the running replicas match the stored deployments.
// Desired state lives in the store; the loop places missing replicas, starts them through the
// runtime driver, replaces replicas of an older template generation, removes surplus ones, brings
// stored replicas back after a restart, and records what happened as events.
import { isoNow } from '../core/clock.js';
import { toInferplaneError } from '../core/errors.js';
import { newId } from '../core/ids.js';
import type { DeploymentSpec } from '../core/schemas.js';
import type { ReplicaState } from '../core/types.js';
import { resolveEngine } from '../engines/index.js';
import type { RuntimeDriver, ReplicaStatus } from '../runtime/driver.js';
import { killStaleEngine } from '../runtime/local.js';
import type { Inventory } from '../schedule/inventory.js';
import type { ClusterView, Placer } from '../schedule/placement.js';
import type { Db } from '../store/db.js';
import type { DeploymentTable, ReplicaTable } from '../store/schema.js';
import type { Logger } from '../telemetry/logger.js';

export interface ControllerOptions {
  db: Db;
  inventory: Inventory;
  placer: Placer;
  driver: RuntimeDriver;
  logger: Logger;
  /** Called whenever routable state may have changed (replica ready/unready, deployment gone). */
  onChange: () => void;
  resyncMs?: number;
}

export type EventType = 'Normal' | 'Warning';

/** Events kept per deployment; older ones are pruned. */
export const EVENTS_KEPT = 500;

export class DeploymentController {
  private readonly o: ControllerOptions;
  private running: Promise<void> = Promise.resolve();
  private dirty = false;
  private scheduled = false;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** replica id → deployment id, for status events of replicas whose row may be gone. */
  private readonly owner = new Map<string, string>();
  /** deployment id → last placement failure, cleared when placement succeeds. */
  readonly unschedulable = new Map<string, string>();

  constructor(opts: ControllerOptions) {
    this.o = opts;
    opts.driver.onStatus((s, reason, message) => {
      void this.persistStatus(s, reason, message);
    });
  }

  /** Cleans up after an unclean exit, reconciles once, then resyncs periodically. */
  async start(): Promise<void> {
    const stale = await this.o.db
      .selectFrom('replicas')
      .select(['id', 'pid'])
      .where('pid', 'is not', null)
      .execute();
    for (const r of stale) {
      if (r.pid !== null && (await killStaleEngine(r.pid, r.id))) {
        this.o.logger.warn(
          { pid: r.pid, replica: r.id },
          'killed an engine left by an earlier run',
        );
      }
    }
    await this.o.db
      .updateTable('replicas')
      .set({ state: 'pending', port: null, pid: null })
      .execute();
    await this.reconcileNow();
    const loop = (): void => {
      this.timer = setTimeout(() => {
        this.trigger();
        loop();
      }, this.o.resyncMs ?? 2000);
      this.timer.unref();
    };
    loop();
  }

  /** Stops the loop and every replica this controller started. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
    await this.o.driver.shutdown();
  }

  /** Asks for a reconcile soon; runs are serialized and coalesced. */
  trigger(): void {
    if (this.stopped) return;
    this.dirty = true;
    if (this.scheduled) return;
    this.scheduled = true;
    this.running = this.running.then(async () => {
      this.scheduled = false;
      while (this.dirty && !this.stopped) {
        this.dirty = false;
        await this.reconcileAll().catch((e: unknown) =>
          this.o.logger.error({ err: e }, 'reconcile failed'),
        );
      }
    });
  }

  /** Tells the routing side that deployments changed (apply, delete). */
  changed(): void {
    this.o.onChange();
  }

  /** Reconciles and waits for it. */
  async reconcileNow(): Promise<void> {
    this.trigger();
    await this.running;
  }

  /** Runs `fn` inside the serialized reconcile chain (for deletes). */
  async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.running.then(fn);
    this.running = p.then(
      () => undefined,
      () => undefined,
    );
    return p;
  }

  /** Stops and removes every replica of a deployment (used by delete). */
  async removeReplicas(deploymentId: string): Promise<void> {
    const rows = await this.o.db
      .selectFrom('replicas')
      .select('id')
      .where('deployment_id', '=', deploymentId)
      .execute();
    // Forget ownership first: the deployment is going away, so its stop events are not kept.
    for (const r of rows) this.owner.delete(r.id);
    await Promise.all(rows.map((r) => this.o.driver.stop(r.id)));
    await this.o.db.deleteFrom('replicas').where('deployment_id', '=', deploymentId).execute();
    this.unschedulable.delete(deploymentId);
  }

  async recordEvent(
    deploymentId: string,
    type: EventType,
    reason: string,
    message: string,
    replicaIdx: number | null = null,
  ): Promise<void> {
    await this.o.db
      .insertInto('events')
      .values({
        deployment_id: deploymentId,
        time: isoNow(),
        type,
        reason,
        message,
        replica_idx: replicaIdx,
      })
      .execute();
    // Keep the newest EVENTS_KEPT events per deployment (a crash-looping replica adds many).
    const cutoff = await this.o.db
      .selectFrom('events')
      .select('id')
      .where('deployment_id', '=', deploymentId)
      .orderBy('id', 'desc')
      .offset(EVENTS_KEPT)
      .limit(1)
      .executeTakeFirst();
    if (cutoff) {
      await this.o.db
        .deleteFrom('events')
        .where('deployment_id', '=', deploymentId)
        .where('id', '<=', cutoff.id)
        .execute();
    }
  }

  private async reconcileAll(): Promise<void> {
    const deployments = await this.o.db.selectFrom('deployments').selectAll().execute();
    for (const d of deployments) {
      if (this.stopped) return;
      try {
        await this.reconcile(d);
      } catch (e) {
        this.o.logger.error({ err: e, deployment: d.name }, 'reconcile of deployment failed');
      }
    }
  }

  private async reconcile(d: DeploymentTable): Promise<void> {
    const spec = JSON.parse(d.spec) as DeploymentSpec;
    const rows = await this.o.db
      .selectFrom('replicas')
      .selectAll()
      .where('deployment_id', '=', d.id)
      .orderBy('idx')
      .execute();

    // Surplus replicas and replicas of an older template generation go away.
    const keep: ReplicaTable[] = [];
    for (const r of rows) {
      const surplus = r.idx >= spec.replicas;
      const outdated = r.generation !== d.generation;
      if (!surplus && !outdated) {
        keep.push(r);
        continue;
      }
      await this.o.driver.stop(r.id);
      await this.o.db.deleteFrom('replicas').where('id', '=', r.id).execute();
      this.owner.delete(r.id);
      await this.recordEvent(
        d.id,
        'Normal',
        surplus ? 'ScaledDown' : 'Replaced',
        surplus
          ? `replica ${r.idx} removed (replicas: ${spec.replicas})`
          : `replica ${r.idx} replaced: spec generation ${r.generation} → ${d.generation}`,
        r.idx,
      );
      this.o.onChange();
    }

    // Stored replicas that are not running (after a restart) start again where they were placed.
    let view: ClusterView | undefined;
    for (const r of keep) {
      if (this.o.driver.status(r.id)) continue;
      view ??= await this.o.inventory.clusterView();
      const node = view.nodes.find((n) => n.name === r.node);
      const gpus = JSON.parse(r.gpus) as number[];
      const valid =
        node !== undefined &&
        node.state === 'ready' &&
        gpus.every((g) =>
          node.gpus.some((x) => x.index === g && x.type === spec.resources.gpuType),
        );
      if (!valid) {
        await this.o.db.deleteFrom('replicas').where('id', '=', r.id).execute();
        await this.recordEvent(
          d.id,
          'Warning',
          'Evicted',
          `replica ${r.idx}: its node ${r.node ?? '?'} or GPUs are gone; placing it again`,
          r.idx,
        );
        view = undefined;
        continue;
      }
      this.launch(d, spec, r.id, r.idx, gpus);
    }

    // Missing replicas get placed and started.
    const present = new Set(
      (
        await this.o.db
          .selectFrom('replicas')
          .select('idx')
          .where('deployment_id', '=', d.id)
          .execute()
      ).map((r) => r.idx),
    );
    for (let idx = 0; idx < spec.replicas; idx++) {
      if (present.has(idx)) continue;
      const view = await this.o.inventory.clusterView();
      let placement;
      try {
        placement = this.o.placer.place(
          {
            deployment: d.name,
            replicaIdx: idx,
            gpus: spec.resources.gpus,
            gpuType: spec.resources.gpuType,
          },
          view,
        );
      } catch (e) {
        const err = toInferplaneError(e);
        if (this.unschedulable.get(d.id) !== err.message) {
          this.unschedulable.set(d.id, err.message);
          await this.recordEvent(d.id, 'Warning', 'FailedPlacement', err.message, idx);
        }
        return;
      }
      this.unschedulable.delete(d.id);
      const id = newId('rep');
      await this.o.db
        .insertInto('replicas')
        .values({
          id,
          deployment_id: d.id,
          idx,
          generation: d.generation,
          state: 'pending',
          node: placement.node,
          gpus: JSON.stringify(placement.gpus),
          port: null,
          pid: null,
          restarts: 0,
          started_at: null,
          last_error: null,
          created_at: isoNow(),
        })
        .execute();
      const where = placement.gpus.length
        ? `${placement.node} GPU ${placement.gpus.join(',')}`
        : placement.node;
      await this.recordEvent(d.id, 'Normal', 'Placed', `replica ${idx} placed on ${where}`, idx);
      this.launch(d, spec, id, idx, placement.gpus);
    }
  }

  private launch(
    d: DeploymentTable,
    spec: DeploymentSpec,
    replicaId: string,
    idx: number,
    gpus: number[],
  ): void {
    const { adapter, args } = resolveEngine(spec.engine.name, spec.engine.args);
    this.owner.set(replicaId, d.id);
    this.o.driver.start({
      replicaId,
      deployment: d.name,
      index: idx,
      engine: adapter,
      launch: {
        servedModelName: spec.name,
        model: spec.model,
        replicaIndex: idx,
        gpus,
        gpuType: spec.resources.gpuType,
        args,
      },
    });
  }

  private async persistStatus(s: ReplicaStatus, reason: string, message: string): Promise<void> {
    try {
      const deploymentId = this.owner.get(s.replicaId);
      if (deploymentId === undefined) return;
      if (s.state !== 'stopped') {
        await this.o.db
          .updateTable('replicas')
          .set({
            state: s.state,
            port: s.port,
            pid: s.pid,
            restarts: s.restarts,
            started_at: s.startedAt,
            last_error: s.lastError,
          })
          .where('id', '=', s.replicaId)
          .execute();
      }
      const warn: ReplicaState[] = ['restarting', 'unhealthy', 'failed'];
      await this.recordEvent(
        deploymentId,
        warn.includes(s.state) ? 'Warning' : 'Normal',
        reason,
        message,
        s.index,
      );
      this.o.onChange();
    } catch (e) {
      this.o.logger.error({ err: e, replica: s.replicaId }, 'could not persist replica status');
    }
  }
}
