/**
 * Arrival processes of the open loop: constant, Poisson, or gamma (burstiness k: CV = 1/√k; k = 1
 * is Poisson, k < 1 is burstier) at rate R, optionally ramping linearly from r0 to R over S
 * seconds. Arrivals are generated as absolute offsets from the start (a unit-rate process mapped
 * through the inverse cumulative intensity), never as chained relative sleeps.
 */
import { Rng } from './random.js';

export type ArrivalKind = 'constant' | 'poisson' | 'gamma';

export interface ArrivalOptions {
  rate: number;
  arrival: ArrivalKind;
  /** Gamma shape (default 1). */
  burstiness?: number;
  seed: number;
  /** Ramp the rate from `rampFromRate` (default 0) to `rate` over this many seconds. */
  rampUpSec?: number;
  rampFromRate?: number;
}

export class ArrivalSchedule {
  private readonly rng: Rng;
  /** Cumulative unit-rate time. */
  private u = 0;
  private first = true;

  constructor(private readonly o: ArrivalOptions) {
    if (!(o.rate > 0)) throw new RangeError('request rate must be > 0');
    this.rng = new Rng(o.seed ^ 0xa441);
  }

  /** Gap of the unit-rate process (mean 1). */
  private unitGap(): number {
    switch (this.o.arrival) {
      case 'constant':
        return 1;
      case 'poisson':
        return this.rng.exponential();
      case 'gamma': {
        const k = this.o.burstiness ?? 1;
        return this.rng.gamma(k) / k;
      }
    }
  }

  /** Offset (seconds from the start) of the next arrival. The first is at 0 without a ramp. */
  next(): number {
    if (this.first) {
      this.first = false;
      if (!this.o.rampUpSec) return 0;
    }
    this.u += this.unitGap();
    return this.timeOf(this.u);
  }

  /** Inverse of the cumulative intensity Λ(t) (expected arrivals by t). */
  timeOf(u: number): number {
    const R = this.o.rate;
    const S = this.o.rampUpSec ?? 0;
    if (S <= 0) return u / R;
    const r0 = Math.min(this.o.rampFromRate ?? 0, R);
    const a = (R - r0) / (2 * S);
    const lamS = r0 * S + a * S * S;
    if (u >= lamS) return S + (u - lamS) / R;
    if (a === 0) return u / r0;
    return (-r0 + Math.sqrt(r0 * r0 + 4 * a * u)) / (2 * a);
  }
}
