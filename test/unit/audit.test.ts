// The hash-chained audit log: append/list/verify on a real SQLite store, tampering by raw SQL
// (an edited record, a deleted one, the newest ones deleted), the API (operator only) and the
// CLI (`audit list`, `audit verify` exit 1 with the bad record).
import { mkdtempSync, rmSync } from 'node:fs';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'kysely';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createApi } from '../../src/api/app.js';
import { parseSince } from '../../src/cli/commands/audit.js';
import type { AuditRecord, AuditVerifyResult } from '../../src/core/api-types.js';
import type { Clock } from '../../src/core/clock.js';
import { InferplaneError } from '../../src/core/errors.js';
import type { DeploymentService } from '../../src/deploy/service.js';
import {
  AUDIT_GENESIS_HASH,
  AuditLog,
  actorOf,
  auditRecordHash,
  canonicalJson,
} from '../../src/registry/audit.js';
import { Inventory } from '../../src/schedule/inventory.js';
import { openStore, type Db } from '../../src/store/db.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { TenancyService } from '../../src/tenancy/tenancy.js';
import { runCli, serveApiOn } from './api-helpers.js';

const ADMIN = 'ipk_admin_audit_test_0123456789';
let dir: string;
let db: Db;
let audit: AuditLog;
let tenancy: TenancyService;
let now: number;
const clock: Clock = { now: () => new Date(now) };
const servers: Server[] = [];

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'inferplane-audit-'));
  db = await openStore({ sqlitePath: join(dir, 'db.sqlite') });
  now = Date.parse('2026-01-01T00:00:00Z');
  audit = new AuditLog(db, clock);
  tenancy = new TenancyService(db);
  await tenancy.ensureOperatorKey(ADMIN);
});

afterEach(async () => {
  await Promise.all(
    servers.splice(0).map(
      (s) =>
        new Promise<void>((resolve) => {
          s.closeAllConnections();
          s.close(() => resolve());
        }),
    ),
  );
  await db.destroy();
  rmSync(dir, { recursive: true, force: true });
});

/** Five records a minute apart, on three resources and two actors. */
async function seed(): Promise<AuditRecord[]> {
  const out: AuditRecord[] = [];
  const entries = [
    ['operator/key_op', 'tenant.create', 'tenant/team-a', null, { name: 'team-a' }],
    ['tenant/team-a/key_a', 'deployment.apply', 'deployment/chat', null, { replicas: 1 }],
    [
      'tenant/team-a/key_a',
      'deployment.apply',
      'deployment/chat',
      { replicas: 1 },
      { replicas: 2 },
    ],
    ['tenant/team-a/key_a', 'model.version.register', 'model/team-a/llama@1', null, { v: '1' }],
    ['operator/key_op', 'deployment.delete', 'deployment/chat', { replicas: 2 }, null],
  ] as const;
  for (const [actor, action, resource, before, after] of entries) {
    out.push(await audit.append({ actor, action, resource, before, after, reason: `${action}!` }));
    now += 60_000;
  }
  return out;
}

