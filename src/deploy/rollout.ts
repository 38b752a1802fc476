// Safe rollouts: canary replicas of a new template version, warmup, traffic steps, metric gates,
// automatic rollback.
//
// When a deployment that has a `rollout` block is applied with a changed template (model, engine,
// resources or `version`) while its current version has ready replicas, the stable replica set
// keeps serving and a rollout starts (one row in `rollouts`, so a restart resumes it):
//
//   Warming → canary replicas of the new version are placed, started and warmed up: `warmup.
//     requests` synthetic chat requests straight to each canary replica, all at once (the time is
//     recorded in a `Warmed` event and in the rollout status). Until then the canary has weight 0:
//     the gateway sends it nothing. Canary replicas: max(1, ceil(replicas × weight / 100)) for
//     the step being entered; the stable set keeps `replicas` until promotion (surge capacity).
//   Progressing → the routing snapshot carries versionWeights {stable: 100 − w, canary: w} and
//     endpoints tagged with their version. Every `interval` the gates are evaluated on the
//     canary's own gateway metrics over that interval (a window, not cumulative): p99 TTFT and
//     ITL, error rate (see src/telemetry/version-stats.ts), GPU memory of the canary replicas and
//     the probe. A latency/error gate with fewer than `minSamples` samples in the window is
//     `pending`. A step is held for its `pause` and until an evaluation has every gate passed (a
//     gate the engine cannot report, GPU memory without a telemetry endpoint, is `unavailable`
//     and does not hold it); then the next step, or after the last one promotion.
//   Promoting → the canary is scaled to `replicas`, warmed, set to 100 %, then the stable set is
//     drained and removed: Completed (the new version is the stable one).
//   A failed gate (or a canary replica that fails to start) → RollingBack: the stable version
//     gets 100 % and the snapshot is published first, then in-flight canary requests drain (the
//     engine's running + waiting gauges reach 0, at most `drainTimeout`), then the canary is torn
//     down and the deployment's spec is restored to the stable one under a new generation (the
//     stable replicas are kept and relabelled): RolledBack. Abort is the same, by hand.
//
// Version labels: `spec.version`, else `g<generation>`; a canary whose label equals the stable
// one's is labelled `<label>-g<generation>`. Undo (after Completed or RolledBack) re-applies the
// previous stable spec through the normal apply path, so it rolls out like any change (with its
// own gates when it has a rollout block). Probe `expect`: `/regex/flags` or a plain substring of
// the reply's content. GPU memory: the sim's nvidia-smi-like `/telemetry/gpus` on each canary
// replica (max used/total over its GPUs); other engines report it through the node agent (not
// wired yet: `unavailable`).
import { isoNow } from '../core/clock.js';
import { InferplaneError } from '../core/errors.js';
import { newId } from '../core/ids.js';
import { durationMs, type DeploymentSpec, type RolloutSpec } from '../core/schemas.js';
import type { RouteModel } from '../core/types.js';
import type { Db } from '../store/db.js';
import type { DeploymentTable } from '../store/schema.js';
import type { Logger } from '../telemetry/logger.js';
import {
  windowOf,
  type VersionCounters,
  type VersionStats,
  type VersionWindow,
} from '../telemetry/version-stats.js';

export const ROLLOUT_PHASES = [
  'Warming',
  'Progressing',
  'Promoting',
  'RollingBack',
  'Completed',
  'RolledBack',
] as const;
export type RolloutPhase = (typeof ROLLOUT_PHASES)[number];
export const ACTIVE_PHASES: readonly RolloutPhase[] = [
  'Warming',
  'Progressing',
  'Promoting',
  'RollingBack',
];

export type GateName = 'ttftP99Ms' | 'itlP99Ms' | 'errorRate' | 'gpuMemoryPct' | 'probe';
export type GateStatus = 'passed' | 'failed' | 'pending' | 'unavailable';

export interface GateResult {
  gate: GateName;
  status: GateStatus;
  /** The measured value (ms, share, %, or the probe's reply excerpt); null when none. */
  value: number | string | null;
  threshold: number | string;
  samples?: number;
  note?: string;
}

export interface RolloutState {
  id: string;
  phase: RolloutPhase;
  stable: { version: string; generation: number; spec: DeploymentSpec };
  canary: { version: string; generation: number };
  /** Index of the step in force; -1 while warming up for the first one. */
  step: number;
  /** Step being entered (its canary replicas scaled up and warmed); steps.length: promotion. */
  targetStep: number;
  /** Canary weight (%) in the routing snapshot now. */
  weight: number;
  stepStartedAt: number | null;
  lastEvalAt: number | null;
  gates: GateResult[];
  /** Canary replica ids already warmed up. */
  warmed: string[];
  warmupMs: number | null;
  failedGate?: GateResult;
  reason?: string;
  startedAt: number;
  updatedAt: number;
  finishedAt: number | null;
  /** Rollback: when traffic went to the stable version; and how long until the canary was gone. */
  trafficShiftedAt?: number;
  rollbackMs?: number;
}

