// A bounded wait queue, fair across tenants: requests wait here while every replica is saturated,
// and `grant(n)` lets n of them through when capacity frees up.
//
// Order: round-robin over the tenants that have waiters, FIFO within a tenant. A tenant that
// starts waiting joins at the end of the current round, so with one tenant holding 1000 waiters
// and another holding 1, the latter is granted within one round (at most one grant per other
// tenant before it).
//
// Bound and fair share: at most `maxDepth` waiters. When the queue is full, a newcomer of tenant T
// evicts the newest waiter of the tenant M holding the most waiters if
//   count(T) < maxDepth / (number of tenants waiting, T included)   (T is under its fair share)
//   and count(M) >= count(T) + 2                                     (the move makes it fairer);
// the evicted waiter is rejected with IP_OVERLOADED. Otherwise the newcomer is refused with
// IP_OVERLOADED. So a flooding tenant cannot lock others out of the queue, and shares never
// flip-flop between two tenants.
//
// Ends of a wait: granted (resolves); waited `maxWaitMs` (IP_OVERLOADED); `signal` aborted
// (IP_CLIENT_CLOSED, the entry is removed at once; an already aborted signal never enters);
// `clear()` (IP_OVERLOADED or the given error). Every rejection of IP_OVERLOADED carries
// `retryAfterS` (default 1).
//
// Cost: every operation is O(1). Waiters sit in two intrusive doubly linked lists: their tenant's
// FIFO and one global list in arrival order. As maxWaitMs is the same for all, arrival order is
// deadline order, so ONE timer (unref'd) serves every waiter: it is armed for the oldest waiter's
// deadline and, when it fires, expires what is due by the injected clock and re-arms (lazily: a
// grant or abort does not touch it). Tenants with waiters form a circular list (the round-robin
// ring); tenants are also bucketed by waiter count so the largest is found without a scan.
// Abort listeners are removed when a waiter settles. A tenant without waiters holds no state.
import { performance } from 'node:perf_hooks';
import { InferplaneError } from '../core/errors.js';
import type { Cancellation } from './h1/client.js';

interface Waiter {
  tq: TenantQueue;
  deadline: number;
  resolve: () => void;
  reject: (e: InferplaneError) => void;
  signal: Cancellation | undefined;
  onAbort: (() => void) | undefined;
  // tenant FIFO
  tPrev: Waiter | undefined;
  tNext: Waiter | undefined;
  // global arrival order
  gPrev: Waiter | undefined;
  gNext: Waiter | undefined;
}

interface TenantQueue {
  tenant: string;
  count: number;
  head: Waiter | undefined;
  tail: Waiter | undefined;
  // round-robin ring
  prev: TenantQueue;
  next: TenantQueue;
}

export interface FairWaitQueueOptions {
  /** Most waiters at once (0: nobody waits; every wait is refused). */
  maxDepth: number;
  /** A waiter not granted within this many ms is rejected with IP_OVERLOADED. */
  maxWaitMs: number;
  /** Retry-After on IP_OVERLOADED rejections (default 1). */
  retryAfterS?: number;
  /** Clock in ms (default performance.now()). */
  now?: () => number;
  /** Called with the new depth on every change. */
  onDepth?: (depth: number) => void;
}

export class FairWaitQueue {
  readonly #maxDepth: number;
  readonly #maxWaitMs: number;
  readonly #retryAfterS: number;
  readonly #now: () => number;
  readonly #onDepth: ((depth: number) => void) | undefined;

