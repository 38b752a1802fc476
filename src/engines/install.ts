// Builds llama.cpp's `llama-server` from the source the `node-llama-cpp` npm package ships
// (`llama/gitRelease.bundle`, a git bundle), fetched with `npm pack` at install time so the
// runtime never depends on that package. The binary goes to a versioned cache outside the repo:
//   <cache>/engines/llamacpp/<llama.cpp release>-<cpu|cuda-ARCHS>/bin/llama-server
// where <cache> is INFERPLANE_CACHE_DIR, else $XDG_CACHE_HOME/inferplane, else ~/.cache/inferplane.
// `current.json` names the build the runtime uses; `sources.json` maps a package spec and
// variant to its build, so a second install is answered from the cache without the network.
import { spawn, spawnSync } from 'node:child_process';
import {
  chmodSync,
  closeSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { availableParallelism, homedir } from 'node:os';
import { delimiter, join, resolve } from 'node:path';
import { InferplaneError } from '../core/errors.js';
import { processAlive } from '../core/process.js';

/** The node-llama-cpp release whose llama.cpp source is built (pinned: the cache key follows). */
export const NODE_LLAMA_CPP_PACKAGE = 'node-llama-cpp@3.22.1';

type Env = Record<string, string | undefined>;

export interface LlamaCppBuild {
  /** Absolute path of the llama-server executable. */
  path: string;
  /** llama.cpp release tag the source was taken from (e.g. b6000), or the commit. */
  version: string;
  /** Commit of the source tree built. */
  commit: string;
  /** `cpu` or `cuda-<archs>` (e.g. cuda-90). */
  variant: string;
  /** Cache key: `<version>-<variant>`. */
  key: string;
  /** The npm package spec the source came from. */
  source: string;
  builtAt: string;
  /** Seconds the build took (when it was built). */
  buildSeconds: number;
}

export interface InstallResult extends LlamaCppBuild {
  /** True when the cache answered and nothing was built. */
  cached: boolean;
  /** Seconds this install call took. */
  seconds: number;
}

export interface InstallProgress {
  stage: 'fetch' | 'extract' | 'configure' | 'build' | 'install' | 'done';
  message: string;
  /** 0..100 during the build. */
  percent?: number;
}

export interface InstallOptions {
  cuda?: boolean;
  /** CUDA architectures (e.g. ['90']); detected with nvidia-smi when absent. */
  cudaArchs?: string[];
  /** Rebuild even when the cache has this build. */
  force?: boolean;
  /** npm spec (or path to a packed .tgz) of node-llama-cpp. */
  packageSpec?: string;
  /**
   * A llama.cpp source tree to build instead of fetching the package (machines without a network:
   * carry the tree). Its version and commit come from git when it is a checkout, else from a
   * `llama.cpp.info.json` in it (`{"tag": "...", "commit": "..."}`).
   */
  sourceDir?: string;
  /** Parallel compile jobs (default: the number of CPUs). */
  jobs?: number;
  env?: Env;
  onProgress?: (p: InstallProgress) => void;
}

/** The cache root: INFERPLANE_CACHE_DIR, else $XDG_CACHE_HOME/inferplane, else ~/.cache/inferplane. */
export function cacheRoot(env: Env = process.env): string {
  if (env.INFERPLANE_CACHE_DIR) return env.INFERPLANE_CACHE_DIR;
  const xdg = env.XDG_CACHE_HOME || join(env.HOME || homedir(), '.cache');
  return join(xdg, 'inferplane');
}

export function llamaCppDir(env: Env = process.env): string {
  return join(cacheRoot(env), 'engines', 'llamacpp');
}

function readJson<T>(path: string): T | undefined {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

function writeJsonAtomic(path: string, value: unknown): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(value, null, 2) + '\n');
  renameSync(tmp, path);
}

/** The build recorded under `key`, if its executable is present. */
export function readBuild(key: string, env: Env = process.env): LlamaCppBuild | undefined {
  if (!/^[A-Za-z0-9._-]+$/.test(key)) return undefined;
  const b = readJson<LlamaCppBuild>(join(llamaCppDir(env), key, 'build.json'));
  const path = join(llamaCppDir(env), key, 'bin', 'llama-server');
  if (!b || !existsSync(path)) return undefined;
  return { ...b, path };
}

/**
 * The llama-server the runtime uses: INFERPLANE_LLAMA_SERVER when set, else the given build key,
 * else the last one installed (`current.json`); undefined when none is installed.
 */
