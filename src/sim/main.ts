/**
 * Process entry of the simulated engine (one replica per process):
 *
 *   node dist/sim/main.js --port 8001 --host 127.0.0.1 --model llama-3.1-8b \
 *     --served-model-name demo [--gpu H100-80GB] [--tp N] [--time-scale X] [--fault-… ]
 *
 * Logs one JSON line per event to stdout. Exits 0 after a graceful close on SIGTERM/SIGINT, 1 on a
 * simulated crash (fault injection), 2 on bad flags. With INFERPLANE_PARENT_STDIN=1 it also exits
 * when stdin ends (the parent holds the other end of a pipe, so the engine dies with its parent,
 * even if the parent was SIGKILLed).
 */
import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { parseFaultSpec, type FaultSpec } from './faults.js';
import { onStopRequest } from './lifecycle.js';
import { createSimServer, type SimServer, type SimServerOptions } from './server.js';

export const USAGE = `Usage: node dist/sim/main.js [options]

Simulated OpenAI-compatible inference engine (vLLM-like timing model).

Options:
  --model NAME                   model profile to simulate (default llama-3.1-8b)
  --served-model-name NAME       name clients send in "model" (default: the profile name)
  --port N                       port to listen on, 0 = ephemeral (default 8000)
  --host HOST                    address to bind (default 127.0.0.1)
  --gpu TYPE                     GPU type (default H100-80GB)
  --tp N                         tensor parallelism: GPUs per replica (default 1)
  --dtype bf16|f16|fp8           weight/KV dtype (default: the model's)
  --calibration NAME             calibration preset of the timing model
  --max-num-seqs N               running sequences at most
  --max-num-batched-tokens N     tokens per engine step at most
  --gpu-memory-utilization X     share of GPU memory the engine may use (0-1]
  --num-gpu-blocks-override N    KV-cache blocks, instead of what fits in memory
  --no-enable-prefix-caching     disable automatic prefix caching
  --max-model-len N              maximum context length in tokens
  --time-scale X                 real time = simulated time * X (default 1; 0.1 = ten times faster)
  --replica-index N              index of this replica (GPU indices in telemetry, KV events)
  --gpu-indices I,J              node GPU indices this replica was placed on (telemetry)
  --seed N                       seed of fault draws (error rate, disconnect rate)
  -h, --help                     show this help

Fault injection (also at run time: POST /admin/faults):
  --fault-crash-after N          exit(1) when generation request N+1 arrives
  --fault-hang                   accept requests (and /health) but never answer
  --fault-slow X                 every engine step takes X times longer
  --fault-error-rate R           answer HTTP 500 to a share R (0-1) of requests
  --fault-disconnect-after N     drop the connection after N generated tokens
  --fault-disconnect-rate R      ... for a share R (0-1) of requests (default 1)
  --fault-xid CODE               report an Xid event (e.g. 79, 48) in /telemetry/gpus
  --fault-ecc-sbe N              report N corrected (single-bit) ECC errors
  --fault-ecc-dbe N              report N uncorrected (double-bit) ECC errors
  --fault-thermal                report thermal throttling (92 C) and slow down 1.5x

Environment:
  INFERPLANE_PARENT_STDIN=1   exit when stdin reaches end of file (parent-death guard)
`;

export interface SimCliConfig {
  port: number;
  host: string;
  options: SimServerOptions;
}

export type ParseResult =
  { kind: 'ok'; config: SimCliConfig } | { kind: 'help' } | { kind: 'error'; message: string };

function num(
  name: string,
  raw: string | undefined,
  check: (n: number) => boolean,
  what: string,
): number | undefined {
  if (raw === undefined) return undefined;
  const n = raw.trim() === '' ? NaN : Number(raw);
  if (!Number.isFinite(n) || !check(n)) throw new Error(`--${name} must be ${what} (got '${raw}')`);
  return n;
}

const isInt = (n: number) => Number.isInteger(n);
const posInt = (name: string, raw: string | undefined) =>
  num(name, raw, (n) => isInt(n) && n >= 1, 'a positive integer');
const nonNegInt = (name: string, raw: string | undefined) =>
  num(name, raw, (n) => isInt(n) && n >= 0, 'a non-negative integer');
const positive = (name: string, raw: string | undefined) =>
  num(name, raw, (n) => n > 0, 'a positive number');
const fraction = (name: string, raw: string | undefined) =>
  num(name, raw, (n) => n >= 0 && n <= 1, 'a number between 0 and 1');

function nonEmpty(name: string, v: string | undefined): string | undefined {
  if (v !== undefined && v.trim() === '') throw new Error(`--${name} must not be empty`);
  return v;
}

