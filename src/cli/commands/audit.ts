// `inferplane audit list|verify`: the hash-chained audit log (/api/v1/audit, operator key).
import { InvalidArgumentError, type Command } from 'commander';
import type { AuditRecord, AuditVerifyResult, ListResponse } from '../../core/api-types.js';
import { CliError } from '../errors.js';
import { formatFields, formatJson, formatTable, processIo, truncate, type Io } from '../output.js';
import { clientFor, examples, nonNegativeInt } from './common.js';

interface ListOptions {
  resource?: string;
  actor?: string;
  action?: string;
  since?: string;
  limit?: number;
  json?: boolean;
}

const UNIT_MS: Record<string, number> = { s: 1e3, m: 60e3, h: 3600e3, d: 86400e3 };

/** `--since`: an ISO-8601 time, or a duration back from now (`30m`, `2h`, `7d`). */
export function parseSince(value: string, now: Date): string {
  const v = value.trim();
  const m = /^(\d+)([smhd])$/.exec(v);
  if (m) return new Date(now.getTime() - Number(m[1]) * (UNIT_MS[m[2]!] ?? 0)).toISOString();
  const t = Date.parse(v);
  if (!/^\d{4}-\d\d-\d\d/.test(v) || Number.isNaN(t)) {
    throw new InvalidArgumentError('expected an ISO-8601 time or a duration such as 30m, 2h, 7d');
  }
  return new Date(t).toISOString();
}

export function auditTable(items: readonly AuditRecord[]): string {
  return formatTable(
    ['SEQ', 'TIME', 'ACTOR', 'ACTION', 'RESOURCE', 'REASON'],
    items.map((r) => [
      String(r.seq),
      r.time.replace(/\.\d+Z$/, 'Z'),
      r.actor,
      r.action,
      r.resource,
      truncate(r.reason ?? '-', 60),
    ]),
  );
}

/** The verification result in words (and the bad record, when there is one). */
export function verifyText(v: AuditVerifyResult): string {
  if (v.ok) {
    return v.head
      ? `audit log OK: ${v.checked} record(s) checked, head #${v.head.seq} ${v.head.hash.slice(0, 16)}\n`
      : 'audit log OK: empty\n';
  }
  const bad = v.firstBad;
  let out = `audit log BROKEN at record ${bad?.seq ?? '?'}: ${bad?.reason ?? 'unknown'}\n`;
  out += `(${v.checked} record(s) checked before it)\n`;
  const r = bad?.record;
  if (r) {
    out +=
      '\n' +
      formatFields([
        ['Seq', String(r.seq)],
        ['Time', r.time],
        ['Actor', r.actor],
        ['Action', r.action],
        ['Resource', r.resource],
        ['Reason', r.reason ?? '-'],
        ['Before', JSON.stringify(r.before)],
        ['After', JSON.stringify(r.after)],
        ['Prev hash', r.prevHash],
        ['Hash', r.hash],
      ]);
  }
  return out;
}

export function registerAudit(program: Command, io: Io = processIo): void {
  const audit = program
    .command('audit')
    .summary('the audit log of changes (audit list, audit verify)')
    .description(
      'the hash-chained audit log: who changed what, when, the state before and after, and why\n' +
        '(operator key)',
    )
    .addHelpText(
      'after',
      examples(
        'inferplane audit list --resource model/team-a',
        'inferplane audit list --since 1h --json',
        'inferplane audit verify',
      ),
    );

  audit
    .command('list')
    .description('audit records, oldest first (the newest --limit that match)')
    .option('--resource <r>', 'exact, or a prefix such as model/team-a or deployment/chat')
    .option('--actor <a>', 'exact, or a prefix such as tenant/team-a or operator')
    .option('--action <a>', 'e.g. model.version.register')
    .option('--since <t>', 'ISO-8601 time, or a duration back from now (30m, 2h, 7d)')
    .option('--limit <n>', 'at most this many (default 100)', nonNegativeInt)
    .option('--json', 'print the raw API JSON')
    .action(async (opts: ListOptions, cmd: Command) => {
      const q = new URLSearchParams();
      if (opts.resource) q.set('resource', opts.resource);
      if (opts.actor) q.set('actor', opts.actor);
      if (opts.action) q.set('action', opts.action);
      if (opts.since) q.set('since', parseSince(opts.since, io.now()));
      if (opts.limit !== undefined) q.set('limit', String(opts.limit));
      const qs = q.toString();
      const res = await clientFor(cmd, io).request<ListResponse<AuditRecord>>(
        'GET',
        `/audit${qs ? `?${qs}` : ''}`,
      );
      if (opts.json) {
        io.out(formatJson(res));
        return;
      }
      io.out(res.items.length === 0 ? 'No audit records.\n' : auditTable(res.items));
    });

  audit
    .command('verify')
    .description(
      'check the hash chain; exit status 1, with the first bad record, when a record was\n' +
        'changed or deleted',
    )
    .option('--json', 'print the raw API JSON')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      const res = await clientFor(cmd, io).request<AuditVerifyResult>('POST', '/audit/verify');
      io.out(opts.json ? formatJson(res) : verifyText(res));
      if (!res.ok) {
        throw new CliError(
          'IP_AUDIT_BROKEN',
          `audit log broken at record ${res.firstBad?.seq ?? '?'}: ${res.firstBad?.reason ?? 'unknown'}`,
        );
      }
    });
}