export function findLlamaServer(
  opts: { build?: string; env?: Env } = {},
): { path: string; version: string; key: string } | undefined {
  const env = opts.env ?? process.env;
  const explicit = env.INFERPLANE_LLAMA_SERVER;
  if (explicit && !opts.build) {
    return existsSync(explicit) ? { path: explicit, version: 'custom', key: 'custom' } : undefined;
  }
  const key = opts.build ?? readJson<{ key: string }>(join(llamaCppDir(env), 'current.json'))?.key;
  if (!key) return undefined;
  const b = readBuild(key, env);
  return b ? { path: b.path, version: b.version, key: b.key } : undefined;
}

export const NOT_INSTALLED_MESSAGE =
  'llama-server is not installed: run `inferplane engine install llamacpp`';

/** Like findLlamaServer, but throws IP_ENGINE_NOT_INSTALLED-style validation errors when absent. */
export function requireLlamaServer(opts: { build?: string; env?: Env } = {}): {
  path: string;
  version: string;
  key: string;
} {
  const found = findLlamaServer(opts);
  if (found) return found;
  const env = opts.env ?? process.env;
  const where = env.INFERPLANE_LLAMA_SERVER
    ? ` (INFERPLANE_LLAMA_SERVER=${env.INFERPLANE_LLAMA_SERVER} does not exist)`
    : opts.build
      ? ` (no build ${opts.build} under ${llamaCppDir(env)})`
      : ` (nothing under ${llamaCppDir(env)})`;
  throw new InferplaneError('IP_VALIDATION', NOT_INSTALLED_MESSAGE + where, {
    details: [{ path: 'engine.name', message: NOT_INSTALLED_MESSAGE }],
  });
}

function which(cmd: string, env: Env = process.env): string | undefined {
  for (const dir of (env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    const p = join(dir, cmd);
    if (existsSync(p)) return p;
  }
  return undefined;
}

/** The build tools that are missing (cmake, a C/C++ compiler, make or ninja, git, tar). */
export function missingBuildTools(env: Env = process.env): string[] {
  const missing: string[] = [];
  if (!which('cmake', env)) missing.push('cmake');
  if (!which('c++', env) && !which('g++', env) && !which('clang++', env)) missing.push('g++');
  if (!which('cc', env) && !which('gcc', env) && !which('clang', env)) missing.push('gcc');
  if (!which('make', env) && !which('ninja', env)) missing.push('make');
  if (!which('git', env)) missing.push('git');
  if (!which('tar', env)) missing.push('tar');
  return missing;
}

/** CUDA compute capabilities of the GPUs present, as CMake architectures ("9.0" -> "90"). */
export function detectCudaArchs(env: Env = process.env): string[] {
  const r = spawnSync('nvidia-smi', ['--query-gpu=compute_cap', '--format=csv,noheader'], {
    encoding: 'utf8',
    env,
  });
  if (r.status !== 0 || !r.stdout) return [];
  return parseComputeCaps(r.stdout);
}

export function parseComputeCaps(text: string): string[] {
  const archs = new Set<string>();
  for (const line of text.split('\n')) {
    const m = /^\s*(\d+)\.(\d+)\s*$/.exec(line);
    if (m) archs.add(`${m[1]}${m[2]}`);
  }
  return [...archs].sort();
}

/** The CMake cache entries of a portable build of llama-server only. */
export function cmakeArgs(variant: { cuda: boolean; cudaArchs: string[] }): string[] {
  const args = [
    '-DCMAKE_BUILD_TYPE=Release',
    '-DBUILD_SHARED_LIBS=OFF', // one self-contained executable, movable into the cache
    '-DGGML_NATIVE=OFF', // portable: no -march=native
    '-DGGML_CCACHE=OFF',
    '-DLLAMA_CURL=OFF',
    '-DLLAMA_OPENSSL=OFF',
    '-DLLAMA_BUILD_TESTS=OFF',
    '-DLLAMA_BUILD_EXAMPLES=OFF',
    '-DLLAMA_BUILD_APP=OFF',
    '-DLLAMA_BUILD_SERVER=ON',
    '-DLLAMA_BUILD_UI=OFF', // no npm build of the web UI
    '-DLLAMA_USE_PREBUILT_UI=OFF', // no download of it either
  ];
  if (variant.cuda) {
    args.push('-DGGML_CUDA=ON');
    if (variant.cudaArchs.length > 0)
      args.push(`-DCMAKE_CUDA_ARCHITECTURES=${variant.cudaArchs.join(';')}`);
  }
  return args;
}

export function variantName(cuda: boolean, cudaArchs: string[]): string {
  return cuda ? `cuda-${cudaArchs.length ? cudaArchs.join('-') : 'default'}` : 'cpu';
}

/** Parses a build progress line of ninja (`[12/204] ...`) or make (`[ 45%] ...`): percent. */
export function parseBuildProgress(line: string): number | undefined {
  const ninja = /^\[(\d+)\/(\d+)\]/.exec(line);
  if (ninja) return (100 * Number(ninja[1])) / Math.max(1, Number(ninja[2]));
  const make = /^\[\s*(\d+)%\]/.exec(line);
  if (make) return Number(make[1]);
  return undefined;
}

interface RunResult {
  code: number | null;
  stdout: string;
  tail: string[];
}

function run(
  cmd: string,
  args: string[],
  opts: { cwd?: string; env: Env; onLine?: (line: string) => void },
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    const tail: string[] = [];
    const lineBuf = { out: '', err: '' };
    const feed = (which: 'out' | 'err', chunk: string): void => {
      lineBuf[which] += chunk;
      let nl: number;
      while ((nl = lineBuf[which].indexOf('\n')) >= 0) {
        const line = lineBuf[which].slice(0, nl).replace(/\r$/, '');
        lineBuf[which] = lineBuf[which].slice(nl + 1);
        tail.push(line);
        if (tail.length > 40) tail.shift();
        opts.onLine?.(line);
      }
    };
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
      feed('out', d);
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => feed('err', d));
    child.once('error', reject);
    child.once('close', (code) => {
      for (const w of ['out', 'err'] as const) if (lineBuf[w]) tail.push(lineBuf[w]);
      resolve({ code, stdout, tail });
    });
  });
}

