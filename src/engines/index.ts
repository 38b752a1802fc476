import { InferplaneError } from '../core/errors.js';
import { parseOrThrow } from '../core/schemas.js';
import { llamaCppEngine } from './llamacpp.js';
import { simEngine } from './sim.js';
import type { EngineAdapter } from './types.js';

export type { EngineAdapter, LaunchCommand, LaunchContext } from './types.js';

const adapters = new Map<string, EngineAdapter>([
  [simEngine.name, simEngine],
  [llamaCppEngine.name, llamaCppEngine],
]);

export function engineNames(): string[] {
  return [...adapters.keys()];
}

export function getEngine(name: string): EngineAdapter {
  const a = adapters.get(name);
  if (!a) {
    throw new InferplaneError(
      'IP_VALIDATION',
      `unknown engine ${name} (available: ${engineNames().join(', ')})`,
      { details: [{ path: 'engine.name', message: `unknown engine ${name}` }] },
    );
  }
  return a;
}

/** Validates a deployment's engine block; returns the adapter and its parsed args. */
export function resolveEngine(
  name: string,
  args: unknown,
): { adapter: EngineAdapter; args: Record<string, unknown> } {
  const adapter = getEngine(name);
  return { adapter, args: parseOrThrow(adapter.argsSchema, args, 'engine args', 'engine.args') };
}

/** Refuses a model or GPU type the engine cannot serve, naming the field. */
export function checkEngineModel(adapter: EngineAdapter, model: string, gpuType: string): void {
  const bad = adapter.checkModel?.(model, gpuType);
  if (bad) {
    throw new InferplaneError('IP_VALIDATION', `invalid deployment spec: ${bad.message}`, {
      details: [bad],
    });
  }
}
