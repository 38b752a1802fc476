// Helpers for integration tests: they start the real CLI (`bin/inferplane.js`, built to dist/)
// as child processes on ephemeral ports, with a fresh state dir, and stop them afterwards.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';

export const ROOT = resolve(import.meta.dirname, '..', '..');
export const BIN = join(ROOT, 'bin', 'inferplane.js');
export const ADMIN_KEY = 'ipk_test_admin_key_0123456789abcdef';

export interface UpInfo {
  url: string;
  stateDir: string;
  adminKey: string | null;
  demo: { tenant: string; key: string; deployment: string; ready: boolean } | null;
  pid: number;
}

export interface UpProcess {
  info: UpInfo;
  child: ChildProcess;
  output: () => string;
  /** Sends a signal and resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export function tempStateDir(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'inferplane-test-'));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Starts `inferplane up --json --port 0` and waits for its ready line. */
export async function startUp(
  stateDir: string,
  extra: string[] = [],
  timeoutMs = 60_000,
): Promise<UpProcess> {
  const child = spawn(
    process.execPath,
    [BIN, 'up', '--port', '0', '--json', '--state-dir', stateDir, '--gpus', '4', ...extra],
    {
      env: { ...process.env, INFERPLANE_ADMIN_KEY: ADMIN_KEY },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const info = await new Promise<UpInfo>((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`up did not get ready:\n${out}`)), timeoutMs);
    const rl = createInterface({ input: child.stdout });
    rl.on('line', (line) => {
      out += line + '\n';
      if (!line.startsWith('{')) return;
      clearTimeout(timer);
      resolvePromise(JSON.parse(line) as UpInfo);
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`up exited with ${code} before ready:\n${out}`));
    });
  });
  return {
    info,
    child,
    output: () => out,
    async stop(signal: NodeJS.Signals = 'SIGINT') {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill(signal);
      return exited;
    },
  };
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI against `url` with `key`; `input` is piped to stdin. */
export function cli(
  args: string[],
  opts: { url: string; key?: string; input?: string },
): Promise<CliResult> {
  return new Promise((resolvePromise) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      env: {
        ...process.env,
        INFERPLANE_URL: opts.url,
        INFERPLANE_API_KEY: opts.key ?? '',
      },
      stdio: ['pipe', 'pipe', 'pipe'],
      cwd: ROOT,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdin.end(opts.input ?? '');
    child.once('exit', (code) => resolvePromise({ code, stdout, stderr }));
  });
}

export async function api<T = unknown>(
  url: string,
  key: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; body: T; headers: Headers }> {
  const res = await fetch(url + path, {
    method,
    headers: {
      authorization: `Bearer ${key}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // plain text
  }
  return { status: res.status, body: parsed as T, headers: res.headers };
}

/** Polls `fn` until it returns a truthy value or the time runs out. */
export async function waitFor<T>(
  fn: () => Promise<T | undefined | false | null>,
  what: string,
  timeoutMs = 20_000,
  intervalMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  const why = last instanceof Error ? `: ${last.message}` : '';
  throw new Error(`timed out waiting for ${what}${why}`);
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export interface ReplicaView {
  id: string;
  index: number;
  state: string;
  port: number | null;
  pid: number | null;
  restarts: number;
  node: string | null;
  gpus: number[];
}

export interface DeploymentDetail {
  spec: Record<string, unknown>;
  summary: { name: string; phase: string; replicas: { desired: number; ready: number } };
  replicas: ReplicaView[];
  events: Array<{ reason: string; message: string; type: string }>;
}
