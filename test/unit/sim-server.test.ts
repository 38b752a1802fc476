import { afterEach, describe, it, expect } from 'vitest';
import { createSimServer, type SimServer, type SimServerOptions } from '../../src/sim/server.js';
import { parseSimArgs } from '../../src/sim/main.js';

const MODEL = 'demo-llama-8b';
const servers: SimServer[] = [];

async function start(
  opts: Partial<SimServerOptions> = {},
): Promise<{ server: SimServer; base: string }> {
  const server = createSimServer({ model: MODEL, decodeMsPerToken: 10, timeScale: 0.1, ...opts });
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
      else chunks.push(JSON.parse(data) as Chunk);
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

  it('answers a non-streaming chat completion, 16 tokens by default', async () => {
    const { base } = await start({ decodeMsPerToken: 1 });
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
    const { base } = await start({ decodeMsPerToken: 1 });
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
    const label = `model_name="${MODEL}"`;
    expect(text).toContain(`vllm:generation_tokens_total{${label}} 9\n`);
    expect(text).toContain(`vllm:prompt_tokens_total{${label}} 5\n`);
    expect(text).toContain(`vllm:request_success_total{${label},finished_reason="length"} 2\n`);
    expect(text).toContain(`vllm:num_requests_running{${label}} 0\n`);
    expect(text).toContain(`vllm:time_to_first_token_seconds_count{${label}} 2\n`);
    expect(text).toContain(`vllm:inter_token_latency_seconds_count{${label}} 7\n`);
    expect(text).toContain(`vllm:e2e_request_latency_seconds_count{${label}} 2\n`);
  });

  it('TTFT grows with prompt length', async () => {
    const { base } = await start({ prefillTokensPerSecond: 2000, timeScale: 0.2 });
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
    const long = await ttft('word '.repeat(2000)); // 2000 tokens → 1 s simulated, 200 ms real
    expect(long).toBeGreaterThan(short + 100);
    expect(long).toBeGreaterThan(short * 3);
  });

  it('queues beyond max concurrency', async () => {
    const { server, base } = await start({ maxConcurrency: 1, decodeMsPerToken: 100 });
    const a = post(base, '/v1/completions', { model: MODEL, prompt: 'a', max_tokens: 3 });
    const b = post(base, '/v1/completions', { model: MODEL, prompt: 'b', max_tokens: 3 });
    await waitFor(() => server.engine.waiting === 1);
    expect(server.engine.running).toBe(1);
    const metrics = await (await fetch(base + '/metrics')).text();
    expect(metrics).toContain(`vllm:num_requests_waiting{model_name="${MODEL}"} 1\n`);
    await Promise.all([(await a).json(), (await b).json()]);
    expect(server.engine.running + server.engine.waiting).toBe(0);
  });

  it('client abort mid-stream cancels the generation', async () => {
    const { server, base } = await start({ decodeMsPerToken: 100 });
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
      `vllm:request_success_total{model_name="${MODEL}",finished_reason="abort"} 1\n`,
    );
  });

  it('client abort of a non-streaming request cancels too', async () => {
    const { server, base } = await start({ decodeMsPerToken: 100 });
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
    const { server, base } = await start({ decodeMsPerToken: 1000 });
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

describe('sim main argument parsing', () => {
  it('parses flags', () => {
    const r = parseSimArgs([
      '--port',
      '8001',
      '--host',
      '0.0.0.0',
      '--model',
      'm',
      '--prefill-tps',
      '5000',
      '--decode-ms',
      '2.5',
      '--max-concurrency',
      '8',
      '--time-scale',
      '0.1',
      '--max-model-len',
      '2048',
    ]);
    expect(r).toEqual({
      kind: 'ok',
      config: {
        port: 8001,
        host: '0.0.0.0',
        options: {
          model: 'm',
          prefillTokensPerSecond: 5000,
          decodeMsPerToken: 2.5,
          maxConcurrency: 8,
          timeScale: 0.1,
          maxModelLen: 2048,
        },
      },
    });
    expect(parseSimArgs(['--help']).kind).toBe('help');
  });

  it('rejects bad flags', () => {
    for (const argv of [
      [],
      ['--model', 'm', '--port', 'abc'],
      ['--model', 'm', '--port', '70000'],
      ['--model', 'm', '--decode-ms', '-1'],
      ['--model', 'm', '--time-scale', '0'],
      ['--model', 'm', '--max-concurrency', '1.5'],
      ['--model', 'm', '--bogus'],
      ['--model', 'm', 'positional'],
    ]) {
      expect(parseSimArgs(argv).kind, argv.join(' ')).toBe('error');
    }
  });
});
