// The routing snapshot the overhead bench's gateways serve: one key of one tenant (no limits) and
// two models on the same upstream ports, `bench-rr` (round-robin) and `bench-pa` (prefix-aware).
export const MODELS = { 'round-robin': 'bench-rr', 'prefix-aware': 'bench-pa' };

/** `hashApiKey` is the build's own (dist/core/ids.js), passed in by the caller. */
export function benchSnapshot(key, upstreamPorts, hashApiKey) {
  const tenant = { id: 'tenant-bench', name: 'bench' };
  const createdAt = new Date().toISOString();
  return {
    version: 1,
    keys: [
      {
        hash: hashApiKey(key),
        keyId: 'key-bench',
        role: 'tenant',
        tenantId: tenant.id,
        tenantName: tenant.name,
      },
    ],
    tenants: [{ id: tenant.id, name: tenant.name, limits: {} }],
    models: Object.entries(MODELS).map(([policy, model]) => ({
      model,
      deployment: model,
      tenantId: tenant.id,
      tenantName: tenant.name,
      engine: 'sim',
      createdAt,
      routing: { policy },
      endpoints: upstreamPorts.map((p, i) => ({
        replicaId: `${model}-r${i}`,
        index: i,
        url: `http://127.0.0.1:${p}`,
      })),
    })),
  };
}
