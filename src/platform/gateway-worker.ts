// One gateway worker process (node:cluster; started by GatewayWorkers, `up --gateway-workers N`).
// It serves the data plane on the shared public port: the inference routes on the gateway's raw
// path and `/v1/*` through the gateway's Hono routes; every other request (API, metrics, readiness,
// the dashboard) is relayed to the primary's loopback listener, where the control plane lives.
//
// Messages (see gateway-workers.ts for the primary's side):
//   primary → worker  init {config, snapshot?} (a worker holds the latest snapshot before it
//                     listens: a replacement never answers from an empty table) · snapshot {snapshot} · shares {shares} · metrics {id} · stop
//                     picks {picks} (other workers' prefix picks, relayed)
//   worker → primary  hello (listening for init) · ready {port} · ack {version} · demand {demand}
//                     metrics {id, json} · served {replicaId} (a replica's first relayed byte, once
//                     per replica) · picks {picks} (this worker's approximate-prefix picks, batched)
//
// Prefix picks: each worker's approximate prefix index learns from its own picks; with several
// workers a prompt's next request may reach another worker, so every pick recorded in the index
// (replica, block hashes) is batched for PICK_BATCH_MS and relayed to the other workers, whose
// indexes record it too. The precise source (KV events) needs none of this: every worker
// subscribes to the engines' events.
//
// Load: each worker counts its own in-flight requests per replica exactly; the replicas' scraped
// queues lag by a scrape period. So the workers share their counts and pick times on the load
// board (load-board.ts; the primary creates its file and gives each worker a slot), written at each
// change and read at each decision: between scrapes, no worker routes as if the others sent
// nothing, and among equally loaded replicas the picker prefers the one picked longest ago by any
// worker.
import cluster from 'node:cluster';
import { getRequestListener } from '@hono/node-server';
import { Hono } from 'hono';
import type { RoutingSnapshot } from '../core/types.js';
import { InferplaneError } from '../core/errors.js';
import { Gateway } from '../gateway/gateway.js';
import { hasLimits, type LimitShare, type TenantDemand } from '../gateway/limits.js';
import { LoadBoard } from '../gateway/routing/load-board.js';
import { createLogger } from '../telemetry/logger.js';
import { createMetrics } from '../telemetry/metrics.js';
import { createTracing } from '../telemetry/tracing.js';
import type { PlatformConfig } from './config.js';

/** What a worker needs to serve (sent once, in `init`). */
export interface WorkerConfig {
  port: number;
  host: string;
  /** The primary's loopback listener: everything that is not the data plane goes there. */
  primaryUrl: string;
  /** Gateway processes sharing the tenants' limits. */
  workers: number;
  /** How often this worker reports its tenants' demand (ms). */
  demandIntervalMs: number;
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  /** Path or file descriptor of the JSON log (the primary's, appended to). */
  logDestination: string | number;
  tracing: PlatformConfig['tracing'];
  version: string;
  routing: { scrapeIntervalMs: number; staleMs: number };
  /** The load board (load-board.ts) and this worker's slot in it; with several workers. */
  board?: { path: string; slot: number; slots: number };
}

export type ToWorker =
  | { t: 'init'; config: WorkerConfig; snapshot?: RoutingSnapshot }
  | { t: 'snapshot'; snapshot: RoutingSnapshot }
  | { t: 'shares'; shares: Array<[string, LimitShare]> }
  | { t: 'metrics'; id: number }
  | { t: 'picks'; picks: Array<[string, Uint32Array, number]> }
  | { t: 'stop' };

export type FromWorker =
  | { t: 'hello' }
  | { t: 'ready'; port: number }
  | { t: 'ack'; version: number }
  | { t: 'demand'; demand: Array<[string, TenantDemand]> }
  | { t: 'metrics'; id: number; json: unknown }
  | { t: 'served'; replicaId: string }
  | { t: 'picks'; picks: Array<[string, Uint32Array, number]> }
  | { t: 'failed'; message: string };

/** Hop-by-hop headers a relay must not forward (RFC 9110 §7.6.1), and what fetch sets itself. */
const HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'te',
  'trailer',
  'host',
  'content-length',
]);

/** How long this worker's prefix picks gather before they go to the others (ms). */
const PICK_BATCH_MS = 5;
/** A batch this large goes at once. */
const PICK_BATCH_MAX = 512;

function send(msg: FromWorker): void {
  process.send?.(msg);
}

