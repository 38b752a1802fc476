#!/usr/bin/env node
// The gateway's work per request counted in CPU instructions (valgrind's callgrind), this build
// side by side with another: a measure that does not move with the machine's load, where the
// overhead bench's requests/s and CPU µs move by ±20 % from run to run on a shared machine.
//
//   npx tsc -p tsconfig.build.json && node bench/gateway-instructions.mjs
//     [--baseline DIR] [--floor] [--requests 2000] [--warmup 20000] [--model bench-rr|bench-pa] [--json]
//
// Each build's gateway (bench/lib/gateway-server.mjs of this tree; --baseline DIR serves DIR/dist,
// built, with it) runs under `valgrind --tool=callgrind --instr-atstart=no` in front of a
// zero-latency upstream (nginx `return 200`, as in gateway-overhead.mjs), engine signals scraped
// once a minute (a scrape is work per time, not per request). A client in its own process sends
// `--warmup` requests over 4 keep-alive connections (the JIT settles), then counting is switched
// on for exactly `--requests` more, then off. Reported per request: instructions of the gateway's
// main thread (its event loop: parsing, routing, metrics, logging, the syscalls' user side) and
// of its other threads (GC helpers, the compiler); the kernel's share is not counted.
// --floor also counts bench/lib/floor-raw-proxy.mjs, a Node proxy with no logic on the same
// sockets (what the runtime costs: reads, writes, the event loop), so the gateway's own work per
// request is its count less the floor's.
// Counts of one build repeat within ~1 % from run to run. Needs valgrind and nginx
// (apt-get install -y valgrind nginx-light). Under valgrind a run takes ~20 s per build.
import { execFile, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { COMPLETION, KEY, METRICS, MODELS } from './lib/bench-snapshot.mjs';
import { findTool, freePort, startNginx, upstreamHttpConfig } from './lib/nginx.mjs';

const HERE = fileURLToPath(new URL('.', import.meta.url));
const { values: o } = parseArgs({
  options: {
    baseline: { type: 'string' },
    floor: { type: 'boolean', default: false },
    requests: { type: 'string', default: '2000' },
    warmup: { type: 'string', default: '20000' },
    model: { type: 'string', default: MODELS['round-robin'] },
    json: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (o.help) {
  console.log(
    'node bench/gateway-instructions.mjs [--baseline DIR] [--floor] [--requests 2000] [--warmup 20000]\n' +
      `  [--model ${Object.values(MODELS).join('|')}] [--json]   (needs valgrind and nginx)`,
  );
  process.exit(0);
}
const REQUESTS = Number(o.requests);
const WARMUP = Number(o.warmup);
if (!(REQUESTS >= 100) || !(WARMUP >= 0)) throw new Error('--requests ≥ 100, --warmup ≥ 0');
if (!Object.values(MODELS).includes(o.model)) {
  throw new Error(`--model ${Object.values(MODELS).join('|')}`);
}
const log = (s) => (o.json ? process.stderr.write(s + '\n') : console.log(s));
for (const tool of ['valgrind', 'callgrind_control', 'nginx']) {
  if (!findTool(tool)) throw new Error(`needs ${tool}: apt-get install -y valgrind nginx-light`);
}

// ---- the client (a child process: `node gateway-instructions.mjs --client PORT N MODEL`) ----
// Lives in this file's closed loop below; kept out of the measured process.
const CLIENT = `
import { connect } from 'node:net';
const [port, n, model, key] = process.argv.slice(1);
const body = JSON.stringify({ model, messages: [{ role: 'system', content: 'You are a helpful assistant.' }, { role: 'user', content: 'Hello, how are you?' }], max_tokens: 16 });
const req = Buffer.from('POST /v1/chat/completions HTTP/1.1\\r\\nHost: 127.0.0.1:' + port + '\\r\\nContent-Type: application/json\\r\\nAuthorization: Bearer ' + key + '\\r\\nContent-Length: ' + Buffer.byteLength(body) + '\\r\\n\\r\\n' + body);
const total = Number(n); let sent = 0, done = 0, bad = 0;
await new Promise((resolve, reject) => {
  if (total === 0) return resolve();
  for (let i = 0; i < 4; i++) {
    const s = connect(Number(port), '127.0.0.1');
    let buf = Buffer.alloc(0);
    const go = () => { if (sent < total) { sent++; s.write(req); } else s.end(); };
    s.on('connect', go);
    s.on('error', reject);
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        const he = buf.indexOf('\\r\\n\\r\\n'); if (he < 0) return;
        const m = /content-length: *(\\d+)/i.exec(buf.toString('latin1', 0, he));
        const len = m ? Number(m[1]) : 0;
        if (buf.length < he + 4 + len) return;
        if (buf.toString('latin1', 0, 12) !== 'HTTP/1.1 200') bad++;
        buf = buf.subarray(he + 4 + len); done++;
        if (done === total) resolve(); else go();
      }
    });
  }
});
process.stdout.write(JSON.stringify({ done, bad }) + '\\n');
process.exit(0);
`;

async function requests(port, n) {
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ['--input-type=module', '-e', CLIENT, String(port), String(n), o.model, KEY],
    { maxBuffer: 1 << 20 },
  );
  const r = JSON.parse(stdout.trim());
  if (r.done !== n || r.bad !== 0) throw new Error(`client: ${stdout.trim()} (expected ${n} OK)`);
}

/** Total instructions in one callgrind output file (its `totals:` line, written at the dump). */
function totalOf(file) {
  const m = /^totals: (\d+)/m.exec(readFileSync(file, 'utf8'));
  return m ? Number(m[1]) : 0;
}

/**
 * Instructions per request of one build: { main, others }. `server`: the child to count (the
 * gateway by default; the floor proxy speaks the same child protocol).
 */
async function measure(
  name,
  dist,
  upstreamPorts,
  work,
  server = join(HERE, 'lib', 'gateway-server.mjs'),
) {
  const out = join(work, `${name}.callgrind`);
  const env = { ...process.env, ...(dist ? { INFERPLANE_GATEWAY_DIST: dist } : {}) };
  const g = spawn(
    'valgrind',
    [
      '--tool=callgrind',
      '--instr-atstart=no',
      '--separate-threads=yes',
      `--callgrind-out-file=${out}`,
      process.execPath,
      server,
      JSON.stringify({
        upstreamPorts,
        key: KEY,
        logFile: join(work, `${name}.log`),
        scrapeIntervalMs: 60_000,
      }),
    ],
    { stdio: ['pipe', 'pipe', 'pipe'], env },
  );
  let err = '';
  g.stderr.on('data', (d) => (err += d));
  const exited = new Promise((r) => g.once('exit', r));
  try {
    const port = await new Promise((res, rej) => {
      let buf = '';
      const t = setTimeout(() => rej(new Error(`${name}: no start: ${err.slice(-1500)}`)), 180_000);
      g.stdout.on('data', (d) => {
        buf += d.toString();
        const m = /\{"port":(\d+)/.exec(buf);
        if (m) {
          clearTimeout(t);
          res(Number(m[1]));
        }
      });
      void exited.then(() => rej(new Error(`${name}: exited: ${err.slice(-1500)}`)));
    });
    log(`  ${name}: warming up (${WARMUP} requests)…`);
    await requests(port, WARMUP);
    execFileSync('callgrind_control', ['-i', 'on', String(g.pid)], { stdio: 'ignore' });
    await requests(port, REQUESTS);
    execFileSync('callgrind_control', ['-i', 'off', String(g.pid)], { stdio: 'ignore' });
    execFileSync('callgrind_control', ['-d', String(g.pid)], { stdio: 'ignore' });
  } finally {
    g.stdin.end();
    g.kill('SIGTERM');
    const t = setTimeout(() => g.kill('SIGKILL'), 30_000);
    await exited;
    clearTimeout(t);
  }
  // The dump: one file per thread, `<out>.1-01` (thread 1, the main thread), `<out>.1-02`, …
  const base = `${name}.callgrind.1-`;
  let main = 0;
  let others = 0;
  for (const f of readdirSync(work).filter((x) => x.startsWith(base))) {
    const n = totalOf(join(work, f));
    if (f === `${base}01`) main = n;
    else others += n;
  }
  if (main === 0) throw new Error(`${name}: no instructions counted (callgrind dump missing)`);
  return { main: main / REQUESTS, others: others / REQUESTS };
}

const work = mkdtempSync(join(tmpdir(), 'inferplane-gw-instr-'));
const upPorts = [await freePort(), await freePort()];
const up = await startNginx({
  name: 'upstream',
  ports: upPorts,
  http: upstreamHttpConfig({ ports: upPorts, json: COMPLETION, metrics: METRICS }),
});
const results = {};
try {
  log(`callgrind, ${o.model}: ${WARMUP} requests of warm-up, then ${REQUESTS} counted, per build`);
  results.this = await measure('this', undefined, upPorts, work);
  if (o.baseline) {
    const dist = join(resolve(o.baseline), 'dist');
    results.baseline = await measure('baseline', dist, upPorts, work);
  }
  if (o.floor) {
    const floor = join(HERE, 'lib', 'floor-raw-proxy.mjs');
    results.floor = await measure('floor', undefined, upPorts, work, floor);
  }
} finally {
  await up.stop();
  rmSync(work, { recursive: true, force: true });
}

if (o.json) {
  process.stdout.write(JSON.stringify({ model: o.model, requests: REQUESTS, results }) + '\n');
} else {
  const k = (x) => `${(x / 1000).toFixed(1)}k`;
  console.log(`\ninstructions per request (${o.model})   main thread   other threads`);
  for (const [name, r] of Object.entries(results)) {
    const label = name === 'floor' ? 'floor (no-logic proxy)' : name;
    console.log(`  ${label.padEnd(30)} ${k(r.main).padStart(11)} ${k(r.others).padStart(15)}`);
  }
  const floor = results.floor;
  if (floor) {
    console.log(
      `\nthis build's own work: ${k(results.this.main - floor.main)} main-thread instructions per ` +
        `request above the floor's`,
    );
  }
  if (results.baseline) {
    const ratio = results.baseline.main / results.this.main;
    console.log(
      `\nthis build's main thread: ${ratio.toFixed(3)}× fewer instructions per request than the baseline's` +
        ` (${(100 * (1 - results.this.main / results.baseline.main)).toFixed(1)} % less)`,
    );
  }
}
