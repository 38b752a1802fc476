// Bound series must expose exactly what prom-client's own children would.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { bindCounter, bindGauge, bindHistogram } from '../../src/telemetry/bound-metrics.js';

function pair() {
  const a = new Registry();
  const b = new Registry();
  const opts = { name: 'h', help: 'h', labelNames: ['m', 'r'] as const, buckets: [0.1, 1, 10] };
  const copts = { name: 'c', help: 'c', labelNames: ['m'] as const };
  return {
    a,
    b,
    ha: new Histogram({ ...opts, registers: [a] }),
    hb: new Histogram({ ...opts, registers: [b] }),
    ca: new Counter({ ...copts, registers: [a] }),
    cb: new Counter({ ...copts, registers: [b] }),
  };
}

describe('bound metrics', () => {
  it('histograms and counters expose what prom-client children expose', async () => {
    const { a, b, ha, hb, ca, cb } = pair();
    const bound = bindHistogram(ha, { m: 'x', r: '1' });
    const child = hb.labels({ m: 'x', r: '1' });
    const values = [0.05, 0.1, 0.5, 3, 10, 11, 1e9, 0, Number.NaN];
    for (const v of values) {
      bound.observe(v);
      if (Number.isFinite(v)) child.observe(v);
    }
    const bc = bindCounter(ca, { m: 'x' });
    const cc = cb.labels({ m: 'x' });
    for (const v of [1, 2, 0.5]) {
      bc.inc(v);
      cc.inc(v);
    }
    bc.inc();
    cc.inc();
    expect(await a.metrics()).toBe(await b.metrics());
    expect(await a.metrics()).toMatch(/h_count\{m="x",r="1"\} 8/);
  });

  it('a series appears with its first observation, and survives a reset', async () => {
    const { a, ha, ca } = pair();
    const bound = bindHistogram(ha, { m: 'y', r: '2' });
    const bc = bindCounter(ca, { m: 'y' });
    expect(await a.metrics()).not.toMatch(/m="y"/);
    bound.observe(0.2);
    bc.inc(3);
    expect(await a.metrics()).toMatch(/h_count\{m="y",r="2"\} 1/);
    expect(await a.metrics()).toMatch(/c\{m="y"\} 3/);
    a.resetMetrics();
    bound.observe(0.2);
    bound.observe(0.3);
    bc.inc(2);
    expect(await a.metrics()).toMatch(/h_count\{m="y",r="2"\} 2/);
    expect(await a.metrics()).toMatch(/c\{m="y"\} 2/);
  });

  it('two bindings of one series share it', async () => {
    const { a, ha } = pair();
    const b1 = bindHistogram(ha, { m: 'z', r: '3' });
    b1.observe(1);
    const b2 = bindHistogram(ha, { r: '3', m: 'z' });
    b2.observe(1);
    b1.observe(1);
    expect(await a.metrics()).toMatch(/h_count\{m="z",r="3"\} 3/);
  });

  it('gauges go up and down as prom-client children do, and survive a reset', async () => {
    const a = new Registry();
    const b = new Registry();
    const gopts = { name: 'g', help: 'g', labelNames: ['m'] as const };
    const ga = new Gauge({ ...gopts, registers: [a] });
    const gb = new Gauge({ ...gopts, registers: [b] });
    const bound = bindGauge(ga, { m: 'x' });
    const child = gb.labels({ m: 'x' });
    expect(await a.metrics()).not.toMatch(/m="x"/);
    for (const [op, v] of [
      ['inc', 1],
      ['inc', 2],
      ['dec', 1],
      ['inc', 0.5],
      ['dec', 3],
    ] as const) {
      bound[op](v);
      child[op](v);
    }
    bound.inc();
    child.inc();
    bound.dec();
    child.dec();
    expect(await a.metrics()).toBe(await b.metrics());
    expect(await a.metrics()).toMatch(/g\{m="x"\} -0.5/);
    a.resetMetrics();
    bound.inc();
    bound.inc();
    bound.dec();
    expect(await a.metrics()).toMatch(/g\{m="x"\} 1/);
  });
});
