// The deployment controller: makes the running replicas match the stored deployments.
// Desired state lives in the store; the loop places missing replicas, starts them through the
// runtime driver, replaces replicas of an older template generation, removes surplus ones, brings
// stored replicas back after a restart, and records what happened as events. During a rollout
// (src/deploy/rollout.ts) it keeps two replica sets, stable and canary, each of its generation:
// the rollout manager says how many of each; replicas take the lowest free index.
import { isoNow } from '../core/clock.js';
import { InferplaneError, toInferplaneError } from '../core/errors.js';
import { newId } from '../core/ids.js';
import type { DeploymentSpec } from '../core/schemas.js';
import type { ColdStart } from '../core/api-types.js';
import type { ReplicaState } from '../core/types.js';
import { resolveEngine } from '../engines/index.js';
import type { RuntimeDriver, ReplicaStatus } from '../runtime/driver.js';
import { killStaleEngine } from '../runtime/local.js';
import type { Inventory } from '../schedule/inventory.js';
import type { ClusterView, Placer } from '../schedule/placement.js';
import type { Db } from '../store/db.js';
import type { DeploymentTable, ReplicaTable } from '../store/schema.js';
import type { Selectable } from 'kysely';
import type { Logger } from '../telemetry/logger.js';
import type { VersionStats } from '../telemetry/version-stats.js';
import { RolloutManager, type ReplicaSet } from './rollout.js';

/**
 * Where model artifacts come from: a registered model version of a tenant, made local (fetched
 * into the node's cache and its sha256 verified). Implemented by the platform over the registry.
 */
export interface ArtifactSource {
  /** Throws (IP_NOT_FOUND / IP_VALIDATION) when the version is not registered for the tenant. */
  check(tenant: string, name: string, version: string): Promise<void>;
  /**
   * The local path of the version's artifact. Throws IP_ARTIFACT_CORRUPT when the bytes do not
   * match the registered sha256 (nothing is cached), IP_ARTIFACT_UNAVAILABLE when the source
   * cannot be read (retried on the next reconcile).
   */
  fetch(
    tenant: string,
    name: string,
    version: string,
    onProgress?: (phase: string, bytes: number, total: number | undefined) => void,
  ): Promise<string>;
}

export interface ControllerOptions {
  db: Db;
  inventory: Inventory;
  placer: Placer;
  driver: RuntimeDriver;
  logger: Logger;
  /** Called whenever routable state may have changed (replica ready/unready, deployment gone). */
  onChange: () => void;
  resyncMs?: number;
  /** Per-version gateway statistics for rollout gates (absent: latency/error gates stay pending). */
  versionStats?: VersionStats;
  /** Publishes a routing snapshot and resolves when the gateway has it (default: onChange). */
  publishNow?: () => Promise<void>;
  /** Called with each cold-start phase as it completes (metrics): phase name, seconds. */
  onColdStartPhase?: (deployment: string, phase: keyof ColdStart, seconds: number) => void;
  /** Model artifacts for deployments that name a `modelVersion`. */
  artifacts?: ArtifactSource;
  /** How often the rollout manager looks at active rollouts (default 200 ms). */
  rolloutTickMs?: number;
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
  /** Cold start of each replica's latest (re)start, while it is being measured. */
  private readonly cold = new Map<string, ColdTimes>();
  /** Replicas whose artifact is being fetched/verified (not started yet). */
  private readonly preparing = new Set<string>();
  /** Replicas whose artifact failed verification: never started (their bytes never serve). */
  private readonly corrupt = new Map<string, string>();
  /** deployment id → last placement failure, cleared when placement succeeds. */
  readonly unschedulable = new Map<string, string>();
  /** Canary rollouts (src/deploy/rollout.ts). */
  readonly rollouts: RolloutManager;

