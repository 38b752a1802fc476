// `inferplane logs <deployment>`: the engine process output of one replica.
import type { Command } from 'commander';
import { processIo, type Io } from '../output.js';
import { clientFor, deploymentPath, examples, nonNegativeInt } from './common.js';

interface LogsOptions {
  replica: number;
  tail: number;
}

export function registerLogs(program: Command, io: Io = processIo): void {
  program
    .command('logs')
    .summary("print a replica's engine output")
    .description("print the engine process output of one of a deployment's replicas")
    .argument('<deployment>', 'deployment name')
    .option('-r, --replica <index>', 'replica index', nonNegativeInt, 0)
    .option('--tail <lines>', 'number of most recent lines', nonNegativeInt, 200)
    .addHelpText(
      'after',
      examples(
        'inferplane logs team-a-llama-8b',
        'inferplane logs team-a-llama-8b --replica 1 --tail 50',
      ),
    )
    .action(async (name: string, opts: LogsOptions, cmd: Command) => {
      const query = new URLSearchParams({ replica: String(opts.replica), tail: String(opts.tail) });
      const text = await clientFor(cmd, io).text(deploymentPath(name, `/logs?${query.toString()}`));
      io.out(text);
    });
}
