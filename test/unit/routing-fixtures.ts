// Shared fixtures of the routing tests: a fresh engine signal view and a sim route over endpoints.
import type { RouteModel, RouteRouting } from '../../src/core/types.js';
import type { SignalView } from '../../src/gateway/routing/signals.js';

/** Fresh signals of an idle replica (16-token blocks); override what a test needs. */
export function freshView(o: Partial<SignalView> = {}): SignalView {
  return {
    waiting: 0,
    running: 0,
    kvUtilization: 0,
    stale: false,
    ageMs: 5,
    blockSize: 16,
    numGpuBlocks: 1000,
    ...o,
  };
}

/** Model `m` of tenant `t` on the sim engine: replicas r0, r1, … at `urls` (or n fake URLs). */
export function simRoute(urls: number | readonly string[], routing?: RouteRouting): RouteModel {
  const list =
    typeof urls === 'number' ? Array.from({ length: urls }, (_, i) => `http://r${i}`) : urls;
  return {
    model: 'm',
    deployment: 'm',
    tenantId: 't',
    tenantName: 't',
    engine: 'sim',
    createdAt: '',
    endpoints: list.map((url, i) => ({ replicaId: `r${i}`, index: i, url })),
    ...(routing ? { routing } : {}),
  };
}