/** Canary replicas for a weight: enough for the share, at least one. */
export function canaryCount(replicas: number, weight: number): number {
  return Math.max(1, Math.ceil((Math.max(replicas, 1) * weight) / 100));
}

export function versionLabel(spec: DeploymentSpec, generation: number): string {
  return spec.version ?? `g${generation}`;
}

/** The weight of the step being entered (promotion: 100). */
export function targetWeight(st: RolloutState, r: RolloutSpec): number {
  return st.targetStep >= r.steps.length ? 100 : (r.steps[st.targetStep]?.weight ?? 100);
}

/** How many canary replicas the rollout wants now. */
export function canaryWanted(st: RolloutState, r: RolloutSpec, replicas: number): number {
  if (st.phase === 'Promoting') return Math.max(replicas, 1);
  return canaryCount(replicas, Math.max(targetWeight(st, r), st.weight));
}

/** Gate results from one window (pure: unit-tested). */
export function evaluateGates(
  gates: RolloutSpec['gates'],
  w: VersionWindow,
  minSamples: number,
  extra: { gpuMemoryPct?: number | undefined; probe?: { ok: boolean; reply: string } },
): GateResult[] {
  const out: GateResult[] = [];
  const latency = (
    gate: 'ttftP99Ms' | 'itlP99Ms',
    limit: number | undefined,
    value: number | undefined,
    samples: number,
  ): void => {
    if (limit === undefined) return;
    if (samples < minSamples || value === undefined) {
      out.push({ gate, status: 'pending', value: value ?? null, threshold: limit, samples });
      return;
    }
    const v = Math.round(value * 10) / 10;
    out.push({
      gate,
      status: v <= limit ? 'passed' : 'failed',
      value: v,
      threshold: limit,
      samples,
    });
  };
  latency('ttftP99Ms', gates.ttftP99Ms, w.ttftP99Ms, w.ttftSamples);
  latency('itlP99Ms', gates.itlP99Ms, w.itlP99Ms, w.itlSamples);
  if (gates.errorRate !== undefined) {
    const note =
      w.errorSource === 'model' ? 'model-wide error rate (no per-version counter yet)' : undefined;
    if (w.requests < minSamples || w.errorRate === undefined) {
      out.push({
        gate: 'errorRate',
        status: 'pending',
        value: w.errorRate ?? null,
        threshold: gates.errorRate,
        samples: w.requests,
        ...(note ? { note } : {}),
      });
    } else {
      const v = Math.round(w.errorRate * 10_000) / 10_000;
      out.push({
        gate: 'errorRate',
        status: v <= gates.errorRate ? 'passed' : 'failed',
        value: v,
        threshold: gates.errorRate,
        samples: w.requests,
        ...(note ? { note } : {}),
      });
    }
  }
  if (gates.gpuMemoryPct !== undefined) {
    const v = extra.gpuMemoryPct;
    out.push(
      v === undefined
        ? {
            gate: 'gpuMemoryPct',
            status: 'unavailable',
            value: null,
            threshold: gates.gpuMemoryPct,
          }
        : {
            gate: 'gpuMemoryPct',
            status: v <= gates.gpuMemoryPct ? 'passed' : 'failed',
            value: Math.round(v * 10) / 10,
            threshold: gates.gpuMemoryPct,
          },
    );
  }
  if (gates.probe !== undefined) {
    const p = extra.probe;
    out.push(
      p === undefined
        ? { gate: 'probe', status: 'pending', value: null, threshold: gates.probe.expect }
        : {
            gate: 'probe',
            status: p.ok ? 'passed' : 'failed',
            value: p.reply.slice(0, 200),
            threshold: gates.probe.expect,
          },
    );
  }
  return out;
}

/** Whether a reply matches a probe's `expect` (`/regex/flags` or a substring). */
export function probeMatches(expect: string, reply: string): boolean {
  const m = /^\/(.*)\/([a-z]*)$/s.exec(expect);
  if (m) {
    try {
      return new RegExp(m[1]!, m[2]).test(reply);
    } catch {
      return false;
    }
  }
  return reply.includes(expect);
}

/** What the canary replica set looks like now (from the runtime). */
export interface CanaryView {
  /** Ready canary replicas (ids). */
  ready: string[];
  /** A canary replica failed to start (crash-looped past its limit). */
  failed: boolean;
}

export type Step =
  | { kind: 'none' }
  | { kind: 'warm'; replicas: string[] }
  | { kind: 'publish' }
  | { kind: 'retireStable' }
  | { kind: 'rollback' }
  | { kind: 'scale' };

/**
 * The rollout state machine (pure: unit-tested with a fake clock). Given the state, the spec's
 * rollout block, the canary's replicas and, when one was taken this tick, a gate evaluation,
 * returns the next state and what the manager must do.
 */
