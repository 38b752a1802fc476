#!/usr/bin/env node
// Thin entry: the CLI is compiled to dist/ by `npm run build` (run by `npm ci` through `prepare`).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const main = fileURLToPath(new URL('../dist/cli/main.js', import.meta.url));
if (!existsSync(main)) {
  console.error('inferplane: not built yet; run `npm run build` (or `npm ci`) in the project root');
  process.exit(1);
}
await import(main);
