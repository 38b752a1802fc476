// `inferplane sim`: a fleet of simulated engine replicas in this process, until Ctrl-C.
import { InvalidArgumentError, type Command } from 'commander';
import { parseFaultSpec } from '../../sim/faults.js';
import { startSimFleet, type SimFleet, type SimFleetOptions } from '../../sim/fleet.js';
import { onStopRequest } from '../../sim/lifecycle.js';
import { processIo, type Io } from '../output.js';
import { examples } from './common.js';

export interface SimFlags {
  model: string;
  gpu: string;
  replicas: number;
  basePort: number;
  host: string;
  servedModelName?: string;
  tp?: number;
  dtype?: 'bf16' | 'f16' | 'fp8';
  calibration?: string;
  timeScale?: number;
  maxNumSeqs?: number;
  maxNumBatchedTokens?: number;
  gpuMemoryUtilization?: number;
  numGpuBlocksOverride?: number;
  enablePrefixCaching: boolean;
  maxModelLen?: number;
  seed?: number;
  faults?: string;
  json?: boolean;
}

function intIn(name: string, min: number, max = Number.MAX_SAFE_INTEGER) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isInteger(n) || n < min || n > max)
      throw new InvalidArgumentError(`${name} must be an integer between ${min} and ${max}`);
    return n;
  };
}

function positiveNumber(name: string, max = Number.MAX_VALUE) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n) || n <= 0 || n > max)
      throw new InvalidArgumentError(`${name} must be a number in (0, ${max}]`);
    return n;
  };
}

function dtype(v: string): 'bf16' | 'f16' | 'fp8' {
  if (v !== 'bf16' && v !== 'f16' && v !== 'fp8')
    throw new InvalidArgumentError('dtype must be bf16, f16 or fp8');
  return v;
}

function faultsJson(v: string): string {
  try {
    parseFaultSpec(JSON.parse(v));
  } catch (err) {
    throw new InvalidArgumentError(err instanceof Error ? err.message : String(err));
  }
  return v;
}

/** The fleet options the flags stand for. */
export function simFleetOptions(flags: SimFlags): SimFleetOptions {
  const o: SimFleetOptions = {
    replicas: flags.replicas,
    basePort: flags.basePort,
    host: flags.host,
    model: flags.model,
    gpu: flags.gpu,
  };
  if (flags.servedModelName !== undefined) o.servedModelName = flags.servedModelName;
  if (flags.tp !== undefined) o.tp = flags.tp;
  if (flags.dtype !== undefined) o.dtype = flags.dtype;
  if (flags.calibration !== undefined) o.calibration = flags.calibration;
  if (flags.timeScale !== undefined) o.timeScale = flags.timeScale;
  if (flags.maxNumSeqs !== undefined) o.maxNumSeqs = flags.maxNumSeqs;
  if (flags.maxNumBatchedTokens !== undefined) o.maxNumBatchedTokens = flags.maxNumBatchedTokens;
  if (flags.gpuMemoryUtilization !== undefined) o.gpuMemoryUtilization = flags.gpuMemoryUtilization;
  if (flags.numGpuBlocksOverride !== undefined) o.numGpuBlocksOverride = flags.numGpuBlocksOverride;
  if (!flags.enablePrefixCaching) o.enablePrefixCaching = false;
  if (flags.maxModelLen !== undefined) o.maxModelLen = flags.maxModelLen;
  if (flags.seed !== undefined) o.seed = flags.seed;
  if (flags.faults !== undefined) o.faults = parseFaultSpec(JSON.parse(flags.faults));
  return o;
}

/**
 * Starts the fleet, prints where it listens, waits for `stop` and closes it.
 * Exported for tests (which pass their own stop promise).
 */
