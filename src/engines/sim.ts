// The simulated engine (src/sim), run as its own process like any real engine. The deployment's
// `model` picks the sim's model profile, `resources.gpuType` its GPU profile and
// `resources.gpus` its tensor-parallel degree.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import {
  CALIBRATIONS,
  GPUS,
  MODELS,
  findCalibration,
  findGpu,
  findModel,
} from '../sim/profiles.js';
import type { EngineAdapter, LaunchContext, LaunchCommand } from './types.js';

const argsSchema = z.strictObject({
  dtype: z.enum(['bf16', 'f16', 'fp8']).optional(),
  calibration: z
    .string()
    .refine((c) => findCalibration(c) !== undefined, {
      message: `unknown calibration (known: ${Object.keys(CALIBRATIONS).join(', ')})`,
    })
    .optional(),
  maxNumSeqs: z.int().positive().optional(),
  maxNumBatchedTokens: z.int().positive().optional(),
  gpuMemoryUtilization: z.number().gt(0).max(1).optional(),
  numGpuBlocksOverride: z.int().positive().optional(),
  enablePrefixCaching: z.boolean().optional(),
  maxModelLen: z.int().positive().optional(),
  timeScale: z.number().positive().max(100).optional(),
  seed: z.int().nonnegative().optional(),
});

/** dist/sim/main.js beside this file when compiled; from sources (tests), the built copy. */
function simEntry(): string {
  const beside = fileURLToPath(new URL('../sim/main.js', import.meta.url));
  if (existsSync(beside)) return beside;
  return fileURLToPath(new URL('../../dist/sim/main.js', import.meta.url));
}

const FLAGS: Record<string, string> = {
  dtype: '--dtype',
  calibration: '--calibration',
  maxNumSeqs: '--max-num-seqs',
  maxNumBatchedTokens: '--max-num-batched-tokens',
  gpuMemoryUtilization: '--gpu-memory-utilization',
  numGpuBlocksOverride: '--num-gpu-blocks-override',
  maxModelLen: '--max-model-len',
  timeScale: '--time-scale',
  seed: '--seed',
};

export const simEngine: EngineAdapter = {
  name: 'sim',
  argsSchema,
  healthPath: '/health',
  metricsPath: '/metrics',
  startTimeoutMs: 15_000,
  checkModel(model: string, gpuType: string): { path: string; message: string } | undefined {
    if (!findModel(model)) {
      return {
        path: 'model',
        message: `the sim engine has no profile for model ${model} (known: ${Object.keys(MODELS).join(', ')})`,
      };
    }
    if (!findGpu(gpuType)) {
      return {
        path: 'resources.gpuType',
        message: `the sim engine has no profile for GPU ${gpuType} (known: ${Object.keys(GPUS).join(', ')})`,
      };
    }
    return undefined;
  },
  launch(ctx: LaunchContext): LaunchCommand {
    const args = [simEntry(), '--host', ctx.host, '--port', String(ctx.port)];
    args.push('--model', ctx.model, '--served-model-name', ctx.servedModelName);
    args.push('--gpu', ctx.gpuType, '--tp', String(Math.max(1, ctx.gpus.length)));
    args.push('--replica-index', String(ctx.replicaIndex));
    if (ctx.gpus.length > 0) args.push('--gpu-indices', ctx.gpus.join(','));
    for (const [k, v] of Object.entries(ctx.args)) {
      if (k === 'enablePrefixCaching') {
        if (v === false) args.push('--no-enable-prefix-caching');
        continue;
      }
      const flag = FLAGS[k];
      if (flag !== undefined && (typeof v === 'number' || typeof v === 'string')) {
        args.push(flag, String(v));
      }
    }
    return { command: process.execPath, args, env: { INFERPLANE_PARENT_STDIN: '1' } };
  },
};
