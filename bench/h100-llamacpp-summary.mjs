#!/usr/bin/env node
// Summary of the H100 llama.cpp measurements (scripts/device/h100-llamacpp.sh) committed under
// bench/results/<dir>/: gateway vs direct per concurrency, round-robin vs prefix-aware routing
// with llama-server's prefix hit rate, and the simulator's `llamacpp-h100` profile against these
// fresh figures (error per cell: (sim − measured) / measured).
//
// Run from the repository root:
//   npx tsc -p tsconfig.build.json && node bench/h100-llamacpp-summary.mjs \
//     [--dir bench/results/h100-llamacpp-2026-11-23] [--write]
// --write saves summary.json beside the results.
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { runReferenceCell } from '../dist/sim/calibration.js';

const { values } = parseArgs({
  options: {
    dir: { type: 'string', default: 'bench/results/h100-llamacpp-2026-11-23' },
    write: { type: 'boolean', default: false },
    calibration: { type: 'string', default: 'llamacpp-h100' },
  },
});
const dir = values.dir;
const read = (p) => JSON.parse(readFileSync(p, 'utf8'));
const run = (sub, name) => {
  const p = join(dir, sub, name, 'profile_export_aiperf.json');
  if (!existsSync(p)) return undefined;
  const j = read(p);
  return {
    name,
    requests: j.request_count?.avg,
    errors: j.error_request_count?.avg ?? 0,
    outputTokPerSec: j.output_token_throughput?.avg,
    ttftP50Ms: j.time_to_first_token?.p50,
    ttftP99Ms: j.time_to_first_token?.p99,
    itlP50Ms: j.inter_token_latency?.p50,
    isl: j.input_sequence_length?.avg,
  };
};
const f = (x, d = 1) => (x === undefined || x === null || Number.isNaN(x) ? '–' : x.toFixed(d));
const pct = (x) => (x === null || Number.isNaN(x) ? '–' : `${x >= 0 ? '+' : ''}${x.toFixed(1)}%`);
const table = (rows) => {
  const [head, ...body] = rows;
  return [
    `| ${head.join(' | ')} |`,
    `|${head.map(() => '---').join('|')}|`,
    ...body.map((r) => `| ${r.join(' | ')} |`),
  ].join('\n');
};
const out = { dir, gatewayVsDirect: [], routing: [], simVsMeasured: [] };
const lines = [];

// 1. Gateway vs direct.
const gd = [
  [
    'c',
    'direct tok/s',
    'gateway tok/s',
    'gateway / direct',
    'TTFT p50 direct',
    'TTFT p50 gateway',
    'added TTFT p50',
    'ITL p50 direct',
    'ITL p50 gateway',
  ],
];
for (const c of [1, 16, 48]) {
  const d = run('gateway-vs-direct', `direct-c${c}`);
  const g = run('gateway-vs-direct', `gateway-c${c}`);
  if (!d || !g) continue;
  const ratio = g.outputTokPerSec / d.outputTokPerSec;
  const added = g.ttftP50Ms - d.ttftP50Ms;
  out.gatewayVsDirect.push({ concurrency: c, direct: d, gateway: g, ratio, addedTtftP50Ms: added });
  gd.push([
    String(c),
    f(d.outputTokPerSec),
    f(g.outputTokPerSec),
    `${(ratio * 100).toFixed(1)}% ${ratio >= 0.98 ? '(met)' : '(missed)'}`,
    f(d.ttftP50Ms),
    f(g.ttftP50Ms),
    `${added >= 0 ? '+' : ''}${added.toFixed(1)} ms ${added <= 2 ? '(met)' : '(missed)'}`,
    f(d.itlP50Ms, 2),
    f(g.itlP50Ms, 2),
  ]);
}
lines.push(
  '## Gateway vs direct (1,000-token unique prompts, 128 output tokens)',
  '',
  table(gd),
  '',
);

