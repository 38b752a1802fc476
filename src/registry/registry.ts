// The model registry: models (owned by a tenant) → immutable versions → artifacts (uri, sha256,
// size, format) with provenance (source, license, the key that registered it). Registering the
// same name+version again is idempotent when the content is the same and IP_CONFLICT otherwise.
// Every change is appended to the audit log in the transaction that makes it.
import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Kysely } from 'kysely';
import type {
  ModelArtifact,
  ModelDetail,
  ModelSummary,
  ModelVersion,
  RegisterVersionResponse,
} from '../core/api-types.js';
import { systemClock, type Clock } from '../core/clock.js';
import { InferplaneError, type ErrorDetail } from '../core/errors.js';
import { newId } from '../core/ids.js';
import {
  ModelNameSchema,
  ModelVersionCreateSchema,
  parseOrThrow,
  type ArtifactFormat,
  type ArtifactInput,
} from '../core/schemas.js';
import type { Db } from '../store/db.js';
import type { Database, ModelTable, ModelVersionTable } from '../store/schema.js';
import { actorOf, canonicalJson, type AuditLog } from './audit.js';
import { sha256File, type HashProgress } from './hash.js';

/** The tenancy layer's Principal, structurally (the registry does not import tenancy). */
export type RegistryPrincipal =
  | { kind: 'operator'; keyId: string }
  | { kind: 'tenant'; keyId: string; tenantId: string; tenantName: string };

export interface ModelScope {
  /** The owning tenant: required for an operator when the name exists in several tenants. */
  tenant?: string | undefined;
}

export interface ModelRef {
  tenant: string;
  name: string;
  version: string;
}

export interface ModelRegistryOptions {
  clock?: Clock;
  /** Progress of hashing a file:// artifact registered without a sha256. */
  onHashProgress?: (uri: string, p: HashProgress) => void;
}

const EXTENSIONS: Record<string, ArtifactFormat> = {
  '.gguf': 'gguf',
  '.safetensors': 'safetensors',
  '.onnx': 'onnx',
  '.engine': 'trt-engine',
  '.plan': 'trt-engine',
  '.trt': 'trt-engine',
};

/** The format an artifact URI's extension implies, if any. */
export function formatFromUri(uri: string): ArtifactFormat | undefined {
  let path = uri;
  try {
    path = new URL(uri).pathname;
  } catch {
    // not a URL: use as is
  }
  return EXTENSIONS[extname(path).toLowerCase()];
}

/** sha256 over the canonical content of a version (what makes two registrations "the same"). */
export function versionContentHash(
  artifacts: readonly Pick<ModelArtifact, 'uri' | 'sha256' | 'format'>[],
  source: string | null,
  license: string | null,
): string {
  const content = canonicalJson({
    artifacts: artifacts.map((a) => ({ uri: a.uri, sha256: a.sha256, format: a.format })),
    source,
    license,
  });
  return createHash('sha256').update(content).digest('hex');
}

export class ModelRegistry {
  private readonly clock: Clock;

  constructor(
    private readonly db: Db,
    private readonly audit: AuditLog,
    private readonly opts: ModelRegistryOptions = {},
  ) {
    this.clock = opts.clock ?? systemClock;
  }

