import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { ApiClient, ApiError, parseErrorBody, resolveConnection } from '../../src/cli/client.js';

interface Recorded {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  body: string;
}

type Handler = (req: Recorded, res: ServerResponse) => void;

const servers: Server[] = [];

async function startServer(
  handler: Handler,
): Promise<{ url: string; requests: Recorded[]; server: Server }> {
  const requests: Recorded[] = [];
  const server = createServer((req, res) => {
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
      handler(rec, res);
    });
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, requests, server };
}

function closeServer(server: Server): Promise<void> {
  server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

function sendJson(res: ServerResponse, status: number, data: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(data));
}

afterEach(async () => {
  await Promise.all(
    servers.splice(0).map((s) => (s.listening ? closeServer(s) : Promise.resolve())),
  );
});

async function catchError(p: Promise<unknown>): Promise<ApiError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof ApiError) return err;
    throw err;
  }
  throw new Error('expected the request to fail');
}

describe('ApiClient', () => {
  it('sends JSON with the bearer key under /api/v1 and parses the answer', async () => {
    const srv = await startServer((_req, res) =>
      sendJson(res, 200, { deployment: { name: 'a' }, result: 'created' }),
    );
    const client = new ApiClient({ baseUrl: `${srv.url}/`, apiKey: 'ip_secret' });
    const out = await client.request<{ result: string }>('PUT', '/deployments/a', {
      name: 'a',
      replicas: 2,
    });
    expect(out.result).toBe('created');
    expect(srv.requests).toHaveLength(1);
    const req = srv.requests[0]!;
    expect(req.method).toBe('PUT');
    expect(req.url).toBe('/api/v1/deployments/a');
    expect(req.headers.authorization).toBe('Bearer ip_secret');
    expect(req.headers['content-type']).toBe('application/json');
    expect(JSON.parse(req.body)).toEqual({ name: 'a', replicas: 2 });
  });

  it('accepts absolute /api/v1 paths and sends no authorization without a key', async () => {
    const srv = await startServer((_req, res) => sendJson(res, 200, { items: [] }));
    const client = new ApiClient({ baseUrl: srv.url });
    await expect(client.request('GET', '/api/v1/tenants')).resolves.toEqual({ items: [] });
    expect(srv.requests[0]!.url).toBe('/api/v1/tenants');
    expect(srv.requests[0]!.headers.authorization).toBeUndefined();
  });

  it('maps a 404 to an ApiError carrying the server code', async () => {
    const srv = await startServer((_req, res) =>
      sendJson(res, 404, {
        error: {
          code: 'IP_DEPLOYMENT_NOT_FOUND',
          message: 'deployment "x" not found',
          status: 404,
        },
      }),
    );
    const err = await catchError(
      new ApiClient({ baseUrl: srv.url }).request('GET', '/deployments/x'),
    );
    expect(err.code).toBe('IP_DEPLOYMENT_NOT_FOUND');
    expect(err.status).toBe(404);
    expect(err.message).toBe('deployment "x" not found');
    expect(err.details).toEqual([]);
  });

  it('keeps the details of a 400', async () => {
    const details = [
      { path: 'replicas', message: 'must be >= 0' },
      { path: 'resources.gpus', message: 'expected a number' },
    ];
    const srv = await startServer((_req, res) =>
      sendJson(res, 400, {
        error: {
          code: 'IP_INVALID_SPEC',
          message: 'invalid deployment spec',
          status: 400,
          details,
        },
      }),
    );
    const err = await catchError(
      new ApiClient({ baseUrl: srv.url }).request('PUT', '/deployments/x', { name: 'x' }),
    );
    expect(err.code).toBe('IP_INVALID_SPEC');
    expect(err.status).toBe(400);
    expect(err.details).toEqual(details);
  });

  it('explains a 401 without a key by naming INFERPLANE_API_KEY', async () => {
    const srv = await startServer((_req, res) =>
      sendJson(res, 401, {
        error: { code: 'IP_UNAUTHORIZED', message: 'missing API key', status: 401 },
      }),
    );
    const err = await catchError(new ApiClient({ baseUrl: srv.url }).request('GET', '/nodes'));
    expect(err.code).toBe('IP_UNAUTHORIZED');
    expect(err.status).toBe(401);
    expect(err.message).toContain('INFERPLANE_API_KEY');
  });

  it('falls back to IP_HTTP_<status> when the error body is not the API shape', async () => {
    const srv = await startServer((_req, res) => {
      res.writeHead(502, { 'content-type': 'text/plain' });
      res.end('bad gateway');
    });
    const err = await catchError(new ApiClient({ baseUrl: srv.url }).request('GET', '/nodes'));
    expect(err.code).toBe('IP_HTTP_502');
    expect(err.status).toBe(502);
    expect(err.message).toContain('bad gateway');
  });

  it('maps connection refused to IP_CLI_UNREACHABLE naming the URL', async () => {
    const srv = await startServer(() => undefined);
    await closeServer(srv.server);
    const err = await catchError(
      new ApiClient({ baseUrl: srv.url }).request('GET', '/deployments'),
    );
    expect(err.code).toBe('IP_CLI_UNREACHABLE');
    expect(err.status).toBe(0);
    expect(err.message).toContain(srv.url);
    expect(err.message).toContain('inferplane up');
    expect(err.message).toContain('INFERPLANE_URL');
  });

  it('times out with IP_CLI_TIMEOUT', async () => {
    const srv = await startServer(() => undefined); // never answers
    const err = await catchError(
      new ApiClient({ baseUrl: srv.url, timeoutMs: 100 }).request('GET', '/deployments'),
    );
    expect(err.code).toBe('IP_CLI_TIMEOUT');
  });

  it('returns text as is', async () => {
    const srv = await startServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('line 1\nline 2\n');
    });
    const client = new ApiClient({ baseUrl: srv.url, apiKey: 'k' });
    await expect(client.text('/deployments/a/logs?replica=1&tail=5')).resolves.toBe(
      'line 1\nline 2\n',
    );
    expect(srv.requests[0]!.url).toBe('/api/v1/deployments/a/logs?replica=1&tail=5');
    expect(srv.requests[0]!.headers.authorization).toBe('Bearer k');
  });
});

describe('parseErrorBody', () => {
  it('reads code, message and details', () => {
    expect(
      parseErrorBody(
        JSON.stringify({
          error: {
            code: 'IP_X',
            message: 'm',
            status: 400,
            details: [{ path: 'a', message: 'b' }],
          },
        }),
      ),
    ).toEqual({ code: 'IP_X', message: 'm', details: [{ path: 'a', message: 'b' }] });
  });

  it('rejects other shapes', () => {
    expect(parseErrorBody('not json')).toBeUndefined();
    expect(parseErrorBody('{"message":"x"}')).toBeUndefined();
  });
});

describe('resolveConnection', () => {
  it('prefers flags, then the environment, then the default', () => {
    const env = { INFERPLANE_URL: 'http://env:1', INFERPLANE_API_KEY: 'envkey' };
    expect(resolveConnection({}, {})).toEqual({ baseUrl: 'http://127.0.0.1:8080' });
    expect(resolveConnection({}, env)).toEqual({ baseUrl: 'http://env:1', apiKey: 'envkey' });
    expect(resolveConnection({ url: 'http://flag:2', apiKey: 'flagkey' }, env)).toEqual({
      baseUrl: 'http://flag:2',
      apiKey: 'flagkey',
    });
  });
});
