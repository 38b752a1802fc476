// `inferplane model register|list|versions|describe`: the model registry (/api/v1/models).
// The `model` group is shared with `model synth` (model-synth.ts): each side finds the group
// or creates it (modelGroup() here, modelCommand() there), so registration order does not matter.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { InvalidArgumentError, type Command } from 'commander';
import type {
  ListResponse,
  ModelDetail,
  ModelSummary,
  ModelVersion,
  RegisterVersionResponse,
} from '../../core/api-types.js';
import {
  ARTIFACT_FORMATS,
  ModelVersionLabelSchema,
  Sha256Schema,
  type ArtifactFormat,
} from '../../core/schemas.js';
import {
  formatAge,
  formatFields,
  formatJson,
  formatTable,
  processIo,
  truncate,
  type Io,
} from '../output.js';
import { clientFor, examples } from './common.js';

interface RegisterOptions {
  version: string;
  uri: string;
  sha256?: string;
  format?: ArtifactFormat;
  source?: string;
  license?: string;
  tenant?: string;
  reason?: string;
  json?: boolean;
}

interface ReadOptions {
  tenant?: string;
  json?: boolean;
}

interface DescribeOptions extends ReadOptions {
  version?: string;
}

/** Files at least this big get a progress line while they are hashed. */
const PROGRESS_MIN_BYTES = 64 * 1024 * 1024;

function sha256Arg(v: string): string {
  const s = v
    .trim()
    .toLowerCase()
    .replace(/^sha256:/, '');
  if (!Sha256Schema.safeParse(s).success) {
    throw new InvalidArgumentError('expected 64 hex digits (sha256)');
  }
  return s;
}

function formatArg(v: string): ArtifactFormat {
  const f = ARTIFACT_FORMATS.find((x) => x === v.trim().toLowerCase());
  if (!f) throw new InvalidArgumentError(`expected one of: ${ARTIFACT_FORMATS.join(', ')}`);
  return f;
}

function versionArg(v: string): string {
  const r = ModelVersionLabelSchema.safeParse(v);
  if (!r.success) throw new InvalidArgumentError(r.error.issues[0]?.message ?? 'invalid version');
  return v;
}

/** Accepts file:///abs, http(s)://..., or a plain local path (made into a file:// URI). */
export function uriArg(v: string): string {
  const s = v.trim();
  if (/^(https?:\/\/|file:\/\/\/)/.test(s)) return s;
  if (/^[a-z][a-z0-9+.-]*:/i.test(s) && !/^[a-z]:[\\/]/i.test(s)) {
    throw new InvalidArgumentError('expected a file:/// URI, an http(s):// URL or a local path');
  }
  return new URL(`file://${resolvePath(s)}`).href;
}

function resolvePath(p: string): string {
  return p.startsWith('/') ? p : `${process.cwd()}/${p}`;
}