  /**
   * Registers version `body.version` of model `name` (creating the model on its first version).
   * A tenant key registers into its own tenant; an operator names the tenant. A file:// artifact
   * without a sha256 is hashed here (the file must be readable by the control plane).
   */
  async register(
    name: string,
    body: unknown,
    principal: RegistryPrincipal,
  ): Promise<RegisterVersionResponse> {
    parseOrThrow(ModelNameSchema, name, 'model name', 'name');
    const input = parseOrThrow(ModelVersionCreateSchema, body, 'model version');
    const tenant = await this.writableTenant(principal, input.tenant);
    const artifacts: ModelArtifact[] = [];
    for (const [i, a] of input.artifacts.entries()) {
      artifacts.push(await this.completeArtifact(a, `artifacts.${i}`));
    }
    const source = input.source ?? null;
    const license = input.license ?? null;
    const contentHash = versionContentHash(artifacts, source, license);
    const actor = actorOf(principal);

    return this.db.transaction().execute(async (trx) => {
      const now = this.clock.now().toISOString();
      let model = await trx
        .selectFrom('models')
        .selectAll()
        .where('tenant_id', '=', tenant.id)
        .where('name', '=', name)
        .executeTakeFirst();
      if (model) {
        const existing = await trx
          .selectFrom('model_versions')
          .selectAll()
          .where('model_id', '=', model.id)
          .where('version', '=', input.version)
          .executeTakeFirst();
        if (existing) {
          const view = await versionView(trx, existing, name, tenant.name);
          const diffs = contentDiffs(view, artifacts, source, license);
          if (diffs.length === 0) {
            return {
              model: await summaryOf(trx, model, tenant.name),
              version: view,
              result: 'unchanged' as const,
            };
          }
          throw new InferplaneError(
            'IP_CONFLICT',
            `model ${name} version ${input.version} is already registered with different content; versions are immutable: register a new version`,
            { details: diffs },
          );
        }
      } else {
        model = { id: newId('mdl'), tenant_id: tenant.id, name, created_at: now, updated_at: now };
        await trx.insertInto('models').values(model).execute();
        await this.audit.append(
          {
            actor,
            action: 'model.create',
            resource: `model/${tenant.name}/${name}`,
            before: null,
            after: { name, tenant: tenant.name },
            reason: input.reason ?? `first version ${input.version} registered`,
          },
          trx,
        );
      }
      const last = await trx
        .selectFrom('model_versions')
        .select((eb) => eb.fn.max('ordinal').as('n'))
        .where('model_id', '=', model.id)
        .executeTakeFirst();
      const row: ModelVersionTable = {
        id: newId('mver'),
        model_id: model.id,
        version: input.version,
        ordinal: Number(last?.n ?? 0) + 1,
        content_hash: contentHash,
        source,
        license,
        registered_key: principal.keyId,
        registered_tenant: principal.kind === 'tenant' ? principal.tenantName : null,
        created_at: now,
      };
      await trx.insertInto('model_versions').values(row).execute();
      await trx
        .insertInto('model_artifacts')
        .values(
          artifacts.map((a, idx) => ({
            version_id: row.id,
            idx,
            uri: a.uri,
            sha256: a.sha256,
            size: a.size,
            format: a.format,
          })),
        )
        .execute();
      await trx.updateTable('models').set({ updated_at: now }).where('id', '=', model.id).execute();
      model = { ...model, updated_at: now };
      const version = await versionView(trx, row, name, tenant.name);
      await this.audit.append(
        {
          actor,
          action: 'model.version.register',
          resource: `model/${tenant.name}/${name}@${input.version}`,
          before: null,
          after: version,
          reason: input.reason ?? null,
        },
        trx,
      );
      return {
        model: await summaryOf(trx, model, tenant.name),
        version,
        result: 'created' as const,
      };
    });
  }

  /** Models the principal may see (a tenant: its own; an operator: all, or one tenant's). */
  async list(principal: RegistryPrincipal, scope: ModelScope = {}): Promise<ModelSummary[]> {
    let q = this.db
      .selectFrom('models as m')
      .innerJoin('tenants as t', 't.id', 'm.tenant_id')
      .selectAll('m')
      .select('t.name as tenant_name');
    if (principal.kind === 'tenant') {
      if (scope.tenant !== undefined && scope.tenant !== principal.tenantName) return [];
      q = q.where('m.tenant_id', '=', principal.tenantId);
    } else if (scope.tenant !== undefined) {
      q = q.where('t.name', '=', scope.tenant);
    }
    const rows = await q.orderBy('t.name').orderBy('m.name').execute();
    const out: ModelSummary[] = [];
    for (const r of rows) out.push(await summaryOf(this.db, r, r.tenant_name));
    return out;
  }

  /** A model and all its versions (oldest first). IP_MODEL_NOT_FOUND when not visible. */
  async describe(
    name: string,
    principal: RegistryPrincipal,
    scope: ModelScope = {},
  ): Promise<ModelDetail> {
    const { model, tenant } = await this.visibleModel(name, principal, scope);
    return {
      model: await summaryOf(this.db, model, tenant),
      versions: await this.versionsOf(model, tenant),
    };
  }

  /** The versions of a model, oldest first. */
  async versions(
    name: string,
    principal: RegistryPrincipal,
    scope: ModelScope = {},
  ): Promise<ModelVersion[]> {
    const { model, tenant } = await this.visibleModel(name, principal, scope);
    return this.versionsOf(model, tenant);
  }

