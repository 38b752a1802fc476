// The composition root for one machine: store, tenancy, inventory (with a simulated node
// agent), runtime, deployment controller, gateway and API on one HTTP port. With
// `gatewayWorkers` > 1 the gateway runs in that many worker processes sharing the port
// (gateway-workers.ts); this process keeps the control plane on a loopback listener they relay to.
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { getRequestListener } from '@hono/node-server';
import { AggregatorRegistry, type Registry } from 'prom-client';
import { Hono } from 'hono';
import { createApi } from '../api/app.js';
import { InferplaneError, toInferplaneError } from '../core/errors.js';
import { newApiKey } from '../core/ids.js';
import { processAlive } from '../core/process.js';
import type { DeploymentSpecInput } from '../core/schemas.js';
import type { RoutingSnapshot } from '../core/types.js';
import { DeploymentController, type ArtifactSource } from '../deploy/controller.js';
import type { RolloutManager } from '../deploy/rollout.js';
import { DeploymentService } from '../deploy/service.js';
import { Gateway } from '../gateway/gateway.js';
import type { H1Server } from '../gateway/h1/server.js';
import { LocalDriver } from '../runtime/local.js';
import { Inventory } from '../schedule/inventory.js';
import { PackPlacer } from '../schedule/placement.js';
import { openStore, type Db } from '../store/db.js';
import { createLogger, type Logger } from '../telemetry/logger.js';
import { createMetrics } from '../telemetry/metrics.js';
import { createTracing } from '../telemetry/tracing.js';
import { ArtifactCache, AuditLog, ModelRegistry } from '../registry/index.js';
import { registryVersionStats } from '../telemetry/version-stats.js';
import { TenancyService } from '../tenancy/tenancy.js';
import type { PlatformConfig } from './config.js';
import { GatewayWorkers } from './gateway-workers.js';
import { startNodeAgent } from './node-agent.js';

export const DEMO_TENANT = 'demo';
export const DEMO_DEPLOYMENT = 'demo-llama-8b';

export interface Platform {
  readonly url: string;
  readonly port: number;
  readonly config: PlatformConfig;
  /** Set when this start generated the operator key (printed once, never stored in plaintext). */
  readonly generatedAdminKey: string | undefined;
  readonly demo: { tenant: string; key: string; deployment: string } | undefined;
  readonly logger: Logger;
  readonly deployments: DeploymentService;
  /** Resolves when the named deployment has all replicas ready (false on timeout). */
  waitReady(deployment: string, timeoutMs: number): Promise<boolean>;
  stop(): Promise<void>;
}

