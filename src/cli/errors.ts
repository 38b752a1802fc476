// Errors the CLI reports as `error: <message> (<code>)` and exit status 1.
import { InferplaneError } from '../core/errors.js';

/** One bad field, as reported by the server in `error.details`. */
export interface ErrorDetail {
  path: string;
  message: string;
}

/** An error raised by the CLI itself (bad input file, bad flag value, ...). */
export class CliError extends Error {
  readonly code: string;
  readonly details: ErrorDetail[];

  constructor(code: string, message: string, details: ErrorDetail[] = []) {
    super(message);
    this.name = 'CliError';
    this.code = code;
    this.details = details;
  }
}

/** Renders an error the way the CLI prints it: the headline, then one line per bad field. */
export function formatError(err: unknown): string {
  if (err instanceof CliError || err instanceof InferplaneError) {
    const lines = [`error: ${err.message} (${err.code})`];
    for (const d of err.details ?? []) lines.push(`  ${d.path ? `${d.path}: ` : ''}${d.message}`);
    return lines.join('\n') + '\n';
  }
  const message = err instanceof Error ? err.message : String(err);
  return `error: ${message} (IP_CLI_INTERNAL)\n`;
}
