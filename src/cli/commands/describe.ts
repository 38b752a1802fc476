// `inferplane describe deployment <name>`: everything about one deployment.
import { Argument, type Command } from 'commander';
import type { DeploymentDetail } from '../../core/api-types.js';
import { formatJson, processIo, type Io } from '../output.js';
import { describeDeployment } from '../render.js';
import { clientFor, deploymentPath, examples, resourceParser } from './common.js';

interface DescribeOptions {
  json?: boolean;
}

export function registerDescribe(program: Command, io: Io = processIo): void {
  program
    .command('describe')
    .summary('show a deployment in detail')
    .description(
      'show a deployment in detail: summary, spec, replicas and recent events\n' +
        '(aliases: deployment, deploy, dep)',
    )
    .addArgument(
      new Argument('<resource>', 'deployment').argParser(resourceParser(['deployments'])),
    )
    .argument('<name>', 'deployment name')
    .option('--json', 'print the raw API JSON')
    .addHelpText(
      'after',
      examples(
        'inferplane describe deployment team-a-llama-8b',
        'inferplane describe dep team-a-llama-8b --json',
      ),
    )
    .action(async (_kind: string, name: string, opts: DescribeOptions, cmd: Command) => {
      const detail = await clientFor(cmd, io).request<DeploymentDetail>(
        'GET',
        deploymentPath(name),
      );
      io.out(opts.json ? formatJson(detail) : describeDeployment(detail, io.now()));
    });
}
