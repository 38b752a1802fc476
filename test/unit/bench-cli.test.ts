import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { profileExportJsonSchema } from '../../src/bench/aiperf-schema.js';
import { JSON_FILE } from '../../src/bench/export.js';
import { benchLoad, benchWorkload, type BenchFlags } from '../../src/cli/commands/bench.js';
import type { Io } from '../../src/cli/output.js';
import { run } from '../../src/cli/program.js';
import { createSimServer, type SimServer } from '../../src/sim/server.js';

let server: SimServer;
let url = '';
let dir = '';

beforeAll(async () => {
  server = createSimServer({
    model: 'llama-3.1-8b',
    servedModelName: 'm',
    timeScale: 0.05,
    seed: 1,
  });
  url = `http://127.0.0.1:${await server.listen(0)}`;
  dir = mkdtempSync(join(tmpdir(), 'inferplane-bench-cli-'));
});

afterAll(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

function io(): Io & { stdout: string; stderr: string } {
  const o = {
    stdout: '',
    stderr: '',
    out(t: string) {
      o.stdout += t;
    },
    err(t: string) {
      o.stderr += t;
    },
    readStdin: () => Promise.resolve(''),
    env: {},
    now: () => new Date('2025-01-02T03:04:05Z'),
  };
  return o;
}

const bench = (args: string[], i: Io) => run(['node', 'inferplane', 'bench', ...args], i);

describe('inferplane bench (in-process)', () => {
  it('runs, prints the summary table and writes artifacts', async () => {
    const i = io();
    const out = join(dir, 'a');
    const code = await bench(
      [
        '--url',
        url,
        '--model',
        'm',
        '--isl',
        '16',
        '--osl',
        '4',
        '--concurrency',
        '2',
        '--request-count',
        '6',
        '--goodput',
        'time_to_first_token:60000',
        '--artifacts-dir',
        out,
        '--no-report',
        '--progress-interval',
        '0.1',
      ],
      i,
    );
    expect(i.stderr).not.toMatch(/^error/m);
    expect(code).toBe(0);
    expect(i.stdout).toMatch(/METRIC\s+AVG\s+MIN\s+MAX\s+P50\s+P90\s+P99/);
    expect(i.stdout).toMatch(/Time to First Token \(ms\)/);
    expect(i.stdout).toMatch(/Goodput \(requests\/sec\)/);
    const j = profileExportJsonSchema.parse(JSON.parse(readFileSync(join(out, JSON_FILE), 'utf8')));
    expect(j.request_count.avg).toBe(6);
    expect(j.input_config.cli_command).toMatch(/--concurrency 2/);
  });

  it('--json prints the AIPerf summary; compare diffs two runs', async () => {
    const i = io();
    const out = join(dir, 'b');
    expect(
      await bench(
        [
          '--url',
          url,
          '--model',
          'm',
          '--endpoint',
          'completions',
          '--isl',
          '16',
          '--osl',
          '4',
          '--request-rate',
          '100',
          '--request-count',
          '6',
          '--json',
          '--artifacts-dir',
          out,
          '--no-report',
        ],
        i,
      ),
    ).toBe(0);
    const j = JSON.parse(i.stdout) as {
      request_count: { avg: number };
      send_lag: { count: number };
    };
    expect(j.request_count.avg).toBe(6);
    expect(j.send_lag.count).toBe(6);

    const c = io();
    expect(await bench(['compare', join(dir, 'a'), out], c)).toBe(0);
    expect(c.stdout).toMatch(/METRIC\s+A\s+B\s+DELTA\s+DELTA%/);
    expect(c.stdout).toMatch(/Request Throughput \(requests\/sec\)/);
    expect(c.stdout).toMatch(
      /Time to First Token \(ms\) p50\s+[\d.]+\s+[\d.]+\s+[-+][\d.]+\s+[-+][\d.]+%/,
    );
  });

  it('writes report.html through writeHtmlReport, or only warns', async () => {
    const i = io();
    const out = join(dir, 'c');
    expect(
      await bench(
        [
          '--url',
          url,
          '--model',
          'm',
          '--isl',
          '8',
          '--osl',
          '2',
          '--request-count',
          '2',
          '--artifacts-dir',
          out,
        ],
        i,
      ),
    ).toBe(0);
    expect(existsSync(join(out, 'report.html')) || /warning: HTML report/.test(i.stderr)).toBe(
      true,
    );
  });

  it('rejects bad flags with a usage error', async () => {
    for (const args of [
      ['--url', url, '--model', 'm', '--concurrency', '0'],
      ['--url', url, '--model', 'm', '--arrival', 'weird'],
      ['--url', url, '--model', 'm', '--goodput', 'nope:1'],
      ['--url', url, '--model', 'm', '--workload', 'nope'],
    ]) {
      const i = io();
      expect(await bench(args, i)).toBe(2);
    }
  });

  it('--help lists the flags', async () => {
    const i = io();
    expect(await bench(['--help'], i)).toBe(0);
    for (const f of [
      '--request-rate',
      '--goodput',
      '--search-max-rate',
      '--trace',
      '--self-test',
      '--workload',
    ])
      expect(i.stdout).toContain(f);
  });
});

describe('flag mapping', () => {
  const base: BenchFlags = {
    endpoint: 'chat',
    stream: true,
    ignoreEos: true,
    scale: 1,
    isl: 10,
    islStddev: 0,
    osl: 5,
    oslStddev: 0,
    seed: 0,
    usersPerGroup: 1,
    turns: 1,
    traceBlockSize: 512,
    traceSpeed: 1,
    arrival: 'poisson',
    burstiness: 1,
    warmupRequests: 0,
    requestCancellationDelay: 1000,
    searchTrials: 6,
    searchMinGoodFraction: 0.95,
    metrics: true,
    report: true,
    progressInterval: 5,
  };

  it('lists of levels sweep; rates mean open loop', () => {
    expect(benchLoad({ ...base, concurrency: [1, 8, 32] }, {}, false)).toMatchObject({
      load: { mode: 'closed', concurrency: 1, requestCount: 100 },
      sweep: [1, 8, 32],
    });
    expect(
      benchLoad(
        { ...base, requestRate: [5], arrival: 'gamma', burstiness: 0.5, duration: 3 },
        {},
        false,
      ),
    ).toEqual({
      load: {
        mode: 'open',
        requestRate: 5,
        arrival: 'gamma',
        burstiness: 0.5,
        durationSec: 3,
        seed: 0,
        warmupRequests: 0,
      },
    });
  });

  it('presets suggest their load; trace files replay', () => {
    const w = benchWorkload({ ...base, workload: 'shared-prefix-b2b', scale: 0.01 });
    expect(benchLoad(base, w.suggested, false).load).toMatchObject({
      mode: 'open',
      requestRate: 0.6,
      rampFromRate: 0.03,
    });
    const trace = join(dir, 't.jsonl');
    writeFileSync(trace, '{"timestamp":0,"input_length":10,"output_length":2,"hash_ids":[1]}\n');
    const t = benchWorkload({ ...base, trace });
    expect(t.workload.size).toBe(1);
    expect(benchLoad(base, t.suggested, true).load.mode).toBe('trace');
  });
});
