// The gateway's engine-signal scraping is configurable on `up` (period and staleness limit).
import { describe, expect, it } from 'vitest';
import { resolveConfig } from '../../src/platform/config.js';

describe('signal scraping options', () => {
  it('defaults to a scrape every 100 ms, stale after 2 s', () => {
    const c = resolveConfig({});
    expect(c.signalIntervalMs).toBe(100);
    expect(c.signalStaleMs).toBe(2000);
  });

  it('takes other values in range', () => {
    const c = resolveConfig({ signalIntervalMs: 50, signalStaleMs: 500 });
    expect(c).toMatchObject({ signalIntervalMs: 50, signalStaleMs: 500 });
  });

  it('refuses a staleness limit within two scrape periods, and values out of range', () => {
    expect(() => resolveConfig({ signalIntervalMs: 1000, signalStaleMs: 2000 })).toThrow(
      /--signal-stale-ms: 2000 ms\) must exceed two scrape intervals \(signalIntervalMs, --signal-interval-ms: 2 × 1000 ms\)/,
    );
    expect(() => resolveConfig({ signalIntervalMs: 5 })).toThrow();
    expect(() => resolveConfig({ signalStaleMs: 50 })).toThrow();
    expect(() => resolveConfig({ signalIntervalMs: 1.5 })).toThrow();
  });
});

describe('gateway workers option', () => {
  it('defaults to the gateway in the platform process, and takes 2..64 workers', () => {
    expect(resolveConfig({}).gatewayWorkers).toBe(1);
    expect(resolveConfig({ gatewayWorkers: 4 }).gatewayWorkers).toBe(4);
    expect(resolveConfig({}).limitShareIntervalMs).toBe(100);
  });

  it('refuses a count out of range, naming the option', () => {
    for (const bad of [0, 65, 1.5]) {
      expect(() => resolveConfig({ gatewayWorkers: bad })).toThrow(/gatewayWorkers/);
    }
    expect(() => resolveConfig({ limitShareIntervalMs: 1 })).toThrow(/limitShareIntervalMs/);
  });
});
