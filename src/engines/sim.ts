// The simulated engine (src/sim), run as its own process like any real engine.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import type { EngineAdapter, LaunchContext, LaunchCommand } from './types.js';

const argsSchema = z.strictObject({
  prefillTokensPerSecond: z.number().positive().optional(),
  decodeMsPerToken: z.number().positive().optional(),
  maxConcurrency: z.int().positive().optional(),
  maxModelLen: z.int().positive().optional(),
  timeScale: z.number().positive().max(100).optional(),
});

/** dist/sim/main.js beside this file when compiled; from sources (tests), the built copy. */
function simEntry(): string {
  const beside = fileURLToPath(new URL('../sim/main.js', import.meta.url));
  if (existsSync(beside)) return beside;
  return fileURLToPath(new URL('../../dist/sim/main.js', import.meta.url));
}

const FLAGS: Record<string, string> = {
  prefillTokensPerSecond: '--prefill-tps',
  decodeMsPerToken: '--decode-ms',
  maxConcurrency: '--max-concurrency',
  maxModelLen: '--max-model-len',
  timeScale: '--time-scale',
};

export const simEngine: EngineAdapter = {
  name: 'sim',
  argsSchema,
  healthPath: '/health',
  metricsPath: '/metrics',
  startTimeoutMs: 15_000,
  launch(ctx: LaunchContext): LaunchCommand {
    const args = [simEntry(), '--host', ctx.host, '--port', String(ctx.port)];
    args.push('--model', ctx.servedModelName);
    for (const [k, v] of Object.entries(ctx.args)) {
      const flag = FLAGS[k];
      if (flag !== undefined && (typeof v === 'number' || typeof v === 'string')) {
        args.push(flag, String(v));
      }
    }
    return { command: process.execPath, args, env: { INFERPLANE_PARENT_STDIN: '1' } };
  },
};
