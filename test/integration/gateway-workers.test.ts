// `inferplane up --gateway-workers 2`: the gateway in two worker processes on one port, the control
// plane in the primary. Real CLI, real engines, real sockets.
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { BOARD_CAPACITY } from '../../src/gateway/routing/load-board.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ADMIN_KEY,
  api,
  isAlive,
  startUp,
  tempStateDir,
  waitFor,
  type DeploymentDetail,
  type UpProcess,
} from './helpers.js';

let up: UpProcess;
let state: ReturnType<typeof tempStateDir>;
let demoKey: string;

/** Pids of the gateway worker processes of `up` (children running gateway-worker.js). */
function workerPids(parent: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid !== parent) continue;
      const cmd = readFileSync(`/proc/${name}/cmdline`, 'utf8');
      if (cmd.includes('gateway-worker.js')) out.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return out.sort((a, b) => a - b);
}

const body = (i: number): string =>
  JSON.stringify({ model: 'demo-llama-8b', prompt: `w${i}`, max_tokens: 1 });

/** `n` requests over `conns` separate connections (each its own client): status counts. */
async function burst(n: number, conns: number): Promise<Map<number, number>> {
  const agents = Array.from(
    { length: conns },
    () => new Agent({ connections: 1, pipelining: 0, keepAliveTimeout: 10_000 }),
  );
  const codes = new Map<number, number>();
  let next = 0;
  await Promise.all(
    agents.map(async (dispatcher) => {
      while (next < n) {
        const i = next++;
        const res = await request(`${up.info.url}/v1/completions`, {
          method: 'POST',
          dispatcher,
          headers: { authorization: `Bearer ${demoKey}`, 'content-type': 'application/json' },
          body: body(i),
        });
        await res.body.text();
        codes.set(res.statusCode, (codes.get(res.statusCode) ?? 0) + 1);
      }
    }),
  );
  await Promise.all(agents.map((a) => a.close()));
  return codes;
}

