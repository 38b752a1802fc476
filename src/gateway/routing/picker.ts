// Endpoint picker. Round-robin for now; the full pipeline (filters → scorers → picker, prefix
// index, decision receipts) plugs in behind this interface.
import type { RouteEndpoint, RouteModel } from '../../core/types.js';

export interface Picker {
  /** Picks a ready endpoint of `route`, skipping replica ids in `exclude`. */
  pick(route: RouteModel, exclude: ReadonlySet<string>): RouteEndpoint | undefined;
}

export class RoundRobinPicker implements Picker {
  private readonly next = new Map<string, number>();

  pick(route: RouteModel, exclude: ReadonlySet<string>): RouteEndpoint | undefined {
    const eps = route.endpoints;
    if (eps.length === 0) return undefined;
    const start = this.next.get(route.model) ?? 0;
    for (let i = 0; i < eps.length; i++) {
      const ep = eps[(start + i) % eps.length]!;
      if (exclude.has(ep.replicaId)) continue;
      this.next.set(route.model, (start + i + 1) % eps.length);
      return ep;
    }
    return undefined;
  }
}
