#!/usr/bin/env node
// Gateway overhead vs nginx (issue acceptance: against a zero-latency upstream, the gateway's
// requests/s ≥ 0.5× nginx's — Debian's nginx, round-robin proxy — on the same upstream and
// machine; added latency at half the gateway's maximum rate ≤ 0.5 ms p50 and ≤ 2 ms p99 vs direct).
//
// One run, everything on 127.0.0.1, everything side by side:
//   upstream  zero-latency OpenAI answers on 2 ports (nginx `return 200`, or --upstream node)
//   nginx     Debian's nginx, worker_processes 1, round-robin upstream block with keepalive,
//             proxy_http_version 1.1, proxy_buffering off, access log on
//   gateway   src/gateway mounted as platform.ts mounts it (bench/lib/gateway-server.mjs, from
//             dist/: `npm run build` first), models bench-rr (round-robin) and bench-pa
//             (prefix-aware, the default policy) on the same two upstream ports
// Closed loop (wrk, 1 thread, N connections): max requests/s of direct, nginx, gateway, in
// interleaved rounds (order rotated each round), medians reported. Then an open loop at a fixed
// rate = half the gateway's max (bench/lib/openloop.mjs: by default its C generator, which sends each
// request at its due time; `--generator node` for the Node one, which sends what fell due each
// millisecond together — a burstier arrival that queues requests behind one another):
// latency p50/p99 direct vs gateway, interleaved; added latency = per-round (gateway − direct),
// median over rounds — also along the tail (p90 … p99.9), with the highest of those percentiles
// up to which the gateway adds at most 2 ms. Each open-loop round also reports the target's CPU
// per request and how busy it kept one core: requests that arrive one at a time cost more than
// the closed loop's batched ones, so half the closed-loop maximum runs a proxy well past half busy.
//
//   node bench/gateway-overhead.mjs [--duration 5] [--connections 16,64] [--rounds 3] [--json]
//        [--upstream nginx|node] [--smoke] [--cpu-prof DIR] [--variant NAME=PATH/gateway-server.mjs]
//        [--gateway-workers N[,N...]] [--rate-of NAME] [--generator auto|c|node] [--own-rate]
//        [--open-connections N] [--pin] [--pin-cpus N]
//
// --pin puts the proxies (each runs alone in its turn) on the last CPU(s) this process may use,
// the upstream on the one before where there are 4 or more, and the load generators (wrk, the
// open loop) on the rest, so that the proxy under test does not share its core with them — as
// on a deployment, where clients and engines run elsewhere; --pin-cpus N gives the proxies N
// CPUs (a Node proxy's GC helper threads then have a core beside its event loop). The layout and
// each process's affinity, read back from /proc, are printed (and in --json).
//
// --own-rate adds a control: every proxy (nginx and each variant too) in an open loop at half of
// its own maximum, paired with direct at that rate — the criterion applied to proxies with less
// logic, on the same machine in the same run.
//
// --variant adds another gateway build (e.g. an experiment worktree's bench/lib/gateway-server.mjs,
// which loads that worktree's dist/) to every comparison, side by side with this one;
// --variant-args 'NAME=--flag …' runs that variant's process with those node flags (e.g. this
// build's own bench/lib/gateway-server.mjs with different V8 heap settings).
// --gateway-workers 2[,4] adds this build run as `up --gateway-workers N` runs it (N processes on
// one port, bench/lib/gateway-workers-server.mjs); its CPU is summed over the processes.
// Needs nginx and wrk: apt-get install -y nginx-light wrk.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  cpuTimesMs,
  findTool,
  freePort,
  proxyHttpConfig,
  startNginx,
  upstreamHttpConfig,
} from './lib/nginx.mjs';
import { COMPLETION, KEY, METRICS } from './lib/bench-snapshot.mjs';
import { runOpenLoop } from './lib/openloop.mjs';
import { runWrk } from './lib/wrk.mjs';

/** Percentiles of the open loop's tail, as the generators report them: [key, label]. */
const TAIL = [
  ['p90', 'p90'],
  ['p95', 'p95'],
  ['p98', 'p98'],
  ['p99', 'p99'],
  ['p995', 'p99.5'],
  ['p999', 'p99.9'],
];
const HERE = fileURLToPath(new URL('.', import.meta.url));

