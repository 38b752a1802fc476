// Deployments that name a registered model version: the artifact is fetched into the node cache
// and its sha256 verified before the engine starts; a corrupted artifact (one byte changed after
// registration) never serves. Through `inferplane up` and its API.
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DeploymentDetail } from '../../src/core/api-types.js';
import { ADMIN_KEY, api, startUp, tempStateDir, waitFor, type UpProcess } from './helpers.js';

let up: UpProcess;
let state: ReturnType<typeof tempStateDir>;

beforeAll(async () => {
  state = tempStateDir();
  up = await startUp(state.dir, ['--no-demo']);
  const t = await api(up.info.url, ADMIN_KEY, 'POST', '/api/v1/tenants', { name: 'team-a' });
  expect(t.status).toBe(201);
}, 60_000);

afterAll(async () => {
  await up?.stop();
  state?.cleanup();
});

function spec(name: string, version: string) {
  return {
    name,
    tenant: 'team-a',
    model: 'llama-3.1-8b',
    engine: { name: 'sim', args: { timeScale: 0.1 } },
    replicas: 1,
    resources: { gpus: 1, gpuType: 'H100-80GB' },
    modelVersion: { name: 'llama-8b-ft', version },
  };
}

async function register(version: string, bytes: Buffer): Promise<{ path: string; sha: string }> {
  const path = join(state.dir, `weights-${version}.gguf`);
  writeFileSync(path, bytes);
  const r = await api<{ version: { artifacts: { sha256: string }[] } }>(
    up.info.url,
    ADMIN_KEY,
    'POST',
    '/api/v1/models/llama-8b-ft/versions',
    { version, tenant: 'team-a', artifacts: [{ uri: `file://${path}` }], source: 'test' },
  );
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  const sha = createHash('sha256').update(bytes).digest('hex');
  expect(r.body.version.artifacts[0]!.sha256).toBe(sha);
  return { path, sha };
}

const describeDep = async (name: string) =>
  (await api<DeploymentDetail>(up.info.url, ADMIN_KEY, 'GET', `/api/v1/deployments/${name}`)).body;