describe('AuditLog', () => {
  it('chains records from the genesis hash, each hashing its canonical content', async () => {
    const recs = await seed();
    expect(recs.map((r) => r.seq)).toEqual([1, 2, 3, 4, 5]);
    expect(recs[0]?.prevHash).toBe(AUDIT_GENESIS_HASH);
    for (let i = 1; i < recs.length; i++) expect(recs[i]?.prevHash).toBe(recs[i - 1]?.hash);
    for (const r of recs) expect(auditRecordHash(r)).toBe(r.hash);
    expect(recs[2]).toMatchObject({
      time: '2026-01-01T00:02:00.000Z',
      before: { replicas: 1 },
      after: { replicas: 2 },
      reason: 'deployment.apply!',
    });
    expect(await audit.verify()).toEqual({
      ok: true,
      checked: 5,
      head: { seq: 5, hash: recs[4]?.hash },
    });
  });

  it('canonical JSON sorts keys and drops undefined, so key order does not change a hash', () => {
    expect(canonicalJson({ b: 1, a: { d: [1, { z: 1, y: undefined }], c: null } })).toBe(
      '{"a":{"c":null,"d":[1,{"z":1}]},"b":1}',
    );
    expect(() => canonicalJson({ x: Number.NaN })).toThrow(InferplaneError);
    expect(actorOf({ kind: 'operator', keyId: 'key_1' })).toBe('operator/key_1');
    expect(actorOf({ kind: 'tenant', keyId: 'key_2', tenantName: 't' })).toBe('tenant/t/key_2');
  });

  it('lists by resource (exact or prefix), actor (prefix), action and since; newest limit', async () => {
    await seed();
    const seqs = async (f: Parameters<AuditLog['list']>[0]): Promise<number[]> =>
      (await audit.list(f)).map((r) => r.seq);
    expect(await seqs({})).toEqual([1, 2, 3, 4, 5]);
    expect(await seqs({ resource: 'deployment/chat' })).toEqual([2, 3, 5]);
    expect(await seqs({ resource: 'deployment' })).toEqual([2, 3, 5]);
    expect(await seqs({ resource: 'deployment/cha' })).toEqual([]);
    expect(await seqs({ resource: 'model/team-a/llama' })).toEqual([4]);
    expect(await seqs({ resource: 'model/team-a' })).toEqual([4]);
    expect(await seqs({ actor: 'tenant/team-a' })).toEqual([2, 3, 4]);
    expect(await seqs({ actor: 'operator' })).toEqual([1, 5]);
    expect(await seqs({ action: 'deployment.apply' })).toEqual([2, 3]);
    expect(await seqs({ since: '2026-01-01T00:03:00Z' })).toEqual([4, 5]);
    expect(await seqs({ limit: 2 })).toEqual([4, 5]);
    expect(await seqs({ resource: 'deployment/chat', limit: 1 })).toEqual([5]);
    await expect(audit.list({ since: 'yesterday' })).rejects.toMatchObject({
      code: 'IP_VALIDATION',
    });
  });

  it('appends inside a caller transaction: rolled back with it', async () => {
    await seed();
    await expect(
      db.transaction().execute(async (trx) => {
        await audit.append({ actor: 'system/test', action: 'x', resource: 'y/z' }, trx);
        throw new Error('abort');
      }),
    ).rejects.toThrow('abort');
    expect((await audit.head())?.seq).toBe(5);
    expect((await audit.verify()).ok).toBe(true);
    const r = await audit.append({ actor: 'system/test', action: 'x', resource: 'y/z' });
    expect(r.seq).toBe(6);
  });

  it('detects a record edited with raw SQL (content, then with its hash recomputed)', async () => {
    await seed();
    await sql`update audit_log set after = '{"replicas":20}' where seq = 3`.execute(db);
    const v = await audit.verify();
    expect(v.ok).toBe(false);
    expect(v.checked).toBe(3);
    expect(v.firstBad?.seq).toBe(3);
    expect(v.firstBad?.reason).toMatch(/hash mismatch/);
    expect(v.firstBad?.record?.after).toEqual({ replicas: 20 });

    // A careful forger recomputes the edited record's hash: the next record's link breaks.
    const row = (await audit.list({})).find((r) => r.seq === 3)!;
    const forged = auditRecordHash(row);
    await sql`update audit_log set hash = ${forged} where seq = 3`.execute(db);
    const v2 = await audit.verify();
    expect(v2.firstBad?.seq).toBe(4);
    expect(v2.firstBad?.reason).toMatch(/chain break/);
  });

  it('detects an edited reason, actor or time', async () => {
    await seed();
    for (const [col, val] of [
      ['reason', 'nothing to see'],
      ['actor', 'operator/key_other'],
      ['time', '2020-01-01T00:00:00.000Z'],
    ] as const) {
      const before = (
        await sql<{ v: string }>`select ${sql.ref(col)} as v from audit_log where seq = 2`.execute(
          db,
        )
      ).rows[0]!.v;
      await sql`update audit_log set ${sql.ref(col)} = ${val} where seq = 2`.execute(db);
      const v = await audit.verify();
      expect(v.firstBad?.seq, col).toBe(2);
      await sql`update audit_log set ${sql.ref(col)} = ${before} where seq = 2`.execute(db);
      expect((await audit.verify()).ok).toBe(true);
    }
  });

  it('detects a deleted record (sequence gap) and deleted newest records (head)', async () => {
    await seed();
    await sql`delete from audit_log where seq = 2`.execute(db);
    const v = await audit.verify();
    expect(v.ok).toBe(false);
    expect(v.firstBad?.seq).toBe(2);
    expect(v.firstBad?.reason).toMatch(/sequence gap/);
    expect(v.checked).toBe(1);
  });

  it('detects the newest records deleted, and a renumbered log (chain break)', async () => {
    await seed();
    await sql`delete from audit_log where seq >= 4`.execute(db);
    const v = await audit.verify();
    expect(v.ok).toBe(false);
    expect(v.firstBad?.seq).toBe(4);
    expect(v.firstBad?.reason).toMatch(/head mismatch/);

    // Deleting record 2 and renumbering the rest closes the gap but not the chain.
    const db2 = join(dir, 'db2.sqlite');
    const other = await openStore({ sqlitePath: db2 });
    try {
      const log = new AuditLog(other, clock);
      for (let i = 0; i < 4; i++)
        await log.append({ actor: 'a/b', action: 'x', resource: `r/${i}` });
      await sql`delete from audit_log where seq = 2`.execute(other);
      await sql`update audit_log set seq = seq - 1 where seq > 2`.execute(other);
      await sql`update audit_head set seq = 3`.execute(other);
      const v2 = await log.verify();
      expect(v2.firstBad?.seq).toBe(2);
      expect(v2.firstBad?.reason).toMatch(/hash mismatch|chain break/);
    } finally {
      await other.destroy();
    }
  });

  it('verifies an empty log, and a long one across pages', async () => {
    expect(await audit.verify()).toEqual({ ok: true, checked: 0, head: null });
    for (let i = 0; i < 1203; i++) {
      await audit.append({ actor: 'system/t', action: 'x', resource: `r/${i}`, after: { i } });
    }
    const v = await audit.verify();
    expect(v).toMatchObject({ ok: true, checked: 1203, head: { seq: 1203 } });
    await sql`update audit_log set after = '{"i":-1}' where seq = 1100`.execute(db);
    expect((await audit.verify()).firstBad?.seq).toBe(1100);
  });
});

