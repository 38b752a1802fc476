#!/usr/bin/env node
// Routing quality: round-robin vs least-loaded vs prefix-aware (approximate index) vs prefix-aware
// with the precise source (the engines' KV event streams) on a simulated fleet.
//
//   npx tsc -p tsconfig.build.json && node bench/routing-quality.mjs [--rate 200] [--seconds 20]
//     [--unique-rate 70] [--multi-rate 20] [--groups 48] [--prefix-tokens 2000] [--gpu-blocks 1000]
//     [--zipf 0.8] [--time-scale 4] [--only shared,unique,multi] [--policies a,b,c]
//     [--unique-repeat 1]
//
// Runtime with the defaults: ~20 minutes on 2 cores (11 runs, each 20 simulated s × time scale 4).
//
// Policies: round-robin, least-loaded, prefix-aware (routing.prefixSource approximate: the
// gateway's own prefix index; on the simulator, whose tokenizer the gateway knows, over the
// engine's token blocks), prefix-text (the same index over 128-byte text blocks, as for an engine
// whose tokenizer is unknown; only when --policies names it) and prefix-precise (prefix-aware with
// prefixSource precise: each replica's /kv/events stream, subscribed before the load starts).
//
// Per run: a fresh `inferplane sim --replicas 8 --num-gpu-blocks-override N --time-scale S` in a
// CHILD process (its event loop is not the gateway's), a Gateway in this process (manual routing
// snapshot, served by @hono/node-server on port 0) with the policy under test, and the benchmark
// runner (runOnce) sending an open-loop Poisson load. Three workloads:
// - shared: the shared-prefix workload of workloads.md, scaled: G groups whose system prompts of P
//   tokens together need ~6× one replica's KV cache (printed), each request a group's system prompt
//   plus a unique question (group popularity Zipf). Offered at --rate: a rate the prefix-aware
//   policy sustains but round-robin's recompute cannot (the regime that matters in production:
//   a fleet sized for cache-hit prefill costs; see the printed capacity estimate).
// - unique: the negative control, unique prompts of the same length (no reuse), least-loaded vs
//   prefix-aware at --unique-rate (default 60 % of the fleet's estimated full-recompute capacity,
//   so neither policy is overloaded and a difference would be the router's own); also
//   prefix-precise and any name@N listed in --policies, each against least-loaded.
//   --unique-repeat R runs them R rounds (the order rotated each round) and judges the median of
//   the rounds' differences: two runs of the same routing differ by a few % in TTFT p90 here.
// - multi: the multi-turn workload (multi-round QA): sessions of T turns, a shared system prompt,
//   each turn extending the previous prompt with the answer and a new question; offered at
//   --multi-rate sessions/s.
// Time runs --time-scale times slower than simulated time, so a 2-core machine can drive the
// offered load; every figure printed is in SIMULATED time (TTFT ms, tokens/s). Metrics cover the
// requests sent after the first --warmup-frac of the run (caches start cold); each run is
// --seconds simulated seconds long, long enough for a sustained policy's queues to reach steady
// state (an overloaded one has none: its queue grows for the whole run, which is what its p90
// shows). Reported per run: TTFT p50/p90/p99, output tok/s, the engines' prefix-cache hit rate
// (vllm:prefix_cache_hits_total / queries_total, scraped before and after), and for shared an
// oracle bound: every group's prefix computed once for the whole fleet, so
// hits ≤ (requests − groups used) × cached prefix tokens / prompt tokens queried. For multi the
// oracle is every turn's previous prompt cached: Σ cached(previous turn's prompt + answer) /
// Σ prompt tokens.
// A policy written `name@N` (e.g. `--policies prefix-aware,prefix-aware@2`) runs the gateway in N
// worker processes, as `up --gateway-workers N` does.
// A policy written `name@1` runs the gateway in one worker process (the process boundary alone).
// RQ_DEBUG=1 also prints each run's requests per replica and how often a pick went to a busier
// replica than the least busy one, as the client saw it (`pickQuality`). Stops by itself (fleets
// get SIGTERM, SIGKILL after 5 s; a watchdog exits after 30 minutes).
import { spawnSimFleet } from './lib/fleet.mjs';

import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createServer } from 'node:http';
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
const { requestMetrics } = await import('../dist/bench/metrics.js');
const { sharedPrefixWorkload, syntheticWorkload } = await import('../dist/bench/workloads.js');
const { parseEngineMetrics } = await import('../dist/gateway/routing/signals.js');

