// `inferplane key create --tenant <name>`: mint an API key (its plaintext is shown once).
import type { Command } from 'commander';
import type { CreatedKey } from '../../core/api-types.js';
import { formatJson, processIo, type Io } from '../output.js';
import { clientFor, examples } from './common.js';

interface KeyCreateOptions {
  tenant: string;
  description?: string;
  json?: boolean;
}

export function registerKey(program: Command, io: Io = processIo): void {
  const key = program
    .command('key')
    .summary('manage API keys (key create)')
    .description('manage API keys (clients send them as Authorization: Bearer <key>)')
    .addHelpText('after', examples('inferplane key create --tenant demo'));

  key
    .command('create')
    .description('create an API key for a tenant; the key is printed once and never again')
    .requiredOption('--tenant <name>', 'tenant the key belongs to')
    .option('--description <text>', 'what the key is for')
    .option('--json', 'print the raw API JSON (it includes the key)')
    .addHelpText(
      'after',
      examples(
        'inferplane key create --tenant demo --description "CI smoke tests"',
        'inferplane key create --tenant demo --json | jq -r .key',
      ),
    )
    .action(async (opts: KeyCreateOptions, cmd: Command) => {
      const body = opts.description === undefined ? {} : { description: opts.description };
      const res = await clientFor(cmd, io).request<CreatedKey>(
        'POST',
        `/tenants/${encodeURIComponent(opts.tenant)}/keys`,
        body,
      );
      if (opts.json) {
        io.out(formatJson(res));
        return;
      }
      io.out(formatCreatedKey(res, opts.tenant));
    });
}

/** The once-only display of a new key. */
export function formatCreatedKey(res: CreatedKey, tenant: string): string {
  return (
    `key ${res.prefix}… created for tenant ${res.tenant || tenant}\n` +
    `${res.key}\n` +
    'note: copy this key now; it is not shown again (only its prefix is stored for display)\n'
  );
}
