// The gateway alone, mounted exactly as src/platform/platform.ts mounts it (Gateway.server: the
// inference routes on the raw path, the rest to a Hono app on node:http with the gateway at /v1,
// keepAliveTimeout 65 s, JSON logs at info level to a file, as
// `inferplane up` does), fed a routing snapshot instead of the control plane's: one key and two
// models on the same upstream endpoints, `bench-rr` (round-robin) and `bench-pa` (the default
// policy, prefix-aware). Built code from ../../dist (run `npm run build` first).
//
// Run as a child: `node gateway-server.mjs '<json>'` with { upstreamPorts, key, port?, logFile?,
// logLevel?, snapshot?, scrapeIntervalMs? } (`snapshot`: a whole RoutingSnapshot to serve instead
// of the default one); prints `{"port":N}` once listening; exits on SIGTERM/SIGINT or when stdin
// closes (a graceful exit, so `node --cpu-prof` writes its profile). INFERPLANE_GATEWAY_DIST=<dir>
// serves another build's dist/ with this script (bench/gateway-instructions.mjs's baseline).
import { getRequestListener } from '@hono/node-server';
import { Hono } from 'hono';
import { pathToFileURL } from 'node:url';
import { benchSnapshot } from './bench-snapshot.mjs';

const DIST = process.env.INFERPLANE_GATEWAY_DIST
  ? pathToFileURL(process.env.INFERPLANE_GATEWAY_DIST.replace(/\/?$/, '/'))
  : new URL('../../dist/', import.meta.url);
const { Gateway } = await import(new URL('gateway/gateway.js', DIST).href);
const { hashApiKey } = await import(new URL('core/ids.js', DIST).href);
const { createLogger } = await import(new URL('telemetry/logger.js', DIST).href);
const { createMetrics } = await import(new URL('telemetry/metrics.js', DIST).href);

export { MODELS } from './bench-snapshot.mjs';

const opts = JSON.parse(process.argv[2] ?? '{}');
const logger = createLogger({
  level: opts.logLevel ?? 'info',
  ...(opts.logFile ? { destination: opts.logFile } : {}),
});
const metrics = createMetrics();
const gateway = new Gateway({
  metrics,
  logger,
  ...(opts.scrapeIntervalMs ? { routing: { scrapeIntervalMs: opts.scrapeIntervalMs } } : {}),
});

gateway.update(opts.snapshot ?? benchSnapshot(opts.key, opts.upstreamPorts, hashApiKey));

const app = new Hono();
app.route('/v1', gateway.routes());
app.get('/healthz', (c) => c.json({ status: 'ok' }));

const server = gateway.server(getRequestListener(app.fetch), { keepAliveTimeoutMs: 65_000 });
await server.listen(opts.port ?? 0, '127.0.0.1');

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  const closed = server.close();
  server.closeAllConnections();
  await closed;
  await gateway.close();
  logger.flush();
  process.exit(0);
};
process.on('SIGTERM', () => void stop());
process.on('SIGINT', () => void stop());
process.stdin.on('end', () => void stop());
process.stdin.resume();

process.stdout.write(JSON.stringify({ port: server.address().port, pid: process.pid }) + '\n');
