// Circuit breakers, one per replica: stop sending to a replica that keeps failing, probe it with
// one request at a time once a backoff has passed, and close again on the first success.
//
// How the gateway uses it (one request, one attempt):
//   1. Filter candidates with `allow(id)` — a QUERY: it consumes nothing, call it any number of
//      times (the picker's `allow` filter).
//   2. When the request is actually sent to the chosen replica, call `acquire(id)`. In closed
//      state it returns true and records nothing. In half-open it claims the single probe slot
//      (true), or returns false when a probe is already in flight (do not send; pick again).
//      In open state it returns false.
//   3. Settle every acquire() that returned true with exactly one of:
//        onSuccess(id)  the replica answered (any response that is not a replica failure);
//        onFailure(id)  a replica failure (connect error, 5xx from the engine, upstream timeout);
//        cancel(id)     not sent after all, or the CLIENT went away (not the replica's fault).
//      (`onSuccess`/`onFailure` without acquire are accepted too: they count the same.)
//
// Transitions (onChange is called on each):
//   closed    → open       after `failureThreshold` consecutive failures (default 5); opens for
//                          `openMs` (default 5000).
//   open      → half-open  once the open period has elapsed (observed lazily by allow/acquire/
//                          state: no timers).
//   half-open → closed     on a success: failures and backoff reset.
//   half-open → open       on a failure: the open period doubles, capped at `maxOpenMs` (60000).
// In open state, settlements of requests sent before it opened are ignored (a late success is no
// proof of recovery; a late failure does not extend the backoff). In half-open, any settlement
// counts (a late success closes it, a late failure re-opens it).
//
// A probe in flight longer than the current open period no longer holds the slot (a hung probe
// cannot wedge the breaker): allow() is true again and the next acquire() claims a new probe.
// A late settlement of the old probe still counts as above.
//
// State: a replica in closed state with no failures has no entry (allow() on it is one Map miss);
// entries are deleted on close. `retain(ids)` drops replicas that left the snapshot (without
// calling onChange).
import { performance } from 'node:perf_hooks';

export type BreakerState = 'closed' | 'open' | 'half-open';

export interface CircuitBreakerOptions {
  /** Consecutive failures that open the breaker (default 5). */
  failureThreshold?: number;
  /** First open period in ms (default 5000); doubles on each re-open from half-open. */
  openMs?: number;
  /** Cap of the open period (default 60000). */
  maxOpenMs?: number;
  /** Clock in ms (default performance.now()). */
  now?: () => number;
  onChange?: (replicaId: string, state: BreakerState) => void;
}

interface Entry {
  state: BreakerState;
  /** Consecutive failures while closed. */
  failures: number;
  /** Current open period (backoff) in ms. */
  openMs: number;
  /** When the open period ends (open state). */
  openUntil: number;
  /** When the half-open probe was acquired; undefined when no probe is in flight. */
  probeAt: number | undefined;
}

export class CircuitBreakers {
  readonly #threshold: number;
  readonly #openMs: number;
  readonly #maxOpenMs: number;
  readonly #now: () => number;
  readonly #onChange: ((replicaId: string, state: BreakerState) => void) | undefined;
  readonly #entries = new Map<string, Entry>();

  constructor(opts: CircuitBreakerOptions = {}) {
    this.#threshold = Math.max(1, Math.floor(opts.failureThreshold ?? 5));
    this.#openMs = Math.max(0, opts.openMs ?? 5000);
    this.#maxOpenMs = Math.max(this.#openMs, opts.maxOpenMs ?? 60_000);
    this.#now = opts.now ?? (() => performance.now());
    this.#onChange = opts.onChange;
  }

  /**
   * May a request go to this replica now? A pure query for filtering: closed → true; open →
   * false; half-open → true when no (live) probe is in flight.
   */
  allow(replicaId: string): boolean {
    const e = this.#entries.get(replicaId);
    if (e === undefined) return true;
    const now = this.#now();
    switch (this.#current(replicaId, e, now)) {
      case 'closed':
        return true;
      case 'open':
        return false;
      case 'half-open':
        return !this.#probeLive(e, now);
    }
  }

  /**
   * The request is being sent to this replica: true to go ahead (in half-open this claims the
   * probe slot), false to not send it. Settle a true with onSuccess, onFailure or cancel.
   */
  acquire(replicaId: string): boolean {
    const e = this.#entries.get(replicaId);
    if (e === undefined) return true;
    const now = this.#now();
    switch (this.#current(replicaId, e, now)) {
      case 'closed':
        return true;
      case 'open':
        return false;
      case 'half-open':
        if (this.#probeLive(e, now)) return false;
        e.probeAt = now;
        return true;
    }
  }

  /** An acquired request was not sent (or the client went away): frees a half-open probe slot. */
  cancel(replicaId: string): void {
    const e = this.#entries.get(replicaId);
    if (e !== undefined && e.state === 'half-open') e.probeAt = undefined;
  }

  /** The replica answered: closed, failures and backoff reset (ignored while open). */
  onSuccess(replicaId: string): void {
    const e = this.#entries.get(replicaId);
    if (e === undefined) return;
    const state = this.#current(replicaId, e, this.#now());
    if (state === 'open') return;
    this.#entries.delete(replicaId);
    if (state !== 'closed') this.#onChange?.(replicaId, 'closed');
  }

  /**
   * A replica failure: counts consecutive failures while closed (threshold → open); in half-open
   * re-opens with the open period doubled (capped); ignored while open.
   */
  onFailure(replicaId: string): void {
    const now = this.#now();
    let e = this.#entries.get(replicaId);
    if (e === undefined) {
      e = { state: 'closed', failures: 0, openMs: this.#openMs, openUntil: 0, probeAt: undefined };
      this.#entries.set(replicaId, e);
    }
    switch (this.#current(replicaId, e, now)) {
      case 'closed':
        e.failures++;
        if (e.failures >= this.#threshold) this.#open(replicaId, e, now, this.#openMs);
        return;
      case 'open':
        return;
      case 'half-open':
        this.#open(replicaId, e, now, Math.min(this.#maxOpenMs, e.openMs * 2));
        return;
    }
  }

  state(replicaId: string): BreakerState {
    const e = this.#entries.get(replicaId);
    return e === undefined ? 'closed' : this.#current(replicaId, e, this.#now());
  }

  /** Drops the state of replicas not in this set (they left the snapshot). */
  retain(replicaIds: ReadonlySet<string>): void {
    for (const id of this.#entries.keys()) if (!replicaIds.has(id)) this.#entries.delete(id);
  }

  #open(replicaId: string, e: Entry, now: number, openMs: number): void {
    e.state = 'open';
    e.openMs = openMs;
    e.openUntil = now + openMs;
    e.failures = 0;
    e.probeAt = undefined;
    this.#onChange?.(replicaId, 'open');
  }

  /** The state at `now`: an elapsed open period turns into half-open here. */
  #current(replicaId: string, e: Entry, now: number): BreakerState {
    if (e.state === 'open' && now >= e.openUntil) {
      e.state = 'half-open';
      e.probeAt = undefined;
      this.#onChange?.(replicaId, 'half-open');
    }
    return e.state;
  }

  /** A probe is in flight and younger than the open period. */
  #probeLive(e: Entry, now: number): boolean {
    return e.probeAt !== undefined && now - e.probeAt < e.openMs;
  }
}
