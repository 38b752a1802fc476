import { getEventListeners } from 'node:events';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { InferplaneError } from '../../src/core/errors.js';
import { FairWaitQueue } from '../../src/gateway/fair-queue.js';

interface Tracked {
  state: 'pending' | 'granted' | 'rejected';
  error: InferplaneError | undefined;
}

/** Settlement order of tracked waits, by label. */
let order: string[] = [];

function track(label: string, p: Promise<void>): Tracked {
  const t: Tracked = { state: 'pending', error: undefined };
  p.then(
    () => {
      t.state = 'granted';
      order.push(label);
    },
    (e: unknown) => {
      t.state = 'rejected';
      t.error = e as InferplaneError;
    },
  );
  return t;
}

/** Lets promise callbacks run. */
async function flush(): Promise<void> {
  for (let i = 0; i < 5; i++) await Promise.resolve();
}

function queue(opts: Partial<ConstructorParameters<typeof FairWaitQueue>[0]> = {}): FairWaitQueue {
  return new FairWaitQueue({ maxDepth: 100, maxWaitMs: 10_000, now: () => Date.now(), ...opts });
}

beforeEach(() => {
  vi.useFakeTimers();
  order = [];
});

afterEach(() => {
  vi.useRealTimers();
});

describe('FairWaitQueue: grants', () => {
  it('is FIFO within a tenant and reports depth', async () => {
    const depths: number[] = [];
    const q = queue({ onDepth: (d) => depths.push(d) });
    const a = [1, 2, 3].map((i) => track(`a${i}`, q.wait('A')));
    expect(q.depth).toBe(3);
    expect(q.depthOf('A')).toBe(3);
    expect(q.depthOf('B')).toBe(0);
    expect(q.grant()).toBe(1);
    expect(q.grant(5)).toBe(2);
    expect(q.grant()).toBe(0);
    await flush();
    expect(order).toEqual(['a1', 'a2', 'a3']);
    expect(a.map((t) => t.state)).toEqual(['granted', 'granted', 'granted']);
    expect(q.depth).toBe(0);
    expect(q.depthOf('A')).toBe(0);
    expect(depths).toEqual([1, 2, 3, 2, 1, 0]);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('round-robins across tenants', async () => {
    const q = queue();
    for (const l of ['a1', 'a2', 'a3', 'b1', 'b2', 'c1']) track(l, q.wait(l[0]!.toUpperCase()));
    expect(q.grant(6)).toBe(6);
    await flush();
    expect(order).toEqual(['a1', 'b1', 'c1', 'a2', 'b2', 'a3']);
  });

  it('a tenant that starts waiting joins the end of the current round', async () => {
    const q = queue();
    for (const l of ['a1', 'a2', 'a3', 'b1', 'b2']) track(l, q.wait(l[0]!.toUpperCase()));
    q.grant(); // a1; next is B
    track('c1', q.wait('C'));
    q.grant(4);
    await flush();
    expect(order).toEqual(['a1', 'b1', 'a2', 'c1', 'b2']);
  });

  it('one waiter of a quiet tenant is granted within one round of a flooding tenant', async () => {
    const q = queue({ maxDepth: 2000 });
    for (let i = 0; i < 1000; i++) track(`a${i}`, q.wait('A'));
    const b = track('b', q.wait('B'));
    q.grant(2);
    await flush();
    expect(b.state).toBe('granted');
    expect(order).toEqual(['a0', 'b']);
    expect(q.depthOf('A')).toBe(999);
    q.clear();
    await flush();
  });
});

describe('FairWaitQueue: bound and fair share', () => {
  it('refuses when full with IP_OVERLOADED and retryAfterS', async () => {
    const q = queue({ maxDepth: 2, retryAfterS: 3 });
    track('a1', q.wait('A'));
    track('a2', q.wait('A'));
    const a3 = track('a3', q.wait('A'));
    await flush();
    expect(a3.state).toBe('rejected');
    expect(a3.error?.code).toBe('IP_OVERLOADED');
    expect(a3.error?.status).toBe(503);
    expect(a3.error?.retryAfterS).toBe(3);
    expect(q.depth).toBe(2);
    q.clear();
    await flush();
  });

  it('maxDepth 0 refuses every wait', async () => {
    const q = queue({ maxDepth: 0 });
    const a = track('a', q.wait('A'));
    await flush();
    expect(a.error?.code).toBe('IP_OVERLOADED');
    expect(q.depth).toBe(0);
  });

  it('a tenant under its fair share evicts the newest waiter of the largest tenant', async () => {
    const q = queue({ maxDepth: 4 });
    const a = [1, 2, 3, 4].map((i) => track(`a${i}`, q.wait('A')));
    const b1 = track('b1', q.wait('B')); // share 2: evicts a4
    await flush();
    expect(a.map((t) => t.state)).toEqual(['pending', 'pending', 'pending', 'rejected']);
    expect(a[3]!.error?.code).toBe('IP_OVERLOADED');
    expect(b1.state).toBe('pending');
    expect([q.depthOf('A'), q.depthOf('B'), q.depth]).toEqual([3, 1, 4]);

    track('b2', q.wait('B')); // evicts a3
    await flush();
    expect(a[2]!.state).toBe('rejected');
    expect([q.depthOf('A'), q.depthOf('B')]).toEqual([2, 2]);

    // at their shares: no flip-flop, newcomers of either are refused
    const b3 = track('b3', q.wait('B'));
    const a5 = track('a5', q.wait('A'));
    await flush();
    expect(b3.error?.code).toBe('IP_OVERLOADED');
    expect(a5.error?.code).toBe('IP_OVERLOADED');
    expect([q.depthOf('A'), q.depthOf('B')]).toEqual([2, 2]);

    track('c1', q.wait('C')); // share 4/3: evicts the newest of a largest tenant (A: a2)
    await flush();
    expect(a[1]!.state).toBe('rejected');
    expect([q.depthOf('A'), q.depthOf('B'), q.depthOf('C')]).toEqual([1, 2, 1]);

    track('d1', q.wait('D')); // share 1: evicts b2
    await flush();
    expect([q.depthOf('A'), q.depthOf('B'), q.depthOf('C'), q.depthOf('D')]).toEqual([1, 1, 1, 1]);

    const e1 = track('e1', q.wait('E')); // nobody holds 2 more than E: refused
    await flush();
    expect(e1.error?.code).toBe('IP_OVERLOADED');
    expect(q.depth).toBe(4);

    expect(q.grant(10)).toBe(4);
    await flush();
    expect(order).toEqual(['a1', 'b1', 'c1', 'd1']);
  });

  it('a tenant with one waiter less than the largest is refused, not swapped', async () => {
    const q = queue({ maxDepth: 3 });
    track('a1', q.wait('A'));
    track('a2', q.wait('A'));
    track('b1', q.wait('B'));
    const b2 = track('b2', q.wait('B')); // B 1 < share 1.5, but A holds only 1 more
    await flush();
    expect(b2.error?.code).toBe('IP_OVERLOADED');
    expect([q.depthOf('A'), q.depthOf('B')]).toEqual([2, 1]);
    q.clear();
    await flush();
  });
});

describe('FairWaitQueue: abort, timeout, clear', () => {
  it('an aborted waiter is removed at once with IP_CLIENT_CLOSED', async () => {
    const q = queue();
    const ac = new AbortController();
    const a1 = track('a1', q.wait('A', ac.signal));
    const a2 = track('a2', q.wait('A'));
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(1);
    ac.abort();
    expect(q.depth).toBe(1);
    expect(q.depthOf('A')).toBe(1);
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(0);
    q.grant();
    await flush();
    expect(a1.state).toBe('rejected');
    expect(a1.error?.code).toBe('IP_CLIENT_CLOSED');
    expect(a1.error?.status).toBe(499);
    expect(a2.state).toBe('granted');
  });

  it('an already aborted signal never enters the queue', async () => {
    const depths: number[] = [];
    const q = queue({ onDepth: (d) => depths.push(d) });
    const ac = new AbortController();
    ac.abort();
    const a = track('a', q.wait('A', ac.signal));
    await flush();
    expect(a.error?.code).toBe('IP_CLIENT_CLOSED');
    expect(q.depth).toBe(0);
    expect(depths).toEqual([]);
  });

  it('removes the abort listener when granted, evicted, timed out or cleared', async () => {
    const q = queue({ maxDepth: 2, maxWaitMs: 100 });
    const s1 = new AbortController().signal;
    const s2 = new AbortController().signal;
    const s3 = new AbortController().signal;
    track('a1', q.wait('A', s1));
    track('a2', q.wait('A', s2));
    q.grant();
    expect(getEventListeners(s1, 'abort')).toHaveLength(0);
    const a3 = track('a3', q.wait('A', s3)); // full: A 2
    track('b1', q.wait('B')); // B 0 < share 1, A holds 2 more → evicts a3
    await flush();
    expect(a3.error?.code).toBe('IP_OVERLOADED');
    expect(getEventListeners(s3, 'abort')).toHaveLength(0);
    expect(getEventListeners(s2, 'abort')).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(100);
    expect(getEventListeners(s2, 'abort')).toHaveLength(0);
    const s4 = new AbortController().signal;
    track('c1', q.wait('C', s4));
    q.clear();
    expect(getEventListeners(s4, 'abort')).toHaveLength(0);
    await flush();
  });

  it('rejects a waiter after maxWaitMs with IP_OVERLOADED, each on its own deadline', async () => {
    const q = queue({ maxWaitMs: 100, retryAfterS: 2 });
    const a1 = track('a1', q.wait('A'));
    await vi.advanceTimersByTimeAsync(50);
    const b1 = track('b1', q.wait('B'));
    await vi.advanceTimersByTimeAsync(49);
    expect([a1.state, b1.state]).toEqual(['pending', 'pending']);
    await vi.advanceTimersByTimeAsync(1);
    expect([a1.state, b1.state]).toEqual(['rejected', 'pending']);
    expect(a1.error?.code).toBe('IP_OVERLOADED');
    expect(a1.error?.retryAfterS).toBe(2);
    expect(q.depth).toBe(1);
    await vi.advanceTimersByTimeAsync(49);
    expect(b1.state).toBe('pending');
    await vi.advanceTimersByTimeAsync(1);
    expect(b1.state).toBe('rejected');
    expect(q.depth).toBe(0);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('a granted head does not expire the next waiter early', async () => {
    const q = queue({ maxWaitMs: 100 });
    const a1 = track('a1', q.wait('A'));
    await vi.advanceTimersByTimeAsync(50);
    const a2 = track('a2', q.wait('A'));
    q.grant();
    await vi.advanceTimersByTimeAsync(50); // a1's deadline: nothing due
    expect([a1.state, a2.state]).toEqual(['granted', 'pending']);
    await vi.advanceTimersByTimeAsync(49);
    expect(a2.state).toBe('pending');
    await vi.advanceTimersByTimeAsync(1);
    expect(a2.state).toBe('rejected');
    expect(vi.getTimerCount()).toBe(0);
  });

  it('uses one timer for all waiters and none when empty', async () => {
    const q = queue();
    for (let i = 0; i < 50; i++) track(`a${i}`, q.wait(`T${i % 5}`));
    expect(vi.getTimerCount()).toBe(1);
    q.grant(50);
    expect(vi.getTimerCount()).toBe(0);
    await flush();
    expect(order).toHaveLength(50);
  });

  it('clear rejects every waiter with IP_OVERLOADED or the given error', async () => {
    const q = queue();
    const a = track('a', q.wait('A'));
    const b = track('b', q.wait('B'));
    q.clear();
    await flush();
    expect([a.error?.code, b.error?.code]).toEqual(['IP_OVERLOADED', 'IP_OVERLOADED']);
    expect(q.depth).toBe(0);
    expect(vi.getTimerCount()).toBe(0);

    const err = new InferplaneError('IP_MODEL_NOT_FOUND', 'model removed');
    const c = track('c', q.wait('C'));
    q.clear(err);
    await flush();
    expect(c.error).toBe(err);
    // the queue still works afterwards
    const d = track('d', q.wait('D'));
    expect(q.grant()).toBe(1);
    await flush();
    expect(d.state).toBe('granted');
  });
});