export async function startPlatform(
  config: PlatformConfig,
  opts: {
    version: string;
    logger?: Logger;
    /** Where gateway workers append their JSON logs (the logger's own destination). Default stdout. */
    logDestination?: string | number;
  },
): Promise<Platform> {
  mkdirSync(config.stateDir, { recursive: true });
  const logger = opts.logger ?? createLogger({ level: config.logLevel });
  const releaseLock = lockStateDir(config.stateDir);
  let db: Db;
  try {
    db = await openStore({ sqlitePath: join(config.stateDir, 'inferplane.db') });
  } catch (e) {
    releaseLock();
    throw e;
  }
  const metrics = createMetrics();
  const tenancy = new TenancyService(db);
  const inventory = new Inventory(db);
  const placer = new PackPlacer();
  const driver = new LocalDriver({ logDir: join(config.stateDir, 'logs'), logger });
  // The model registry and the hash-chained audit log of every change.
  const audit = new AuditLog(db);
  const registry = new ModelRegistry(db, audit);
  // The node's artifact cache: registered model versions are fetched here and verified.
  // Copies, not hard links: a later in-place edit of the source must not reach verified bytes.
  const artifactCache = new ArtifactCache({
    dir: join(config.stateDir, 'artifacts'),
    hardLink: false,
  });
  const artifacts: ArtifactSource = {
    async check(tenant, name, version) {
      await registry.resolve({ tenant, name, version });
    },
    async fetch(tenant, name, version, onProgress) {
      const v = await registry.resolve({ tenant, name, version });
      const a = v.artifacts[0];
      if (!a) {
        throw new InferplaneError('IP_VALIDATION', `${name}@${version} has no artifact`);
      }
      return artifactCache.ensure(a, (p) => onProgress?.(p.phase, p.bytes, p.total ?? undefined));
    },
  };
  const tracing = createTracing(
    {
      ...config.tracing,
      onError: (e) => logger.warn({ err: e }, 'trace export failed'),
    },
    opts.version,
  );
  // One gateway in this process, or (gatewayWorkers > 1) worker processes started by `listen`.
  const gateway =
    config.gatewayWorkers > 1
      ? undefined
      : new Gateway({
          metrics,
          logger,
          tracing,
          routing: { scrapeIntervalMs: config.signalIntervalMs, staleMs: config.signalStaleMs },
          // The gateway reports first bytes to the controller (cold start: first token). Requests
          // arrive only after the controller below exists.
          onServed: (id) => controller.noteServed(id),
        });
  let workers: GatewayWorkers | undefined;
  // The metrics of this process and of every gateway worker, summed (prom-client aggregation).
  const registryNow = async (): Promise<Registry> =>
    workers
      ? AggregatorRegistry.aggregate([
          await metrics.registry.getMetricsAsJSON(),
          ...(await workers.metricsJson()),
        ])
      : metrics.registry;
  let latestSnapshot: RoutingSnapshot | undefined;
  const install = async (snapshot: RoutingSnapshot): Promise<void> => {
    latestSnapshot = snapshot;
    if (gateway) gateway.update(snapshot);
    else if (workers) await workers.update(snapshot);
  };
  const snapshotVersion = (): number => gateway?.snapshotVersion ?? workers?.snapshotVersion ?? 0;

  // Routing snapshots: rebuilt (coalesced) whenever keys, deployments or replicas change.
  let published = 0;
  let publishing: Promise<void> | undefined;
  let republish = false;
  const publish = (): void => {
    if (publishing) {
      republish = true;
      return;
    }
    publishing = (async () => {
      do {
        republish = false;
        await install(
          await buildRoutingSnapshot(++published, tenancy, deployments, controller.rollouts),
        );
      } while (republish);
    })()
      .catch((e: unknown) => logger.error({ err: e }, 'routing snapshot failed'))
      .finally(() => {
        publishing = undefined;
      });
  };

  // Resolves once the gateway holds a snapshot built after this call (rollouts: traffic shifts
  // before a teardown).
  const publishNow = async (): Promise<void> => {
    publish();
    while (publishing) await publishing;
  };

  const controller = new DeploymentController({
    db,
    inventory,
    placer,
    driver,
    logger,
    onChange: publish,
    publishNow,
    versionStats: registryVersionStats(
      metrics,
      config.gatewayWorkers > 1 ? registryNow : undefined,
    ),
    artifacts,
    onColdStartPhase: (deployment, phase, seconds) =>
      metrics.coldStart.observe({ deployment, phase }, seconds),
  });
  const deployments = new DeploymentService(
    db,
    tenancy,
    inventory,
    placer,
    controller,
    driver,
    audit,
  );

  // The node agent of this machine (simulated GPUs, or the real ones with --agent nvidia).
  const agent = await startNodeAgent(config, { inventory, metrics, logger });
  const node = agent.node;

  let ready = false;
  const app = new Hono();
  // With gateway workers, /v1 never reaches this process: the workers serve it.
  if (gateway) app.route('/v1', gateway.routes());
  app.route(
    '/api/v1',
    createApi({
      tenancy,
      deployments,
      inventory,
      registry,
      audit,
      metricsText: async () => {
        await refreshGauges(db, metrics, node.name);
        return (await registryNow()).metrics();
      },
      logger,
      onChange: publish,
      version: opts.version,
    }),
  );
  app.get('/metrics', async (c) => {
    await refreshGauges(db, metrics, node.name);
    return c.body(await (await registryNow()).metrics(), 200, {
      'content-type': metrics.registry.contentType,
    });
  });
  app.get('/healthz', (c) => c.json({ status: 'ok' }));
  app.get('/readyz', (c) =>
    ready
      ? c.json({
          status: 'ready',
          snapshot: snapshotVersion(),
          ...(workers ? { gatewayWorkers: { live: workers.live, configured: workers.count } } : {}),
        })
      : c.json({ status: 'shutting down' }, 503),
  );
  app.get('/', (c) =>
    c.json({
      name: 'inferplane',
      version: opts.version,
      openai: '/v1',
      api: '/api/v1',
      openapi: '/api/v1/openapi.json',
      metrics: '/metrics',
    }),
  );

  // Listen before starting engines, so a taken port fails fast with nothing left running.
  let server: H1Server | HttpServer;
  try {
    if (gateway) server = await listen(app, gateway, config);
    else {
      // The control plane on loopback, for the workers to relay to; then the workers.
      server = await listenInternal(app);
      const internalPort = (server.address() as AddressInfo).port;
      try {
        workers = await GatewayWorkers.start({
          count: config.gatewayWorkers,
          logger,
          onServed: (id) => controller.noteServed(id),
          onWorkers: (live, replaced) => {
            metrics.gatewayWorkers.set({ state: 'live' }, live);
            if (replaced) metrics.gatewayWorkerRestarts.inc();
          },
          config: {
            port: config.port,
            host: config.host,
            primaryUrl: `http://127.0.0.1:${internalPort}`,
            demandIntervalMs: config.limitShareIntervalMs,
            logLevel: config.logLevel,
            logDestination: opts.logDestination ?? 1,
            tracing: config.tracing,
            version: opts.version,
            routing: { scrapeIntervalMs: config.signalIntervalMs, staleMs: config.signalStaleMs },
          },
        });
      } catch (e) {
        server.close();
        throw e;
      }
      if (latestSnapshot) await workers.update(latestSnapshot);
      metrics.gatewayWorkers.set({ state: 'configured' }, config.gatewayWorkers);
    }
  } catch (e) {
    agent.stop();
    await db.destroy();
    releaseLock();
    throw e;
  }
  const generatedAdminKey = await bootstrapAdminKey(tenancy, config);
  await controller.start();
  const demo = config.demo ? await bootstrapDemo(tenancy, deployments, config, logger) : undefined;
  publish();
  ready = true;

  const port = workers ? workers.port : (server.address() as AddressInfo).port;
  const host = config.host === '0.0.0.0' || config.host === '::' ? '127.0.0.1' : config.host;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
  logger.info({ url, stateDir: config.stateDir, gpus: config.gpus }, 'inferplane up');

  let stopping: Promise<void> | undefined;
  return {
    url,
    port,
    config,
    generatedAdminKey,
    demo,
    logger,
    deployments,
    async waitReady(name, timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        const list = await deployments.list({ kind: 'operator', keyId: 'internal' });
        const d = list.find((x) => x.name === name);
        if (d && d.replicas.ready >= d.replicas.desired) return true;
        await new Promise((r) => setTimeout(r, 100));
      }
      return false;
    },
    stop() {
      stopping ??= (async () => {
        ready = false;
        logger.info('stopping');
        agent.stop();
        await controller.stop();
        await workers?.close();
        const closed =
          'net' in server ? server.close() : new Promise<void>((r) => server.close(() => r()));
        server.closeAllConnections();
        await closed;
        await gateway?.close();
        await artifactCache.close();
        await db.destroy();
        releaseLock();
        logger.info('stopped');
        logger.flush();
      })();
      return stopping;
    },
  };
}

