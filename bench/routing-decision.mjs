#!/usr/bin/env node
// Cost of one routing decision and memory of the prefix index (no sockets, no engines).
//
//   npx tsc -p tsconfig.build.json && node bench/routing-decision.mjs [--replicas 64]
//     [--prompt-chars 131072] [--decisions 2000] [--memory-records 200000] [--baseline DIR]
//
// --baseline DIR: another worktree (built: DIR/dist) run side by side in sections 1, 1b and 1e — each
// decision made by both builds on the same prompt and signals, in alternating order — with the
// ratio of their percentiles (noise on a shared machine falls on both alike).
//
// 1. Decision cost: a prefix-aware pipeline over 64 replicas with fresh (fake) signals and a warm
//    index (every replica holds several 32k-token ≈ 128k-char contexts), then `--decisions` picks
//    of 32k-token prompts (a known context + a fresh question, or an unknown one); the time of
//    `pick` — prompt hashing, index match, scoring, picking, recording — p50/p99 in µs.
//    Target: p99 ≤ 200 µs.
// 1b. The same with the precise prefix source (routing.prefixSource auto, engine `sim`, every
//    replica's KV event stream live): each context's engine block hashes are put in its holder's
//    block set (as BlockStored events would: each with its parent), the prompts are chat-shaped as the gateway passes
//    them, and each context is routed once before timing (the prompt-hash checkpoints are then
//    warm, as for a context the gateway has seen before). Also timed: the first decision for a
//    context that a replica holds but the gateway never routed (a full tokenization: the cold case).
// 2. Memory: `--memory-records` picks of random prompts (1..64 blocks of 128 chars) over 64 replicas; index
//    entries and process.memoryUsage().heapUsed sampled every 10% (after a GC when --expose-gc):
//    they must stay flat once the per-replica LRU sets are full.
// 2b. The same for the token-block index and the prompt-hash checkpoint cache (random chat
//    prompts picked and recorded on an approximate-source sim route; `--memory-records` / 2).
// 1c. The load board's cost per decision (gateway workers; see below).
// 1e. The same with the approximate index over the engine's token blocks (section 1e, below 1b;
//    side by side with --baseline too where that build has one): decision and the record after
//    it (a microtask, not part of the decision), timed apart.
// 1f. A working set of contexts larger than the checkpoint cache's floor: the cache sized to the
//    fleet against the same build held at the floor (see below).
// 1d. The prompt text hash (the largest part of 1): the WebAssembly SIMD kernel against the
//    JavaScript reference (same values), interleaved on the same 128 KiB prompts.
// Runs in a few seconds and stops by itself.
import { existsSync, openSync, readSync } from 'node:fs';
import { PerformanceObserver } from 'node:perf_hooks';
import { resolve as resolvePath } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const DIST = new URL('../dist/', import.meta.url);
if (!existsSync(fileURLToPath(new URL('gateway/routing/pipeline.js', DIST)))) {
  console.error('bench/routing-decision: dist/ is missing; run `npx tsc -p tsconfig.build.json`');
  process.exit(1);
}
/** The modules of one build (its dist/ folder): this one, or a --baseline worktree's. */
async function loadBuild(dist, name) {
  const mod = (path) => import(new URL(path, dist).href);
  const { RoutingPipeline, seededRandom } = await mod('gateway/routing/pipeline.js');
  const { BlockSet, parseBlockHash } = await mod('gateway/routing/kv-events.js');
  const { tokenize, blockHashes, chatPromptText } = await mod('core/tokens.js');
  return {
    name,
    RoutingPipeline,
    seededRandom,
    BlockSet,
    parseBlockHash,
    tokenize,
    engineHashes: blockHashes,
    chatPromptText,
  };
}
const build = await loadBuild(DIST, 'this build');
const { RoutingPipeline, seededRandom } = build;
const { LoadBoard, boardPath, createBoardFile, removeBoardFile } = await import(
  new URL('gateway/routing/load-board.js', DIST).href
);
const { textHashKernel, blockHashes: textHashes } = await import(
  new URL('gateway/routing/text-hash.js', DIST).href
);

const { values: args } = parseArgs({
  options: {
    replicas: { type: 'string', default: '64' },
    'prompt-chars': { type: 'string', default: String(32768 * 4) },
    decisions: { type: 'string', default: '2000' },
    'memory-records': { type: 'string', default: '200000' },
    baseline: { type: 'string' },
    'working-set': { type: 'string', default: '400' },
  },
});
const R = Number(args.replicas);
const CHARS = Number(args['prompt-chars']);
const N = Number(args.decisions);
const M = Number(args['memory-records']);

const rnd = seededRandom(12345);
const words = 'alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu'.split(' ');
function text(chars) {
  let s = '';
  while (s.length < chars) s += words[Math.floor(rnd() * words.length)] + ' ';
  return s.slice(0, chars);
}

