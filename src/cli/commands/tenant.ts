// `inferplane tenant create|limits|quota|policy <name>`; the tenants table; `describe tenant`.
import { InvalidArgumentError, type Command } from 'commander';
import type { Tenant, TenantSummary, TenantView } from '../../core/api-types.js';
import { EngineRuleSchema, TenantLimitsSchema } from '../../core/schemas.js';
import type { TenantLimits, TenantPolicy } from '../../core/types.js';
import { formatAge, formatFields, formatJson, formatTable, processIo, type Io } from '../output.js';
import { clientFor, examples } from './common.js';

type LimitField = keyof TenantLimits;

/** A parsed limit flag: a number, or `none` (clear it; commander cannot carry a null). */
type LimitValue = number | 'none';

interface LimitFlags {
  rps?: LimitValue;
  tpm?: LimitValue;
  maxConcurrency?: LimitValue;
}

interface TenantCreateOptions extends LimitFlags {
  json?: boolean;
}

interface TenantLimitsOptions extends LimitFlags {
  json?: boolean;
}

/** Each limit: its API field, the option key commander gives it, and what it counts. */
const LIMITS: ReadonlyArray<{ field: LimitField; key: keyof LimitFlags; what: string }> = [
  { field: 'requestsPerSecond', key: 'rps', what: 'requests per second' },
  { field: 'tokensPerMinute', key: 'tpm', what: 'tokens per minute' },
  { field: 'maxConcurrency', key: 'maxConcurrency', what: 'concurrent requests' },
];

const MULTIPLIER: Record<string, number> = { '': 1, k: 1e3, m: 1e6 };

/**
 * Parses a limit flag: a positive number, optionally with a k (thousand) or M (million) suffix
 * (`60k`), checked against the API's own schema so a bad value fails before any request.
 */
export function parseLimit(field: LimitField, value: string): number {
  const m = /^(\d+(?:\.\d*)?|\.\d+)([kKmM]?)$/.exec(value.trim());
  const integer = field !== 'requestsPerSecond';
  const expected = integer
    ? 'expected a positive integer (a k or M suffix is allowed, e.g. 60k)'
    : 'expected a positive number';
  if (!m) throw new InvalidArgumentError(expected);
  let n = Number(m[1]) * (MULTIPLIER[(m[2] ?? '').toLowerCase()] ?? 1);
  if (m[2] && Math.abs(n - Math.round(n)) < 1e-6) n = Math.round(n);
  const checked = TenantLimitsSchema.shape[field].safeParse(n);
  if (!checked.success || checked.data === undefined) {
    const why = checked.success ? 'required' : (checked.error.issues[0]?.message ?? 'invalid');
    throw new InvalidArgumentError(`${expected} (${why.toLowerCase()})`);
  }
  return n;
}

/** As parseLimit, but `none` clears the limit (null in the PATCH body). */
export function parseLimitOrNone(field: LimitField, value: string): LimitValue {
  return value.trim().toLowerCase() === 'none' ? 'none' : parseLimit(field, value);
}

/** The limits set by flags (create: numbers; limits: numbers or null), or undefined if none. */
function limitsFromFlags(opts: LimitFlags): Record<string, number | null> | undefined {
  const out: Record<string, number | null> = {};
  for (const { field, key } of LIMITS) {
    const v = opts[key];
    if (v !== undefined) out[field] = v === 'none' ? null : v;
  }
  return Object.keys(out).length === 0 ? undefined : out;
}

/** `5 rps, 60k tpm, 4 conc`, or `-` when the tenant is unlimited. */
export function formatLimits(limits: TenantLimits | undefined): string {
  const parts: string[] = [];
  const l = limits ?? {};
  if (l.requestsPerSecond !== undefined) parts.push(`${trim(l.requestsPerSecond)} rps`);
  if (l.tokensPerMinute !== undefined) parts.push(`${compact(l.tokensPerMinute)} tpm`);
  if (l.maxConcurrency !== undefined) parts.push(`${l.maxConcurrency} conc`);
  return parts.length === 0 ? '-' : parts.join(', ');
}

function trim(n: number): string {
  return String(Number(n.toFixed(3)));
}

/** 60000 → 60k, 1500000 → 1.5M (display only; --json has the exact numbers). */
function compact(n: number): string {
  if (n >= 1e6) return `${trim(Number((n / 1e6).toFixed(2)))}M`;
  if (n >= 1e3) return `${trim(Number((n / 1e3).toFixed(2)))}k`;
  return trim(n);
}

export function tenantsTable(items: readonly TenantSummary[], now: Date): string {
  return formatTable(
    ['NAME', 'KEYS', 'DEPLOYMENTS', 'LIMITS', 'AGE'],
    items.map((t) => [
      t.name,
      String(t.keys),
      String(t.deployments),
      formatLimits(t.limits),
      formatAge(t.createdAt, now),
    ]),
  );
}