// ---- options ---------------------------------------------------------------------------------
function parseArgs(argv) {
  const o = {
    duration: 5,
    connections: [16, 64],
    rounds: 3,
    json: false,
    upstream: 'nginx',
    rateFraction: 0.5,
    cpuProf: undefined,
    variants: [],
    variantArgs: {},
    gatewayWorkers: [],
    rateOf: 'gateway',
    prefixAware: true,
    warmup: 2,
    generator: 'auto',
    ownRate: false,
    openConnections: 512,
    pin: false,
    pinCpus: 1,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--duration') o.duration = Number(val());
    else if (a === '--connections') o.connections = val().split(',').map(Number);
    else if (a === '--rounds') o.rounds = Number(val());
    else if (a === '--json') o.json = true;
    else if (a === '--upstream') o.upstream = val();
    else if (a === '--rate-fraction') o.rateFraction = Number(val());
    else if (a === '--cpu-prof') o.cpuProf = resolve(val());
    else if (a === '--no-prefix-aware') o.prefixAware = false;
    else if (a === '--warmup') o.warmup = Number(val());
    else if (a === '--rate-of') o.rateOf = val();
    else if (a === '--generator') o.generator = val();
    else if (a === '--own-rate') o.ownRate = true;
    else if (a === '--open-connections') o.openConnections = Number(val());
    else if (a === '--pin') o.pin = true;
    else if (a === '--pin-cpus') {
      o.pin = true;
      o.pinCpus = Number(val());
    } else if (a === '--gateway-workers') o.gatewayWorkers = val().split(',').map(Number);
    else if (a === '--variant') {
      const v = val();
      const eq = v.indexOf('=');
      if (eq <= 0) throw new Error('--variant NAME=PATH');
      o.variants.push({ name: v.slice(0, eq), script: resolve(v.slice(eq + 1)) });
    } else if (a === '--variant-args') {
      const v = val();
      const eq = v.indexOf('=');
      if (eq <= 0) throw new Error('--variant-args NAME=NODE_ARGS');
      o.variantArgs[v.slice(0, eq)] = v
        .slice(eq + 1)
        .split(' ')
        .filter(Boolean);
    } else if (a === '--smoke') {
      o.duration = 1;
      o.connections = [8];
      o.rounds = 1;
      o.warmup = 1;
      o.prefixAware = false;
    } else if (a === '--help' || a === '-h') {
      console.log(
        'node bench/gateway-overhead.mjs [--duration S] [--connections 16,64] [--rounds N] [--json]\n' +
          '  [--upstream nginx|node] [--rate-fraction 0.5] [--warmup S] [--no-prefix-aware] [--smoke]\n' +
          '  [--cpu-prof DIR] [--variant NAME=PATH/TO/gateway-server.mjs]... [--gateway-workers 2,...]\n' +
          "  [--variant-args 'NAME=--node-flag ...'] (node flags for that variant's process)\n" +
          '  [--generator auto|c|node] (open loop: C paced by a timerfd, or Node on 1 ms timers)\n' +
          '  [--own-rate] (a control: each proxy, nginx included, also at half its own max rate)\n' +
          '  [--open-connections 512] (the open loop opens up to this many; 32, as many as it opens\n' +
          '  at the start, keeps a fixed set, as wrk2 does: late requests wait for a free one)\n' +
          '  [--pin] (the proxy under test on CPUs of its own, apart from the generator and upstream)\n' +
          "  [--pin-cpus N] (--pin with N CPUs for the proxies: 1 by default, or --gateway-workers' N)",
      );
      process.exit(0);
    } else throw new Error(`unknown option ${a}`);
  }
  if (!(o.duration > 0) || !(o.rounds >= 1) || o.connections.some((c) => !(c >= 1))) {
    throw new Error('--duration, --rounds and --connections must be positive');
  }
  if (!['nginx', 'node'].includes(o.upstream)) throw new Error('--upstream nginx|node');
  if (!Number.isInteger(o.pinCpus) || o.pinCpus < 1) {
    throw new Error('--pin-cpus takes a whole number ≥ 1');
  }
  if (!Number.isInteger(o.openConnections) || o.openConnections < 32) {
    throw new Error(
      '--open-connections takes a whole number ≥ 32 (the generator opens 32 at the start)',
    );
  }
  if (!['auto', 'c', 'node'].includes(o.generator)) throw new Error('--generator auto|c|node');
  if (o.gatewayWorkers.some((n) => !Number.isInteger(n) || n < 1)) {
    throw new Error('--gateway-workers takes whole numbers ≥ 1, e.g. 2 or 2,4');
  }
  return o;
}

let opts;
try {
  opts = parseArgs(process.argv.slice(2));
} catch (e) {
  console.error(
    `gateway-overhead: ${e instanceof Error ? e.message : String(e)} (--help lists the options)`,
  );
  process.exit(2);
}
const log = (s) => (opts.json ? process.stderr.write(s + '\n') : console.log(s));

// ---- fixtures --------------------------------------------------------------------------------
const bodyFor = (model) =>
  JSON.stringify({
    model,
    messages: [
      { role: 'system', content: 'You are a helpful assistant.' },
      { role: 'user', content: 'Hello, how are you?' },
    ],
    max_tokens: 16,
  });
const HEADERS = { 'Content-Type': 'application/json', Authorization: `Bearer ${KEY}` };

