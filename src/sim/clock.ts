/**
 * Clocks for the simulated engine. Every wait of the engine goes through a {@link Clock}, so the
 * same engine runs against real timers (servers) or a discrete-event {@link VirtualClock} (tests,
 * calibration, benchmarks: deterministic and instant, no real waiting).
 *
 * All times are simulated milliseconds. `realClock(timeScale)` maps them onto real time:
 * real ms = simulated ms × timeScale (0.1 runs ten times faster than the simulated GPU).
 */

/** Opaque handle of a pending timer. */
export type TimerHandle = object;

export interface Clock {
  /** Simulated milliseconds (monotonic, arbitrary origin). */
  now(): number;
  /** Calls `fn` once, `ms` simulated milliseconds from now (negative or NaN = 0). */
  setTimer(ms: number, fn: () => void): TimerHandle;
  /** Cancels a pending timer (no-op when it already ran or was cleared). */
  clearTimer(handle: TimerHandle): void;
}

interface RealHandle {
  t: NodeJS.Timeout;
}

/** A clock on Node's timers: simulated ms = `performance.now()` / timeScale. */
export function realClock(timeScale = 1): Clock {
  if (!Number.isFinite(timeScale) || timeScale <= 0)
    throw new RangeError('timeScale must be a positive number');
  return {
    now: () => performance.now() / timeScale,
    setTimer(ms, fn) {
      const delay = Number.isFinite(ms) && ms > 0 ? ms * timeScale : 0;
      const h: RealHandle = { t: setTimeout(fn, delay) };
      return h;
    },
    clearTimer(handle) {
      clearTimeout((handle as RealHandle).t);
    },
  };
}

interface VirtualTimer {
  at: number;
  seq: number;
  fn: (() => void) | null;
}

/**
 * Discrete-event clock: time only moves when told to, jumping from one timer to the next. Timers
 * due at the same time run in the order they were set. A binary heap keeps `setTimer` O(log n).
 */
export class VirtualClock implements Clock {
  #now: number;
  #seq = 0;
  readonly #heap: VirtualTimer[] = [];

  constructor(startMs = 0) {
    this.#now = startMs;
  }

  now(): number {
    return this.#now;
  }

  setTimer(ms: number, fn: () => void): TimerHandle {
    const delay = Number.isFinite(ms) && ms > 0 ? ms : 0;
    const t: VirtualTimer = { at: this.#now + delay, seq: this.#seq++, fn };
    this.#push(t);
    return t;
  }

  clearTimer(handle: TimerHandle): void {
    (handle as VirtualTimer).fn = null; // lazily dropped when it reaches the top of the heap
  }

  /** Number of pending (not cleared) timers. */
  get pending(): number {
    let n = 0;
    for (const t of this.#heap) if (t.fn) n++;
    return n;
  }

  /** Time of the next pending timer, or null when there is none. */
  nextAt(): number | null {
    this.#dropCleared();
    return this.#heap[0]?.at ?? null;
  }

  /** Runs the next timer (moving time to it). Returns false when no timer is pending. */
  advance(): boolean {
    this.#dropCleared();
    const t = this.#pop();
    if (!t) return false;
    if (t.at > this.#now) this.#now = t.at;
    const fn = t.fn;
    t.fn = null;
    fn?.();
    return true;
  }

  /**
   * Runs timers until none is pending. Returns the number run. Throws after `maxEvents` (a guard
   * against an engine that would re-arm timers forever).
   */
  runUntilIdle(maxEvents = 10_000_000): number {
    let n = 0;
    while (this.advance()) {
      if (++n >= maxEvents) throw new Error(`VirtualClock: still busy after ${maxEvents} events`);
    }
    return n;
  }

  /** Runs every timer due at or before `ms`, then sets the time to `ms` (if later). */
  runUntil(ms: number): number {
    let n = 0;
    for (;;) {
      const at = this.nextAt();
      if (at === null || at > ms) break;
      this.advance();
      n++;
    }
    if (ms > this.#now) this.#now = ms;
    return n;
  }

  /**
   * Runs timers, letting promise callbacks (`await`) run between events, until `done` settles or no
   * timer is left. Use when the code under test awaits between timer events.
   */
  async runUntilSettled<T>(done: Promise<T>, maxEvents = 10_000_000): Promise<T> {
    let settled = false;
    const p = done.finally(() => {
      settled = true;
    });
    let n = 0;
    for (;;) {
      await flushMicrotasks();
      if (settled) break;
      if (!this.advance()) break;
      if (++n >= maxEvents) throw new Error(`VirtualClock: still busy after ${maxEvents} events`);
    }
    return p;
  }

  #dropCleared(): void {
    while (this.#heap.length > 0 && this.#heap[0]?.fn === null) this.#pop();
  }

  #less(a: VirtualTimer, b: VirtualTimer): boolean {
    return a.at < b.at || (a.at === b.at && a.seq < b.seq);
  }

  #push(t: VirtualTimer): void {
    const h = this.#heap;
    h.push(t);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      const parent = h[p] as VirtualTimer;
      if (!this.#less(t, parent)) break;
      h[i] = parent;
      i = p;
    }
    h[i] = t;
  }

  #pop(): VirtualTimer | undefined {
    const h = this.#heap;
    const top = h[0];
    const last = h.pop();
    if (top === undefined || last === undefined || h.length === 0) return top;
    let i = 0;
    const n = h.length;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      let c = l;
      if (r < n && this.#less(h[r] as VirtualTimer, h[l] as VirtualTimer)) c = r;
      const child = h[c] as VirtualTimer;
      if (!this.#less(child, last)) break;
      h[i] = child;
      i = c;
    }
    h[i] = last;
    return top;
  }
}

async function flushMicrotasks(): Promise<void> {
  for (let i = 0; i < 5; i++) await Promise.resolve();
}
