// `inferplane up` end to end: the real CLI process, real engines, real sockets.
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ADMIN_KEY,
  api,
  startUp,
  tempStateDir,
  waitFor,
  type DeploymentDetail,
  type UpProcess,
} from './helpers.js';

let up: UpProcess;
let state: ReturnType<typeof tempStateDir>;
let demoKey: string;

beforeAll(async () => {
  state = tempStateDir();
  up = await startUp(state.dir);
  expect(up.info.demo?.ready).toBe(true);
  demoKey = up.info.demo!.key;
});

afterAll(async () => {
  await up?.stop();
  state?.cleanup();
});

function openai(key = demoKey): OpenAI {
  return new OpenAI({ apiKey: key, baseURL: `${up.info.url}/v1`, maxRetries: 0 });
}

describe('OpenAI API through the gateway', () => {
  it('streams a chat completion with the official openai client', async () => {
    const stream = await openai().chat.completions.create({
      model: 'demo-llama-8b',
      messages: [{ role: 'user', content: 'Hello there, how are you?' }],
      max_tokens: 12,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let chunks = 0;
    let usage: OpenAI.CompletionUsage | undefined;
    let finish: string | null | undefined;
    for await (const chunk of stream) {
      chunks++;
      text += chunk.choices[0]?.delta.content ?? '';
      if (chunk.choices[0]?.finish_reason) finish = chunk.choices[0].finish_reason;
      if (chunk.usage) usage = chunk.usage;
    }
    expect(chunks).toBeGreaterThanOrEqual(12);
    expect(text.length).toBeGreaterThan(0);
    expect(finish).toBe('length');
    expect(usage?.completion_tokens).toBe(12);
    expect(usage?.prompt_tokens).toBeGreaterThan(0);
  });

  it('relays chunks as they are produced, not buffered', async () => {
    // 40 tokens at 10 ms each: chunks must arrive spread over time, the first long before the last.
    const res = await fetch(`${up.info.url}/v1/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${demoKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        model: 'demo-llama-8b',
        prompt: 'Once upon a time',
        max_tokens: 40,
        stream: true,
      }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/text\/event-stream/);
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    const arrivals: number[] = [];
    let all = '';
    const t0 = performance.now();
    for (;;) {
      const next = await reader.read();
      if (next.done) break;
      arrivals.push(performance.now() - t0);
      all += new TextDecoder().decode(next.value);
    }
    expect(all.trimEnd().endsWith('data: [DONE]')).toBe(true);
    expect(arrivals.length).toBeGreaterThan(10);
    const spread = arrivals.at(-1)! - arrivals[0]!;
    expect(spread).toBeGreaterThan(150); // ~390 ms of decode; a buffered body would arrive at once
  });

  it('answers non-streaming chat and completions with usage', async () => {
    const chat = await openai().chat.completions.create({
      model: 'demo-llama-8b',
      messages: [{ role: 'user', content: 'Say something' }],
      max_tokens: 5,
    });
    expect(chat.object).toBe('chat.completion');
    expect(chat.choices[0]?.message.role).toBe('assistant');
    expect(chat.usage?.completion_tokens).toBe(5);
    const cmpl = await openai().completions.create({
      model: 'demo-llama-8b',
      prompt: 'abc',
      max_tokens: 3,
    });
    expect(cmpl.object).toBe('text_completion');
    expect(cmpl.usage?.completion_tokens).toBe(3);
  });

  it('lists the models the key can reach', async () => {
    const models = await openai().models.list();
    expect(models.data.map((m) => m.id)).toEqual(['demo-llama-8b']);
    const asOperator = await openai(ADMIN_KEY).models.list();
    expect(asOperator.data.map((m) => m.id)).toContain('demo-llama-8b');
  });

  // The demo deployment routes prefix-aware (the default): a repeated prompt sticks to the replica
  // that has its prefix cached, so every repeat is a cache hit there.
  it('reports cached prompt tokens when a replica sees a prompt again (prefix-aware)', async () => {
    const prompt = 'You are a careful assistant for a shared GPU fleet. '.repeat(30) + 'Why?';
    const cached = new Map<string, number[]>();
    for (let i = 0; i < 4; i++) {
      const res = await fetch(`${up.info.url}/v1/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${demoKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'demo-llama-8b', prompt, max_tokens: 1 }),
      });
      const body = (await res.json()) as {
        usage: { prompt_tokens: number; prompt_tokens_details: { cached_tokens: number } };
      };
      const replica = res.headers.get('x-inferplane-replica') ?? '?';
      cached.set(replica, [
        ...(cached.get(replica) ?? []),
        body.usage.prompt_tokens_details.cached_tokens,
      ]);
    }
    expect(cached.size).toBe(1);
    const [first, ...repeats] = [...cached.values()][0]!;
    expect(first).toBe(0);
    expect(repeats).toHaveLength(3);
    for (const n of repeats) {
      expect(n).toBeGreaterThan(0);
      expect(n % 16).toBe(0); // whole KV blocks
    }
  });

  // Prompts without a shared prefix tie on the prefix score and go to the least loaded replica;
  // equally loaded replicas take turns (least recently picked), so sequential requests reach both.
  it('spreads requests without a shared prefix over the ready replicas', async () => {
    const seen = new Set<string>();
    for (let i = 0; i < 16; i++) {
      const res = await fetch(`${up.info.url}/v1/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${demoKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'demo-llama-8b', prompt: `x${i}`, max_tokens: 1 }),
      });
      expect(res.status).toBe(200);
      seen.add(res.headers.get('x-inferplane-replica') ?? '');
      await res.text();
    }
    expect([...seen].sort()).toEqual(['0', '1']);
  });
});

describe('errors at the gateway are OpenAI-shaped with stable codes', () => {
  const post = (path: string, body: string, key?: string) =>
    fetch(`${up.info.url}${path}`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        ...(key ? { authorization: `Bearer ${key}` } : {}),
      },
      body,
    });

  it('401 for a missing or wrong key', async () => {
    for (const key of [undefined, 'ipk_nope']) {
      const res = await post(
        '/v1/chat/completions',
        '{"model":"demo-llama-8b","messages":[]}',
        key,
      );
      expect(res.status).toBe(401);
      const body = (await res.json()) as { error: { code: string; type: string; message: string } };
      expect(body.error.code).toBe('IP_UNAUTHENTICATED');
      expect(body.error.type).toBe('authentication_error');
    }
    await expect(openai('ipk_wrong').models.list()).rejects.toMatchObject({ status: 401 });
  });

  it('404 for an unknown model, and for another tenant’s model', async () => {
    const res = await post(
      '/v1/chat/completions',
      JSON.stringify({ model: 'no-such-model', messages: [{ role: 'user', content: 'hi' }] }),
      demoKey,
    );
    expect(res.status).toBe(404);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe(
      'IP_MODEL_NOT_FOUND',
    );

    // A second tenant cannot see the demo tenant's deployment.
    expect(
      (await api(up.info.url, ADMIN_KEY, 'POST', '/api/v1/tenants', { name: 'other' })).status,
    ).toBe(201);
    const k = await api<{ key: string }>(
      up.info.url,
      ADMIN_KEY,
      'POST',
      '/api/v1/tenants/other/keys',
      {},
    );
    await waitFor(
      async () => (await openai(k.body.key).models.list()).data.length === 0,
      'new key in the gateway',
    );
    await expect(
      openai(k.body.key).chat.completions.create({
        model: 'demo-llama-8b',
        messages: [{ role: 'user', content: 'hi' }],
      }),
    ).rejects.toMatchObject({ status: 404, code: 'IP_MODEL_NOT_FOUND' });
  });

  it('400 for a bad body', async () => {
    const bad = [
      ['{not json', 'IP_BAD_REQUEST'],
      ['[1,2]', 'IP_BAD_REQUEST'],
      ['{"messages":[{"role":"user","content":"x"}]}', 'IP_VALIDATION'],
      ['{"model":"demo-llama-8b"}', 'IP_VALIDATION'],
      [
        '{"model":"demo-llama-8b","messages":[{"role":"user","content":"x"}],"stream":"yes"}',
        'IP_VALIDATION',
      ],
    ] as const;
    for (const [body, code] of bad) {
      const res = await post('/v1/chat/completions', body, demoKey);
      expect(res.status, body).toBe(400);
      const json = (await res.json()) as { error: { code: string; type: string } };
      expect(json.error.code, body).toBe(code);
      expect(json.error.type).toBe('invalid_request_error');
    }
    // Engine-side validation errors pass through in OpenAI shape too.
    const n2 = await post(
      '/v1/chat/completions',
      JSON.stringify({ model: 'demo-llama-8b', messages: [{ role: 'user', content: 'x' }], n: 2 }),
      demoKey,
    );
    expect(n2.status).toBe(400);
    expect(((await n2.json()) as { error: { message: string } }).error.message).toBeTruthy();
  });

  it('503 with Retry-After when no replica is ready', async () => {
    const spec = {
      name: 'zero',
      tenant: 'demo',
      model: 'llama-3.1-8b',
      engine: { name: 'sim', args: {} },
      replicas: 0,
      resources: { gpus: 1, gpuType: 'H100-80GB' },
    };
    expect(
      (await api(up.info.url, ADMIN_KEY, 'PUT', '/api/v1/deployments/zero', spec)).status,
    ).toBe(201);
    const res = await waitFor(async () => {
      const r = await post(
        '/v1/chat/completions',
        JSON.stringify({ model: 'zero', messages: [{ role: 'user', content: 'x' }] }),
        demoKey,
      );
      return r.status === 503 ? r : undefined;
    }, 'a 503 for the deployment without replicas');
    expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe(
      'IP_NO_READY_REPLICA',
    );
  });
});

describe('control-plane API', () => {
  it('serves its OpenAPI document', async () => {
    const res = await fetch(`${up.info.url}/api/v1/openapi.json`);
    expect(res.status).toBe(200);
    const doc = (await res.json()) as {
      openapi: string;
      paths: Record<string, unknown>;
      components: { schemas: Record<string, unknown> };
    };
    expect(doc.openapi).toMatch(/^3\./);
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining([
        '/deployments',
        '/deployments/{name}',
        '/tenants',
        '/tenants/{name}/keys',
        '/nodes',
      ]),
    );
    expect(doc.components.schemas.DeploymentSpec).toBeTruthy();
  });

  it('rejects a bad spec with the path of each bad field', async () => {
    const valid = {
      name: 'bad',
      tenant: 'demo',
      model: 'llama-3.1-8b',
      engine: { name: 'sim', args: {} },
      replicas: 1,
      resources: { gpus: 1, gpuType: 'H100-80GB' },
    };
    const paths = async (spec: Record<string, unknown>): Promise<string[]> => {
      const res = await api<{ error: { code: string; details: Array<{ path: string }> } }>(
        up.info.url,
        ADMIN_KEY,
        'PUT',
        '/api/v1/deployments/bad',
        { ...valid, ...spec },
      );
      expect(res.status).toBe(400);
      expect(res.body.error.code).toBe('IP_VALIDATION');
      return res.body.error.details.map((d) => d.path);
    };
    const many = await paths({
      replicas: -2,
      resources: { gpus: 'one', gpuType: 'H100-80GB' },
      extra: 1,
    });
    expect(many).toEqual(expect.arrayContaining(['replicas', 'resources.gpus']));
    expect(many.some((p) => p === '(root)' || p === 'extra')).toBe(true);
    expect(await paths({ engine: { name: 'sim', args: { maxNumSeqs: -1 } } })).toContain(
      'engine.args.maxNumSeqs',
    );
    expect(await paths({ engine: { name: 'nope' } })).toContain('engine.name');
    // The simulator needs a profile for the model it is asked to serve.
    expect(await paths({ model: 'gpt-17' })).toEqual(['model']);
    // Nothing was stored.
    expect((await api(up.info.url, ADMIN_KEY, 'GET', '/api/v1/deployments/bad')).status).toBe(404);
  });

  it('refuses placement with a clear reason when no GPUs are free', async () => {
    const base = {
      tenant: 'demo',
      model: 'llama-3.1-70b',
      engine: { name: 'sim', args: {} },
      resources: { gpus: 4, gpuType: 'H100-80GB' },
    };
    // 4 GPUs on the node, 2 held by the demo: 4 more cannot fit.
    const res = await api<{ error: { code: string; message: string } }>(
      up.info.url,
      ADMIN_KEY,
      'PUT',
      '/api/v1/deployments/big',
      { name: 'big', replicas: 1, ...base },
    );
    expect(res.status).toBe(422);
    expect(res.body.error.code).toBe('IP_PLACEMENT_FAILED');
    expect(res.body.error.message).toMatch(
      /needs 4 free H100-80GB GPU\(s\).*most free on any node is 2/,
    );
    const wrongType = await api<{ error: { code: string; message: string } }>(
      up.info.url,
      ADMIN_KEY,
      'PUT',
      '/api/v1/deployments/big',
      { name: 'big', replicas: 1, ...base, resources: { gpus: 1, gpuType: 'B200-180GB' } },
    );
    expect(wrongType.status).toBe(422);
    expect(wrongType.body.error.message).toMatch(/no ready node has GPUs of type B200-180GB/);
    // Nothing was stored.
    expect((await api(up.info.url, ADMIN_KEY, 'GET', '/api/v1/deployments/big')).status).toBe(404);
  });

  it('needs a key, and tenant keys see only their own tenant', async () => {
    const none = await fetch(`${up.info.url}/api/v1/deployments`);
    expect(none.status).toBe(401);
    expect(((await none.json()) as { error: { code: string } }).error.code).toBe(
      'IP_UNAUTHENTICATED',
    );
    const asDemo = await api<{ items: Array<{ name: string }> }>(
      up.info.url,
      demoKey,
      'GET',
      '/api/v1/tenants',
    );
    expect(asDemo.body.items.map((t) => t.name)).toEqual(['demo']);
    const nodes = await api<{ error: { code: string } }>(
      up.info.url,
      demoKey,
      'GET',
      '/api/v1/nodes',
    );
    expect(nodes.status).toBe(403);
    expect(nodes.body.error.code).toBe('IP_FORBIDDEN');
  });

  it('describes replicas with node, GPUs, port and state', async () => {
    const d = await api<DeploymentDetail>(
      up.info.url,
      ADMIN_KEY,
      'GET',
      '/api/v1/deployments/demo-llama-8b',
    );
    expect(d.status).toBe(200);
    expect(d.body.summary.phase).toBe('Ready');
    expect(d.body.replicas).toHaveLength(2);
    const gpus = d.body.replicas.flatMap((r) => r.gpus).sort();
    expect(gpus).toEqual([0, 1]);
    for (const r of d.body.replicas) {
      expect(r.state).toBe('ready');
      expect(r.port).toBeGreaterThan(0);
      expect(r.node).toBeTruthy();
    }
    expect(d.body.events.map((e) => e.reason)).toEqual(
      expect.arrayContaining(['Created', 'Placed', 'Ready']),
    );

    // Each engine reports GPU telemetry for the GPUs it was placed on.
    for (const r of d.body.replicas) {
      const t = (await (await fetch(`http://127.0.0.1:${r.port}/telemetry/gpus`)).json()) as {
        gpus: Array<{ index: number; name: string; memory_used_mib: number }>;
      };
      expect(t.gpus.map((g) => g.index)).toEqual(r.gpus);
      expect(t.gpus[0]!.name).toMatch(/H100/);
      expect(t.gpus[0]!.memory_used_mib).toBeGreaterThan(15_000); // 8B bf16 weights alone
    }
  });
});

describe('operations endpoints', () => {
  it('health and readiness', async () => {
    expect((await fetch(`${up.info.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${up.info.url}/readyz`)).status).toBe(200);
  });

  it('exports gateway counters and latency histograms by tenant, model and code', async () => {
    await openai().completions.create({ model: 'demo-llama-8b', prompt: 'metrics', max_tokens: 2 });
    const text = await (await fetch(`${up.info.url}/metrics`)).text();
    expect(text).toMatch(
      /inferplane_gateway_requests_total\{tenant="demo",model="demo-llama-8b",code="200"\} \d+/,
    );
    expect(text).toMatch(
      /inferplane_gateway_request_duration_seconds_bucket\{[^}]*tenant="demo"[^}]*model="demo-llama-8b"[^}]*code="200"/,
    );
    expect(text).toMatch(/inferplane_gateway_requests_total\{[^}]*code="404"\}/);
    expect(text).toMatch(/inferplane_replicas\{deployment="demo-llama-8b",state="ready"\} 2/);
    expect(text).toMatch(/inferplane_gpu_memory_total_bytes\{[^}]*type="H100-80GB"/);
  });
});
