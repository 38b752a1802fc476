// Deployment lifecycle through the CLI, engine crash recovery, client disconnects, shutdown and
// restart — all with real processes.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ADMIN_KEY,
  ROOT,
  api,
  cli,
  isAlive,
  startUp,
  tempStateDir,
  waitFor,
  type DeploymentDetail,
  type UpProcess,
} from './helpers.js';

let up: UpProcess;
let state: ReturnType<typeof tempStateDir>;

beforeAll(async () => {
  state = tempStateDir();
  up = await startUp(state.dir);
});

afterAll(async () => {
  await up?.stop('SIGKILL');
  state?.cleanup();
});

const asAdmin = () => ({ url: up.info.url, key: ADMIN_KEY });

async function describeDep(name: string): Promise<DeploymentDetail> {
  const r = await cli(['describe', 'deployment', name, '--json'], asAdmin());
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as DeploymentDetail;
}

describe('CLI: tenants, keys and deployments', () => {
  it('creates a tenant and a key, applies the example deployment, and serves it', async () => {
    const t = await cli(['tenant', 'create', 'team-a'], asAdmin());
    expect(t.code, t.stderr).toBe(0);
    expect(t.stdout).toContain('team-a');

    const k = await cli(['key', 'create', '--tenant', 'team-a', '--json'], asAdmin());
    expect(k.code, k.stderr).toBe(0);
    const key = (JSON.parse(k.stdout) as { key: string }).key;
    expect(key).toMatch(/^ipk_/);

    // The example names tenant "demo"; apply it for team-a through stdin.
    const example = readFileSync(join(ROOT, 'examples', 'deployment.yaml'), 'utf8').replace(
      /^tenant: demo/m,
      'tenant: team-a',
    );
    const a = await cli(['apply', '-f', '-'], { ...asAdmin(), input: example });
    expect(a.code, a.stderr).toBe(0);
    expect(a.stdout).toMatch(/deployment\/team-a-llama-8b created/);

    const again = await cli(['apply', '-f', '-'], { ...asAdmin(), input: example });
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/deployment\/team-a-llama-8b unchanged/);

    const d = await waitFor(async () => {
      const x = await describeDep('team-a-llama-8b');
      return x.summary.replicas.ready === 2 ? x : undefined;
    }, 'team-a-llama-8b ready');
    expect(d.replicas.every((r) => r.state === 'ready' && r.port !== null && r.pid !== null)).toBe(
      true,
    );

    const get = await cli(['get', 'deployments', '--json'], asAdmin());
    const items = (JSON.parse(get.stdout) as { items: Array<{ name: string; phase: string }> })
      .items;
    expect(items.find((i) => i.name === 'team-a-llama-8b')?.phase).toBe('Ready');
    const table = await cli(['get', 'deployments'], asAdmin());
    expect(table.stdout).toMatch(/team-a-llama-8b\s+team-a/);

    const client = new OpenAI({ apiKey: key, baseURL: `${up.info.url}/v1`, maxRetries: 0 });
    const out = await client.chat.completions.create({
      model: 'team-a-llama-8b',
      messages: [{ role: 'user', content: 'hi' }],
      max_tokens: 4,
    });
    expect(out.usage?.completion_tokens).toBe(4);

    const logs = await cli(['logs', 'team-a-llama-8b', '--replica', '1'], asAdmin());
    expect(logs.code, logs.stderr).toBe(0);
    expect(logs.stdout).toMatch(/listening/);

    const nodes = await cli(['get', 'nodes', '--json'], asAdmin());
    const node = (
      JSON.parse(nodes.stdout) as { items: Array<{ gpuTotal: number; gpuFree: number }> }
    ).items[0]!;
    expect(node.gpuTotal).toBe(4);
    expect(node.gpuFree).toBe(0);
  });

  it('scales and deletes, stopping the engines', async () => {
    const before = await describeDep('team-a-llama-8b');
    const pids = before.replicas.map((r) => r.pid!);
    const spec = { ...before.spec, replicas: 1 };
    const scaled = await api(
      up.info.url,
      ADMIN_KEY,
      'PUT',
      '/api/v1/deployments/team-a-llama-8b',
      spec,
    );
    expect(scaled.status).toBe(200);
    await waitFor(
      async () => (await describeDep('team-a-llama-8b')).replicas.length === 1,
      'scale down',
    );
    // Replica 0 kept running (a scale does not restart it); replica 1 is gone.
    await waitFor(() => Promise.resolve(!isAlive(pids[1]!)), 'replica 1 stopped');
    expect(isAlive(pids[0]!)).toBe(true);

    const del = await cli(['delete', 'deployment', 'team-a-llama-8b'], asAdmin());
    expect(del.code, del.stderr).toBe(0);
    await waitFor(() => Promise.resolve(!isAlive(pids[0]!)), 'replica 0 stopped');
    const gone = await cli(['describe', 'deployment', 'team-a-llama-8b'], asAdmin());
    expect(gone.code).toBe(1);
    expect(gone.stderr).toContain('IP_DEPLOYMENT_NOT_FOUND');
  });

  it('reports each bad field of a spec applied through the CLI', async () => {
    const r = await cli(['apply', '-f', '-'], {
      ...asAdmin(),
      input:
        'name: Bad_Name\ntenant: demo\nmodel: m\nengine: {name: sim}\nreplicas: -1\nresources: {gpus: 1}\n',
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/IP_VALIDATION/);
    expect(r.stderr).toMatch(/replicas/);
    expect(r.stderr).toMatch(/resources\.gpuType/);
  });
});

