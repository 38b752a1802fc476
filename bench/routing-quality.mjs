#!/usr/bin/env node
// Routing quality: round-robin vs least-loaded vs prefix-aware on a simulated fleet.
//
//   npx tsc -p tsconfig.build.json && node bench/routing-quality.mjs [--requests 600]
//     [--concurrency 32] [--groups 48] [--prefix-tokens 2000] [--gpu-blocks 1000] [--zipf 0.8]
//     [--time-scale 1]
//
// Runtime: under a minute on 2 cores with the defaults (5 runs of 600 requests, a fresh fleet per
// run; time scale 1, so TTFTs are the simulated engine's real-time figures plus gateway overhead). Loopback only; stops by itself (fleets get SIGTERM, SIGKILL after 5 s; a watchdog
// exits after 6 minutes).
//
// Per run: a fresh `inferplane sim --replicas 8 --num-gpu-blocks-override N --time-scale S` in a
// CHILD process (its event loop is not the gateway's), a Gateway in this process (manual routing
// snapshot, served by @hono/node-server on port 0) with the policy under test, and the benchmark
// runner (runOnce) sending a shared-prefix chat workload: G groups whose system prompts of P tokens
// together need ~6× one replica's KV cache (printed), each request a group's system prompt plus a
// unique question. Reported: TTFT p50/p90/p99, output tok/s, and the engines' prefix-cache hit
// rate (vllm:prefix_cache_hits_total / queries_total, scraped before and after), with an oracle
// bound: every group's prefix computed once for the whole fleet, so
// hits ≤ (requests − groups) × cached prefix tokens / prompt tokens queried.
// RQ_DEBUG=1 also prints each run's requests per replica and the gateway's in-flight counts after.
// Negative control: unique prompts (no shared prefix) with least-loaded and prefix-aware; the
// prefix-aware TTFT p90 should be within 5% of least-loaded's.
import { spawnSimFleet } from './lib/fleet.mjs';

import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { serve } from '@hono/node-server';
import { Hono } from 'hono';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
if (!existsSync(join(ROOT, 'dist/gateway/gateway.js'))) {
  console.error('bench/routing-quality: dist/ is missing; run `npx tsc -p tsconfig.build.json`');
  process.exit(1);
}
const { Gateway } = await import('../dist/gateway/gateway.js');
const { hashApiKey } = await import('../dist/core/ids.js');
const { createMetrics } = await import('../dist/telemetry/metrics.js');
const { createLogger } = await import('../dist/telemetry/logger.js');
const { runOnce } = await import('../dist/bench/runner.js');
const { sharedPrefixWorkload, syntheticWorkload } = await import('../dist/bench/workloads.js');
const { parseEngineMetrics } = await import('../dist/gateway/routing/signals.js');

const { values: args } = parseArgs({
  options: {
    requests: { type: 'string', default: '600' },
    concurrency: { type: 'string', default: '32' },
    rate: { type: 'string', default: '80' },
    groups: { type: 'string', default: '48' },
    'prefix-tokens': { type: 'string', default: '2000' },
    'question-tokens': { type: 'string', default: '60' },
    'output-tokens': { type: 'string', default: '16' },
    'gpu-blocks': { type: 'string', default: '1000' },
    'time-scale': { type: 'string', default: '1' },
    replicas: { type: 'string', default: '8' },
    zipf: { type: 'string', default: '0.8' },
  },
});
const REQUESTS = Number(args.requests);
const CONC = Number(args.concurrency);
const RATE = Number(args.rate);
const GROUPS = Number(args.groups);
const PREFIX = Number(args['prefix-tokens']);
const QUESTION = Number(args['question-tokens']);
const OSL = Number(args['output-tokens']);
const BLOCKS = Number(args['gpu-blocks']);
const SCALE = Number(args['time-scale']);
const REPLICAS = Number(args.replicas);
const ZIPF = Number(args.zipf);
const BLOCK_SIZE = 16;

const watchdog = setTimeout(() => {
  console.error('bench/routing-quality: watchdog: still running after 6 minutes, exiting');
  for (const c of children) c.kill('SIGKILL');
  process.exit(1);
}, 360_000);
watchdog.unref();
const children = new Set();