export function advance(
  st: RolloutState,
  r: RolloutSpec,
  replicas: number,
  canary: CanaryView,
  now: number,
  evaluation?: GateResult[],
): { state: RolloutState; step: Step } {
  const s: RolloutState = { ...st, updatedAt: now };
  if (!ACTIVE_PHASES.includes(s.phase) || s.phase === 'RollingBack') {
    return { state: s, step: s.phase === 'RollingBack' ? { kind: 'rollback' } : { kind: 'none' } };
  }
  if (canary.failed) {
    s.phase = 'RollingBack';
    s.reason = 'a canary replica failed to start';
    return { state: s, step: { kind: 'rollback' } };
  }
  if (evaluation) {
    s.gates = evaluation;
    s.lastEvalAt = now;
    const failed = evaluation.find((g) => g.status === 'failed');
    if (failed && s.phase === 'Progressing') {
      s.phase = 'RollingBack';
      s.failedGate = failed;
      s.reason = `gate ${failed.gate} failed: ${String(failed.value)} > ${String(failed.threshold)}`;
      return { state: s, step: { kind: 'rollback' } };
    }
  }
  // Entering a step (or promotion): the canary replicas it needs must be ready and warmed.
  if (s.targetStep !== s.step || s.phase === 'Promoting') {
    const need = canaryWanted(s, r, replicas);
    if (canary.ready.length < need) return { state: s, step: { kind: 'none' } };
    const cold = canary.ready.filter((id) => !s.warmed.includes(id));
    if (cold.length > 0) return { state: s, step: { kind: 'warm', replicas: cold } };
    const w = targetWeight(s, r);
    if (s.phase === 'Promoting') {
      if (s.weight === 100) return { state: s, step: { kind: 'retireStable' } };
      s.weight = 100;
      s.step = s.targetStep;
      return { state: s, step: { kind: 'publish' } };
    }
    s.phase = 'Progressing';
    s.step = s.targetStep;
    s.weight = w;
    s.stepStartedAt = now;
    s.lastEvalAt = now;
    s.gates = [];
    return { state: s, step: { kind: 'publish' } };
  }
  // Holding a step: after its pause, with every gate decided and none failed, go on.
  const pause = durationMs(r.steps[s.step]?.pause ?? 0);
  if (s.stepStartedAt === null || now - s.stepStartedAt < pause) {
    return { state: s, step: { kind: 'none' } };
  }
  const hasGates = gateCount(r) > 0;
  const decided =
    !hasGates ||
    (s.lastEvalAt !== null &&
      s.lastEvalAt > s.stepStartedAt &&
      s.gates.length > 0 &&
      s.gates.every((g) => g.status === 'passed' || g.status === 'unavailable'));
  if (!decided) return { state: s, step: { kind: 'none' } };
  s.targetStep = s.step + 1;
  if (s.targetStep >= r.steps.length) s.phase = 'Promoting';
  return { state: s, step: { kind: 'scale' } };
}

export function gateCount(r: RolloutSpec): number {
  const g = r.gates;
  return [g.ttftP99Ms, g.itlP99Ms, g.errorRate, g.gpuMemoryPct, g.probe].filter(
    (x) => x !== undefined,
  ).length;
}

/** What the rollout manager needs from the deployment controller. */
export interface RolloutHost {
  exclusive<T>(fn: () => Promise<T>): Promise<T>;
  trigger(): void;
  reconcileNow(): Promise<void>;
  recordEvent(
    deploymentId: string,
    type: 'Normal' | 'Warning',
    reason: string,
    message: string,
  ): Promise<void>;
  /** Records the warmup time of replicas (their cold start). */
  noteWarmup?(replicaIds: readonly string[], ms: number): void;
  /** Canary (or any) replicas of a deployment generation with their runtime state. */
  replicasOf(
    deploymentId: string,
    generation: number,
  ): Promise<Array<{ id: string; idx: number; state: string; url: string | null }>>;
}

export interface RolloutManagerOptions {
  db: Db;
  host: RolloutHost;
  logger: Logger;
  stats?: VersionStats | undefined;
  /** Publishes a routing snapshot and resolves once the gateway has it. */
  publishNow: () => Promise<void>;
  now?: () => number;
  tickMs?: number;
  fetch?: typeof fetch;
}

/** A set of replicas of one generation the controller keeps ('keep': the existing ones, no new). */
export interface ReplicaSet {
  generation: number;
  spec: DeploymentSpec;
  count: number | 'keep';
}

interface ActiveRow {
  d: DeploymentTable;
  spec: DeploymentSpec;
  st: RolloutState;
}

export class RolloutManager {
  private readonly o: RolloutManagerOptions;
  private readonly now: () => number;
  private readonly fetch: typeof fetch;
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | undefined;
  private stopped = false;
  /** rollout id → last counters read (the window's start). */
  private readonly baseline = new Map<string, VersionCounters>();
  /** rollout id → the probe in flight and the last probe's result. */
  private readonly probes = new Map<
    string,
    { running: boolean; result?: { ok: boolean; reply: string } }
  >();

