#!/usr/bin/env node
// The llama.cpp-on-H100 reference workload, driven through the simulator's real HTTP server in
// real time (no virtual clock): this checks that the served engine — HTTP, SSE, timers — shows
// the same TTFT and ITL as the calibrated timing model, and compares both with the measurements
// in ../shared/reference/h100-llamacpp.md.
//
//   npx tsc -p tsconfig.build.json && node bench/sim-reference-http.mjs [--concurrency 1,16,48] \
//     [--requests-per-client 3] [--time-scale 1]
//
// Starts `node dist/sim/main.js --model llama-2-7b --gpu H100-80GB --calibration llamacpp-h100`
// as a child process on a free loopback port, then for each concurrency runs a closed loop of
// streaming /v1/completions: 1,001-token unique prompts, 128 output tokens, ignore_eos. Metrics
// follow reference/metrics-definitions.md: TTFT = first content chunk − send; ITL per request =
// (last chunk − first chunk) / (OSL − 1); p50 with linear interpolation. Times are divided by the
// time scale, so they are in simulated milliseconds. Stops by itself.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const MAIN = fileURLToPath(new URL('../dist/sim/main.js', import.meta.url));
if (!existsSync(MAIN)) {
  console.error('bench/sim-reference-http: run `npx tsc -p tsconfig.build.json` first');
  process.exit(1);
}
const { values } = parseArgs({
  options: {
    concurrency: { type: 'string', default: '1,16,48' },
    'requests-per-client': { type: 'string', default: '3' },
    'time-scale': { type: 'string', default: '1' },
  },
});
const levels = values.concurrency.split(',').map(Number);
const perClient = Number(values['requests-per-client']);
const timeScale = Number(values['time-scale']);
// Reference (first table of h100-llamacpp.md): TTFT p50 ms, ITL p50 ms by concurrency.
const REFERENCE = { 1: [60, 6.1], 16: [233, 20.7], 48: [289, 49.6] };

const child = spawn(
  process.execPath,
  [
    MAIN,
    '--port',
    '0',
    '--model',
    'llama-2-7b',
    '--served-model-name',
    'ref',
    '--gpu',
    'H100-80GB',
    '--calibration',
    'llamacpp-h100',
    '--time-scale',
    String(timeScale),
  ],
  { stdio: ['ignore', 'pipe', 'inherit'] },
);
const watchdog = setTimeout(() => {
  console.error('bench/sim-reference-http: watchdog fired, stopping');
  child.kill('SIGKILL');
  process.exit(1);
}, 15 * 60_000);
const port = await new Promise((resolve, reject) => {
  const rl = createInterface({ input: child.stdout });
  rl.on('line', (line) => {
    try {
      const ev = JSON.parse(line);
      if (ev.msg === 'listening') resolve(ev.port);
    } catch {
      // not JSON
    }
  });
  child.once('exit', (code) => reject(new Error(`sim exited with ${code}`)));
});
const url = `http://127.0.0.1:${port}/v1/completions`;

const WORDS =
  'alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau upsilon phi chi psi omega'.split(
    ' ',
  );
let serial = 0;
function uniquePrompt(tokens) {
  // Each word is one token of the sim's tokenizer; the leading serial makes every prompt unique
  // from its first block on, so nothing is served from the prefix cache.
  const parts = [`request${serial++}`];
  for (let i = 1; i < tokens; i++) parts.push(WORDS[(i * 7 + serial) % WORDS.length]);
  return parts.join(' ');
}

async function one() {
  const start = performance.now();
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      model: 'ref',
      prompt: uniquePrompt(1001),
      max_tokens: 128,
      ignore_eos: true,
      stream: true,
      stream_options: { include_usage: true },
    }),
  });
  const decoder = new TextDecoder();
  let buf = '';
  const arrivals = [];
  let usage;
  for await (const chunk of res.body) {
    const now = performance.now();
    buf += decoder.decode(chunk, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const msg = buf.slice(0, i);
      buf = buf.slice(i + 2);
      if (!msg.startsWith('data: ') || msg === 'data: [DONE]') continue;
      const ev = JSON.parse(msg.slice(6));
      if (ev.usage) usage = ev.usage;
      if (ev.choices?.[0]?.text) arrivals.push(now);
    }
  }
  const osl = usage?.completion_tokens ?? arrivals.length;
  const ttft = (arrivals[0] - start) / timeScale;
  const itl = osl >= 2 ? (arrivals.at(-1) - arrivals[0]) / (osl - 1) / timeScale : undefined;
  return { ttft, itl, prompt: usage?.prompt_tokens, osl };
}

function p50(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const r = (s.length - 1) * 0.5;
  const lo = Math.floor(r);
  const hi = Math.ceil(r);
  return s[lo] + (s[hi] - s[lo]) * (r - lo);
}

const pct = (a, b) => `${a >= b ? '+' : ''}${(((a - b) / b) * 100).toFixed(1)}%`;
console.log(`sim HTTP (llamacpp-h100, llama-2-7b f16, time scale ${timeScale}) vs reference`);
console.log('conc  reqs  prompt  osl   TTFT p50 sim   ref    err      ITL p50 sim   ref   err');
for (const c of levels) {
  const results = [];
  await Promise.all(
    Array.from({ length: c }, async () => {
      for (let k = 0; k < perClient; k++) results.push(await one());
    }),
  );
  const ttft = p50(results.map((r) => r.ttft));
  const itl = p50(results.map((r) => r.itl).filter((x) => x !== undefined));
  const [rt, ri] = REFERENCE[c] ?? [NaN, NaN];
  console.log(
    [
      String(c).padEnd(5),
      String(results.length).padEnd(5),
      String(results[0].prompt).padEnd(7),
      String(results[0].osl).padEnd(5),
      ttft.toFixed(1).padStart(12),
      String(rt).padStart(6),
      (Number.isNaN(rt) ? '' : pct(ttft, rt)).padStart(7),
      itl.toFixed(2).padStart(14),
      String(ri).padStart(6),
      (Number.isNaN(ri) ? '' : pct(itl, ri)).padStart(7),
    ].join(' '),
  );
}
clearTimeout(watchdog);
child.kill('SIGTERM');