  /** One version of a model. IP_MODEL_NOT_FOUND when the model or the version is not there. */
  async getVersion(
    name: string,
    version: string,
    principal: RegistryPrincipal,
    scope: ModelScope = {},
  ): Promise<ModelVersion> {
    const { model, tenant } = await this.visibleModel(name, principal, scope);
    const row = await this.db
      .selectFrom('model_versions')
      .selectAll()
      .where('model_id', '=', model.id)
      .where('version', '=', version)
      .executeTakeFirst();
    if (!row) {
      throw new InferplaneError('IP_MODEL_NOT_FOUND', `model ${name} has no version ${version}`);
    }
    return versionView(this.db, row, name, tenant);
  }

  /**
   * A version by tenant, name and version, without a principal: for the control plane itself
   * (the deploy controller resolving what a replica needs before fetching it into the cache).
   */
  async resolve(ref: ModelRef): Promise<ModelVersion> {
    const t = await this.db
      .selectFrom('tenants')
      .select(['id', 'name'])
      .where('name', '=', ref.tenant)
      .executeTakeFirst();
    if (!t) throw new InferplaneError('IP_TENANT_NOT_FOUND', `tenant ${ref.tenant} not found`);
    return this.getVersion(ref.name, ref.version, {
      kind: 'tenant',
      keyId: 'system',
      tenantId: t.id,
      tenantName: t.name,
    });
  }

  private async versionsOf(model: ModelTable, tenant: string): Promise<ModelVersion[]> {
    const rows = await this.db
      .selectFrom('model_versions')
      .selectAll()
      .where('model_id', '=', model.id)
      .orderBy('ordinal')
      .execute();
    const out: ModelVersion[] = [];
    for (const r of rows) out.push(await versionView(this.db, r, model.name, tenant));
    return out;
  }

  /** The tenant a register writes into: a tenant key's own; the operator's named one. */
  private async writableTenant(
    principal: RegistryPrincipal,
    named: string | undefined,
  ): Promise<{ id: string; name: string }> {
    if (principal.kind === 'tenant') {
      // Another tenant's name reads as not found, as everywhere else in the API.
      if (named !== undefined && named !== principal.tenantName) {
        throw new InferplaneError('IP_TENANT_NOT_FOUND', `tenant ${named} not found`);
      }
      return { id: principal.tenantId, name: principal.tenantName };
    }
    if (named === undefined) {
      throw new InferplaneError('IP_VALIDATION', 'an operator key must name the owning tenant', {
        details: [{ path: 'tenant', message: 'required with an operator key' }],
      });
    }
    const t = await this.db
      .selectFrom('tenants')
      .select(['id', 'name'])
      .where('name', '=', named)
      .executeTakeFirst();
    if (!t) throw new InferplaneError('IP_TENANT_NOT_FOUND', `tenant ${named} not found`);
    return t;
  }

  private async visibleModel(
    name: string,
    principal: RegistryPrincipal,
    scope: ModelScope,
  ): Promise<{ model: ModelTable; tenant: string }> {
    const notFound = (): InferplaneError =>
      new InferplaneError('IP_MODEL_NOT_FOUND', `model ${name} not found`);
    let q = this.db
      .selectFrom('models as m')
      .innerJoin('tenants as t', 't.id', 'm.tenant_id')
      .selectAll('m')
      .select('t.name as tenant_name')
      .where('m.name', '=', name);
    if (principal.kind === 'tenant') {
      if (scope.tenant !== undefined && scope.tenant !== principal.tenantName) throw notFound();
      q = q.where('m.tenant_id', '=', principal.tenantId);
    } else if (scope.tenant !== undefined) {
      q = q.where('t.name', '=', scope.tenant);
    }
    const rows = await q.orderBy('t.name').execute();
    if (rows.length === 0) throw notFound();
    if (rows.length > 1) {
      throw new InferplaneError(
        'IP_VALIDATION',
        `model ${name} exists in several tenants (${rows.map((r) => r.tenant_name).join(', ')}); name one`,
        { details: [{ path: 'tenant', message: 'required: the name is ambiguous' }] },
      );
    }
    const { tenant_name, ...model } = rows[0]!;
    return { model, tenant: tenant_name };
  }

