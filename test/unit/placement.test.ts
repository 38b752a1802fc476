import { describe, expect, it } from 'vitest';
import { InferplaneError } from '../../src/core/errors.js';
import type { NodeInfo, NodeState } from '../../src/core/types.js';
import { PackPlacer, type ClusterView } from '../../src/schedule/placement.js';

function node(name: string, n: number, type = 'H100-80GB', state: NodeState = 'ready') {
  const info: NodeInfo = {
    name,
    labels: {},
    gpus: Array.from({ length: n }, (_, index) => ({
      index,
      uuid: `${name}-${index}`,
      type,
      memoryMiB: 81559,
      vendor: 'sim' as const,
    })),
  };
  return { ...info, state };
}

function view(nodes: ClusterView['nodes'], allocated: Record<string, number[]> = {}): ClusterView {
  return {
    nodes,
    allocated: new Map(Object.entries(allocated).map(([k, v]) => [k, new Set(v)])),
  };
}

const req = (gpus: number, gpuType = 'H100-80GB') => ({
  deployment: 'd',
  replicaIdx: 0,
  gpus,
  gpuType,
});

function placementError(fn: () => unknown): InferplaneError {
  try {
    fn();
  } catch (e) {
    if (e instanceof InferplaneError) return e;
    throw e;
  }
  throw new Error('expected a placement failure');
}

describe('PackPlacer', () => {
  const placer = new PackPlacer();

  it('takes the lowest free GPU indices', () => {
    expect(placer.place(req(2), view([node('a', 8)], { a: [0, 2] }))).toEqual({
      node: 'a',
      gpus: [1, 3],
    });
  });

  it('packs onto the node with the fewest free GPUs that still fits', () => {
    const v = view([node('a', 8), node('b', 8)], { a: [0, 1, 2, 3, 4, 5] });
    expect(placer.place(req(2), v).node).toBe('a');
    expect(placer.place(req(3), v).node).toBe('b');
  });

  it('skips nodes that are not ready and GPUs of other types', () => {
    const v = view([
      node('a', 8, 'H100-80GB', 'quarantined'),
      node('b', 4, 'L40S-48GB'),
      node('c', 2),
    ]);
    expect(placer.place(req(1), v)).toEqual({ node: 'c', gpus: [0] });
    expect(placer.place(req(4, 'L40S-48GB'), v)).toEqual({ node: 'b', gpus: [0, 1, 2, 3] });
  });

  it('places CPU replicas (0 GPUs) on a ready node', () => {
    expect(placer.place(req(0), view([node('a', 0)]))).toEqual({ node: 'a', gpus: [] });
  });

  it('says how many GPUs are free when a replica does not fit', () => {
    const err = placementError(() =>
      placer.place(req(4), view([node('a', 4), node('b', 4)], { a: [0, 1], b: [0, 1, 2] })),
    );
    expect(err.code).toBe('IP_PLACEMENT_FAILED');
    expect(err.status).toBe(422);
    expect(err.retryable).toBe(true);
    expect(err.message).toContain('needs 4 free H100-80GB GPU(s) on one node');
    expect(err.message).toContain('the most free on any node is 2');
  });

  it('names the GPU types available when the type is unknown', () => {
    const err = placementError(() => placer.place(req(1, 'B200-180GB'), view([node('a', 2)])));
    expect(err.code).toBe('IP_PLACEMENT_FAILED');
    expect(err.message).toContain('types available: H100-80GB');
    expect(err.details?.[0]?.path).toBe('resources.gpuType');
  });

  it('refuses when no node is ready', () => {
    const err = placementError(() =>
      placer.place(req(1), view([node('a', 2, 'H100-80GB', 'not-ready')])),
    );
    expect(err.message).toContain('no ready node');
  });
});