describe('model artifacts', () => {
  it('fetches and verifies the registered artifact before the replica starts', async () => {
    const { sha } = await register('1', randomBytes(256 * 1024));
    const r = await api(
      up.info.url,
      ADMIN_KEY,
      'PUT',
      '/api/v1/deployments/ft-v1',
      spec('ft-v1', '1'),
    );
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    const d = await waitFor(async () => {
      const x = await describeDep('ft-v1');
      return x.replicas[0]?.state === 'ready' ? x : undefined;
    }, 'replica ready');
    expect(d.events.map((e) => e.reason)).toContain('ArtifactReady');
    expect(existsSync(join(state.dir, 'artifacts', 'sha256', sha))).toBe(true);
    // Cold start: where the time went, per phase, in describe and in /metrics.
    const cs = d.replicas[0]!.coldStart!;
    for (const k of [
      'artifactFetchMs',
      'artifactVerifyMs',
      'engineStartMs',
      'modelLoadMs',
      'readyMs',
    ] as const) {
      expect(cs[k], k).toBeGreaterThanOrEqual(0);
    }
    expect(cs.readyMs!).toBeGreaterThanOrEqual(cs.modelLoadMs!);
    expect(cs.firstTokenMs).toBeUndefined();
    const key = await api<{ key: string }>(
      up.info.url,
      ADMIN_KEY,
      'POST',
      '/api/v1/tenants/team-a/keys',
      {},
    );
    const res = await fetch(`${up.info.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key.body.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        model: 'ft-v1',
        messages: [{ role: 'user', content: 'hi' }],
        max_tokens: 2,
      }),
    });
    expect(res.status).toBe(200);
    await res.text();
    const after = await waitFor(async () => {
      const x = await describeDep('ft-v1');
      return x.replicas[0]?.coldStart?.firstTokenMs !== undefined ? x : undefined;
    }, 'first token recorded');
    expect(after.replicas[0]!.coldStart!.firstTokenMs).toBeGreaterThan(0);
    const metrics = await (await fetch(`${up.info.url}/metrics`)).text();
    expect(metrics).toMatch(
      /inferplane_replica_cold_start_seconds_count\{deployment="ft-v1",phase="readyMs"\} 1/,
    );
    expect(metrics).toMatch(
      /inferplane_replica_cold_start_seconds_count\{deployment="ft-v1",phase="firstTokenMs"\} 1/,
    );
  }, 60_000);

  it('never serves a corrupted artifact: the replica fails with the checksum error', async () => {
    const bytes = randomBytes(256 * 1024);
    const { path, sha } = await register('2', bytes);
    bytes[1000] = bytes[1000]! ^ 0xff; // one byte changed after registration
    writeFileSync(path, bytes);
    const r = await api(
      up.info.url,
      ADMIN_KEY,
      'PUT',
      '/api/v1/deployments/ft-v2',
      spec('ft-v2', '2'),
    );
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    const d = await waitFor(async () => {
      const x = await describeDep('ft-v2');
      return x.replicas[0]?.state === 'failed' ? x : undefined;
    }, 'replica failed');
    expect(d.replicas[0]!.pid).toBeNull();
    expect(d.replicas[0]!.lastError).toMatch(/sha256|checksum/i);
    expect(d.events.map((e) => e.reason)).toContain('ArtifactCorrupt');
    expect(existsSync(join(state.dir, 'artifacts', 'sha256', sha))).toBe(false);
    // Nothing serves it: the gateway has no ready replica for the model.
    const key = await api<{ key: string }>(
      up.info.url,
      ADMIN_KEY,
      'POST',
      '/api/v1/tenants/team-a/keys',
      {},
    );
    const res = await fetch(`${up.info.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key.body.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'ft-v2', messages: [{ role: 'user', content: 'hi' }] }),
    });
    expect(res.status).toBe(503);
    await res.text();
    // Still failed a while later (not retried into serving).
    await new Promise((r) => setTimeout(r, 1500));
    expect((await describeDep('ft-v2')).replicas[0]!.state).toBe('failed');
  }, 60_000);

  it('audits every change: tenant, model versions, deployments, keys; the chain verifies', async () => {
    const list = await api<{ items: { action: string; resource: string; actor: string }[] }>(
      up.info.url,
      ADMIN_KEY,
      'GET',
      '/api/v1/audit?limit=100',
    );
    expect(list.status).toBe(200);
    const actions = list.body.items.map((r) => `${r.action} ${r.resource}`);
    expect(actions).toContain('tenant.create tenant/team-a');
    expect(actions).toContain('deployment.create deployment/ft-v1');
    expect(actions.some((a) => a.startsWith('model.version.register'))).toBe(true);
    expect(actions.some((a) => a.startsWith('key.create key/team-a/'))).toBe(true);
    expect(list.body.items.every((r) => r.actor.startsWith('operator/'))).toBe(true);
    const del = await api(up.info.url, ADMIN_KEY, 'DELETE', '/api/v1/deployments/ft-v2');
    expect(del.status).toBeLessThan(300);
    const v = await api<{ ok: boolean; checked: number }>(
      up.info.url,
      ADMIN_KEY,
      'POST',
      '/api/v1/audit/verify',
    );
    expect(v.body.ok).toBe(true);
    expect(v.body.checked).toBeGreaterThanOrEqual(6);
  });

  it('refuses a model-file engine (llamacpp) without a registered model version', async () => {
    const r = await api<{ error: { code: string; details: { path: string }[] } }>(
      up.info.url,
      ADMIN_KEY,
      'PUT',
      '/api/v1/deployments/no-model',
      {
        name: 'no-model',
        tenant: 'team-a',
        model: 'x',
        engine: { name: 'llamacpp', args: {} },
        replicas: 1,
        resources: { gpus: 0, gpuType: 'H100-80GB' },
      },
    );
    expect(r.status).toBe(400);
    expect(r.body.error.details[0]!.path).toBe('modelVersion');
  });

  it('refuses a deployment naming a version that is not registered', async () => {
    const r = await api<{ error: { code: string } }>(
      up.info.url,
      ADMIN_KEY,
      'PUT',
      '/api/v1/deployments/ft-v9',
      spec('ft-v9', '9'),
    );
    expect(r.status).toBe(404);
  });
});
