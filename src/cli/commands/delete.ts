// `inferplane delete deployment <name>`.
import { Argument, type Command } from 'commander';
import { processIo, type Io } from '../output.js';
import { clientFor, deploymentPath, examples, resourceParser } from './common.js';

export function registerDelete(program: Command, io: Io = processIo): void {
  program
    .command('delete')
    .summary('delete a deployment')
    .description(
      'delete a deployment: its replicas are stopped and its GPUs freed\n' +
        '(aliases: deployment, deploy, dep)',
    )
    .addArgument(
      new Argument('<resource>', 'deployment').argParser(resourceParser(['deployments'])),
    )
    .argument('<name>', 'deployment name')
    .addHelpText('after', examples('inferplane delete deployment team-a-llama-8b'))
    .action(async (_kind: string, name: string, _opts: unknown, cmd: Command) => {
      const res = await clientFor(cmd, io).request<{ deleted?: string } | undefined>(
        'DELETE',
        deploymentPath(name),
      );
      io.out(`deployment/${res?.deleted ?? name} deleted\n`);
    });
}