export async function runSimFleet(
  flags: SimFlags,
  io: Io,
  stop: (fleet: SimFleet) => Promise<string>,
): Promise<void> {
  const fleet = await startSimFleet({
    ...simFleetOptions(flags),
    onReplicaCrash: (r, reason) => {
      const line = { event: 'replica_crashed', index: r.index, url: r.url, reason };
      io.err(flags.json ? JSON.stringify(line) + '\n' : `replica ${r.index} crashed (${reason})\n`);
    },
  });
  const first = fleet.replicas[0]?.server;
  const summary = {
    model: first?.servedModelName,
    profile: first?.profileName,
    gpu: flags.gpu,
    pid: process.pid,
    replicas: fleet.replicas.map((r) => ({ index: r.index, port: r.port, url: r.url })),
  };
  if (flags.json) io.out(JSON.stringify(summary) + '\n');
  else {
    io.out(
      `${fleet.replicas.length} simulated replica(s) of ${summary.profile} on ${flags.gpu}, ` +
        `served as "${summary.model}":\n`,
    );
    for (const r of fleet.replicas) io.out(`  replica ${r.index}  ${r.url}/v1\n`);
    io.out('Press Ctrl-C to stop.\n');
  }
  const reason = await stop(fleet);
  if (!flags.json) io.out(`\n${reason}: stopping ${fleet.replicas.length} replica(s)...\n`);
  await fleet.close();
  if (!flags.json) io.out('stopped.\n');
}

export function registerSim(program: Command, io: Io = processIo): void {
  program
    .command('sim')
    .summary('run simulated engine replicas in this process')
    .description(
      'run a fleet of simulated OpenAI-compatible engine replicas (vLLM-like timing model) in ' +
        'this process, each on its own port, until Ctrl-C. Each replica also serves /metrics, ' +
        '/kv/events, /telemetry/gpus and /admin/faults (fault injection; bind to loopback).',
    )
    .option('--model <profile>', 'model profile to simulate', 'llama-3.1-8b')
    .option('--gpu <type>', 'GPU type', 'H100-80GB')
    .option('-n, --replicas <n>', 'number of replicas', intIn('replicas', 1, 1024), 1)
    .option(
      '--base-port <port>',
      'port of replica 0; replica i listens on base-port + i (0 = ephemeral ports)',
      intIn('base-port', 0, 65535),
      8100,
    )
    .option('--host <host>', 'address to bind', '127.0.0.1')
    .option('--served-model-name <name>', 'name clients send in "model" (default: the profile)')
    .option('--tp <n>', 'tensor parallelism (GPUs per replica)', intIn('tp', 1, 64))
    .option('--dtype <dtype>', "bf16, f16 or fp8 (default: the model's)", dtype)
    .option('--calibration <name>', 'calibration preset of the timing model')
    .option(
      '--time-scale <x>',
      'real time = simulated time * x (0.1 = ten times faster)',
      positiveNumber('time-scale', 100),
    )
    .option('--max-num-seqs <n>', 'running sequences per replica at most', intIn('max-num-seqs', 1))
    .option(
      '--max-num-batched-tokens <n>',
      'tokens per engine step at most',
      intIn('max-num-batched-tokens', 1),
    )
    .option(
      '--gpu-memory-utilization <x>',
      'share of GPU memory the engine may use',
      positiveNumber('gpu-memory-utilization', 1),
    )
    .option(
      '--num-gpu-blocks-override <n>',
      'KV-cache blocks per replica',
      intIn('num-gpu-blocks-override', 1),
    )
    .option('--no-enable-prefix-caching', 'disable automatic prefix caching')
    .option('--max-model-len <n>', 'maximum context length in tokens', intIn('max-model-len', 1))
    .option('--seed <n>', 'seed of fault draws (replica i uses seed + i)', intIn('seed', 0))
    .option(
      '--faults <json>',
      'fault spec applied to every replica (see POST /admin/faults)',
      faultsJson,
    )
    .option('--json', 'print one JSON line with the replica URLs once listening (for scripts)')
    .addHelpText(
      'after',
      examples(
        'inferplane sim --model llama-3.1-8b --gpu H100-80GB --replicas 4 --base-port 8100',
        'inferplane sim --replicas 32 --base-port 0 --json',
        '# then, in another shell:',
        `curl -s localhost:8100/v1/completions -H 'content-type: application/json' \\`,
        `    -d '{"model":"llama-3.1-8b","prompt":"Hello","max_tokens":8}'`,
        'curl -N localhost:8100/kv/events',
        `curl -s localhost:8101/admin/faults -d '{"crash":"now"}'`,
      ),
    )
    .action(async (flags: SimFlags) => {
      const { stopped, dispose } = onStopRequest(io.env, {
        onSecondSignal: () => {
          io.err('forced exit\n');
          process.exit(130);
        },
      });
      try {
        await runSimFleet(flags, io, () => stopped);
      } finally {
        dispose();
      }
    });
}
