// `inferplane tenant create <name>` and `inferplane tenant limits <name>`; the tenants table.
import { InvalidArgumentError, type Command } from 'commander';
import type { Tenant, TenantSummary } from '../../core/api-types.js';
import { TenantLimitsSchema } from '../../core/schemas.js';
import type { TenantLimits } from '../../core/types.js';
import { formatAge, formatJson, formatTable, processIo, type Io } from '../output.js';
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
    .summary('manage tenants (tenant create, tenant limits)')
    .description(
      'manage tenants (the teams that own deployments and API keys) and their gateway limits',
    )
    .addHelpText(
      'after',
      examples(
        'inferplane tenant create demo',
        'inferplane tenant limits demo --rps 5 --tpm 60k',
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
}
