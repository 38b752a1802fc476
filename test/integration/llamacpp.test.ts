// A real engine end to end: llama.cpp's llama-server (built into the cache, or reused from it)
// serving a random-weight GGUF model the project writes itself, deployed through the platform,
// streamed through the gateway, scraped for metrics, killed and restarted. .ci/run builds
// llama-server before the tests; without a prebuilt one this test builds it (tens of minutes on
// 2 cores). It skips only when the build tools (cmake, a C/C++ compiler, make, git) are missing.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { synthModel } from '../../src/engines/gguf.js';
import { findLlamaServer, missingBuildTools } from '../../src/engines/install.js';
import { parseLlamaCppMetrics } from '../../src/engines/llamacpp.js';
import {
  ADMIN_KEY,
  BIN,
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

const missing = missingBuildTools();
const BUILD_TIMEOUT_MS = 60 * 60_000;
const DEP = 'tiny-llama';

let up: UpProcess | undefined;
let state: ReturnType<typeof tempStateDir>;
let tenantKey = '';

/** `inferplane engine install llamacpp --json` (answered from the cache when built already). */
function install(): Promise<{ path: string; version: string; cached: boolean; seconds: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, 'engine', 'install', 'llamacpp', '--json'], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
      process.stderr.write(d); // build progress, visible in the test output
    });
    child.once('exit', (code) => {
      if (code !== 0) reject(new Error(`engine install failed (${code}):\n${err.slice(-4000)}`));
      else resolve(JSON.parse(out.trim().split('\n').pop()!) as never);
    });
  });
}

async function describeDep(): Promise<DeploymentDetail> {
  const r = await cli(['describe', 'deployment', DEP, '--json'], {
    url: up!.info.url,
    key: ADMIN_KEY,
  });
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as DeploymentDetail;
}

