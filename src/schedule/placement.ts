// Placement: which node and which GPUs a replica gets. First version: pack replicas onto the
// node with the fewest free GPUs that still fits (keeps whole nodes free for big gangs), lowest
// GPU indices first. Topology, gangs across nodes, spread and quotas come later behind `Placer`.
import { InferplaneError } from '../core/errors.js';
import type { NodeInfo, NodeState } from '../core/types.js';

export interface PlacementRequest {
  deployment: string;
  replicaIdx: number;
  gpus: number;
  gpuType: string;
}

export interface Placement {
  node: string;
  gpus: number[];
}

export interface ClusterView {
  nodes: Array<NodeInfo & { state: NodeState }>;
  /** Allocated GPUs by node name. */
  allocated: Map<string, Set<number>>;
}

export interface Placer {
  /** Returns a placement or throws IP_PLACEMENT_FAILED with a reason an operator can act on. */
  place(req: PlacementRequest, view: ClusterView): Placement;
}

export class PackPlacer implements Placer {
  place(req: PlacementRequest, view: ClusterView): Placement {
    const ready = view.nodes.filter((n) => n.state === 'ready');
    if (ready.length === 0) {
      throw new InferplaneError('IP_PLACEMENT_FAILED', 'no ready node to place on', {
        retryAfterS: 5,
      });
    }
    if (req.gpus === 0) return { node: ready[0]!.name, gpus: [] };

    let best: { node: string; free: number[] } | undefined;
    let mostFree = 0;
    let typeSeen = false;
    for (const node of ready) {
      const taken = view.allocated.get(node.name) ?? new Set<number>();
      const free = node.gpus
        .filter((g) => g.type === req.gpuType && !taken.has(g.index))
        .map((g) => g.index)
        .sort((a, b) => a - b);
      if (node.gpus.some((g) => g.type === req.gpuType)) typeSeen = true;
      mostFree = Math.max(mostFree, free.length);
      if (free.length >= req.gpus && (!best || free.length < best.free.length)) {
        best = { node: node.name, free };
      }
    }
    if (best) return { node: best.node, gpus: best.free.slice(0, req.gpus) };

    if (!typeSeen) {
      const types = [...new Set(ready.flatMap((n) => n.gpus.map((g) => g.type)))].sort();
      throw new InferplaneError(
        'IP_PLACEMENT_FAILED',
        `no ready node has GPUs of type ${req.gpuType} (types available: ${types.join(', ') || 'none'})`,
        { details: [{ path: 'resources.gpuType', message: `unknown GPU type ${req.gpuType}` }] },
      );
    }
    const total = ready.reduce(
      (s, n) => s + n.gpus.filter((g) => g.type === req.gpuType).length,
      0,
    );
    throw new InferplaneError(
      'IP_PLACEMENT_FAILED',
      `replica ${req.replicaIdx} of ${req.deployment} needs ${req.gpus} free ${req.gpuType} GPU(s) on one node; ` +
        `the most free on any node is ${mostFree} (${total} ${req.gpuType} in the pool)`,
      { retryAfterS: 5 },
    );
  }
}
