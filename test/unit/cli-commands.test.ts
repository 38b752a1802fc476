import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Io } from '../../src/cli/output.js';
import { run } from '../../src/cli/program.js';

interface Recorded {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  body: string;
}

const servers: Server[] = [];
let dir = '';

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'inferplane-cli-'));
});

afterEach(async () => {
  rmSync(dir, { recursive: true, force: true });
  await Promise.all(
    servers.splice(0).map(
      (s) =>
        new Promise<void>((resolve) => {
          s.closeAllConnections();
          s.close(() => resolve());
        }),
    ),
  );
});

/** A fake control plane: `routes` maps "METHOD /path" to [status, body]. */
async function fakeApi(
  routes: Record<string, (req: Recorded) => [number, unknown]>,
): Promise<{ url: string; requests: Recorded[] }> {
  const requests: Recorded[] = [];
  const server = createServer((req, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const rec: Recorded = {
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
      };
      requests.push(rec);
      const route = routes[`${rec.method} ${rec.url.split('?')[0]}`];
      const [status, body] = route
        ? route(rec)
        : [404, { error: { code: 'IP_NOT_FOUND', message: 'no route', status: 404 } }];
      if (typeof body === 'string') {
        res.writeHead(status, { 'content-type': 'text/plain' });
        res.end(body);
      } else {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(body));
      }
    });
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests };
}

interface Captured {
  code: number;
  out: string;
  err: string;
}

async function cli(args: string[], env: NodeJS.ProcessEnv = {}, stdin = ''): Promise<Captured> {
  let out = '';
  let err = '';
  const io: Io = {
    out: (s) => (out += s),
    err: (s) => (err += s),
    readStdin: () => Promise.resolve(stdin),
    env,
    now: () => new Date('2025-01-02T00:10:00Z'),
  };
  const code = await run(['node', 'inferplane', ...args], io);
  return { code, out, err };
}

const summary = (name: string) => ({
  name,
  tenant: 'demo',
  model: 'llama-3.1-8b',
  engine: 'sim',
  replicas: { desired: 2, ready: 2 },
  resources: { gpus: 1, gpuType: 'H100-80GB' },
  phase: 'Ready',
  generation: 1,
  createdAt: '2025-01-02T00:00:00Z',
  updatedAt: '2025-01-02T00:00:00Z',
});

describe('inferplane get', () => {
  it('prints a deployments table, reading INFERPLANE_URL and INFERPLANE_API_KEY', async () => {
    const api = await fakeApi({
      'GET /api/v1/deployments': () => [200, { items: [summary('a')] }],
    });
    const r = await cli(['get', 'dep'], { INFERPLANE_URL: api.url, INFERPLANE_API_KEY: 'k1' });
    expect(r).toMatchObject({ code: 0, err: '' });
    expect(r.out.split('\n')[0]).toMatch(
      /^NAME\s+TENANT\s+MODEL\s+ENGINE\s+READY\s+GPUS\s+PHASE\s+AGE$/,
    );
    expect(r.out).toMatch(/^a\s+demo\s+llama-3\.1-8b\s+sim\s+2\/2\s+1x H100-80GB\s+Ready\s+10m$/m);
    expect(api.requests[0]!.headers.authorization).toBe('Bearer k1');
  });

  it('prints the raw JSON with --json; global flags after the subcommand override the env', async () => {
    const body = { items: [{ id: 't', name: 'demo', createdAt: 'x', keys: 1, deployments: 0 }] };
    const api = await fakeApi({ 'GET /api/v1/tenants': () => [200, body] });
    const r = await cli(['get', 'tenants', '--json', '--url', api.url, '--api-key', 'flag'], {
      INFERPLANE_URL: 'http://127.0.0.1:1',
      INFERPLANE_API_KEY: 'env',
    });
    expect(r.code).toBe(0);
    expect(r.out).toBe(JSON.stringify(body, null, 2) + '\n');
    expect(api.requests[0]!.headers.authorization).toBe('Bearer flag');
  });

  it('rejects an unknown resource type as a usage error (exit 2)', async () => {
    const r = await cli(['get', 'pods']);
    expect(r.code).toBe(2);
    expect(r.err).toContain('unknown resource type "pods"');
  });

  it('exits 1 with the unreachable error when nothing listens', async () => {
    const r = await cli(['get', 'nodes', '--url', 'http://127.0.0.1:1']);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^error: cannot reach .* \(IP_CLI_UNREACHABLE\)\n$/);
  });
});

