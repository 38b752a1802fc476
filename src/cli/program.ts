// Builds the `inferplane` commander program and runs it, mapping errors to exit codes.
import { packageVersion } from '../core/version.js';
import { Command, CommanderError } from 'commander';
import { registerApply } from './commands/apply.js';
import { registerAudit } from './commands/audit.js';
import { registerBench } from './commands/bench.js';
import { registerDelete } from './commands/delete.js';
import { registerDescribe } from './commands/describe.js';
import { registerEngine } from './commands/engine.js';
import { registerGet } from './commands/get.js';
import { registerKey } from './commands/key.js';
import { registerLogs } from './commands/logs.js';
import { registerModelSynth } from './commands/model-synth.js';
import { registerModel } from './commands/model.js';
import { registerRollout } from './commands/rollout.js';
import { registerSim } from './commands/sim.js';
import { registerTenant } from './commands/tenant.js';
import { DEFAULT_URL } from './client.js';
import { formatError } from './errors.js';
import { processIo, type Io } from './output.js';
import { registerUp } from './up.js';

/** Exit status for usage errors (unknown command or option, bad argument). */
export const EXIT_USAGE = 2;

/** The package version (package.json is two levels up from both src/cli and dist/cli). */
export { packageVersion };

export function buildProgram(io: Io = processIo): Command {
  const program = new Command('inferplane');
  program
    .description(
      'Inferplane: deploy models on a shared GPU fleet and serve them behind an\n' +
        'OpenAI-compatible endpoint. This CLI talks to the control-plane API (/api/v1).',
    )
    // Only -V here: a root option is matched anywhere on the line, and `model register` has its
    // own --version; `inferplane --version` (as the first argument) is answered in run().
    .version(packageVersion(), '-V', 'print the version (also --version)')
    .option('--url <url>', `control-plane URL (env INFERPLANE_URL, default ${DEFAULT_URL})`)
    .option('--api-key <key>', 'API key sent as a bearer token (env INFERPLANE_API_KEY)')
    .showSuggestionAfterError()
    .configureOutput({
      writeOut: (s) => io.out(s),
      writeErr: (s) => io.err(s),
    })
    // Throw instead of exiting, so run() picks the exit status; subcommands inherit this.
    .exitOverride()
    .addHelpText(
      'after',
      '\nGetting started:\n' +
        '  $ inferplane up\n' +
        '  $ inferplane tenant create demo\n' +
        '  $ inferplane apply -f examples/deployment.yaml\n' +
        '  $ inferplane get deployments\n',
    );

  registerUp(program);
  registerApply(program, io);
  registerGet(program, io);
  registerDescribe(program, io);
  registerDelete(program, io);
  registerLogs(program, io);
  registerTenant(program, io);
  registerKey(program, io);
  registerSim(program, io);
  registerBench(program, io);
  registerEngine(program, io);
  registerModelSynth(program, io);
  registerModel(program, io);
  registerAudit(program, io);
  registerRollout(program, io);
  return program;
}

/**
 * Runs the CLI on `argv` (as in process.argv) and returns the exit status: 0 on success,
 * 1 on errors (printed as `error: <message> (<code>)`), 2 on usage errors.
 */
export async function run(argv: readonly string[], io: Io = processIo): Promise<number> {
  if (argv[2] === '--version') {
    io.out(`${packageVersion()}\n`);
    return 0;
  }
  const program = buildProgram(io);
  try {
    await program.parseAsync([...argv]);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander has already printed the help or the usage message.
      return err.exitCode === 0 ? 0 : EXIT_USAGE;
    }
    io.err(formatError(err));
    return 1;
  }
}
