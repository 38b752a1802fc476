import { readFileSync } from 'node:fs';

let cached: string | undefined;

/** The package version (package.json two folders up from src/core or dist/core). */
export function packageVersion(): string {
  if (cached === undefined) {
    const pkg = JSON.parse(
      readFileSync(new URL('../../package.json', import.meta.url), 'utf8'),
    ) as { version?: string };
    cached = pkg.version ?? '0.0.0';
  }
  return cached;
}
