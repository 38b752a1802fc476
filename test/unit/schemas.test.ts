import { describe, expect, it } from 'vitest';
import { InferplaneError } from '../../src/core/errors.js';
import { DeploymentSpecSchema, parseOrThrow } from '../../src/core/schemas.js';

const good = {
  name: 'team-a-llama',
  tenant: 'team-a',
  model: 'llama-3.1-8b',
  engine: { name: 'sim' },
  replicas: 2,
  resources: { gpus: 1, gpuType: 'H100-80GB' },
};

function details(input: unknown): string[] {
  try {
    parseOrThrow(DeploymentSpecSchema, input, 'deployment spec');
  } catch (e) {
    if (!(e instanceof InferplaneError)) throw e;
    expect(e.code).toBe('IP_VALIDATION');
    expect(e.status).toBe(400);
    return (e.details ?? []).map((d) => d.path);
  }
  throw new Error('expected a validation error');
}

describe('DeploymentSpecSchema', () => {
  it('accepts a valid spec and defaults engine args', () => {
    const spec = parseOrThrow(DeploymentSpecSchema, good, 'spec');
    expect(spec.engine.args).toEqual({});
  });

  it('reports the path of every bad field', () => {
    const paths = details({
      ...good,
      name: 'Not_A_Name',
      replicas: 1.5,
      engine: { name: '', args: { x: [1] } },
      resources: { gpus: -1 },
    });
    expect(paths).toEqual(
      expect.arrayContaining([
        'name',
        'replicas',
        'engine.name',
        'engine.args.x',
        'resources.gpus',
        'resources.gpuType',
      ]),
    );
  });

  it('accepts an optional routing policy with weights, strictly', () => {
    const spec = parseOrThrow(
      DeploymentSpecSchema,
      { ...good, routing: { policy: 'prefix-aware', weights: { prefix: 3 } } },
      'spec',
    );
    expect(spec.routing).toEqual({ policy: 'prefix-aware', weights: { prefix: 3 } });
    expect(parseOrThrow(DeploymentSpecSchema, good, 'spec').routing).toBeUndefined();
    expect(details({ ...good, routing: { policy: 'random' } })).toEqual(['routing.policy']);
    expect(details({ ...good, routing: { weights: { prefx: 1 } } })).toEqual(['routing.weights']);
    expect(details({ ...good, routing: { weights: { kv: -1 } } })).toEqual(['routing.weights.kv']);
  });

  it('rejects unknown fields, so typos do not pass silently', () => {
    expect(details({ ...good, replica: 3 })).toContain('(root)');
    expect(details({ ...good, resources: { ...good.resources, gpu: 1 } })).toContain('resources');
  });

  it('reports missing required fields', () => {
    expect(details({})).toEqual(
      expect.arrayContaining(['name', 'tenant', 'model', 'engine', 'replicas', 'resources']),
    );
  });
});