async function startFleet() {
  const { child, info, exited } = await spawnSimFleet([
    '--replicas',
    String(REPLICAS),
    '--num-gpu-blocks-override',
    String(BLOCKS),
    '--time-scale',
    String(SCALE),
  ]);
  children.add(child);
  return {
    info,
    async stop() {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
      children.delete(child);
    },
  };
}

async function engineTotals(urls) {
  let hits = 0;
  let queries = 0;
  for (const u of urls) {
    const s = parseEngineMetrics(await (await fetch(`${u}/metrics`)).text(), 0);
    hits += s.prefixHits;
    queries += s.prefixQueries;
  }
  return { hits, queries };
}

const KEY = 'ipk_bench_routing';
async function run(policy, workload, label) {
  const fleet = await startFleet();
  const urls = fleet.info.replicas.map((r) => r.url);
  const model = fleet.info.model;
  const gateway = new Gateway({
    metrics: createMetrics({ defaultMetrics: false }),
    logger: createLogger({ level: 'silent' }),
  });
  gateway.update({
    version: 1,
    keys: [{ hash: hashApiKey(KEY), keyId: 'k', role: 'tenant', tenantId: 't', tenantName: 't' }],
    models: [
      {
        model,
        deployment: model,
        tenantId: 't',
        tenantName: 't',
        engine: 'sim',
        createdAt: new Date(0).toISOString(),
        endpoints: urls.map((url, i) => ({ replicaId: `r${i}`, index: i, url })),
        routing: { policy },
      },
    ],
  });
  const app = new Hono();
  app.route('/v1', gateway.routes());
  const server = await new Promise((resolve) => {
    const s = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s));
  });
  const port = server.address().port;
  // Let the gateway's scrapers see every replica before the load starts.
  for (let i = 0; i < 100 && urls.some((_, k) => gateway.signals.view(`r${k}`).stale); i++) {
    await new Promise((r) => setTimeout(r, 20));
  }
  const dir = mkdtempSync(join(tmpdir(), 'routing-quality-'));
  try {
    const before = await engineTotals(urls);
    const cfg = {
      client: {
        baseUrl: `http://127.0.0.1:${port}`,
        endpoint: 'chat',
        model,
        apiKey: KEY,
        stream: true,
      },
      workload,
      workloadInfo: { name: workload.name },
      load: {},
      artifactsDir: dir,
      metricsUrl: null,
      cliCommand: 'bench/routing-quality.mjs',
    };
    // Open loop (Poisson arrivals) unless --rate 0: in a closed loop every new request is sent the
    // moment one finishes, which ties arrivals to completions (and to engine step boundaries) at
    // the least-loaded replica — an artifact that favours round-robin's blind rotation.
    const load = {
      ...(RATE > 0
        ? { mode: 'open', requestRate: RATE, arrival: 'poisson' }
        : { mode: 'closed', concurrency: CONC }),
      endpoint: 'chat',
      requestCount: REQUESTS,
      warmupRequests: 0,
      seed: 1,
    };
    const res = await runOnce(cfg, load, join(dir, 'run'), label);
    const after = await engineTotals(urls);
    if (process.env.RQ_DEBUG) {
      const infl = urls.map((_, k) => gateway.pipeline.inflightOf(`r${k}`));
      const reqs = [];
      for (const u of urls) {
        const t = await (await fetch(`${u}/metrics`)).text();
        reqs.push(
          [...t.matchAll(/^vllm:request_success_total\{[^}]*\} (\S+)/gm)].reduce(
            (a, m) => a + Number(m[1]),
            0,
          ),
        );
      }
      console.log(
        `  [debug] ${label}: in flight after ${infl.join(',')}; requests per replica ${reqs.join(',')}`,
      );
    }
    const m = res.summary.metrics;
    return {
      label,
      policy,
      ttft50: m.time_to_first_token?.p50,
      ttft90: m.time_to_first_token?.p90,
      ttft99: m.time_to_first_token?.p99,
      tokS: res.summary.outputTokenThroughput,
      errors: res.summary.errorCount,
      requests: res.summary.requestCount,
      hits: after.hits - before.hits,
      queries: after.queries - before.queries,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
    server.close();
    await gateway.close();
    await fleet.stop();
  }
}