  constructor(opts: ControllerOptions) {
    this.o = opts;
    this.rollouts = new RolloutManager({
      db: opts.db,
      host: this,
      logger: opts.logger,
      stats: opts.versionStats,
      publishNow:
        opts.publishNow ??
        (() => {
          opts.onChange();
          return Promise.resolve();
        }),
      ...(opts.rolloutTickMs !== undefined ? { tickMs: opts.rolloutTickMs } : {}),
    });
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
    this.rollouts.start();
  }

  /** Stops the loop and every replica this controller started. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.rollouts.stop();
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
    for (const r of rows) {
      this.owner.delete(r.id);
      this.corrupt.delete(r.id);
      this.cold.delete(r.id);
    }
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
    // The replica sets to keep: one generation normally; stable + canary during a rollout.
    const sets = await this.rollouts.desiredSets(d, spec);
    const setOf = new Map<number, ReplicaSet>(sets.map((x) => [x.generation, x]));
    const rows = await this.o.db
      .selectFrom('replicas')
      .selectAll()
      .where('deployment_id', '=', d.id)
      .orderBy('idx')
      .execute();

    // Surplus replicas and replicas of a generation no set wants go away.
    const keep: Array<{ r: Selectable<ReplicaTable>; set: ReplicaSet }> = [];
    const kept = new Map<number, number>();
    for (const r of rows) {
      const set = setOf.get(r.generation);
      const n = kept.get(r.generation) ?? 0;
      const surplus = set !== undefined && set.count !== 'keep' && n >= set.count;
      if (set && !surplus) {
        keep.push({ r, set });
        kept.set(r.generation, n + 1);
        continue;
      }
      await this.o.driver.stop(r.id);
      await this.o.db.deleteFrom('replicas').where('id', '=', r.id).execute();
      this.owner.delete(r.id);
      this.corrupt.delete(r.id);
      this.cold.delete(r.id);
      await this.recordEvent(
        d.id,
        'Normal',
        surplus ? 'ScaledDown' : spec.rollout ? 'TornDown' : 'Replaced',
        surplus
          ? `replica ${r.idx} removed (replicas: ${spec.replicas})`
          : spec.rollout
            ? `replica ${r.idx} of generation ${r.generation} torn down`
            : `replica ${r.idx} replaced: spec generation ${r.generation} → ${d.generation}`,
        r.idx,
      );
      this.o.onChange();
    }

    // Stored replicas that are not running (after a restart) start again where they were placed.
    let view: ClusterView | undefined;
    for (const { r, set } of keep) {
      if (this.o.driver.status(r.id)) continue;
      view ??= await this.o.inventory.clusterView();
      const node = view.nodes.find((n) => n.name === r.node);
      const gpus = JSON.parse(r.gpus) as number[];
      const valid =
        node !== undefined &&
        node.state === 'ready' &&
        gpus.every((g) =>
          node.gpus.some((x) => x.index === g && x.type === set.spec.resources.gpuType),
        );
      if (!valid) {
        await this.o.db.deleteFrom('replicas').where('id', '=', r.id).execute();
        kept.set(r.generation, (kept.get(r.generation) ?? 1) - 1);
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
      this.launch(d, set.spec, r.id, r.idx, gpus);
    }

    // Missing replicas get placed and started, each at the lowest free index.
    const used = new Set(
      (
        await this.o.db
          .selectFrom('replicas')
          .select('idx')
          .where('deployment_id', '=', d.id)
          .execute()
      ).map((r) => r.idx),
    );
    for (const set of sets) {
      if (set.count === 'keep') continue;
      for (let n = kept.get(set.generation) ?? 0; n < set.count; n++) {
        let idx = 0;
        while (used.has(idx)) idx++;
        const view = await this.o.inventory.clusterView();
        let placement;
        try {
          placement = this.o.placer.place(
            {
              deployment: d.name,
              replicaIdx: idx,
              gpus: set.spec.resources.gpus,
              gpuType: set.spec.resources.gpuType,
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
        used.add(idx);
        const id = newId('rep');
        await this.o.db
          .insertInto('replicas')
          .values({
            id,
            deployment_id: d.id,
            idx,
            generation: set.generation,
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
        const gen = sets.length > 1 ? ` (generation ${set.generation})` : '';
        await this.recordEvent(
          d.id,
          'Normal',
          'Placed',
          `replica ${idx}${gen} placed on ${where}`,
          idx,
        );
        this.launch(d, set.spec, id, idx, placement.gpus);
      }
    }
  }

  /** Replicas of one generation with their runtime state (for the rollout manager). */
  async replicasOf(
    deploymentId: string,
    generation: number,
  ): Promise<Array<{ id: string; idx: number; state: string; url: string | null }>> {
    const rows = await this.o.db
      .selectFrom('replicas')
      .select(['id', 'idx', 'state'])
      .where('deployment_id', '=', deploymentId)
      .where('generation', '=', generation)
      .execute();
    return rows.map((r) => {
      const s = this.o.driver.status(r.id);
      return { id: r.id, idx: r.idx, state: s?.state ?? r.state, url: s?.url ?? null };
    });
  }