describe('audit API and CLI', () => {
  function api(): ReturnType<typeof createApi> {
    return createApi({
      tenancy,
      deployments: undefined as unknown as DeploymentService,
      inventory: new Inventory(db),
      logger: createLogger({ level: 'silent' }),
      onChange: () => undefined,
      version: 'test',
      audit,
    });
  }

  async function call(
    method: string,
    path: string,
    key = ADMIN,
  ): Promise<{ status: number; json: Record<string, unknown> }> {
    const res = await api().request(path, { method, headers: { authorization: `Bearer ${key}` } });
    return { status: res.status, json: (await res.json()) as Record<string, unknown> };
  }

  it('GET /audit filters (operator only); POST /audit/verify reports the first bad record', async () => {
    await seed();
    await tenancy.createTenant('team-a');
    const tenantKey = (await tenancy.createKey('team-a')).key;
    expect((await call('GET', '/audit', tenantKey)).status).toBe(403);
    expect((await call('POST', '/audit/verify', tenantKey)).status).toBe(403);

    const all = await call('GET', '/audit');
    expect((all.json.items as AuditRecord[]).map((r) => r.seq)).toEqual([1, 2, 3, 4, 5]);
    const some = await call(
      'GET',
      '/audit?resource=deployment/chat&actor=tenant/team-a&since=2026-01-01T00:02:00Z',
    );
    expect((some.json.items as AuditRecord[]).map((r) => r.seq)).toEqual([3]);
    expect((await call('GET', '/audit?limit=0')).status).toBe(400);
    expect((await call('GET', '/audit?bogus=1')).status).toBe(400);

    expect((await call('POST', '/audit/verify')).json).toMatchObject({ ok: true, checked: 5 });
    await sql`update audit_log set before = null where seq = 3`.execute(db);
    const v = (await call('POST', '/audit/verify')).json as unknown as AuditVerifyResult;
    expect(v.ok).toBe(false);
    expect(v.firstBad).toMatchObject({ seq: 3, record: { seq: 3, before: null } });
  });

  const serveApi = (): Promise<string> => serveApiOn(api(), servers);

  const cli = (args: string[], url: string) =>
    runCli(args, url, ADMIN, () => new Date('2026-01-01T00:10:00Z'));

  it('parses --since as a duration or an ISO time', () => {
    const t = new Date('2026-01-01T12:00:00Z');
    expect(parseSince('30m', t)).toBe('2026-01-01T11:30:00.000Z');
    expect(parseSince('2h', t)).toBe('2026-01-01T10:00:00.000Z');
    expect(parseSince('7d', t)).toBe('2025-12-25T12:00:00.000Z');
    expect(parseSince('2026-01-01T00:00:00+01:00', t)).toBe('2025-12-31T23:00:00.000Z');
    expect(() => parseSince('yesterday', t)).toThrow(/ISO-8601/);
  });

  it('audit list prints a table or JSON; audit verify exits 1 with the bad record', async () => {
    await seed();
    const url = await serveApi();
    const list = await cli(['audit', 'list', '--resource', 'deployment/chat'], url);
    expect(list.code).toBe(0);
    const lines = list.out.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^SEQ\s+TIME\s+ACTOR\s+ACTION\s+RESOURCE\s+REASON$/);
    expect(lines.slice(1).map((l) => l.split(/\s+/)[0])).toEqual(['2', '3', '5']);
    expect(lines[1]).toMatch(
      /^2\s+2026-01-01T00:01:00Z\s+tenant\/team-a\/key_a\s+deployment.apply\s+deployment\/chat\s+deployment.apply!$/,
    );
    const since = await cli(['audit', 'list', '--since', '8m', '--json'], url);
    expect((JSON.parse(since.out) as { items: AuditRecord[] }).items.map((r) => r.seq)).toEqual([
      3, 4, 5,
    ]);

    const ok = await cli(['audit', 'verify'], url);
    expect(ok.code).toBe(0);
    expect(ok.out).toMatch(/^audit log OK: 5 record\(s\) checked, head #5 [0-9a-f]{16}\n$/);

    await sql`update audit_log set reason = 'edited' where seq = 4`.execute(db);
    const broken = await cli(['audit', 'verify'], url);
    expect(broken.code).toBe(1);
    expect(broken.out).toMatch(/^audit log BROKEN at record 4: hash mismatch/);
    expect(broken.out).toMatch(/Reason:\s+edited/);
    expect(broken.out).toMatch(/Resource:\s+model\/team-a\/llama@1/);
    expect(broken.err).toMatch(/IP_AUDIT_BROKEN/);
    const brokenJson = await cli(['audit', 'verify', '--json'], url);
    expect(brokenJson.code).toBe(1);
    expect((JSON.parse(brokenJson.out) as AuditVerifyResult).firstBad?.seq).toBe(4);

    expect((await cli(['audit', 'list', '--since', 'soon'], url)).code).toBe(2);
  });

  it('keeps `inferplane --version` and -V working beside `model register --version`', async () => {
    const a = await cli(['--version'], 'http://127.0.0.1:1');
    const b = await cli(['-V'], 'http://127.0.0.1:1');
    expect(a.code).toBe(0);
    expect(a.out).toMatch(/^\d+\.\d+\.\d+/);
    expect(b.out).toBe(a.out);
  });
});
