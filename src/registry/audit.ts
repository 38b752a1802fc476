// The audit log: every change (who, what, when, before/after, why) appended to a hash chain.
// Each record holds the hash of the previous record and its own hash over its canonical JSON
// (which includes that previous hash), so editing a record, or deleting one, breaks the chain
// at a point `verify()` reports. The newest record's seq and hash are also kept in `audit_head`,
// so deleting the newest records is detected too.
import { createHash } from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import type { AuditRecord, AuditVerifyResult } from '../core/api-types.js';
import { systemClock, type Clock } from '../core/clock.js';
import { InferplaneError } from '../core/errors.js';
import { AuditQuerySchema, parseOrThrow } from '../core/schemas.js';
import type { Db } from '../store/db.js';
import type { AuditLogTable, Database } from '../store/schema.js';

/** The previous hash of record 1. Fixed: changing it breaks every existing log. */
export const AUDIT_GENESIS_HASH = createHash('sha256')
  .update('inferplane audit log genesis v1')
  .digest('hex');

export interface AuditEntry {
  /** Who: `operator/<keyId>`, `tenant/<tenant>/<keyId>`, `system/<component>` (see actorOf). */
  actor: string;
  /** What, dotted: `model.create`, `model.version.register`, `deployment.apply`, ... */
  action: string;
  /** Which: `model/<tenant>/<name>@<version>`, `deployment/<name>`, `tenant/<name>`, ... */
  resource: string;
  /** The state before the change (undefined/null: it did not exist). JSON values only. */
  before?: unknown;
  /** The state after the change (undefined/null: it no longer exists). JSON values only. */
  after?: unknown;
  reason?: string | null;
}

export interface AuditFilter {
  /** Exact resource, or a prefix at a `/` or `@` boundary (`model/team-a` matches its models). */
  resource?: string;
  /** Exact actor, or a prefix at a `/` boundary (`tenant/team-a` matches all its keys). */
  actor?: string;
  action?: string;
  /** ISO-8601 time; records at or after it. */
  since?: string;
  /** At most this many (the newest), returned oldest first; default 100. */
  limit?: number;
}

/** The principal shapes of the tenancy layer, structurally (registry does not import tenancy). */
export type ActorPrincipal =
  { kind: 'operator'; keyId: string } | { kind: 'tenant'; keyId: string; tenantName: string };

/** The audit actor string for an API principal. */
export function actorOf(p: ActorPrincipal): string {
  return p.kind === 'operator' ? `operator/${p.keyId}` : `tenant/${p.tenantName}/${p.keyId}`;
}

/**
 * JSON with object keys sorted (recursively) and no whitespace; undefined members dropped,
 * as JSON.stringify does. Throws on values JSON cannot carry faithfully (NaN, Infinity, bigint).
 */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value, new Set()));
}

function sortKeys(v: unknown, seen: Set<object>): unknown {
  if (typeof v === 'number' && !Number.isFinite(v)) {
    throw new InferplaneError('IP_INTERNAL', `audit: ${v} cannot be stored as JSON`);
  }
  if (typeof v === 'bigint') throw new InferplaneError('IP_INTERNAL', 'audit: bigint in record');
  if (v === null || typeof v !== 'object') return v;
  if (typeof (v as { toJSON?: unknown }).toJSON === 'function') {
    return sortKeys((v as { toJSON(): unknown }).toJSON(), seen);
  }
  if (seen.has(v)) throw new InferplaneError('IP_INTERNAL', 'audit: circular value in record');
  seen.add(v);
  let out: unknown;
  if (Array.isArray(v)) out = v.map((x) => (x === undefined ? null : sortKeys(x, seen)));
  else {
    const o: Record<string, unknown> = {};
    for (const k of Object.keys(v).sort()) {
      const x = (v as Record<string, unknown>)[k];
      if (x !== undefined && typeof x !== 'function' && typeof x !== 'symbol') {
        o[k] = sortKeys(x, seen);
      }
    }
    out = o;
  }
  seen.delete(v);
  return out;
}

