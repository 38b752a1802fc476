/**
 * `inferplane bench --self-test`: the tool's own ceiling. A built-in zero-latency OpenAI target
 * (node:http in a worker thread, so it does not share the benchmark's event loop) answers
 * non-streaming requests at once with usage, and streams N content chunks as fast as it can then
 * [DONE]. Three measurements: non-streaming requests/s at high concurrency, streamed chunks/s,
 * and the send timing error (actual − intended send time) at 1,000 requests/s Poisson.
 */
import { Worker } from 'node:worker_threads';
import { BenchClient } from './client.js';
import { runLoad } from './loadgen.js';
import { summarize } from './metrics.js';
import { syntheticWorkload } from './workloads.js';

/** The target, as plain JavaScript (worker `eval` code or in-process via Function). */
const TARGET_SOURCE = String.raw`
const http = await import('node:http');
const NONSTREAM = Buffer.from(JSON.stringify({id:'cmpl-selftest',object:'chat.completion',created:0,model:'selftest',choices:[{index:0,message:{role:'assistant',content:' ok'},logprobs:null,finish_reason:'stop'}],usage:{prompt_tokens:8,completion_tokens:1,total_tokens:9}}));
const CHUNK = 'data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"selftest","choices":[{"index":0,"delta":{"content":" tok"},"finish_reason":null}]}\n\n';
const cache = new Map();
const server = http.createServer((req, res) => {
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (c) => { body += c; });
  req.on('end', () => {
    if (!body.includes('"stream":true')) {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': NONSTREAM.length });
      res.end(NONSTREAM);
      return;
    }
    const m = /"max_tokens":(\d+)/.exec(body);
    const n = m ? Number(m[1]) : 16;
    let payload = cache.get(n);
    if (payload === undefined) {
      payload = Buffer.from(CHUNK.repeat(n) +
        'data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"selftest","choices":[],"usage":{"prompt_tokens":8,"completion_tokens":' + n + ',"total_tokens":' + (n + 8) + '}}\n\ndata: [DONE]\n\n');
      cache.set(n, payload);
    }
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.end(payload);
  });
});
server.keepAliveTimeout = 60000;
await new Promise((r) => server.listen(0, '127.0.0.1', r));
`;

export interface SelfTestTarget {
  url: string;
  close(): Promise<void>;
}

/** Starts the zero-latency target in a worker thread. */
export async function startSelfTestTarget(): Promise<SelfTestTarget> {
  const code =
    `const { parentPort } = require('node:worker_threads');\n(async () => {\n${TARGET_SOURCE}\n` +
    `parentPort.postMessage(server.address().port);\n` +
    `parentPort.on('message', () => { server.closeAllConnections(); server.close(() => process.exit(0)); });\n})();`;
  const worker = new Worker(code, { eval: true });
  const port = await new Promise<number>((resolve, reject) => {
    worker.once('message', (p: number) => resolve(p));
    worker.once('error', reject);
  });
  return {
    url: `http://127.0.0.1:${port}`,
    close: async () => {
      worker.postMessage('close');
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          void worker.terminate().then(() => resolve());
        }, 2000);
        worker.once('exit', () => {
          clearTimeout(t);
          resolve();
        });
      });
    },
  };
}

export interface SelfTestOptions {
  /** Non-streaming: requests and concurrency. */
  requests?: number;
  concurrency?: number;
  /** Streaming: requests, chunks per request, concurrency. */
  streamRequests?: number;
  chunksPerRequest?: number;
  streamConcurrency?: number;
  /** Poisson timing test: rate and duration. */
  poissonRate?: number;
  poissonSeconds?: number;
  log?: (line: string) => void;
}

export interface SelfTestResult {
  nonStreamingRequestsPerSec: number;
  nonStreamingRequests: number;
  streamedChunksPerSec: number;
  streamedChunks: number;
  poissonRate: number;
  poissonRequests: number;
  sendLagP50Ms: number;
  sendLagP99Ms: number;
  sendLagMaxMs: number;
  errors: number;
}

export async function runSelfTest(o: SelfTestOptions = {}): Promise<SelfTestResult> {
  const log = o.log ?? (() => undefined);
  const target = await startSelfTestTarget();
  const base = {
    baseUrl: target.url,
    endpoint: 'chat' as const,
    model: 'selftest',
    ignoreEos: false,
  };
  const wl = syntheticWorkload({ isl: 8, osl: o.chunksPerRequest ?? 1000, seed: 1 });
  const clients: BenchClient[] = [];
  try {
    // 1. Non-streaming requests/s at high concurrency (a short warmup opens the connections).
    const c1 = new BenchClient({ ...base, stream: false });
    clients.push(c1);
    const conc = o.concurrency ?? 128;
    log(`self-test: non-streaming, concurrency ${conc}`);
    const r1 = await runLoad(c1, wl, {
      mode: 'closed',
      endpoint: 'chat',
      concurrency: conc,
      requestCount: o.requests ?? 30_000,
      warmupRequests: conc * 4,
      seed: 1,
    });
    const s1 = summarize(r1);

    // 2. Streamed chunks/s.
    const c2 = new BenchClient({ ...base, stream: true });
    clients.push(c2);
    log('self-test: streaming');
    const r2 = await runLoad(c2, wl, {
      mode: 'closed',
      endpoint: 'chat',
      concurrency: o.streamConcurrency ?? 16,
      requestCount: o.streamRequests ?? 300,
      warmupRequests: 16,
      seed: 2,
    });
    const s2 = summarize(r2);
    let chunks = 0;
    for (const r of r2) if (r.phase === 'profiling') chunks += r.chunkNs.length;

    // 3. Send timing error at a Poisson rate.
    const rate = o.poissonRate ?? 1000;
    log(`self-test: Poisson ${rate}/s`);
    const r3 = await runLoad(c1, wl, {
      mode: 'open',
      endpoint: 'chat',
      requestRate: rate,
      arrival: 'poisson',
      durationSec: o.poissonSeconds ?? 5,
      warmupRequests: 64,
      seed: 3,
    });
    const s3 = summarize(r3);
    return {
      nonStreamingRequestsPerSec: s1.requestThroughput,
      nonStreamingRequests: s1.requestCount,
      streamedChunksPerSec: s2.benchmarkDurationSec > 0 ? chunks / s2.benchmarkDurationSec : 0,
      streamedChunks: chunks,
      poissonRate: rate,
      poissonRequests: s3.requestCount + s3.errorCount,
      sendLagP50Ms: s3.sendLag?.p50 ?? Number.NaN,
      sendLagP99Ms: s3.sendLag?.p99 ?? Number.NaN,
      sendLagMaxMs: s3.sendLag?.max ?? Number.NaN,
      errors: s1.errorCount + s2.errorCount + s3.errorCount,
    };
  } finally {
    for (const c of clients) await c.close();
    await target.close();
  }
}
