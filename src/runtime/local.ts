// The `local` runtime driver: each replica's engine is a child process on its own port.
// It health-checks the engine, restarts it with exponential backoff when it dies or hangs,
// keeps its output in a log file, and stops it gracefully (SIGTERM, then SIGKILL).
import { spawn, type ChildProcess } from 'node:child_process';
import {
  closeSync,
  copyFileSync,
  mkdirSync,
  openSync,
  statSync,
  truncateSync,
  writeSync,
} from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { isoNow } from '../core/clock.js';
import type { ReplicaState } from '../core/types.js';
import type { ReplicaLaunchSpec, ReplicaStatus, RuntimeDriver, StatusListener } from './driver.js';
import { freePort } from './ports.js';

export interface LocalDriverOptions {
  /** Folder for engine logs (`<logDir>/<deployment>/replica-<index>.log`). */
  logDir: string;
  host?: string;
  logger: Logger;
  /** Health probe interval once ready. */
  probeIntervalMs?: number;
  /** Consecutive failed probes before the replica counts as unhealthy / is restarted. */
  unhealthyAfter?: number;
  restartAfter?: number;
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  /** Time a replica must stay ready before its backoff resets. */
  stableAfterMs?: number;
  stopGraceMs?: number;
  /** An engine log larger than this is moved to `<log>.1` (checked every 10 s and at start). */
  maxLogBytes?: number;
}

interface Managed {
  spec: ReplicaLaunchSpec;
  status: ReplicaStatus;
  child: ChildProcess | undefined;
  stopping: boolean;
  failures: number;
  probeFailures: number;
  readySince: number;
  timer: NodeJS.Timeout | undefined;
  exited: Promise<void> | undefined;
}

export class LocalDriver implements RuntimeDriver {
  private readonly replicas = new Map<string, Managed>();
  private readonly listeners: StatusListener[] = [];
  private readonly opts: Required<Omit<LocalDriverOptions, 'logger'>>;
  private readonly log: Logger;

  constructor(options: LocalDriverOptions) {
    this.log = options.logger;
    this.opts = {
      logDir: options.logDir,
      host: options.host ?? '127.0.0.1',
      probeIntervalMs: options.probeIntervalMs ?? 2000,
      unhealthyAfter: options.unhealthyAfter ?? 2,
      restartAfter: options.restartAfter ?? 5,
      backoffBaseMs: options.backoffBaseMs ?? 500,
      backoffMaxMs: options.backoffMaxMs ?? 30_000,
      stableAfterMs: options.stableAfterMs ?? 30_000,
      stopGraceMs: options.stopGraceMs ?? 5000,
      maxLogBytes: options.maxLogBytes ?? 20 * 1024 * 1024,
    };
  }

  private rotator: NodeJS.Timeout | undefined;

  private startRotator(): void {
    if (this.rotator) return;
    this.rotator = setInterval(() => {
      for (const m of this.replicas.values()) {
        rotateIfLarge(this.logPath(m.spec.deployment, m.spec.index), this.opts.maxLogBytes);
      }
    }, 10_000);
    this.rotator.unref();
  }

  onStatus(listener: StatusListener): void {
    this.listeners.push(listener);
  }

  status(replicaId: string): ReplicaStatus | undefined {
    const m = this.replicas.get(replicaId);
    return m ? { ...m.status } : undefined;
  }

  list(): ReplicaStatus[] {
    return [...this.replicas.values()].map((m) => ({ ...m.status }));
  }

  start(spec: ReplicaLaunchSpec): void {
    if (this.replicas.has(spec.replicaId)) return;
    this.startRotator();
    const m: Managed = {
      spec,
      status: {
        replicaId: spec.replicaId,
        deployment: spec.deployment,
        index: spec.index,
        state: 'pending',
        url: null,
        port: null,
        pid: null,
        restarts: 0,
        startedAt: null,
        lastError: null,
      },
      child: undefined,
      stopping: false,
      failures: 0,
      probeFailures: 0,
      readySince: 0,
      timer: undefined,
      exited: undefined,
    };
    this.replicas.set(spec.replicaId, m);
    this.launch(m).catch((e: unknown) => this.failLaunch(m, e));
  }

  async stop(replicaId: string): Promise<void> {
    const m = this.replicas.get(replicaId);
    if (!m) return;
    m.stopping = true;
    clearTimeout(m.timer);
    this.update(m, 'stopping', 'Stopping', 'stopping engine');
    await this.terminate(m);
    this.replicas.delete(replicaId);
    this.update(m, 'stopped', 'Stopped', 'engine stopped', { url: null, port: null, pid: null });
  }

