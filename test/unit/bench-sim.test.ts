import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { metricRecordInfoSchema, profileExportJsonSchema } from '../../src/bench/aiperf-schema.js';
import { BenchClient } from '../../src/bench/client.js';
import { CSV_FILE, JSON_FILE, JSONL_FILE, METADATA_FILE } from '../../src/bench/export.js';
import { runLoad } from '../../src/bench/loadgen.js';
import { summarize } from '../../src/bench/metrics.js';
import { runBench } from '../../src/bench/runner.js';
import { defaultMetricsUrl } from '../../src/bench/scrape.js';
import { sharedPrefixWorkload, syntheticWorkload } from '../../src/bench/workloads.js';
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
  const port = await server.listen(0);
  url = `http://127.0.0.1:${port}`;
  dir = mkdtempSync(join(tmpdir(), 'inferplane-bench-'));
});

afterAll(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('bench against the simulator', () => {
  it('closed loop (chat, streaming): complete records with ISL/OSL from usage', async () => {
    const client = new BenchClient({ baseUrl: url, endpoint: 'chat', model: 'm' });
    try {
      const recs = await runLoad(client, syntheticWorkload({ isl: 32, osl: 8, seed: 1 }), {
        mode: 'closed',
        endpoint: 'chat',
        concurrency: 4,
        requestCount: 12,
        warmupRequests: 2,
        seed: 1,
      });
      const prof = recs.filter((r) => r.phase === 'profiling');
      expect(prof).toHaveLength(12);
      for (const r of prof) {
        expect(r.error).toBeNull();
        expect(r.usageCompletionTokens).toBe(8);
        expect(r.usagePromptTokens).toBe(r.clientInputTokens); // sim tokenizer = client tokenizer
        expect(r.chunkNs).toHaveLength(8);
        expect(r.startNs).toBeLessThan(r.chunkNs[0] ?? 0);
      }
      const s = summarize(recs);
      expect(s.requestCount).toBe(12);
      expect(s.metrics.output_sequence_length).toMatchObject({ avg: 8, count: 12 });
      expect(s.metrics.inter_token_latency?.count).toBe(12);
      expect(s.metrics.inter_chunk_latency?.count).toBe(12 * 7);
    } finally {
      await client.close();
    }
  });

  it('open loop (completions, non-streaming) with intended send times', async () => {
    const client = new BenchClient({
      baseUrl: url,
      endpoint: 'completions',
      model: 'm',
      stream: false,
    });
    try {
      const recs = await runLoad(client, syntheticWorkload({ isl: 16, osl: 4, seed: 2 }), {
        mode: 'open',
        endpoint: 'completions',
        requestRate: 200,
        arrival: 'poisson',
        requestCount: 20,
        seed: 2,
      });
      expect(recs).toHaveLength(20);
      for (const r of recs) {
        expect(r.error).toBeNull();
        expect(r.streaming).toBe(false);
        expect(r.intendedNs).not.toBeNull();
        expect(r.startNs).toBeGreaterThanOrEqual(r.intendedNs ?? 0);
        expect(r.usageCompletionTokens).toBe(4);
        expect(r.usagePromptTokens).toBe(16);
      }
      expect(summarize(recs).sendLag?.count).toBe(20);
    } finally {
      await client.close();
    }
  });

  it('records HTTP errors with status and message', async () => {
    const client = new BenchClient({ baseUrl: url, endpoint: 'chat', model: 'nope' });
    try {
      const r = await client.send({
        messages: [{ role: 'user', content: 'hi' }],
        maxTokens: 2,
        clientInputTokens: 1,
        sessionNum: 0,
        requestId: 'x',
        correlationId: 'y',
        conversationId: 'z',
        turnIndex: 0,
        phase: 'profiling',
        intendedNs: null,
      });
      expect(r.error?.code).toBe(404);
      expect(r.error?.message).toMatch(/nope|model/);
    } finally {
      await client.close();
    }
  });

  it('cancels requests with --request-cancellation-rate', async () => {
    const client = new BenchClient({ baseUrl: url, endpoint: 'chat', model: 'm' });
    try {
      const recs = await runLoad(client, syntheticWorkload({ isl: 8, osl: 200, seed: 3 }), {
        mode: 'closed',
        endpoint: 'chat',
        concurrency: 2,
        requestCount: 4,
        seed: 3,
        cancellationRate: 100,
        cancellationDelayMs: 20,
      });
      for (const r of recs) {
        expect(r.cancelled).toBe(true);
        expect(r.error).toMatchObject({ code: 499, type: 'RequestCancellationError' });
      }
    } finally {
      await client.close();
    }
  });

  it('runBench writes AIPerf-shaped artifacts (schema-valid) with server prefix-cache figures', async () => {
    const out = join(dir, 'run');
    const res = await runBench({
      client: { baseUrl: url, endpoint: 'chat', model: 'm' },
      workload: sharedPrefixWorkload({
        groups: 2,
        usersPerGroup: 4,
        prefixLength: 64,
        isl: 8,
        osl: 4,
        seed: 1,
      }),
      workloadInfo: { name: 'shared-prefix' },
      load: { mode: 'closed', concurrency: 2, requestCount: 10, seed: 1 },
      goodput: { time_to_first_token: 10_000 },
      artifactsDir: out,
      metricsUrl: defaultMetricsUrl(url),
      cliCommand: 'inferplane bench test',
    });
    const run = res.runs[0];
    expect(run?.server?.prefix_cache_hit_rate).toBeGreaterThan(0);
    const json = profileExportJsonSchema.parse(
      JSON.parse(readFileSync(join(out, JSON_FILE), 'utf8')),
    );
    expect(json.request_count.avg).toBe(10);
    expect(json.goodput?.avg).toBeGreaterThan(0);
    expect(json.input_config.endpoint.model_names).toEqual(['m']);
    const lines = readFileSync(join(out, JSONL_FILE), 'utf8').trim().split('\n');
    expect(lines).toHaveLength(10);
    for (const l of lines) {
      const r = metricRecordInfoSchema.parse(JSON.parse(l));
      expect(r.metrics.time_to_first_token?.unit).toBe('ms');
      expect(l).toMatch(/"request_start_ns":\d{19},/); // epoch ns, written as an integer
    }
    const csv = readFileSync(join(out, CSV_FILE), 'utf8');
    expect(csv.split('\n')[0]).toBe('Metric,avg,min,max,p1,p5,p10,p25,p50,p75,p90,p95,p99,std');
    expect(csv).toMatch(/\nTime to First Token \(ms\),/);
    expect(csv).toMatch(/\n\nMetric,Value\nBenchmark Duration \(sec\),/);
    const meta = JSON.parse(readFileSync(join(out, METADATA_FILE), 'utf8')) as Record<
      string,
      unknown
    >;
    expect(meta).toMatchObject({ model: 'm', endpoint_url: url, seed: 1 });
  });

  it('sweeps concurrency levels into subfolders with a sweep summary', async () => {
    const out = join(dir, 'sweep');
    const res = await runBench({
      client: { baseUrl: url, endpoint: 'completions', model: 'm' },
      workload: syntheticWorkload({ isl: 8, osl: 3, seed: 1 }),
      workloadInfo: {},
      load: { mode: 'closed', requestCount: 4, seed: 1 },
      sweep: [1, 2],
      artifactsDir: out,
      metricsUrl: null,
      cliCommand: 'x',
    });
    expect(res.runs.map((r) => r.label)).toEqual(['concurrency-1', 'concurrency-2']);
    const sum = JSON.parse(readFileSync(join(out, 'sweep_summary.json'), 'utf8')) as {
      levels: unknown[];
    };
    expect(sum.levels).toHaveLength(2);
    readFileSync(join(out, 'concurrency-2', JSON_FILE));
  });
});