async function serve(config: WorkerConfig, initial: RoutingSnapshot | undefined): Promise<void> {
  const logger = createLogger({
    level: config.logLevel,
    destination: config.logDestination,
  }).child({ worker: cluster.worker?.id ?? process.pid });
  const metrics = createMetrics();
  const tracing = createTracing(
    { ...config.tracing, onError: (e) => logger.warn({ err: e }, 'trace export failed') },
    config.version,
  );
  // A replica's first byte matters to the control plane once (cold start: first token).
  const served = new Set<string>();
  let picks: Array<[string, Uint32Array, number]> = [];
  let pickTimer: NodeJS.Timeout | undefined;
  const flushPicks = (): void => {
    if (pickTimer) clearTimeout(pickTimer);
    pickTimer = undefined;
    const batch = picks;
    picks = [];
    if (batch.length > 0) send({ t: 'picks', picks: batch });
  };
  const board = config.board
    ? new LoadBoard(config.board.path, config.board.slot, config.board.slots)
    : undefined;
  const gateway = new Gateway({
    metrics,
    logger,
    tracing,
    limitWorkers: config.workers,
    routing: {
      scrapeIntervalMs: config.routing.scrapeIntervalMs,
      staleMs: config.routing.staleMs,
      ...(config.workers > 1
        ? {
            onRecord: (replicaId: string, hashes: Uint32Array, extraBlocks: number) => {
              picks.push([replicaId, hashes.slice(), extraBlocks]);
              if (picks.length >= PICK_BATCH_MAX) flushPicks();
              else pickTimer ??= setTimeout(flushPicks, PICK_BATCH_MS);
            },
            ...(board ? { board } : {}),
          }
        : {}),
    },
    onServed: (replicaId) => {
      if (served.has(replicaId)) return;
      served.add(replicaId);
      send({ t: 'served', replicaId });
    },
  });

  const primary = new URL(config.primaryUrl);
  const app = new Hono();
  app.route('/v1', gateway.routes());
  app.all('*', async (c) => {
    const target = new URL(c.req.url);
    target.protocol = primary.protocol;
    target.host = primary.host;
    const headers = new Headers();
    for (const [k, v] of c.req.raw.headers) if (!HOP.has(k)) headers.append(k, v);
    const hasBody = c.req.method !== 'GET' && c.req.method !== 'HEAD';
    try {
      const res = await fetch(target, {
        method: c.req.method,
        headers,
        redirect: 'manual',
        ...(hasBody ? { body: c.req.raw.body, duplex: 'half' } : {}),
        signal: c.req.raw.signal,
      });
      const out = new Headers();
      for (const [k, v] of res.headers)
        if (!HOP.has(k) && k !== 'content-encoding') out.append(k, v);
      return new Response(res.body, { status: res.status, headers: out });
    } catch (e) {
      logger.error({ err: e }, 'relay to the control plane failed');
      const err = new InferplaneError(
        'IP_UPSTREAM_UNAVAILABLE',
        'The control plane is not reachable from this gateway worker.',
      );
      return c.json(err.toJSON(), 502);
    }
  });

  const server = gateway.server(getRequestListener(app.fetch), { keepAliveTimeoutMs: 65_000 });
  // Whether any tenant has a limit: only then does the primary need this worker's demand.
  let limited = false;
  const demandTimer = setInterval(() => {
    const demand = gateway.limiter.takeDemand();
    if (limited || demand.size > 0) send({ t: 'demand', demand: [...demand] });
  }, config.demandIntervalMs);
  demandTimer.unref();

  const install = (snapshot: RoutingSnapshot): void => {
    gateway.update(snapshot);
    limited = (snapshot.tenants ?? []).some((t) => hasLimits(t.limits));
    for (const id of served) {
      if (!snapshot.models.some((m) => m.endpoints.some((e) => e.replicaId === id))) {
        served.delete(id);
      }
    }
    send({ t: 'ack', version: snapshot.version });
  };
  if (initial) install(initial);

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      clearInterval(demandTimer);
      // As the single-process gateway stops: no new connections, every open one closed.
      const closed = server.close();
      server.closeAllConnections();
      await closed;
      await gateway.close();
      board?.close();
      logger.flush();
      process.exit(0);
    })());

  process.on('message', (raw: ToWorker) => {
    switch (raw.t) {
      case 'snapshot':
        install(raw.snapshot);
        break;
      case 'shares':
        gateway.limiter.setShares(new Map(raw.shares));
        break;
      case 'metrics':
        void metrics.registry.getMetricsAsJSON().then(
          (json) => send({ t: 'metrics', id: raw.id, json }),
          (e: unknown) => {
            logger.error({ err: e }, 'metrics collection failed');
            send({ t: 'metrics', id: raw.id, json: [] });
          },
        );
        break;
      case 'picks':
        for (const [replicaId, hashes, extraBlocks] of raw.picks)
          gateway.pipeline?.recordPeer(replicaId, hashes, extraBlocks);
        break;
      case 'stop':
        void stop();
        break;
      default:
        break;
    }
  });
  // The primary going away (even by SIGKILL) closes the IPC channel: do not outlive it.
  process.on('disconnect', () => void stop());
  process.on('SIGTERM', () => void stop());
  process.on('SIGINT', () => {
    /* the primary decides (Ctrl-C reaches the whole process group) */
  });

  await server.listen(config.port, config.host);
  send({ t: 'ready', port: server.address().port });
}

if (cluster.isWorker) {
  process.once('message', (msg: ToWorker) => {
    if (msg.t === 'stop') process.exit(0);
    if (msg.t !== 'init') {
      send({ t: 'failed', message: `expected init, got ${msg.t}` });
      process.exit(1);
    }
    serve(msg.config, msg.snapshot).catch((e: unknown) => {
      send({ t: 'failed', message: e instanceof Error ? e.message : String(e) });
      process.exit(1);
    });
  });
  // Messages sent before a listener exists are dropped: ask for init only now.
  send({ t: 'hello' });
}