/** Streams a chat completion through the gateway; returns the content and the raw events. */
async function streamChat(): Promise<{
  content: string;
  events: string[];
  replica: string | null;
}> {
  const res = await fetch(`${up!.info.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${tenantKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      model: DEP,
      messages: [{ role: 'user', content: 'Hello there, tell me a story.' }],
      max_tokens: 12,
      temperature: 1,
      stream: true,
    }),
  });
  const body = await res.text();
  expect(res.status, body).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/text\/event-stream/);
  const events = body
    .split('\n')
    .filter((l) => l.startsWith('data: '))
    .map((l) => l.slice(6));
  let content = '';
  for (const e of events) {
    if (e === '[DONE]') continue;
    const chunk = JSON.parse(e) as {
      model: string;
      choices: Array<{ delta?: { content?: string | null } }>;
    };
    expect(chunk.model).toBe(DEP);
    content += chunk.choices[0]?.delta?.content ?? '';
  }
  return { content, events, replica: res.headers.get('x-inferplane-replica') };
}

describe.skipIf(missing.length > 0)(
  missing.length > 0
    ? `llama.cpp engine (skipped: the build tools are missing: ${missing.join(', ')})`
    : 'llama.cpp engine (llama-server built or reused from the cache)',
  () => {
    beforeAll(async () => {
      const built = await install();
      expect(findLlamaServer()?.path).toBe(built.path);
      state = tempStateDir();
      const modelPath = join(state.dir, 'tiny.gguf');
      await synthModel(modelPath, {
        arch: 'llama',
        hidden: 64,
        layers: 2,
        heads: 4,
        ffn: 128,
        vocab: 512,
        ctx: 512,
      });
      up = await startUp(state.dir, ['--no-demo']);
      const asAdmin = { url: up.info.url, key: ADMIN_KEY };
      expect((await cli(['tenant', 'create', 'team-l'], asAdmin)).code).toBe(0);
      const k = await cli(['key', 'create', '--tenant', 'team-l', '--json'], asAdmin);
      expect(k.code, k.stderr).toBe(0);
      tenantKey = (JSON.parse(k.stdout) as { key: string }).key;
      // The synthesized GGUF is registered as a model version; the deployment names that version
      // (its artifact is fetched into the node cache and verified before llama-server starts).
      const reg = await cli(
        [
          'model',
          'register',
          'tiny-random-llama',
          '--version',
          '1',
          '--uri',
          modelPath,
          '--format',
          'gguf',
          '--tenant',
          'team-l',
          '--json',
        ],
        asAdmin,
      );
      expect(reg.code, reg.stderr).toBe(0);
      const spec = {
        name: DEP,
        tenant: 'team-l',
        model: 'tiny-random-llama',
        engine: {
          name: 'llamacpp',
          args: { ctxSize: 1024, parallel: 2, threads: 1, seed: 1 },
        },
        modelVersion: { name: 'tiny-random-llama', version: '1' },
        replicas: 1,
        resources: { gpus: 0, gpuType: 'H100-80GB' },
      };
      const a = await cli(['apply', '-f', '-'], { ...asAdmin, input: JSON.stringify(spec) });
      expect(a.code, a.stderr).toBe(0);
    }, BUILD_TIMEOUT_MS);

    afterAll(async () => {
      await up?.stop('SIGINT');
      state?.cleanup();
    }, 30_000);

    it('serves a streamed chat completion through the gateway', async () => {
      const d = await waitFor(
        async () => {
          const x = await describeDep();
          return x.summary.replicas.ready === 1 ? x : undefined;
        },
        `${DEP} ready`,
        120_000,
        250,
      );
      expect(d.replicas[0]!.pid).not.toBeNull();
      const { content, events } = await streamChat();
      expect(events.at(-1)).toBe('[DONE]');
      expect(events.length).toBeGreaterThan(3); // role chunk, content chunks, finish, [DONE]
      expect(content.length).toBeGreaterThan(0);

      // The engine's own output is in the replica log.
      const logs = await cli(['logs', DEP, '--replica', '0'], {
        url: up!.info.url,
        key: ADMIN_KEY,
      });
      expect(logs.stdout).toMatch(/llama-server|server is listening|HTTP server/i);
    }, 180_000);

    it("exposes llama-server's metrics, mapped to the normalized signals", async () => {
      const d = await describeDep();
      const port = d.replicas[0]!.port!;
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      expect(text).toMatch(/^llamacpp:prompt_tokens_total /m);
      expect(text).toMatch(/^llamacpp:requests_processing /m);
      const s = parseLlamaCppMetrics(text, 1);
      expect(s.prefixQueries).toBeGreaterThan(0);
      expect(s.running).toBe(0);
      expect(s.waiting).toBe(0);
      expect(Number(/^llamacpp:tokens_predicted_total (\S+)/m.exec(text)?.[1])).toBeGreaterThan(0);
      // The same request again: its prompt comes from the slot's cache.
      await streamChat();
      const again = parseLlamaCppMetrics(
        await (await fetch(`http://127.0.0.1:${port}/metrics`)).text(),
      );
      expect(again.prefixQueries).toBeGreaterThan(s.prefixQueries);
    }, 60_000);

    it('restarts a killed llama-server, which serves again', async () => {
      const before = await describeDep();
      const victim = before.replicas[0]!;
      process.kill(victim.pid!, 'SIGKILL');
      const after = await waitFor(
        async () => {
          const x = await describeDep();
          const r = x.replicas[0];
          return r && r.state === 'ready' && r.pid !== victim.pid ? x : undefined;
        },
        'llama-server restarted',
        120_000,
        250,
      );
      const r0 = after.replicas[0]!;
      expect(r0.restarts).toBeGreaterThanOrEqual(1);
      expect(isAlive(r0.pid!)).toBe(true);
      expect(isAlive(victim.pid!)).toBe(false);
      expect(after.events.map((e) => e.reason)).toContain('BackOff');
      const { content, events } = await streamChat();
      expect(events.at(-1)).toBe('[DONE]');
      expect(content.length).toBeGreaterThan(0);

      // The OpenAI model list names the deployment.
      const models = await api<{ data: Array<{ id: string }> }>(
        up!.info.url,
        tenantKey,
        'GET',
        '/v1/models',
      );
      expect(models.body.data.map((m) => m.id)).toContain(DEP);
    }, 180_000);
  },
);