// 2. Routing: prefix hit rate from llama-server's counters (before/after each run, both replicas).
const counters = (file) => {
  const m = new Map();
  if (!existsSync(file)) return m;
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const [port, name, value] = line.trim().split(/\s+/);
    if (!name) continue;
    const k = `${port} ${name}`;
    m.set(k, Number(value));
  }
  return m;
};
const rt = [
  [
    'run',
    'policy',
    'TTFT p50',
    'TTFT p99',
    'ITL p50',
    'output tok/s',
    'prompt tokens evaluated',
    'cached',
    'hit rate',
  ],
];
const routingRuns = existsSync(join(dir, 'routing'))
  ? readdirSync(join(dir, 'routing'))
      .filter((n) => /^routing-\d+-[a-z-]+$/.test(n))
      .sort()
  : [];
for (const name of routingRuns) {
  const r = run('routing', name);
  const before = counters(join(dir, 'routing', `${name}.before`));
  const after = counters(join(dir, 'routing', `${name}.after`));
  let evaluated = 0;
  let cached = 0;
  for (const [k, v] of after) {
    const d = v - (before.get(k) ?? 0);
    if (k.endsWith('llamacpp:prompt_tokens_total')) evaluated += d;
    else if (k.endsWith('llamacpp:prompt_tokens_cached_total')) cached += d;
  }
  // llama-server counts evaluated prompt tokens without the cached ones: hits / (evaluated + hits).
  const hit = cached / (evaluated + cached);
  const policy = name.replace(/^routing-\d+-/, '');
  out.routing.push({ run: name, policy, ...r, promptTokensEvaluated: evaluated, cached, hit });
  rt.push([
    name.split('-')[1],
    policy,
    f(r?.ttftP50Ms),
    f(r?.ttftP99Ms),
    f(r?.itlP50Ms, 2),
    f(r?.outputTokPerSec),
    String(evaluated),
    String(cached),
    `${(hit * 100).toFixed(1)}%`,
  ]);
}
lines.push(
  '## Two replicas on one GPU: round-robin vs prefix-aware (31 groups × 1,500-token prefix + 100, 64 out, c=16)',
  '',
  table(rt),
  '',
);

// 3. The simulator's calibration against these measurements (same cells as the reference).
const sv = [
  [
    'c',
    'TTFT p50 sim',
    'measured',
    'err',
    'ITL p50 sim',
    'measured',
    'err',
    'tok/s sim',
    'measured',
    'err',
  ],
];
for (const { concurrency: c, direct: d } of out.gatewayVsDirect) {
  const cell = {
    table: 1,
    phase: 'unique',
    promptTokens: 1001,
    outputTokens: 128,
    concurrency: c,
    ttftP50Ms: d.ttftP50Ms,
    itlP50Ms: d.itlP50Ms,
    outputTokPerSec: d.outputTokPerSec,
  };
  const r = runReferenceCell({ calibration: values.calibration }, cell, 4);
  const tpsErr = ((r.sim.outputTokPerSec - d.outputTokPerSec) / d.outputTokPerSec) * 100;
  out.simVsMeasured.push({
    concurrency: c,
    sim: r.sim,
    measured: { ttftP50Ms: d.ttftP50Ms, itlP50Ms: d.itlP50Ms, outputTokPerSec: d.outputTokPerSec },
    ttftErrPct: r.ttftErrPct,
    itlErrPct: r.itlErrPct,
    tokPerSecErrPct: tpsErr,
  });
  sv.push([
    String(c),
    f(r.sim.ttftP50Ms),
    f(d.ttftP50Ms),
    pct(r.ttftErrPct),
    f(r.sim.itlP50Ms, 2),
    f(d.itlP50Ms, 2),
    pct(r.itlErrPct),
    f(r.sim.outputTokPerSec),
    f(d.outputTokPerSec),
    pct(tpsErr),
  ]);
}
lines.push(
  `## Simulator (\`${values.calibration}\`, virtual clock) vs these direct measurements`,
  '',
  table(sv),
  '',
);
console.log(lines.join('\n'));
if (values.write) writeFileSync(join(dir, 'summary.json'), JSON.stringify(out, null, 2) + '\n');