describe('engine failures', () => {
  it('restarts a killed engine with backoff; requests keep being served', async () => {
    const before = await describeDep('demo-llama-8b');
    const victim = before.replicas.find((r) => r.index === 0)!;
    process.kill(victim.pid!, 'SIGKILL');

    const client = new OpenAI({
      apiKey: up.info.demo!.key,
      baseURL: `${up.info.url}/v1`,
      maxRetries: 0,
    });
    // While replica 0 is down, requests go to replica 1 (a refused connection is retried elsewhere).
    for (let i = 0; i < 4; i++) {
      const r = await client.completions.create({
        model: 'demo-llama-8b',
        prompt: 'x',
        max_tokens: 1,
      });
      expect(r.usage?.completion_tokens).toBe(1);
    }
    const after = await waitFor(
      async () => {
        const d = await describeDep('demo-llama-8b');
        const r0 = d.replicas.find((r) => r.index === 0);
        return r0 && r0.state === 'ready' && r0.pid !== victim.pid ? d : undefined;
      },
      'replica 0 back',
      30_000,
    );
    const r0 = after.replicas.find((r) => r.index === 0)!;
    expect(r0.restarts).toBeGreaterThanOrEqual(1);
    expect(isAlive(r0.pid!)).toBe(true);
    expect(r0.gpus).toEqual(victim.gpus); // same GPUs
    expect(after.events.map((e) => e.reason)).toContain('BackOff');
    const engineLog = await cli(['logs', 'demo-llama-8b', '--replica', '0'], asAdmin());
    expect(engineLog.stdout.match(/=== .* start/g)?.length).toBeGreaterThanOrEqual(2);
  });

  it('a client disconnect cancels the request on the engine', async () => {
    const d = await describeDep('demo-llama-8b');
    const ac = new AbortController();
    const res = await fetch(`${up.info.url}/v1/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${up.info.demo!.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        model: 'demo-llama-8b',
        prompt: 'long story',
        max_tokens: 3000,
        stream: true,
      }),
      signal: ac.signal,
    });
    const replica = d.replicas.find(
      (r) => String(r.index) === res.headers.get('x-inferplane-replica'),
    )!;
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    await reader.read();
    const running = async (): Promise<number> => {
      const text = await (await fetch(`http://127.0.0.1:${replica.port}/metrics`)).text();
      const m = /vllm:num_requests_running\{[^}]*\} (\d+)/.exec(text);
      return Number(m?.[1] ?? NaN);
    };
    expect(await running()).toBe(1);
    ac.abort();
    await waitFor(async () => (await running()) === 0, 'engine request cancelled', 5000);
  });
});

describe('shutdown and restart', () => {
  it('Ctrl-C stops everything; a restart keeps tenants, keys and deployments and brings replicas back', async () => {
    const demoKey = up.info.demo!.key;
    const before = await describeDep('demo-llama-8b');
    const pids = before.replicas.map((r) => r.pid!);
    expect(pids.every(isAlive)).toBe(true);

    const code = await up.stop('SIGINT');
    expect(code).toBe(0);
    for (const pid of pids) expect(isAlive(pid)).toBe(false);

    up = await startUp(state.dir);
    expect(up.info.demo?.key).toBe(demoKey);
    expect(up.info.demo?.ready).toBe(true);
    const tenants = await cli(['get', 'tenants', '--json'], asAdmin());
    expect(
      (JSON.parse(tenants.stdout) as { items: Array<{ name: string }> }).items.map((t) => t.name),
    ).toEqual(expect.arrayContaining(['demo', 'team-a']));
    const after = await describeDep('demo-llama-8b');
    expect(after.replicas.every((r) => r.state === 'ready')).toBe(true);
    expect(after.replicas.map((r) => r.gpus)).toEqual(before.replicas.map((r) => r.gpus));
    const client = new OpenAI({ apiKey: demoKey, baseURL: `${up.info.url}/v1`, maxRetries: 0 });
    const out = await client.chat.completions.create({
      model: 'demo-llama-8b',
      messages: [{ role: 'user', content: 'still there?' }],
      max_tokens: 2,
    });
    expect(out.choices[0]?.message.content).toBeTruthy();
  });

  it('engines die with the platform even when it is killed with SIGKILL', async () => {
    const d = await describeDep('demo-llama-8b');
    const pids = d.replicas.map((r) => r.pid!);
    await up.stop('SIGKILL');
    await waitFor(
      () => Promise.resolve(pids.every((p) => !isAlive(p))),
      'orphaned engines to exit',
      10_000,
    );
    up = await startUp(state.dir);
    expect(up.info.demo?.ready).toBe(true);
  });
});
