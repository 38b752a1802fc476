// `inferplane up` options → defaults → validated, frozen config, in one place.
import { resolve } from 'node:path';
import { z } from 'zod';
import { parseOrThrow } from '../core/schemas.js';

export const UpOptionsSchema = z.strictObject({
  port: z.int().min(0).max(65535).default(8080),
  host: z.string().min(1).default('127.0.0.1'),
  stateDir: z.string().min(1).default('.inferplane'),
  gpus: z.int().min(0).max(1024).default(8),
  gpuType: z.string().default('H100-80GB'),
  nodeName: z.string().min(1).optional(),
  demo: z.boolean().default(true),
  adminKey: z.string().min(16).optional(),
  rotateAdminKey: z.boolean().default(false),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** Seconds `up` waits for the demo replicas before printing the ready banner. */
  readyTimeoutS: z.number().positive().default(60),
});

export type UpOptions = z.input<typeof UpOptionsSchema>;
export type PlatformConfig = Readonly<z.infer<typeof UpOptionsSchema> & { stateDir: string }>;

export function resolveConfig(opts: UpOptions): PlatformConfig {
  const parsed = parseOrThrow(UpOptionsSchema, opts, 'options');
  return Object.freeze({ ...parsed, stateDir: resolve(parsed.stateDir) });
}