  readonly #tenants = new Map<string, TenantQueue>();
  /** The tenant served next; undefined when nobody waits. */
  #cursor: TenantQueue | undefined;
  #gHead: Waiter | undefined;
  #gTail: Waiter | undefined;
  #depth = 0;
  /** Tenants by waiter count (count ≥ 1), for the largest tenant in O(1). */
  readonly #byCount = new Map<number, Set<TenantQueue>>();
  #maxCount = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(opts: FairWaitQueueOptions) {
    this.#maxDepth = Math.max(0, Math.floor(opts.maxDepth));
    this.#maxWaitMs = Math.max(0, opts.maxWaitMs);
    this.#retryAfterS = opts.retryAfterS ?? 1;
    this.#now = opts.now ?? (() => performance.now());
    this.#onDepth = opts.onDepth;
  }

  get depth(): number {
    return this.#depth;
  }

  depthOf(tenant: string): number {
    return this.#tenants.get(tenant)?.count ?? 0;
  }

  /**
   * Resolves when granted; rejects with IP_OVERLOADED (queue full, evicted by fair share, or
   * waited maxWaitMs) or IP_CLIENT_CLOSED (signal aborted; the entry is removed at once).
   */
  wait(tenant: string, signal?: Cancellation): Promise<void> {
    if (signal?.aborted) {
      return Promise.reject(
        new InferplaneError('IP_CLIENT_CLOSED', 'client closed the request while queued'),
      );
    }
    if (this.#depth >= this.#maxDepth && !this.#evictFor(tenant)) {
      return Promise.reject(this.#overloaded('gateway queue is full'));
    }
    return new Promise<void>((resolve, reject) => {
      let tq = this.#tenants.get(tenant);
      if (tq === undefined) tq = this.#addTenant(tenant);
      const w: Waiter = {
        tq,
        deadline: this.#now() + this.#maxWaitMs,
        resolve,
        reject,
        signal,
        onAbort: undefined,
        tPrev: tq.tail,
        tNext: undefined,
        gPrev: this.#gTail,
        gNext: undefined,
      };
      if (tq.tail) tq.tail.tNext = w;
      else tq.head = w;
      tq.tail = w;
      if (this.#gTail) this.#gTail.gNext = w;
      else this.#gHead = w;
      this.#gTail = w;
      this.#setCount(tq, tq.count + 1);
      if (signal !== undefined) {
        w.onAbort = () => {
          this.#remove(w);
          reject(new InferplaneError('IP_CLIENT_CLOSED', 'client closed the request while queued'));
        };
        signal.addEventListener('abort', w.onAbort, { once: true });
      }
      this.#depth++;
      if (this.#timer === undefined) this.#arm();
      this.#onDepth?.(this.#depth);
    });
  }

  /** Wakes up to n waiters (default 1), tenants round-robin, FIFO within a tenant; returns how many. */
  grant(n = 1): number {
    let granted = 0;
    while (granted < n && this.#cursor !== undefined) {
      const tq = this.#cursor;
      const w = tq.head!;
      this.#cursor = tq.next; // advance first: #remove may drop tq from the ring
      this.#remove(w);
      w.resolve();
      granted++;
    }
    return granted;
  }

  /** Rejects every waiter with the given error, or IP_OVERLOADED (shutdown, model removed). */
  clear(err?: InferplaneError): void {
    const e = err ?? this.#overloaded('gateway queue cleared');
    while (this.#gHead !== undefined) {
      const w = this.#gHead;
      this.#remove(w);
      w.reject(e);
    }
  }

  #overloaded(message: string): InferplaneError {
    return new InferplaneError('IP_OVERLOADED', message, { retryAfterS: this.#retryAfterS });
  }

  /** The queue is full: make room for `tenant` by the fair-share rule. True when room was made. */
  #evictFor(tenant: string): boolean {
    if (this.#maxDepth === 0) return false;
    const own = this.#tenants.get(tenant);
    const count = own?.count ?? 0;
    const tenantsWaiting = this.#tenants.size + (own === undefined ? 1 : 0);
    if (count * tenantsWaiting >= this.#maxDepth) return false; // count >= fair share
    if (this.#maxCount < count + 2) return false;
    const bucket = this.#byCount.get(this.#maxCount);
    let victim: TenantQueue | undefined;
    if (bucket)
      for (const tq of bucket)
        if (tq !== own) {
          victim = tq;
          break;
        }
    if (victim === undefined) return false;
    const w = victim.tail!;
    this.#remove(w);
    w.reject(
      this.#overloaded('evicted from the gateway queue: another tenant needed its fair share'),
    );
    return true;
  }

  #addTenant(tenant: string): TenantQueue {
    const tq = { tenant, count: 0, head: undefined, tail: undefined } as TenantQueue;
    const c = this.#cursor;
    if (c === undefined) {
      tq.prev = tq;
      tq.next = tq;
      this.#cursor = tq;
    } else {
      // just before the cursor: the end of the current round
      tq.prev = c.prev;
      tq.next = c;
      c.prev.next = tq;
      c.prev = tq;
    }
    this.#tenants.set(tenant, tq);
    return tq;
  }

  #setCount(tq: TenantQueue, count: number): void {
    if (tq.count > 0) {
      const b = this.#byCount.get(tq.count)!;
      b.delete(tq);
      if (b.size === 0) this.#byCount.delete(tq.count);
    }
    tq.count = count;
    if (count > 0) {
      let b = this.#byCount.get(count);
      if (b === undefined) this.#byCount.set(count, (b = new Set()));
      b.add(tq);
    }
    // counts move by one, so the maximum moves by at most one
    if (count > this.#maxCount) this.#maxCount = count;
    else if (!this.#byCount.has(this.#maxCount))
      this.#maxCount = this.#byCount.size === 0 ? 0 : this.#maxCount - 1;
  }

  /** Unlinks a waiter from both lists (dropping its tenant when it was the last) and its listener. */
  #remove(w: Waiter): void {
    const tq = w.tq;
    if (w.tPrev) w.tPrev.tNext = w.tNext;
    else tq.head = w.tNext;
    if (w.tNext) w.tNext.tPrev = w.tPrev;
    else tq.tail = w.tPrev;
    if (w.gPrev) w.gPrev.gNext = w.gNext;
    else this.#gHead = w.gNext;
    if (w.gNext) w.gNext.gPrev = w.gPrev;
    else this.#gTail = w.gPrev;
    w.tPrev = w.tNext = w.gPrev = w.gNext = undefined;
    if (w.signal !== undefined && w.onAbort !== undefined) {
      w.signal.removeEventListener('abort', w.onAbort);
      w.onAbort = undefined;
    }
    this.#setCount(tq, tq.count - 1);
    if (tq.count === 0) {
      this.#tenants.delete(tq.tenant);
      if (tq.next === tq) {
        this.#cursor = undefined;
      } else {
        if (this.#cursor === tq) this.#cursor = tq.next;
        tq.prev.next = tq.next;
        tq.next.prev = tq.prev;
      }
    }
    this.#depth--;
    if (this.#depth === 0 && this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    this.#onDepth?.(this.#depth);
  }

  /** Arms the one timer for the oldest waiter's deadline. */
  #arm(): void {
    const head = this.#gHead;
    if (head === undefined) return;
    const delay = Math.max(1, Math.ceil(head.deadline - this.#now()));
    this.#timer = setTimeout(() => this.#expire(), delay);
    this.#timer.unref();
  }

  #expire(): void {
    this.#timer = undefined;
    const now = this.#now();
    while (this.#gHead !== undefined && this.#gHead.deadline <= now) {
      const w = this.#gHead;
      this.#remove(w);
      w.reject(this.#overloaded(`waited ${this.#maxWaitMs} ms in the gateway queue`));
    }
    if (this.#timer === undefined) this.#arm();
  }
}