const { values: args } = parseArgs({
  options: {
    rate: { type: 'string', default: '200' },
    'unique-rate': { type: 'string' },
    'multi-rate': { type: 'string', default: '20' },
    seconds: { type: 'string', default: '20' },
    'warmup-frac': { type: 'string', default: '0.2' },
    groups: { type: 'string', default: '48' },
    'prefix-tokens': { type: 'string', default: '2000' },
    'question-tokens': { type: 'string', default: '60' },
    'output-tokens': { type: 'string', default: '16' },
    turns: { type: 'string', default: '8' },
    'turn-tokens': { type: 'string', default: '500' },
    'system-tokens': { type: 'string', default: '500' },
    'gpu-blocks': { type: 'string', default: '1000' },
    'time-scale': { type: 'string', default: '4' },
    replicas: { type: 'string', default: '8' },
    zipf: { type: 'string', default: '0.8' },
    only: { type: 'string', default: 'shared,unique,multi' },
    'unique-repeat': { type: 'string', default: '1' },
    policies: { type: 'string', default: 'round-robin,least-loaded,prefix-aware,prefix-precise' },
  },
});
const RATE = Number(args.rate);
const MULTI_RATE = Number(args['multi-rate']);
const SECONDS = Number(args.seconds);
const WARMUP = Number(args['warmup-frac']);
const GROUPS = Number(args.groups);
const PREFIX = Number(args['prefix-tokens']);
const QUESTION = Number(args['question-tokens']);
const OSL = Number(args['output-tokens']);
const TURNS = Number(args.turns);
const TURN_TOKENS = Number(args['turn-tokens']);
const SYSTEM = Number(args['system-tokens']);
const BLOCKS = Number(args['gpu-blocks']);
const SCALE = Number(args['time-scale']);
const REPLICAS = Number(args.replicas);
const ZIPF = Number(args.zipf);
const ONLY = new Set(args.only.split(','));
const POLICIES = args.policies.split(',');
// The negative control always runs least-loaded and prefix-aware in one process, plus
// prefix-precise, prefix-text and any `name@N` (gateway workers) that --policies names, each compared with
// least-loaded in one process.
const UNIQUE_POLICIES = [
  'least-loaded',
  'prefix-aware',
  ...POLICIES.filter(
    (p) =>
      p === 'prefix-precise' ||
      p === 'prefix-text' ||
      (p.includes('@') && !p.startsWith('round-robin')),
  ),
];
const BLOCK_SIZE = 16;
// Full-recompute capacity estimate of the fleet (printed; the unique control runs below it):
// prefill at ~30k tokens/s per H100 replica for Llama-3.1-8B in the simulator's roofline
// (1,000 tokens in 33.7 ms) plus OSL decode steps of ~7 ms, batched.
const PREFILL_TOK_S = 30_000;
const recomputeCap = (REPLICAS * PREFILL_TOK_S) / (PREFIX + QUESTION);
const UNIQUE_RATE =
  args['unique-rate'] !== undefined ? Number(args['unique-rate']) : Math.round(0.6 * recomputeCap);
const UNIQUE_REPEAT = Number(args['unique-repeat']);
if (!(Number.isInteger(UNIQUE_REPEAT) && UNIQUE_REPEAT >= 1)) {
  console.error('bench/routing-quality: --unique-repeat takes a whole number ≥ 1');
  process.exit(2);
}

const watchdog = setTimeout(() => {
  console.error('bench/routing-quality: watchdog: still running after its time, exiting');
  for (const c of children) c.kill('SIGKILL');
  process.exit(1);
}, 1_800_000 * UNIQUE_REPEAT);
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
  const perReplica = [];
  for (const u of urls) {
    const text = await (await fetch(`${u}/metrics`)).text();
    const s = parseEngineMetrics(text, 0);
    hits += s.prefixHits;
    queries += s.prefixQueries;
    perReplica.push(
      [...text.matchAll(/^vllm:request_success_total\{[^}]*\} (\S+)/gm)].reduce(
        (a, m) => a + Number(m[1]),
        0,
      ),
    );
  }
  return { hits, queries, perReplica };
}

const pctl = (sorted, p) =>
  sorted.length === 0
    ? NaN
    : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];

