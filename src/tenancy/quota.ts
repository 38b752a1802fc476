// Team quotas and policy at admission: pure checks over a deployment spec, the team's usage by
// its other deployments and the spec being replaced. The deployment service calls these before
// placement and stores nothing when one throws.
//
// Rules:
// - Quotas count desired state: replicas × GPUs per replica by GPU type, and replicas, summed
//   over the team's deployments (an update counts the new spec in place of the old one). A change
//   is refused by a quota only when it raises the use that quota counts and the total exceeds the
//   limit, so lowering a quota never blocks scaling down or editing an existing deployment.
// - A policy rule is checked on create, and on an update that touches what the rule governs
//   (see checkPolicy), so tightening a policy grandfathers deployments left as they are.
import { isDeepStrictEqual } from 'node:util';
import { InferplaneError, type ErrorDetail } from '../core/errors.js';
import type { DeploymentSpec } from '../core/schemas.js';
import type { TenantPolicy, TenantQuota } from '../core/types.js';
import type { QuotaLine, TenantUsage } from '../core/api-types.js';

/** What one spec asks for: replicas, and GPUs by type. */
export function specUsage(spec: Pick<DeploymentSpec, 'replicas' | 'resources'>): {
  replicas: number;
  gpus: Record<string, number>;
} {
  const gpus = spec.replicas * spec.resources.gpus;
  return {
    replicas: spec.replicas,
    gpus: gpus > 0 ? { [spec.resources.gpuType]: gpus } : {},
  };
}

/** Sums specs into a TenantUsage. */
export function sumUsage(
  specs: ReadonlyArray<Pick<DeploymentSpec, 'replicas' | 'resources'>>,
): TenantUsage {
  const usage: TenantUsage = { deployments: specs.length, replicas: 0, gpus: {} };
  for (const s of specs) {
    const u = specUsage(s);
    usage.replicas += u.replicas;
    for (const [type, n] of Object.entries(u.gpus)) usage.gpus[type] = (usage.gpus[type] ?? 0) + n;
  }
  return usage;
}

/**
 * Refuses with IP_QUOTA_EXCEEDED when `spec` (replacing `old`, if any) takes the team over a
 * quota. `others` is the usage of the team's other deployments (not counting `old`).
 */
export function checkQuota(
  tenant: string,
  quota: TenantQuota,
  others: TenantUsage,
  spec: Pick<DeploymentSpec, 'replicas' | 'resources'>,
  old?: Pick<DeploymentSpec, 'replicas' | 'resources'>,
  /**
   * Held on top of `spec` for a while: a rollout keeps the stable replicas (`old`) until the
   * canary is promoted to the full count, so its peak is both sets at once.
   */
  surge?: Pick<DeploymentSpec, 'replicas' | 'resources'>,
): void {
  const want = specUsage(spec);
  if (surge) {
    const s = specUsage(surge);
    want.replicas += s.replicas;
    for (const [t, n] of Object.entries(s.gpus)) want.gpus[t] = (want.gpus[t] ?? 0) + n;
  }
  const had = old ? specUsage(old) : { replicas: 0, gpus: {} as Record<string, number> };
  const over: ErrorDetail[] = [];
  const check = (name: string, path: string, used: number, requested: number, prev: number) => {
    const limit = lookupLimit(quota, name);
    if (limit === undefined || requested <= prev || used + requested <= limit) return;
    over.push({
      path,
      quota: name,
      used,
      requested,
      limit,
      message: `quota ${name}: ${used} in use + ${requested} requested${surge ? ' (stable and canary replicas at the rollout peak)' : ''} > limit ${limit}`,
    });
  };
  for (const [type, n] of Object.entries(want.gpus)) {
    check(`gpus[${type}]`, `quota.gpus.${type}`, others.gpus[type] ?? 0, n, had.gpus[type] ?? 0);
  }
  check('replicas', 'quota.replicas', others.replicas, want.replicas, had.replicas);
  if (over.length > 0) {
    throw new InferplaneError(
      'IP_QUOTA_EXCEEDED',
      `team ${tenant} is over quota: ${over.map((d) => d.message.slice('quota '.length)).join('; ')}`,
      { details: over },
    );
  }
}

function lookupLimit(quota: TenantQuota, name: string): number | undefined {
  if (name === 'replicas') return quota.replicas;
  const m = /^gpus\[(.+)\]$/.exec(name);
  return m ? quota.gpus?.[m[1]!] : undefined;
}

/** A parsed allowedEngines entry. */
export interface EngineRule {
  engine: string;
  /** undefined: any version. */
  version?: string;
  /** `>=`: that version or newer; `=`: exactly. */
  op?: '=' | '>=';
}

export function parseEngineRule(entry: string): EngineRule {
  const at = entry.indexOf('@');
  if (at < 0) return { engine: entry };
  const engine = entry.slice(0, at);
  const rest = entry.slice(at + 1);
  return rest.startsWith('>=')
    ? { engine, version: rest.slice(2), op: '>=' }
    : { engine, version: rest, op: '=' };
}

/**
 * Engine versions compare when both are an optional letter prefix and dot-separated numbers
 * with the same prefix: b4999 < b5000, 0.8.5 < 0.10.0, v1.2 = v1.2.0. Anything else (or a
 * different prefix) does not compare: such a version satisfies only an exact `name@version` rule.
 * Returns undefined when the versions do not compare.
 */