async function runOrThrow(
  what: string,
  cmd: string,
  args: string[],
  opts: { cwd?: string; env: Env; onLine?: (line: string) => void },
): Promise<RunResult> {
  let r: RunResult;
  try {
    r = await run(cmd, args, opts);
  } catch (e) {
    throw new InferplaneError(
      'IP_INTERNAL',
      `${what}: could not run ${cmd}: ${e instanceof Error ? e.message : String(e)}`,
    );
  }
  if (r.code !== 0) {
    throw new InferplaneError(
      'IP_INTERNAL',
      `${what} failed (${cmd} exited with ${r.code}):\n${r.tail.join('\n')}`,
    );
  }
  return r;
}

interface SourcesIndex {
  [specAndVariant: string]: string;
}

/**
 * Installs llama-server (or finds it in the cache): npm pack → extract the git bundle → clone →
 * cmake configure → build the llama-server target → copy into the cache. Marks it current.
 */
export async function installLlamaCpp(o: InstallOptions = {}): Promise<InstallResult> {
  const started = performance.now();
  const env: Env = o.env ?? process.env;
  const progress = o.onProgress ?? (() => undefined);
  const spec = o.sourceDir
    ? `dir:${resolve(o.sourceDir)}`
    : (o.packageSpec ?? NODE_LLAMA_CPP_PACKAGE);
  const cuda = o.cuda ?? false;
  let cudaArchs = o.cudaArchs ?? [];
  if (cuda && cudaArchs.length === 0) {
    cudaArchs = detectCudaArchs(env);
    if (cudaArchs.length === 0) {
      throw new InferplaneError(
        'IP_VALIDATION',
        'no GPU found with nvidia-smi: name the CUDA architectures with --cuda-arch (e.g. 90)',
      );
    }
  }
  const variant = variantName(cuda, cudaArchs);
  const dir = llamaCppDir(env);
  mkdirSync(dir, { recursive: true });
  const indexPath = join(dir, 'sources.json');
  const index = readJson<SourcesIndex>(indexPath) ?? {};
  const indexKey = `${spec}|${variant}`;
  const finish = (b: LlamaCppBuild, cached: boolean): InstallResult => {
    index[indexKey] = b.key;
    writeJsonAtomic(indexPath, index);
    writeJsonAtomic(join(dir, 'current.json'), { key: b.key });
    const seconds = (performance.now() - started) / 1000;
    progress({
      stage: 'done',
      message: cached
        ? `llama-server ${b.version} (${b.variant}) is in the cache: ${b.path}`
        : `built llama-server ${b.version} (${b.variant}) in ${seconds.toFixed(0)} s: ${b.path}`,
    });
    return { ...b, cached, seconds };
  };

  if (!o.force) {
    const known = index[indexKey];
    const b = known ? readBuild(known, env) : undefined;
    if (b) return finish(b, true);
  }

  const missing = missingBuildTools(env);
  if (missing.length > 0) {
    throw new InferplaneError(
      'IP_VALIDATION',
      `cannot build llama-server: missing ${missing.join(', ')} (on Debian: apt-get install -y ` +
        `cmake g++ make git)`,
    );
  }
  if (cuda && !which('nvcc', env) && !existsSync('/usr/local/cuda/bin/nvcc')) {
    throw new InferplaneError(
      'IP_VALIDATION',
      'cannot build llama-server with --cuda: nvcc not found (install the CUDA toolkit)',
    );
  }

  // One build at a time per cache: a second installer waits for the first, then reuses its build.
  const release = await acquireLock(join(dir, 'install.lock'), (pid) =>
    progress({
      stage: 'fetch',
      message: `waiting for another install of llama-server (pid ${pid})`,
    }),
  );
  if (!o.force) {
    const known = (readJson<SourcesIndex>(indexPath) ?? {})[indexKey];
    const b = known ? readBuild(known, env) : undefined;
    if (b) {
      release();
      return finish(b, true);
    }
  }
  // Holding the lock, any work folder left here is from an install that died: remove it.
  for (const e of readdirSync(dir)) {
    if (e.startsWith('tmp-')) rmSync(join(dir, e), { recursive: true, force: true });
  }
  const tmp = mkdtempSync(join(dir, 'tmp-'));
  try {
    const { src, version, commit } = o.sourceDir
      ? await localSource(resolve(o.sourceDir), env)
      : await fetchSource(spec, tmp, env, progress);
    const key = `${version}-${variant}`;

    if (!o.force) {
      const b = readBuild(key, env);
      if (b) return finish(b, true);
    }

    const build = join(tmp, 'build');
    const generator = which('ninja', env) ? ['-G', 'Ninja'] : [];
    progress({ stage: 'configure', message: `configuring llama.cpp ${version} (${variant})` });
    const cmakeEnv: Env = { ...env };
    if (cuda && !which('nvcc', env)) cmakeEnv.CUDACXX = '/usr/local/cuda/bin/nvcc';
    await runOrThrow(
      'cmake configure',
      'cmake',
      ['-S', src, '-B', build, ...generator, ...cmakeArgs({ cuda, cudaArchs })],
      { env: cmakeEnv },
    );
    const jobs = o.jobs ?? availableParallelism();
    const buildStarted = performance.now();
    let lastPercent = -1;
    progress({ stage: 'build', message: `building llama-server with ${jobs} jobs`, percent: 0 });
    await runOrThrow(
      'cmake build',
      'cmake',
      ['--build', build, '--target', 'llama-server', '--config', 'Release', '-j', String(jobs)],
      {
        env: cmakeEnv,
        onLine: (line) => {
          const pct = parseBuildProgress(line);
          if (pct === undefined) return;
          const rounded = Math.floor(pct);
          if (rounded === lastPercent) return;
          lastPercent = rounded;
          progress({
            stage: 'build',
            message: `building llama-server: ${rounded}%`,
            percent: rounded,
          });
        },
      },
    );
    const buildSeconds = (performance.now() - buildStarted) / 1000;
    const built = join(build, 'bin', 'llama-server');
    if (!existsSync(built)) {
      throw new InferplaneError('IP_INTERNAL', `the build did not produce ${built}`);
    }

    progress({ stage: 'install', message: `installing into ${join(dir, key)}` });
    const staging = join(tmp, 'out');
    mkdirSync(join(staging, 'bin'), { recursive: true });
    copyFileSync(built, join(staging, 'bin', 'llama-server'));
    chmodSync(join(staging, 'bin', 'llama-server'), 0o755);
    const record: LlamaCppBuild = {
      path: join(dir, key, 'bin', 'llama-server'),
      version,
      commit,
      variant,
      key,
      source: spec,
      builtAt: new Date().toISOString(),
      buildSeconds: Math.round(buildSeconds * 10) / 10,
    };
    writeFileSync(join(staging, 'build.json'), JSON.stringify(record, null, 2) + '\n');
    rmSync(join(dir, key), { recursive: true, force: true });
    renameSync(staging, join(dir, key));
    return finish(record, false);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
    release();
  }
}