const KEY = 'ipk_bench_routing';
// Route settings per policy row (others: `{policy}`).
const ROUTING = {
  'prefix-aware': { policy: 'prefix-aware', prefixSource: 'approximate' },
  'prefix-text': { policy: 'prefix-aware', prefixSource: 'approximate', prefixBlocks: 'text' },
  'prefix-precise': { policy: 'prefix-aware', prefixSource: 'precise' },
};
/**
 * `policy@N` (e.g. prefix-aware@2): the gateway in N worker processes, as `up --gateway-workers N`
 * runs it (dist/platform/gateway-workers.js; connections dealt round-robin between workers, each
 * worker's approximate-prefix picks relayed to the others), behind a stub control plane.
 */
async function startWorkers(count, snapshot) {
  const { GatewayWorkers } = await import('../dist/platform/gateway-workers.js');
  const stub = createServer((_, res) => res.writeHead(404).end());
  await new Promise((r) => stub.listen(0, '127.0.0.1', r));
  const pool = await GatewayWorkers.start({
    count,
    logger: createLogger({ level: 'silent' }),
    config: {
      port: 0,
      host: '127.0.0.1',
      primaryUrl: `http://127.0.0.1:${stub.address().port}`,
      demandIntervalMs: 100,
      logLevel: 'silent',
      logDestination: 2,
      tracing: { serviceName: 'inferplane', sampleRatio: 0 },
      version: 'bench',
      routing: { scrapeIntervalMs: 100, staleMs: 2000 },
    },
  });
  await pool.update(snapshot);
  // Each worker scrapes every replica (and subscribes to KV events) on its own: give it a second.
  await new Promise((r) => setTimeout(r, 1000));
  return {
    port: pool.port,
    close: async () => {
      await pool.close();
      stub.close();
    },
  };
}

/**
 * How often a pick went to a replica busier than the least busy one when it was sent, as the
 * client saw it (x-inferplane-replica; in flight: sent, not ended; prefilling: sent, no first
 * token yet), and for those busier in flight, how long before it the same replica had been sent
 * the previous request (under a few ms: two gateway processes deciding before either heard of the
 * other's pick). A diagnostic (RQ_DEBUG): the gateway's own view lags and leads this by a little.
 */
function pickQuality(records) {
  const recs = records.filter((r) => r.servedBy !== undefined && r.error === null);
  const ids = [...new Set(recs.map((r) => r.servedBy))];
  let busier = 0;
  let busierPrefill = 0;
  let soon = 0;
  for (const q of recs) {
    const t = q.startNs;
    const flight = new Map(ids.map((id) => [id, 0]));
    const prefill = new Map(ids.map((id) => [id, 0]));
    let previous = -Infinity;
    for (const r of recs) {
      if (r === q || r.startNs >= t) continue;
      if (r.servedBy === q.servedBy) previous = Math.max(previous, r.startNs);
      if (r.endNs <= t) continue;
      flight.set(r.servedBy, flight.get(r.servedBy) + 1);
      if ((r.chunkNs[0] ?? r.endNs) > t) prefill.set(r.servedBy, prefill.get(r.servedBy) + 1);
    }
    if (flight.get(q.servedBy) > Math.min(...flight.values())) {
      busier++;
      if (t - previous < 3e6) soon++;
    }
    if (prefill.get(q.servedBy) > Math.min(...prefill.values())) busierPrefill++;
  }
  const pct = (x) => `${((100 * x) / Math.max(1, recs.length)).toFixed(1)} %`;
  return (
    `picks to a replica with more in flight than the least busy ${pct(busier)} ` +
    `(${soon} of them < 3 ms after its previous request), with more prefilling ` +
    `${pct(busierPrefill)} (of ${recs.length})`
  );
}

