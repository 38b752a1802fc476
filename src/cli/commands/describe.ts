// `inferplane describe deployment|tenant <name>`: everything about one deployment or tenant.
import { Argument, type Command } from 'commander';
import type { DeploymentDetail, TenantView } from '../../core/api-types.js';
import { formatJson, processIo, type Io } from '../output.js';
import { describeDeployment } from '../render.js';
import {
  clientFor,
  deploymentPath,
  examples,
  resourceParser,
  type ResourceKind,
} from './common.js';
import { describeTenant } from './tenant.js';

interface DescribeOptions {
  json?: boolean;
}

export function registerDescribe(program: Command, io: Io = processIo): void {
  program
    .command('describe')
    .summary('show a deployment or tenant in detail')
    .description(
      'show a deployment in detail (summary, spec, replicas and recent events), or a tenant\n' +
        '(limits, policy, and each quota with its use and limit)\n' +
        '(aliases: deployment, deploy, dep; tenant)',
    )
    .addArgument(
      new Argument('<resource>', 'deployment | tenant').argParser(
        resourceParser(['deployments', 'tenants']),
      ),
    )
    .argument('<name>', 'deployment or tenant name')
    .option('--json', 'print the raw API JSON')
    .addHelpText(
      'after',
      examples(
        'inferplane describe deployment team-a-llama-8b',
        'inferplane describe dep team-a-llama-8b --json',
        'inferplane describe tenant team-a        # quotas: used / limit',
      ),
    )
    .action(async (kind: ResourceKind, name: string, opts: DescribeOptions, cmd: Command) => {
      const client = clientFor(cmd, io);
      if (kind === 'tenants') {
        const view = await client.request<TenantView>(
          'GET',
          `/tenants/${encodeURIComponent(name)}`,
        );
        io.out(opts.json ? formatJson(view) : describeTenant(view, io.now()));
        return;
      }
      const detail = await client.request<DeploymentDetail>('GET', deploymentPath(name));
      io.out(opts.json ? formatJson(detail) : describeDeployment(detail, io.now()));
    });
}