  constructor(opts: RolloutManagerOptions) {
    this.o = opts;
    this.now = opts.now ?? Date.now;
    this.fetch = opts.fetch ?? fetch;
  }

  start(): void {
    const loop = (): void => {
      this.timer = setTimeout(() => {
        if (this.stopped) return;
        this.ticking = this.tick()
          .catch((e: unknown) => this.o.logger.error({ err: e }, 'rollout tick failed'))
          .finally(() => {
            this.ticking = undefined;
            if (!this.stopped) loop();
          });
      }, this.o.tickMs ?? 200);
      this.timer.unref();
    };
    loop();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.ticking;
  }

  async get(deploymentId: string): Promise<RolloutState | undefined> {
    const row = await this.o.db
      .selectFrom('rollouts')
      .select('state')
      .where('deployment_id', '=', deploymentId)
      .executeTakeFirst();
    return row ? (JSON.parse(row.state) as RolloutState) : undefined;
  }

  private async save(deploymentId: string, st: RolloutState): Promise<void> {
    const state = JSON.stringify(st);
    const updated_at = isoNow();
    await this.o.db
      .insertInto('rollouts')
      .values({ deployment_id: deploymentId, state, updated_at })
      .onConflict((oc) => oc.column('deployment_id').doUpdateSet({ state, updated_at }))
      .execute();
  }

  /**
   * Called by apply (inside the controller's exclusive section, after the row was updated to the
   * new spec and generation). Starts a rollout when the spec has a rollout block and the current
   * version serves; returns whether it did (else the replicas are simply replaced).
   */
  async onTemplateChange(
    before: DeploymentTable,
    after: DeploymentTable,
    oldSpec: DeploymentSpec,
    spec: DeploymentSpec,
  ): Promise<boolean> {
    const prev = await this.get(before.id);
    const active = prev !== undefined && ACTIVE_PHASES.includes(prev.phase);
    if (!spec.rollout) {
      if (prev)
        await this.o.db.deleteFrom('rollouts').where('deployment_id', '=', before.id).execute();
      return false;
    }
    // The stable version: the one serving before (an active rollout's stable one stays stable).
    let stable: RolloutState['stable'];
    if (active) {
      stable = prev.stable;
    } else {
      const ready = await this.o.db
        .selectFrom('replicas')
        .select('id')
        .where('deployment_id', '=', before.id)
        .where('generation', '=', before.generation)
        .where('state', '=', 'ready')
        .execute();
      if (ready.length === 0) return false;
      stable = {
        version: this.labelOf(prev, oldSpec, before.generation),
        generation: before.generation,
        spec: oldSpec,
      };
    }
    let version = versionLabel(spec, after.generation);
    if (version === stable.version) version = `${version}-g${after.generation}`;
    const now = this.now();
    const st: RolloutState = {
      id: newId('ro'),
      phase: 'Warming',
      stable,
      canary: { version, generation: after.generation },
      step: -1,
      targetStep: 0,
      weight: 0,
      stepStartedAt: null,
      lastEvalAt: null,
      gates: [],
      warmed: [],
      warmupMs: null,
      startedAt: now,
      updatedAt: now,
      finishedAt: null,
    };
    await this.save(after.id, st);
    await this.o.host.recordEvent(
      after.id,
      'Normal',
      'RolloutStarted',
      `rollout of ${version} (generation ${after.generation}) started; ${stable.version} stays stable` +
        (active ? ` (replaces the unfinished canary ${prev.canary.version})` : ''),
    );
    return true;
  }

  /** The version label of a generation: the rollout's labels first, else spec.version / g<N>. */
  labelOf(st: RolloutState | undefined, spec: DeploymentSpec, generation: number): string {
    if (st?.stable.generation === generation) return st.stable.version;
    if (st?.canary.generation === generation) return st.canary.version;
    return versionLabel(spec, generation);
  }

  /** The replica sets the controller keeps for a deployment (generation → spec and count). */
  async desiredSets(d: DeploymentTable, spec: DeploymentSpec): Promise<ReplicaSet[]> {
    const st = await this.get(d.id);
    if (!st || !ACTIVE_PHASES.includes(st.phase) || !spec.rollout) {
      return [{ generation: d.generation, spec, count: spec.replicas }];
    }
    const stable = {
      generation: st.stable.generation,
      spec: { ...st.stable.spec, replicas: spec.replicas },
      count: spec.replicas,
    };
    // Rolling back: the canary replicas stay (none added) until drained; the manager removes them.
    if (st.phase === 'RollingBack')
      return [stable, { generation: d.generation, spec, count: 'keep' }];
    const canary = Math.min(
      canaryWanted(st, spec.rollout, spec.replicas),
      Math.max(spec.replicas, 1),
    );
    return [stable, { generation: d.generation, spec, count: canary }];
  }

