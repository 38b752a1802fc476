import { describe, it, expect } from 'vitest';
import {
  LLAMACPP_H100_REFERENCE,
  percentile,
  runReferenceCell,
} from '../../src/sim/calibration.js';

describe('sim calibration: llamacpp-h100 against reference/h100-llamacpp.md', () => {
  it('percentile interpolates linearly (numpy default)', () => {
    expect(percentile([1, 2, 3, 4], 50)).toBe(2.5);
    expect(percentile([10], 99)).toBe(10);
    expect(percentile([1, 2, 3, 4, 5], 25)).toBe(2);
  });

  it('closed loop c = 1 / 16 / 48, 1,001-token prompts, 128 outputs: TTFT and ITL p50 within 15%', () => {
    const rows: string[] = [];
    const targets = LLAMACPP_H100_REFERENCE.filter((c) => c.target);
    expect(targets.map((c) => c.concurrency)).toEqual([1, 16, 48]);
    for (const cell of targets) {
      const r = runReferenceCell({ calibration: 'llamacpp-h100' }, cell, 4);
      rows.push(
        `c=${String(cell.concurrency).padStart(2)}  TTFT p50 ${r.sim.ttftP50Ms.toFixed(1).padStart(6)} ms vs ${cell.ttftP50Ms} (${r.ttftErrPct.toFixed(1)}%)` +
          `  ITL p50 ${(r.sim.itlP50Ms ?? NaN).toFixed(2).padStart(6)} ms vs ${cell.itlP50Ms} (${(r.itlErrPct ?? NaN).toFixed(1)}%)`,
      );
      expect(Math.abs(r.ttftErrPct)).toBeLessThan(15);
      expect(Math.abs(r.itlErrPct ?? Infinity)).toBeLessThan(15);
      expect(r.sim.finished.every((f) => f.completionTokens === 128)).toBe(true);
    }
    console.log(['llamacpp-h100 calibration (sim vs reference):', ...rows].join('\n'));
  });
});
