import { describe, expect, it } from 'vitest';
import { CircuitBreakers, type BreakerState } from '../../src/gateway/breaker.js';

function setup(opts: ConstructorParameters<typeof CircuitBreakers>[0] = {}): {
  b: CircuitBreakers;
  advance: (ms: number) => void;
  changes: string[];
} {
  let t = 10_000;
  const changes: string[] = [];
  const b = new CircuitBreakers({
    now: () => t,
    onChange: (id: string, s: BreakerState) => changes.push(`${id}:${s}`),
    ...opts,
  });
  return { b, advance: (ms) => (t += ms), changes };
}

function fail(b: CircuitBreakers, id: string, n: number): void {
  for (let i = 0; i < n; i++) b.onFailure(id);
}

describe('CircuitBreakers: closed', () => {
  it('an unknown replica is closed and allowed; settling it is a no-op', () => {
    const { b, changes } = setup();
    expect(b.state('r')).toBe('closed');
    expect(b.allow('r')).toBe(true);
    expect(b.acquire('r')).toBe(true);
    b.cancel('r');
    b.onSuccess('r');
    expect(b.state('r')).toBe('closed');
    expect(changes).toEqual([]);
  });

  it('opens after failureThreshold consecutive failures (default 5)', () => {
    const { b, changes } = setup();
    fail(b, 'r', 4);
    expect(b.state('r')).toBe('closed');
    expect(b.allow('r')).toBe(true);
    b.onSuccess('r'); // resets the count
    fail(b, 'r', 4);
    expect(b.state('r')).toBe('closed');
    b.onFailure('r');
    expect(b.state('r')).toBe('open');
    expect(b.allow('r')).toBe(false);
    expect(b.acquire('r')).toBe(false);
    expect(changes).toEqual(['r:open']);
  });

  it('honours a custom threshold; replicas are independent', () => {
    const { b } = setup({ failureThreshold: 2 });
    b.onFailure('r1');
    b.onFailure('r2');
    b.onFailure('r1');
    expect(b.state('r1')).toBe('open');
    expect(b.state('r2')).toBe('closed');
    expect(b.allow('r2')).toBe(true);
  });
});

describe('CircuitBreakers: open → half-open → closed', () => {
  it('half-opens after openMs and closes on a probe success', () => {
    const { b, advance, changes } = setup();
    fail(b, 'r', 5);
    advance(4999);
    expect(b.allow('r')).toBe(false);
    expect(b.state('r')).toBe('open');
    advance(1);
    expect(b.state('r')).toBe('half-open');
    expect(changes).toEqual(['r:open', 'r:half-open']);
    // allow() is a pure query: filtering many times claims nothing
    expect(b.allow('r')).toBe(true);
    expect(b.allow('r')).toBe(true);
    expect(b.acquire('r')).toBe(true);
    // exactly one probe at a time
    expect(b.allow('r')).toBe(false);
    expect(b.acquire('r')).toBe(false);
    b.onSuccess('r');
    expect(b.state('r')).toBe('closed');
    expect(b.allow('r')).toBe(true);
    expect(changes).toEqual(['r:open', 'r:half-open', 'r:closed']);
    // failures start from zero again
    fail(b, 'r', 4);
    expect(b.state('r')).toBe('closed');
  });

  it('cancel frees the probe slot', () => {
    const { b, advance } = setup();
    fail(b, 'r', 5);
    advance(5000);
    expect(b.acquire('r')).toBe(true);
    expect(b.allow('r')).toBe(false);
    b.cancel('r');
    expect(b.state('r')).toBe('half-open');
    expect(b.allow('r')).toBe(true);
    expect(b.acquire('r')).toBe(true);
    expect(b.acquire('r')).toBe(false);
  });

  it('a probe that never settles frees the slot after the open period', () => {
    const { b, advance } = setup();
    fail(b, 'r', 5);
    advance(5000);
    expect(b.acquire('r')).toBe(true);
    advance(4999);
    expect(b.allow('r')).toBe(false);
    advance(1);
    expect(b.allow('r')).toBe(true);
    expect(b.acquire('r')).toBe(true);
    expect(b.allow('r')).toBe(false);
    expect(b.state('r')).toBe('half-open');
  });

  it('ignores settlements of earlier requests while open', () => {
    const { b, advance, changes } = setup();
    fail(b, 'r', 5);
    advance(3000);
    b.onSuccess('r');
    expect(b.state('r')).toBe('open');
    b.onFailure('r'); // does not extend the open period
    advance(2000);
    expect(b.state('r')).toBe('half-open');
    expect(changes).toEqual(['r:open', 'r:half-open']);
  });
});

describe('CircuitBreakers: backoff', () => {
  it('a failure in half-open re-opens with the period doubled, capped at maxOpenMs', () => {
    const { b, advance, changes } = setup({ openMs: 1000, maxOpenMs: 5000 });
    fail(b, 'r', 5);
    const periods: number[] = [];
    for (let i = 0; i < 5; i++) {
      // measure the open period: allowed again exactly after it
      let waited = 0;
      while (!b.allow('r')) {
        advance(100);
        waited += 100;
      }
      periods.push(waited);
      expect(b.acquire('r')).toBe(true);
      b.onFailure('r');
      expect(b.state('r')).toBe('open');
    }
    expect(periods).toEqual([1000, 2000, 4000, 5000, 5000]);
    expect(changes.slice(0, 4)).toEqual(['r:open', 'r:half-open', 'r:open', 'r:half-open']);
  });

  it('defaults: 5000 ms, doubling, capped at 60000', () => {
    const { b, advance } = setup();
    fail(b, 'r', 5);
    const expected = [5000, 10_000, 20_000, 40_000, 60_000, 60_000];
    for (const ms of expected) {
      advance(ms - 1);
      expect(b.state('r')).toBe('open');
      advance(1);
      expect(b.state('r')).toBe('half-open');
      b.onFailure('r');
    }
  });

  it('a success resets the backoff', () => {
    const { b, advance } = setup();
    fail(b, 'r', 5);
    advance(5000);
    b.onFailure('r'); // re-open for 10 s
    advance(10_000);
    expect(b.acquire('r')).toBe(true);
    b.onSuccess('r');
    expect(b.state('r')).toBe('closed');
    fail(b, 'r', 5);
    advance(4999);
    expect(b.state('r')).toBe('open');
    advance(1);
    expect(b.state('r')).toBe('half-open');
  });

  it('clamps maxOpenMs to at least openMs', () => {
    const { b, advance } = setup({ openMs: 2000, maxOpenMs: 500 });
    fail(b, 'r', 5);
    advance(2000);
    b.onFailure('r');
    advance(1999);
    expect(b.state('r')).toBe('open');
    advance(1);
    expect(b.state('r')).toBe('half-open');
  });
});

describe('CircuitBreakers: retain', () => {
  it('drops replicas that left the snapshot', () => {
    const { b } = setup();
    fail(b, 'r1', 5);
    fail(b, 'r2', 5);
    fail(b, 'r3', 3);
    b.retain(new Set(['r2']));
    expect(b.state('r1')).toBe('closed');
    expect(b.allow('r1')).toBe(true);
    expect(b.state('r2')).toBe('open');
    // r3's failure count was dropped too
    fail(b, 'r3', 4);
    expect(b.state('r3')).toBe('closed');
  });
});
