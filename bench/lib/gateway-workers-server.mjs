// The gateway in N worker processes, started exactly as `inferplane up --gateway-workers N` starts
// them (dist/platform/gateway-workers.js: node:cluster workers on one port, each the whole data
// plane, logs appended to one file), fed the bench snapshot (bench-snapshot.mjs). The primary's
// control-plane listener is a stub answering /healthz (the bench sends only inference requests).
// Built code from ../../dist (run `npm run build` first).
//
// Same child protocol as gateway-server.mjs, plus { workers } (default 2). Prints
// `{"port":N,"pid":P,"pids":[primary, ...workers]}` (CPU is the sum over `pids`).
import { createServer } from 'node:http';
import { benchSnapshot } from './bench-snapshot.mjs';

const DIST = new URL('../../dist/', import.meta.url);
const { GatewayWorkers } = await import(new URL('platform/gateway-workers.js', DIST).href);
const { hashApiKey } = await import(new URL('core/ids.js', DIST).href);
const { createLogger } = await import(new URL('telemetry/logger.js', DIST).href);

const opts = JSON.parse(process.argv[2] ?? '{}');
const logger = createLogger({ level: 'warn', destination: 2 });
const stub = createServer((req, res) => {
  res.writeHead(req.url === '/healthz' ? 200 : 404, { 'content-type': 'application/json' });
  res.end('{"status":"ok"}');
});
await new Promise((r) => stub.listen(0, '127.0.0.1', r));

const pool = await GatewayWorkers.start({
  count: opts.workers ?? 2,
  logger,
  config: {
    port: opts.port ?? 0,
    host: '127.0.0.1',
    primaryUrl: `http://127.0.0.1:${stub.address().port}`,
    demandIntervalMs: 100,
    logLevel: opts.logLevel ?? 'info',
    logDestination: opts.logFile ?? 1,
    tracing: { serviceName: 'inferplane', sampleRatio: 1 },
    version: 'bench',
    routing: { scrapeIntervalMs: 100, staleMs: 2000 },
  },
});
await pool.update(opts.snapshot ?? benchSnapshot(opts.key, opts.upstreamPorts, hashApiKey));

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await pool.close();
  stub.close();
  process.exit(0);
};
process.on('SIGTERM', () => void stop());
process.on('SIGINT', () => void stop());
process.stdin.on('end', () => void stop());
process.stdin.resume();

process.stdout.write(
  JSON.stringify({ port: pool.port, pid: process.pid, pids: [process.pid, ...pool.pids()] }) + '\n',
);