export function registerTenant(program: Command, io: Io = processIo): void {
  const tenant = program
    .command('tenant')
    .summary('manage tenants (tenant create, limits, quota, policy)')
    .description(
      'manage tenants (the teams that own deployments and API keys): gateway limits,\n' +
        'admission quotas (GPUs by type, replicas) and deployment policy',
    )
    .addHelpText(
      'after',
      examples(
        'inferplane tenant create demo',
        'inferplane tenant limits demo --rps 5 --tpm 60k',
        'inferplane tenant quota demo --gpus H100-80GB=8 --replicas 10',
        'inferplane tenant policy demo --allow-engines sim,llamacpp@>=b5000 --require-slo',
        'inferplane describe tenant demo',
        'inferplane get tenants',
      ),
    );

  tenant
    .command('create')
    .description('create a tenant, optionally with gateway limits (unset: unlimited)')
    .argument('<name>', 'tenant name')
    .option('--rps <n>', 'requests per second (sustained; burst of max(1, n))', (v) =>
      parseLimit('requestsPerSecond', v),
    )
    .option('--tpm <n>', 'prompt + completion tokens per minute (e.g. 60000 or 60k)', (v) =>
      parseLimit('tokensPerMinute', v),
    )
    .option('--max-concurrency <n>', 'requests in flight at once', (v) =>
      parseLimit('maxConcurrency', v),
    )
    .option('--json', 'print the raw API JSON')
    .addHelpText(
      'after',
      examples(
        'inferplane tenant create demo',
        'inferplane tenant create team-a --rps 5 --tpm 60k --max-concurrency 4',
        'inferplane key create --tenant demo',
      ),
    )
    .action(async (name: string, opts: TenantCreateOptions, cmd: Command) => {
      const limits = limitsFromFlags(opts);
      const res = await clientFor(cmd, io).request<{ tenant: Tenant }>('POST', '/tenants', {
        name,
        ...(limits ? { limits } : {}),
      });
      if (opts.json) {
        io.out(formatJson(res));
        return;
      }
      const created = `tenant/${res?.tenant?.name ?? name} created`;
      io.out(
        limits ? `${created} (limits: ${formatLimits(res?.tenant?.limits)})\n` : `${created}\n`,
      );
    });

  tenant
    .command('limits')
    .description(
      "show or change a tenant's gateway limits (operator key); a flag set to none clears that\n" +
        'limit (unlimited), limits not named are kept; without flags, prints the current limits',
    )
    .argument('<name>', 'tenant name')
    .option('--rps <n|none>', 'requests per second', (v) =>
      parseLimitOrNone('requestsPerSecond', v),
    )
    .option('--tpm <n|none>', 'tokens per minute (e.g. 60000 or 60k)', (v) =>
      parseLimitOrNone('tokensPerMinute', v),
    )
    .option('--max-concurrency <n|none>', 'requests in flight at once', (v) =>
      parseLimitOrNone('maxConcurrency', v),
    )
    .option('--json', 'print the raw API JSON')
    .addHelpText(
      'after',
      examples(
        'inferplane tenant limits team-a --rps 5 --tpm 60k --max-concurrency 4',
        'inferplane tenant limits team-a --tpm none      # clear one limit',
        'inferplane tenant limits team-a                 # show the current limits',
      ),
    )
    .action(async (name: string, opts: TenantLimitsOptions, cmd: Command) => {
      const client = clientFor(cmd, io);
      const path = `/tenants/${encodeURIComponent(name)}`;
      const limits = limitsFromFlags(opts);
      const res = limits
        ? await client.request<{ tenant: Tenant }>('PATCH', path, { limits })
        : await client.request<{ tenant: Tenant }>('GET', path);
      if (opts.json) {
        io.out(formatJson(res));
        return;
      }
      const l = res?.tenant?.limits;
      const shown = formatLimits(l);
      io.out(
        `tenant/${res?.tenant?.name ?? name} limits: ${shown === '-' ? 'none (unlimited)' : shown}\n`,
      );
    });

  registerQuota(tenant, io);
  registerPolicy(tenant, io);
}

// ---- Quotas and policy (issue 7) ----

/** A GPU quota flag value: `TYPE=N` or `TYPE=none` (clears that type), comma-separated. */
export type GpuQuotaFlag = Record<string, number | 'none'>;

/**
 * Parses `--gpus H100-80GB=8[,A100-80GB=none]`, merged over earlier occurrences of the flag
 * (commander passes them as `previous`).
 */
