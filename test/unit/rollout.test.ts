// Rollout gates and the rollout state machine (src/deploy/rollout.ts) with a fake clock, and the
// windowed per-version statistics (src/telemetry/version-stats.ts).
import { describe, expect, it } from 'vitest';
import { RolloutSpecSchema, durationMs, type RolloutSpec } from '../../src/core/schemas.js';
import {
  advance,
  canaryCount,
  evaluateGates,
  parseInFlight,
  probeMatches,
  type CanaryView,
  type RolloutState,
} from '../../src/deploy/rollout.js';
import { createMetrics } from '../../src/telemetry/metrics.js';
import {
  quantile,
  registryVersionStats,
  windowOf,
  type VersionWindow,
} from '../../src/telemetry/version-stats.js';

const win = (over: Partial<VersionWindow> = {}): VersionWindow => ({
  ttftP99Ms: 50,
  ttftSamples: 100,
  itlP99Ms: 10,
  itlSamples: 1000,
  requests: 100,
  errors: 0,
  errorRate: 0,
  errorSource: 'version',
  ...over,
});

describe('gates', () => {
  const gates = { ttftP99Ms: 200, itlP99Ms: 50, errorRate: 0.01 };
  it('pass, fail, and stay pending with too few samples', () => {
    expect(evaluateGates(gates, win(), 20, {}).map((g) => g.status)).toEqual([
      'passed',
      'passed',
      'passed',
    ]);
    const slow = evaluateGates(gates, win({ ttftP99Ms: 900 }), 20, {});
    expect(slow[0]).toMatchObject({
      gate: 'ttftP99Ms',
      status: 'failed',
      value: 900,
      threshold: 200,
    });
    const few = evaluateGates(gates, win({ ttftSamples: 3, ttftP99Ms: 900, requests: 3 }), 20, {});
    expect(few.find((g) => g.gate === 'ttftP99Ms')?.status).toBe('pending');
    expect(few.find((g) => g.gate === 'errorRate')?.status).toBe('pending');
    const errs = evaluateGates(gates, win({ errors: 5, errorRate: 0.05 }), 20, {});
    expect(errs.find((g) => g.gate === 'errorRate')?.status).toBe('failed');
  });
  it('GPU memory and the probe', () => {
    const g = {
      gpuMemoryPct: 90,
      probe: { messages: [{ role: 'user' as const, content: 'hi' }], expect: '/hel+o/i' },
    };
    expect(evaluateGates(g, win(), 20, {}).map((x) => x.status)).toEqual([
      'unavailable',
      'pending',
    ]);
    const r = evaluateGates(g, win(), 20, {
      gpuMemoryPct: 95,
      probe: { ok: probeMatches('/hel+o/i', 'HeLLo there'), reply: 'HeLLo there' },
    });
    expect(r.map((x) => x.status)).toEqual(['failed', 'passed']);
    expect(probeMatches('world', 'hello world')).toBe(true);
    expect(probeMatches('/^x$/', 'y')).toBe(false);
  });
});

describe('windowed version statistics', () => {
  it('p99 from bucket deltas, not cumulative', () => {
    expect(quantile(0.99, [])).toBeUndefined();
    expect(
      quantile(0.5, [
        [0.1, 10],
        [0.2, 20],
        [Infinity, 20],
      ]),
    ).toBeCloseTo(0.1);
    const prev = {
      ttft: [
        [0.1, 100],
        [1, 100],
        [Infinity, 100],
      ] as Array<[number, number]>,
      itl: [],
      requests: 100,
      errors: 0,
      errorSource: 'version' as const,
    };
    // 10 new samples, all between 0.1 and 1 s: the old fast ones must not dilute the p99.
    const cur = {
      ...prev,
      ttft: [
        [0.1, 100],
        [1, 110],
        [Infinity, 110],
      ] as Array<[number, number]>,
      requests: 110,
      errors: 2,
    };
    const w = windowOf(prev, cur);
    expect(w.ttftSamples).toBe(10);
    expect(w.ttftP99Ms).toBeGreaterThan(900);
    expect(w.errorRate).toBeCloseTo(0.2);
  });
  it('reads the registry per model and version', async () => {
    const m = createMetrics({ defaultMetrics: false });
    const stats = registryVersionStats(m);
    m.streamTtft.observe({ tenant: 't', model: 'web', version: 'v2', replica: '2' }, 0.5);
    m.streamTtft.observe({ tenant: 't', model: 'web', version: 'v1', replica: '0' }, 0.01);
    m.requests.inc({ tenant: 't', model: 'web', code: '500' });
    m.requests.inc({ tenant: 't', model: 'web', code: '200' });
    let c = await stats.read('web', 'v2');
    expect(c.ttft.at(-1)?.[1]).toBe(1);
    expect(c.errorSource).toBe('model');
    expect(c.errors).toBe(1);
    m.versionRequests.inc({ model: 'web', version: 'v2', outcome: 'ok' });
    c = await stats.read('web', 'v2');
    expect(c).toMatchObject({ errorSource: 'version', requests: 1, errors: 0 });
  });
  it('in-flight requests from engine metrics', () => {
    expect(
      parseInFlight(
        '# x\nvllm:num_requests_running{model_name="m"} 2\nvllm:num_requests_waiting{model_name="m"} 1\n',
      ),
    ).toBe(3);
    expect(parseInFlight('other 1\n')).toBeUndefined();
  });
});

