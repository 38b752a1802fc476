#!/usr/bin/env node
// Noisy neighbour: does a tenant flooding the gateway raise another tenant's latency beyond its
// SLO? One run, three phases side by side, each with a fresh gateway (built from dist/, mounted as
// `inferplane up` mounts it) in front of two simulated Llama-3.1-8B H100 replicas, one per tenant:
//
//   quiet      tenant B alone (its baseline);
//   limited    B + tenant A flooding at --flood req/s, A under limits (--a-rps, --a-concurrency);
//   unlimited  B + the same flood, A without limits (what the limits protect B from).
//
// B sends streamed chats at a steady --b-rate and we measure its TTFT and end-to-end latency; A's
// flood comes from a raw-socket open-loop generator in its own process. Printed per phase: B's
// TTFT p50/p99 and e2e p99 against its SLO (--slo-ttft-p99-ms), A's answers by status.
//
//   node bench/tenant-isolation.mjs [--duration 10] [--flood 1500] [--b-rate 10]
//        [--a-rps 50] [--a-concurrency 16] [--slo-ttft-p99-ms 250] [--json]
// Needs `npm run build`. Loopback only; everything it starts stops with it.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { spawnSimFleet } from './lib/fleet.mjs';
import { runOpenLoop } from './lib/openloop.mjs';

const { values: args } = parseArgs({
  options: {
    duration: { type: 'string', default: '10' },
    flood: { type: 'string', default: '1500' },
    'b-rate': { type: 'string', default: '10' },
    'a-rps': { type: 'string', default: '50' },
    'a-concurrency': { type: 'string', default: '16' },
    'slo-ttft-p99-ms': { type: 'string', default: '250' },
    json: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});
if (args.help) {
  console.log(
    'node bench/tenant-isolation.mjs [--duration S] [--flood RPS] [--b-rate RPS] [--a-rps N] [--a-concurrency N] [--slo-ttft-p99-ms MS] [--json]',
  );
  process.exit(0);
}
const DURATION = Number(args.duration);
const FLOOD = Number(args.flood);
const B_RATE = Number(args['b-rate']);
const SLO = Number(args['slo-ttft-p99-ms']);
const KEY_A = 'ipk_isolation_tenant_a';
const KEY_B = 'ipk_isolation_tenant_b';
const sha = (k) => createHash('sha256').update(k).digest('hex');
const log = (s) => process.stderr.write(s + '\n');

function snapshot(urlA, urlB, limitsA) {
  const model = (name, tenant, url) => ({
    model: name,
    deployment: name,
    tenantId: tenant,
    tenantName: tenant,
    engine: 'sim',
    createdAt: new Date().toISOString(),
    routing: { policy: 'least-loaded' },
    endpoints: [{ replicaId: `${name}-r0`, index: 0, url }],
  });
  return {
    version: 1,
    keys: [
      { hash: sha(KEY_A), keyId: 'ka', role: 'tenant', tenantId: 'team-a', tenantName: 'team-a' },
      { hash: sha(KEY_B), keyId: 'kb', role: 'tenant', tenantId: 'team-b', tenantName: 'team-b' },
    ],
    tenants: [
      { id: 'team-a', name: 'team-a', limits: limitsA },
      { id: 'team-b', name: 'team-b', limits: {} },
    ],
    models: [model('model-a', 'team-a', urlA), model('model-b', 'team-b', urlB)],
  };
}

async function startGateway(snap) {
  const script = fileURLToPath(new URL('./lib/gateway-server.mjs', import.meta.url));
  const child = spawn(
    process.execPath,
    [script, JSON.stringify({ upstreamPorts: [], key: KEY_A, logLevel: 'warn', snapshot: snap })],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  );
  const port = await new Promise((resolve, reject) => {
    let buf = '';
    child.stdout.on('data', (d) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl !== -1) resolve(JSON.parse(buf.slice(0, nl)).port);
    });
    child.once('exit', (c) => reject(new Error(`gateway exited (${c})`)));
  });
  return {
    port,
    stop: () =>
      new Promise((r) => {
        child.once('exit', r);
        child.stdin.end();
      }),
  };
}