  async shutdown(): Promise<void> {
    clearInterval(this.rotator);
    this.rotator = undefined;
    await Promise.all([...this.replicas.keys()].map((id) => this.stop(id)));
  }

  logs(deployment: string, index: number, tail: number): Promise<string> {
    return tailFile(this.logPath(deployment, index), tail);
  }

  private logPath(deployment: string, index: number): string {
    return join(this.opts.logDir, deployment, `replica-${index}.log`);
  }

  private emit(m: Managed, reason: string, message: string): void {
    for (const l of this.listeners) {
      try {
        l({ ...m.status }, reason, message);
      } catch (e) {
        this.log.error({ err: e }, 'runtime status listener failed');
      }
    }
  }

  private update(
    m: Managed,
    state: ReplicaState,
    reason: string,
    message: string,
    patch: Partial<ReplicaStatus> = {},
  ): void {
    m.status = { ...m.status, ...patch, state };
    this.emit(m, reason, message);
  }

  private async launch(m: Managed): Promise<void> {
    if (m.stopping) return;
    const { spec } = m;
    const host = this.opts.host;
    const port = await freePort(host);
    if (m.stopping) return;
    const cmd = spec.engine.launch({ ...spec.launch, host, port });
    const logPath = this.logPath(spec.deployment, spec.index);
    mkdirSync(join(this.opts.logDir, spec.deployment), { recursive: true });
    rotateIfLarge(logPath, this.opts.maxLogBytes);
    const fd = openSync(logPath, 'a');
    writeSync(
      fd,
      `\n=== ${isoNow()} start (restarts=${m.status.restarts}): ${cmd.command} ${cmd.args.join(' ')}\n`,
    );
    let child: ChildProcess;
    try {
      child = spawn(cmd.command, cmd.args, {
        env: {
          ...process.env,
          ...cmd.env,
          INFERPLANE_REPLICA_ID: spec.replicaId,
        },
        stdio: ['pipe', fd, fd],
      });
    } finally {
      closeSync(fd);
    }
    m.child = child;
    // The engine reads stdin to notice the platform's death (INFERPLANE_PARENT_STDIN): keep the
    // pipe open and never write to it.
    child.stdin?.on('error', () => undefined);
    m.exited = new Promise<void>((resolve) => {
      child.once('exit', (code, signal) => {
        resolve();
        this.onExit(m, child, code, signal);
      });
    });
    child.once('error', (err) => {
      m.status.lastError = `spawn failed: ${err.message}`;
    });
    const url = `http://${host}:${port}`;
    this.update(m, 'starting', 'Starting', `engine starting on ${url} (pid ${child.pid ?? '?'})`, {
      url,
      port,
      pid: child.pid ?? null,
      startedAt: isoNow(),
    });
    this.log.info(
      { deployment: spec.deployment, replica: spec.index, pid: child.pid, port },
      'engine starting',
    );
    void this.waitHealthy(m, child, url);
  }

  private failLaunch(m: Managed, e: unknown): void {
    const msg = e instanceof Error ? e.message : String(e);
    m.status.lastError = `launch failed: ${msg}`;
    this.scheduleRestart(m, m.status.lastError);
  }