/**
 * One routing snapshot from the store: keys, model routes and every tenant with its limits.
 * Republished (via `publish`) after key, tenant, limits, deployment and replica changes.
 */
export async function buildRoutingSnapshot(
  version: number,
  tenancy: Pick<TenancyService, 'keyEntries' | 'tenantRoutes'>,
  deployments: Pick<DeploymentService, 'routes'>,
  rollouts?: Pick<RolloutManager, 'decorate'>,
): Promise<RoutingSnapshot> {
  const models = await deployments.routes();
  return {
    version,
    keys: await tenancy.keyEntries(),
    // Endpoints tagged with their version; canary version weights during a rollout.
    models: rollouts ? await rollouts.decorate(models) : models,
    tenants: await tenancy.tenantRoutes(),
  };
}

/** The control plane's listener for gateway workers to relay to (loopback, a free port). */
async function listenInternal(app: Hono): Promise<HttpServer> {
  const s = createHttpServer(getRequestListener(app.fetch));
  s.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      s.off('error', reject);
      resolve();
    });
  });
  return s;
}

async function listen(app: Hono, gateway: Gateway, config: PlatformConfig): Promise<H1Server> {
  // The inference routes go to the gateway's raw serving path; the rest (API, metrics, model
  // listing) through Hono on node:http.
  const s = gateway.server(getRequestListener(app.fetch), { keepAliveTimeoutMs: 65_000 });
  try {
    await s.listen(config.port, config.host);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      throw new InferplaneError(
        'IP_CONFLICT',
        `port ${config.port} on ${config.host} is already in use; choose another with --port (0 picks a free one)`,
      );
    }
    throw e;
  }
  return s;
}