  /** Tags endpoints with their version and adds the rollout's version weights (snapshot). */
  async decorate(models: RouteModel[]): Promise<RouteModel[]> {
    const deployments = await this.o.db.selectFrom('deployments').selectAll().execute();
    const reps = await this.o.db.selectFrom('replicas').select(['id', 'generation']).execute();
    const rolls = await this.o.db.selectFrom('rollouts').selectAll().execute();
    const genOf = new Map(reps.map((r) => [r.id, r.generation]));
    const byName = new Map(deployments.map((d) => [d.name, d]));
    const stOf = new Map(rolls.map((r) => [r.deployment_id, JSON.parse(r.state) as RolloutState]));
    return models.map((m) => {
      const d = byName.get(m.deployment);
      if (!d) return m;
      const spec = JSON.parse(d.spec) as DeploymentSpec;
      const st = stOf.get(d.id);
      const endpoints = m.endpoints.map((e) => {
        const g = genOf.get(e.replicaId);
        return g === undefined ? e : { ...e, version: this.labelOf(st, spec, g) };
      });
      const out: RouteModel = { ...m, endpoints };
      if (st && ACTIVE_PHASES.includes(st.phase)) {
        out.versionWeights =
          st.phase === 'RollingBack'
            ? { [st.stable.version]: 100, [st.canary.version]: 0 }
            : { [st.stable.version]: 100 - st.weight, [st.canary.version]: st.weight };
      }
      return out;
    });
  }

  // -------------------------------------------------------------------------------------------
  // Operator actions

  async promote(d: DeploymentTable): Promise<RolloutState> {
    return this.o.host.exclusive(async () => {
      const st = await this.activeOrThrow(d);
      if (st.phase === 'RollingBack') {
        throw new InferplaneError('IP_CONFLICT', `the rollout of ${d.name} is rolling back`);
      }
      const spec = JSON.parse(d.spec) as DeploymentSpec;
      st.phase = 'Promoting';
      st.targetStep = spec.rollout?.steps.length ?? 1;
      st.updatedAt = this.now();
      await this.save(d.id, st);
      await this.o.host.recordEvent(
        d.id,
        'Normal',
        'PromoteRequested',
        `promoting ${st.canary.version} to 100% by hand`,
      );
      this.o.host.trigger();
      return st;
    });
  }

  async abort(d: DeploymentTable): Promise<RolloutState> {
    return this.o.host.exclusive(async () => {
      const st = await this.activeOrThrow(d);
      if (st.phase !== 'RollingBack') {
        st.phase = 'RollingBack';
        st.reason = 'aborted by hand';
        st.updatedAt = this.now();
        await this.save(d.id, st);
        await this.o.host.recordEvent(
          d.id,
          'Warning',
          'AbortRequested',
          `rollout of ${st.canary.version} aborted by hand`,
        );
      }
      return st;
    });
  }

  /** The spec to re-apply for `undo` (the previous stable one), after a finished rollout. */
  async undoSpec(d: DeploymentTable): Promise<DeploymentSpec> {
    const st = await this.get(d.id);
    if (!st || ACTIVE_PHASES.includes(st.phase)) {
      throw new InferplaneError(
        'IP_CONFLICT',
        st
          ? `the rollout of ${d.name} is still ${st.phase}; use abort`
          : `deployment ${d.name} has no finished rollout to undo`,
      );
    }
    if (st.phase === 'RolledBack') {
      throw new InferplaneError(
        'IP_CONFLICT',
        `the last rollout of ${d.name} was already rolled back`,
      );
    }
    const current = JSON.parse(d.spec) as DeploymentSpec;
    // The previous version, with today's scale, routing and rollout settings.
    return {
      ...st.stable.spec,
      replicas: current.replicas,
      ...(current.routing ? { routing: current.routing } : {}),
      ...(current.rollout ? { rollout: current.rollout } : {}),
    };
  }

  private async activeOrThrow(d: DeploymentTable): Promise<RolloutState> {
    const st = await this.get(d.id);
    if (!st || !ACTIVE_PHASES.includes(st.phase)) {
      throw new InferplaneError('IP_CONFLICT', `deployment ${d.name} has no rollout in progress`);
    }
    return st;
  }

  // -------------------------------------------------------------------------------------------
  // The loop

  private async active(): Promise<ActiveRow[]> {
    const rows = await this.o.db
      .selectFrom('rollouts as r')
      .innerJoin('deployments as d', 'd.id', 'r.deployment_id')
      .selectAll('d')
      .select('r.state as rollout')
      .execute();
    const out: ActiveRow[] = [];
    for (const row of rows) {
      const st = JSON.parse(row.rollout) as RolloutState;
      if (!ACTIVE_PHASES.includes(st.phase)) continue;
      const { rollout: _r, ...d } = row;
      void _r;
      out.push({ d, spec: JSON.parse(d.spec) as DeploymentSpec, st });
    }
    return out;
  }

