#!/usr/bin/env node
// CPU cost and timing fidelity of a simulated fleet in one process.
//
//   npx tsc -p tsconfig.build.json && node bench/sim-cpu.mjs [--replicas 32] [--streams 32] \
//     [--duration 20] [--prompt-tokens 200] [--max-tokens 128] [--time-scale 1] [--model M] [--gpu G]
//
// Starts `inferplane sim --replicas R --base-port 0 --json` as a child process, drives S concurrent
// streaming completions per replica from this process (closed loop, loopback only; each request a
// fresh prompt of --prompt-tokens tokens and --max-tokens output tokens with ignore_eos), and after a
// warm-up measures over the rest of --duration:
//
// - the fleet process's CPU time (utime + stime from /proc/<pid>/stat) as % of one core;
// - this load generator's own CPU (process.cpuUsage);
// - tokens/s received by the clients;
// - timing fidelity: the client-measured inter-token latency (ITL) against the engine's own ITL
//   (from the replicas' vllm:inter_token_latency_seconds histograms, converted to real time with
//   the time scale). If the clients see much larger gaps than the engine planned, the simulator's
//   event loop (or the load generator) is the bottleneck, and the bench says which looks saturated.
//
// It stops by itself: new requests stop at the deadline, in-flight ones are dropped, the fleet
// gets SIGTERM (SIGKILL after 5 s), and a watchdog exits if anything hangs.
import { spawnSimFleet } from './lib/fleet.mjs';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import http from 'node:http';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const TOKENIZER = new URL('../dist/sim/tokenizer.js', import.meta.url);
if (!existsSync(fileURLToPath(TOKENIZER))) {
  console.error('bench/sim-cpu: dist/ is missing; run `npx tsc -p tsconfig.build.json` first');
  process.exit(1);
}
const { countTokens } = await import(TOKENIZER.href);