/** The llama.cpp source of the node-llama-cpp package: npm pack → extract the bundle → clone. */
async function fetchSource(
  spec: string,
  tmp: string,
  env: Env,
  progress: (p: InstallProgress) => void,
): Promise<{ src: string; version: string; commit: string }> {
  progress({ stage: 'fetch', message: `fetching ${spec} (npm pack)` });
  const packed = await runOrThrow(
    'npm pack',
    'npm',
    ['pack', spec, '--pack-destination', tmp, '--loglevel=error', '--no-audit', '--no-fund'],
    { cwd: tmp, env },
  );
  const tgzName = packed.stdout.trim().split('\n').pop()?.trim();
  if (!tgzName) throw new InferplaneError('IP_INTERNAL', 'npm pack printed no file name');
  const tgz = join(tmp, tgzName);

  progress({ stage: 'extract', message: 'extracting the llama.cpp source (git bundle)' });
  await runOrThrow(
    'extract',
    'tar',
    ['xzf', tgz, '-C', tmp, 'package/llama/gitRelease.bundle', 'package/llama/llama.cpp.info.json'],
    { env },
  );
  rmSync(tgz, { force: true });
  const info = readJson<{ tag?: string }>(join(tmp, 'package', 'llama', 'llama.cpp.info.json'));
  const src = join(tmp, 'src');
  await runOrThrow(
    'git clone',
    'git',
    ['clone', '--quiet', join(tmp, 'package', 'llama', 'gitRelease.bundle'), src],
    { env: { ...env, GIT_TERMINAL_PROMPT: '0' } },
  );
  const commit = (
    await runOrThrow('git rev-parse', 'git', ['-C', src, 'rev-parse', 'HEAD'], { env })
  ).stdout.trim();
  const version = info?.tag && /^[A-Za-z0-9._-]+$/.test(info.tag) ? info.tag : commit.slice(0, 12);
  return { src, version, commit };
}