  /** Admission: the named model version must be registered for the tenant. */
  async checkModelVersion(tenant: string, mv: { name: string; version: string }): Promise<void> {
    if (!this.o.artifacts) {
      throw new InferplaneError(
        'IP_VALIDATION',
        'modelVersion needs the model registry, which is not enabled on this server',
        { details: [{ path: 'modelVersion', message: 'no registry' }] },
      );
    }
    await this.o.artifacts.check(tenant, mv.name, mv.version);
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
    const times: ColdTimes = {
      deploymentId: d.id,
      deployment: d.name,
      launchAt: Date.now(),
      phases: {},
    };
    this.cold.set(replicaId, times);
    const start = (artifactPath?: string): void => {
      times.startCalledAt = Date.now();
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
          ...(artifactPath !== undefined ? { artifactPath } : {}),
        },
      });
    };
    const mv = spec.modelVersion;
    if (!mv || !this.o.artifacts) {
      start();
      return;
    }
    // The artifact first: fetched and verified before the engine may read a byte of it. A replica
    // whose artifact is corrupt stays failed (its bytes never serve) until the spec changes.
    if (this.preparing.has(replicaId) || this.corrupt.has(replicaId)) return;
    this.preparing.add(replicaId);
    const t0 = Date.now();
    let lastPhase = '';
    let verifyAt: number | undefined;
    let lastLog = 0;
    void this.o.artifacts
      .fetch(spec.tenant, mv.name, mv.version, (phase, bytes, total) => {
        if (phase === 'verify' && verifyAt === undefined) verifyAt = Date.now();
        // Progress of a long fetch or verify in the platform log, at most every 2 s per phase.
        const now = Date.now();
        if (phase !== lastPhase || now - lastLog >= 2000) {
          lastLog = now;
          this.o.logger.info(
            {
              deployment: d.name,
              replica: idx,
              artifact: `${mv.name}@${mv.version}`,
              phase,
              bytes,
              ...(total !== undefined
                ? { total, pct: Math.round((100 * bytes) / Math.max(1, total)) }
                : {}),
            },
            'artifact progress',
          );
        }
        lastPhase = phase;
      })
      .then(
        async (path) => {
          this.preparing.delete(replicaId);
          if (this.owner.get(replicaId) !== d.id || this.stopped) return;
          const done = Date.now();
          const hit = lastPhase === 'hit';
          this.phase(replicaId, 'artifactFetchMs', (verifyAt ?? done) - t0);
          this.phase(replicaId, 'artifactVerifyMs', verifyAt === undefined ? 0 : done - verifyAt);
          times.phases.artifactCacheHit = hit;
          await this.recordEvent(
            d.id,
            'Normal',
            'ArtifactReady',
            `replica ${idx}: ${mv.name}@${mv.version} ready in ${Date.now() - t0} ms (${lastPhase === 'hit' ? 'cache hit' : 'fetched and verified'})`,
            idx,
          );
          start(path);
        },
        async (e: unknown) => {
          this.preparing.delete(replicaId);
          const err = toInferplaneError(e);
          const corrupt = err.code === 'IP_ARTIFACT_CORRUPT';
          if (corrupt) this.corrupt.set(replicaId, err.message);
          try {
            await this.o.db
              .updateTable('replicas')
              .set({ state: corrupt ? 'failed' : 'pending', last_error: err.message })
              .where('id', '=', replicaId)
              .execute();
            await this.recordEvent(
              d.id,
              'Warning',
              corrupt ? 'ArtifactCorrupt' : 'ArtifactUnavailable',
              `replica ${idx}: ${mv.name}@${mv.version}: ${err.message}${corrupt ? '' : ' (retrying)'}`,
              idx,
            );
          } catch (dbErr) {
            this.o.logger.error({ err: dbErr }, 'recording an artifact failure failed');
          }
          this.o.onChange();
        },
      );
  }

  /** Records one cold-start phase of a replica (and reports it as a metric). */
  private phase(replicaId: string, phase: keyof ColdStart, ms: number): void {
    const t = this.cold.get(replicaId);
    if (!t) return;
    (t.phases as Record<string, number | boolean>)[phase] = Math.max(0, Math.round(ms));
    this.o.onColdStartPhase?.(t.deployment, phase, Math.max(0, ms) / 1000);
  }

  private async saveColdStart(replicaId: string): Promise<void> {
    const t = this.cold.get(replicaId);
    if (!t) return;
    await this.o.db
      .updateTable('replicas')
      .set({ cold_start: JSON.stringify(t.phases) })
      .where('id', '=', replicaId)
      .execute();
  }

  /** Cold start, as the driver reports a replica starting and becoming ready. */
  private async coldStartStatus(s: ReplicaStatus): Promise<void> {
    let t = this.cold.get(s.replicaId);
    const now = Date.now();
    if (s.state === 'starting') {
      if (!t || t.readyAt !== undefined) {
        // A restart by the driver (crash, failed probes): a new cold start, artifact local.
        const deploymentId = this.owner.get(s.replicaId);
        if (deploymentId === undefined) return;
        t = {
          deploymentId,
          deployment: t?.deployment ?? s.deployment,
          launchAt: now,
          startCalledAt: now,
          phases: { restart: true },
        };
        this.cold.set(s.replicaId, t);
      }
      t.spawnAt = now;
      this.phase(s.replicaId, 'engineStartMs', now - (t.startCalledAt ?? now));
    } else if (s.state === 'ready' && t && t.readyAt === undefined && t.spawnAt !== undefined) {
      t.readyAt = now;
      this.phase(s.replicaId, 'modelLoadMs', now - t.spawnAt);
      this.phase(s.replicaId, 'readyMs', now - t.launchAt);
      await this.saveColdStart(s.replicaId);
    }
  }

  /** The gateway relayed the first byte from this replica (its first token after a start). */
  noteServed(replicaId: string): void {
    const t = this.cold.get(replicaId);
    if (!t || t.readyAt === undefined || t.phases.firstTokenMs !== undefined) return;
    this.phase(replicaId, 'firstTokenMs', Date.now() - t.readyAt);
    void this.saveColdStart(replicaId).catch((e: unknown) =>
      this.o.logger.error({ err: e }, 'could not save a cold start'),
    );
  }

  noteWarmup(replicaIds: readonly string[], ms: number): void {
    for (const id of replicaIds) {
      this.phase(id, 'warmupMs', ms);
      void this.saveColdStart(id).catch(() => undefined);
    }
  }

  private async persistStatus(s: ReplicaStatus, reason: string, message: string): Promise<void> {
    try {
      const deploymentId = this.owner.get(s.replicaId);
      if (deploymentId === undefined) return;
      await this.coldStartStatus(s);
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

/** Cold-start bookkeeping of one replica start (ms timestamps; phases as reported). */
interface ColdTimes {
  deploymentId: string;
  deployment: string;
  launchAt: number;
  startCalledAt?: number;
  spawnAt?: number;
  readyAt?: number;
  phases: ColdStart;
}