/** Parses command-line arguments (without the node and script paths). */
export function parseSimArgs(argv: readonly string[]): ParseResult {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: {
        model: { type: 'string' },
        'served-model-name': { type: 'string' },
        port: { type: 'string' },
        host: { type: 'string' },
        gpu: { type: 'string' },
        tp: { type: 'string' },
        dtype: { type: 'string' },
        calibration: { type: 'string' },
        'max-num-seqs': { type: 'string' },
        'max-num-batched-tokens': { type: 'string' },
        'gpu-memory-utilization': { type: 'string' },
        'num-gpu-blocks-override': { type: 'string' },
        'no-enable-prefix-caching': { type: 'boolean' },
        'max-model-len': { type: 'string' },
        'time-scale': { type: 'string' },
        'replica-index': { type: 'string' },
        'gpu-indices': { type: 'string' },
        seed: { type: 'string' },
        'fault-crash-after': { type: 'string' },
        'fault-hang': { type: 'boolean' },
        'fault-slow': { type: 'string' },
        'fault-error-rate': { type: 'string' },
        'fault-disconnect-after': { type: 'string' },
        'fault-disconnect-rate': { type: 'string' },
        'fault-xid': { type: 'string' },
        'fault-ecc-sbe': { type: 'string' },
        'fault-ecc-dbe': { type: 'string' },
        'fault-thermal': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    return { kind: 'error', message: err instanceof Error ? err.message : String(err) };
  }
  if (values.help) return { kind: 'help' };
  try {
    const port =
      num('port', values.port, (n) => isInt(n) && n >= 0 && n <= 65535, 'an integer 0-65535') ??
      8000;
    const host = nonEmpty('host', values.host) ?? '127.0.0.1';
    const options: SimServerOptions = {};
    const model = nonEmpty('model', values.model);
    if (model !== undefined) options.model = model;
    const served = nonEmpty('served-model-name', values['served-model-name']);
    if (served !== undefined) options.servedModelName = served;
    const gpu = nonEmpty('gpu', values.gpu);
    if (gpu !== undefined) options.gpu = gpu;
    const tp = posInt('tp', values.tp);
    if (tp !== undefined) options.tp = tp;
    if (values.dtype !== undefined) {
      if (values.dtype !== 'bf16' && values.dtype !== 'f16' && values.dtype !== 'fp8')
        throw new Error(`--dtype must be bf16, f16 or fp8 (got '${values.dtype}')`);
      options.dtype = values.dtype;
    }
    const calibration = nonEmpty('calibration', values.calibration);
    if (calibration !== undefined) options.calibration = calibration;
    const seqs = posInt('max-num-seqs', values['max-num-seqs']);
    if (seqs !== undefined) options.maxNumSeqs = seqs;
    const batched = posInt('max-num-batched-tokens', values['max-num-batched-tokens']);
    if (batched !== undefined) options.maxNumBatchedTokens = batched;
    const util = num(
      'gpu-memory-utilization',
      values['gpu-memory-utilization'],
      (n) => n > 0 && n <= 1,
      'a number in (0, 1]',
    );
    if (util !== undefined) options.gpuMemoryUtilization = util;
    const blocks = posInt('num-gpu-blocks-override', values['num-gpu-blocks-override']);
    if (blocks !== undefined) options.numGpuBlocksOverride = blocks;
    if (values['no-enable-prefix-caching']) options.enablePrefixCaching = false;
    const mml = posInt('max-model-len', values['max-model-len']);
    if (mml !== undefined) options.maxModelLen = mml;
    const scale = positive('time-scale', values['time-scale']);
    if (scale !== undefined) options.timeScale = scale;
    const replica = nonNegInt('replica-index', values['replica-index']);
    if (replica !== undefined) options.replicaIndex = replica;
    const gpuIndices = values['gpu-indices'];
    if (gpuIndices !== undefined) {
      const list = gpuIndices.split(',').map((x) => Number(x.trim()));
      if (list.length === 0 || list.some((n) => !Number.isInteger(n) || n < 0)) {
        throw new Error(
          `--gpu-indices must be a comma-separated list of GPU indices (got '${gpuIndices}')`,
        );
      }
      options.gpuIndices = list;
    }
    const seed = nonNegInt('seed', values.seed);
    if (seed !== undefined) options.seed = seed;

    const faults: FaultSpec = {};
    const crashAfter = nonNegInt('fault-crash-after', values['fault-crash-after']);
    if (crashAfter !== undefined) faults.crash = { afterRequests: crashAfter };
    if (values['fault-hang']) faults.hang = true;
    const slow = positive('fault-slow', values['fault-slow']);
    if (slow !== undefined) faults.slowFactor = slow;
    const errorRate = fraction('fault-error-rate', values['fault-error-rate']);
    if (errorRate !== undefined) faults.errorRate = errorRate;
    const dAfter = nonNegInt('fault-disconnect-after', values['fault-disconnect-after']);
    const dRate = fraction('fault-disconnect-rate', values['fault-disconnect-rate']);
    if (dRate !== undefined && dAfter === undefined)
      throw new Error('--fault-disconnect-rate needs --fault-disconnect-after');
    if (dAfter !== undefined)
      faults.disconnect = { afterTokens: dAfter, ...(dRate !== undefined ? { rate: dRate } : {}) };
    const gpuFault: NonNullable<FaultSpec['gpu']> = {};
    const xid = posInt('fault-xid', values['fault-xid']);
    if (xid !== undefined) gpuFault.xid = xid;
    const sbe = nonNegInt('fault-ecc-sbe', values['fault-ecc-sbe']);
    if (sbe !== undefined) gpuFault.eccSbe = sbe;
    const dbe = nonNegInt('fault-ecc-dbe', values['fault-ecc-dbe']);
    if (dbe !== undefined) gpuFault.eccDbe = dbe;
    if (values['fault-thermal']) gpuFault.thermal = true;
    if (Object.keys(gpuFault).length > 0) faults.gpu = gpuFault;
    if (Object.keys(faults).length > 0) options.faults = parseFaultSpec(faults);
    return { kind: 'ok', config: { port, host, options } };
  } catch (err) {
    return { kind: 'error', message: err instanceof Error ? err.message : String(err) };
  }
}