// ---- cleanup ---------------------------------------------------------------------------------
const cleanups = [];
const abort = new AbortController();
let cleaning;
function cleanup() {
  cleaning ??= (async () => {
    abort.abort();
    for (const f of cleanups.reverse()) {
      try {
        await f();
      } catch {
        /* best effort */
      }
    }
  })();
  return cleaning;
}
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    log(`\n${sig}: stopping everything`);
    void cleanup().then(() => process.exit(130));
  });
}

/** Spawns `node [nodeArgs] script '<json>'` and waits for its first stdout line (JSON). */
async function spawnNode(script, arg, nodeArgs = [], env = {}) {
  const child = spawn(process.execPath, [...nodeArgs, script, JSON.stringify(arg)], {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: { ...process.env, ...env },
  });
  const exited = new Promise((r) => child.once('exit', (code, sig) => r(sig ?? code)));
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(t);
  };
  cleanups.push(stop);
  const info = await new Promise((res, rej) => {
    let buf = '';
    const timer = setTimeout(() => rej(new Error(`${script} did not start in 30 s`)), 30_000);
    child.stdout.on('data', (d) => {
      buf += d.toString('utf8');
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      child.stdout.removeAllListeners('data');
      child.stdout.resume();
      try {
        res(JSON.parse(buf.slice(0, nl)));
      } catch (e) {
        rej(e);
      }
    });
    void exited.then((c) => rej(new Error(`${script} exited early (${c})`)));
  });
  return { child, info, stop, pid: child.pid };
}

const median = (xs) => {
  const s = [...xs].filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

async function probe(port, body) {
  const res = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
    method: 'POST',
    headers: HEADERS,
    body,
  });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`probe of :${port} answered ${res.status}: ${text}`);
  const j = JSON.parse(text);
  if (!j.choices?.[0]?.message) throw new Error(`probe of :${port}: unexpected body ${text}`);
  return res.headers.get('x-inferplane-replica');
}

// ---- CPU pinning (--pin) ----------------------------------------------------------------------
/** Expands a Linux CPU list ("0-3,6") into numbers. */
function cpuList(text) {
  const out = [];
  for (const part of text.trim().split(',').filter(Boolean)) {
    const [a, b] = part.split('-').map(Number);
    for (let c = a; c <= (b ?? a); c++) out.push(c);
  }
  return out;
}

