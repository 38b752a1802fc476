// Splits each tenant's gateway limits between the workers that enforce them (node:cluster
// workers behind one port, or gateway replicas), by demand. Each worker runs its own
// TenantLimiter; once a round the coordinator collects every worker's `takeDemand()`, `report`s
// it here, calls `compute` and sends each worker its shares (`TenantLimiter.setShares`).
//
// Why demand-proportional shares: admission stays local (no per-request coordination, no shared
// state on the hot path), and because a tenant's rate shares sum to 1 and its concurrency slots
// to its maxConcurrency, the sum over workers never exceeds the tenant's configured limits,
// however the clients' connections happen to be spread. Following demand lets one busy worker
// use (nearly) the whole limit when the others are idle, and it adapts within one round: a
// refused request still counts as demand, so a worker that starts seeing a tenant is given a
// larger share in the next round.
//
// Per tenant with some limit set, per known worker w (those that reported, not removed):
//   d_w     EWMA (alpha 0.5, kept per worker and tenant across rounds, first value taken as is)
//           of attempts + inflight, or of token estimates when only tokensPerMinute is set.
//   rate_w  FLOOR/N + (1 − FLOOR) × d_w / Σd, or 1/N each when Σd = 0 (FLOOR = 0.1): Σ = 1, and
//           an idle worker keeps 0.1/N of the rate so it can serve a new client at once.
//   slots   maxConcurrency c split by largest remainder of c × (d_w + inflight_w) / Σ, so the
//           slots sum to c exactly, after two floors: every worker first gets as many slots as
//           it has requests in flight (larger demand first while c allows), then every worker
//           with demand in its latest round and no slot yet gets one (larger demand first while
//           c allows; so all of them when c covers their number and their requests in flight).
//           The in-flight floor comes first because a worker given fewer slots than it holds
//           cannot give any back before its requests end, and another worker's new slot would
//           push the total over c.
// A worker's latest report is used until it sends another (a late report is not taken as zero).
// Tenants whose limits vanished and removed workers are dropped from the state.
//
// Approximate: the requests burst across N workers can exceed the global burst by N − 1 (each
// worker can hold one whole request); shares lag demand by one round (a shift in traffic is
// served at the old split until then, and the idle-worker floor leaves 0.1/N of the rate unused
// on each idle worker); concurrency can exceed c transiently when a worker holds more requests
// than its new slots (admitted between its report and its new shares, or with the default
// shares before the first round): it admits nothing more until it is back under them. A worker
// that holds all c requests whenever a round is computed keeps all c slots (its freed slots go
// to its own next requests): a new client on another worker waits until a round finds one free,
// where a single limiter would let the two race for each freed slot.
import type { TenantLimits } from '../core/types.js';
import type { LimitShare, TenantDemand } from './limits.js';

/** Part of the rate every worker keeps regardless of demand, split evenly. */
const FLOOR = 0.1;
/** EWMA weight of the newest round. */
const ALPHA = 0.5;

interface WorkerEntry {
  demand: ReadonlyMap<string, TenantDemand>;
}

interface TenantEntry {
  /** Demand measured in token estimates (only tokensPerMinute set) rather than requests. */
  tokens: boolean;
  /** Smoothed demand per worker. */
  d: Map<string, number>;
}

function positive(v: number | undefined): v is number {
  return typeof v === 'number' && Number.isFinite(v) && v > 0;
}

function count(v: number | undefined): number {
  return typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : 0;
}

export class LimitShareBalancer {
  readonly #workers = new Map<string, WorkerEntry>();
  readonly #tenants = new Map<string, TenantEntry>();

  /** Stores `workerId`'s latest round (its limiter's `takeDemand()`); a new worker joins. */
  report(workerId: string, demand: ReadonlyMap<string, TenantDemand>): void {
    const w = this.#workers.get(workerId);
    if (w === undefined) this.#workers.set(workerId, { demand: new Map(demand) });
    else w.demand = new Map(demand);
  }

