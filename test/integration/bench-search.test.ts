// `--search-max-rate` against a simulated engine whose capacity is known: one sequence at a time
// (maxNumSeqs 1), 16 output tokens of ~6 ms each ≈ 0.1 s per request ≈ 10 requests/s. The search
// must fail well above that capacity, pass well below it, and report a rate in between.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Io } from '../../src/cli/output.js';
import { run } from '../../src/cli/program.js';
import { createSimServer, type SimServer } from '../../src/sim/server.js';

let sim: SimServer;
let url: string;
let dir: string;

beforeAll(async () => {
  sim = createSimServer({ model: 'llama-3.1-8b', servedModelName: 'm', maxNumSeqs: 1 });
  url = `http://127.0.0.1:${await sim.listen(0)}`;
  dir = mkdtempSync(join(tmpdir(), 'inferplane-search-'));
});

afterAll(async () => {
  await sim.close();
  rmSync(dir, { recursive: true, force: true });
});

const io: Io = {
  out: () => undefined,
  err: () => undefined,
  readStdin: () => Promise.resolve(''),
  env: {},
  now: () => new Date(),
};

it('finds the highest rate that meets the goodput SLOs by bisection', async () => {
  const code = await run(
    [
      'node',
      'inferplane',
      'bench',
      '--url',
      url,
      '--model',
      'm',
      '--endpoint',
      'completions',
      '--isl',
      '16',
      '--osl',
      '16',
      '--request-count',
      '20',
      '--goodput',
      'time_to_first_token:400',
      '--search-max-rate',
      '80',
      '--search-trials',
      '5',
      '--search-min-good-fraction',
      '0.9',
      '--no-report',
      '--artifacts-dir',
      dir,
    ],
    io,
  );
  expect(code).toBe(0);
  const summary = JSON.parse(readFileSync(join(dir, 'search_summary.json'), 'utf8')) as {
    max_rate: number | null;
    trials: Array<{ pass: boolean }>;
  };
  // 80 → 40 → 20 → 10 → 5 req/s: 8× capacity fails, half capacity passes.
  expect(summary.trials[0]?.pass).toBe(false);
  expect(summary.trials.length).toBeGreaterThanOrEqual(4);
  expect(summary.max_rate).not.toBeNull();
  expect(summary.max_rate!).toBeGreaterThanOrEqual(5);
  expect(summary.max_rate!).toBeLessThan(20);
}, 60_000);

it('replays a Mooncake trace: timestamps pace the sends, equal hash ids share KV blocks', async () => {
  const trace = join(dir, 'trace.jsonl');
  const rows = [
    { timestamp: 0, input_length: 1100, output_length: 4, hash_ids: [1, 2, 3] },
    { timestamp: 200, input_length: 1100, output_length: 4, hash_ids: [1, 2, 4] },
    { timestamp: 400, input_length: 600, output_length: 4, hash_ids: [1, 5] },
    { timestamp: 600, input_length: 1100, output_length: 4, hash_ids: [1, 2, 3] },
  ];
  writeFileSync(trace, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
  const out = join(dir, 'trace-run');
  const started = Date.now();
  const code = await run(
    [
      'node',
      'inferplane',
      'bench',
      '--url',
      url,
      '--model',
      'm',
      '--endpoint',
      'completions',
      '--trace',
      trace,
      '--trace-speed',
      '2',
      '--no-report',
      '--artifacts-dir',
      out,
    ],
    io,
  );
  expect(code).toBe(0);
  // 600 ms of trace at speed 2: the last send is ~300 ms after the first.
  expect(Date.now() - started).toBeGreaterThanOrEqual(280);
  const records = readFileSync(join(out, 'profile_export.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map(
      (l) =>
        JSON.parse(l) as {
          metadata: { request_start_ns: number; cached_tokens?: number | null };
          metrics: { input_sequence_length?: { value: number } };
        },
    );
  expect(records).toHaveLength(4);
  const starts = records.map((r) => r.metadata.request_start_ns).sort((a, b) => a - b);
  // Paced: the sends span ~300 ms (an unpaced replay sends all four within a few ms). The span is
  // shorter by however late the first send left (23 ms on a loaded machine), so the bound leaves
  // room for that; the run's total time above is the strict check.
  expect((starts[3]! - starts[0]!) / 1e6).toBeGreaterThanOrEqual(200);
  expect(records.map((r) => r.metrics.input_sequence_length?.value).sort()).toEqual(
    [1100, 1100, 1100, 600].sort(),
  );
  // Requests 2–4 reuse block 1 (512 tokens) of request 1; request 4 repeats request 1 entirely.
  const cached = records.map((r) => r.metadata.cached_tokens ?? 0);
  expect(cached.filter((c) => c >= 512).length).toBeGreaterThanOrEqual(3);
});
