// The gateway in several processes (`up --gateway-workers N`): node:cluster workers share the
// public port (the kernel spreads connections between them) and each runs the whole data plane
// (gateway-worker.ts); this primary keeps the control plane and feeds the workers:
// - routing snapshots, broadcast; `update` resolves once every live worker acknowledged it, so
//   "the gateway holds snapshot v" (readiness, rollouts' traffic shifts) means all of them do;
// - tenant limits split by demand: workers report each tenant's attempts and in-flight requests
//   every round, the LimitShareBalancer turns them into per-worker shares that add up to the
//   tenant's limits (no per-request coordination; see limit-shares.ts for what is approximate);
// - metrics: `metricsJson()` collects every worker's registry for prom-client's aggregation
//   (counters and histograms add up; replica gauges declare their own aggregator);
// - a replica's first relayed byte (cold start), once per replica;
// - approximate-prefix picks, relayed from each worker to the others (see gateway-worker.ts);
// - the load board (load-board.ts): a file on tmpfs where each worker publishes its in-flight
//   requests and pick times per replica and reads the others'; this primary creates it, gives each
//   worker a slot (a replacement takes the dead worker's), empties a dead worker's slot (its
//   requests died with it) and removes the file on close;
// - supervision: a worker that dies is replaced (backoff up to 5 s) and gets the latest snapshot
//   before it counts as live; `close` stops them all, killing one that outstays the grace period.
import cluster, { type Worker } from 'node:cluster';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { MetricObjectWithValues, MetricValue } from 'prom-client';
import { InferplaneError } from '../core/errors.js';
import type { RoutingSnapshot, TenantLimits } from '../core/types.js';
import { LimitShareBalancer } from '../gateway/limit-shares.js';
import type { Logger } from '../telemetry/logger.js';
import { hasLimits } from '../gateway/limits.js';
import {
  boardPath,
  clearBoardSlot,
  createBoardFile,
  removeBoardFile,
  removeStaleBoards,
} from '../gateway/routing/load-board.js';
import type { FromWorker, ToWorker, WorkerConfig } from './gateway-worker.js';

type MetricJson = MetricObjectWithValues<MetricValue<string>>;

/** dist/platform/gateway-worker.js beside this file when compiled; from sources (tests), the built copy. */
function workerScript(): string {
  const beside = fileURLToPath(new URL('./gateway-worker.js', import.meta.url));
  if (existsSync(beside)) return beside;
  return fileURLToPath(new URL('../../dist/platform/gateway-worker.js', import.meta.url));
}

export interface GatewayWorkersOptions {
  count: number;
  /** Everything a worker needs but the worker count. */
  config: Omit<WorkerConfig, 'workers'>;
  logger: Logger;
  onServed?: (replicaId: string) => void;
  /** Called when the live worker count changes, and when a dead worker is being replaced. */
  onWorkers?: (live: number, replaced: boolean) => void;
  /** How long the first start may take (ms). Default 30 s. */
  startTimeoutMs?: number;
  /** How long `close` waits for a worker's requests before killing it (ms). Default 10 s. */
  stopGraceMs?: number;
  /** How long `update` waits for every worker's acknowledgement (ms). Default 10 s. */
  ackTimeoutMs?: number;
}

interface Slot {
  worker: Worker;
  id: string;
  ready: boolean;
  acked: number;
  /** Its slot on the load board. */
  boardSlot: number;
}

export class GatewayWorkers {
  readonly count: number;
  private readonly slots = new Map<string, Slot>();
  private readonly balancer = new LimitShareBalancer();
  private snapshot: RoutingSnapshot | undefined;
  private limits = new Map<string, TenantLimits>();
  private ackWaiters: Array<{ version: number; resolve: () => void }> = [];
  private metricsWaiters = new Map<
    number,
    { pending: Set<string>; got: unknown[]; done: () => void }
  >();
  private nextMetricsId = 1;
  private sharesTimer: NodeJS.Timeout | undefined;
  private stopping = false;
  private restarts: number[] = [];
  private boundPort = 0;
  /** The load board's file (several workers only). */
  private readonly board: string | undefined;

  private constructor(private readonly o: GatewayWorkersOptions) {
    this.count = o.count;
    if (o.count > 1) {
      const stale = removeStaleBoards();
      if (stale.length > 0) o.logger.info({ files: stale }, 'removed stale gateway load boards');
      this.board = boardPath(`inferplane-gw-${process.pid}-${randomBytes(4).toString('hex')}`);
      createBoardFile(this.board, o.count);
    }
  }

