// The pipeline: filters → scorers → picker, over fake engine signals (no sockets, no clocks).
import { describe, expect, it } from 'vitest';
import type { RouteModel, RouteRouting } from '../../src/core/types.js';
import { RoutingPipeline, rendezvous, seededRandom } from '../../src/gateway/routing/pipeline.js';
import { BLOCK_CHARS } from '../../src/gateway/routing/prefix-index.js';
import type { SignalSource, SignalView } from '../../src/gateway/routing/signals.js';

const idle: SignalView = {
  waiting: 0,
  running: 0,
  kvUtilization: 0,
  stale: false,
  ageMs: 5,
  blockSize: 16,
  numGpuBlocks: 1000,
};

function fleet(n: number, routing?: RouteRouting) {
  const views = new Map<string, SignalView>();
  const source: SignalSource = { view: (id) => views.get(id) ?? idle };
  const route: RouteModel = {
    model: 'm',
    deployment: 'm',
    tenantId: 't',
    tenantName: 't',
    engine: 'sim',
    createdAt: '',
    endpoints: Array.from({ length: n }, (_, i) => ({
      replicaId: `r${i}`,
      index: i,
      url: `http://r${i}`,
    })),
    ...(routing ? { routing } : {}),
  };
  const p = new RoutingPipeline({ signals: source, random: seededRandom(7) });
  return { p, route, views };
}

const prompt = (tag: string, chars: number) =>
  (tag + ' ').repeat(Math.ceil(chars / 6)).slice(0, chars);

describe('RoutingPipeline', () => {
  it('sends a prompt to the replica holding its prefix', () => {
    const { p, route } = fleet(4);
    const ctx = prompt('shared', BLOCK_CHARS * 40);
    const first = p.pick(route, { exclude: new Set(), prompt: ctx + 'question one' })!;
    p.release(first.endpoint.replicaId);
    expect(first.receipt.matchedBlocks).toBe(0);
    for (let i = 0; i < 5; i++) {
      const d = p.pick(route, { exclude: new Set(), prompt: ctx + `question ${i + 2}` })!;
      p.release(d.endpoint.replicaId);
      expect(d.endpoint.replicaId).toBe(first.endpoint.replicaId);
      expect(d.receipt.matchedBlocks).toBe(40);
      expect(d.receipt).toMatchObject({ policy: 'prefix-aware', promptBlocks: 40 });
      expect(d.receipt.scores[d.endpoint.replicaId]!.prefix).toBe(1);
    }
  });

  it('spills off a clearly overloaded prefix holder', () => {
    const { p, route, views } = fleet(2);
    const ctx = prompt('hot', BLOCK_CHARS * 20);
    const a = p.pick(route, { exclude: new Set(), prompt: ctx })!.endpoint.replicaId;
    p.release(a);
    views.set(a, { ...idle, waiting: 6, running: 32, kvUtilization: 0.95 });
    const d = p.pick(route, { exclude: new Set(), prompt: ctx })!;
    expect(d.endpoint.replicaId).not.toBe(a);
    // …but a moderately busy holder keeps it.
    views.set(a, { ...idle, waiting: 1, running: 8, kvUtilization: 0.5 });
    views.set(d.endpoint.replicaId, { ...idle, waiting: 1, running: 8, kvUtilization: 0.5 });
    const other = prompt('cold', BLOCK_CHARS * 20);
    const b = p.pick(route, { exclude: new Set(), prompt: other })!.endpoint.replicaId;
    expect(p.pick(route, { exclude: new Set(), prompt: other })!.endpoint.replicaId).toBe(b);
  });

  it('falls back to the least loaded replica for unique prompts', () => {
    const { p, route, views } = fleet(3);
    views.set('r0', { ...idle, waiting: 2, running: 10, kvUtilization: 0.6 });
    views.set('r1', { ...idle, waiting: 0, running: 2, kvUtilization: 0.1 });
    views.set('r2', { ...idle, waiting: 1, running: 4, kvUtilization: 0.3 });
    for (let i = 0; i < 3; i++) {
      const d = p.pick(route, {
        exclude: new Set(),
        prompt: prompt(`unique${i}`, BLOCK_CHARS * 10),
      })!;
      p.release(d.endpoint.replicaId);
      expect(d.endpoint.replicaId).toBe('r1');
      expect(d.receipt.matchedBlocks).toBe(0);
    }
  });

  it('counts its own in-flight requests between scrapes (no herd on the idle replica)', () => {
    const { p, route } = fleet(2, { policy: 'least-loaded' });
    const seen = new Set<string>();
    for (let i = 0; i < 4; i++) seen.add(p.pick(route, { exclude: new Set() })!.endpoint.replicaId);
    expect([...seen].sort()).toEqual(['r0', 'r1']);
    expect(p.inflightOf('r0') + p.inflightOf('r1')).toBe(4);
  });

  it('keeps a session on its replica (affinity)', () => {
    const { p, route } = fleet(8);
    const want = rendezvous('session-42', route.endpoints)!.replicaId;
    for (let i = 0; i < 5; i++) {
      const d = p.pick(route, {
        exclude: new Set(),
        sessionId: 'session-42',
        prompt: `short unique ${i}`,
      })!;
      p.release(d.endpoint.replicaId);
      expect(d.endpoint.replicaId).toBe(want);
      expect(d.receipt.scores[want]!.affinity).toBe(1);
    }
  });

  it('drops excluded replicas and answers undefined when none is left', () => {
    const { p, route } = fleet(3);
    const d = p.pick(route, { exclude: new Set(['r0', 'r2']) })!;
    expect(d.endpoint.replicaId).toBe('r1');
    expect(Object.keys(d.receipt.scores)).toEqual(['r1']);
    expect(p.pick(route, { exclude: new Set(['r0', 'r1', 'r2']) })).toBeUndefined();
    expect(p.pick({ ...route, endpoints: [] }, { exclude: new Set() })).toBeUndefined();
  });

  it('round-robin rotates, skipping exclusions; weights can be overridden', () => {
    const { p, route } = fleet(3, { policy: 'round-robin' });
    expect(p.needsPrompt(route)).toBe(false);
    const ids = Array.from(
      { length: 6 },
      () => p.pick(route, { exclude: new Set() })!.endpoint.index,
    );
    expect(ids).toEqual([0, 1, 2, 0, 1, 2]);
    expect(p.pick(route, { exclude: new Set(['r0']) })!.receipt.policy).toBe('round-robin');
    const ll = fleet(2, { policy: 'least-loaded', weights: { prefix: 1 } });
    expect(ll.p.needsPrompt(ll.route)).toBe(true);
  });

  it('reuses the prompt hashes on a retry and forgets replicas that leave', () => {
    const { p, route } = fleet(2);
    const req = { exclude: new Set<string>(), prompt: prompt('retry', BLOCK_CHARS * 4) };
    const d = p.pick(route, req)!;
    const hashes = (req as { hashes?: Uint32Array }).hashes;
    expect(hashes).toHaveLength(4);
    req.exclude.add(d.endpoint.replicaId);
    p.pick(route, req);
    expect((req as { hashes?: Uint32Array }).hashes).toBe(hashes);
    p.sync({ models: [{ ...route, endpoints: route.endpoints.slice(0, 1) }] });
    expect(p.index.stats().replicas).toBeLessThanOrEqual(1);
  });
});