/** The CPUs a process may run on (its Cpus_allowed_list), or [] if it is gone. */
function affinityOf(pid) {
  try {
    const m = /^Cpus_allowed_list:\s*(\S+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? cpuList(m[1]) : [];
  } catch {
    return [];
  }
}

/**
 * The --pin layout over the CPUs this process may use: the proxies on the last `proxyCpus`, the
 * upstream on the one before where at least 2 more remain, the generators on the rest.
 */
function pinLayout(cpus, proxyCpus) {
  if (cpus.length < proxyCpus + 1) {
    throw new Error(
      `--pin needs at least ${proxyCpus + 1} CPUs (${proxyCpus} for the proxy under test, one for the rest); this process may use ${cpus.length}`,
    );
  }
  const proxy = cpus.slice(cpus.length - proxyCpus);
  const rest = cpus.slice(0, cpus.length - proxyCpus);
  if (rest.length >= 3) return { proxy, upstream: rest.slice(-1), generator: rest.slice(0, -1) };
  return { proxy, upstream: rest, generator: rest };
}

/** Pins every thread of each process to `cpus` (taskset, util-linux). */
function pinTo(pids, cpus) {
  for (const pid of pids) {
    execFileSync('taskset', ['-a', '-p', '-c', cpus.join(','), String(pid)], { stdio: 'ignore' });
  }
}

// ---- main ------------------------------------------------------------------------------------
async function main() {
  const nginxBin = findTool('nginx');
  const wrkBin = findTool('wrk');
  if (!nginxBin || !wrkBin) {
    throw new Error(
      `needs ${[!nginxBin && 'nginx', !wrkBin && 'wrk'].filter(Boolean).join(' and ')}: apt-get install -y nginx-light wrk`,
    );
  }
  // --pin: this process first (wrk and the open loop inherit its CPUs), then each server.
  const layout = opts.pin
    ? pinLayout(affinityOf(process.pid), Math.max(opts.pinCpus, ...opts.gatewayWorkers))
    : undefined;
  if (layout) pinTo([process.pid], layout.generator);
  const work = mkdtempSync(join(tmpdir(), 'inferplane-gw-overhead-'));
  cleanups.push(() => rmSync(work, { recursive: true, force: true }));

  // Upstream: two listeners.
  const upPorts = [await freePort(), await freePort()];
  const upstreamPids = [];
  if (opts.upstream === 'nginx') {
    const up = await startNginx({
      name: 'upstream',
      nginx: nginxBin,
      ports: upPorts,
      http: upstreamHttpConfig({ ports: upPorts, json: COMPLETION, metrics: METRICS }),
    });
    cleanups.push(up.stop);
    upstreamPids.push(...up.workerPids());
  } else {
    const up = await spawnNode(join(HERE, 'lib', 'upstream-node.mjs'), {
      ports: upPorts,
      json: COMPLETION,
      metrics: METRICS,
    });
    upstreamPids.push(up.pid);
  }

  // nginx, round-robin proxy.
  const proxyPort = await freePort();
  const proxy = await startNginx({
    name: 'proxy',
    nginx: nginxBin,
    ports: [proxyPort],
    http: (dir) => proxyHttpConfig({ port: proxyPort, upstreamPorts: upPorts, dir }),
  });
  cleanups.push(proxy.stop);
  const proxyPids = proxy.workerPids();

  // Gateways: this repo's build, plus any --variant.
  const builds = [
    { name: 'gateway', script: join(HERE, 'lib', 'gateway-server.mjs') },
    ...opts.variants.map((v) => ({
      name: `gateway[${v.name}]`,
      script: v.script,
      nodeArgs: opts.variantArgs[v.name] ?? [],
    })),
    // The same build as `up --gateway-workers N` runs it: N processes on one port.
    ...opts.gatewayWorkers.map((n) => ({
      name: `gateway[x${n}]`,
      script: join(HERE, 'lib', 'gateway-workers-server.mjs'),
      extra: { workers: n },
    })),
  ];
  const gateways = [];
  for (const b of builds) {
    const nodeArgs = [
      ...(b.nodeArgs ?? []),
      ...(opts.cpuProf
        ? ['--cpu-prof', '--cpu-prof-dir', opts.cpuProf, '--cpu-prof-name', `${b.name}.cpuprofile`]
        : []),
    ];
    const g = await spawnNode(
      b.script,
      { upstreamPorts: upPorts, key: KEY, logFile: join(work, `${b.name}.log`), ...b.extra },
      nodeArgs,
    );
    // CPU: every process of the gateway (a worker pool reports its pids).
    const pids = g.info.pids ?? [g.pid];
    gateways.push({ ...b, port: g.info.port, pid: g.pid, pids, stop: g.stop });
  }
  // Let the signal scraper (100 ms period) see both replicas before prefix-aware traffic.
  await new Promise((r) => setTimeout(r, 500));

  if (layout) {
    pinTo(upstreamPids, layout.upstream);
    pinTo([...proxyPids, ...gateways.flatMap((g) => g.pids)], layout.proxy);
  }

  const targets = [
    { name: 'direct', port: upPorts[0], body: bodyFor('bench-rr'), pids: () => upstreamPids },
    { name: 'nginx', port: proxyPort, body: bodyFor('bench-rr'), pids: () => proxyPids },
  ];
  for (const g of gateways) {
    targets.push({
      name: `${g.name} rr`,
      gateway: g.name,
      policy: 'round-robin',
      port: g.port,
      body: bodyFor('bench-rr'),
      pids: () => g.pids,
    });
  }
  if (opts.prefixAware) {
    for (const g of gateways) {
      targets.push({
        name: `${g.name} prefix`,
        gateway: g.name,
        policy: 'prefix-aware',
        port: g.port,
        body: bodyFor('bench-pa'),
        pids: () => g.pids,
      });
    }
  }
  for (const t of targets) {
    const seen = new Set();
    for (let i = 0; i < 4; i++) seen.add(await probe(t.port, t.body));
    if (t.gateway) t.replicasSeen = [...seen].filter((x) => x !== null).length;
  }
  log(
    `upstream: ${opts.upstream} on :${upPorts.join(', :')}; nginx ${nginxBin} on :${proxyPort}; ` +
      gateways.map((g) => `${g.name} on :${g.port}`).join(', ') +
      `; wrk ${wrkBin}, 1 thread; ${opts.rounds} round(s) × ${opts.duration} s`,
  );
  // --pin: each target's CPUs as the kernel has them (every process and thread of it), and the
  // generators' (this process's, which wrk and the open loop inherit).
  const affinity = layout && {
    ...Object.fromEntries(
      targets.map((t) => [
        t.name,
        [...new Set(t.pids().flatMap((p) => affinityOf(p)))].sort((a, b) => a - b),
      ]),
    ),
    generator: affinityOf(process.pid),
  };
  if (layout) {
    log(
      `pinned: proxy under test on CPU ${layout.proxy.join(',')}, upstream on ${layout.upstream.join(',')}, ` +
        `generators on ${layout.generator.join(',')} (read back: ${Object.entries(affinity)
          .map(([k, v]) => `${k} ${v.join(',')}`)
          .join('; ')})` +
        (layout.upstream === layout.generator
          ? `; with ${layout.proxy.length + layout.generator.length} CPUs the upstream and the generators share theirs, so their own queueing shows in every latency, direct's included (4 or more keep them apart)`
          : ''),
    );
  }

  const wrk = (t, connections, durationS) =>
    runWrk({
      wrk: wrkBin,
      url: `http://127.0.0.1:${t.port}/v1/chat/completions`,
      connections,
      durationS,
      body: t.body,
      headers: HEADERS,
      signal: abort.signal,
    });
  // A target's CPU time over its processes, user and kernel apart: on loopback a socket write's
  // kernel work (the receiver's side of TCP included) is much the same for every proxy; the user
  // time is the proxy's own code.
  const cpuSplitOf = (t) =>
    t.pids().reduce(
      (a, p) => {
        const x = cpuTimesMs(p);
        return { userMs: a.userMs + x.userMs, sysMs: a.sysMs + x.sysMs };
      },
      { userMs: 0, sysMs: 0 },
    );
  const cpuOf = (t) => {
    const x = cpuSplitOf(t);
    return x.userMs + x.sysMs;
  };

  // Warmup (JIT, connection pools).
  if (opts.warmup > 0) {
    for (const t of targets) await wrk(t, Math.max(...opts.connections), opts.warmup);
  }

  // Closed loop, interleaved rounds.
  const closed = {}; // connections → target → [runs]
  for (const c of opts.connections) {
    closed[c] = Object.fromEntries(targets.map((t) => [t.name, []]));
    for (let r = 0; r < opts.rounds; r++) {
      const order = targets.map((_, i) => targets[(i + r) % targets.length]);
      for (const t of order) {
        const cpu0 = cpuSplitOf(t);
        const w = await wrk(t, c, opts.duration);
        const cpu1 = cpuSplitOf(t);
        const perReq = (ms) => (ms * 1000) / Math.max(1, w.requests);
        closed[c][t.name].push({
          ...w,
          cpuUsPerReq: perReq(cpu1.userMs + cpu1.sysMs - cpu0.userMs - cpu0.sysMs),
          userUsPerReq: perReq(cpu1.userMs - cpu0.userMs),
          sysUsPerReq: perReq(cpu1.sysMs - cpu0.sysMs),
        });
        if (!opts.json) {
          process.stdout.write(
            `  c=${c} round ${r + 1} ${t.name.padEnd(24)} ${w.rps.toFixed(0).padStart(7)} req/s` +
              `  p50 ${(w.latencyUs.p50 / 1000).toFixed(2)} ms  p99 ${(w.latencyUs.p99 / 1000).toFixed(2)} ms` +
              (w.errorCount ? `  ERRORS ${JSON.stringify(w.errors)}` : '') +
              '\n',
          );
        }
      }
    }
  }
  const closedSummary = {};
  for (const c of opts.connections) {
    closedSummary[c] = {};
    for (const t of targets) {
      const runs = closed[c][t.name];
      closedSummary[c][t.name] = {
        rps: median(runs.map((x) => x.rps)),
        rpsRuns: runs.map((x) => Math.round(x.rps)),
        p50Ms: median(runs.map((x) => x.latencyUs.p50 / 1000)),
        p99Ms: median(runs.map((x) => x.latencyUs.p99 / 1000)),
        cpuUsPerReq: median(runs.map((x) => x.cpuUsPerReq)),
        userUsPerReq: median(runs.map((x) => x.userUsPerReq)),
        sysUsPerReq: median(runs.map((x) => x.sysUsPerReq)),
        errors: runs.reduce((a, x) => a + x.errorCount, 0),
      };
    }
  }
  const best = (name) => Math.max(...opts.connections.map((c) => closedSummary[c][name].rps));
  const ratioAt = (c, name) => closedSummary[c][name].rps / closedSummary[c].nginx.rps;

  // Open loop at half the gateway's max rate: direct vs each gateway target, interleaved.
  // --rate-of picks whose max sets the rate (e.g. gateway[x2]); default the single process.
  if (!closedSummary[opts.connections[0]][`${opts.rateOf} rr`]) {
    throw new Error(`--rate-of ${opts.rateOf}: no such gateway target`);
  }
  const gwMax = best(`${opts.rateOf} rr`);
  const rate = Math.max(50, Math.round(gwMax * opts.rateFraction));
  const openTargets = targets.filter((t) => t.name !== 'nginx');
  const open = Object.fromEntries(openTargets.map((t) => [t.name, []]));
  /** One open-loop round of target t at `r` req/s, with the target's CPU over it. */
  const openRound = async (t, r, label) => {
    const cpu0 = cpuOf(t);
    const wall0 = performance.now();
    const o = await runOpenLoop(
      {
        port: t.port,
        path: '/v1/chat/completions',
        body: t.body,
        headers: HEADERS,
        rate: r,
        durationS: opts.duration,
        warmupS: Math.min(1, opts.duration / 2),
        preopen: 32,
        maxConnections: opts.openConnections,
        generator: opts.generator,
      },
      { signal: abort.signal },
    );
    // The target's CPU over the round (warm-up included, as in o.sent): per request, and as a
    // share of one core — how close to saturation "half the maximum rate" runs it, where each
    // request arrives alone (no batching) and costs more than in the closed loop.
    const cpu = cpuOf(t) - cpu0;
    o.cpuUsPerReq = (cpu * 1000) / Math.max(1, o.sent);
    o.busy = cpu / (performance.now() - wall0);
    if (!opts.json) {
      process.stdout.write(
        `  open ${r}/s ${label} ${t.name.padEnd(24)} achieved ${o.achievedRps.toFixed(0)}/s` +
          `  p50 ${o.serviceMs.p50.toFixed(3)} ms  p99 ${o.serviceMs.p99.toFixed(3)} ms` +
          `  (from intended: p99 ${o.intendedMs.p99.toFixed(3)} ms)` +
          `  sends ${(o.sendGapMs?.p50 * 1000).toFixed(0)} µs apart (p50; due every ${(1e6 / r).toFixed(0)})` +
          `  cpu ${o.cpuUsPerReq.toFixed(0)} µs/req, ${(o.busy * 100).toFixed(0)} % of a core` +
          (o.errors || o.non2xx ? `  ERRORS ${o.errors} non2xx ${o.non2xx}` : '') +
          '\n',
      );
    }
    return o;
  };
  for (let r = 0; r < opts.rounds; r++) {
    const order = openTargets.map((_, i) => openTargets[(i + r) % openTargets.length]);
    for (const t of order) open[t.name].push(await openRound(t, rate, `round ${r + 1}`));
  }
  const openSummary = {};
  for (const t of openTargets) {
    const runs = open[t.name];
    const d = open.direct;
    openSummary[t.name] = {
      p50Ms: median(runs.map((x) => x.serviceMs.p50)),
      p99Ms: median(runs.map((x) => x.serviceMs.p99)),
      intendedP99Ms: median(runs.map((x) => x.intendedMs.p99)),
      achievedRps: median(runs.map((x) => x.achievedRps)),
      cpuUsPerReq: median(runs.map((x) => x.cpuUsPerReq)),
      busy: median(runs.map((x) => x.busy)),
      errors: runs.reduce((a, x) => a + x.errors + x.non2xx, 0),
      addedP50Ms: median(runs.map((x, i) => x.serviceMs.p50 - d[i].serviceMs.p50)),
      addedP99Ms: median(runs.map((x, i) => x.serviceMs.p99 - d[i].serviceMs.p99)),
      // The added latency along the tail (medians of the rounds' differences): how much of the
      // traffic stays within the targets, where the p99 alone says only whether 1 % does not.
      addedMs: Object.fromEntries(
        TAIL.map(([k]) => [k, median(runs.map((x, i) => x.serviceMs[k] - d[i].serviceMs[k]))]),
      ),
    };
  }

  // --own-rate: the same criterion applied to every proxy at half of its own maximum — nginx and
  // any --variant (the bare floor proxy) included — each paired with direct at that rate. A
  // control: what "≤ 2 ms p99 added at half the maximum rate" gives on this machine for a proxy
  // with less (or no) logic, where the main open loop runs them all at the gateway's rate.
  const ownRate = {};
  if (opts.ownRate) {
    const direct = targets.find((t) => t.name === 'direct');
    for (const t of targets.filter((x) => x.name !== 'direct')) {
      const r = Math.max(50, Math.round(best(t.name) * opts.rateFraction));
      const pairs = [];
      for (let i = 0; i < opts.rounds; i++) {
        const first = i % 2 === 0 ? direct : t;
        const a = await openRound(first, r, `own rate, round ${i + 1}`);
        const b = await openRound(first === direct ? t : direct, r, `own rate, round ${i + 1}`);
        pairs.push(first === direct ? [a, b] : [b, a]);
      }
      ownRate[t.name] = {
        rate: r,
        p50Ms: median(pairs.map(([, x]) => x.serviceMs.p50)),
        p99Ms: median(pairs.map(([, x]) => x.serviceMs.p99)),
        directP99Ms: median(pairs.map(([d]) => d.serviceMs.p99)),
        addedP50Ms: median(pairs.map(([d, x]) => x.serviceMs.p50 - d.serviceMs.p50)),
        addedP99Ms: median(pairs.map(([d, x]) => x.serviceMs.p99 - d.serviceMs.p99)),
        cpuUsPerReq: median(pairs.map(([, x]) => x.cpuUsPerReq)),
        busy: median(pairs.map(([, x]) => x.busy)),
        errors: pairs.reduce((a, [d, x]) => a + d.errors + d.non2xx + x.errors + x.non2xx, 0),
      };
    }
  }

  // ---- report ----
  const cMax = opts.connections.reduce((a, c) =>
    closedSummary[c]['gateway rr'].rps > closedSummary[a]['gateway rr'].rps ? c : a,
  );
  const ratio = ratioAt(cMax, 'gateway rr');
  const verdictRatio = ratio >= 0.5;
  const added = openSummary['gateway rr'];
  // The latency targets: ≤ 0.5 ms p50 and ≤ 2 ms p99 added against direct.
  const meetsLatency = (x) => x.addedP50Ms <= 0.5 && x.addedP99Ms <= 2;
  const verdictLatency = meetsLatency(added);
  const result = {
    machine: { cpus: (await import('node:os')).cpus().length, node: process.version },
    pin: layout ? { ...layout, affinity } : null,
    options: {
      duration: opts.duration,
      connections: opts.connections,
      rounds: opts.rounds,
      upstream: opts.upstream,
      rateFraction: opts.rateFraction,
    },
    closed: closedSummary,
    open: {
      rate,
      generator: open.direct[0]?.generator ?? 'node',
      maxConnections: opts.openConnections,
      targets: openSummary,
    },
    ...(opts.ownRate ? { ownRate } : {}),
    verdict: {
      ratio,
      ratioConnections: cMax,
      ratioPass: verdictRatio,
      addedP50Ms: added.addedP50Ms,
      addedP99Ms: added.addedP99Ms,
      latencyPass: verdictLatency,
    },
  };
  if (opts.json) {
    process.stdout.write(JSON.stringify(result) + '\n');
    return result;
  }
  const f0 = (x) => (Number.isFinite(x) ? x.toFixed(0) : '-');
  const f2 = (x) => (Number.isFinite(x) ? x.toFixed(2) : '-');
  const f3 = (x) => (Number.isFinite(x) ? x.toFixed(3) : '-');
  console.log(
    `\nclosed loop (wrk, medians of ${opts.rounds} interleaved round(s) × ${opts.duration} s)`,
  );
  console.log(
    `${'target'.padEnd(26)}${'conns'.padStart(6)}${'req/s'.padStart(9)}${'×nginx'.padStart(8)}` +
      `${'p50 ms'.padStart(9)}${'p99 ms'.padStart(9)}${'cpu µs/req'.padStart(12)}` +
      `${'user/sys'.padStart(10)}${'errors'.padStart(8)}`,
  );
  for (const c of opts.connections) {
    for (const t of targets) {
      const s = closedSummary[c][t.name];
      console.log(
        `${t.name.padEnd(26)}${String(c).padStart(6)}${f0(s.rps).padStart(9)}` +
          `${f2(s.rps / closedSummary[c].nginx.rps).padStart(8)}${f2(s.p50Ms).padStart(9)}` +
          `${f2(s.p99Ms).padStart(9)}${f0(s.cpuUsPerReq).padStart(12)}` +
          `${`${f0(s.userUsPerReq)}/${f0(s.sysUsPerReq)}`.padStart(10)}${String(s.errors).padStart(8)}`,
      );
    }
  }
  console.log(
    "(cpu: the target's processes per request — for direct, the upstream; user/sys: its user and" +
      " kernel parts, the kernel part mostly the sockets' own work on loopback)",
  );
  console.log(
    `\nopen loop at ${rate} req/s (${opts.rateFraction} × ${opts.rateOf} rr max ${f0(gwMax)}), service latency, medians of ${opts.rounds} round(s); ${result.open.generator === 'c' ? 'C generator (each request at its due time)' : 'Node generator (1 ms timers: requests due within a millisecond go together)'}, ${opts.openConnections === 32 ? 'a fixed set of 32 connections' : `32 connections, opening more up to ${opts.openConnections} while requests wait`}`,
  );
  console.log(
    `${'target'.padEnd(26)}${'req/s'.padStart(8)}${'p50 ms'.padStart(9)}${'p99 ms'.padStart(9)}` +
      `${'+p50 ms'.padStart(9)}${'+p99 ms'.padStart(9)}${'p99*'.padStart(9)}${'errors'.padStart(8)}` +
      `${'cpu µs/req'.padStart(12)}${'busy'.padStart(7)}`,
  );
  for (const t of openTargets) {
    const s = openSummary[t.name];
    console.log(
      `${t.name.padEnd(26)}${f0(s.achievedRps).padStart(8)}${f3(s.p50Ms).padStart(9)}${f3(s.p99Ms).padStart(9)}` +
        `${(t.name === 'direct' ? '-' : f3(s.addedP50Ms)).padStart(9)}${(t.name === 'direct' ? '-' : f3(s.addedP99Ms)).padStart(9)}` +
        `${f3(s.intendedP99Ms).padStart(9)}${String(s.errors).padStart(8)}` +
        `${f0(s.cpuUsPerReq).padStart(12)}${`${f0(s.busy * 100)} %`.padStart(7)}`,
    );
  }
  console.log(
    "(p99*: from the intended send time, coordinated-omission corrected; cpu, busy: the target's" +
      ' processes — for direct, the upstream — per request and as a share of one core)',
  );
  console.log(
    `\nadded latency along the tail (ms, medians of the rounds' differences from direct)\n` +
      `${'target'.padEnd(26)}${TAIL.map(([, label]) => label.padStart(9)).join('')}   ≤ +2 ms through`,
  );
  for (const t of openTargets) {
    if (t.name === 'direct') continue;
    const a = openSummary[t.name].addedMs;
    // The highest listed percentile up to which every listed one adds at most 2 ms.
    const first = TAIL.findIndex(([k]) => !(a[k] <= 2));
    const within = first === -1 ? TAIL.at(-1) : TAIL[first - 1];
    console.log(
      `${t.name.padEnd(26)}${TAIL.map(([k]) => f3(a[k]).padStart(9)).join('')}   ${within ? within[1] : '-'}`,
    );
  }
  if (opts.ownRate) {
    console.log(
      `\ncontrol: each proxy at ${opts.rateFraction} × its own max rate, paired with direct at that rate (medians of ${opts.rounds} round(s))\n` +
        `${'target'.padEnd(26)}${'req/s'.padStart(8)}${'p50 ms'.padStart(9)}${'p99 ms'.padStart(9)}` +
        `${'direct p99'.padStart(11)}${'+p50 ms'.padStart(9)}${'+p99 ms'.padStart(9)}` +
        `${'cpu µs/req'.padStart(12)}${'busy'.padStart(7)}${'errors'.padStart(8)}`,
    );
    for (const [name, s] of Object.entries(ownRate)) {
      console.log(
        `${name.padEnd(26)}${f0(s.rate).padStart(8)}${f3(s.p50Ms).padStart(9)}${f3(s.p99Ms).padStart(9)}` +
          `${f3(s.directP99Ms).padStart(11)}${f3(s.addedP50Ms).padStart(9)}${f3(s.addedP99Ms).padStart(9)}` +
          `${f0(s.cpuUsPerReq).padStart(12)}${`${f0(s.busy * 100)} %`.padStart(7)}${String(s.errors).padStart(8)}`,
      );
    }
  }
  console.log('');
  const upHeadroom = closedSummary[cMax].direct.rps / closedSummary[cMax].nginx.rps;
  console.log(
    `upstream direct ${f0(closedSummary[cMax].direct.rps)} req/s = ${f2(upHeadroom)}× nginx's rate at c=${cMax} (above 1: the upstream is not the proxies' bottleneck)`,
  );
  console.log(
    `gateway/nginx rps ratio = ${ratio.toFixed(2)} (target ≥ 0.5) at c=${cMax}: ${verdictRatio ? 'PASS' : 'FAIL'}`,
  );
  if (opts.prefixAware) {
    console.log(
      `  prefix-aware policy: gateway/nginx = ${ratioAt(cMax, 'gateway prefix').toFixed(2)}; added p50 = ${f3(openSummary['gateway prefix'].addedP50Ms)} ms, p99 = ${f3(openSummary['gateway prefix'].addedP99Ms)} ms`,
    );
  }
  for (const g of gateways.slice(1)) {
    console.log(
      `  ${g.name}: gateway/nginx = ${ratioAt(cMax, `${g.name} rr`).toFixed(2)}; added p50 = ${f3(openSummary[`${g.name} rr`].addedP50Ms)} ms, p99 = ${f3(openSummary[`${g.name} rr`].addedP99Ms)} ms`,
    );
  }
  console.log(
    `added latency p50 = ${f3(added.addedP50Ms)} ms (target ≤ 0.5), p99 = ${f3(added.addedP99Ms)} ms (target ≤ 2): ${verdictLatency ? 'PASS' : 'FAIL'}`,
  );
  if (opts.ownRate) {
    // The control's verdict: the same targets for nginx at the same fraction of its own maximum.
    const n = ownRate.nginx;
    console.log(
      `control: nginx at ${opts.rateFraction} × its own max (${f0(n.rate)} req/s, ${f0(n.busy * 100)} % busy) adds p50 ${f3(n.addedP50Ms)} ms, p99 ${f3(n.addedP99Ms)} ms: ${meetsLatency(n) ? 'meets' : 'misses'} the same latency targets`,
    );
  }
  return result;
}

try {
  await main();
  await cleanup();
  process.exit(0);
} catch (e) {
  console.error(`gateway-overhead: ${e instanceof Error ? e.message : String(e)}`);
  await cleanup();
  process.exit(1);
}