  private async waitHealthy(m: Managed, child: ChildProcess, url: string): Promise<void> {
    const deadline = Date.now() + m.spec.engine.startTimeoutMs;
    while (!m.stopping && m.child === child && child.exitCode === null) {
      if (await probe(url + m.spec.engine.healthPath, 1000)) {
        if (m.stopping || m.child !== child) return;
        m.readySince = Date.now();
        m.probeFailures = 0;
        this.update(m, 'ready', 'Ready', `engine ready on ${url}`, {
          lastError: m.status.lastError,
        });
        this.scheduleProbe(m, child, url);
        return;
      }
      if (Date.now() > deadline) {
        m.status.lastError = `engine did not become healthy within ${m.spec.engine.startTimeoutMs} ms`;
        this.log.warn({ deployment: m.spec.deployment, replica: m.spec.index }, m.status.lastError);
        child.kill('SIGKILL');
        return;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  private scheduleProbe(m: Managed, child: ChildProcess, url: string): void {
    m.timer = setTimeout(() => {
      void this.liveness(m, child, url);
    }, this.opts.probeIntervalMs);
  }

  private async liveness(m: Managed, child: ChildProcess, url: string): Promise<void> {
    if (m.stopping || m.child !== child) return;
    const ok = await probe(
      url + m.spec.engine.healthPath,
      Math.min(2000, this.opts.probeIntervalMs),
    );
    if (m.stopping || m.child !== child) return;
    if (ok) {
      m.probeFailures = 0;
      if (m.status.state === 'unhealthy') {
        m.readySince = Date.now();
        this.update(m, 'ready', 'Recovered', 'engine answers its health check again');
      }
      if (Date.now() - m.readySince > this.opts.stableAfterMs) m.failures = 0;
    } else {
      m.probeFailures += 1;
      if (m.probeFailures >= this.opts.restartAfter) {
        m.status.lastError = `health check failed ${m.probeFailures} times in a row`;
        this.log.warn(
          { deployment: m.spec.deployment, replica: m.spec.index },
          'killing hung engine',
        );
        child.kill('SIGKILL');
        return;
      }
      if (m.probeFailures >= this.opts.unhealthyAfter && m.status.state === 'ready') {
        this.update(m, 'unhealthy', 'Unhealthy', `health check failed ${m.probeFailures} times`);
      }
    }
    this.scheduleProbe(m, child, url);
  }

  private onExit(
    m: Managed,
    child: ChildProcess,
    code: number | null,
    signal: NodeJS.Signals | null,
  ): void {
    if (m.child !== child) return;
    m.child = undefined;
    clearTimeout(m.timer);
    if (m.stopping) return;
    const how = signal ? `killed by ${signal}` : `exited with code ${code}`;
    const lastError =
      m.status.lastError?.startsWith('engine did not') ||
      m.status.lastError?.startsWith('health check')
        ? `${m.status.lastError}; ${how}`
        : `engine ${how}`;
    m.status.lastError = lastError;
    this.log.warn(
      { deployment: m.spec.deployment, replica: m.spec.index, code, signal },
      'engine exited',
    );
    this.scheduleRestart(m, lastError);
  }

  private scheduleRestart(m: Managed, why: string): void {
    if (m.stopping) return;
    const delay = Math.min(this.opts.backoffMaxMs, this.opts.backoffBaseMs * 2 ** m.failures);
    m.failures += 1;
    this.update(
      m,
      'restarting',
      'BackOff',
      `${why}; restarting in ${(delay / 1000).toFixed(1)} s`,
      { url: null, port: null, pid: null, restarts: m.status.restarts + 1 },
    );
    m.timer = setTimeout(() => {
      this.launch(m).catch((e: unknown) => this.failLaunch(m, e));
    }, delay);
  }

  private async terminate(m: Managed): Promise<void> {
    const child = m.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const killer = setTimeout(() => child.kill('SIGKILL'), this.opts.stopGraceMs);
    await m.exited;
    clearTimeout(killer);
  }
}

/**
 * Copy-and-truncate rotation: the engine keeps writing to its O_APPEND descriptor, so after the
 * truncation its next line lands at the start of the emptied file.
 */
function rotateIfLarge(path: string, maxBytes: number): void {
  try {
    if (statSync(path).size <= maxBytes) return;
    copyFileSync(path, `${path}.1`);
    truncateSync(path, 0);
  } catch {
    // no log yet, or it vanished: nothing to rotate
  }
}

async function probe(url: string, timeoutMs: number): Promise<boolean> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    await res.body?.cancel();
    return res.ok;
  } catch {
    return false;
  }
}

/** The last `lines` lines of a file (reads at most the last 4 MiB). */
async function tailFile(path: string, lines: number): Promise<string> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch {
    return '';
  }
  try {
    const { size } = await fh.stat();
    const len = Math.min(size, 4 * 1024 * 1024);
    const buf = Buffer.alloc(len);
    await fh.read(buf, 0, len, size - len);
    const all = buf.toString('utf8').split('\n');
    if (all.at(-1) === '') all.pop();
    return all.slice(-lines).join('\n') + (all.length ? '\n' : '');
  } finally {
    await fh.close();
  }
}

/** Kills an engine left over from a platform that died without stopping it (Linux only). */
export async function killStaleEngine(pid: number, replicaId: string): Promise<boolean> {
  try {
    const environ = await readFile(`/proc/${pid}/environ`, 'utf8');
    if (!environ.split('\0').includes(`INFERPLANE_REPLICA_ID=${replicaId}`)) return false;
    process.kill(pid, 'SIGKILL');
    return true;
  } catch {
    return false;
  }
}
