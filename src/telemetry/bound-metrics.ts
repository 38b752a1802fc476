// Metric series bound once for the serving path. prom-client's `labels(...)` children hash and
// validate their label set again on every `observe`/`inc`; a series bound here finds its storage
// cell once and then updates it directly (what prom-client itself does after the lookup), so the
// exposition is prom-client's own. Tested against prom-client's output (bound-metrics.test.ts).
import type { Counter, Gauge, Histogram, LabelValues } from 'prom-client';

export interface BoundHistogram {
  observe(v: number): void;
}
export interface BoundCounter {
  inc(v?: number): void;
}
export interface BoundGauge {
  inc(v?: number): void;
  dec(v?: number): void;
}

interface HistogramCell {
  labels: Record<string, string | number>;
  sum: number;
  count: number;
  bucketValues: Record<string, number>;
}
interface CounterCell {
  labels: Record<string, string | number>;
  value: number;
}
interface Internals<C> {
  hashMap: Record<string, C>;
  upperBounds?: number[];
}

function sameLabels(
  a: Record<string, string | number>,
  b: Record<string, string | number>,
): boolean {
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  for (const k of ka) if (String(a[k]) !== String(b[k])) return false;
  return true;
}

/** The cell of a label set in a metric's map, and its key there (to notice a reset or removal). */
function findCell<C extends { labels: Record<string, string | number> }>(
  metric: Internals<C>,
  labels: Record<string, string | number>,
): { key: string; cell: C } | undefined {
  for (const key in metric.hashMap) {
    const cell = metric.hashMap[key]!;
    if (sameLabels(cell.labels, labels)) return { key, cell };
  }
  return undefined;
}

/**
 * A histogram series whose observations go straight to its cell. Like a prom-client child, the
 * series appears with its first observation (that one goes through prom-client, which creates it).
 */
export function bindHistogram<T extends string>(
  h: Histogram<T>,
  labels: LabelValues<T>,
): BoundHistogram {
  const m = h as unknown as Internals<HistogramCell>;
  const l = labels as Record<string, string | number>;
  const bounds = m.upperBounds;
  // The cell's bucket counts are keyed by each bound as a property name ("0.005"): indexing with
  // the number itself converts it to that string on every observation (and takes the generic
  // keyed-store path); the names are made once here.
  const keys = bounds?.map((b) => String(b));
  let found = findCell(m, l);
  return {
    observe(v: number): void {
      if (!found || !bounds || !keys || m.hashMap[found.key] !== found.cell) {
        h.observe(labels, v);
        found = findCell(m, l);
        return;
      }
      if (!Number.isFinite(v)) return;
      const c = found.cell;
      for (let i = 0; i < bounds.length; i++) {
        if (v <= bounds[i]!) {
          c.bucketValues[keys[i]!]! += 1;
          break;
        }
      }
      c.sum += v;
      c.count += 1;
    },
  };
}

/** A counter series whose increments go straight to its cell (created by its first increment). */
export function bindCounter<T extends string>(c: Counter<T>, labels: LabelValues<T>): BoundCounter {
  const m = c as unknown as Internals<CounterCell>;
  const l = labels as Record<string, string | number>;
  let found = findCell(m, l);
  return {
    inc(v = 1): void {
      if (!found || m.hashMap[found.key] !== found.cell) {
        c.inc(labels, v);
        found = findCell(m, l);
        return;
      }
      if (v > 0 && Number.isFinite(v)) found.cell.value += v;
    },
  };
}

/** A gauge series whose increments and decrements go straight to its cell (created by the first). */
export function bindGauge<T extends string>(g: Gauge<T>, labels: LabelValues<T>): BoundGauge {
  const m = g as unknown as Internals<CounterCell>;
  const l = labels as Record<string, string | number>;
  let found = findCell(m, l);
  const add = (v: number): void => {
    if (!found || m.hashMap[found.key] !== found.cell) {
      g.inc(labels, v);
      found = findCell(m, l);
      return;
    }
    found.cell.value += v;
  };
  return {
    inc: (v = 1) => add(v),
    dec: (v = 1) => add(-v),
  };
}
