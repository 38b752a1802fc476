// GPU inventory: nodes and their GPUs as reported by node agents, and what is allocated.
import { isoNow } from '../core/clock.js';
import type { NodeInfo, NodeState } from '../core/types.js';
import type { Db } from '../store/db.js';
import type { ClusterView } from './placement.js';

export interface NodeView extends NodeInfo {
  state: NodeState;
  lastSeen: string;
  /** GPU index → replica id holding it. */
  allocations: Map<number, string>;
}

export class Inventory {
  constructor(private readonly db: Db) {}

  async registerNode(node: NodeInfo): Promise<void> {
    const row = {
      name: node.name,
      labels: JSON.stringify(node.labels),
      gpus: JSON.stringify(node.gpus),
      state: 'ready',
      last_seen: isoNow(),
    };
    await this.db
      .insertInto('nodes')
      .values(row)
      .onConflict((oc) =>
        oc.column('name').doUpdateSet({
          labels: row.labels,
          gpus: row.gpus,
          state: row.state,
          last_seen: row.last_seen,
        }),
      )
      .execute();
  }

  async setNodeState(name: string, state: NodeState): Promise<void> {
    await this.db.updateTable('nodes').set({ state }).where('name', '=', name).execute();
  }

  async listNodes(): Promise<NodeView[]> {
    const [nodes, replicas] = await Promise.all([
      this.db.selectFrom('nodes').selectAll().orderBy('name').execute(),
      this.db.selectFrom('replicas').select(['id', 'node', 'gpus']).execute(),
    ]);
    const alloc = new Map<string, Map<number, string>>();
    for (const r of replicas) {
      if (!r.node) continue;
      const m = alloc.get(r.node) ?? new Map<number, string>();
      for (const g of JSON.parse(r.gpus) as number[]) m.set(g, r.id);
      alloc.set(r.node, m);
    }
    return nodes.map((n) => ({
      name: n.name,
      labels: JSON.parse(n.labels) as Record<string, string>,
      gpus: JSON.parse(n.gpus) as NodeInfo['gpus'],
      state: n.state as NodeState,
      lastSeen: n.last_seen,
      allocations: alloc.get(n.name) ?? new Map<number, string>(),
    }));
  }

  async clusterView(): Promise<ClusterView> {
    const nodes = await this.listNodes();
    return {
      nodes,
      allocated: new Map(nodes.map((n) => [n.name, new Set(n.allocations.keys())])),
    };
  }
}