/**
 * One platform per state dir: a lock file holds the owner's pid. A lock left by a process that
 * is gone is taken over. Returns the release function.
 */
function lockStateDir(stateDir: string): () => void {
  const path = join(stateDir, 'lock');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, 'wx');
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return () => rmSync(path, { force: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const pid = Number(readFileSync(path, 'utf8').trim());
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && processAlive(pid)) {
        throw new InferplaneError(
          'IP_CONFLICT',
          `state dir ${stateDir} is in use by another inferplane (pid ${pid}); stop it or use --state-dir`,
        );
      }
      rmSync(path, { force: true });
    }
  }
  throw new InferplaneError('IP_CONFLICT', `could not lock state dir ${stateDir}`);
}

async function refreshGauges(
  db: Db,
  metrics: ReturnType<typeof createMetrics>,
  nodeName: string,
): Promise<void> {
  const rows = await db
    .selectFrom('replicas as r')
    .innerJoin('deployments as d', 'd.id', 'r.deployment_id')
    .select(['d.name', 'r.state', 'r.node', 'r.gpus'])
    .execute();
  metrics.replicas.reset();
  const counts = new Map<string, number>();
  for (const r of rows) {
    const k = `${r.name}\u0000${r.state}`;
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  for (const [k, n] of counts) {
    const [deployment = '', state = ''] = k.split('\u0000');
    metrics.replicas.set({ deployment, state }, n);
  }
  const node = await db
    .selectFrom('nodes')
    .select(['gpus'])
    .where('name', '=', nodeName)
    .executeTakeFirst();
  const taken = new Set(
    rows.filter((r) => r.node === nodeName).flatMap((r) => JSON.parse(r.gpus) as number[]),
  );
  for (const g of JSON.parse(node?.gpus ?? '[]') as Array<{ index: number; type: string }>) {
    metrics.gpuAllocated.set(
      { node: nodeName, gpu: String(g.index), type: g.type },
      taken.has(g.index) ? 1 : 0,
    );
  }
}

async function bootstrapAdminKey(
  tenancy: TenancyService,
  config: PlatformConfig,
): Promise<string | undefined> {
  const fromEnv = config.adminKey;
  if (fromEnv) {
    await tenancy.ensureOperatorKey(fromEnv);
    return undefined;
  }
  if ((await tenancy.hasOperatorKey()) && !config.rotateAdminKey) return undefined;
  const key = newApiKey();
  await tenancy.createKey(null, 'generated operator key', key);
  return key;
}

async function bootstrapDemo(
  tenancy: TenancyService,
  deployments: DeploymentService,
  config: PlatformConfig,
  logger: Logger,
): Promise<Platform['demo']> {
  const keyFile = join(config.stateDir, 'demo.key');
  if (await tenancy.findTenant(DEMO_TENANT)) {
    // Created on an earlier start; the demo key is kept beside the state (demo convenience).
    if (!existsSync(keyFile)) return undefined;
    return {
      tenant: DEMO_TENANT,
      key: readFileSync(keyFile, 'utf8').trim(),
      deployment: DEMO_DEPLOYMENT,
    };
  }
  await tenancy.createTenant(DEMO_TENANT);
  const { key } = await tenancy.createKey(DEMO_TENANT, 'demo key');
  writeFileSync(keyFile, key + '\n', { mode: 0o600 });
  const spec: DeploymentSpecInput = {
    name: DEMO_DEPLOYMENT,
    tenant: DEMO_TENANT,
    model: 'llama-3.1-8b',
    engine: { name: 'sim', args: {} },
    replicas: 2,
    resources: { gpus: 1, gpuType: config.gpuType },
  };
  try {
    await deployments.apply(spec, { kind: 'operator', keyId: 'bootstrap' });
  } catch (e) {
    logger.warn({ err: toInferplaneError(e).message }, 'demo deployment not created');
  }
  return { tenant: DEMO_TENANT, key, deployment: DEMO_DEPLOYMENT };
}