async function metricSum(name: string, filter: (labels: string) => boolean = () => true) {
  const text = await (await fetch(`${up.info.url}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const brace = line.indexOf('{');
    const labels = brace >= 0 ? line.slice(brace, line.indexOf('}') + 1) : '';
    if (line.slice(0, brace >= 0 ? brace : line.indexOf(' ')) !== name || !filter(labels)) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

/** Deploys `name` (2 sim replicas of the demo tenant, the given routing); resolves once ready. */
async function deployTwo(name: string, routing: Record<string, string>): Promise<void> {
  const put = await api(up.info.url, ADMIN_KEY, 'PUT', `/api/v1/deployments/${name}`, {
    tenant: up.info.demo!.tenant,
    model: 'llama-3.1-8b',
    engine: { name: 'sim', args: {} },
    replicas: 2,
    resources: { gpus: 1, gpuType: 'H100-80GB' },
    routing,
  });
  expect(put.status, JSON.stringify(put.body)).toBeLessThan(300);
  await waitFor(
    async () =>
      (await api<DeploymentDetail>(up.info.url, ADMIN_KEY, 'GET', `/api/v1/deployments/${name}`))
        .body.summary.replicas.ready === 2,
    `the ${name} deployment ready`,
    60_000,
  );
}

/** One request with its routing receipt (`x-inferplane-debug: route`), on a fresh connection. */
async function routed(model: string, stream: boolean, prompt = 'Count slowly.') {
  const dispatcher = new Agent({ connections: 1 });
  const res = await request(`${up.info.url}/v1/completions`, {
    method: 'POST',
    dispatcher,
    headers: {
      authorization: `Bearer ${demoKey}`,
      'content-type': 'application/json',
      'x-inferplane-debug': 'route',
    },
    body: JSON.stringify({ model, prompt, max_tokens: stream ? 4000 : 1, stream }),
  });
  expect(res.statusCode).toBe(200);
  const receipt = JSON.parse(String(res.headers['x-inferplane-route'])) as {
    replica: string;
    scores: Record<string, { load?: number }>;
    matchedBlocks: number;
    prefixSource?: string;
  };
  return { res, dispatcher, receipt };
}

/**
 * Sends short routed requests on fresh connections (consecutive ones land on different workers)
 * until `n` in a row have receipts that satisfy `ok`; fails after 10 s. In a row, so that a count
 * that is wrong for good never passes while one caught mid-change (a request ending) does not fail.
 */
async function receiptsInARow(
  model: string,
  ok: (receipt: Awaited<ReturnType<typeof routed>>['receipt']) => boolean,
  n = 4,
): Promise<void> {
  const deadline = Date.now() + 10_000;
  let streak = 0;
  let last = '';
  while (streak < n) {
    if (Date.now() > deadline) {
      throw new Error(`no ${n} receipts in a row as expected within 10 s; the last: ${last}`);
    }
    const r = await routed(model, false);
    await r.res.body.text();
    await r.dispatcher.close();
    last = JSON.stringify(r.receipt);
    streak = ok(r.receipt) ? streak + 1 : 0;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * `n` long streams on fresh connections (consecutive ones land on different workers), each read
 * on. Resolves once each sent its first chunk.
 */
async function longStreams(model: string, n: number) {
  const out = [];
  for (let i = 0; i < n; i++) {
    const s = await routed(model, true);
    // Read on (never break a for-await: that would cancel it); the first chunk: it is in flight.
    await new Promise((r) => s.res.body.on('data', r));
    out.push(s);
    await new Promise((r) => setTimeout(r, 100));
  }
  return out;
}

/** Worker ids (cluster ids) in the access lines of the log, of one model or all (lines are flushed every 500 ms). */
function servingWorkers(model?: string): Set<string> {
  const ids = new Set<string>();
  for (const line of readFileSync(join(state.dir, 'logs', 'inferplane.log'), 'utf8').split('\n')) {
    if (!line.includes('"msg":"request done"') || !line.includes('"worker"')) continue;
    const l = JSON.parse(line) as { worker: unknown; model?: string };
    if (model === undefined || l.model === model) ids.add(String(l.worker));
  }
  return ids;
}

beforeAll(async () => {
  state = tempStateDir();
  // Engine queues scraped once a minute: between scrapes a worker knows the replicas' load only
  // from in-flight counts (its own, and the other worker's on the load board).
  up = await startUp(state.dir, [
    '--gateway-workers',
    '2',
    '--signal-interval-ms',
    '60000',
    '--signal-stale-ms',
    '150000',
    '--gpus',
    '8',
  ]);
  expect(up.info.demo?.ready).toBe(true);
  demoKey = up.info.demo!.key;
}, 90_000);

/** The load board files of `up`'s primary (load-board.ts: tmpfs here). */
const boards = (pid: number): string[] =>
  readdirSync('/dev/shm').filter((f) => f.startsWith(`inferplane-gw-${pid}-`));

/** The pid each slot of the board was last taken by (the header's third field). */
function boardPids(pid: number): number[] {
  const [file] = boards(pid);
  const bytes = readFileSync(join('/dev/shm', file!));
  const slot = (4 + 3 * BOARD_CAPACITY) * 8;
  const out: number[] = [];
  for (let at = 0; at + slot <= bytes.length; at += slot) out.push(bytes.readDoubleLE(at + 16));
  return out;
}

afterAll(async () => {
  const pid = up?.info.pid;
  await up?.stop();
  state?.cleanup();
  // Stopping removes the board file.
  if (pid !== undefined) expect(boards(pid)).toEqual([]);
});

describe('gateway workers', () => {
  it('runs two worker processes that both serve the public port', async () => {
    expect(workerPids(up.info.pid)).toHaveLength(2);
    expect(boards(up.info.pid)).toHaveLength(1);
    expect((up.info as { gatewayWorkers?: number }).gatewayWorkers).toBe(2);
    const before = await metricSum('inferplane_gateway_requests_total');
    const codes = await burst(60, 12);
    expect(codes.get(200)).toBe(60);
    // /metrics (served by the primary) sums every worker's counters.
    await waitFor(
      async () => (await metricSum('inferplane_gateway_requests_total')) - before === 60,
      'the summed request count',
    );
    // Each worker logs with its id; both took connections.
    const workers = await waitFor(() => {
      const ids = servingWorkers();
      return Promise.resolve(ids.size >= 2 ? ids : undefined);
    }, 'access lines from both workers');
    expect(workers.size).toBe(2);
  });

  it('relays the control-plane API, readiness and the model list', async () => {
    const tenants = await api<{ items?: unknown[] } | unknown[]>(
      up.info.url,
      ADMIN_KEY,
      'GET',
      '/api/v1/tenants',
    );
    expect(tenants.status).toBe(200);
    const ready = (await (await fetch(`${up.info.url}/readyz`)).json()) as {
      status: string;
      snapshot: number;
      gatewayWorkers?: { live: number; configured: number };
    };
    expect(ready.status).toBe('ready');
    expect(ready.snapshot).toBeGreaterThan(0);
    expect(ready).toMatchObject({ gatewayWorkers: { live: 2, configured: 2 } });
    expect(await metricSum('inferplane_gateway_workers', (l) => l.includes('live'))).toBe(2);
    const models = await fetch(`${up.info.url}/v1/models`, {
      headers: { authorization: `Bearer ${demoKey}` },
    });
    expect(((await models.json()) as { data: Array<{ id: string }> }).data[0]?.id).toBe(
      'demo-llama-8b',
    );
    const unauth = await api(up.info.url, 'ipk_nope', 'GET', '/api/v1/tenants');
    expect(unauth.status).toBe(401);
  });

  it('holds a tenant rate limit across both workers (shares, not one limit each)', async () => {
    const set = await api(
      up.info.url,
      ADMIN_KEY,
      'PATCH',
      `/api/v1/tenants/${up.info.demo!.tenant}`,
      {
        limits: { requestsPerSecond: 20 },
      },
    );
    expect(set.status).toBe(200);
    await waitFor(async () => ((await burst(40, 4)).get(429) ?? 0) > 0, 'the limit in force');
    await new Promise((r) => setTimeout(r, 1500)); // buckets refill
    // 3 s of demand well above the limit, over 8 connections (both workers get some).
    const t0 = performance.now();
    const codes = new Map<number, number>();
    while (performance.now() - t0 < 3000) {
      for (const [c, n] of await burst(40, 8)) codes.set(c, (codes.get(c) ?? 0) + n);
    }
    const seconds = (performance.now() - t0) / 1000;
    const ok = codes.get(200) ?? 0;
    console.log(`limit 20/s over 2 workers: ${ok} admitted in ${seconds.toFixed(2)} s`);
    // Global: 20/s sustained + a burst of 20 (+1 per extra worker). One full limit per worker
    // would admit about twice as many.
    expect(ok).toBeLessThanOrEqual(Math.ceil(20 * seconds + 20 + 1 + 6));
    expect(ok).toBeGreaterThanOrEqual(Math.floor(20 * seconds * 0.6));
    expect(codes.get(429)).toBeGreaterThan(0);
    await api(up.info.url, ADMIN_KEY, 'PATCH', `/api/v1/tenants/${up.info.demo!.tenant}`, {
      limits: { requestsPerSecond: null },
    });
  });

  // Approximate prefix routing: each worker's index learns the others' picks (relayed), so a
  // prompt sticks to one replica whichever worker its connection lands on. Fresh connections
  // alternate between the workers (cluster round-robin); without the relay each worker's first
  // pick of a prompt is its own tie-break (about even odds per prompt of the other replica).
  it('shares approximate-prefix picks between workers', async () => {
    await deployTwo('shared', { policy: 'prefix-aware', prefixSource: 'approximate' });
    const oneShot = async (prompt: string) => {
      const { res, dispatcher, receipt } = await routed('shared', false, prompt);
      const json = (await res.body.json()) as {
        usage: { prompt_tokens_details: { cached_tokens: number } };
      };
      await dispatcher.close();
      return {
        replica: String(res.headers['x-inferplane-replica']),
        cached: json.usage.prompt_tokens_details.cached_tokens,
        matched: receipt.matchedBlocks,
        source: receipt.prefixSource,
      };
    };
    await waitFor(async () => (await oneShot('warm up')).replica !== undefined, 'routable');
    for (let p = 0; p < 6; p++) {
      const prompt = `Prompt ${p}: a shared system preamble for the fleet. `.repeat(20) + 'Go.';
      const seen = [];
      for (let i = 0; i < 4; i++) {
        seen.push(await oneShot(prompt));
        await new Promise((r) => setTimeout(r, 30)); // the relay batches for 5 ms
      }
      expect(new Set(seen.map((x) => x.replica)).size, `prompt ${p}: ${JSON.stringify(seen)}`).toBe(
        1,
      );
      // Every repeat's worker knew the prefix (the receipt's matched blocks), though consecutive
      // fresh connections land on different workers.
      for (const x of seen.slice(1)) {
        expect(x.matched, JSON.stringify(seen)).toBeGreaterThan(0);
        expect(x.cached).toBeGreaterThan(0);
      }
      expect(seen[0]!.source).toBe('approximate');
    }
    // Both workers served the model (so the repeats above crossed between them).
    await waitFor(
      () => Promise.resolve(servingWorkers('shared').size >= 2),
      'requests of the shared model on both workers',
    );
  }, 60_000);

  it("balances on the other worker's in-flight requests too", async () => {
    await deployTwo('spread', { policy: 'least-loaded' });
    const send = (stream: boolean) => routed('spread', stream);
    await waitFor(async () => {
      const r = await send(false);
      await r.res.body.text();
      await r.dispatcher.close();
      return true;
    }, 'spread routable');
    // Two long streams on fresh connections (consecutive ones land on different workers). Each
    // pick sees the other's stream, whichever worker sent it: they go to different replicas.
    const streams = await longStreams('spread', 2);
    try {
      expect(new Set(streams.map((s) => s.receipt.replica)).size).toBe(2);
      // Short requests on fresh connections, served by both workers: each pick counts both
      // streams, one per replica (a worker counting only its own would see 0 or 1 somewhere).
      await receiptsInARow('spread', (r) => {
        const loads = Object.values(r.scores).map((x) => x.load);
        return loads.length === 2 && loads.every((l) => l === 1);
      });
    } finally {
      for (const s of streams) {
        s.res.body.destroy();
        await s.dispatcher.destroy();
      }
    }
    await waitFor(
      () => Promise.resolve(servingWorkers('spread').size >= 2),
      'requests of the spread model on both workers',
    );
  }, 90_000);

  it('replaces a worker that dies; requests keep being served', async () => {
    const [victim] = workerPids(up.info.pid);
    // One board slot per worker, each taken by its worker.
    expect(boardPids(up.info.pid).sort()).toEqual(workerPids(up.info.pid).sort());
    process.kill(victim!, 'SIGKILL');
    await waitFor(() => Promise.resolve(!isAlive(victim!)), 'the worker gone');
    await waitFor(() => {
      const pids = workerPids(up.info.pid);
      return Promise.resolve(pids.length === 2 && !pids.includes(victim!));
    }, 'a replacement worker');
    // The replacement (a new cluster id) serves too, and nothing fails meanwhile.
    const before = servingWorkers();
    const codes: number[] = [];
    await waitFor(async () => {
      for (const [code, n] of await burst(20, 4)) for (let i = 0; i < n; i++) codes.push(code);
      return [...servingWorkers()].some((id) => !before.has(id));
    }, 'access lines from the replacement worker');
    expect(codes.filter((c) => c !== 200)).toEqual([]);
    // The replacement took the dead worker's slot over (the primary emptied it at the death).
    expect(boardPids(up.info.pid).sort()).toEqual(workerPids(up.info.pid).sort());
    expect(await metricSum('inferplane_gateway_worker_restarts_total')).toBe(1);
    expect(await metricSum('inferplane_gateway_workers', (l) => l.includes('live'))).toBe(2);
  });

  it('stops every worker when up stops', async () => {
    const pids = workerPids(up.info.pid);
    expect(pids).toHaveLength(2);
    expect(await up.stop()).toBe(0);
    await waitFor(() => Promise.resolve(pids.every((p) => !isAlive(p))), 'workers gone');
  });
});
