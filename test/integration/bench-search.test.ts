// `--search-max-rate` against a simulated engine whose capacity is known: one sequence at a time
// (maxNumSeqs 1), 16 output tokens of ~6 ms each ≈ 0.1 s per request ≈ 10 requests/s. The search
// must fail well above that capacity, pass well below it, and report a rate in between.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
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
