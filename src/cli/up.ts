// `inferplane up`: the whole platform on this machine, in one command, on embedded defaults.
import { join } from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import { toInferplaneError } from '../core/errors.js';
import { resolveConfig, tracingFromEnv } from '../platform/config.js';
import { startPlatform } from '../platform/platform.js';
import { createLogger } from '../telemetry/logger.js';
import { packageVersion } from '../core/version.js';

interface UpFlags {
  port: number;
  host: string;
  stateDir: string;
  gpus: number;
  gpuType: string;
  agent: 'sim' | 'nvidia';
  gpuSharing: number;
  nodeName?: string;
  demo: boolean;
  logLevel: string;
  logStderr?: boolean;
  rotateAdminKey?: boolean;
  json?: boolean;
  otlpEndpoint?: string;
  signalIntervalMs: number;
  signalStaleMs: number;
  gatewayWorkers: number;
}

function int(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0)
      throw new InvalidArgumentError(`${name} must be a non-negative integer`);
    return n;
  };
}

export function registerUp(program: Command): void {
  program
    .command('up')
    .description(
      'start the control-plane API, the gateway and a node agent with simulated GPUs on this machine',
    )
    .option(
      '-p, --port <port>',
      'port for the gateway, API and metrics (0 = any free port)',
      int('port'),
      8080,
    )
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--state-dir <dir>', 'where state (SQLite) and logs live', '.inferplane')
    .option('--gpus <n>', 'simulated GPUs on this node', int('gpus'), 8)
    .option('--gpu-type <type>', 'simulated GPU type', 'H100-80GB')
    .option(
      '--agent <kind>',
      'node agent: sim (simulated GPUs) or nvidia (the real GPUs, read with nvidia-smi)',
      (v: string) => {
        if (v !== 'sim' && v !== 'nvidia') throw new InvalidArgumentError('sim or nvidia');
        return v;
      },
      'sim',
    )
    .option(
      '--gpu-sharing <n>',
      'with --agent nvidia: replicas that may share one GPU (each GPU is offered as n slots)',
      int('gpu-sharing'),
      1,
    )
    .option('--node-name <name>', 'name of this node (default: the hostname)')
    .option('--no-demo', 'do not create the demo tenant, key and deployment')
    .option('--log-level <level>', 'fatal|error|warn|info|debug|trace|silent', 'info')
    .option('--log-stderr', 'write JSON logs to stderr instead of <state-dir>/logs/inferplane.log')
    .option('--rotate-admin-key', 'generate a new operator key (when the printed one was lost)')
    .option('--json', 'print one JSON line with the URLs and keys once ready (for scripts)')
    .option(
      '--signal-interval-ms <ms>',
      "how often the gateway scrapes each replica's engine metrics for routing",
      int('signal-interval-ms'),
      100,
    )
    .option(
      '--signal-stale-ms <ms>',
      'engine signals older than this make a replica count as saturated',
      int('signal-stale-ms'),
      2000,
    )
    .option(
      '--gateway-workers <n>',
      'gateway processes serving the port (1: in the platform process; more: worker processes that split tenant limits by demand)',
      int('gateway-workers'),
      1,
    )
    .option(
      '--otlp-endpoint <url>',
      'export request traces over OTLP/HTTP to this collector, e.g. http://127.0.0.1:4318 (default: OTEL_EXPORTER_OTLP_ENDPOINT)',
    )
    .addHelpText(
      'after',
      `
Environment:
  INFERPLANE_ADMIN_KEY   operator key to accept (else one is generated and printed once)
  OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER_ARG
                         trace export (W3C traceparent is propagated either way)

Examples:
  inferplane up
  inferplane up --port 9000 --gpus 4 --state-dir /var/lib/inferplane`,
    )
    .action(async (flags: UpFlags) => {
      await up(flags);
    });
}

