// `inferplane apply -f <file>`: create or update deployments from YAML specs.
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import type { ApplyResponse } from '../../core/api-types.js';
import { ApiError } from '../client.js';
import { CliError, formatError } from '../errors.js';
import { formatManifestIssue, parseDeploymentManifest } from '../manifest.js';
import { formatJson, processIo, type Io } from '../output.js';
import { clientFor, deploymentPath, examples } from './common.js';

interface ApplyOptions {
  filename: string;
  json?: boolean;
}

export function registerApply(program: Command, io: Io = processIo): void {
  program
    .command('apply')
    .summary('create or update deployments from a YAML file')
    .description(
      'create or update deployments from YAML specs (several specs may share a file, ' +
        'separated by ---); each spec is sent whole and the server answers created, ' +
        'updated or unchanged, so applying the same file twice is safe',
    )
    .requiredOption(
      '-f, --filename <file>',
      'YAML file with one or more deployment specs (- for stdin)',
    )
    .option('--json', 'print the API results as JSON')
    .addHelpText(
      'after',
      examples(
        'inferplane apply -f examples/deployment.yaml',
        'cat specs.yaml | inferplane apply -f -',
      ),
    )
    .action(async (opts: ApplyOptions, cmd: Command) => {
      await apply(opts, cmd, io);
    });
}

async function apply(opts: ApplyOptions, cmd: Command, io: Io): Promise<void> {
  const source = opts.filename === '-' ? '<stdin>' : opts.filename;
  const text = await readInput(opts.filename, io);
  const parsed = parseDeploymentManifest(text);
  if (parsed.issues.length > 0) {
    const n = parsed.issues.length;
    throw new CliError(
      'IP_CLI_INVALID_SPEC',
      `${source}: ${n} problem${n === 1 ? '' : 's'} found; nothing was applied`,
      parsed.issues.map((issue) => ({ path: '', message: formatManifestIssue(source, issue) })),
    );
  }

  const client = clientFor(cmd, io);
  const results: ApplyResponse[] = [];
  let failed = 0;
  const single = parsed.documents.length === 1;
  for (const doc of parsed.documents) {
    let res: ApplyResponse;
    try {
      res = await client.request<ApplyResponse>('PUT', deploymentPath(doc.name), doc.spec);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      const perDocument =
        err.status >= 400 && err.status < 500 && err.status !== 401 && err.status !== 403;
      const named = new ApiError(
        err.code,
        `deployment/${doc.name}: ${err.message}`,
        err.status,
        err.details,
      );
      // Problems with one spec: report it and go on with the others; anything else stops.
      if (single || !perDocument) throw named;
      io.err(formatError(named));
      failed++;
      continue;
    }
    results.push(res);
    if (!opts.json) io.out(`deployment/${res.deployment?.name ?? doc.name} ${res.result}\n`);
  }
  if (opts.json) io.out(formatJson(results));
  if (failed > 0) {
    throw new CliError(
      'IP_CLI_APPLY_FAILED',
      `${failed} of ${parsed.documents.length} deployments failed to apply`,
    );
  }
}

async function readInput(file: string, io: Io): Promise<string> {
  if (file === '-') return io.readStdin();
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT'
        ? 'no such file'
        : code === 'EISDIR'
          ? 'it is a directory'
          : code === 'EACCES'
            ? 'permission denied'
            : err instanceof Error
              ? err.message
              : String(err);
    throw new CliError('IP_CLI_FILE', `cannot read ${file}: ${why}`);
  }
}
