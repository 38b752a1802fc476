// `inferplane tenant create <name>`.
import type { Command } from 'commander';
import type { Tenant } from '../../core/api-types.js';
import { formatJson, processIo, type Io } from '../output.js';
import { clientFor, examples } from './common.js';

interface TenantCreateOptions {
  json?: boolean;
}

export function registerTenant(program: Command, io: Io = processIo): void {
  const tenant = program
    .command('tenant')
    .summary('manage tenants (tenant create)')
    .description('manage tenants (the teams that own deployments and API keys)')
    .addHelpText('after', examples('inferplane tenant create demo', 'inferplane get tenants'));

  tenant
    .command('create')
    .description('create a tenant')
    .argument('<name>', 'tenant name')
    .option('--json', 'print the raw API JSON')
    .addHelpText(
      'after',
      examples('inferplane tenant create demo', 'inferplane key create --tenant demo'),
    )
    .action(async (name: string, opts: TenantCreateOptions, cmd: Command) => {
      const res = await clientFor(cmd, io).request<{ tenant: Tenant }>('POST', '/tenants', {
        name,
      });
      io.out(opts.json ? formatJson(res) : `tenant/${res.tenant?.name ?? name} created\n`);
    });
}