const { values: args } = parseArgs({
  options: {
    replicas: { type: 'string', default: '32' },
    streams: { type: 'string', default: '32' },
    duration: { type: 'string', default: '20' },
    'prompt-tokens': { type: 'string', default: '200' },
    'max-tokens': { type: 'string', default: '128' },
    'time-scale': { type: 'string', default: '1' },
    model: { type: 'string', default: 'llama-3.1-8b' },
    gpu: { type: 'string', default: 'H100-80GB' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (args.help) {
  console.log(
    'usage: node bench/sim-cpu.mjs [--replicas 32] [--streams 32] [--duration 20] ' +
      '[--prompt-tokens 200] [--max-tokens 128] [--time-scale 1] [--model M] [--gpu G]',
  );
  process.exit(0);
}
const int = (name) => {
  const n = Number(args[name]);
  if (!Number.isInteger(n) || n < 1) {
    console.error(`--${name} must be a positive integer`);
    process.exit(2);
  }
  return n;
};
const REPLICAS = int('replicas');
const STREAMS = int('streams');
const DURATION_S = Number(args.duration);
const PROMPT_TOKENS = int('prompt-tokens');
const MAX_TOKENS = int('max-tokens');
const TIME_SCALE = Number(args['time-scale']);
if (!(DURATION_S > 0) || !(TIME_SCALE > 0)) {
  console.error('--duration and --time-scale must be positive numbers');
  process.exit(2);
}
const WARMUP_S = Math.min(3, DURATION_S / 4);

// Watchdog: whatever happens, this bench ends.
let child = null;
const watchdog = setTimeout(
  () => {
    console.error('bench/sim-cpu: watchdog fired, giving up');
    if (child && child.exitCode === null) child.kill('SIGKILL');
    process.exit(1);
  },
  (DURATION_S + 90) * 1000,
);
watchdog.unref();

let CLK_TCK = 100;
try {
  CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
} catch {
  // keep 100
}

/** utime + stime of a process, in seconds. */
function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // Fields after "pid (comm) " start at field 3 (state); utime is field 14, stime field 15.
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

// ---------------------------------------------------------------------------------------------
// Start the fleet

// SIM_CPU_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" profiles the fleet process.
const nodeArgs = (process.env.SIM_CPU_NODE_ARGS ?? '').split(' ').filter((a) => a !== '');
let fleet;
let childExited;
try {
  ({
    child,
    info: fleet,
    exited: childExited,
  } = await spawnSimFleet(
    [
      '--replicas',
      String(REPLICAS),
      '--model',
      args.model,
      '--gpu',
      args.gpu,
      '--time-scale',
      String(TIME_SCALE),
    ],
    nodeArgs,
  ));
} catch (err) {
  console.error(`bench/sim-cpu: ${err.message}`);
  process.exit(1);
}
const MODEL = fleet.model;
const urls = fleet.replicas.map((r) => new URL(r.url));
console.log(
  `fleet pid ${child.pid}: ${urls.length} replicas of ${fleet.profile} on ${fleet.gpu}; ` +
    `${STREAMS} streams each (${urls.length * STREAMS} total), ${PROMPT_TOKENS}-token prompts, ` +
    `${MAX_TOKENS} output tokens, time scale ${TIME_SCALE}, ${DURATION_S} s (${WARMUP_S} s warm-up)`,
);

// ---------------------------------------------------------------------------------------------
// Load

/** Client ITL histogram: 0.05 ms buckets up to 5 s. */
const BUCKET_MS = 0.05;
const itlHist = new Uint32Array(100_000);
let itlCount = 0;
let itlSumMs = 0;
const ttfts = [];
let tokens = 0;
let completed = 0;
let failed = 0;
let measuring = false;
let stopping = false;
const inflight = new Set();

function recordItl(ms) {
  if (!measuring) return;
  itlCount++;
  itlSumMs += ms;
  itlHist[Math.min(itlHist.length - 1, Math.floor(ms / BUCKET_MS))]++;
}

function itlPercentile(p) {
  if (itlCount === 0) return NaN;
  const target = Math.ceil(itlCount * p);
  let seen = 0;
  for (let i = 0; i < itlHist.length; i++) {
    seen += itlHist[i];
    if (seen >= target) return (i + 0.5) * BUCKET_MS;
  }
  return NaN;
}

let promptCounter = 0;
function prompt() {
  // A fresh first word per request: no prefix-cache hits between requests.
  const words = [`q${promptCounter++}`];
  for (let i = 1; i < PROMPT_TOKENS; i++) words.push(`w${i}`);
  return words.join(' ');
}
const samplePrompt = prompt();
if (countTokens(samplePrompt) !== PROMPT_TOKENS)
  console.warn(`warning: prompts have ${countTokens(samplePrompt)} tokens, not ${PROMPT_TOKENS}`);

const agents = urls.map(() => new http.Agent({ keepAlive: true, maxSockets: STREAMS }));

function oneRequest(i) {
  return new Promise((resolve) => {
    const url = urls[i];
    const body = JSON.stringify({
      model: MODEL,
      prompt: prompt(),
      max_tokens: MAX_TOKENS,
      ignore_eos: true,
      stream: true,
    });
    const t0 = performance.now();
    let last = 0;
    let n = 0;
    const req = http.request(
      {
        host: url.hostname,
        port: url.port,
        path: '/v1/completions',
        method: 'POST',
        agent: agents[i],
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
      },
      (res) => {
        if (res.statusCode !== 200) {
          failed++;
          res.resume();
          res.on('end', resolve);
          return;
        }
        res.setEncoding('utf8');
        let buf = '';
        res.on('data', (chunk) => {
          const now = performance.now();
          buf += chunk;
          let at;
          // One SSE event per generated token; count those with text.
          while ((at = buf.indexOf('\n\n')) !== -1) {
            const ev = buf.slice(0, at);
            buf = buf.slice(at + 2);
            if (!ev.startsWith('data: {') || ev.includes('"text":""')) continue;
            n++;
            if (measuring) tokens++;
            if (n === 1) {
              if (measuring) ttfts.push(now - t0);
            } else recordItl(now - last);
            last = now;
          }
        });
        res.on('end', () => {
          completed++;
          resolve();
        });
        res.on('error', resolve);
      },
    );
    inflight.add(req);
    req.on('error', () => {
      if (!stopping) failed++;
      resolve();
    });
    req.on('close', () => inflight.delete(req));
    req.end(body);
  });
}

async function streamLoop(i) {
  while (!stopping) await oneRequest(i);
}

async function scrapeItl() {
  let sum = 0;
  let count = 0;
  await Promise.all(
    urls.map(async (u) => {
      const text = await (await fetch(new URL('/metrics', u))).text();
      for (const line of text.split('\n')) {
        if (line.startsWith('vllm:inter_token_latency_seconds_sum'))
          sum += Number(line.split(' ')[1]);
        if (line.startsWith('vllm:inter_token_latency_seconds_count'))
          count += Number(line.split(' ')[1]);
      }
    }),
  );
  return { sum, count };
}

const loops = [];
for (let i = 0; i < urls.length; i++) for (let s = 0; s < STREAMS; s++) loops.push(streamLoop(i));

await new Promise((r) => setTimeout(r, WARMUP_S * 1000));
const engineBefore = await scrapeItl();
measuring = true;
const cpu0 = cpuSeconds(child.pid);
const self0 = process.cpuUsage();
const t0 = performance.now();
await new Promise((r) => setTimeout(r, (DURATION_S - WARMUP_S) * 1000));
const wallS = (performance.now() - t0) / 1000;
const cpu1 = cpuSeconds(child.pid);
const self1 = process.cpuUsage(self0);
measuring = false;
const engineAfter = await scrapeItl();
stopping = true;
for (const req of inflight) req.destroy();
await Promise.all(loops);
for (const a of agents) a.destroy();

child.kill('SIGTERM');
const killTimer = setTimeout(() => child.kill('SIGKILL'), 5000);
const exit = await childExited;
clearTimeout(killTimer);

// ---------------------------------------------------------------------------------------------
// Report

const fleetCpuPct = ((cpu1 - cpu0) / wallS) * 100;
const selfCpuPct = ((self1.user + self1.system) / 1e6 / wallS) * 100;
const tokPerS = tokens / wallS;
const engineItlMs =
  ((engineAfter.sum - engineBefore.sum) / Math.max(1, engineAfter.count - engineBefore.count)) *
  1000 *
  TIME_SCALE;
const clientMeanMs = itlSumMs / Math.max(1, itlCount);
const clientP50 = itlPercentile(0.5);
const clientP99 = itlPercentile(0.99);
ttfts.sort((a, b) => a - b);
const ttftP50 = ttfts.length ? ttfts[Math.floor(ttfts.length / 2)] : NaN;
const ratio = clientMeanMs / engineItlMs;

const rows = [
  ['replicas x streams', `${urls.length} x ${STREAMS} = ${urls.length * STREAMS}`],
  ['measured window', `${wallS.toFixed(1)} s (after ${WARMUP_S} s warm-up)`],
  ['fleet CPU', `${fleetCpuPct.toFixed(1)} % of one core (pid ${child.pid})`],
  ['load generator CPU', `${selfCpuPct.toFixed(1)} % of one core`],
  ['tokens/s (clients)', tokPerS.toFixed(0)],
  ['fleet CPU per 1k tok/s', `${((fleetCpuPct / tokPerS) * 1000).toFixed(2)} % of a core`],
  ['requests completed / failed', `${completed} / ${failed}`],
  ['engine ITL (mean, planned)', `${engineItlMs.toFixed(2)} ms`],
  [
    'client ITL mean / p50 / p99',
    `${clientMeanMs.toFixed(2)} / ${clientP50.toFixed(2)} / ${clientP99.toFixed(2)} ms`,
  ],
  ['client TTFT p50', `${ttftP50.toFixed(1)} ms`],
  ['client/engine ITL', `${ratio.toFixed(2)}x`],
  ['fleet exit', String(exit)],
];
const w = Math.max(...rows.map((r) => r[0].length));
console.log('\n' + rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join('\n'));

let verdict;
if (!Number.isFinite(ratio)) verdict = 'no ITL samples: nothing was measured';
else if (ratio <= 1.2)
  verdict = 'timing fidelity OK: clients see the gaps the engine planned (within 20 %)';
else {
  const busy = [];
  if (fleetCpuPct >= 85) busy.push('the simulator (its single event loop is near one full core)');
  if (selfCpuPct >= 85)
    busy.push('the load generator (near one full core; run it elsewhere or with fewer streams)');
  const who =
    busy.length > 0
      ? busy.join(' and ')
      : 'the machine (CPU contention between the fleet and the load generator)';
  verdict =
    `timing fidelity DEGRADED: clients see ${ratio.toFixed(2)}x the planned ITL; ` +
    `the bottleneck looks like ${who}`;
}
console.log(`\n${verdict}`);
process.exit(0);