/** 1536 → 1.5 KiB. */
export function formatBytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return '-';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${Number(v.toFixed(1))} ${units[i]}`;
}

/**
 * sha256 and size of a local file, with a progress line on stderr for big files (a redrawn
 * line on a TTY, a line per 10% otherwise). undefined when the file is not readable here.
 */
export async function hashLocalFile(
  path: string,
  io: Io,
): Promise<{ sha256: string; size: number } | undefined> {
  let size: number;
  try {
    const s = await stat(path);
    if (!s.isFile()) return undefined;
    size = s.size;
  } catch {
    return undefined;
  }
  const tty = io === processIo && process.stderr.isTTY === true;
  const show = size >= PROGRESS_MIN_BYTES;
  const hash = createHash('sha256');
  let done = 0;
  let lastTenth = 0;
  let lastDraw = 0;
  for await (const chunk of createReadStream(path, {
    highWaterMark: 1 << 20,
  }) as AsyncIterable<Buffer>) {
    hash.update(chunk);
    done += chunk.length;
    if (!show) continue;
    const pct = size === 0 ? 100 : Math.floor((done / size) * 100);
    if (tty) {
      const now = Date.now();
      if (now - lastDraw >= 200 || done === size) {
        lastDraw = now;
        io.err(`\r\u001b[2Khashing ${path}: ${pct}% (${formatBytes(done)} / ${formatBytes(size)})`);
      }
    } else if (Math.floor(pct / 10) > lastTenth || done === size) {
      lastTenth = Math.floor(pct / 10);
      io.err(`hashing ${path}: ${pct}% (${formatBytes(done)} / ${formatBytes(size)})\n`);
    }
  }
  if (show && tty) io.err('\n');
  return { sha256: hash.digest('hex'), size: done };
}

function tenantQuery(tenant: string | undefined): string {
  return tenant ? `?tenant=${encodeURIComponent(tenant)}` : '';
}

function modelPath(name: string, suffix = ''): string {
  return `/models/${encodeURIComponent(name)}${suffix}`;
}

export function modelsTable(items: readonly ModelSummary[], now: Date): string {
  return formatTable(
    ['NAME', 'TENANT', 'VERSIONS', 'LATEST', 'AGE'],
    items.map((m) => [
      m.name,
      m.tenant,
      String(m.versions),
      m.latest ?? '-',
      formatAge(m.createdAt, now),
    ]),
  );
}

export function versionsTable(items: readonly ModelVersion[], now: Date): string {
  return formatTable(
    ['VERSION', 'FORMAT', 'SIZE', 'SHA256', 'SOURCE', 'LICENSE', 'AGE'],
    items.map((v) => [
      v.version,
      [...new Set(v.artifacts.map((a) => a.format))].join(','),
      formatBytes(
        v.artifacts.some((a) => a.size === null)
          ? null
          : v.artifacts.reduce((s, a) => s + (a.size ?? 0), 0),
      ),
      v.artifacts.length === 1
        ? (v.artifacts[0]?.sha256.slice(0, 12) ?? '-')
        : `${v.artifacts.length} files`,
      truncate(v.provenance.source ?? '-', 40),
      v.provenance.license ?? '-',
      formatAge(v.createdAt, now),
    ]),
  );
}

export function versionFields(v: ModelVersion): string {
  const fields: Array<[string, string]> = [
    ['Model', v.model],
    ['Tenant', v.tenant],
    ['Version', v.version],
    ['Created', v.createdAt],
    ['Source', v.provenance.source ?? '-'],
    ['License', v.provenance.license ?? '-'],
    [
      'Registered by',
      `${v.provenance.registeredBy.keyId}${v.provenance.registeredBy.tenant ? ` (tenant ${v.provenance.registeredBy.tenant})` : ' (operator)'}`,
    ],
    ['Content hash', v.contentHash],
  ];
  v.artifacts.forEach((a, i) => {
    const label = v.artifacts.length === 1 ? 'Artifact' : `Artifact ${i}`;
    fields.push([label, a.uri]);
    fields.push(['  Format', a.format]);
    fields.push(['  Size', a.size === null ? '-' : `${formatBytes(a.size)} (${a.size} bytes)`]);
    fields.push(['  SHA256', a.sha256]);
  });
  return formatFields(fields);
}

/**
 * The `model` command group: the existing one (e.g. created by `model synth`), or a new one.
 * Same contract as modelCommand() in model-synth.ts, so registration order does not matter.
 */
export function modelGroup(program: Command): Command {
  return (
    program.commands.find((c) => c.name() === 'model') ??
    program
      .command('model')
      .summary('work with models (register, list, versions, describe, synth)')
      .description('work with models: the model registry, and synthetic GGUF models for tests')
  );
}

export function registerModel(program: Command, io: Io = processIo): Command {
  const model = modelGroup(program);
  model.addHelpText(
    'after',
    examples(
      'inferplane model register llama-3.1-8b --version 1 --uri file:///models/llama.gguf',
      'inferplane model list',
      'inferplane model versions llama-3.1-8b',
      'inferplane model describe llama-3.1-8b --version 1',
    ),
  );

  model
    .command('register')
    .description(
      'register an immutable model version (the model is created with its first version);\n' +
        'without --sha256, a local file is hashed here (with progress for big files); the same\n' +
        'content again is a no-op, different content under the same version is rejected (409)',
    )
    .argument('<name>', 'model name, e.g. llama-3.1-8b')
    .requiredOption('--version <v>', 'version label, e.g. 1 or 2025-06-01', versionArg)
    .requiredOption('--uri <uri>', 'file:///abs/path, http(s)://... or a local path', uriArg)
    .option('--sha256 <hex>', 'sha256 of the bytes (required for http(s) URIs)', sha256Arg)
    .option(
      '--format <f>',
      `${ARTIFACT_FORMATS.join('|')} (default: from the extension)`,
      formatArg,
    )
    .option('--source <text>', 'provenance: where the model came from')
    .option('--license <id>', 'license, e.g. apache-2.0')
    .option('--tenant <name>', 'owning tenant (required with an operator key)')
    .option('--reason <text>', 'why (kept in the audit log)')
    .option('--json', 'print the raw API JSON')
    .addHelpText(
      'after',
      examples(
        'inferplane model register tiny --version 1 --uri ./tiny.gguf',
        'inferplane model register llama-3.1-8b --version 1 --tenant team-a \\',
        '#   --uri https://example.com/llama.gguf --sha256 <hex> --license llama3.1',
      ),
    )
    .action(async (name: string, opts: RegisterOptions, cmd: Command) => {
      const artifact: Record<string, unknown> = { uri: opts.uri };
      if (opts.sha256) artifact.sha256 = opts.sha256;
      else if (opts.uri.startsWith('file:')) {
        const local = await hashLocalFile(fileURLToPath(opts.uri), io);
        // Not readable here: the control plane hashes it (it must be readable there).
        if (local) Object.assign(artifact, local);
      }
      if (opts.format) artifact.format = opts.format;
      const body = {
        version: opts.version,
        artifacts: [artifact],
        ...(opts.tenant ? { tenant: opts.tenant } : {}),
        ...(opts.source ? { source: opts.source } : {}),
        ...(opts.license ? { license: opts.license } : {}),
        ...(opts.reason ? { reason: opts.reason } : {}),
      };
      const res = await clientFor(cmd, io).request<RegisterVersionResponse>(
        'POST',
        modelPath(name, '/versions'),
        body,
      );
      if (opts.json) {
        io.out(formatJson(res));
        return;
      }
      const a = res.version.artifacts[0];
      const what = a
        ? ` (${a.format}, ${formatBytes(a.size)}, sha256 ${a.sha256.slice(0, 12)})`
        : '';
      io.out(
        res.result === 'created'
          ? `model/${res.model.name} version ${res.version.version} registered${what}\n`
          : `model/${res.model.name} version ${res.version.version} unchanged (already registered with the same content)\n`,
      );
    });

  model
    .command('list')
    .description('list registered models (a tenant key sees its own)')
    .option('--tenant <name>', "only this tenant's models (operator)")
    .option('--json', 'print the raw API JSON')
    .action(async (opts: ReadOptions, cmd: Command) => {
      const res = await clientFor(cmd, io).request<ListResponse<ModelSummary>>(
        'GET',
        `/models${tenantQuery(opts.tenant)}`,
      );
      if (opts.json) {
        io.out(formatJson(res));
        return;
      }
      if (res.items.length === 0) {
        io.out('No models registered.\n');
        return;
      }
      io.out(modelsTable(res.items, io.now()));
    });

  model
    .command('versions')
    .description("a model's versions, oldest first")
    .argument('<name>', 'model name')
    .option('--tenant <name>', 'owning tenant (operator, when the name is ambiguous)')
    .option('--json', 'print the raw API JSON')
    .action(async (name: string, opts: ReadOptions, cmd: Command) => {
      const res = await clientFor(cmd, io).request<ListResponse<ModelVersion>>(
        'GET',
        modelPath(name, `/versions${tenantQuery(opts.tenant)}`),
      );
      if (opts.json) {
        io.out(formatJson(res));
        return;
      }
      io.out(versionsTable(res.items, io.now()));
    });

  model
    .command('describe')
    .description('a model and its versions, or one version with --version')
    .argument('<name>', 'model name')
    .option('--version <v>', 'one version: its artifacts and provenance')
    .option('--tenant <name>', 'owning tenant (operator, when the name is ambiguous)')
    .option('--json', 'print the raw API JSON')
    .action(async (name: string, opts: DescribeOptions, cmd: Command) => {
      const client = clientFor(cmd, io);
      const q = tenantQuery(opts.tenant);
      if (opts.version !== undefined) {
        const res = await client.request<{ version: ModelVersion }>(
          'GET',
          modelPath(name, `/versions/${encodeURIComponent(opts.version)}${q}`),
        );
        io.out(opts.json ? formatJson(res) : versionFields(res.version));
        return;
      }
      const res = await client.request<ModelDetail>('GET', modelPath(name, q));
      if (opts.json) {
        io.out(formatJson(res));
        return;
      }
      const m = res.model;
      io.out(
        formatFields([
          ['Name', m.name],
          ['Tenant', m.tenant],
          ['Versions', String(m.versions)],
          ['Latest', m.latest ?? '-'],
          ['Created', m.createdAt],
          ['Updated', m.updatedAt],
        ]),
      );
      if (res.versions.length > 0) io.out('\n' + versionsTable(res.versions, io.now()));
    });
  return model;
}