describe('rollout state machine (fake clock)', () => {
  const spec: RolloutSpec = RolloutSpecSchema.parse({
    steps: [
      { weight: 10, pause: '2s' },
      { weight: 50, pause: '2s' },
    ],
    gates: { ttftP99Ms: 200 },
    interval: '1s',
  });
  const start = (): RolloutState => ({
    id: 'ro_1',
    phase: 'Warming',
    stable: {
      version: 'v1',
      generation: 1,
      spec: {
        name: 'web',
        tenant: 'a',
        model: 'm',
        engine: { name: 'sim', args: {} },
        replicas: 4,
        resources: { gpus: 1, gpuType: 'H100-80GB' },
      },
    },
    canary: { version: 'v2', generation: 2 },
    step: -1,
    targetStep: 0,
    weight: 0,
    stepStartedAt: null,
    lastEvalAt: null,
    gates: [],
    warmed: [],
    warmupMs: null,
    startedAt: 0,
    updatedAt: 0,
    finishedAt: null,
  });
  const view = (ready: string[]): CanaryView => ({ ready, failed: false });
  const pass = evaluateGates(spec.gates, win(), 20, {});
  const fail = evaluateGates(spec.gates, win({ ttftP99Ms: 800 }), 20, {});

  it('parses durations', () => {
    expect(durationMs('30s')).toBe(30_000);
    expect(durationMs('2m')).toBe(120_000);
    expect(durationMs('500ms')).toBe(500);
    expect(durationMs(1500)).toBe(1500);
    expect(canaryCount(4, 10)).toBe(1);
    expect(canaryCount(4, 50)).toBe(2);
    expect(canaryCount(0, 10)).toBe(1);
  });

  it('warms, steps through with passing gates, promotes, retires the stable set', () => {
    let st = start();
    let r = advance(st, spec, 4, view([]), 0);
    expect(r.step.kind).toBe('none'); // no canary yet
    r = advance(r.state, spec, 4, view(['a']), 100);
    expect(r.step).toEqual({ kind: 'warm', replicas: ['a'] });
    st = { ...r.state, warmed: ['a'] };
    r = advance(st, spec, 4, view(['a']), 200);
    expect(r.step.kind).toBe('publish');
    expect(r.state).toMatchObject({
      phase: 'Progressing',
      step: 0,
      weight: 10,
      stepStartedAt: 200,
    });
    // Pause not over: hold, even with passing gates.
    r = advance(r.state, spec, 4, view(['a']), 1200, pass);
    expect(r.step.kind).toBe('none');
    // Pause over but the last evaluation pending: hold.
    const pending = evaluateGates(spec.gates, win({ ttftSamples: 1 }), 20, {});
    r = advance(r.state, spec, 4, view(['a']), 2200, pending);
    expect(r.step.kind).toBe('none');
    r = advance(r.state, spec, 4, view(['a']), 3200, pass);
    expect(r.step.kind).toBe('scale');
    expect(r.state.targetStep).toBe(1);
    // Step 2 (50 %) needs 2 canary replicas, warmed.
    r = advance(r.state, spec, 4, view(['a']), 3300);
    expect(r.step.kind).toBe('none');
    expect(r.state.weight).toBe(10);
    r = advance(r.state, spec, 4, view(['a', 'b']), 3400);
    expect(r.step).toEqual({ kind: 'warm', replicas: ['b'] });
    r = advance({ ...r.state, warmed: ['a', 'b'] }, spec, 4, view(['a', 'b']), 3500);
    expect(r.state).toMatchObject({ step: 1, weight: 50 });
    r = advance(r.state, spec, 4, view(['a', 'b']), 5600, pass);
    expect(r.state.phase).toBe('Promoting');
    // Promotion: all 4 replicas of the new version, warmed, then 100 %, then the stable set goes.
    r = advance(r.state, spec, 4, view(['a', 'b', 'c', 'd']), 5700);
    expect(r.step.kind).toBe('warm');
    r = advance(
      { ...r.state, warmed: ['a', 'b', 'c', 'd'] },
      spec,
      4,
      view(['a', 'b', 'c', 'd']),
      5800,
    );
    expect(r.step.kind).toBe('publish');
    expect(r.state.weight).toBe(100);
    r = advance(r.state, spec, 4, view(['a', 'b', 'c', 'd']), 5900);
    expect(r.step.kind).toBe('retireStable');
  });

  it('a failed gate rolls back at once; a failed canary replica too', () => {
    let r = advance({ ...start(), warmed: ['a'] }, spec, 4, view(['a']), 0);
    r = advance(r.state, spec, 4, view(['a']), 1000, fail);
    expect(r.step.kind).toBe('rollback');
    expect(r.state.phase).toBe('RollingBack');
    expect(r.state.failedGate).toMatchObject({ gate: 'ttftP99Ms', value: 800, threshold: 200 });
    // Rolling back stays rolling back until the manager finishes it.
    expect(advance(r.state, spec, 4, view(['a']), 1100).step.kind).toBe('rollback');
    const crashed = advance(start(), spec, 4, { ready: [], failed: true }, 0);
    expect(crashed.step.kind).toBe('rollback');
  });

  it('without gates a step advances after its pause alone', () => {
    const noGates = RolloutSpecSchema.parse({ steps: [{ weight: 20, pause: 500 }] });
    let r = advance({ ...start(), warmed: ['a'] }, noGates, 4, view(['a']), 0);
    expect(r.state.weight).toBe(20);
    expect(advance(r.state, noGates, 4, view(['a']), 400).step.kind).toBe('none');
    r = advance(r.state, noGates, 4, view(['a']), 600);
    expect(r.state.phase).toBe('Promoting');
  });
});