export function parseGpuQuota(value: string, previous: GpuQuotaFlag = {}): GpuQuotaFlag {
  const out: GpuQuotaFlag = { ...previous };
  for (const part of value.split(',')) {
    const m = /^\s*([^=\s]+)\s*=\s*(\S+)\s*$/.exec(part);
    if (!m) throw new InvalidArgumentError(`expected TYPE=N or TYPE=none (got "${part.trim()}")`);
    const [, type, n] = m as unknown as [string, string, string];
    if (n.toLowerCase() === 'none') out[type] = 'none';
    else if (/^\d+$/.test(n)) out[type] = Number(n);
    else throw new InvalidArgumentError(`expected a non-negative integer or none for ${type}`);
  }
  return out;
}

/** A non-negative integer, or `none` (clear). */
export function parseCountOrNone(value: string): number | 'none' {
  const v = value.trim();
  if (v.toLowerCase() === 'none') return 'none';
  if (!/^\d+$/.test(v)) throw new InvalidArgumentError('expected a non-negative integer or none');
  return Number(v);
}

/** `sim,llamacpp@>=b5000` → entries checked against the API's schema, or `none` (clear). */
export function parseEngineList(value: string): string[] | 'none' {
  if (value.trim().toLowerCase() === 'none') return 'none';
  const entries = value
    .split(',')
    .map((e) => e.trim())
    .filter((e) => e !== '');
  if (entries.length === 0) throw new InvalidArgumentError('expected a list such as sim,llamacpp');
  for (const e of entries) {
    const r = EngineRuleSchema.safeParse(e);
    if (!r.success) throw new InvalidArgumentError(`"${e}": ${r.error.issues[0]?.message ?? ''}`);
  }
  return entries;
}

interface QuotaOptions {
  gpus?: GpuQuotaFlag;
  replicas?: number | 'none';
  clear?: boolean;
  json?: boolean;
}

interface PolicyOptions {
  allowEngines?: string[] | 'none';
  maxGpusPerReplica?: number | 'none';
  requireSlo?: boolean;
  clear?: boolean;
  json?: boolean;
}

const nullIfNone = <T>(v: T | 'none'): T | null => (v === 'none' ? null : v);

/** The PATCH body for `tenant quota` flags; undefined when no flag changes anything. */
export function quotaPatch(opts: QuotaOptions): { quota: unknown } | undefined {
  if (opts.clear) {
    if (opts.gpus !== undefined || opts.replicas !== undefined) {
      throw new InvalidArgumentError('--clear cannot be combined with --gpus or --replicas');
    }
    return { quota: null };
  }
  const quota: Record<string, unknown> = {};
  if (opts.gpus !== undefined) {
    quota.gpus = Object.fromEntries(Object.entries(opts.gpus).map(([t, n]) => [t, nullIfNone(n)]));
  }
  if (opts.replicas !== undefined) quota.replicas = nullIfNone(opts.replicas);
  return Object.keys(quota).length === 0 ? undefined : { quota };
}

/** The PATCH body for `tenant policy` flags; undefined when no flag changes anything. */
export function policyPatch(opts: PolicyOptions): { policy: unknown } | undefined {
  if (opts.clear) {
    if (
      opts.allowEngines !== undefined ||
      opts.maxGpusPerReplica !== undefined ||
      opts.requireSlo !== undefined
    ) {
      throw new InvalidArgumentError('--clear cannot be combined with other policy flags');
    }
    return { policy: null };
  }
  const policy: Record<string, unknown> = {};
  if (opts.allowEngines !== undefined) policy.allowedEngines = nullIfNone(opts.allowEngines);
  if (opts.maxGpusPerReplica !== undefined) {
    policy.maxGpusPerReplica = nullIfNone(opts.maxGpusPerReplica);
  }
  // --no-require-slo clears the rule (false and absent mean the same).
  if (opts.requireSlo !== undefined) policy.requireSlo = opts.requireSlo ? true : null;
  return Object.keys(policy).length === 0 ? undefined : { policy };
}

/** QUOTA / ENFORCED / USED / LIMIT rows of a tenant view (`-` used: not counted here). */
export function quotasTable(view: TenantView): string {
  return formatTable(
    ['QUOTA', 'ENFORCED', 'USED', 'LIMIT'],
    (view.quotas ?? []).map((q) => [
      q.quota,
      q.enforcedBy,
      q.used === undefined ? '-' : String(q.used),
      q.limit === null ? 'unlimited' : String(q.limit),
    ]),
  );
}

/** One line per policy rule, or `none`. */
export function formatPolicy(policy: TenantPolicy | undefined): string {
  const p = policy ?? {};
  const parts: string[] = [];
  if (p.allowedEngines) parts.push(`engines: ${p.allowedEngines.join(', ')}`);
  if (p.maxGpusPerReplica !== undefined) parts.push(`max GPUs/replica: ${p.maxGpusPerReplica}`);
  if (p.requireSlo) parts.push('SLO required');
  return parts.length === 0 ? 'none' : parts.join('; ');
}

