// Shared by the unit tests that drive the control-plane API in process (a Hono app on a real
// SQLite store) and serve it on loopback for CLI runs.
import type { Server } from 'node:http';

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