async function run(policyName, workload, label, rate, requests) {
  const [policy, workersText] = policyName.split('@');
  // `@N`, even `@1`, runs worker processes; without it the gateway is in this process.
  const workers = workersText === undefined ? 0 : Number(workersText);
  const fleet = await startFleet();
  const urls = fleet.info.replicas.map((r) => r.url);
  const model = fleet.info.model;
  const snapshot = {
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
        routing: ROUTING[policy] ?? { policy },
      },
    ],
  };
  const pool = workers > 0 ? await startWorkers(workers, snapshot) : undefined;
  const gateway = pool
    ? undefined
    : new Gateway({
        metrics: createMetrics({ defaultMetrics: false }),
        logger: createLogger({ level: 'silent' }),
      });
  gateway?.update(snapshot);
  const app = new Hono();
  if (gateway) app.route('/v1', gateway.routes());
  const server = await new Promise((resolve) => {
    const s = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s));
  });
  const port = pool ? pool.port : server.address().port;
  // Let the gateway's scrapers see every replica before the load starts.
  for (
    let i = 0;
    gateway && i < 100 && urls.some((_, k) => gateway.signals.view(`r${k}`).stale);
    i++
  ) {
    await new Promise((r) => setTimeout(r, 20));
  }
  // ...and, for the precise source, every replica's KV event stream.
  if (gateway && policy === 'prefix-precise') {
    const hub = gateway.signals.kvEvents;
    for (let i = 0; i < 250 && urls.some((_, k) => !hub.live(`r${k}`)); i++) {
      await new Promise((r) => setTimeout(r, 20));
    }
    if (urls.some((_, k) => !hub.live(`r${k}`)))
      console.log(`  ${label}: KV event streams not all live`);
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
    // Open loop (Poisson arrivals) at the simulated rate (real rate = rate / time scale): in a
    // closed loop every new request is sent the moment one finishes, which hides overload.
    const load = {
      mode: 'open',
      requestRate: rate / SCALE,
      arrival: 'poisson',
      endpoint: 'chat',
      requestCount: requests,
      warmupRequests: 0,
      seed: 1,
    };
    const res = await runOnce(cfg, load, join(dir, 'run'), label);
    const after = await engineTotals(urls);
    if (process.env.RQ_DEBUG) {
      const reqs = after.perReplica.map((x, k) => x - before.perReplica[k]);
      console.log(`  [debug] ${label}: requests per replica ${reqs.join(',')}`);
      console.log(`  [debug] ${label}: ${pickQuality(res.records)}`);
    }
    // Steady-state window: requests sent after the first WARMUP of the run.
    const recs = res.records
      .filter((r) => r.phase === 'profiling')
      .sort((a, b) => (a.intendedNs ?? a.startNs) - (b.intendedNs ?? b.startNs));
    const measured = recs.slice(Math.floor(WARMUP * recs.length));
    const ttfts = [];
    let tokens = 0;
    let errors = 0;
    let first = Infinity;
    let last = -Infinity;
    let promptTok = 0;
    let cachedTok = 0;
    const errorKinds = new Map();
    for (const r of measured) {
      if (r.error !== null) {
        errors++;
        const k = `${r.error.code ?? 'transport'} ${r.error.type}: ${r.error.message.slice(0, 80)}`;
        errorKinds.set(k, (errorKinds.get(k) ?? 0) + 1);
        continue;
      }
      const m = requestMetrics(r);
      // TTFT from the intended send time (open loop: no coordinated omission), in simulated ms.
      if (r.chunkNs.length > 0)
        ttfts.push((r.chunkNs[0] - (r.intendedNs ?? r.startNs)) / 1e6 / SCALE);
      tokens += m.output_sequence_length ?? 0;
      first = Math.min(first, r.intendedNs ?? r.startNs);
      last = Math.max(last, r.endNs);
      promptTok += r.usagePromptTokens ?? 0;
      cachedTok += r.usageCachedTokens ?? 0;
    }
    ttfts.sort((a, b) => a - b);
    if (errorKinds.size > 0) {
      console.log(`  ${label}: errors ${[...errorKinds].map(([k, n]) => `${n}× ${k}`).join('; ')}`);
    }
    return {
      label,
      policy: policyName,
      ttft50: pctl(ttfts, 50),
      ttft90: pctl(ttfts, 90),
      ttft99: pctl(ttfts, 99),
      tokS: tokens / ((last - first) / 1e9 / SCALE),
      errors,
      requests: recs.length,
      served: recs.filter((x) => x.error === null).length,
      measured: measured.length,
      hits: after.hits - before.hits,
      queries: after.queries - before.queries,
      windowHit: promptTok > 0 ? cachedTok / promptTok : NaN,
      records: recs,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
    server.close();
    await gateway?.close();
    await pool?.close();
    await fleet.stop();
  }
}

