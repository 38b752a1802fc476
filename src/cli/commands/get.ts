// `inferplane get deployments|tenants|nodes [name]`: list resources as a table or JSON.
import { Argument, type Command } from 'commander';
import type {
  DeploymentSummary,
  ListResponse,
  NodeSummary,
  TenantSummary,
} from '../../core/api-types.js';
import { CliError } from '../errors.js';
import { formatJson, processIo, type Io } from '../output.js';
import { deploymentsTable, nodesTable } from '../render.js';
import { clientFor, examples, resourceParser, SINGULAR, type ResourceKind } from './common.js';
import { tenantsTable } from './tenant.js';

interface GetOptions {
  json?: boolean;
}

export function registerGet(program: Command, io: Io = processIo): void {
  program
    .command('get')
    .summary('list deployments, tenants or nodes')
    .description(
      'list deployments, tenants or nodes\n' + '(aliases: deployment, deploy, dep; tenant; node)',
    )
    .addArgument(
      new Argument('<resource>', 'deployments | tenants | nodes').argParser(
        resourceParser(['deployments', 'tenants', 'nodes']),
      ),
    )
    .argument('[name]', 'show only the resource with this name')
    .option('--json', 'print the raw API JSON')
    .addHelpText(
      'after',
      examples(
        'inferplane get deployments',
        'inferplane get dep team-a-llama-8b',
        "inferplane get tenants              # with each tenant's gateway LIMITS",
        'inferplane get nodes --json',
      ),
    )
    .action(
      async (kind: ResourceKind, name: string | undefined, opts: GetOptions, cmd: Command) => {
        const client = clientFor(cmd, io);
        const now = io.now();
        switch (kind) {
          case 'deployments': {
            const res = await client.request<ListResponse<DeploymentSummary>>(
              'GET',
              '/deployments',
            );
            const list = pick(res, kind, name);
            if (!emitted(list, opts, io, kind)) io.out(deploymentsTable(list.items, now));
            break;
          }
          case 'tenants': {
            const res = await client.request<ListResponse<TenantSummary>>('GET', '/tenants');
            const list = pick(res, kind, name);
            if (!emitted(list, opts, io, kind)) io.out(tenantsTable(list.items, now));
            break;
          }
          case 'nodes': {
            const res = await client.request<ListResponse<NodeSummary>>('GET', '/nodes');
            const list = pick(res, kind, name);
            if (!emitted(list, opts, io, kind)) io.out(nodesTable(list.items));
            break;
          }
        }
      },
    );
}

/** The whole list, or only the item called `name` (an error if there is none). */
function pick<T extends { name: string }>(
  res: ListResponse<T>,
  kind: ResourceKind,
  name: string | undefined,
): ListResponse<T> {
  const items = Array.isArray(res?.items) ? res.items : [];
  if (name === undefined) return { ...res, items };
  const found = items.filter((i) => i.name === name);
  if (found.length === 0) {
    throw new CliError('IP_CLI_NOT_FOUND', `${SINGULAR[kind]} "${name}" not found`);
  }
  return { ...res, items: found };
}

/** Prints JSON or the "nothing found" note; false when the caller should print the table. */
function emitted(
  list: ListResponse<unknown>,
  opts: GetOptions,
  io: Io,
  kind: ResourceKind,
): boolean {
  if (opts.json) {
    io.out(formatJson(list));
    return true;
  }
  if (list.items.length === 0) {
    io.err(`No ${kind} found.\n`);
    return true;
  }
  return false;
}
