import { afterEach, describe, it, expect } from 'vitest';
import { createSimServer, type SimServer, type SimServerOptions } from '../../src/sim/server.js';
import { parseSimArgs } from '../../src/sim/main.js';

/** The served model name (distinct from the simulated profile, llama-3.1-8b). */
const MODEL = 'demo-llama-8b';
const servers: SimServer[] = [];

async function start(
  opts: Partial<SimServerOptions> = {},
): Promise<{ server: SimServer; base: string }> {
  const server = createSimServer({
    model: 'llama-3.1-8b',
    servedModelName: MODEL,
    timeScale: 0.05,
    ...opts,
  });
  servers.push(server);
  const port = await server.listen(0, '127.0.0.1');
  return { server, base: `http://127.0.0.1:${port}` };
}

afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

function post(base: string, path: string, body: unknown, signal?: AbortSignal): Promise<Response> {
  return fetch(base + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    ...(signal ? { signal } : {}),
  });
}

type Chunk = Record<string, unknown> & {
  choices: {
    delta?: { role?: string; content?: string };
    text?: string;
    finish_reason: string | null;
  }[];
  usage?: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
};

/** Reads an SSE body event by event; returns parsed chunks and whether [DONE] was seen last. */
async function readSse(res: Response): Promise<{ chunks: Chunk[]; done: boolean }> {
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  const decoder = new TextDecoder();
  let buf = '';
  const chunks: Chunk[] = [];
  let done = false;
  for (;;) {
    const r = await reader.read();
    if (r.done) break;
    buf += decoder.decode(r.value, { stream: true });
    let i: number;
    while ((i = buf.indexOf('\n\n')) !== -1) {
      const event = buf.slice(0, i);
      buf = buf.slice(i + 2);
      expect(event.startsWith('data: ')).toBe(true);
      expect(done).toBe(false); // nothing after [DONE]
      const data = event.slice('data: '.length);
      if (data === '[DONE]') done = true;
      else {
        const c = JSON.parse(data) as Chunk;
        // Compact JSON, keys in OpenAI's order (token chunks are built from pre-rendered parts).
        expect(JSON.stringify(c)).toBe(data);
        expect(Object.keys(c).slice(0, 5)).toEqual(['id', 'object', 'created', 'model', 'choices']);
        if (c.choices[0]) {
          expect(Object.keys(c.choices[0])).toEqual([
            'index',
            'delta' in c.choices[0] ? 'delta' : 'text',
            'logprobs',
            'finish_reason',
          ]);
        }
        chunks.push(c);
      }
    }
  }
  expect(buf).toBe('');
  return { chunks, done };
}