  /** One pass over the active rollouts (exposed for tests). */
  async tick(): Promise<void> {
    for (const a of await this.active()) {
      if (this.stopped) return;
      try {
        await this.step(a);
      } catch (e) {
        this.o.logger.error({ err: e, deployment: a.d.name }, 'rollout step failed');
      }
    }
  }

  private async canaryView(a: ActiveRow): Promise<CanaryView & { urls: Map<string, string> }> {
    const reps = await this.o.host.replicasOf(a.d.id, a.st.canary.generation);
    const urls = new Map<string, string>();
    for (const r of reps) if (r.state === 'ready' && r.url) urls.set(r.id, r.url);
    return { ready: [...urls.keys()], failed: reps.some((r) => r.state === 'failed'), urls };
  }

  private async step(a: ActiveRow): Promise<void> {
    const r = a.spec.rollout;
    if (!r) return;
    const now = this.now();
    const view = await this.canaryView(a);
    let evaluation: GateResult[] | undefined;
    const interval = Math.max(100, durationMs(r.interval));
    if (
      a.st.phase === 'Progressing' &&
      a.st.step === a.st.targetStep &&
      a.st.lastEvalAt !== null &&
      now - a.st.lastEvalAt >= interval
    ) {
      if (this.o.stats && !this.baseline.has(a.st.id)) {
        // No window start (after a restart): this reading starts one.
        this.baseline.set(a.st.id, await this.o.stats.read(a.d.name, a.st.canary.version));
        await this.o.host.exclusive(async () => {
          const cur = await this.get(a.d.id);
          if (cur?.id !== a.st.id) return;
          cur.lastEvalAt = now;
          await this.save(a.d.id, cur);
        });
        return;
      }
      evaluation = await this.evaluate(a, r, view.urls);
    }
    const { state, step } = advance(a.st, r, a.spec.replicas, view, now, evaluation);
    const prevPhase = a.st.phase;
    const commit = async (st: RolloutState): Promise<boolean> =>
      this.o.host.exclusive(async () => {
        const cur = await this.get(a.d.id);
        if (cur?.id !== st.id) return false; // replaced by a newer apply
        await this.save(a.d.id, st);
        return true;
      });
    if (evaluation) {
      const decided = evaluation.filter((g) => g.status === 'passed' || g.status === 'failed');
      if (decided.length > 0) {
        await this.o.host.recordEvent(
          a.d.id,
          decided.some((g) => g.status === 'failed') ? 'Warning' : 'Normal',
          decided.some((g) => g.status === 'failed') ? 'GateFailed' : 'GatesPassed',
          `${state.canary.version} at ${a.st.weight}%: ` + evaluation.map(describeGate).join(', '),
        );
      }
    }
    switch (step.kind) {
      case 'none':
        if (evaluation && !(await commit(state))) return;
        return;
      case 'warm': {
        const t0 = this.now();
        await this.warm(
          a,
          r,
          step.replicas.map((id) => view.urls.get(id)!),
        );
        const ms = this.now() - t0;
        const cur = await this.get(a.d.id);
        if (
          cur?.id !== state.id ||
          !ACTIVE_PHASES.includes(cur.phase) ||
          cur.phase === 'RollingBack'
        )
          return;
        cur.warmed = [...new Set([...cur.warmed, ...step.replicas])];
        cur.warmupMs = ms;
        this.o.host.noteWarmup?.(step.replicas, ms);
        if (!(await commit(cur))) return;
        await this.o.host.recordEvent(
          a.d.id,
          'Normal',
          'Warmed',
          `${step.replicas.length} canary replica(s) of ${state.canary.version} warmed up in ${ms} ms (${r.warmup.requests} requests each)`,
        );
        return;
      }
      case 'publish':
        if (!(await commit(state))) return;
        await this.o.publishNow();
        this.baseline.delete(state.id);
        this.probes.delete(state.id);
        if (this.o.stats) {
          this.baseline.set(state.id, await this.o.stats.read(a.d.name, state.canary.version));
        }
        await this.o.host.recordEvent(
          a.d.id,
          'Normal',
          state.phase === 'Promoting' ? 'Promoted' : 'StepStarted',
          state.phase === 'Promoting'
            ? `${state.canary.version} takes 100% of traffic; retiring ${state.stable.version}`
            : `step ${state.step + 1}/${r.steps.length}: ${state.canary.version} ${state.weight}%, ${state.stable.version} ${100 - state.weight}%`,
        );
        return;
      case 'scale':
        if (!(await commit(state))) return;
        if (state.phase === 'Promoting' && prevPhase !== 'Promoting') {
          await this.o.host.recordEvent(
            a.d.id,
            'Normal',
            'Promoting',
            `every step passed; scaling ${state.canary.version} to ${a.spec.replicas} replica(s)`,
          );
        }
        this.o.host.trigger();
        return;
      case 'retireStable':
        await this.retireStable(a, state);
        return;
      case 'rollback':
        await this.rollback(a, state);
        return;
    }
  }