export function compareEngineVersions(a: string, b: string): number | undefined {
  const re = /^([A-Za-z]*)(\d+(?:\.\d+)*)$/;
  const ma = re.exec(a);
  const mb = re.exec(b);
  if (!ma || !mb || ma[1]!.toLowerCase() !== mb[1]!.toLowerCase()) return undefined;
  const na = ma[2]!.split('.').map(Number);
  const nb = mb[2]!.split('.').map(Number);
  for (let i = 0; i < Math.max(na.length, nb.length); i++) {
    const d = (na[i] ?? 0) - (nb[i] ?? 0);
    if (d !== 0) return Math.sign(d);
  }
  return 0;
}

/** Whether an engine (and its declared version, if any) matches one rule. */
export function engineMatches(rule: EngineRule, engine: string, version?: string): boolean {
  if (rule.engine !== engine) return false;
  if (rule.version === undefined) return true;
  if (version === undefined) return false;
  if (rule.op === '=') return version === rule.version;
  const c = compareEngineVersions(version, rule.version);
  return c !== undefined && c >= 0;
}

function sloTargets(spec: Pick<DeploymentSpec, 'slo'>): number {
  const s = spec.slo;
  if (!s) return 0;
  return [s.ttftP99Ms, s.itlP99Ms, s.e2eP99Ms].filter((v) => v !== undefined).length;
}

/**
 * Refuses with IP_POLICY_VIOLATION when `spec` breaks a rule of the team's policy. On an update
 * (`old` given), a rule is checked only when the change touches what it governs: the engine
 * (name or version) for allowedEngines, resources.gpus for maxGpusPerReplica, and for requireSlo
 * the slo block or the template (model, engine, resources) — a scale or routing change of an
 * existing deployment passes a rule added after it was created.
 */
export function checkPolicy(
  tenant: string,
  policy: TenantPolicy,
  spec: DeploymentSpec,
  old?: DeploymentSpec,
): void {
  const bad: ErrorDetail[] = [];
  const engineTouched =
    !old || old.engine.name !== spec.engine.name || old.engine.version !== spec.engine.version;
  if (policy.allowedEngines && engineTouched) {
    const rules = policy.allowedEngines.map(parseEngineRule);
    const { name, version } = spec.engine;
    if (!rules.some((r) => engineMatches(r, name, version))) {
      const named = version === undefined ? name : `${name}@${version}`;
      const sameEngine = rules.filter((r) => r.engine === name && r.version !== undefined);
      const why =
        sameEngine.length > 0 && version === undefined
          ? ` (the policy names versions of ${name}: set engine.version)`
          : '';
      bad.push({
        path: version !== undefined && sameEngine.length > 0 ? 'engine.version' : 'engine.name',
        rule: 'allowedEngines',
        allowed: [...policy.allowedEngines],
        message: `engine ${named} is not allowed for ${tenant} (allowed: ${policy.allowedEngines.join(', ')})${why}`,
      });
    }
  }
  const gpusTouched = !old || old.resources.gpus !== spec.resources.gpus;
  if (
    policy.maxGpusPerReplica !== undefined &&
    gpusTouched &&
    spec.resources.gpus > policy.maxGpusPerReplica
  ) {
    bad.push({
      path: 'resources.gpus',
      rule: 'maxGpusPerReplica',
      requested: spec.resources.gpus,
      limit: policy.maxGpusPerReplica,
      message: `${spec.resources.gpus} GPUs per replica is over ${tenant}'s maxGpusPerReplica ${policy.maxGpusPerReplica}`,
    });
  }
  const sloTouched =
    !old ||
    !isDeepStrictEqual(old.slo, spec.slo) ||
    old.model !== spec.model ||
    engineTouched ||
    gpusTouched ||
    old.resources.gpuType !== spec.resources.gpuType;
  if (policy.requireSlo && sloTouched && sloTargets(spec) === 0) {
    bad.push({
      path: 'slo',
      rule: 'requireSlo',
      message: `${tenant}'s policy requires an slo block with at least one of ttftP99Ms, itlP99Ms, e2eP99Ms`,
    });
  }
  if (bad.length > 0) {
    throw new InferplaneError(
      'IP_POLICY_VIOLATION',
      `deployment ${spec.name} breaks ${tenant}'s policy: ${bad.map((d) => d.message).join('; ')}`,
      { details: bad },
    );
  }
}

/** The team's quotas together: admission quotas with their use, then the gateway limits. */
export function quotaLines(
  quota: TenantQuota,
  limits: {
    requestsPerSecond?: number;
    tokensPerMinute?: number;
    maxConcurrency?: number;
  },
  usage: TenantUsage,
): QuotaLine[] {
  const types = [...new Set([...Object.keys(quota.gpus ?? {}), ...Object.keys(usage.gpus)])].sort();
  const lines: QuotaLine[] = types.map((t) => ({
    quota: `gpus[${t}]`,
    enforcedBy: 'admission',
    used: usage.gpus[t] ?? 0,
    limit: quota.gpus?.[t] ?? null,
  }));
  lines.push({
    quota: 'replicas',
    enforcedBy: 'admission',
    used: usage.replicas,
    limit: quota.replicas ?? null,
  });
  for (const f of ['requestsPerSecond', 'tokensPerMinute', 'maxConcurrency'] as const) {
    lines.push({ quota: f, enforcedBy: 'gateway', limit: limits[f] ?? null });
  }
  return lines;
}
