#!/usr/bin/env node
// Calibration report of the simulated engine against reference/h100-llamacpp.md.
//
// Run from the repository root:
//   npx tsc -p tsconfig.build.json && node bench/sim-calibration.mjs [--calibration NAME] [--rpc N]
//
// Every reference cell (both tables) runs as a closed loop on the VirtualClock (deterministic,
// instant, no real waiting): `concurrency` clients, each sending its next request when the previous
// one finishes, N requests per client (default 4). Printed per cell: simulated TTFT p50, ITL p50 and
// output tok/s, the reference value and the error in percent. Cells marked * are the acceptance
// targets (within 15%). Metrics as reference/metrics-definitions.md: ITL per request =
// (latency − TTFT) / (OSL − 1); p50 with linear interpolation.
import { parseArgs } from 'node:util';
import { LLAMACPP_H100_REFERENCE, runReferenceCell } from '../dist/sim/calibration.js';

const { values } = parseArgs({
  options: {
    calibration: { type: 'string', default: 'llamacpp-h100' },
    rpc: { type: 'string', default: '4' },
  },
});
const rpc = Number(values.rpc);
const pct = (x) => (x === null || Number.isNaN(x) ? '' : `${x >= 0 ? '+' : ''}${x.toFixed(1)}%`);
const num = (x, d = 1) => (x === null || x === undefined || Number.isNaN(x) ? '–' : x.toFixed(d));

const header = [
  'tbl',
  'phase',
  'prompt',
  'out',
  'c',
  'TTFT sim',
  'TTFT ref',
  'err',
  'ITL sim',
  'ITL ref',
  'err',
  'tok/s sim',
  'tok/s ref',
  'err',
];
const rows = [header];
const t0 = performance.now();
for (const cell of LLAMACPP_H100_REFERENCE) {
  const r = runReferenceCell({ calibration: values.calibration }, cell, rpc);
  const tpsErr =
    cell.outputTokPerSec === null
      ? null
      : ((r.sim.outputTokPerSec - cell.outputTokPerSec) / cell.outputTokPerSec) * 100;
  rows.push([
    String(cell.table),
    cell.phase + (cell.target ? ' *' : ''),
    cell.sharedPrefixTokens
      ? `${cell.promptTokens} (${cell.sharedPrefixTokens} shared)`
      : String(cell.promptTokens),
    String(cell.outputTokens),
    String(cell.concurrency),
    num(r.sim.ttftP50Ms),
    num(cell.ttftP50Ms),
    pct(r.ttftErrPct),
    num(r.sim.itlP50Ms, 2),
    num(cell.itlP50Ms, 2),
    pct(r.itlErrPct),
    num(r.sim.outputTokPerSec, 0),
    num(cell.outputTokPerSec, 0),
    pct(tpsErr),
  ]);
}
const widths = header.map((_, i) => Math.max(...rows.map((r) => r[i].length)));
for (const r of rows)
  console.log(r.map((c, i) => (i < 2 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  '));
console.log(
  `\ncalibration ${values.calibration}, ${rpc} requests per client, ${(performance.now() - t0).toFixed(0)} ms`,
);