  private async evaluate(
    a: ActiveRow,
    r: RolloutSpec,
    urls: Map<string, string>,
  ): Promise<GateResult[]> {
    let w: VersionWindow = {
      ttftP99Ms: undefined,
      ttftSamples: 0,
      itlP99Ms: undefined,
      itlSamples: 0,
      requests: 0,
      errors: 0,
      errorRate: undefined,
      errorSource: 'version',
    };
    if (this.o.stats) {
      const cur = await this.o.stats.read(a.d.name, a.st.canary.version);
      w = windowOf(this.baseline.get(a.st.id), cur);
      this.baseline.set(a.st.id, cur);
    }
    const extra: Parameters<typeof evaluateGates>[3] = {};
    const list = [...urls.values()];
    if (r.gates.gpuMemoryPct !== undefined) extra.gpuMemoryPct = await this.gpuMemoryPct(list);
    if (r.gates.probe !== undefined && list.length > 0) {
      // The probe runs in the background (a slow canary must not hold the latency gates back):
      // each evaluation uses the last finished probe and starts the next one.
      const p = r.gates.probe;
      const slot = this.probes.get(a.st.id) ?? { running: false };
      this.probes.set(a.st.id, slot);
      if (slot.result) extra.probe = slot.result;
      if (!slot.running) {
        slot.running = true;
        void this.chat(list[0]!, a.d.name, p.messages, p.maxTokens ?? 8)
          .catch((e: unknown) => `error: ${e instanceof Error ? e.message : String(e)}`)
          .then((reply) => {
            slot.result = { ok: probeMatches(p.expect, reply), reply };
            slot.running = false;
          });
      }
    }
    return evaluateGates(r.gates, w, r.minSamples, extra);
  }

