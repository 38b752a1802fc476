// Helpers shared by the command groups.
import { InvalidArgumentError, type Command } from 'commander';
import { ApiClient, resolveConnection } from '../client.js';
import type { Io } from '../output.js';

export type ResourceKind = 'deployments' | 'tenants' | 'nodes';

const RESOURCE_ALIASES: Record<string, ResourceKind> = {
  deployments: 'deployments',
  deployment: 'deployments',
  deploys: 'deployments',
  deploy: 'deployments',
  deps: 'deployments',
  dep: 'deployments',
  tenants: 'tenants',
  tenant: 'tenants',
  nodes: 'nodes',
  node: 'nodes',
};

/** Singular name used in `kind/name` output. */
export const SINGULAR: Record<ResourceKind, string> = {
  deployments: 'deployment',
  tenants: 'tenant',
  nodes: 'node',
};

/** Maps `deployment`, `deploy`, `dep`, ... to a resource kind; undefined when unknown. */
export function normalizeResource(word: string): ResourceKind | undefined {
  return RESOURCE_ALIASES[word.toLowerCase()];
}

/** Commander argument parser for a resource kind limited to `allowed`. */
export function resourceParser(allowed: readonly ResourceKind[]): (word: string) => ResourceKind {
  return (word) => {
    const kind = normalizeResource(word);
    if (kind === undefined || !allowed.includes(kind)) {
      const names = allowed.join(', ');
      throw new InvalidArgumentError(
        kind === undefined
          ? `unknown resource type "${word}"; expected one of: ${names}`
          : `"${word}" is not supported here; expected one of: ${names}`,
      );
    }
    return kind;
  };
}

/** Commander option parser for a non-negative integer. */
export function nonNegativeInt(value: string): number {
  if (!/^\d+$/.test(value.trim())) {
    throw new InvalidArgumentError('expected a non-negative integer');
  }
  return Number.parseInt(value, 10);
}

interface GlobalOptions {
  url?: string;
  apiKey?: string;
}

/** An API client for `--url`/`--api-key` (root options), else INFERPLANE_URL/INFERPLANE_API_KEY. */
export function clientFor(cmd: Command, io: Io): ApiClient {
  const flags = cmd.optsWithGlobals<GlobalOptions>();
  return new ApiClient(resolveConnection(flags, io.env));
}

/** `/deployments/<name>` with the name escaped. */
export function deploymentPath(name: string, suffix = ''): string {
  return `/deployments/${encodeURIComponent(name)}${suffix}`;
}

/** Help text listing examples, appended after the options. */
export function examples(...lines: string[]): string {
  return (
    '\nExamples:\n' +
    lines.map((l) => (l.startsWith('#') ? `  ${l}` : `  $ ${l}`)).join('\n') +
    '\n'
  );
}