/** The hash of a record: sha256 over the canonical JSON of every field but `hash`. */
export function auditRecordHash(r: Omit<AuditRecord, 'hash'>): string {
  const body = canonicalJson({
    seq: r.seq,
    time: r.time,
    actor: r.actor,
    action: r.action,
    resource: r.resource,
    before: r.before ?? null,
    after: r.after ?? null,
    reason: r.reason ?? null,
    prevHash: r.prevHash,
  });
  return createHash('sha256').update(body).digest('hex');
}

function toRecord(row: AuditLogTable): AuditRecord {
  return {
    seq: row.seq,
    time: row.time,
    actor: row.actor,
    action: row.action,
    resource: row.resource,
    before: parseJson(row.before),
    after: parseJson(row.after),
    reason: row.reason,
    prevHash: row.prev_hash,
    hash: row.hash,
  };
}

function parseJson(text: string | null): unknown {
  if (text === null) return null;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    // An edited, unparseable value: keep the text so the hash check fails rather than throwing.
    return { unparseable: text };
  }
}

const VERIFY_PAGE = 500;

export class AuditLog {
  constructor(
    private readonly db: Db,
    private readonly clock: Clock = systemClock,
  ) {}

  /**
   * Appends a record and returns it. Pass `trx` to append inside the transaction that makes the
   * change (the record then commits or rolls back with it); otherwise it runs in its own.
   */
  async append(entry: AuditEntry, trx?: Kysely<Database>): Promise<AuditRecord> {
    if (!entry.actor || !entry.action || !entry.resource) {
      throw new InferplaneError('IP_INTERNAL', 'audit: actor, action and resource are required');
    }
    // Normalise through canonical JSON so what is hashed is exactly what reads back.
    const before =
      entry.before === undefined ? null : (JSON.parse(canonicalJson(entry.before)) as unknown);
    const after =
      entry.after === undefined ? null : (JSON.parse(canonicalJson(entry.after)) as unknown);
    const write = async (t: Kysely<Database>): Promise<AuditRecord> => {
      const last = await t
        .selectFrom('audit_log')
        .select(['seq', 'hash'])
        .orderBy('seq', 'desc')
        .limit(1)
        .executeTakeFirst();
      const base = {
        seq: (last?.seq ?? 0) + 1,
        time: this.clock.now().toISOString(),
        actor: entry.actor,
        action: entry.action,
        resource: entry.resource,
        before,
        after,
        reason: entry.reason ?? null,
        prevHash: last?.hash ?? AUDIT_GENESIS_HASH,
      };
      const record: AuditRecord = { ...base, hash: auditRecordHash(base) };
      await t
        .insertInto('audit_log')
        .values({
          seq: record.seq,
          time: record.time,
          actor: record.actor,
          action: record.action,
          resource: record.resource,
          before: before === null ? null : canonicalJson(before),
          after: after === null ? null : canonicalJson(after),
          reason: record.reason,
          prev_hash: record.prevHash,
          hash: record.hash,
        })
        .execute();
      await t
        .insertInto('audit_head')
        .values({ id: 1, seq: record.seq, hash: record.hash })
        .onConflict((oc) => oc.column('id').doUpdateSet({ seq: record.seq, hash: record.hash }))
        .execute();
      return record;
    };
    return trx ? write(trx) : this.db.transaction().execute(write);
  }