  private async chat(
    url: string,
    model: string,
    messages: Array<{ role: string; content: string }>,
    maxTokens: number,
  ): Promise<string> {
    const res = await this.fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model, messages, max_tokens: maxTokens, stream: false }),
      signal: AbortSignal.timeout(30_000),
    });
    const body = (await res.json()) as { choices?: Array<{ message?: { content?: string } }> };
    if (!res.ok) throw new Error(`status ${res.status}`);
    return body.choices?.[0]?.message?.content ?? '';
  }

  private async warm(a: ActiveRow, r: RolloutSpec, urls: string[]): Promise<void> {
    const jobs: Array<Promise<unknown>> = [];
    for (const url of urls) {
      for (let i = 0; i < r.warmup.requests; i++) {
        jobs.push(
          this.chat(
            url,
            a.d.name,
            [{ role: 'user', content: `warmup request ${i}: say something short.` }],
            r.warmup.maxTokens,
          ).catch((e: unknown) =>
            this.o.logger.warn({ err: e, deployment: a.d.name, url }, 'warmup request failed'),
          ),
        );
      }
    }
    await Promise.all(jobs);
  }

  private async gpuMemoryPct(urls: string[]): Promise<number | undefined> {
    let max: number | undefined;
    for (const url of urls) {
      try {
        const res = await this.fetch(`${url}/telemetry/gpus`, {
          signal: AbortSignal.timeout(5000),
        });
        if (!res.ok) return undefined;
        const body = (await res.json()) as {
          gpus?: Array<{ memory_total_mib: number; memory_used_mib: number }>;
        };
        for (const g of body.gpus ?? []) {
          if (g.memory_total_mib > 0) {
            max = Math.max(max ?? 0, (100 * g.memory_used_mib) / g.memory_total_mib);
          }
        }
      } catch {
        return undefined;
      }
    }
    return max;
  }

  /** Waits until the engines at `urls` have no request running or waiting (or the timeout). */
  private async drain(urls: string[], timeoutMs: number): Promise<void> {
    const deadline = this.now() + timeoutMs;
    // Requests picked just before the snapshot changed may still be on their way.
    await new Promise((res) => setTimeout(res, 100));
    for (;;) {
      let busy = 0;
      let known = false;
      for (const url of urls) {
        const n = await inFlight(this.fetch, url);
        if (n !== undefined) known = true;
        busy += n ?? 0;
      }
      if (!known) {
        await new Promise((res) => setTimeout(res, Math.min(2000, timeoutMs)));
        return;
      }
      if (busy === 0 || this.now() >= deadline) return;
      await new Promise((res) => setTimeout(res, 50));
    }
  }

  private forget(id: string): void {
    this.baseline.delete(id);
    this.probes.delete(id);
  }

  private async retireStable(a: ActiveRow, st: RolloutState): Promise<void> {
    const stable = await this.o.host.replicasOf(a.d.id, st.stable.generation);
    await this.drain(
      stable.flatMap((r) => (r.url ? [r.url] : [])),
      durationMs(a.spec.rollout?.drainTimeout ?? '60s'),
    );
    const now = this.now();
    const done: RolloutState = { ...st, phase: 'Completed', finishedAt: now, updatedAt: now };
    this.forget(st.id);
    const ok = await this.o.host.exclusive(async () => {
      const cur = await this.get(a.d.id);
      if (cur?.id !== st.id) return false;
      await this.save(a.d.id, done);
      return true;
    });
    if (!ok) return;
    await this.o.host.reconcileNow(); // removes the old generation's replicas
    await this.o.publishNow();
    await this.o.host.recordEvent(
      a.d.id,
      'Normal',
      'RolloutCompleted',
      `${st.canary.version} is stable; ${st.stable.version} torn down (${Math.round((now - st.startedAt) / 1000)} s)`,
    );
  }

  private async rollback(a: ActiveRow, st: RolloutState): Promise<void> {
    // 1. Traffic to the stable version first (the snapshot reaches the gateway before teardown).
    const shifted = st.trafficShiftedAt ?? this.now();
    const first: RolloutState = {
      ...st,
      phase: 'RollingBack',
      weight: 0,
      trafficShiftedAt: shifted,
    };
    if (st.trafficShiftedAt === undefined) {
      const ok = await this.o.host.exclusive(async () => {
        const cur = await this.get(a.d.id);
        if (cur?.id !== st.id) return false;
        await this.save(a.d.id, first);
        return true;
      });
      if (!ok) return;
      await this.o.publishNow();
      await this.o.host.recordEvent(
        a.d.id,
        'Warning',
        'RollingBack',
        `${st.reason ?? 'rollback'}; traffic shifted to ${st.stable.version} (100%)`,
      );
    }
    this.forget(st.id);
    // 2. In-flight canary requests finish, then the canary goes and the stable spec is restored.
    const canary = await this.o.host.replicasOf(a.d.id, st.canary.generation);
    await this.drain(
      canary.flatMap((r) => (r.url ? [r.url] : [])),
      durationMs(a.spec.rollout?.drainTimeout ?? '60s'),
    );
    const result = await this.o.host.exclusive(async () => {
      const cur = await this.get(a.d.id);
      const d = await this.o.db
        .selectFrom('deployments')
        .selectAll()
        .where('id', '=', a.d.id)
        .executeTakeFirst();
      if (cur?.id !== st.id || !d) return undefined;
      const current = JSON.parse(d.spec) as DeploymentSpec;
      const generation = d.generation + 1;
      const restored: DeploymentSpec = {
        ...st.stable.spec,
        replicas: current.replicas,
        ...(current.routing ? { routing: current.routing } : {}),
        ...(current.rollout ? { rollout: current.rollout } : {}),
      };
      await this.o.db
        .updateTable('deployments')
        .set({ spec: JSON.stringify(restored), generation, updated_at: isoNow() })
        .where('id', '=', d.id)
        .execute();
      await this.o.db
        .updateTable('replicas')
        .set({ generation })
        .where('deployment_id', '=', d.id)
        .where('generation', '=', st.stable.generation)
        .execute();
      const now = this.now();
      const done: RolloutState = {
        ...first,
        phase: 'RolledBack',
        stable: { ...st.stable, generation },
        finishedAt: now,
        updatedAt: now,
        rollbackMs: now - shifted,
      };
      await this.save(d.id, done);
      return done;
    });
    if (!result) return;
    await this.o.host.reconcileNow(); // tears the canary generation down
    await this.o.publishNow();
    const total = this.now() - shifted;
    await this.o.host.recordEvent(
      a.d.id,
      'Warning',
      'RolledBack',
      `${st.canary.version} torn down ${total} ms after traffic shifted; ${st.stable.version} restored as generation ${result.stable.generation}`,
    );
    const done = await this.get(a.d.id);
    if (done?.id === result.id) {
      done.rollbackMs = total;
      await this.save(a.d.id, done);
    }
  }
}

export function describeGate(g: GateResult): string {
  const v = g.value === null ? '-' : String(g.value);
  const op = g.gate === 'probe' ? '~' : '<=';
  return `${g.gate} ${v} ${op} ${String(g.threshold)} ${g.status}`;
}

const IN_FLIGHT = [
  'vllm:num_requests_running',
  'vllm:num_requests_waiting',
  'sglang:num_running_reqs',
  'sglang:num_queue_reqs',
  'llamacpp:requests_processing',
  'llamacpp:requests_deferred',
];

/** Requests running + waiting in an engine, from its Prometheus text; undefined if unknown. */
async function inFlight(f: typeof fetch, url: string): Promise<number | undefined> {
  try {
    const res = await f(`${url}/metrics`, { signal: AbortSignal.timeout(2000) });
    if (!res.ok) return undefined;
    return parseInFlight(await res.text());
  } catch {
    return undefined;
  }
}

export function parseInFlight(text: string): number | undefined {
  let total: number | undefined;
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const name = line.split(/[{\s]/, 1)[0] ?? '';
    if (!IN_FLIGHT.includes(name)) continue;
    const v = Number(line.trim().split(/\s+/).at(-1));
    if (Number.isFinite(v)) total = (total ?? 0) + v;
  }
  return total;
}