const view = () => ({
  waiting: Math.floor(rnd() * 3),
  running: Math.floor(rnd() * 16),
  kvUtilization: rnd() * 0.8,
  stale: false,
  ageMs: 20,
  blockSize: 16,
  numGpuBlocks: 28004,
});
const views = new Map();
function route() {
  const endpoints = Array.from({ length: R }, (_, i) => ({
    replicaId: `r${i}`,
    index: i,
    url: `http://10.0.0.${i}:8000`,
  }));
  for (const e of endpoints) views.set(e.replicaId, view());
  return {
    model: 'm',
    deployment: 'm',
    tenantId: 't',
    tenantName: 't',
    engine: 'sim',
    createdAt: '',
    endpoints,
  };
}
const signals = { view: (id) => views.get(id) };
// Time this thread waited on the CPU run queue (ns, /proc/thread-self/schedstat field 2), to
// separate the decision's own cost from time the OS gave other processes (a shared machine).
let schedFd = -1;
try {
  schedFd = openSync('/proc/thread-self/schedstat', 'r');
} catch {
  // not Linux: wall clock only
}
const schedBuf = Buffer.alloc(128);
function runQueueWaitNs() {
  if (schedFd < 0) return 0;
  const n = readSync(schedFd, schedBuf, 0, 128, 0);
  return Number(schedBuf.toString('latin1', 0, n).split(' ')[1]);
}
// Garbage collections (performance.now() spans), to tell how many slow decisions overlapped one.
const gcSpans = [];
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) gcSpans.push([e.startTime, e.startTime + e.duration]);
}).observe({ entryTypes: ['gc'] });
/** Delivers the GC entries observed so far (the observer is called on a later turn). */
const gcSettled = () => new Promise((r) => setTimeout(r, 0));
const pct = (sorted, p) =>
  sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];

// Sections 1 and 1b run each build given: this one alone, or with --baseline DIR (another
// worktree, built) side by side — the same prompts, signals and order of events for both, each
// decision made by both builds one after the other (which goes first alternates), so the
// machine's noise falls on both alike. (Two pipelines' indexes then share the CPU caches: the
// side-by-side figures are for the ratio; the target is judged on a run of one build.)
const builds = [build];
if (args.baseline !== undefined) {
  const dist = new URL('dist/', pathToFileURL(`${resolvePath(args.baseline)}/`));
  if (!existsSync(fileURLToPath(new URL('gateway/routing/pipeline.js', dist)))) {
    console.error(`bench/routing-decision: ${fileURLToPath(dist)} is missing; build the baseline`);
    process.exit(1);
  }
  builds.push(await loadBuild(dist, 'baseline'));
}
/**
 * Times `pick` per build for one request, in alternating order (decision i); then, untimed as a
 * decision, the record after it (`flushRecords`: a microtask after the pick in the gateway, where
 * the request is already written upstream; builds before it recorded inside `pick`), timed apart
 * into `c.records` when the case has that array.
 */
function timePicks(cases, i, req) {
  const out = new Array(cases.length);
  for (let j = 0; j < cases.length; j++) {
    const c = i % 2 && cases.length > 1 ? cases.length - 1 - j : j;
    const w0 = runQueueWaitNs();
    const p0 = performance.now();
    const t0 = process.hrtime.bigint();
    const d = cases[c].p.pick(cases[c].rt, req());
    const us = Number(process.hrtime.bigint() - t0) / 1000;
    if (us > 200 && i >= 200) (cases[c].slow ??= []).push([p0, performance.now()]);
    const waited = (runQueueWaitNs() - w0) / 1000;
    cases[c].p.release(d.endpoint.replicaId);
    let rec = 0;
    if (cases[c].p.flushRecords) {
      const t1 = process.hrtime.bigint();
      cases[c].p.flushRecords();
      rec = Number(process.hrtime.bigint() - t1) / 1000;
    }
    out[c] = { d, us, onCpu: Math.max(0, us - waited), rec };
  }
  return out;
}
/** The records' line of a section (builds that record after the pick). */
function reportRecords(cases) {
  for (const c of cases) {
    if (!c.records?.length || !c.p.flushRecords) continue;
    c.records.sort((a, b) => a - b);
    console.log(
      `${cases.length > 1 ? `  ${c.build.name}:` : ''}  record after the pick (a microtask, not part of ` +
        `the decision): p50 ${pct(c.records, 50).toFixed(1)} µs p99 ${pct(c.records, 99).toFixed(1)} µs`,
    );
  }
}
/** How many of the case's decisions over 200 µs overlapped a garbage collection. */
function slowInGc(c) {
  let n = 0;
  for (const [a, b] of c.slow ?? []) if (gcSpans.some(([g0, g1]) => g0 < b && g1 > a)) n++;
  return n;
}
function report(cases) {
  for (const c of cases) {
    c.times.sort((a, b) => a - b);
    c.onCpu.sort((a, b) => a - b);
  }
  const verdict = (v) => `target p99 ≤ 200 µs: ${v <= 200 ? 'MET' : 'NOT MET'}`;
  for (const c of cases) {
    const { times, onCpu } = c;
    const p99 = pct(times, 99);
    const who = cases.length > 1 ? `  ${c.build.name}:` : '';
    console.log(
      `${who}  p50 ${pct(times, 50).toFixed(1)} µs   p90 ${pct(times, 90).toFixed(1)} µs   p99 ` +
        `${p99.toFixed(1)} µs   max ${times.at(-1).toFixed(1)} µs   (${times.filter((t) => t > 200).length} ` +
        `of ${times.length} over 200 µs, ${slowInGc(c)} of them during a GC)   ${verdict(p99)}`,
    );
    if (schedFd >= 0) {
      console.log(
        `${who}  on CPU (minus run-queue waits, i.e. time the OS ran other processes): p50 ` +
          `${pct(onCpu, 50).toFixed(1)} µs   p90 ${pct(onCpu, 90).toFixed(1)} µs   p99 ` +
          `${pct(onCpu, 99).toFixed(1)} µs   max ${onCpu.at(-1).toFixed(1)} µs   ${verdict(pct(onCpu, 99))}`,
      );
    }
  }
  if (cases.length > 1) {
    const [a, b] = cases;
    const r = (q) => (pct(b.times, q) / pct(a.times, q)).toFixed(2);
    console.log(
      `  baseline / this build: p50 ${r(50)}×  p90 ${r(90)}×  p99 ${r(99)}×` +
        `   (decisions identical: ${cases.same} of ${a.times.length})`,
    );
  }
}
// Prompts are made before the timed loop and are flat strings, as JSON.parse gives them to the
// gateway (a string built by `+=` is a rope that V8 flattens on first read: ~0.4 ms at 128k
// chars, a cost of this script, not of routing).
const flat = (s) => JSON.parse(JSON.stringify(s));