  /** Records matching `filter` (validated as the API's query): the newest `limit`, oldest first. */
  async list(filter: AuditFilter = {}): Promise<AuditRecord[]> {
    const f = parseOrThrow(AuditQuerySchema, filter, 'audit filter');
    let q = this.db.selectFrom('audit_log').selectAll();
    if (f.resource !== undefined) {
      const r = f.resource;
      q = q.where((eb) =>
        eb.or([
          eb('resource', '=', r),
          eb(sql<string>`substr(resource, 1, ${r.length + 1})`, 'in', [`${r}/`, `${r}@`]),
        ]),
      );
    }
    if (f.actor !== undefined) {
      const a = f.actor;
      q = q.where((eb) =>
        eb.or([
          eb('actor', '=', a),
          eb(sql<string>`substr(actor, 1, ${a.length + 1})`, '=', `${a}/`),
        ]),
      );
    }
    if (f.action !== undefined) q = q.where('action', '=', f.action);
    if (f.since !== undefined) q = q.where('time', '>=', new Date(f.since).toISOString());
    const rows = await q
      .orderBy('seq', 'desc')
      .limit(f.limit ?? 100)
      .execute();
    return rows.reverse().map(toRecord);
  }

  /** The newest record, if any. */
  async head(): Promise<AuditRecord | undefined> {
    const row = await this.db
      .selectFrom('audit_log')
      .selectAll()
      .orderBy('seq', 'desc')
      .limit(1)
      .executeTakeFirst();
    return row ? toRecord(row) : undefined;
  }

  /**
   * Walks the whole chain (in pages) and reports the first broken record: a changed record (its
   * hash no longer matches its content), a chain break (its previous hash is not the previous
   * record's hash), a sequence gap (records deleted), or a head mismatch (newest records deleted).
   */
  async verify(): Promise<AuditVerifyResult> {
    let checked = 0;
    let expectedSeq = 1;
    let prevHash = AUDIT_GENESIS_HASH;
    let last: AuditRecord | undefined;
    const bad = (seq: number, reason: string, record?: AuditRecord): AuditVerifyResult => ({
      ok: false,
      checked,
      head: last ? { seq: last.seq, hash: last.hash } : null,
      firstBad: record ? { seq, reason, record } : { seq, reason },
    });
    for (;;) {
      const rows = await this.db
        .selectFrom('audit_log')
        .selectAll()
        .where('seq', '>=', expectedSeq)
        .orderBy('seq')
        .limit(VERIFY_PAGE)
        .execute();
      for (const row of rows) {
        const rec = toRecord(row);
        if (rec.seq !== expectedSeq) {
          return bad(
            expectedSeq,
            `sequence gap: record ${expectedSeq}${rec.seq - expectedSeq > 1 ? `..${rec.seq - 1}` : ''} is missing (deleted); the next record is ${rec.seq}`,
          );
        }
        checked++;
        if (auditRecordHash(rec) !== rec.hash) {
          return bad(rec.seq, 'hash mismatch: the record was changed after it was written', rec);
        }
        if (rec.prevHash !== prevHash) {
          return bad(
            rec.seq,
            `chain break: its previous hash does not match record ${rec.seq - 1}` +
              (rec.seq === 1
                ? ' (the genesis hash)'
                : ' (a record before it was changed or replaced)'),
            rec,
          );
        }
        prevHash = rec.hash;
        expectedSeq++;
        last = rec;
      }
      if (rows.length < VERIFY_PAGE) break;
    }
    const head = await this.db
      .selectFrom('audit_head')
      .select(['seq', 'hash'])
      .where('id', '=', 1)
      .executeTakeFirst();
    const lastSeq = last?.seq ?? 0;
    if ((head?.seq ?? 0) !== lastSeq || (head && head.hash !== last?.hash)) {
      const headSeq = head?.seq ?? 0;
      return bad(
        headSeq > lastSeq ? lastSeq + 1 : lastSeq,
        headSeq > lastSeq
          ? `head mismatch: the log ends at record ${lastSeq} but its head is record ${headSeq} (the newest records were deleted)`
          : `head mismatch: the newest record ${lastSeq} does not match the recorded head (seq ${headSeq})`,
        last && headSeq <= lastSeq ? last : undefined,
      );
    }
    return { ok: true, checked, head: last ? { seq: last.seq, hash: last.hash } : null };
  }
}