  /** Forks the workers and resolves once every one listens (rejects, with none left, if one can't). */
  static async start(o: GatewayWorkersOptions): Promise<GatewayWorkers> {
    if (!cluster.isPrimary) throw new Error('gateway workers are started from the primary');
    const pool = new GatewayWorkers(o);
    const started = Array.from({ length: o.count }, () => pool.fork());
    try {
      const ports = await withTimeout(
        Promise.all(started),
        o.startTimeoutMs ?? 30_000,
        'gateway workers did not start',
      );
      pool.boundPort = ports[0]!;
    } catch (e) {
      await pool.close();
      throw e;
    }
    pool.sharesTimer = setInterval(() => pool.shareRound(), o.config.demandIntervalMs);
    pool.sharesTimer.unref();
    return pool;
  }

  get port(): number {
    return this.boundPort;
  }

  /** Workers serving now (listening, holding a snapshot). */
  get live(): number {
    let n = 0;
    for (const s of this.slots.values()) if (s.ready) n++;
    return n;
  }

  /** Pids of the live worker processes. */
  pids(): number[] {
    return [...this.slots.values()].flatMap((s) =>
      s.worker.process.pid ? [s.worker.process.pid] : [],
    );
  }

  /** The oldest snapshot version any live worker holds (0 before the first). */
  get snapshotVersion(): number {
    let min = Infinity;
    for (const s of this.slots.values()) if (s.ready) min = Math.min(min, s.acked);
    return min === Infinity ? 0 : min;
  }