const kvTokens = BLOCKS * BLOCK_SIZE;
const ratio = (GROUPS * PREFIX) / kvTokens;
console.log(
  `fleet: ${REPLICAS} simulated replicas, ${BLOCKS} KV blocks × ${BLOCK_SIZE} = ${kvTokens} tokens each, ` +
    `time scale ${SCALE}`,
);
console.log(
  `workload: ${GROUPS} groups × ${PREFIX}-token shared system prompt + ${QUESTION}-token unique ` +
    `question (group popularity Zipf ${ZIPF}), ${OSL} output tokens; ${REQUESTS} requests, ${RATE > 0 ? `open loop, Poisson ${RATE} req/s` : `${CONC} concurrent (closed loop)`}`,
);
console.log(
  `shared contexts / one replica's KV = ${GROUPS * PREFIX} / ${kvTokens} = ${ratio.toFixed(1)}× ` +
    `(the whole fleet holds ${((REPLICAS * kvTokens) / (GROUPS * PREFIX)).toFixed(2)}× the contexts)`,
);

const shared = () =>
  sharedPrefixWorkload({
    groups: GROUPS,
    prefixLength: PREFIX,
    usersPerGroup: 1000,
    zipf: ZIPF,
    isl: QUESTION,
    osl: OSL,
    seed: 7,
  });
const unique = () =>
  syntheticWorkload({ isl: PREFIX + QUESTION, osl: OSL, seed: 9, unique: true }, 'unique');

const rows = [];
for (const policy of ['round-robin', 'least-loaded', 'prefix-aware']) {
  rows.push(await run(policy, shared(), `shared/${policy}`));
  process.stdout.write(`  done: shared/${policy}\n`);
}
for (const policy of ['least-loaded', 'prefix-aware']) {
  rows.push(await run(policy, unique(), `unique/${policy}`));
  process.stdout.write(`  done: unique/${policy}\n`);
}

const groupsUsed = Math.min(GROUPS, REQUESTS);
const cachedPrefix = Math.floor(PREFIX / BLOCK_SIZE) * BLOCK_SIZE;
const f = (x, d = 0) => (x === undefined || Number.isNaN(x) ? '—' : x.toFixed(d));
console.log(
  '\nrun                      TTFT p50   p90      p99 (ms)   out tok/s   prefix hit   oracle   errors',
);
for (const r of rows) {
  const hit = r.queries > 0 ? (100 * r.hits) / r.queries : NaN;
  const oracle = r.label.startsWith('shared')
    ? (100 * Math.max(0, r.requests - groupsUsed) * cachedPrefix) / r.queries
    : 0;
  console.log(
    `${r.label.padEnd(24)} ${f(r.ttft50, 1).padStart(8)} ${f(r.ttft90, 1).padStart(8)} ` +
      `${f(r.ttft99, 1).padStart(8)}   ${f(r.tokS, 0).padStart(9)}   ${f(hit, 1).padStart(9)}%  ` +
      `${f(oracle, 1).padStart(6)}%   ${r.errors}`,
  );
}
const by = Object.fromEntries(rows.map((r) => [r.label, r]));
const rr = by['shared/round-robin'];
const ll = by['shared/least-loaded'];
const pa = by['shared/prefix-aware'];
console.log(
  `\nshared prefix: TTFT p90 round-robin / prefix-aware = ${f(rr.ttft90 / pa.ttft90, 1)}× ` +
    `(target ≥ 10×: ${rr.ttft90 / pa.ttft90 >= 10 ? 'met' : 'NOT met'}); ` +
    `least-loaded / prefix-aware = ${f(ll.ttft90 / pa.ttft90, 2)}× ` +
    `(target > 1: ${ll.ttft90 > pa.ttft90 ? 'met' : 'NOT met'})`,
);
const ul = by['unique/least-loaded'];
const up = by['unique/prefix-aware'];
const diff = (100 * (up.ttft90 - ul.ttft90)) / ul.ttft90;
console.log(
  `negative control (unique prompts): TTFT p90 prefix-aware vs least-loaded ${diff >= 0 ? '+' : ''}${f(diff, 1)}% ` +
    `(target within 5%: ${Math.abs(diff) <= 5 ? 'met' : 'NOT met'})`,
);
clearTimeout(watchdog);