function pct(sorted, p) {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

/** B: streamed chats at a fixed rate; TTFT = first content chunk. */
async function tenantB(port, durationS) {
  const ttft = [];
  const e2e = [];
  let errors = 0;
  const body = JSON.stringify({
    model: 'model-b',
    messages: [{ role: 'user', content: 'Summarise the quarterly report in three bullet points.' }],
    max_tokens: 32,
    stream: true,
  });
  const one = async () => {
    const t0 = performance.now();
    try {
      const res = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${KEY_B}`, 'content-type': 'application/json' },
        body,
        signal: AbortSignal.timeout(30_000),
      });
      if (res.status !== 200) {
        errors++;
        await res.text();
        return;
      }
      const reader = res.body.getReader();
      const dec = new TextDecoder();
      let first = true;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        if (first && dec.decode(value).includes('"content":"')) {
          first = false;
          ttft.push(performance.now() - t0);
        }
      }
      e2e.push(performance.now() - t0);
    } catch {
      errors++;
    }
  };
  const pending = [];
  const start = performance.now();
  for (let i = 0; i < durationS * B_RATE; i++) {
    const at = start + (i * 1000) / B_RATE;
    const wait = at - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    pending.push(one());
  }
  await Promise.all(pending);
  ttft.sort((a, b) => a - b);
  e2e.sort((a, b) => a - b);
  return {
    requests: ttft.length + errors,
    errors,
    ttftP50: pct(ttft, 50),
    ttftP99: pct(ttft, 99),
    e2eP99: pct(e2e, 99),
  };
}

async function phase(name, urlA, urlB, limitsA, flood) {
  log(
    `phase ${name}: A ${flood ? `floods at ${FLOOD} req/s` : 'idle'}, limits ${JSON.stringify(limitsA)}`,
  );
  const gw = await startGateway(snapshot(urlA, urlB, limitsA));
  try {
    // Warm the connections.
    await tenantB(gw.port, 1);
    const a = flood
      ? runOpenLoop({
          port: gw.port,
          path: '/v1/chat/completions',
          body: JSON.stringify({
            model: 'model-a',
            messages: [{ role: 'user', content: 'flood' }],
            max_tokens: 4,
          }),
          headers: { authorization: `Bearer ${KEY_A}`, 'content-type': 'application/json' },
          rate: FLOOD,
          durationS: DURATION,
          warmupS: 0,
          maxConnections: 256,
        })
      : Promise.resolve(undefined);
    const b = await tenantB(gw.port, DURATION);
    const flooded = await a;
    return { phase: name, b, a: flooded ? summariseA(flooded) : undefined };
  } finally {
    await gw.stop();
  }
}

function summariseA(s) {
  return { sent: s.sent, non2xx: s.non2xx, errors: s.errors, measuredRps: s.achievedRps };
}

const fleetA = await spawnSimFleet(['--replicas', '1', '--served-model-name', 'model-a']);
const fleetB = await spawnSimFleet(['--replicas', '1', '--served-model-name', 'model-b']);
const urlA = fleetA.info.replicas[0].url;
const urlB = fleetB.info.replicas[0].url;
const limitsA = {
  requestsPerSecond: Number(args['a-rps']),
  maxConcurrency: Number(args['a-concurrency']),
};
const results = [];
try {
  results.push(await phase('quiet', urlA, urlB, {}, false));
  results.push(await phase('limited', urlA, urlB, limitsA, true));
  results.push(await phase('unlimited', urlA, urlB, {}, true));
} finally {
  fleetA.child.kill('SIGTERM');
  fleetB.child.kill('SIGTERM');
}

if (args.json) {
  console.log(
    JSON.stringify({ duration: DURATION, flood: FLOOD, bRate: B_RATE, slo: SLO, limitsA, results }),
  );
} else {
  const f = (x) => (Number.isFinite(x) ? x.toFixed(1) : '-');
  console.log(
    `tenant B: ${B_RATE} req/s streamed chats; tenant A floods at ${FLOOD} req/s; ${DURATION} s per phase`,
  );
  console.log('phase        B TTFT p50   B TTFT p99   B e2e p99   B errors   A answers');
  for (const r of results) {
    const a = r.a ? `${r.a.sent} sent, ${r.a.non2xx} refused (429), ${r.a.errors} errors` : '-';
    console.log(
      `${r.phase.padEnd(12)} ${f(r.b.ttftP50).padStart(10)}   ${f(r.b.ttftP99).padStart(10)}   ${f(r.b.e2eP99).padStart(9)}   ${String(r.b.errors).padStart(8)}   ${a}`,
    );
  }
  const quiet = results[0].b;
  const limited = results[1].b;
  const unlimited = results[2].b;
  console.log(
    `B TTFT p99 with A flooding under limits: ${f(limited.ttftP99)} ms (quiet ${f(quiet.ttftP99)} ms, ` +
      `×${(limited.ttftP99 / quiet.ttftP99).toFixed(2)}); SLO ${SLO} ms: ${limited.ttftP99 <= SLO && limited.errors === 0 ? 'HOLDS' : 'MISSED'}`,
  );
  console.log(
    `without limits: ${f(unlimited.ttftP99)} ms (×${(unlimited.ttftP99 / quiet.ttftP99).toFixed(2)} of quiet), ${unlimited.errors} B errors`,
  );
}