describe('inferplane apply', () => {
  it('PUTs every document and prints the result of each', async () => {
    const results: Record<string, string> = { a: 'created', b: 'unchanged' };
    const route = (req: Recorded): [number, unknown] => {
      const spec = JSON.parse(req.body) as { name: string };
      return [200, { deployment: summary(spec.name), result: results[spec.name] }];
    };
    const api = await fakeApi({
      'PUT /api/v1/deployments/a': route,
      'PUT /api/v1/deployments/b': route,
    });
    const file = join(dir, 'd.yaml');
    writeFileSync(file, 'name: a\nreplicas: 2\n---\nname: b\n');
    const r = await cli(['apply', '-f', file, '--url', api.url]);
    expect(r).toEqual({ code: 0, out: 'deployment/a created\ndeployment/b unchanged\n', err: '' });
    expect(JSON.parse(api.requests[0]!.body)).toEqual({ name: 'a', replicas: 2 });
  });

  it('reads stdin with -f - and prints the results array with --json', async () => {
    const api = await fakeApi({
      'PUT /api/v1/deployments/a': () => [200, { deployment: summary('a'), result: 'updated' }],
    });
    const r = await cli(['apply', '-f', '-', '--json', '--url', api.url], {}, 'name: a\n');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toEqual([{ deployment: summary('a'), result: 'updated' }]);
  });

  it('sends nothing when a document has a syntax error', async () => {
    const api = await fakeApi({});
    const file = join(dir, 'bad.yaml');
    writeFileSync(file, 'name: a\n---\nname: b\nengine: [sim\n');
    const r = await cli(['apply', '-f', file, '--url', api.url]);
    expect(r.code).toBe(1);
    expect(r.err).toContain('nothing was applied (IP_CLI_INVALID_SPEC)');
    expect(r.err).toMatch(
      new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\d+:\\d+: document 2: `),
    );
    expect(api.requests).toEqual([]);
  });

  it('prints every bad field of a 400', async () => {
    const api = await fakeApi({
      'PUT /api/v1/deployments/a': () => [
        400,
        {
          error: {
            code: 'IP_INVALID_SPEC',
            message: 'invalid deployment spec',
            status: 400,
            details: [
              { path: 'replicas', message: 'must be >= 0' },
              { path: 'resources.gpuType', message: 'unknown GPU type' },
            ],
          },
        },
      ],
    });
    const r = await cli(['apply', '-f', '-', '--url', api.url], {}, 'name: a\nreplicas: -1\n');
    expect(r.code).toBe(1);
    expect(r.err).toBe(
      'error: deployment/a: invalid deployment spec (IP_INVALID_SPEC)\n' +
        '  replicas: must be >= 0\n' +
        '  resources.gpuType: unknown GPU type\n',
    );
  });

  it('goes on after a rejected document and fails at the end', async () => {
    const api = await fakeApi({
      'PUT /api/v1/deployments/a': () => [
        409,
        { error: { code: 'IP_CONFLICT', message: 'tenant missing', status: 409 } },
      ],
      'PUT /api/v1/deployments/b': () => [200, { deployment: summary('b'), result: 'created' }],
    });
    const r = await cli(['apply', '-f', '-', '--url', api.url], {}, 'name: a\n---\nname: b\n');
    expect(r.code).toBe(1);
    expect(r.out).toBe('deployment/b created\n');
    expect(r.err).toContain('error: deployment/a: tenant missing (IP_CONFLICT)');
    expect(r.err).toContain('1 of 2 deployments failed to apply (IP_CLI_APPLY_FAILED)');
  });

  it('reports a missing file', async () => {
    const r = await cli(['apply', '-f', join(dir, 'nope.yaml')]);
    expect(r.code).toBe(1);
    expect(r.err).toContain('no such file (IP_CLI_FILE)');
  });
});

describe('other commands', () => {
  it('describe deployment', async () => {
    const api = await fakeApi({
      'GET /api/v1/deployments/a': () => [
        200,
        { spec: { name: 'a' }, summary: summary('a'), replicas: [], events: [] },
      ],
    });
    const r = await cli(['describe', 'deployment', 'a', '--url', api.url]);
    expect(r.code).toBe(0);
    expect(r.out).toContain('Name:');
    expect(r.out).toContain('Spec:\n  name: a\n');
  });

  it('delete deployment', async () => {
    const api = await fakeApi({ 'DELETE /api/v1/deployments/a': () => [200, { deleted: 'a' }] });
    const r = await cli(['delete', 'deploy', 'a', '--url', api.url]);
    expect(r).toEqual({ code: 0, out: 'deployment/a deleted\n', err: '' });
  });

  it('tenant create, including the 409 code', async () => {
    let exists = false;
    const api = await fakeApi({
      'POST /api/v1/tenants': (req) => {
        const { name } = JSON.parse(req.body) as { name: string };
        if (exists) {
          return [
            409,
            {
              error: { code: 'IP_TENANT_EXISTS', message: `tenant "${name}" exists`, status: 409 },
            },
          ];
        }
        exists = true;
        return [201, { tenant: { id: 't1', name, createdAt: 'x' } }];
      },
    });
    expect(await cli(['tenant', 'create', 'demo', '--url', api.url])).toEqual({
      code: 0,
      out: 'tenant/demo created\n',
      err: '',
    });
    const again = await cli(['tenant', 'create', 'demo', '--url', api.url]);
    expect(again.code).toBe(1);
    expect(again.err).toBe('error: tenant "demo" exists (IP_TENANT_EXISTS)\n');
  });

  it('tenant create --rps/--tpm and tenant limits send limits; none sends null', async () => {
    const tenant = (limits: unknown) => ({
      tenant: { id: 't1', name: 'demo', createdAt: 'x', limits },
    });
    const api = await fakeApi({
      'POST /api/v1/tenants': () => [201, tenant({ requestsPerSecond: 5, tokensPerMinute: 60000 })],
      'PATCH /api/v1/tenants/demo': () => [
        200,
        tenant({ requestsPerSecond: 5, maxConcurrency: 4 }),
      ],
    });
    const created = await cli([
      'tenant',
      'create',
      'demo',
      '--rps',
      '5',
      '--tpm',
      '60k',
      '--url',
      api.url,
    ]);
    expect(created).toEqual({
      code: 0,
      out: 'tenant/demo created (limits: 5 rps, 60k tpm)\n',
      err: '',
    });
    expect(JSON.parse(api.requests[0]!.body)).toEqual({
      name: 'demo',
      limits: { requestsPerSecond: 5, tokensPerMinute: 60000 },
    });
    const changed = await cli([
      'tenant',
      'limits',
      'demo',
      '--tpm',
      'none',
      '--max-concurrency',
      '4',
      '--url',
      api.url,
    ]);
    expect(changed).toEqual({ code: 0, out: 'tenant/demo limits: 5 rps, 4 conc\n', err: '' });
    expect(api.requests[1]!.method).toBe('PATCH');
    expect(JSON.parse(api.requests[1]!.body)).toEqual({
      limits: { tokensPerMinute: null, maxConcurrency: 4 },
    });
    const bad = await cli(['tenant', 'limits', 'demo', '--rps', 'lots', '--url', api.url]);
    expect(bad.code).toBe(2);
    expect(bad.err).toContain('expected a positive number');
    expect(api.requests).toHaveLength(2);
  });

  it('get tenants shows a LIMITS column', async () => {
    const body = {
      items: [
        {
          id: 't1',
          name: 'a',
          createdAt: '2025-01-02T00:00:00Z',
          keys: 1,
          deployments: 0,
          limits: {},
        },
        {
          id: 't2',
          name: 'b',
          createdAt: '2025-01-02T00:00:00Z',
          keys: 0,
          deployments: 2,
          limits: { requestsPerSecond: 5, tokensPerMinute: 60000, maxConcurrency: 4 },
        },
      ],
    };
    const api = await fakeApi({ 'GET /api/v1/tenants': () => [200, body] });
    const r = await cli(['get', 'tenants', '--url', api.url]);
    expect(r.code).toBe(0);
    expect(r.out).toBe(
      'NAME   KEYS   DEPLOYMENTS   LIMITS                   AGE\n' +
        'a      1      0             -                        10m\n' +
        'b      0      2             5 rps, 60k tpm, 4 conc   10m\n',
    );
  });

  it('key create shows the key once', async () => {
    const api = await fakeApi({
      'POST /api/v1/tenants/demo/keys': () => [
        201,
        { key: 'ip_abcd1234secret', id: 'k1', tenant: 'demo', prefix: 'ip_abcd', createdAt: 'x' },
      ],
    });
    const r = await cli([
      'key',
      'create',
      '--tenant',
      'demo',
      '--description',
      'ci',
      '--url',
      api.url,
    ]);
    expect(r.code).toBe(0);
    const lines = r.out.split('\n');
    expect(lines[0]).toBe('key ip_abcd… created for tenant demo');
    expect(lines[1]).toBe('ip_abcd1234secret');
    expect(lines[2]).toContain('not shown again');
    expect(JSON.parse(api.requests[0]!.body)).toEqual({ description: 'ci' });
  });

  it('logs passes replica and tail and prints the text as is', async () => {
    const api = await fakeApi({ 'GET /api/v1/deployments/a/logs': () => [200, 'hello\nworld'] });
    const r = await cli(['logs', 'a', '--replica', '1', '--tail', '5', '--url', api.url]);
    expect(r).toEqual({ code: 0, out: 'hello\nworld', err: '' });
    expect(api.requests[0]!.url).toBe('/api/v1/deployments/a/logs?replica=1&tail=5');
    await cli(['logs', 'a', '--url', api.url]);
    expect(api.requests[1]!.url).toBe('/api/v1/deployments/a/logs?replica=0&tail=200');
  });

  it('--help exits 0 and bad option values exit 2', async () => {
    const help = await cli(['--help']);
    expect(help.code).toBe(0);
    expect(help.out).toContain('Usage: inferplane');
    expect((await cli(['logs', 'a', '--tail', 'x'])).code).toBe(2);
    expect((await cli(['nonsense'])).code).toBe(2);
  });
});
