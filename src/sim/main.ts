/**
 * Process entry of the simulated engine:
 *
 *   node dist/sim/main.js --port 8001 --host 127.0.0.1 --model demo-llama-8b \
 *     [--prefill-tps N] [--decode-ms M] [--max-concurrency N] [--time-scale X] [--max-model-len N]
 *
 * Logs one JSON line per event to stdout. Exits 0 after a graceful close on SIGTERM/SIGINT.
 * With INFERPLANE_PARENT_STDIN=1 it also exits when stdin ends (the parent holds the other end of
 * a pipe, so the engine dies with its parent, even if the parent was SIGKILLed).
 */
import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { createSimServer, DEFAULT_MAX_MODEL_LEN, type SimServerOptions } from './server.js';
import { DEFAULT_ENGINE_OPTIONS } from './engine.js';

export const USAGE = `Usage: node dist/sim/main.js --model NAME [options]

Simulated OpenAI-compatible inference engine.

Options:
  --model NAME             served model name (required)
  --port N                 port to listen on, 0 = ephemeral (default 8000)
  --host HOST              address to bind (default 127.0.0.1)
  --prefill-tps N          prefill throughput, prompt tokens per second (default ${DEFAULT_ENGINE_OPTIONS.prefillTokensPerSecond})
  --decode-ms M            milliseconds per generated token (default ${DEFAULT_ENGINE_OPTIONS.decodeMsPerToken})
  --max-concurrency N      running requests at most; others queue (default ${DEFAULT_ENGINE_OPTIONS.maxConcurrency})
  --time-scale X           real time = simulated time * X (default 1; 0.1 = ten times faster)
  --max-model-len N        maximum context length in tokens (default ${DEFAULT_MAX_MODEL_LEN})
  -h, --help               show this help

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
        port: { type: 'string' },
        host: { type: 'string' },
        'prefill-tps': { type: 'string' },
        'decode-ms': { type: 'string' },
        'max-concurrency': { type: 'string' },
        'time-scale': { type: 'string' },
        'max-model-len': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    return { kind: 'error', message: err instanceof Error ? err.message : String(err) };
  }
  if (values.help) return { kind: 'help' };
  try {
    const model = values.model;
    if (model === undefined || model.trim() === '') throw new Error('--model is required');
    const isInt = (n: number) => Number.isInteger(n);
    const port =
      num('port', values.port, (n) => isInt(n) && n >= 0 && n <= 65535, 'an integer 0-65535') ??
      8000;
    const host = values.host ?? '127.0.0.1';
    if (host.trim() === '') throw new Error('--host must not be empty');
    const options: SimServerOptions = { model };
    const prefill = num('prefill-tps', values['prefill-tps'], (n) => n > 0, 'a positive number');
    if (prefill !== undefined) options.prefillTokensPerSecond = prefill;
    const decode = num('decode-ms', values['decode-ms'], (n) => n >= 0, 'a non-negative number');
    if (decode !== undefined) options.decodeMsPerToken = decode;
    const conc = num(
      'max-concurrency',
      values['max-concurrency'],
      (n) => isInt(n) && n >= 1,
      'a positive integer',
    );
    if (conc !== undefined) options.maxConcurrency = conc;
    const scale = num('time-scale', values['time-scale'], (n) => n > 0, 'a positive number');
    if (scale !== undefined) options.timeScale = scale;
    const mml = num(
      'max-model-len',
      values['max-model-len'],
      (n) => isInt(n) && n >= 1,
      'a positive integer',
    );
    if (mml !== undefined) options.maxModelLen = mml;
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
  const server = createSimServer(options);
  server.engine.addListener({
    onFinish: (ev) =>
      log({
        level: 'info',
        msg: 'request finished',
        id: ev.requestId,
        model: options.model,
        prompt_tokens: ev.promptTokens,
        completion_tokens: ev.completionTokens,
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
  log({
    level: 'info',
    msg: 'listening',
    port: actualPort,
    host,
    model: options.model,
    pid: process.pid,
    engine: server.engine.options,
    max_model_len: server.maxModelLen,
  });

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (reason: string) => {
      if (stopping) return;
      stopping = true;
      log({ level: 'info', msg: 'shutting down', reason });
      // Never hang on shutdown.
      const force = setTimeout(() => resolve(0), 5000);
      force.unref();
      void server.close().then(() => {
        clearTimeout(force);
        process.off('SIGTERM', onTerm);
        process.off('SIGINT', onInt);
        if (parentGuard) {
          process.stdin.off('end', onStdinEnd);
          process.stdin.off('close', onStdinEnd);
          process.stdin.off('error', onStdinEnd);
          process.stdin.pause();
        }
        log({ level: 'info', msg: 'stopped' });
        resolve(0);
      });
    };
    const onTerm = () => stop('SIGTERM');
    const onInt = () => stop('SIGINT');
    const onStdinEnd = () => stop('parent stdin closed');
    process.on('SIGTERM', onTerm);
    process.on('SIGINT', onInt);
    const parentGuard = env.INFERPLANE_PARENT_STDIN === '1';
    if (parentGuard) {
      process.stdin.on('end', onStdinEnd);
      process.stdin.on('close', onStdinEnd);
      process.stdin.on('error', onStdinEnd);
      process.stdin.resume(); // discard whatever the parent writes; we only care about EOF
    }
  });
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