/** `inferplane describe tenant NAME`: the tenant, its policy, and its quotas with use. */
export function describeTenant(view: TenantView, now: Date): string {
  const t = view.tenant;
  const gpus = Object.entries(view.usage.gpus)
    .map(([type, n]) => `${n} × ${type}`)
    .join(', ');
  return (
    formatFields([
      ['Name', t.name],
      ['Id', t.id],
      ['Created', `${t.createdAt} (${formatAge(t.createdAt, now)} ago)`],
      ['Deployments', String(view.usage.deployments)],
      ['Replicas', String(view.usage.replicas)],
      ['GPUs', gpus === '' ? '0' : gpus],
      ['Limits', formatLimits(t.limits)],
      ['Policy', formatPolicy(t.policy)],
    ]) +
    '\nQuotas:\n' +
    quotasTable(view)
      .split('\n')
      .map((l) => (l === '' ? l : `  ${l}`))
      .join('\n')
  );
}

function registerQuota(tenant: Command, io: Io): void {
  tenant
    .command('quota')
    .description(
      "show or change a team's admission quotas (operator key to change): GPUs by type and\n" +
        'replicas, counted over its deployments (replicas × GPUs per replica). A value of none\n' +
        'clears one quota, quotas not named are kept, --clear removes them all; without flags,\n' +
        'prints quota, used and limit (requests/s and tokens/min: `tenant limits`)',
    )
    .argument('<name>', 'tenant name')
    .option(
      '--gpus <TYPE=N,...>',
      'GPUs of a type (repeatable; TYPE=none clears that type)',
      parseGpuQuota,
    )
    .option('--replicas <n|none>', "replicas across the team's deployments", parseCountOrNone)
    .option('--clear', 'remove every quota (unlimited)')
    .option('--json', 'print the raw API JSON')
    .addHelpText(
      'after',
      examples(
        'inferplane tenant quota team-a --gpus H100-80GB=8 --replicas 10',
        'inferplane tenant quota team-a --gpus A100-80GB=4 --gpus H100-80GB=none',
        'inferplane tenant quota team-a --clear',
        'inferplane tenant quota team-a                 # show quota, used and limit',
      ),
    )
    .action(async (name: string, opts: QuotaOptions, cmd: Command) => {
      const body = usage(cmd, () => quotaPatch(opts));
      await showOrPatch(cmd, io, name, body, opts.json, (view) => quotasTable(view));
    });
}

function registerPolicy(tenant: Command, io: Io): void {
  tenant
    .command('policy')
    .description(
      "show or change a team's deployment policy (operator key to change). Engines: name (any\n" +
        'version), name@version (exactly) or name@>=version (that or newer: b4999 < b5000,\n' +
        "0.8.5 < 0.10.0), matched against the spec's engine.version. A value of none clears a\n" +
        'rule, rules not named are kept, --clear removes them all; without flags, prints them',
    )
    .argument('<name>', 'tenant name')
    .option('--allow-engines <list|none>', 'engines the team may deploy', parseEngineList)
    .option('--max-gpus-per-replica <n|none>', 'most GPUs one replica may use', parseCountOrNone)
    .option('--require-slo', 'deployments must carry an slo block (ttftP99Ms, itlP99Ms, e2eP99Ms)')
    .option('--no-require-slo', 'drop the SLO requirement')
    .option('--clear', 'remove every rule')
    .option('--json', 'print the raw API JSON')
    .addHelpText(
      'after',
      examples(
        'inferplane tenant policy team-a --allow-engines sim,llamacpp@>=b5000',
        'inferplane tenant policy team-a --max-gpus-per-replica 4 --require-slo',
        'inferplane tenant policy team-a --allow-engines none --no-require-slo',
        'inferplane tenant policy team-a                 # show the rules',
      ),
    )
    .action(async (name: string, opts: PolicyOptions, cmd: Command) => {
      const body = usage(cmd, () => policyPatch(opts));
      await showOrPatch(
        cmd,
        io,
        name,
        body,
        opts.json,
        (view) => `tenant/${view.tenant.name} policy: ${formatPolicy(view.tenant.policy)}\n`,
      );
    });
}

/** Runs `fn`; a flag conflict it reports becomes a usage error (printed, exit status 2). */
function usage<T>(cmd: Command, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof InvalidArgumentError) cmd.error(`error: ${e.message}`, { exitCode: 2 });
    throw e;
  }
}

async function showOrPatch(
  cmd: Command,
  io: Io,
  name: string,
  body: object | undefined,
  json: boolean | undefined,
  render: (view: TenantView) => string,
): Promise<void> {
  const client = clientFor(cmd, io);
  const path = `/tenants/${encodeURIComponent(name)}`;
  const view = body
    ? await client.request<TenantView>('PATCH', path, body)
    : await client.request<TenantView>('GET', path);
  io.out(json ? formatJson(view) : render(view));
}