function log(fields: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify({ ...fields, time: new Date().toISOString() }) + '\n');
}

const ms = (sec: number | null) => (sec === null ? null : Math.round(sec * 1e6) / 1e3);

/**
 * Runs the simulator until it is told to stop (SIGTERM/SIGINT, or stdin EOF with
 * INFERPLANE_PARENT_STDIN=1). Resolves with the process exit code.
 */
export async function main(
  argv: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  const parsed = parseSimArgs(argv);
  if (parsed.kind === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  if (parsed.kind === 'error') {
    process.stderr.write(`error: ${parsed.message}\n\n${USAGE}`);
    return 2;
  }
  const { port, host, options } = parsed.config;
  let server: SimServer;
  try {
    server = createSimServer({
      ...options,
      onCrash: (srv, reason) => {
        log({
          level: 'error',
          msg: 'simulated crash',
          reason,
          model: srv.servedModelName,
          replica: srv.replicaIndex,
          pid: process.pid,
        });
        process.exit(1);
      },
    });
  } catch (err) {
    // Unknown model profile or GPU, inconsistent engine options: a usage error.
    process.stderr.write(`error: ${err instanceof Error ? err.message : String(err)}\n\n${USAGE}`);
    return 2;
  }
  const served = server.servedModelName;
  server.engine.addListener({
    onFinish: (ev) =>
      log({
        level: 'info',
        msg: 'request finished',
        id: ev.requestId,
        model: served,
        prompt_tokens: ev.promptTokens,
        cached_tokens: ev.cachedTokens,
        completion_tokens: ev.completionTokens,
        preemptions: ev.preemptions,
        queue_ms: ms(ev.queueSec),
        ttft_ms: ms(ev.ttftSec),
        e2e_ms: ms(ev.e2eSec),
        finish_reason: ev.finishReason,
      }),
  });

  let actualPort: number;
  try {
    actualPort = await server.listen(port, host);
  } catch (err) {
    log({
      level: 'error',
      msg: 'listen failed',
      port,
      host,
      error: err instanceof Error ? err.message : String(err),
    });
    await server.close();
    return 1;
  }
  const stats = server.engine.stats();
  log({
    level: 'info',
    msg: 'listening',
    port: actualPort,
    host,
    model: served,
    profile: server.profileName,
    replica: server.replicaIndex,
    pid: process.pid,
    max_model_len: server.maxModelLen,
    num_gpu_blocks: stats.numGpuBlocks,
    block_size: stats.blockSize,
    faults: server.faults.spec,
    seed: server.faults.seed,
  });

  // Stop on SIGINT/SIGTERM, or when the platform that started us dies (stdin EOF).
  const request = onStopRequest(env);
  const reason = await request.stopped;
  log({ level: 'info', msg: 'shutting down', reason });
  // Never hang on shutdown.
  let force: NodeJS.Timeout | undefined;
  await Promise.race([
    server.close(),
    new Promise<void>((r) => {
      force = setTimeout(r, 5000);
      force.unref();
    }),
  ]);
  clearTimeout(force);
  request.dispose();
  log({ level: 'info', msg: 'stopped' });
  return 0;
}

function isProcessEntry(): boolean {
  const entry = process.argv[1];
  if (entry === undefined) return false;
  if (import.meta.url === pathToFileURL(entry).href) return true;
  try {
    return import.meta.url === pathToFileURL(realpathSync(entry)).href;
  } catch {
    return false;
  }
}

if (isProcessEntry()) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
