// `inferplane engine install llamacpp`: builds llama.cpp's llama-server into the cache outside
// the repo (src/engines/install.ts); `inferplane engine list`: what the cache holds.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import {
  findLlamaServer,
  installLlamaCpp,
  llamaCppDir,
  NODE_LLAMA_CPP_PACKAGE,
  readBuild,
  type InstallProgress,
} from '../../engines/install.js';
import { formatJson, processIo, type Io } from '../output.js';
import { examples } from './common.js';

interface InstallFlags {
  cuda?: boolean;
  cudaArch?: string[];
  force?: boolean;
  jobs?: number;
  package?: string;
  sourceDir?: string;
  json?: boolean;
}

function archList(v: string, prev: string[] = []): string[] {
  const archs = v
    .split(/[,;\s]+/)
    .filter(Boolean)
    .map((a) => a.replace('.', ''));
  for (const a of archs) {
    if (!/^\d{2,3}[a-z]?$/.test(a))
      throw new InvalidArgumentError(`CUDA architecture ${a}: expected e.g. 90, 8.9 or 90a`);
  }
  return [...prev, ...archs];
}

function positiveInt(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${name} must be >= 1`);
    return n;
  };
}

/** A progress printer for stderr: one rewritten line on a terminal, a line per 5% otherwise. */
export function progressPrinter(io: Io, tty: boolean): (p: InstallProgress) => void {
  let lastPct = -100;
  let open = false;
  return (p) => {
    if (p.stage === 'build' && p.percent !== undefined) {
      if (tty) {
        io.err(`\r${p.message}   `);
        open = true;
        return;
      }
      if (p.percent !== 0 && p.percent !== 100 && p.percent - lastPct < 5) return;
      lastPct = p.percent;
      io.err(p.message + '\n');
      return;
    }
    if (open) io.err('\n');
    open = false;
    io.err(p.message + '\n');
  };
}

export function registerEngine(program: Command, io: Io = processIo): void {
  const engine = program
    .command('engine')
    .summary('install and list real inference engines')
    .description(
      'install real inference engines (built into a cache outside the repo) and list them',
    );

  engine
    .command('install')
    .summary('build an engine into the local cache')
    .description(
      "build llama.cpp's llama-server from the source the node-llama-cpp npm package ships " +
        `(${NODE_LLAMA_CPP_PACKAGE}, fetched with npm pack) into ` +
        '$INFERPLANE_CACHE_DIR (default ~/.cache/inferplane)/engines/llamacpp/<release>-<variant>/. ' +
        'Needs cmake, a C++ compiler, make or ninja, and git. The cache is reused unless --force.',
    )
    .argument('<engine>', 'the engine to install (llamacpp)', (v: string) => {
      if (v !== 'llamacpp') throw new InvalidArgumentError('only llamacpp can be installed');
      return v;
    })
    .option('--cuda', 'build with CUDA (-DGGML_CUDA=ON) for the GPUs nvidia-smi finds')
    .option('--cuda-arch <archs>', 'CUDA architectures to build for (e.g. 90 or 80,90)', archList)
    .option('--force', 'rebuild even when the cache has this build')
    .option(
      '-j, --jobs <n>',
      'parallel compile jobs (default: the number of CPUs)',
      positiveInt('jobs'),
    )
    .option('--package <spec>', 'npm spec or .tgz of node-llama-cpp', NODE_LLAMA_CPP_PACKAGE)
    .option(
      '--source-dir <dir>',
      'build this llama.cpp source tree instead of fetching the package (offline machines; ' +
        'version and commit from git, else from <dir>/llama.cpp.info.json)',
    )
    .option('--json', 'print the result as JSON (path, version, seconds)')
    .addHelpText(
      'after',
      examples(
        'inferplane engine install llamacpp',
        'inferplane engine install llamacpp --cuda --cuda-arch 90',
        'inferplane engine install llamacpp --cuda --source-dir ./llama.cpp   # offline',
        'INFERPLANE_CACHE_DIR=/var/cache/inferplane inferplane engine install llamacpp --json',
      ),
    )
    .action(async (_name: string, flags: InstallFlags) => {
      const result = await installLlamaCpp({
        cuda: flags.cuda === true || (flags.cudaArch?.length ?? 0) > 0,
        ...(flags.cudaArch ? { cudaArchs: flags.cudaArch } : {}),
        force: flags.force === true,
        ...(flags.jobs !== undefined ? { jobs: flags.jobs } : {}),
        ...(flags.package !== undefined ? { packageSpec: flags.package } : {}),
        ...(flags.sourceDir !== undefined ? { sourceDir: flags.sourceDir } : {}),
        env: io.env,
        onProgress: progressPrinter(io, process.stderr.isTTY === true && io === processIo),
      });
      if (flags.json) {
        io.out(
          JSON.stringify({
            engine: 'llamacpp',
            path: result.path,
            version: result.version,
            commit: result.commit,
            variant: result.variant,
            key: result.key,
            cached: result.cached,
            seconds: Math.round(result.seconds * 10) / 10,
            buildSeconds: result.buildSeconds,
          }) + '\n',
        );
      } else {
        io.out(`llama-server ${result.version} (${result.variant}): ${result.path}\n`);
      }
    });

  engine
    .command('list')
    .summary('list the engine builds in the local cache')
    .option('--json', 'print JSON')
    .action((flags: { json?: boolean }) => {
      const dir = llamaCppDir(io.env);
      const current = findLlamaServer({ env: io.env });
      const items = (existsSync(dir) ? readdirSync(dir, { withFileTypes: true }) : [])
        .filter((e) => e.isDirectory() && existsSync(join(dir, e.name, 'build.json')))
        .map((e) => readBuild(e.name, io.env))
        .filter((b) => b !== undefined)
        .map((b) => ({
          engine: 'llamacpp',
          key: b.key,
          version: b.version,
          variant: b.variant,
          path: b.path,
          builtAt: b.builtAt,
          current: current?.key === b.key,
        }));
      if (flags.json) {
        io.out(formatJson({ items }));
        return;
      }
      if (items.length === 0) {
        io.out('no engine installed (run `inferplane engine install llamacpp`)\n');
        return;
      }
      for (const b of items) io.out(`${b.current ? '*' : ' '} llamacpp ${b.key}  ${b.path}\n`);
    });
}
