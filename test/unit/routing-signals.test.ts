// Engine signals: parsing real simulator metrics, other engines' names, staleness.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RoutingPipeline } from '../../src/gateway/routing/pipeline.js';
import {
  SignalScraper,
  parseEngineMetrics,
  viewOf,
  type SignalSource,
} from '../../src/gateway/routing/signals.js';
import { createSimServer, type SimServer } from '../../src/sim/server.js';
import type { RouteModel } from '../../src/core/types.js';

let sim: SimServer;
let url: string;

beforeAll(async () => {
  sim = createSimServer({ model: 'llama-3.1-8b', servedModelName: 'm', timeScale: 0.05 });
  url = `http://127.0.0.1:${await sim.listen(0)}`;
  const prompt = 'The same long system prompt for everyone. '.repeat(20);
  for (let i = 0; i < 2; i++) {
    const res = await fetch(`${url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'm', prompt, max_tokens: 1 }),
    });
    await res.text();
  }
});

afterAll(async () => {
  await sim.close();
});

describe('parseEngineMetrics', () => {
  it("parses the simulator's real /metrics text (vLLM names)", async () => {
    const text = await (await fetch(`${url}/metrics`)).text();
    const s = parseEngineMetrics(text, 42);
    expect(s.updatedAt).toBe(42);
    expect(s.waiting).toBe(0);
    expect(s.running).toBe(0);
    expect(s.kvUtilization).toBeGreaterThanOrEqual(0);
    expect(s.kvUtilization).toBeLessThanOrEqual(1);
    expect(s.blockSize).toBe(16);
    expect(s.numGpuBlocks).toBeGreaterThan(0);
    expect(s.prefixQueries).toBeGreaterThan(0);
    expect(s.prefixHits).toBeGreaterThan(0); // the second request reused the first one's prefix
    expect(s.prefixHits).toBeLessThanOrEqual(s.prefixQueries);
  });

  it('parses SGLang and llama.cpp names, summing over label sets', () => {
    const sg = parseEngineMetrics(
      [
        '# HELP sglang:num_queue_reqs x',
        'sglang:num_queue_reqs{model_name="a",tp_rank="0"} 3',
        'sglang:num_queue_reqs{model_name="a",tp_rank="1"} 2',
        'sglang:num_running_reqs{model_name="a"} 7',
        'sglang:token_usage{model_name="a"} 0.25',
      ].join('\n'),
      1,
    );
    expect(sg).toMatchObject({ waiting: 5, running: 7, kvUtilization: 0.25 });
    const ll = parseEngineMetrics(
      'llamacpp:requests_deferred 4\nllamacpp:requests_processing 1\nllamacpp:prompt_tokens_total 100\n',
      1,
    );
    expect(ll).toMatchObject({ waiting: 4, running: 1, prefixQueries: 100, kvUtilization: 0 });
  });

  it('reads only the named series: lookalike names, histogram buckets and comments are skipped', () => {
    const s = parseEngineMetrics(
      [
        '# TYPE vllm:num_requests_waiting gauge',
        'vllm:num_requests_waiting_total 50',
        'vllm:num_requests_waitin 60',
        'vllm:time_to_first_token_seconds_bucket{le="0.1",model_name="m"} 99',
        'vllm:num_requests_waiting{model_name="m",note="a}b"} 2',
        'vllm:num_requests_waiting 1 1700000000000',
        'vllm:cache_config_info{block_size="32",num_gpu_blocks="100"} 1',
        'vllm:kv_cache_usage_perc{model_name="m"} 1.7',
      ].join('\n'),
      1,
    );
    expect(s).toMatchObject({ waiting: 3, blockSize: 32, numGpuBlocks: 100, kvUtilization: 1 });
  });

  it('ignores malformed lines', () => {
    const s = parseEngineMetrics('garbage\nvllm:num_requests_waiting{x="1"} NaN\n{}\n', 1);
    expect(s.waiting).toBe(0);
  });
});

describe('staleness', () => {
  it('a signal older than the limit is stale; none at all is stale too', () => {
    const s = parseEngineMetrics('vllm:num_requests_waiting 0\n', 1000);
    expect(viewOf(s, 1500, 2000).stale).toBe(false);
    expect(viewOf(s, 3001, 2000).stale).toBe(true);
    expect(viewOf(undefined, 0, 2000).stale).toBe(true);
  });

  it('the scraper follows the endpoints; its signals go stale on its clock', async () => {
    let now = 0;
    const scraper = new SignalScraper({ intervalMs: 60_000, staleMs: 2000, now: () => now });
    try {
      scraper.sync([{ replicaId: 'r0', url }]);
      await scraper.scrapeOnce('r0');
      expect(scraper.view('r0')).toMatchObject({ stale: false, blockSize: 16 });
      now = 2500;
      expect(scraper.view('r0').stale).toBe(true);
      scraper.sync([]);
      expect(scraper.replicaIds).toEqual([]);
      expect(scraper.signals('r0')).toBeUndefined();
    } finally {
      await scraper.close();
    }
  });

  it('a failing endpoint keeps no fresh signal', async () => {
    const scraper = new SignalScraper({ intervalMs: 60_000, timeoutMs: 200 });
    try {
      scraper.sync([{ replicaId: 'dead', url: 'http://127.0.0.1:1' }]);
      await scraper.scrapeOnce('dead');
      expect(scraper.view('dead').stale).toBe(true);
    } finally {
      await scraper.close();
    }
  });

  it('the pipeline treats a stale replica as saturated, not idle', () => {
    const fresh = { waiting: 3, running: 8, kvUtilization: 0.7, stale: false, ageMs: 10 };
    const source: SignalSource = {
      view: (id) => ({
        ...(id === 'stale'
          ? { waiting: 0, running: 0, kvUtilization: 0, stale: true, ageMs: 5000 }
          : fresh),
        blockSize: 0,
        numGpuBlocks: 0,
      }),
    };
    const p = new RoutingPipeline({ signals: source });
    const route: RouteModel = {
      model: 'm',
      deployment: 'm',
      tenantId: 't',
      tenantName: 't',
      engine: 'sim',
      createdAt: '',
      routing: { policy: 'least-loaded' },
      endpoints: [
        { replicaId: 'stale', index: 0, url: 'x' },
        { replicaId: 'busy', index: 1, url: 'y' },
      ],
    };
    const d = p.pick(route, { exclude: new Set() })!;
    expect(d.endpoint.replicaId).toBe('busy');
    expect(d.receipt.scores['stale']).toMatchObject({ queue: 0, kv: 0, total: 0 });
  });
});
