// Shared by the unit tests that drive the control-plane API in process (a Hono app on a real
// SQLite store) and serve it on loopback for CLI runs.
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import type { Io } from '../../src/cli/output.js';
import { run } from '../../src/cli/program.js';

interface Requestable {
  request(path: string, init: RequestInit): Response | Promise<Response>;
}

/** One API call as `key`; a string body is sent as is (bad JSON), anything else as JSON. */
export async function apiCall(
  app: Requestable,
  key: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await app.request(`/${path.replace(/^\//, '')}`, {
    method,
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

/** Closes (and empties) a list of servers started by a test. */
export async function closeServers(servers: Server[]): Promise<void> {
  await Promise.all(
    servers.splice(0).map(
      (s) =>
        new Promise<void>((resolve) => {
          s.closeAllConnections();
          s.close(() => resolve());
        }),
    ),
  );
}

interface Fetchable {
  fetch: (req: Request) => Response | Promise<Response>;
}

/** Serves `api` at /api/v1 on a loopback port (closed by closeServers); resolves with its URL. */
export async function serveApiOn(api: object, servers: Server[]): Promise<string> {
  // Any Hono app (its Env type varies by test), mounted as the platform does.
  const root = new Hono().route('/api/v1', api as Hono) as Fetchable;
  const server = await new Promise<Server>((resolve) => {
    const s = serve({ fetch: root.fetch, port: 0, hostname: '127.0.0.1' }, () =>
      resolve(s),
    ) as Server;
  });
  servers.push(server);
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** Runs the CLI in process against `url` as `key`, capturing its output. */
export async function runCli(
  args: string[],
  url: string,
  key: string,
  now: () => Date = () => new Date(Date.now() + 60_000),
): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const io: Io = {
    out: (s) => (out += s),
    err: (s) => (err += s),
    readStdin: () => Promise.resolve(''),
    env: { INFERPLANE_URL: url, INFERPLANE_API_KEY: key },
    now,
  };
  const code = await run(['node', 'inferplane', ...args], io);
  return { code, out, err };
}