const kvTokens = BLOCKS * BLOCK_SIZE;
const ratio = (GROUPS * PREFIX) / kvTokens;
console.log(
  `fleet: ${REPLICAS} simulated H100 Llama-3.1-8B replicas, ${BLOCKS} KV blocks × ${BLOCK_SIZE} = ` +
    `${kvTokens} tokens each; time scale ${SCALE} (all figures in simulated time)`,
);
console.log(
  `full-recompute capacity estimate: ${REPLICAS} × ${PREFILL_TOK_S} prefill tok/s / ` +
    `${PREFIX + QUESTION} tokens ≈ ${recomputeCap.toFixed(0)} req/s`,
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
const multi = () =>
  sharedPrefixWorkload(
    {
      groups: 1,
      prefixLength: SYSTEM,
      usersPerGroup: 100_000,
      isl: TURN_TOKENS,
      osl: OSL,
      turns: TURNS,
      seed: 11,
    },
    'multi-turn',
  );

const f = (x, d = 0) => (x === undefined || Number.isNaN(x) ? '—' : x.toFixed(d));
const rows = [];
const by = {};
function print(r, oracle) {
  const hit = r.queries > 0 ? (100 * r.hits) / r.queries : NaN;
  console.log(
    `${r.label.padEnd(26)} ${f(r.ttft50, 1).padStart(8)} ${f(r.ttft90, 1).padStart(9)} ` +
      `${f(r.ttft99, 1).padStart(9)}   ${f(r.tokS, 0).padStart(9)}   ${f(hit, 1).padStart(9)}%  ` +
      `${f(oracle, 1).padStart(6)}%   ${r.errors}`,
  );
}
const HEAD =
  'run                        TTFT p50       p90       p99 (ms)   out tok/s   prefix hit   oracle   errors';

if (ONLY.has('shared')) {
  const requests = Math.round(RATE * SECONDS);
  console.log(
    `\nshared prefix: ${GROUPS} groups × ${PREFIX}-token system prompt + ${QUESTION}-token unique ` +
      `question (group popularity Zipf ${ZIPF}), ${OSL} output tokens; shared contexts / one ` +
      `replica's KV = ${GROUPS * PREFIX} / ${kvTokens} = ${ratio.toFixed(1)}× (the fleet holds ` +
      `${((REPLICAS * kvTokens) / (GROUPS * PREFIX)).toFixed(2)}× them)`,
  );
  console.log(
    `  offered: Poisson ${RATE} req/s for ${SECONDS} s (${requests} requests) — ` +
      `${(RATE / recomputeCap).toFixed(1)}× the fleet's full-recompute capacity: sustainable only ` +
      `when most prefix tokens come from the engines' caches`,
  );
  for (const policy of POLICIES) {
    const r = await run(policy, shared(), `shared/${policy}`, RATE, requests);
    rows.push(r);
    by[r.label] = r;
    process.stdout.write(`  done: shared/${policy}\n`);
  }
}
/** The unique control's rounds (--unique-repeat), policy → result. */
const uniqueRounds = [];
if (ONLY.has('unique')) {
  const requests = Math.round(UNIQUE_RATE * SECONDS);
  console.log(
    `\nnegative control: unique ${PREFIX + QUESTION}-token prompts, ${OSL} output tokens; Poisson ` +
      `${UNIQUE_RATE} req/s for ${SECONDS} s (${requests} requests, ~60% of full-recompute capacity)`,
  );
  for (let k = 0; k < UNIQUE_REPEAT; k++) {
    const round = {};
    const n = UNIQUE_POLICIES.length;
    for (let i = 0; i < n; i++) {
      const policy = UNIQUE_POLICIES[(i + k) % n];
      const label = UNIQUE_REPEAT > 1 ? `unique/${policy}#${k + 1}` : `unique/${policy}`;
      const r = await run(policy, unique(), label, UNIQUE_RATE, requests);
      rows.push(r);
      by[r.label] = r;
      round[policy] = r;
      process.stdout.write(`  done: ${label}\n`);
    }
    uniqueRounds.push(round);
  }
}
if (ONLY.has('multi')) {
  const sessions = Math.round(MULTI_RATE * SECONDS);
  console.log(
    `\nmulti-turn: sessions of ${TURNS} turns, ${SYSTEM}-token shared system prompt, each turn ` +
      `${TURN_TOKENS} new tokens + the previous answer (${OSL} tokens) appended; Poisson ` +
      `${MULTI_RATE} sessions/s for ${SECONDS} s (${sessions * TURNS} requests)`,
  );
  for (const policy of POLICIES) {
    const r = await run(policy, multi(), `multi/${policy}`, MULTI_RATE, sessions * TURNS);
    rows.push(r);
    by[r.label] = r;
    process.stdout.write(`  done: multi/${policy}\n`);
  }
}

console.log('\n' + HEAD);
const groupsUsed = Math.min(GROUPS, Math.round(RATE * SECONDS));
const cachedPrefix = Math.floor(PREFIX / BLOCK_SIZE) * BLOCK_SIZE;
for (const r of rows) {
  let oracle = 0;
  if (r.label.startsWith('shared')) {
    // Over the requests the engines served (queries count those only).
    oracle = (100 * Math.max(0, r.served - groupsUsed) * cachedPrefix) / r.queries;
  } else if (r.label.startsWith('multi')) {
    // Turn k > 0 could reuse all whole blocks of turn k−1's prompt + answer; turn 0 the system
    // prompt (after the first session).
    let hit = 0;
    let all = 0;
    const byConv = new Map();
    for (const rec of r.records) {
      if (rec.error !== null || rec.usagePromptTokens === null) continue;
      const list = byConv.get(rec.conversationId) ?? [];
      list.push(rec);
      byConv.set(rec.conversationId, list);
    }
    for (const list of byConv.values()) {
      list.sort((a, b) => a.turnIndex - b.turnIndex);
      for (let k = 0; k < list.length; k++) {
        all += list[k].usagePromptTokens;
        const prev =
          k === 0
            ? SYSTEM
            : list[k - 1].usagePromptTokens + (list[k - 1].usageCompletionTokens ?? 0);
        hit += Math.floor(Math.min(prev, list[k].usagePromptTokens - 1) / BLOCK_SIZE) * BLOCK_SIZE;
      }
    }
    oracle = (100 * hit) / all;
  }
  print(r, r.label.startsWith('unique') ? NaN : oracle);
}

const ratioLine = (prefix, name = 'prefix-aware') => {
  const rr = by[`${prefix}/round-robin`];
  const ll = by[`${prefix}/least-loaded`];
  const pa = by[`${prefix}/${name}`];
  if (!rr || !ll || !pa) return;
  console.log(
    `${prefix}: TTFT p90 round-robin / ${name} = ${f(rr.ttft90 / pa.ttft90, 1)}× ` +
      `(target ≥ 10×: ${rr.ttft90 / pa.ttft90 >= 10 ? 'met' : 'NOT met'}); ` +
      `least-loaded / ${name} = ${f(ll.ttft90 / pa.ttft90, 2)}× ` +
      `(target > 1: ${ll.ttft90 > pa.ttft90 ? 'met' : 'NOT met'})`,
  );
};
console.log('');
for (const name of ['prefix-aware', 'prefix-text', 'prefix-precise']) {
  ratioLine('shared', name);
  ratioLine('multi', name);
}
const sgn = (x) => (x >= 0 ? '+' : '');
const middle = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
for (const name of UNIQUE_POLICIES.filter((p) => p !== 'least-loaded')) {
  // Each round's difference against least-loaded in the same round; the median of them judged.
  const diffs = [];
  const tdiffs = [];
  for (const round of uniqueRounds) {
    const ul = round['least-loaded'];
    const up = round[name];
    if (!ul || !up) continue;
    diffs.push((100 * (up.ttft90 - ul.ttft90)) / ul.ttft90);
    tdiffs.push((100 * (up.tokS - ul.tokS)) / ul.tokS);
  }
  if (diffs.length === 0) continue;
  const diff = middle(diffs);
  const tdiff = middle(tdiffs);
  const each =
    diffs.length > 1
      ? ` (median of ${diffs.length} rounds: ${diffs.map((d) => sgn(d) + f(d, 1)).join(' / ')} %)`
      : '';
  console.log(
    `negative control (unique prompts), ${name} vs least-loaded: TTFT p90 ${sgn(diff)}${f(diff, 1)}%${each}, ` +
      `throughput ${sgn(tdiff)}${f(tdiff, 1)}% ` +
      `(target within 5%: ${Math.abs(diff) <= 5 && Math.abs(tdiff) <= 5 ? 'met' : 'NOT met'})`,
  );
}
clearTimeout(watchdog);
