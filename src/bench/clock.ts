/**
 * Monotonic nanosecond clock of the benchmark. Times are plain numbers of nanoseconds since the
 * module loaded (exact integers for ~104 days), converted to epoch nanoseconds (bigint) for exports.
 */

const HR0 = process.hrtime.bigint();
const EPOCH0_NS = BigInt(Date.now()) * 1_000_000n;

/** Nanoseconds on the monotonic clock (process.hrtime.bigint() relative to module load). */
export function nowNs(): number {
  return Number(process.hrtime.bigint() - HR0);
}

/** Epoch nanoseconds of a {@link nowNs} time. */
export function toEpochNs(ns: number): bigint {
  return EPOCH0_NS + BigInt(Math.round(ns));
}

/** ISO time of a {@link nowNs} time. */
export function toIso(ns: number): string {
  return new Date(Number(toEpochNs(ns) / 1_000_000n)).toISOString();
}

/** What the scheduler needs from a clock (a fake one in tests). */
export interface SchedClock {
  now(): number;
  /** Resolves at (or just after) absolute time `ns`. */
  sleepUntil(ns: number): Promise<void>;
}

/** Below this many ns before the target (timers wake up late by over 1.5 ms under load), poll with setImmediate instead of a timer. */
const SPIN_NS = 3_000_000;

/**
 * Real clock: sleeps on a timer until ~3 ms before the target, then polls with setImmediate (I/O
 * still runs between polls), so sends land within tens of microseconds of their intended time.
 */
export const realClock: SchedClock = {
  now: nowNs,
  sleepUntil(ns: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const step = () => {
        const left = ns - nowNs();
        if (left <= 0) resolve();
        else if (left > SPIN_NS) setTimeout(step, Math.floor((left - SPIN_NS) / 1e6));
        else setImmediate(step);
      };
      step();
    });
  },
};