async function waitFor(cond: () => boolean, timeoutMs = 1000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error('timed out waiting for condition');
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('sim server', () => {
  it('serves /health and /v1/models, 404 on unknown paths', async () => {
    const { base } = await start({ maxModelLen: 4096 });
    const h = await fetch(base + '/health');
    expect(h.status).toBe(200);
    expect(await h.json()).toEqual({ status: 'ok' });
    const m = await fetch(base + '/v1/models');
    const models = (await m.json()) as { object: string; data: Record<string, unknown>[] };
    expect(models.object).toBe('list');
    expect(models.data).toHaveLength(1);
    expect(models.data[0]).toMatchObject({
      id: MODEL,
      object: 'model',
      owned_by: 'inferplane-sim',
      max_model_len: 4096,
    });
    expect(typeof models.data[0]?.created).toBe('number');
    const nf = await fetch(base + '/nope');
    expect(nf.status).toBe(404);
    expect(((await nf.json()) as { error: { message: string } }).error.message).toMatch(/nope/);
    const wrongMethod = await fetch(base + '/v1/completions');
    expect(wrongMethod.status).toBe(405);
    await wrongMethod.arrayBuffer();
  });

  it('answers a non-streaming completion with usage', async () => {
    const { base } = await start();
    const res = await post(base, '/v1/completions', {
      model: MODEL,
      prompt: 'Once upon a time',
      max_tokens: 5,
      seed: 1,
      temperature: 0.7,
      user: 'u1',
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as Record<string, unknown> & {
      choices: { text: string; finish_reason: string; index: number; logprobs: null }[];
      usage: Record<string, unknown>;
    };
    expect(body.id).toMatch(/^cmpl-[0-9a-f]+$/);
    expect(body.object).toBe('text_completion');
    expect(body.model).toBe(MODEL);
    expect(typeof body.created).toBe('number');
    expect(body.choices).toHaveLength(1);
    expect(body.choices[0]).toMatchObject({ index: 0, finish_reason: 'length', logprobs: null });
    expect(body.choices[0]?.text.split(' ').length).toBe(6); // 5 words, each with a leading space
    expect(body.usage).toEqual({
      prompt_tokens: 4,
      completion_tokens: 5,
      total_tokens: 9,
      prompt_tokens_details: { cached_tokens: 0 },
    });
    // Same seed, same text.
    const again = (await (
      await post(base, '/v1/completions', { model: MODEL, prompt: 'x', max_tokens: 5, seed: 1 })
    ).json()) as typeof body;
    expect(again.choices[0]?.text).toBe(body.choices[0]?.text);
  });

  it('serves /v1/embeddings: deterministic normalised vectors, usage, base64, bad input', async () => {
    const { base } = await start();
    const res = await post(base, '/v1/embeddings', {
      model: MODEL,
      input: ['the quick brown fox', 'the quick brown fox jumps', 'lorem ipsum dolor'],
      dimensions: 64,
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as {
      object: string;
      model: string;
      data: { object: string; index: number; embedding: number[] }[];
      usage: { prompt_tokens: number; total_tokens: number };
    };
    expect(body.object).toBe('list');
    expect(body.model).toBe(MODEL);
    expect(body.data.map((d) => d.index)).toEqual([0, 1, 2]);
    const [a, b, c] = body.data.map((d) => d.embedding);
    expect(a).toHaveLength(64);
    const dot = (x: number[], y: number[]) => x.reduce((s, v, i) => s + v * y[i]!, 0);
    expect(dot(a!, a!)).toBeCloseTo(1, 5);
    // Texts sharing tokens are closer than unrelated ones.
    expect(dot(a!, b!)).toBeGreaterThan(dot(a!, c!));
    expect(body.usage.prompt_tokens).toBeGreaterThan(0);
    expect(body.usage.total_tokens).toBe(body.usage.prompt_tokens);
    // Same input, same vector; base64 carries the float32 bytes.
    const again = (await (
      await post(base, '/v1/embeddings', {
        model: MODEL,
        input: 'the quick brown fox',
        dimensions: 64,
        encoding_format: 'base64',
      })
    ).json()) as { data: { embedding: string }[] };
    const buf = Buffer.from(again.data[0]!.embedding, 'base64');
    const floats = [...new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4)];
    expect(floats).toEqual(a);
    for (const bad of [
      { model: MODEL },
      { model: MODEL, input: [] },
      { model: MODEL, input: [1, 'x'] },
      { model: MODEL, input: 'x', dimensions: 0 },
      { model: MODEL, input: 'x', encoding_format: 'int8' },
    ]) {
      const r = await post(base, '/v1/embeddings', bad);
      expect(r.status).toBe(400);
      expect(((await r.json()) as { error: { type: string } }).error.type).toBe(
        'invalid_request_error',
      );
    }
    const wrong = await post(base, '/v1/embeddings', { model: 'nope', input: 'x' });
    expect(wrong.status).toBe(404);
  });

  it('answers a non-streaming chat completion, 16 tokens by default', async () => {
    const { base } = await start();
    const res = await post(base, '/v1/chat/completions', {
      model: MODEL,
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: [{ type: 'text', text: 'Hello there' }] },
      ],
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as {
      id: string;
      object: string;
      choices: { message: { role: string; content: string }; finish_reason: string }[];
      usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
    };
    expect(body.id).toMatch(/^chatcmpl-[0-9a-f]+$/);
    expect(body.object).toBe('chat.completion');
    expect(body.choices[0]?.message.role).toBe('assistant');
    expect(body.choices[0]?.message.content.length).toBeGreaterThan(0);
    expect(body.choices[0]?.finish_reason).toBe('length');
    expect(body.usage.completion_tokens).toBe(16);
    expect(body.usage.prompt_tokens).toBeGreaterThan(5);
    expect(body.usage.total_tokens).toBe(body.usage.prompt_tokens + 16);

    const mct = (await (
      await post(base, '/v1/chat/completions', {
        model: MODEL,
        messages: [{ role: 'user', content: 'hi' }],
        max_tokens: 9,
        max_completion_tokens: 3,
      })
    ).json()) as typeof body;
    expect(mct.usage.completion_tokens).toBe(3);
  });

  it('streams chat chunks ending in [DONE], with usage when asked', async () => {
    const { base } = await start();
    const res = await post(base, '/v1/chat/completions', {
      model: MODEL,
      messages: [{ role: 'user', content: 'Stream please' }],
      max_tokens: 6,
      stream: true,
      stream_options: { include_usage: true },
      seed: 5,
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/event-stream');
    expect(res.headers.get('cache-control')).toBe('no-cache');
    const { chunks, done } = await readSse(res);
    expect(done).toBe(true);
    // role chunk + 6 tokens + finish chunk + usage chunk
    expect(chunks).toHaveLength(9);
    for (const c of chunks) {
      expect(c.object).toBe('chat.completion.chunk');
      expect(c.id).toBe(chunks[0]?.id);
      expect(c.model).toBe(MODEL);
    }
    expect(chunks[0]?.choices[0]?.delta).toEqual({ role: 'assistant', content: '' });
    const content = chunks
      .slice(1, 7)
      .map((c) => c.choices[0]?.delta?.content)
      .join('');
    expect(content.split(' ')).toHaveLength(7);
    expect(chunks[7]?.choices[0]?.finish_reason).toBe('length');
    expect(chunks[8]?.choices).toEqual([]);
    expect(chunks[8]?.usage).toMatchObject({ completion_tokens: 6 });
    expect(chunks[8]?.usage?.total_tokens).toBe((chunks[8]?.usage?.prompt_tokens ?? 0) + 6);

    // Same request, not streamed, gives the same text.
    const nonStream = (await (
      await post(base, '/v1/chat/completions', {
        model: MODEL,
        messages: [{ role: 'user', content: 'Stream please' }],
        max_tokens: 6,
        seed: 5,
      })
    ).json()) as { choices: { message: { content: string } }[] };
    expect(nonStream.choices[0]?.message.content).toBe(content);
  });

  it('streams completion chunks without usage by default', async () => {
    const { base } = await start();
    const res = await post(base, '/v1/completions', {
      model: MODEL,
      prompt: ['Hello', ' world'],
      max_tokens: 3,
      stream: true,
    });
    const { chunks, done } = await readSse(res);
    expect(done).toBe(true);
    expect(chunks).toHaveLength(4);
    expect(chunks.every((c) => c.object === 'text_completion')).toBe(true);
    expect(chunks.every((c) => c.usage === undefined)).toBe(true);
    expect(chunks[0]?.choices[0]?.text).toMatch(/^ [a-z]+$/);
    expect(chunks[3]?.choices[0]).toMatchObject({ text: '', finish_reason: 'length' });
  });

  it('stops at stop strings without emitting them', async () => {
    const { base } = await start();
    const req = { model: MODEL, prompt: 'Tell me', max_tokens: 10, seed: 42 };
    const full = (
      (await (await post(base, '/v1/completions', req)).json()) as {
        choices: { text: string }[];
      }
    ).choices[0]!.text;
    const words = full.split(' ').slice(1);
    const stopWord = ' ' + words[3];
    const expected = full.slice(0, full.indexOf(stopWord));

    const res = await post(base, '/v1/completions', { ...req, stop: [stopWord, 'zzz-never'] });
    const body = (await res.json()) as {
      choices: { text: string; finish_reason: string }[];
      usage: { completion_tokens: number };
    };
    expect(body.choices[0]?.finish_reason).toBe('stop');
    expect(body.choices[0]?.text).toBe(expected);
    expect(body.usage.completion_tokens).toBeLessThanOrEqual(4);

    // Streamed: concatenated deltas equal the same text, stop string never emitted.
    const s = await post(base, '/v1/completions', { ...req, stop: stopWord, stream: true });
    const { chunks, done } = await readSse(s);
    expect(done).toBe(true);
    const text = chunks.map((c) => c.choices[0]?.text ?? '').join('');
    expect(text).toBe(expected);
    expect(chunks.at(-1)?.choices[0]?.finish_reason).toBe('stop');
  });

  it('rejects bad requests with OpenAI-shaped errors', async () => {
    const { base } = await start({ maxModelLen: 64 });
    const cases: [string, unknown, number, string | null, string | null][] = [
      ['/v1/completions', { model: MODEL, prompt: 'hi', n: 2 }, 400, 'n', null],
      ['/v1/completions', { model: 'other', prompt: 'hi' }, 404, 'model', 'model_not_found'],
      ['/v1/completions', { model: MODEL, prompt: 'hi', max_tokens: 0 }, 400, 'max_tokens', null],
      ['/v1/completions', { model: MODEL, prompt: 'hi', max_tokens: 'x' }, 400, 'max_tokens', null],
      ['/v1/completions', { model: MODEL }, 400, 'prompt', null],
      ['/v1/completions', { model: MODEL, prompt: 'hi', stop: [1] }, 400, 'stop', null],
      [
        '/v1/completions',
        { model: MODEL, prompt: 'hi', stream_options: {} },
        400,
        'stream_options',
        null,
      ],
      ['/v1/completions', { model: MODEL, prompt: 'hi '.repeat(100) }, 400, 'prompt', null],
      ['/v1/completions', { model: MODEL, prompt: 'hi', max_tokens: 64 }, 400, 'max_tokens', null],
      ['/v1/chat/completions', { model: MODEL, messages: [] }, 400, 'messages', null],
      [
        '/v1/chat/completions',
        { model: MODEL, messages: [{ content: 'x' }] },
        400,
        'messages',
        null,
      ],
      [
        '/v1/chat/completions',
        { model: MODEL, messages: [{ role: 'user', content: 'x' }], n: 3 },
        400,
        'n',
        null,
      ],
      ['/v1/completions', [1, 2], 400, null, null],
    ];
    for (const [path, body, status, param, code] of cases) {
      const res = await post(base, path, body);
      expect(res.status, JSON.stringify(body)).toBe(status);
      const err = (await res.json()) as { error: Record<string, unknown> };
      expect(err.error, JSON.stringify(body)).toMatchObject({
        type: 'invalid_request_error',
        param,
        code,
      });
      expect(typeof err.error.message).toBe('string');
    }
    const invalidJson = await fetch(base + '/v1/completions', { method: 'POST', body: '{oops' });
    expect(invalidJson.status).toBe(400);
    await invalidJson.arrayBuffer();
  });

  it('limits request bodies to 16 MiB', async () => {
    const { base } = await start();
    const res = await fetch(base + '/v1/completions', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: 'x'.repeat(16 * 1024 * 1024 + 1),
    });
    expect(res.status).toBe(413);
    await res.arrayBuffer();
  });

  it('exposes vLLM metrics that count tokens', async () => {
    const { base } = await start();
    await (
      await post(base, '/v1/completions', { model: MODEL, prompt: 'a b c', max_tokens: 7 })
    ).json();
    await (
      await post(base, '/v1/completions', { model: MODEL, prompt: 'd e', max_tokens: 2 })
    ).json();
    const res = await fetch(base + '/metrics');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
    const text = await res.text();
    for (const name of [
      'vllm:num_requests_running',
      'vllm:num_requests_waiting',
      'vllm:kv_cache_usage_perc',
      'vllm:prompt_tokens_total',
      'vllm:generation_tokens_total',
      'vllm:request_success_total',
      'vllm:time_to_first_token_seconds',
      'vllm:inter_token_latency_seconds',
      'vllm:e2e_request_latency_seconds',
    ]) {
      expect(text).toContain(`# TYPE ${name} `);
    }
    const label = `model_name="${MODEL}",engine="0"`;
    expect(text).toContain(`vllm:generation_tokens_total{${label}} 9\n`);
    expect(text).toContain(`vllm:prompt_tokens_total{${label}} 5\n`);
    expect(text).toContain(`vllm:request_success_total{${label},finished_reason="length"} 2\n`);
    expect(text).toContain(`vllm:num_requests_running{${label}} 0\n`);
    expect(text).toContain(`vllm:time_to_first_token_seconds_count{${label}} 2\n`);
    expect(text).toContain(`vllm:inter_token_latency_seconds_count{${label}} 7\n`);
    expect(text).toContain(`vllm:e2e_request_latency_seconds_count{${label}} 2\n`);
  });

  it('TTFT grows with prompt length', async () => {
    // llama-3.1-8b on one H100: ~8k prompt tokens take ~0.25 s of prefill, a few tokens ~7 ms.
    const { base } = await start({ timeScale: 1 });
    const ttft = async (prompt: string): Promise<number> => {
      const t0 = performance.now();
      const res = await post(base, '/v1/completions', {
        model: MODEL,
        prompt,
        max_tokens: 2,
        stream: true,
      });
      const reader = (res.body as ReadableStream<Uint8Array>).getReader();
      const first = await reader.read();
      const elapsed = performance.now() - t0;
      expect(new TextDecoder().decode(first.value)).toContain('data: ');
      await reader.cancel();
      return elapsed;
    };
    const short = await ttft('hi');
    const long = await ttft('word '.repeat(8000));
    expect(long).toBeGreaterThan(short + 80);
    expect(long).toBeGreaterThan(short * 3);
  });

  it('queues beyond max-num-seqs', async () => {
    const { server, base } = await start({ maxNumSeqs: 1, timeScale: 1 });
    const a = post(base, '/v1/completions', { model: MODEL, prompt: 'a', max_tokens: 50 });
    const b = post(base, '/v1/completions', { model: MODEL, prompt: 'b', max_tokens: 50 });
    await waitFor(() => server.engine.running === 1 && server.engine.waiting === 1);
    const metrics = await (await fetch(base + '/metrics')).text();
    expect(metrics).toContain(`vllm:num_requests_waiting{model_name="${MODEL}",engine="0"} 1\n`);
    await Promise.all([(await a).json(), (await b).json()]);
    expect(server.engine.running + server.engine.waiting).toBe(0);
  });

  it('client abort mid-stream cancels the generation', async () => {
    const { server, base } = await start({ timeScale: 1 });
    const ctl = new AbortController();
    const res = await post(
      base,
      '/v1/chat/completions',
      {
        model: MODEL,
        messages: [{ role: 'user', content: 'long' }],
        max_tokens: 1000,
        stream: true,
      },
      ctl.signal,
    );
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    await reader.read();
    expect(server.engine.running).toBe(1);
    ctl.abort();
    await waitFor(() => server.engine.running === 0, 500);
    const text = await (await fetch(base + '/metrics')).text();
    expect(text).toContain(
      `vllm:request_success_total{model_name="${MODEL}",engine="0",finished_reason="abort"} 1\n`,
    );
  });

  it('client abort of a non-streaming request cancels too', async () => {
    const { server, base } = await start({ timeScale: 1 });
    const ctl = new AbortController();
    const p = post(
      base,
      '/v1/completions',
      { model: MODEL, prompt: 'x', max_tokens: 1000 },
      ctl.signal,
    );
    await waitFor(() => server.engine.running === 1);
    ctl.abort();
    await expect(p).rejects.toThrow();
    await waitFor(() => server.engine.running === 0, 500);
  });

  it('close() aborts in-flight generations and resolves', async () => {
    const { server, base } = await start({ timeScale: 1 });
    const res = await post(base, '/v1/completions', {
      model: MODEL,
      prompt: 'x',
      max_tokens: 1000,
      stream: true,
    });
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    await waitFor(() => server.engine.running === 1);
    await server.close();
    expect(server.engine.running).toBe(0);
    await expect(
      (async () => {
        for (;;) if ((await reader.read()).done) return;
      })(),
    ).rejects.toThrow();
    await expect(fetch(base + '/health')).rejects.toThrow();
  });
});

describe('sim server: prefix cache and KV events', () => {
  const longPrompt = Array.from({ length: 120 }, (_, i) => `w${i}`).join(' ');

  it('serves the served model name, not the profile name', async () => {
    const { server, base } = await start();
    expect(server.servedModelName).toBe(MODEL);
    expect(server.profileName).toBe('llama-3.1-8b');
    const models = (await (await fetch(base + '/v1/models')).json()) as {
      data: { id: string; root: string }[];
    };
    expect(models.data.map((m) => m.id)).toEqual([MODEL]);
    expect(models.data[0]?.root).toBe('llama-3.1-8b');
    const res = await post(base, '/v1/completions', { model: 'llama-3.1-8b', prompt: 'hi' });
    expect(res.status).toBe(404);
    await res.arrayBuffer();
    // Without a served model name, the profile name is served.
    const plain = await start({ servedModelName: undefined });
    expect(plain.server.servedModelName).toBe('llama-3.1-8b');
  });

  it('reports cached_tokens for a repeated prompt', async () => {
    const { base } = await start();
    type Usage = {
      usage: { prompt_tokens: number; prompt_tokens_details: { cached_tokens: number } };
    };
    const req = { model: MODEL, prompt: longPrompt, max_tokens: 2, ignore_eos: true };
    const first = (await (await post(base, '/v1/completions', req)).json()) as Usage;
    expect(first.usage.prompt_tokens).toBe(120);
    expect(first.usage.prompt_tokens_details.cached_tokens).toBe(0);
    const second = (await (await post(base, '/v1/completions', req)).json()) as Usage;
    expect(second.usage.prompt_tokens_details.cached_tokens).toBeGreaterThanOrEqual(96);
    expect(second.usage.prompt_tokens_details.cached_tokens).toBeLessThan(120);

    // Streaming usage chunk too.
    const s = await post(base, '/v1/completions', {
      ...req,
      stream: true,
      stream_options: { include_usage: true },
    });
    const { chunks } = await readSse(s);
    const usage = chunks.at(-1)?.usage as unknown as Usage['usage'];
    expect(usage.prompt_tokens_details.cached_tokens).toBeGreaterThanOrEqual(96);

    // Without prefix caching nothing is ever cached.
    const off = await start({ enablePrefixCaching: false });
    await (await post(off.base, '/v1/completions', req)).json();
    const again = (await (await post(off.base, '/v1/completions', req)).json()) as Usage;
    expect(again.usage.prompt_tokens_details.cached_tokens).toBe(0);
  });

  it('streams KV events (BlockStored) on /kv/events to several subscribers', async () => {
    const { server, base } = await start({ replicaIndex: 3 });
    const subscribe = async () => {
      const ctl = new AbortController();
      const res = await fetch(base + '/kv/events', { signal: ctl.signal });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe('text/event-stream');
      const reader = (res.body as ReadableStream<Uint8Array>).getReader();
      const decoder = new TextDecoder();
      let buf = '';
      const batches: { ts: number; replica: number; events: Record<string, unknown>[] }[] = [];
      const comments: string[] = [];
      const pump = (async () => {
        try {
          for (;;) {
            const r = await reader.read();
            if (r.done) return;
            buf += decoder.decode(r.value, { stream: true });
            let i: number;
            while ((i = buf.indexOf('\n\n')) !== -1) {
              const ev = buf.slice(0, i);
              buf = buf.slice(i + 2);
              if (ev.startsWith(':')) comments.push(ev);
              else if (ev.startsWith('data: ')) batches.push(JSON.parse(ev.slice(6)) as never);
            }
          }
        } catch {
          // aborted
        }
      })();
      return { ctl, batches, comments, pump };
    };
    const a = await subscribe();
    const b = await subscribe();
    await waitFor(() => a.comments.length > 0 && b.comments.length > 0);

    await (
      await post(base, '/v1/completions', { model: MODEL, prompt: longPrompt, max_tokens: 2 })
    ).json();
    for (const sub of [a, b]) {
      await waitFor(() => sub.batches.some((x) => x.events.some((e) => e.type === 'BlockStored')));
      const stored = sub.batches
        .flatMap((x) => x.events)
        .filter((e) => e.type === 'BlockStored') as {
        blockHashes: string[];
        parentBlockHash: string | null;
        tokenIds: number[];
        blockSize: number;
      }[];
      expect(sub.batches.every((x) => x.replica === 3 && typeof x.ts === 'number')).toBe(true);
      const hashes = stored.flatMap((e) => e.blockHashes);
      expect(hashes.length).toBeGreaterThanOrEqual(7); // 120 prompt tokens, blocks of 16
      expect(stored[0]?.parentBlockHash).toBeNull();
      expect(stored[0]?.tokenIds.length).toBe((stored[0]?.blockHashes.length ?? 0) * 16);
      expect(stored[0]?.blockSize).toBe(16);
    }
    a.ctl.abort();
    b.ctl.abort();
    await Promise.all([a.pump, b.pump]);
    // Unsubscribed on close: the server keeps working and nobody leaks.
    await waitFor(() => server.engine.running === 0);
  });

  it('sends a keepalive comment on /kv/events', async () => {
    const { base } = await start({ kvKeepaliveMs: 50 });
    const ctl = new AbortController();
    const res = await fetch(base + '/kv/events', { signal: ctl.signal });
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    let text = '';
    const decoder = new TextDecoder();
    while (!text.includes(': keepalive\n\n')) {
      const r = await reader.read();
      if (r.done) break;
      text += decoder.decode(r.value, { stream: true });
    }
    expect(text).toContain(': keepalive\n\n');
    ctl.abort();
  });
});

describe('sim main argument parsing', () => {
  it('parses flags', () => {
    const r = parseSimArgs([
      '--port',
      '8001',
      '--host',
      '0.0.0.0',
      '--model',
      'llama-3.1-70b',
      '--served-model-name',
      'team-a/llama',
      '--gpu',
      'H200-141GB',
      '--tp',
      '4',
      '--dtype',
      'fp8',
      '--calibration',
      'default',
      '--max-num-seqs',
      '64',
      '--max-num-batched-tokens',
      '4096',
      '--gpu-memory-utilization',
      '0.85',
      '--num-gpu-blocks-override',
      '1000',
      '--no-enable-prefix-caching',
      '--time-scale',
      '0.1',
      '--max-model-len',
      '2048',
      '--replica-index',
      '2',
      '--seed',
      '7',
    ]);
    expect(r).toEqual({
      kind: 'ok',
      config: {
        port: 8001,
        host: '0.0.0.0',
        options: {
          model: 'llama-3.1-70b',
          servedModelName: 'team-a/llama',
          gpu: 'H200-141GB',
          tp: 4,
          dtype: 'fp8',
          calibration: 'default',
          maxNumSeqs: 64,
          maxNumBatchedTokens: 4096,
          gpuMemoryUtilization: 0.85,
          numGpuBlocksOverride: 1000,
          enablePrefixCaching: false,
          timeScale: 0.1,
          maxModelLen: 2048,
          replicaIndex: 2,
          seed: 7,
        },
      },
    });
    expect(parseSimArgs([])).toEqual({
      kind: 'ok',
      config: { port: 8000, host: '127.0.0.1', options: {} },
    });
    expect(parseSimArgs(['--help']).kind).toBe('help');
  });

  it('parses fault flags', () => {
    const r = parseSimArgs([
      '--fault-crash-after',
      '3',
      '--fault-hang',
      '--fault-slow',
      '2.5',
      '--fault-error-rate',
      '0.25',
      '--fault-disconnect-after',
      '10',
      '--fault-disconnect-rate',
      '0.5',
      '--fault-xid',
      '79',
      '--fault-ecc-sbe',
      '4',
      '--fault-ecc-dbe',
      '1',
      '--fault-thermal',
    ]);
    expect(r.kind === 'ok' && r.config.options.faults).toEqual({
      crash: { afterRequests: 3 },
      hang: true,
      slowFactor: 2.5,
      errorRate: 0.25,
      disconnect: { afterTokens: 10, rate: 0.5 },
      gpu: { xid: 79, eccSbe: 4, eccDbe: 1, thermal: true },
    });
  });

  it('rejects bad flags', () => {
    for (const argv of [
      ['--port', 'abc'],
      ['--port', '70000'],
      ['--time-scale', '0'],
      ['--tp', '1.5'],
      ['--dtype', 'int4'],
      ['--gpu-memory-utilization', '1.5'],
      ['--max-num-seqs', '0'],
      ['--model', ''],
      ['--fault-error-rate', '2'],
      ['--fault-slow', '-1'],
      ['--fault-disconnect-rate', '0.5'],
      ['--prefill-tps', '5000'],
      ['--decode-ms', '2'],
      ['--max-concurrency', '8'],
      ['--bogus'],
      ['positional'],
    ]) {
      expect(parseSimArgs(argv).kind, argv.join(' ')).toBe('error');
    }
  });
});