/** A local llama.cpp tree: version and commit from git, else from its llama.cpp.info.json. */
export async function localSource(
  src: string,
  env: Env,
): Promise<{ src: string; version: string; commit: string }> {
  if (!existsSync(join(src, 'CMakeLists.txt'))) {
    throw new InferplaneError('IP_VALIDATION', `${src} is not a llama.cpp source tree`);
  }
  const info = readJson<{ tag?: string; commit?: string }>(join(src, 'llama.cpp.info.json'));
  // Only when the tree is itself a checkout (not a folder inside another repository).
  const git = await run('git', ['-C', src, 'rev-parse', '--show-toplevel', 'HEAD'], { env }).catch(
    () => undefined,
  );
  const [top = '', head = ''] = git?.code === 0 ? git.stdout.trim().split('\n') : [];
  const fromGit = resolve(top) === src ? head.trim() : '';
  const commit = /^[0-9a-f]{7,40}$/.test(fromGit) ? fromGit : (info?.commit ?? 'unknown');
  const version =
    info?.tag && /^[A-Za-z0-9._-]+$/.test(info.tag)
      ? info.tag
      : /^[0-9a-f]{12}/.test(commit)
        ? commit.slice(0, 12)
        : 'local';
  return { src, version, commit };
}

/**
 * Takes an exclusive lock file holding this process's pid; waits while another live process holds
 * it (a lock left by a dead one is taken over). Returns the release function.
 */
async function acquireLock(path: string, onWait: (pid: number) => void): Promise<() => void> {
  let waiting = false;
  for (;;) {
    try {
      const fd = openSync(path, 'wx');
      writeSync(fd, String(process.pid));
      closeSync(fd);
      let released = false;
      return () => {
        if (released) return;
        released = true;
        rmSync(path, { force: true });
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    let holder = NaN;
    try {
      holder = Number(readFileSync(path, 'utf8').trim());
    } catch {
      continue; // released in between
    }
    if (!Number.isInteger(holder) || holder <= 0 || !processAlive(holder)) {
      rmSync(path, { force: true });
      continue;
    }
    if (!waiting) onWait(holder);
    waiting = true;
    await new Promise((r) => setTimeout(r, 2000));
  }
}