async function up(flags: UpFlags): Promise<void> {
  const version = packageVersion();
  const config = resolveConfig({
    port: flags.port,
    host: flags.host,
    stateDir: flags.stateDir,
    gpus: flags.gpus,
    gpuType: flags.gpuType,
    agent: flags.agent,
    gpuSharing: Math.max(1, flags.gpuSharing),
    signalIntervalMs: flags.signalIntervalMs,
    signalStaleMs: flags.signalStaleMs,
    gatewayWorkers: flags.gatewayWorkers,
    ...(flags.nodeName ? { nodeName: flags.nodeName } : {}),
    demo: flags.demo,
    logLevel: flags.logLevel as 'info',
    rotateAdminKey: flags.rotateAdminKey ?? false,
    ...(process.env.INFERPLANE_ADMIN_KEY ? { adminKey: process.env.INFERPLANE_ADMIN_KEY } : {}),
    tracing: {
      ...tracingFromEnv(process.env),
      ...(flags.otlpEndpoint ? { otlpEndpoint: flags.otlpEndpoint } : {}),
    },
  });
  const logFile = join(config.stateDir, 'logs', 'inferplane.log');
  const logger = createLogger({
    level: config.logLevel,
    destination: flags.logStderr ? 2 : logFile,
  });
  const platform = await startPlatform(config, {
    version,
    logger,
    logDestination: flags.logStderr ? 2 : logFile,
  });

  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) {
      process.stderr.write('forced exit\n');
      process.exit(130);
    }
    stopping = true;
    if (!flags.json) process.stdout.write(`\n${signal}: stopping engines and the server...\n`);
    platform
      .stop()
      .then(() => {
        if (!flags.json) process.stdout.write('stopped.\n');
        process.exit(0);
      })
      .catch((e: unknown) => {
        process.stderr.write(`error while stopping: ${toInferplaneError(e).message}\n`);
        process.exit(1);
      });
  };
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGTERM', () => shutdown('SIGTERM'));

  const demo = platform.demo;
  let demoReady = false;
  if (demo) {
    if (!flags.json)
      process.stdout.write(`waiting for ${demo.deployment} replicas to be ready...\n`);
    demoReady = await platform.waitReady(demo.deployment, config.readyTimeoutS * 1000);
  }
  const curl = demo
    ? `curl -sN ${platform.url}/v1/chat/completions -H "Authorization: Bearer ${demo.key}" ` +
      `-H "Content-Type: application/json" -d '{"model":"${demo.deployment}",` +
      `"messages":[{"role":"user","content":"Hello!"}],"stream":true}'`
    : undefined;

  if (flags.json) {
    process.stdout.write(
      JSON.stringify({
        status: 'ready',
        version,
        url: platform.url,
        openai: `${platform.url}/v1`,
        api: `${platform.url}/api/v1`,
        metrics: `${platform.url}/metrics`,
        stateDir: config.stateDir,
        logFile: flags.logStderr ? null : logFile,
        adminKey: platform.generatedAdminKey ?? null,
        demo: demo ? { ...demo, ready: demoReady } : null,
        pid: process.pid,
        gatewayWorkers: config.gatewayWorkers,
      }) + '\n',
    );
    return;
  }
  const lines = [
    '',
    `Inferplane ${version} is up: ${
      config.agent === 'nvidia'
        ? `node agent on nvidia-smi${config.gpuSharing > 1 ? ` (GPUs shared ${config.gpuSharing} ways)` : ''}`
        : `${config.gpus} simulated ${config.gpuType} GPU(s)`
    }, state in ${config.stateDir}`,
    '',
    `  OpenAI API      ${platform.url}/v1${
      config.gatewayWorkers > 1 ? `   (gateway: ${config.gatewayWorkers} worker processes)` : ''
    }`,
    `  Control plane   ${platform.url}/api/v1   (OpenAPI: ${platform.url}/api/v1/openapi.json)`,
    `  Metrics         ${platform.url}/metrics`,
    `  Logs            ${flags.logStderr ? 'stderr' : logFile}`,
    '',
  ];
  if (platform.generatedAdminKey) {
    lines.push(
      '  Operator key (printed once; it is stored only hashed). For the CLI:',
      `    export INFERPLANE_URL=${platform.url}`,
      `    export INFERPLANE_API_KEY=${platform.generatedAdminKey}`,
      '',
    );
  } else if (!config.adminKey) {
    lines.push(
      '  Operator key: the one printed at first start (or set INFERPLANE_ADMIN_KEY; --rotate-admin-key makes a new one)',
      '',
    );
  } else {
    lines.push('  Operator key: INFERPLANE_ADMIN_KEY', '');
  }
  if (demo && curl) {
    lines.push(
      `  Demo tenant "${demo.tenant}", key: ${demo.key}`,
      `  Demo deployment ${demo.deployment}: ${demoReady ? 'ready' : 'not ready yet (inferplane describe deployment ' + demo.deployment + ')'}`,
      '',
      '  Try it:',
      `    ${curl}`,
      '',
    );
  }
  lines.push('Press Ctrl-C to stop.', '');
  process.stdout.write(lines.join('\n'));
}