  /** Sends a snapshot to every worker; resolves when each live one holds it (or after the timeout). */
  update(snapshot: RoutingSnapshot): Promise<void> {
    this.snapshot = snapshot;
    this.limits = new Map((snapshot.tenants ?? []).map((t) => [t.id, t.limits]));
    for (const s of this.slots.values()) if (s.ready) this.post(s, { t: 'snapshot', snapshot });
    if (this.snapshotVersion >= snapshot.version) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.o.logger.warn(
          { version: snapshot.version, held: this.snapshotVersion },
          'not every gateway worker acknowledged the routing snapshot in time',
        );
        resolve();
      }, this.o.ackTimeoutMs ?? 10_000);
      timer.unref();
      this.ackWaiters.push({
        version: snapshot.version,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      });
    });
  }

  /** Every live worker's metrics (prom-client JSON), for AggregatorRegistry.aggregate. */
  metricsJson(timeoutMs = 2000): Promise<MetricJson[][]> {
    const live = [...this.slots.values()].filter((s) => s.ready);
    if (live.length === 0) return Promise.resolve([]);
    const id = this.nextMetricsId++;
    return new Promise((resolve) => {
      const entry = {
        pending: new Set(live.map((s) => s.id)),
        got: [] as unknown[],
        done: () => {
          clearTimeout(timer);
          this.metricsWaiters.delete(id);
          resolve(entry.got as MetricJson[][]);
        },
      };
      // A worker that does not answer in time is left out of this reading, not waited for.
      const timer = setTimeout(entry.done, timeoutMs);
      this.metricsWaiters.set(id, entry);
      for (const s of live) this.post(s, { t: 'metrics', id });
    });
  }

  /** Stops every worker: requests in flight get the grace period, then the rest are killed. */
  async close(): Promise<void> {
    this.stopping = true;
    if (this.sharesTimer) clearInterval(this.sharesTimer);
    const grace = this.o.stopGraceMs ?? 10_000;
    await Promise.all(
      [...this.slots.values()].map(async (s) => {
        const w = s.worker;
        if (w.isDead()) return;
        const exited = new Promise<void>((r) => w.once('exit', () => r()));
        // One still starting may not listen for messages yet: a signal reaches it either way.
        if (s.ready) this.post(s, { t: 'stop' });
        else w.process.kill('SIGTERM');
        const timer = setTimeout(() => w.process.kill('SIGKILL'), grace);
        await exited;
        clearTimeout(timer);
      }),
    );
    this.slots.clear();
    if (this.board) removeBoardFile(this.board);
    for (const w of this.ackWaiters) w.resolve();
    this.ackWaiters = [];
    for (const m of [...this.metricsWaiters.values()]) m.done();
  }

  // ---------------------------------------------------------------------------------------------

  /** Forks one worker; resolves with its port once it listens (and holds the latest snapshot). */
  private fork(): Promise<number> {
    // 'advanced' (structured clone): prefix picks' hashes travel as binary typed arrays.
    cluster.setupPrimary({
      exec: workerScript(),
      args: [],
      execArgv: [],
      silent: false,
      serialization: 'advanced',
    });
    const worker = cluster.fork({ INFERPLANE_GATEWAY_WORKER: '1' });
    const taken = new Set([...this.slots.values()].map((s) => s.boardSlot));
    let boardSlot = 0;
    while (taken.has(boardSlot)) boardSlot++;
    const slot: Slot = {
      worker,
      id: String(worker.id),
      ready: false,
      acked: 0,
      boardSlot,
    };
    this.slots.set(slot.id, slot);
    const config: WorkerConfig = {
      ...this.o.config,
      workers: this.count,
      ...(this.board && boardSlot < this.count
        ? { board: { path: this.board, slot: boardSlot, slots: this.count } }
        : {}),
    };
    return new Promise((resolve, reject) => {
      let settled = false;
      worker.on('message', (msg: FromWorker) => {
        switch (msg.t) {
          case 'hello':
            this.post(
              slot,
              this.stopping
                ? { t: 'stop' }
                : { t: 'init', config, ...(this.snapshot ? { snapshot: this.snapshot } : {}) },
            );
            break;
          case 'ready':
            slot.ready = true;
            this.o.onWorkers?.(this.live, false);
            // One published while it started (it acknowledged the one in init before this).
            if (this.snapshot && slot.acked < this.snapshot.version) {
              this.post(slot, { t: 'snapshot', snapshot: this.snapshot });
            }
            if (!settled) {
              settled = true;
              resolve(msg.port);
            }
            break;
          case 'failed':
            if (!settled) {
              settled = true;
              reject(workerFailure(msg.message, this.o.config));
            } else
              this.o.logger.error({ worker: slot.id, err: msg.message }, 'gateway worker failed');
            break;
          default:
            this.onMessage(slot, msg);
        }
      });
      worker.on('exit', (code, signal) => {
        this.slots.delete(slot.id);
        this.balancer.removeWorker(slot.id);
        // Its requests died with it.
        if (this.board && slot.boardSlot < this.count) clearBoardSlot(this.board, slot.boardSlot);
        this.settleAcks();
        for (const m of this.metricsWaiters.values()) {
          if (m.pending.delete(slot.id) && m.pending.size === 0) m.done();
        }
        if (!settled) {
          settled = true;
          reject(
            new Error(`gateway worker exited while starting (code ${code}, signal ${signal})`),
          );
          return;
        }
        if (this.stopping) return;
        this.o.logger.error({ worker: slot.id, code, signal }, 'gateway worker died; replacing it');
        this.o.onWorkers?.(this.live, true);
        this.replace();
      });
    });
  }

  private replace(): void {
    const now = Date.now();
    this.restarts = this.restarts.filter((t) => now - t < 60_000);
    this.restarts.push(now);
    const delay = Math.min(5000, 250 * 2 ** (this.restarts.length - 1));
    setTimeout(() => {
      if (this.stopping) return;
      this.fork().catch((e: unknown) => {
        this.o.logger.error({ err: e }, 'a replacement gateway worker failed to start');
        if (!this.stopping) this.replace();
      });
    }, delay).unref();
  }

  private onMessage(slot: Slot, msg: FromWorker): void {
    switch (msg.t) {
      case 'ack':
        slot.acked = Math.max(slot.acked, msg.version);
        this.settleAcks();
        break;
      case 'demand':
        this.balancer.report(slot.id, new Map(msg.demand));
        break;
      case 'metrics': {
        const m = this.metricsWaiters.get(msg.id);
        if (m && m.pending.delete(slot.id)) {
          m.got.push(msg.json);
          if (m.pending.size === 0) m.done();
        }
        break;
      }
      case 'served':
        this.o.onServed?.(msg.replicaId);
        break;
      case 'picks':
        // Prefix picks go to every other worker's approximate index.
        for (const s of this.slots.values()) {
          if (s !== slot && s.ready) this.post(s, { t: 'picks', picks: msg.picks });
        }
        break;
      default:
        break;
    }
  }

  private settleAcks(): void {
    if (this.ackWaiters.length === 0) return;
    const held = this.snapshotVersion;
    const waiting: typeof this.ackWaiters = [];
    for (const w of this.ackWaiters) {
      if (held >= w.version || this.slots.size === 0) w.resolve();
      else waiting.push(w);
    }
    this.ackWaiters = waiting;
  }

  /** One round of limit shares: each worker gets its part of every limited tenant. */
  private shareRound(): void {
    if (![...this.limits.values()].some(hasLimits)) return;
    const shares = this.balancer.compute(this.limits);
    for (const [id, tenants] of shares) {
      const s = this.slots.get(id);
      if (s?.ready) this.post(s, { t: 'shares', shares: [...tenants] });
    }
  }

  private post(slot: Slot, msg: ToWorker): void {
    if (!slot.worker.isConnected()) return;
    try {
      slot.worker.send(msg);
    } catch (e) {
      this.o.logger.warn({ worker: slot.id, err: e }, 'could not message a gateway worker');
    }
  }
}

function workerFailure(message: string, config: Omit<WorkerConfig, 'workers'>): Error {
  if (message.includes('EADDRINUSE')) {
    return new InferplaneError(
      'IP_CONFLICT',
      `port ${config.port} on ${config.host} is already in use; choose another with --port (0 picks a free one)`,
    );
  }
  return new Error(`a gateway worker failed to start: ${message}`);
}

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} in ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
