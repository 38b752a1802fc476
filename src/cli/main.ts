// Entry point of the `inferplane` CLI (bin/inferplane.js imports the compiled dist/cli/main.js).
import { run } from './program.js';

process.exitCode = await run(process.argv);