// 1. Decision cost with a warm index.
{
  const cases = builds.map((b) => ({
    build: b,
    rt: route(),
    p: new b.RoutingPipeline({ signals, random: b.seededRandom(1) }),
    times: [],
    onCpu: [],
    records: [],
  }));
  cases.same = 0;
  const contexts = Array.from({ length: 2 * R }, () => flat(text(CHARS - 200)));
  for (const ctx of contexts) {
    for (let k = 0; k < 4; k++) views.set(`r${Math.floor(rnd() * R)}`, view());
    const prompt = ctx + text(200);
    for (const c of cases) {
      const d = c.p.pick(c.rt, { exclude: new Set(), prompt });
      c.p.release(d.endpoint.replicaId);
    }
  }
  const warm = cases[0].p.index.stats();
  let matchedSum = 0;
  const prompts = [];
  for (let i = 0; i < N + 200; i++) {
    const known = rnd() < 0.8;
    // In parts, as the gateway passes chat messages (no concatenated copy).
    prompts.push({
      known,
      parts: known
        ? [contexts[Math.floor(rnd() * contexts.length)], flat(text(200))]
        : [flat(text(CHARS))],
    });
  }
  // A control for the machine's noise: fixed work (the same prompt's text hash, repeated to about
  // a decision's median during the warm-up decisions), timed after each decision. Its spread is
  // what this host adds to any computation of that length; the decisions' own spread is beyond it.
  const controlPrompt = contexts[0];
  let controlReps = 1;
  const warmTimes = [];
  const control = [];
  const timeControl = () => {
    const t0 = process.hrtime.bigint();
    for (let k = 0; k < controlReps; k++) cases[0].p.index.hash(controlPrompt);
    return Number(process.hrtime.bigint() - t0) / 1000;
  };
  for (let i = 0; i < N + 200; i++) {
    const { known, parts: prompt } = prompts[i];
    // Signals move between decisions (as scrapes land), so picks spread over the fleet.
    for (let k = 0; k < 4; k++) views.set(`r${Math.floor(rnd() * R)}`, view());
    const res = timePicks(cases, i, () => ({ exclude: new Set(), prompt }));
    const { d, us } = res[0];
    if (i < 200) warmTimes.push(us);
    if (i === 199) {
      const one = Array.from({ length: 50 }, timeControl).sort((a, b) => a - b)[25];
      const decision = warmTimes.sort((a, b) => a - b)[100];
      controlReps = Math.max(1, Math.round(decision / one));
    }
    if (i >= 200) control.push(timeControl());
    if (process.env.RD_DEBUG && i >= 200 && us > 200) {
      console.log(`slow: known ${known} ${us.toFixed(0)} µs, matched ${d.receipt.matchedBlocks}`);
    }
    if (i >= 200) {
      res.forEach((x, k) => {
        cases[k].times.push(x.us);
        cases[k].onCpu.push(x.onCpu);
        cases[k].records.push(x.rec);
      });
      if (res.every((x) => x.d.endpoint.replicaId === d.endpoint.replicaId)) cases.same++;
      matchedSum += d.receipt.matchedBlocks / Math.max(1, d.receipt.promptBlocks);
    }
  }
  // Breakdown on the same kind of prompts: hashing, index match, index record.
  const p = cases[0].p;
  const parts = { hash: [], match: [], record: [] };
  for (let i = 0; i < 300; i++) {
    const prompt = [contexts[Math.floor(rnd() * contexts.length)], text(200)];
    let t0 = process.hrtime.bigint();
    const h = p.index.hash(prompt);
    parts.hash.push(Number(process.hrtime.bigint() - t0) / 1000);
    t0 = process.hrtime.bigint();
    p.index.match(h);
    parts.match.push(Number(process.hrtime.bigint() - t0) / 1000);
    t0 = process.hrtime.bigint();
    p.index.record(`r${i % R}`, h);
    parts.record.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
  const med = (a) => a.sort((x, y) => x - y)[Math.floor(a.length / 2)];
  const breakdown = `hash ${med(parts.hash).toFixed(0)} µs, match ${med(parts.match).toFixed(0)} µs, record ${med(parts.record).toFixed(0)} µs (medians; text hash kernel: ${textHashKernel})`;
  console.log(
    `decision cost: ${R} replicas, ${CHARS} chars (≈${CHARS / 4} tokens) per prompt, ` +
      `warm index ${warm.entries} entries; ${N} decisions (80% known contexts, mean match ` +
      `${((100 * matchedSum) / N).toFixed(0)}%)`,
  );
  await gcSettled();
  report(cases);
  reportRecords(cases);
  console.log(`  of which (this build): ${breakdown}`);
  control.sort((a, b) => a - b);
  console.log(
    `  control (fixed work: one prompt's text hash ×${controlReps}, after each decision): p50 ` +
      `${pct(control, 50).toFixed(1)} µs   p90 ${pct(control, 90).toFixed(1)} µs   p99 ` +
      `${pct(control, 99).toFixed(1)} µs   (p99 / p50 ${(pct(control, 99) / pct(control, 50)).toFixed(2)}; ` +
      `decisions ${(pct(cases[0].times, 99) / pct(cases[0].times, 50)).toFixed(2)})`,
  );
}

// 1b. Decision cost, precise prefix source.
{
  const chat = (ctx, q) => ['<system>\n', ctx, '\n', '<user>\n', q, '\n'];
  const cases = builds.map((b) => {
    const rt = route();
    const sets = new Map(rt.endpoints.map((e) => [e.replicaId, new b.BlockSet()]));
    const hub = { blocks: (id) => sets.get(id), sync() {}, live: (id) => sets.has(id) };
    const p = new b.RoutingPipeline({ signals, random: b.seededRandom(3), kvEvents: hub });
    // As the replica's BlockStored events would: each block with its parent (the one before it).
    const hold = (ctx, id) => {
      const ids = b.tokenize(b.chatPromptText([{ role: 'system', content: ctx }], false));
      const set = sets.get(id);
      let parent = null;
      for (const h of b.engineHashes(ids, 16)) {
        const [hi, lo] = b.parseBlockHash(h);
        if (parent === null) set.addRoot(hi, lo);
        else set.addChild(hi, lo, parent[0], parent[1]);
        parent = [hi, lo];
      }
    };
    return { build: b, rt, sets, p, hold, times: [], onCpu: [], cold: [], records: [] };
  });
  cases.same = 0;
  const contexts = Array.from({ length: 2 * R }, () => flat(text(CHARS - 200)));
  for (const c of cases) contexts.forEach((ctx, k) => c.hold(ctx, `r${k % R}`));
  for (const ctx of contexts) {
    const prompt = chat(ctx, flat(text(200)));
    for (const c of cases) {
      const d = c.p.pick(c.rt, { exclude: new Set(), prompt });
      c.p.release(d.endpoint.replicaId);
    }
  }
  // Cold: a held context the gateway never routed (full tokenization of the held prefix), after
  // the warm-up above (its decisions tokenized whole contexts: the code is optimized, as in a
  // gateway that has been running; the first such decision of a process, interpreted, takes
  // tens of milliseconds).
  for (let k = 0; k < 20; k++) {
    const ctx = flat(text(CHARS - 200));
    const prompt = chat(ctx, flat(text(200)));
    for (const c of cases) {
      c.hold(ctx, `r${k % R}`);
      const t0 = process.hrtime.bigint();
      const d = c.p.pick(c.rt, { exclude: new Set(), prompt });
      c.cold.push(Number(process.hrtime.bigint() - t0) / 1000);
      c.p.release(d.endpoint.replicaId);
      c.p.flushRecords?.();
    }
  }
  const prompts = [];
  for (let i = 0; i < N + 200; i++) {
    const known = rnd() < 0.8;
    prompts.push(
      known
        ? chat(contexts[Math.floor(rnd() * contexts.length)], flat(text(200)))
        : chat(flat(text(CHARS - 200)), flat(text(200))),
    );
  }
  let matchedSum = 0;
  let precise = 0;
  for (let i = 0; i < N + 200; i++) {
    for (let k = 0; k < 4; k++) views.set(`r${Math.floor(rnd() * R)}`, view());
    const res = timePicks(cases, i, () => ({ exclude: new Set(), prompt: prompts[i] }));
    if (i >= 200) {
      const { d } = res[0];
      res.forEach((x, k) => {
        cases[k].times.push(x.us);
        cases[k].onCpu.push(x.onCpu);
        cases[k].records.push(x.rec);
      });
      if (res.every((x) => x.d.endpoint.replicaId === d.endpoint.replicaId)) cases.same++;
      matchedSum += d.receipt.matchedBlocks / Math.max(1, d.receipt.promptBlocks);
      if (d.receipt.prefixSource === 'precise') precise++;
    }
  }
  let blocks = 0;
  let bytes = 0;
  for (const set of cases[0].sets.values()) {
    blocks += set.size;
    bytes += set.bytes;
  }
  console.log(
    `\ndecision cost, precise source: ${R} replicas with live KV event sets (${blocks} blocks, ` +
      `${(bytes / 2 ** 20).toFixed(1)} MiB), ${CHARS} chars per prompt; ${N} decisions (80% known ` +
      `contexts, mean match ${((100 * matchedSum) / N).toFixed(0)}%, ${precise} precise receipts); ` +
      `${cases[0].p.promptHashes.checkpoints} prompt-hash checkpoints cached`,
  );
  await gcSettled();
  report(cases);
  reportRecords(cases);
  for (const c of cases) {
    c.cold.sort((a, b) => a - b);
    console.log(
      `${cases.length > 1 ? `  ${c.build.name}:` : ''}  cold (a held context never routed before, ` +
        `full tokenization): median ${pct(c.cold, 50).toFixed(0)} µs, max ${c.cold.at(-1).toFixed(0)} µs ` +
        `(${c.cold.length} decisions)`,
    );
  }
}

// 1e. Decision cost, the approximate index over the engine's token blocks (route
// prefixSource approximate on the simulator, whose tokenizer the gateway knows), side by side
// with --baseline when that build has the token-block index. Warmed as 1b (every context routed
// once); then the same mix of chat-shaped prompts. Timed apart: the decision (`pick`: the
// index's checkpoints binary-searched over the blocks resumed from the prompt-hash checkpoints
// and walked past them, hashing the prompt only as far as some replica holds it) and the record
// after it (`flushRecords`, run as a microtask after the pick: the prompt hashed to its end,
// resuming from the cached checkpoints — a prompt seen for the first time is tokenized whole).
{
  const chat = (ctx, q) => ['<system>\n', ctx, '\n', '<user>\n', q, '\n'];
  const tokenBuilds = builds.filter((b) => 'flushRecords' in b.RoutingPipeline.prototype);
  const cases = tokenBuilds.map((b) => {
    const rt = { ...route(), routing: { policy: 'prefix-aware', prefixSource: 'approximate' } };
    const p = new b.RoutingPipeline({ signals, random: b.seededRandom(5), kvEvents: null });
    p.sync({ models: [rt] });
    return {
      build: b,
      rt,
      p,
      times: [],
      onCpu: [],
      recKnown: [],
      recNew: [],
      firstRecord: [],
      pickKnown: [],
      pickNew: [],
    };
  });
  cases.same = 0;
  const contexts = Array.from({ length: 2 * R }, () => flat(text(CHARS - 200)));
  for (const ctx of contexts) {
    const prompt = chat(ctx, flat(text(200)));
    for (const c of cases) {
      const d = c.p.pick(c.rt, { exclude: new Set(), prompt });
      c.p.release(d.endpoint.replicaId);
      const t0 = process.hrtime.bigint();
      c.p.flushRecords();
      c.firstRecord.push(Number(process.hrtime.bigint() - t0) / 1000);
    }
  }
  const prompts = [];
  for (let i = 0; i < N + 200; i++) {
    const known = rnd() < 0.8;
    const ctx = known ? contexts[Math.floor(rnd() * contexts.length)] : flat(text(CHARS - 200));
    prompts.push({ known, parts: chat(ctx, flat(text(200))) });
  }
  let matchedSum = 0;
  let tokenReceipts = 0;
  for (let i = 0; i < N + 200; i++) {
    for (let k = 0; k < 4; k++) views.set(`r${Math.floor(rnd() * R)}`, view());
    const { known, parts } = prompts[i];
    const res = timePicks(cases, i, () => ({ exclude: new Set(), prompt: parts }));
    if (i < 200) continue;
    res.forEach((x, k) => (known ? cases[k].recKnown : cases[k].recNew).push(x.rec));
    const { d } = res[0];
    res.forEach((x, k) => {
      cases[k].times.push(x.us);
      cases[k].onCpu.push(x.onCpu);
      (known ? cases[k].pickKnown : cases[k].pickNew).push(x.us);
    });
    if (res.every((x) => x.d.endpoint.replicaId === d.endpoint.replicaId)) cases.same++;
    matchedSum += d.receipt.matchedBlocks / Math.max(1, d.receipt.promptBlocks);
    if (d.receipt.blockTokens === 16 && d.receipt.prefixSource === 'approximate') tokenReceipts++;
  }
  const p = cases[0].p;
  const idx = p.tokenIndex.stats();
  console.log(
    `\ndecision cost, approximate index over token blocks: ${R} replicas (each sized ${p.tokenIndex.capacity('r0')} ` +
      `blocks = num_gpu_blocks), ${CHARS} chars per prompt, index ${idx.entries} live entries ` +
      `(${(idx.bytes / 2 ** 20).toFixed(1)} MiB); ${N} decisions (80% known contexts, mean match ` +
      `${((100 * matchedSum) / N).toFixed(0)}%, ${tokenReceipts} token-block receipts); ` +
      `${p.promptHashes.checkpoints} prompt-hash checkpoints cached` +
      (builds.length > tokenBuilds.length ? ' (the baseline has no token-block index)' : ''),
  );
  await gcSettled();
  report(cases);
  for (const c of cases) {
    for (const a of [c.recKnown, c.recNew, c.firstRecord, c.pickKnown, c.pickNew])
      a.sort((x, y) => x - y);
    const over = (a) => a.filter((x) => x > 200).length;
    console.log(
      `${cases.length > 1 ? `  ${c.build.name}:` : ''}  decisions by prompt: known context ` +
        `p50 ${pct(c.pickKnown, 50).toFixed(1)} µs p99 ${pct(c.pickKnown, 99).toFixed(1)} µs ` +
        `(${over(c.pickKnown)} of ${c.pickKnown.length} over 200 µs); new prompt p50 ` +
        `${pct(c.pickNew, 50).toFixed(1)} µs p99 ${pct(c.pickNew, 99).toFixed(1)} µs ` +
        `(${over(c.pickNew)} of ${c.pickNew.length} over 200 µs)`,
    );
    console.log(
      `${cases.length > 1 ? `  ${c.build.name}:` : ''}  record after the pick (not part of the decision): ` +
        `known context p50 ${pct(c.recKnown, 50).toFixed(0)} µs p99 ${pct(c.recKnown, 99).toFixed(0)} µs; ` +
        `new prompt (tokenized whole) p50 ${pct(c.recNew, 50).toFixed(0)} µs p99 ${pct(c.recNew, 99).toFixed(0)} µs; ` +
        `warm-up records (new contexts) median ${pct(c.firstRecord, 50).toFixed(0)} µs`,
    );
  }
}

// 1f. A working set of contexts larger than the prompt-hash checkpoint cache's floor (65,536
// checkpoints = 256 contexts of 128k chars): `--working-set` contexts (default 400, ~102k
// checkpoints) on the token-block route of 1e, each routed once, then `--decisions` picks of a
// random one of them + a fresh question. The cache sized to the fleet (this build: one checkpoint
// per 512 B of the replicas' reported KV text, here 64 × 28,004 blocks × 16 tokens × 4 B → 224k)
// against the same build held at 65,536 (`maxCheckpointsLimit`), side by side on the same
// prompts in alternating order. A decision that finds a context's checkpoints gone tokenizes
// it again (milliseconds); "re-tokenized" counts decisions that saved over 32 checkpoints.
{
  const chat = (ctx, q) => ['<system>\n', ctx, '\n', '<user>\n', q, '\n'];
  const rt = { ...route(), routing: { policy: 'prefix-aware', prefixSource: 'approximate' } };
  const mk = (name, precise) => {
    const p = new RoutingPipeline({ signals, random: seededRandom(6), kvEvents: null, precise });
    p.sync({ models: [rt] });
    return { name, rt, p, times: [], retokenized: 0 };
  };
  const cases = [mk('sized to the fleet'), mk('held at 65,536', { maxCheckpointsLimit: 65_536 })];
  const W = Number(args['working-set']);
  const contexts = Array.from({ length: W }, () => flat(text(CHARS - 200)));
  for (const ctx of contexts) {
    const prompt = chat(ctx, flat(text(200)));
    for (const c of cases) {
      c.p.release(c.p.pick(c.rt, { exclude: new Set(), prompt }).endpoint.replicaId);
      c.p.flushRecords();
    }
  }
  for (let i = 0; i < N + 200; i++) {
    for (let k = 0; k < 4; k++) views.set(`r${Math.floor(rnd() * R)}`, view());
    const parts = chat(contexts[Math.floor(rnd() * W)], flat(text(200)));
    for (let j = 0; j < 2; j++) {
      const c = cases[i % 2 ? 1 - j : j];
      const t0 = process.hrtime.bigint();
      const d = c.p.pick(c.rt, { exclude: new Set(), prompt: parts });
      const us = Number(process.hrtime.bigint() - t0) / 1000;
      const saved = c.p.promptHashes.saved;
      c.p.release(d.endpoint.replicaId);
      c.p.flushRecords();
      if (i < 200) continue;
      c.times.push(us);
      if (saved > 32) c.retokenized++;
    }
  }
  console.log(
    `\ndecision cost, a working set of ${W} contexts (${CHARS} chars each) on the token-block ` +
      `route of 1e; ${N} decisions, each made by both caches in alternating order`,
  );
  for (const c of cases) {
    c.times.sort((a, b) => a - b);
    const ph = c.p.promptHashes;
    console.log(
      `  ${c.name} (cap ${ph.checkpointCap}, ${ph.checkpoints} cached, ` +
        `${(ph.checkpointBytes / 2 ** 20).toFixed(1)} MiB of records): p50 ${pct(c.times, 50).toFixed(1)} µs   ` +
        `p90 ${pct(c.times, 90).toFixed(1)} µs   p99 ${pct(c.times, 99).toFixed(1)} µs   ` +
        `(${c.times.filter((t) => t > 200).length} of ${c.times.length} over 200 µs; ` +
        `${c.retokenized} re-tokenized)`,
    );
  }
}

// 1c. The load board's share of a decision (gateway workers): the same short-prompt picks on
// the least-loaded policy without a board and with one whose peer slot holds all R replicas (a
// second gateway process), interleaved; pick + release timed (the board adds one or two reads
// and two writes of a tmpfs file).
{
  const rt = { ...route(), routing: { policy: 'least-loaded' } };
  const path = boardPath(`inferplane-bench-${process.pid}`);
  createBoardFile(path, 2);
  const peer = new LoadBoard(path, 1, 2);
  const ids = new Set(rt.endpoints.map((e) => e.replicaId));
  peer.retain(ids);
  for (const id of ids) peer.publish(id, Math.floor(rnd() * 4), Date.now() - rnd() * 1000);
  const mine = new LoadBoard(path, 0, 2);
  const plain = new RoutingPipeline({ signals, random: seededRandom(4) });
  const shared = new RoutingPipeline({ signals, random: seededRandom(4), board: mine });
  for (const p of [plain, shared]) p.sync({ models: [rt] });
  const t = { plain: [], board: [] };
  const spin = (us) => {
    const end = performance.now() + us / 1000;
    while (performance.now() < end) {
      /* past the board's read coalescing (50 µs): each decision reads it */
    }
  };
  for (let i = 0; i < N + 200; i++) {
    for (const [name, p] of i % 2
      ? [
          ['plain', plain],
          ['board', shared],
        ]
      : [
          ['board', shared],
          ['plain', plain],
        ]) {
      spin(60);
      const t0 = process.hrtime.bigint();
      const d = p.pick(rt, { exclude: new Set() });
      p.release(d.endpoint.replicaId);
      if (i >= 200) t[name].push(Number(process.hrtime.bigint() - t0) / 1000);
    }
  }
  mine.close();
  peer.close();
  removeBoardFile(path);
  for (const a of Object.values(t)) a.sort((x, y) => x - y);
  console.log(
    `load board (2 gateway processes, ${R} replicas on the peer's slot), least-loaded pick + release, ` +
      `${N} each, interleaved:`,
  );
  console.log(
    `  without p50 ${pct(t.plain, 50).toFixed(1)} µs  p99 ${pct(t.plain, 99).toFixed(1)} µs   ` +
      `with p50 ${pct(t.board, 50).toFixed(1)} µs  p99 ${pct(t.board, 99).toFixed(1)} µs   ` +
      `(+${(pct(t.board, 50) - pct(t.plain, 50)).toFixed(1)} µs at p50)`,
  );
}

// 1d. The text hash: kernel vs the JavaScript reference, interleaved (each prompt hashed by both,
// the order alternating), so the machine's noise falls on both alike.
{
  const flat = (s) => JSON.parse(JSON.stringify(s));
  const texts = Array.from({ length: 64 }, () => flat(text(CHARS)));
  const t = { kernel: [], js: [] };
  for (let i = 0; i < N + 200; i++) {
    const s = texts[i % texts.length];
    for (const name of i % 2 ? ['kernel', 'js'] : ['js', 'kernel']) {
      const t0 = process.hrtime.bigint();
      textHashes(s, 8192, name === 'js');
      if (i >= 200) t[name].push(Number(process.hrtime.bigint() - t0) / 1000);
    }
  }
  for (const a of Object.values(t)) a.sort((x, y) => x - y);
  const [k50, j50] = [pct(t.kernel, 50), pct(t.js, 50)];
  console.log(
    `\ntext hash (${CHARS} chars, encode + hash), ${N} each, interleaved: ${textHashKernel} ` +
      `p50 ${k50.toFixed(1)} µs p99 ${pct(t.kernel, 99).toFixed(1)} µs   JavaScript reference p50 ` +
      `${j50.toFixed(1)} µs p99 ${pct(t.js, 99).toFixed(1)} µs   (${(j50 / k50).toFixed(2)}× at p50)`,
  );
}

/** A prompt of 1..64 blocks of 128 chars from `blockText`, each led by a random 8-digit tag (fresh). */
function randomBlocks(blockText) {
  const blocks = 1 + Math.floor(rnd() * 64);
  let prompt = '';
  for (let b = 0; b < blocks; b++)
    prompt +=
      String(Math.floor(rnd() * 1e8)).padStart(8, '0') +
      blockText.slice(b * 128 + 8, b * 128 + 128);
  return prompt;
}
const spreadOf = (xs) => Math.max(...xs) - Math.min(...xs);
/** A memory sample after `records` records (after a GC when --expose-gc): an index's stats, heap. */
function memoryRow(records, index, extra = {}) {
  globalThis.gc?.();
  const s = index.stats();
  const mu = process.memoryUsage();
  return {
    records,
    entries: s.entries,
    slots: s.slots,
    indexMiB: s.bytes / 2 ** 20,
    heapMiB: mu.heapUsed / 2 ** 20,
    abMiB: mu.arrayBuffers / 2 ** 20,
    ...extra,
  };
}

// 2. Memory over a long run of random prompts.
{
  const rt = route();
  const p = new RoutingPipeline({ signals, random: seededRandom(2) });
  const gc = globalThis.gc;
  const rows = [];
  const sample = (i) => rows.push(memoryRow(i, p.index));
  const blockText = text(128 * 64);
  for (let i = 0; i <= M; i++) {
    if (i % Math.max(1, Math.floor(M / 10)) === 0) sample(i);
    const prompt = randomBlocks(blockText);
    views.set(`r${Math.floor(rnd() * R)}`, view());
    const d = p.pick(rt, { exclude: new Set(), prompt });
    p.release(d.endpoint.replicaId);
  }
  console.log(
    `\nindex memory: ${M} random prompts (1..64 blocks of 128 chars) over ${R} replicas` +
      `${gc ? ' (heap after GC)' : ' (run with --expose-gc for heap after GC)'}`,
  );
  console.log('  records   live entries  index table MiB  heapUsed MiB  arrayBuffers MiB');
  for (const r of rows) {
    console.log(
      `  ${String(r.records).padStart(7)}  ${String(r.entries).padStart(13)}  ${r.indexMiB.toFixed(1).padStart(15)}  ` +
        `${r.heapMiB.toFixed(1).padStart(12)}  ${r.abMiB.toFixed(1).padStart(16)}`,
    );
  }
  const half = rows.slice(Math.floor(rows.length / 2));
  // Live entries never exceed the table's slots (fixed once the fleet's caps are known).
  const bound = p.index.stats().slots;
  const entriesMax = Math.max(...half.map((r) => r.entries));
  const heapSpread = spreadOf(half.map((r) => r.heapMiB));
  const abSpread = spreadOf(half.map((r) => r.abMiB));
  // Growth: the last sample against the first of the second half (a leak grows steadily; noise
  // moves both ways).
  const heapGrowth = half.at(-1).heapMiB - half[0].heapMiB;
  console.log(
    `  second half: entries max ${entriesMax} (bound ${bound}: ${entriesMax <= bound ? 'within' : 'EXCEEDED'}), ` +
      `heapUsed spread ${heapSpread.toFixed(1)} MiB (growth ${heapGrowth >= 0 ? '+' : ''}${heapGrowth.toFixed(1)}), ` +
      `arrayBuffers spread ${abSpread.toFixed(1)} MiB (flat when small against the total)`,
  );
}

// 2b. Memory of the token-block index and the prompt-hash checkpoints over a long run: random
// chat prompts (1..64 blocks of 128 chars, every block fresh) picked and recorded (each record
// tokenizes its prompt and saves its checkpoints) on an approximate-source sim route.
{
  const rt = { ...route(), routing: { policy: 'prefix-aware', prefixSource: 'approximate' } };
  const p = new RoutingPipeline({ signals, random: seededRandom(3), kvEvents: null });
  p.sync({ models: [rt] });
  const gc = globalThis.gc;
  const M2 = Math.max(10, Math.floor(M / 2));
  const rows = [];
  const blockText = text(128 * 64);
  for (let i = 0; i <= M2; i++) {
    if (i % Math.max(1, Math.floor(M2 / 10)) === 0) {
      rows.push(
        memoryRow(i, p.tokenIndex, {
          checkpoints: p.promptHashes.checkpoints,
          // Their records' pools (typed arrays: counted in arrayBuffers); absent in older builds.
          cpMiB: (p.promptHashes.checkpointBytes ?? NaN) / 2 ** 20,
        }),
      );
    }
    const body = randomBlocks(blockText);
    views.set(`r${Math.floor(rnd() * R)}`, view());
    const d = p.pick(rt, { exclude: new Set(), prompt: ['<user>\n', body, '\n'] });
    p.release(d.endpoint.replicaId);
    p.flushRecords();
  }
  console.log(
    `\ntoken-block index and checkpoint memory: ${M2} random chat prompts (1..64 blocks of 128 ` +
      `chars) picked and recorded over ${R} replicas${gc ? ' (heap after GC)' : ''}`,
  );
  console.log(
    '  records   live entries  index table MiB  checkpoints  checkpoint MiB  heapUsed MiB  arrayBuffers MiB',
  );
  for (const r of rows) {
    console.log(
      `  ${String(r.records).padStart(7)}  ${String(r.entries).padStart(13)}  ${r.indexMiB.toFixed(1).padStart(15)}  ` +
        `${String(r.checkpoints).padStart(11)}  ${r.cpMiB.toFixed(1).padStart(14)}  ${r.heapMiB.toFixed(1).padStart(12)}  ` +
        `${r.abMiB.toFixed(1).padStart(16)}`,
    );
  }
  const half = rows.slice(Math.floor(rows.length / 2));
  const bound = half.at(-1).slots;
  const entriesMax = Math.max(...half.map((r) => r.entries));
  const heapGrowth = half.at(-1).heapMiB - half[0].heapMiB;
  console.log(
    `  second half: entries max ${entriesMax} (bound ${bound}: ${entriesMax <= bound ? 'within' : 'EXCEEDED'}), ` +
      `checkpoints max ${Math.max(...half.map((r) => r.checkpoints))}, heapUsed spread ` +
      `${spreadOf(half.map((r) => r.heapMiB)).toFixed(1)} MiB (growth ${heapGrowth >= 0 ? '+' : ''}${heapGrowth.toFixed(1)}), ` +
      `arrayBuffers spread ${spreadOf(half.map((r) => r.abMiB)).toFixed(1)} MiB`,
  );
}