  /** Forgets a worker and its smoothed demand; its shares go to the others at the next round. */
  removeWorker(workerId: string): void {
    if (!this.#workers.delete(workerId)) return;
    for (const t of this.#tenants.values()) t.d.delete(workerId);
  }

  /** Known workers, in the order they first reported. */
  workers(): string[] {
    return [...this.#workers.keys()];
  }

  /**
   * One round: every known worker's share of every tenant with some limit set (workerId →
   * tenantId → share). Updates the smoothed demand; drops tenants absent from `limits` or
   * without any limit.
   */
  compute(limits: ReadonlyMap<string, TenantLimits>): Map<string, Map<string, LimitShare>> {
    for (const id of this.#tenants.keys()) {
      if (!limited(limits.get(id))) this.#tenants.delete(id);
    }
    const ids = [...this.#workers.keys()];
    const reports = ids.map((id) => this.#workers.get(id)!.demand);
    const n = ids.length;
    const out = new Map<string, Map<string, LimitShare>>();
    for (const id of ids) out.set(id, new Map());
    if (n === 0) return out;

    const d = new Array<number>(n);
    const inflight = new Array<number>(n);
    const active = new Array<boolean>(n);
    for (const [tenantId, lim] of limits) {
      const rps = positive(lim.requestsPerSecond);
      const tpm = positive(lim.tokensPerMinute);
      const conc = positive(lim.maxConcurrency) ? Math.floor(lim.maxConcurrency) : undefined;
      if (!rps && !tpm && conc === undefined) continue;
      const byTokens = tpm && !rps && conc === undefined;
      let t = this.#tenants.get(tenantId);
      if (t === undefined) {
        t = { tokens: byTokens, d: new Map() };
        this.#tenants.set(tenantId, t);
      } else if (t.tokens !== byTokens) {
        t.tokens = byTokens; // other units: start over
        t.d.clear();
      }

      let sum = 0;
      for (let i = 0; i < n; i++) {
        const dem = reports[i]!.get(tenantId);
        const fl = dem === undefined ? 0 : Math.floor(count(dem.inflight));
        const x = dem === undefined ? 0 : byTokens ? count(dem.tokens) : count(dem.attempts) + fl;
        const prev = t.d.get(ids[i]!);
        const v = prev === undefined ? x : ALPHA * x + (1 - ALPHA) * prev;
        t.d.set(ids[i]!, v);
        d[i] = v;
        inflight[i] = fl;
        active[i] = dem !== undefined && (count(dem.attempts) > 0 || fl > 0);
        sum += v;
      }

      const slots = conc === undefined ? undefined : splitSlots(conc, d, inflight, active, n);
      for (let i = 0; i < n; i++) {
        const rate = n === 1 ? 1 : sum > 0 ? FLOOR / n + ((1 - FLOOR) * d[i]!) / sum : 1 / n;
        const share: LimitShare = slots === undefined ? { rate } : { rate, concurrency: slots[i]! };
        out.get(ids[i]!)!.set(tenantId, share);
      }
    }
    return out;
  }
}

function limited(lim: TenantLimits | undefined): boolean {
  return (
    lim !== undefined &&
    (positive(lim.requestsPerSecond) ||
      positive(lim.tokensPerMinute) ||
      positive(lim.maxConcurrency))
  );
}

/**
 * `c` whole slots over n workers, summing to c exactly: first each worker's in-flight count
 * (larger demand first while they fit), then one per active worker still without a slot (larger
 * demand first), then the rest by largest remainder of each worker's shortfall from c × w / Σw,
 * with w = d + inflight (1 each when all are 0). In-flight counts go first so that no worker is
 * left holding more requests than its slots while another gets new ones: the total in flight
 * stays within c.
 */
function splitSlots(
  c: number,
  d: readonly number[],
  inflight: readonly number[],
  active: readonly boolean[],
  n: number,
): number[] {
  const slots = new Array<number>(n).fill(0);
  // Larger demand first; ties: more in flight, then the worker's order.
  const order = Array.from({ length: n }, (_, i) => i).sort(
    (a, b) => d[b]! - d[a]! || inflight[b]! - inflight[a]! || a - b,
  );
  let left = c;
  for (const i of order) {
    if (left === 0) break;
    const take = Math.min(inflight[i]!, left);
    slots[i] = take;
    left -= take;
  }
  for (const i of order) {
    if (left === 0) break;
    if (active[i] && slots[i] === 0) {
      slots[i] = 1;
      left--;
    }
  }
  if (left === 0) return slots;

  let wsum = 0;
  for (let i = 0; i < n; i++) wsum += d[i]! + inflight[i]!;
  const short = new Array<number>(n);
  let shortSum = 0;
  for (let i = 0; i < n; i++) {
    const w = wsum > 0 ? d[i]! + inflight[i]! : 1;
    const q = (c * w) / (wsum > 0 ? wsum : n);
    short[i] = q > slots[i]! ? q - slots[i]! : 0;
    shortSum += short[i]!;
  }
  if (!(shortSum > 0)) {
    // Only float noise can get here (Σ shortfall ≥ what is left): split evenly.
    short.fill(1);
    shortSum = n;
  }
  const rem = new Array<number>(n);
  let given = 0;
  for (let i = 0; i < n; i++) {
    const q = (left * short[i]!) / shortSum;
    const whole = Math.floor(q);
    slots[i]! += whole;
    given += whole;
    rem[i] = q - whole;
  }
  // The leftover by largest remainder (ties: larger demand order); cycles only on float noise.
  const byRem = order.filter((i) => short[i]! > 0).sort((a, b) => rem[b]! - rem[a]!); // stable
  for (let k = 0; given < left; k++, given++) slots[byRem[k % byRem.length]!]! += 1;
  return slots;
}
