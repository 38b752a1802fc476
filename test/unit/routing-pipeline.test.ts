// The pipeline: filters → scorers → picker, over fake engine signals (no sockets, no clocks).
import { describe, expect, it } from 'vitest';
import type { RouteModel, RouteRouting } from '../../src/core/types.js';
import { RoutingPipeline, rendezvous, seededRandom } from '../../src/gateway/routing/pipeline.js';
import { RoundRobinPicker } from '../../src/gateway/routing/picker.js';
import { BLOCK_CHARS } from '../../src/gateway/routing/prefix-index.js';
import { freshView, simRoute } from './routing-fixtures.js';
import type { SignalSource, SignalView } from '../../src/gateway/routing/signals.js';

const idle = freshView();

function fleet(n: number, routing?: RouteRouting) {
  const views = new Map<string, SignalView>();
  const source: SignalSource = { view: (id) => views.get(id) ?? idle };
  const route = simRoute(n, routing);
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

  it('gives receipts one shape: scores built lazily on the prototype, and in their JSON', () => {
    const { p, route } = fleet(3);
    const ds = ['a', 'b'].map((t) => {
      const d = p.pick(route, { exclude: new Set(), prompt: prompt(t, BLOCK_CHARS * 4) })!;
      p.release(d.endpoint.replicaId);
      return d;
    });
    for (const d of ds) {
      // Not an own accessor: an object literal's `get scores()` is a new function per receipt,
      // and V8 gives each such object a hidden class of its own (in the old generation).
      expect(Object.getOwnPropertyDescriptor(d.receipt, 'scores')).toBeUndefined();
      expect(Object.keys(d.receipt.scores).sort()).toEqual(route.endpoints.map((e) => e.replicaId));
      expect(d.receipt.scores).toBe(d.receipt.scores); // built once
      const sent = JSON.parse(JSON.stringify(d.receipt)) as Record<string, unknown>;
      expect(Object.keys(sent)).toEqual(
        [
          'policy',
          'replica',
          'index',
          'scores',
          'matchedBlocks',
          'promptBlocks',
          'prefixSource',
          'blockTokens',
          'decisionMicros',
          'version',
        ].filter(
          (k) =>
            k === 'scores' || (d.receipt as unknown as Record<string, unknown>)[k] !== undefined,
        ),
      );
      expect(sent.scores).toEqual(JSON.parse(JSON.stringify(d.receipt.scores)));
    }
    expect(Object.getPrototypeOf(ds[0]!.receipt)).toBe(Object.getPrototypeOf(ds[1]!.receipt));
  });

  it("learns another gateway process's picks (onRecord → recordPeer), for routed replicas only", () => {
    const views = new Map<string, SignalView>();
    const source: SignalSource = { view: (id) => views.get(id) ?? idle };
    const route = simRoute(4);
    const b = new RoutingPipeline({ signals: source, random: seededRandom(11) });
    const a = new RoutingPipeline({
      signals: source,
      random: seededRandom(7),
      onRecord: (id, hashes) => b.recordPeer(id, hashes),
    });
    for (const p of [a, b]) p.sync({ models: [route] });
    for (let i = 0; i < 4; i++) {
      // A prompt B never saw: it can match only through A's relayed pick.
      const text = prompt(`peer${i}`, BLOCK_CHARS * 24);
      const before = a.index.stats().entries;
      const first = a.pick(route, { exclude: new Set(), prompt: text })!;
      a.release(first.endpoint.replicaId);
      // The pick is recorded (and relayed) after the decision: a microtask in the gateway.
      expect(a.index.stats().entries).toBe(before);
      a.flushRecords();
      expect(a.index.stats().entries).toBeGreaterThan(before);
      const seen = b.pick(route, { exclude: new Set(), prompt: text })!;
      b.release(seen.endpoint.replicaId);
      expect(seen.endpoint.replicaId).toBe(first.endpoint.replicaId);
      expect(seen.receipt.matchedBlocks).toBeGreaterThanOrEqual(21); // checkpoints: ≤ 12.5 % short
    }
    // A replica that is not in B's routing table is not given index space.
    b.recordPeer('gone', a.index.hash(prompt('gone', BLOCK_CHARS * 4)));
    expect(b.index.slotOf('gone')).toBe(0);
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

describe('RoutingPipeline: version weights', () => {
  const versioned = (weights: Record<string, number> | undefined) => {
    const f = fleet(4);
    const route: RouteModel = {
      ...f.route,
      endpoints: f.route.endpoints.map((e, i) => ({ ...e, version: i < 3 ? 'v1' : 'v2' })),
      ...(weights ? { versionWeights: weights } : {}),
    };
    return { ...f, route };
  };

  it('splits traffic by weight over many draws (seeded)', () => {
    const { p, route } = versioned({ v1: 90, v2: 10 });
    const counts: Record<string, number> = { v1: 0, v2: 0 };
    const n = 4000;
    for (let i = 0; i < n; i++) {
      const d = p.pick(route, { exclude: new Set(), prompt: `unique ${i}` })!;
      p.release(d.endpoint.replicaId);
      expect(d.endpoint.version).toBe(d.receipt.version);
      counts[d.receipt.version!]!++;
    }
    expect(counts.v2! / n).toBeGreaterThan(0.08);
    expect(counts.v2! / n).toBeLessThan(0.12);
  });

  it('weight 0 gets no traffic; no weights: every endpoint competes, no version drawn', () => {
    const { p, route } = versioned({ v1: 0, v2: 1 });
    for (let i = 0; i < 50; i++) {
      const d = p.pick(route, { exclude: new Set() })!;
      p.release(d.endpoint.replicaId);
      expect(d.endpoint.replicaId).toBe('r3');
      expect(d.receipt.version).toBe('v2');
    }
    const plain = versioned(undefined);
    const seen = new Set<string>();
    for (let i = 0; i < 8; i++) {
      const d = plain.p.pick(plain.route, { exclude: new Set() })!;
      expect(d.receipt.version).toBeUndefined();
      seen.add(d.endpoint.replicaId);
    }
    expect(seen.size).toBe(4);
  });

  it('falls back to a version with a usable endpoint, then to any usable endpoint', () => {
    const { p, route } = versioned({ v1: 1, v2: 1000 });
    // v2's only replica is excluded (failed) or refused by the circuit breaker: v1 takes it.
    for (let i = 0; i < 20; i++) {
      const d = p.pick(route, { exclude: new Set(['r3']) })!;
      p.release(d.endpoint.replicaId);
      expect(d.receipt.version).toBe('v1');
      const e = p.pick(route, { exclude: new Set(), allow: (id) => id !== 'r3' })!;
      p.release(e.endpoint.replicaId);
      expect(e.receipt.version).toBe('v1');
    }
    // Only weight-0 versions usable: availability first, no version in the receipt.
    const only = versioned({ v1: 0, v2: 1 });
    const d = only.p.pick(only.route, { exclude: new Set(['r3']) })!;
    expect(['r0', 'r1', 'r2']).toContain(d.endpoint.replicaId);
    expect(d.receipt.version).toBeUndefined();
    // An endpoint without a version belongs to every version.
    const mixed: RouteModel = {
      ...route,
      endpoints: [
        { replicaId: 'r0', index: 0, url: 'x', version: 'v1' },
        { replicaId: 'r1', index: 1, url: 'y' },
      ],
    };
    const m = p.pick(mixed, { exclude: new Set(['r0']) })!;
    expect(m.endpoint.replicaId).toBe('r1');
  });

  it('keeps the drawn version for a retry while it stays usable', () => {
    const { p, route } = versioned({ v1: 1, v2: 1 });
    for (let i = 0; i < 20; i++) {
      const req = { exclude: new Set<string>() } as { exclude: Set<string>; version?: string };
      const d = p.pick(route, req)!;
      p.release(d.endpoint.replicaId);
      expect(req.version).toBe(d.receipt.version);
      if (req.version === 'v1') {
        req.exclude.add(d.endpoint.replicaId);
        expect(p.pick(route, req)!.receipt.version).toBe('v1');
      }
    }
  });
});

describe('RoutingPipeline: allow and saturation', () => {
  it('skips replicas the circuit breakers refuse', () => {
    const { p, route } = fleet(3);
    for (let i = 0; i < 6; i++) {
      const d = p.pick(route, { exclude: new Set(), allow: (id) => id === 'r2' })!;
      expect(d.endpoint.replicaId).toBe('r2');
    }
    expect(p.pick(route, { exclude: new Set(), allow: () => false })).toBeUndefined();
    expect(p.saturated(route, { exclude: new Set(), allow: () => false })).toBe(false);
  });

  it('is saturated only when every candidate is (waiting, KV or in-flight cap)', () => {
    const { p, route, views } = fleet(2);
    const req = () => ({ exclude: new Set<string>() });
    expect(p.saturated(route, req())).toBe(false);
    views.set('r0', { ...idle, waiting: 8 });
    expect(p.saturated(route, req())).toBe(false);
    views.set('r1', { ...idle, kvUtilization: 0.99 });
    expect(p.saturated(route, req())).toBe(true);
    // A refused replica is not a candidate: r0 alone decides.
    views.set('r1', idle);
    expect(p.saturated(route, { exclude: new Set(), allow: (id: string) => id === 'r0' })).toBe(
      true,
    );
    // The gateway's own in-flight cap (configurable).
    const small = new RoutingPipeline({
      signals: { view: () => idle },
      saturation: { maxInflight: 2 },
    });
    const r = fleet(1).route;
    small.pick(r, req());
    expect(small.saturated(r, req())).toBe(false);
    small.pick(r, req());
    expect(small.saturated(r, req())).toBe(true);
    small.release('r0');
    expect(small.saturated(r, req())).toBe(false);
  });

  it('never reports saturated when every candidate is stale; stale ones count with fresh ones', () => {
    const { p, route, views } = fleet(2);
    const stale: SignalView = { ...idle, waiting: 50, stale: true, ageMs: 10_000 };
    views.set('r0', stale);
    views.set('r1', stale);
    expect(p.saturated(route, { exclude: new Set() })).toBe(false);
    // …and routes on its own in-flight counts: both replicas get traffic.
    const seen = new Set<string>();
    for (let i = 0; i < 4; i++) seen.add(p.pick(route, { exclude: new Set() })!.endpoint.replicaId);
    expect(seen.size).toBe(2);
    views.set('r1', { ...idle, waiting: 9 });
    expect(p.saturated(route, { exclude: new Set() })).toBe(true);
    views.set('r1', idle);
    expect(p.saturated(route, { exclude: new Set() })).toBe(false);
  });
});

describe('RoundRobinPicker', () => {
  it('skips excluded and refused replicas', () => {
    const rr = new RoundRobinPicker();
    const { route } = fleet(3);
    const ids = Array.from(
      { length: 4 },
      () =>
        rr.pick(route, { exclude: new Set(['r0']), allow: (id) => id !== 'r1' })!.endpoint
          .replicaId,
    );
    expect(ids).toEqual(['r2', 'r2', 'r2', 'r2']);
    expect(rr.pick(route, { exclude: new Set(), allow: () => false })).toBeUndefined();
  });
});