  /** Fills in sha256/size (hashing a file:// source when needed) and the format. */
  private async completeArtifact(a: ArtifactInput, path: string): Promise<ModelArtifact> {
    const url = new URL(a.uri);
    const format = a.format ?? formatFromUri(a.uri);
    if (!format) {
      throw new InferplaneError(
        'IP_VALIDATION',
        `the format of ${a.uri} cannot be inferred from its extension; name it`,
        {
          details: [
            { path: `${path}.format`, message: 'required: gguf, safetensors, onnx or trt-engine' },
          ],
        },
      );
    }
    let sha256 = a.sha256;
    let size: number | null = a.size ?? null;
    if (url.protocol === 'file:') {
      const file = fileURLToPath(url);
      if (sha256 === undefined) {
        try {
          const h = await sha256File(file, (p) => this.opts.onHashProgress?.(a.uri, p));
          sha256 = h.sha256;
          if (size !== null && size !== h.size) {
            throw new InferplaneError(
              'IP_VALIDATION',
              `${a.uri} has ${h.size} bytes, not ${size}`,
              { details: [{ path: `${path}.size`, message: `the file has ${h.size} bytes` }] },
            );
          }
          size = h.size;
        } catch (e) {
          if (e instanceof InferplaneError) throw e;
          throw new InferplaneError(
            'IP_VALIDATION',
            `cannot read ${file} to compute its sha256 (${(e as NodeJS.ErrnoException).code ?? String(e)}); pass the sha256`,
            {
              details: [
                { path: `${path}.sha256`, message: 'required: the file is not readable here' },
              ],
            },
          );
        }
      } else if (size === null) {
        size = await stat(file).then(
          (s) => (s.isFile() ? s.size : null),
          () => null,
        );
      }
    } else if (sha256 === undefined) {
      throw new InferplaneError(
        'IP_VALIDATION',
        `an http(s) artifact needs its sha256 (${a.uri})`,
        {
          details: [{ path: `${path}.sha256`, message: 'required for http(s) URIs' }],
        },
      );
    }
    return { uri: a.uri, sha256, size, format };
  }
}

/** What differs between a registered version and a new registration (empty: the same). */
function contentDiffs(
  v: ModelVersion,
  artifacts: readonly ModelArtifact[],
  source: string | null,
  license: string | null,
): ErrorDetail[] {
  const out: ErrorDetail[] = [];
  if (v.artifacts.length !== artifacts.length) {
    out.push({
      path: 'artifacts',
      message: `registered with ${v.artifacts.length} artifact(s), not ${artifacts.length}`,
    });
  }
  artifacts.forEach((a, i) => {
    const old = v.artifacts[i];
    if (!old) return;
    for (const f of ['uri', 'sha256', 'format'] as const) {
      if (old[f] !== a[f]) {
        out.push({ path: `artifacts.${i}.${f}`, message: `registered as ${old[f]}, not ${a[f]}` });
      }
    }
    if (old.size !== null && a.size !== null && old.size !== a.size) {
      out.push({
        path: `artifacts.${i}.size`,
        message: `registered as ${old.size}, not ${a.size}`,
      });
    }
  });
  if (v.provenance.source !== source) {
    out.push({ path: 'source', message: `registered as ${String(v.provenance.source)}` });
  }
  if (v.provenance.license !== license) {
    out.push({ path: 'license', message: `registered as ${String(v.provenance.license)}` });
  }
  return out;
}

async function versionView(
  db: Kysely<Database>,
  row: ModelVersionTable,
  model: string,
  tenant: string,
): Promise<ModelVersion> {
  const arts = await db
    .selectFrom('model_artifacts')
    .selectAll()
    .where('version_id', '=', row.id)
    .orderBy('idx')
    .execute();
  return {
    model,
    tenant,
    version: row.version,
    artifacts: arts.map((a) => ({
      uri: a.uri,
      sha256: a.sha256,
      size: a.size === null ? null : Number(a.size),
      format: a.format as ArtifactFormat,
    })),
    provenance: {
      source: row.source,
      license: row.license,
      registeredBy: { keyId: row.registered_key, tenant: row.registered_tenant },
    },
    contentHash: row.content_hash,
    createdAt: row.created_at,
  };
}

async function summaryOf(
  db: Kysely<Database>,
  m: ModelTable,
  tenant: string,
): Promise<ModelSummary> {
  const agg = await db
    .selectFrom('model_versions')
    .select((eb) => [eb.fn.countAll<number>().as('n')])
    .where('model_id', '=', m.id)
    .executeTakeFirst();
  const latest = await db
    .selectFrom('model_versions')
    .select('version')
    .where('model_id', '=', m.id)
    .orderBy('ordinal', 'desc')
    .limit(1)
    .executeTakeFirst();
  return {
    name: m.name,
    tenant,
    versions: Number(agg?.n ?? 0),
    latest: latest?.version ?? null,
    createdAt: m.created_at,
    updatedAt: m.updated_at,
  };
}
