// `inferplane bench`: a load generator for OpenAI-compatible endpoints whose numbers compare with
// AIPerf's (same metric definitions and export files). `inferplane bench compare A B` diffs runs.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import type { ArrivalKind } from '../../bench/arrivals.js';
import type { EndpointKind } from '../../bench/client.js';
import { JSON_FILE } from '../../bench/export.js';
import { METRIC_HEADERS, parseGoodput, RECORD_METRIC_ORDER } from '../../bench/metrics.js';
import {
  ProgressTracker,
  runBench,
  type BaseLoad,
  type BenchConfig,
  type RunResult,
} from '../../bench/runner.js';
import { defaultMetricsUrl } from '../../bench/scrape.js';
import { runSelfTest } from '../../bench/selftest.js';
import type { MetricStats, RunSummary } from '../../bench/types.js';
import {
  loadMooncakeTrace,
  presetWorkload,
  PRESETS,
  sharedPrefixWorkload,
  syntheticWorkload,
  traceWorkload,
  type PresetName,
  type SuggestedLoad,
  type Workload,
} from '../../bench/workloads.js';
import { formatTable, processIo, type Io } from '../output.js';

export interface BenchFlags {
  url?: string;
  model?: string;
  apiKey?: string;
  endpoint: EndpointKind;
  stream: boolean;
  ignoreEos: boolean;
  extraBody?: string;
  workload?: PresetName;
  scale: number;
  isl: number;
  islStddev: number;
  osl: number;
  oslStddev: number;
  seed: number;
  prefixGroups?: number;
  prefixLength?: number;
  usersPerGroup: number;
  zipf?: number;
  turns: number;
  trace?: string;
  traceBlockSize: number;
  traceSpeed: number;
  concurrency?: number[];
  requestRate?: number[];
  arrival: ArrivalKind;
  burstiness: number;
  rampUp?: number;
  rampFromRate?: number;
  warmupRequests: number;
  requestCount?: number;
  duration?: number;
  requestCancellationRate?: number;
  requestCancellationDelay: number;
  goodput?: string;
  searchMaxRate?: number;
  searchTrials: number;
  searchMinGoodFraction: number;
  metricsUrl?: string;
  metrics: boolean;
  artifactsDir?: string;
  json?: boolean;
  report: boolean;
  progressInterval: number;
  selfTest?: boolean;
}

function num(name: string, min: number, integer = false) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n) || n < min || (integer && !Number.isInteger(n)))
      throw new InvalidArgumentError(
        `${name} must be ${integer ? 'an integer' : 'a number'} ≥ ${min}`,
      );
    return n;
  };
}

function list(name: string, integer: boolean) {
  return (v: string): number[] => {
    const parts = v
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== '');
    if (parts.length === 0) throw new InvalidArgumentError(`${name} needs at least one value`);
    return parts.map((p) => {
      const n = Number(p);
      if (!Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n)))
        throw new InvalidArgumentError(
          `${name} values must be positive ${integer ? 'integers' : 'numbers'}`,
        );
      return n;
    });
  };
}

function oneOf<T extends string>(name: string, values: readonly T[]) {
  return (v: string): T => {
    if (!(values as readonly string[]).includes(v))
      throw new InvalidArgumentError(`${name} must be one of ${values.join(', ')}`);
    return v as T;
  };
}

function goodputSpec(v: string): string {
  try {
    parseGoodput(v);
  } catch (err) {
    throw new InvalidArgumentError(err instanceof Error ? err.message : String(err));
  }
  return v;
}

function timestamp(d: Date): string {
  return d.toISOString().replace(/[:.]/g, '-').replace(/Z$/, '');
}

/** The workload the flags describe, its description and the load it suggests. */
export function benchWorkload(f: BenchFlags): {
  workload: Workload;
  info: Record<string, unknown>;
  suggested: SuggestedLoad;
} {
  if (f.trace !== undefined) {
    const rows = loadMooncakeTrace(f.trace);
    return {
      workload: traceWorkload(rows, {
        blockSize: f.traceBlockSize,
        seed: f.seed,
        speed: f.traceSpeed,
      }),
      info: {
        name: 'trace',
        file: f.trace,
        rows: rows.length,
        block_size: f.traceBlockSize,
        speed: f.traceSpeed,
      },
      suggested: {},
    };
  }
  if (f.workload !== undefined) {
    const p = presetWorkload(f.workload, f.seed, f.scale, f.zipf);
    return {
      workload: p.workload,
      info: { name: f.workload, scale: f.scale, description: p.description },
      suggested: p.load,
    };
  }
  const lengths = {
    isl: f.isl,
    islStddev: f.islStddev,
    osl: f.osl,
    oslStddev: f.oslStddev,
    seed: f.seed,
    turns: f.turns,
  };
  if (f.prefixGroups !== undefined) {
    const o = {
      ...lengths,
      groups: f.prefixGroups,
      prefixLength: f.prefixLength ?? 1024,
      usersPerGroup: f.usersPerGroup,
      ...(f.zipf !== undefined ? { zipf: f.zipf } : {}),
    };
    return {
      workload: sharedPrefixWorkload(o),
      info: { name: 'shared-prefix', ...o },
      suggested: {},
    };
  }
  return {
    workload: syntheticWorkload(lengths),
    info: { name: 'synthetic', ...lengths },
    suggested: {},
  };
}

/** The base load and sweep levels the flags describe. */
export function benchLoad(
  f: BenchFlags,
  suggested: SuggestedLoad,
  traced: boolean,
): { load: BaseLoad; sweep?: number[] } {
  const rates = f.requestRate;
  const conc = f.concurrency;
  const open =
    rates !== undefined || (conc === undefined && suggested.requestRate !== undefined && !traced);
  const load: BaseLoad = {
    mode: traced ? 'trace' : open ? 'open' : 'closed',
    seed: f.seed,
    warmupRequests: f.warmupRequests,
    arrival:
      f.arrival !== 'poisson' || suggested.arrival === undefined ? f.arrival : suggested.arrival,
    burstiness: f.burstiness,
  };
  if (load.mode === 'closed') load.concurrency = conc?.[0] ?? suggested.concurrency ?? 1;
  if (load.mode === 'open') {
    load.requestRate = rates?.[0] ?? suggested.requestRate ?? 1;
    if (rates === undefined && suggested.rampFromRate !== undefined)
      load.rampFromRate = suggested.rampFromRate;
  }
  if (f.rampFromRate !== undefined) load.rampFromRate = f.rampFromRate;
  const ramp = f.rampUp ?? (rates === undefined ? suggested.rampUpSec : undefined);
  if (ramp !== undefined) load.rampUpSec = ramp;
  if (f.requestCount !== undefined) load.requestCount = f.requestCount;
  if (f.duration !== undefined) load.durationSec = f.duration;
  if (load.requestCount === undefined && load.durationSec === undefined && !traced)
    load.requestCount = suggested.requestCount ?? 100;
  if (f.requestCancellationRate !== undefined) {
    load.cancellationRate = f.requestCancellationRate;
    load.cancellationDelayMs = f.requestCancellationDelay;
  }
  const levels = load.mode === 'closed' ? conc : load.mode === 'open' ? rates : undefined;
  return levels && levels.length > 1 ? { load, sweep: levels } : { load };
}

const f2 = (v: number | undefined | null): string =>
  v === undefined || v === null || !Number.isFinite(v) ? '' : v.toFixed(2);

/** AIPerf-style console table: metric rows × avg/min/max/p50/p90/p99, then run figures. */
export function summaryTable(s: RunSummary): string {
  const rows = RECORD_METRIC_ORDER.flatMap((tag) => {
    const m = s.metrics[tag];
    if (!m) return [];
    return [
      [
        `${METRIC_HEADERS[tag] ?? tag} (${m.unit})`,
        f2(m.avg),
        f2(m.min),
        f2(m.max),
        f2(m.p50),
        f2(m.p90),
        f2(m.p99),
      ],
    ];
  });
  if (s.sendLag) {
    const m = s.sendLag;
    rows.push([
      'Send Timing Error (ms)',
      f2(m.avg),
      f2(m.min),
      f2(m.max),
      f2(m.p50),
      f2(m.p90),
      f2(m.p99),
    ]);
  }
  const blank = ['', '', '', '', '', ''];
  const scalars: [string, number | null][] = [
    ['Output Token Throughput (tokens/sec)', s.outputTokenThroughput],
    ['Total Token Throughput (tokens/sec)', s.totalTokenThroughput],
    ['Request Throughput (requests/sec)', s.requestThroughput],
    ['Request Count (requests)', s.requestCount],
    ['Error Request Count (requests)', s.errorCount],
    ['Benchmark Duration (sec)', s.benchmarkDurationSec],
    ['Goodput (requests/sec)', s.goodput],
    ['Good Fraction', s.goodFraction],
  ];
  for (const [name, v] of scalars) if (v !== null) rows.push([name, f2(v), ...blank.slice(1)]);
  return formatTable(['METRIC', 'AVG', 'MIN', 'MAX', 'P50', 'P90', 'P99'], rows);
}

function progressLine(t: ProgressTracker): string {
  const p = t.snapshot();
  const total = p.total === null ? '' : `/${p.total}`;
  const ms = (v: number) => (Number.isFinite(v) ? `${v.toFixed(1)}ms` : '-');
  return `bench: ${p.completed}${total} done, ${p.errors} errors, TTFT p50 ${ms(p.ttftP50)}, ITL p50 ${ms(p.itlP50)}, ${p.tokPerSec.toFixed(0)} tok/s`;
}

function resultJson(dir: string): unknown {
  return JSON.parse(readFileSync(join(dir, JSON_FILE), 'utf8'));
}

async function runBenchCommand(f: BenchFlags, io: Io, argv: string): Promise<void> {
  if (f.selfTest) {
    const r = await runSelfTest({ log: (s) => io.err(s + '\n') });
    if (f.json) io.out(JSON.stringify(r, null, 2) + '\n');
    else
      io.out(
        formatTable(
          ['MEASUREMENT', 'VALUE'],
          [
            ['non-streaming requests/s', r.nonStreamingRequestsPerSec.toFixed(0)],
            ['streamed chunks/s', r.streamedChunksPerSec.toFixed(0)],
            [`send timing error p50 (ms) @ ${r.poissonRate}/s Poisson`, r.sendLagP50Ms.toFixed(3)],
            [`send timing error p99 (ms) @ ${r.poissonRate}/s Poisson`, r.sendLagP99Ms.toFixed(3)],
          ],
        ),
      );
    return;
  }
  if (!f.url) throw new InvalidArgumentError('bench needs --url (or --self-test)');
  if (!f.model) throw new InvalidArgumentError('bench needs --model');
  const { workload, info, suggested } = benchWorkload(f);
  const { load, sweep } = benchLoad(f, suggested, f.trace !== undefined);
  const dir =
    f.artifactsDir ??
    join('artifacts', `${f.model.replace(/[^\w.-]+/g, '_')}-${timestamp(io.now())}`);
  const progress = new ProgressTracker();
  const tty = io === processIo && process.stderr.isTTY === true;
  const ac = new AbortController();
  const onSigint = () => ac.abort();
  if (io === processIo) process.once('SIGINT', onSigint);
  const timer = setInterval(
    () => io.err(tty ? `\r\u001b[2K${progressLine(progress)}` : progressLine(progress) + '\n'),
    tty ? 250 : f.progressInterval * 1000,
  );
  timer.unref();
  const cfg: BenchConfig = {
    client: {
      baseUrl: f.url,
      endpoint: f.endpoint,
      model: f.model,
      stream: f.stream,
      ignoreEos: f.ignoreEos,
      ...(f.apiKey !== undefined ? { apiKey: f.apiKey } : {}),
      ...(f.extraBody !== undefined
        ? { extraBody: JSON.parse(f.extraBody) as Record<string, unknown> }
        : {}),
    },
    workload,
    workloadInfo: info,
    load,
    ...(sweep ? { sweep } : {}),
    ...(f.goodput !== undefined ? { goodput: parseGoodput(f.goodput) } : {}),
    ...(f.searchMaxRate !== undefined
      ? {
          search: {
            maxRate: f.searchMaxRate,
            trials: f.searchTrials,
            minGoodFraction: f.searchMinGoodFraction,
          },
        }
      : {}),
    artifactsDir: dir,
    metricsUrl: f.metrics ? (f.metricsUrl ?? defaultMetricsUrl(f.url)) : null,
    cliCommand: argv,
    progress,
    signal: ac.signal,
    afterRun: f.report
      ? async (d) => {
          try {
            const { writeHtmlReport } = await import('../../bench/report.js');
            await writeHtmlReport(d);
          } catch (err) {
            io.err(
              `warning: HTML report not written: ${err instanceof Error ? err.message : String(err)}\n`,
            );
          }
        }
      : undefined,
  };
  let result;
  try {
    result = await runBench(cfg);
  } finally {
    clearInterval(timer);
    if (tty) io.err('\n');
    if (io === processIo) process.off('SIGINT', onSigint);
  }
  if (f.json) {
    const out =
      result.runs.length === 1
        ? resultJson((result.runs[0] as RunResult).dir)
        : result.runs.map((r) => ({ label: r.label, ...(resultJson(r.dir) as object) }));
    io.out(JSON.stringify(out, null, 2) + '\n');
    return;
  }
  for (const r of result.runs) {
    if (result.runs.length > 1) io.out(`\n== ${r.label} ==\n`);
    io.out(summaryTable(r.summary));
    if (r.server) {
      const s = r.server;
      io.out(
        `server: prefix cache hit rate ${s.prefix_cache_hit_rate === null ? '-' : (s.prefix_cache_hit_rate * 100).toFixed(1) + '%'}` +
          `, waiting p50/max ${f2(s.num_requests_waiting?.p50)}/${f2(s.num_requests_waiting?.max)}` +
          `, KV usage p50/max ${f2(s.kv_cache_usage?.p50)}/${f2(s.kv_cache_usage?.max)}\n`,
      );
    }
  }
  if (result.maxRate !== undefined)
    io.out(
      `max rate meeting the SLOs: ${result.maxRate === null ? 'none of the rates tried' : `${result.maxRate.toFixed(3)} req/s`}\n`,
    );
  io.out(`artifacts: ${dir}\n`);
}

type AiperfJson = Record<string, unknown>;

function stat(j: AiperfJson, tag: string, key: 'p50' | 'avg'): number | null {
  const m = j[tag] as Partial<MetricStats> | null | undefined;
  if (!m || typeof m !== 'object') return null;
  const v = m[key];
  return typeof v === 'number' ? v : null;
}

/** `bench compare A B`: each metric's p50/avg (and throughputs) in A and B, with deltas. */
export function compareRuns(a: AiperfJson, b: AiperfJson): string[][] {
  const rows: string[][] = [];
  const row = (name: string, x: number | null, y: number | null) => {
    if (x === null && y === null) return;
    const d = x !== null && y !== null ? y - x : null;
    const pct =
      d !== null && x !== null && x !== 0
        ? `${d >= 0 ? '+' : ''}${((d / x) * 100).toFixed(1)}%`
        : '';
    rows.push([name, f2(x), f2(y), d === null ? '' : `${d >= 0 ? '+' : ''}${d.toFixed(2)}`, pct]);
  };
  for (const tag of RECORD_METRIC_ORDER) {
    const unit =
      (a[tag] as { unit?: string } | null)?.unit ??
      (b[tag] as { unit?: string } | null)?.unit ??
      '';
    const name = `${METRIC_HEADERS[tag] ?? tag} (${unit})`;
    row(`${name} p50`, stat(a, tag, 'p50'), stat(b, tag, 'p50'));
    row(`${name} avg`, stat(a, tag, 'avg'), stat(b, tag, 'avg'));
  }
  for (const [tag, label] of [
    ['request_throughput', 'Request Throughput (requests/sec)'],
    ['output_token_throughput', 'Output Token Throughput (tokens/sec)'],
    ['total_token_throughput', 'Total Token Throughput (tokens/sec)'],
    ['goodput', 'Goodput (requests/sec)'],
    ['request_count', 'Request Count'],
    ['error_request_count', 'Error Request Count'],
  ] as const)
    row(label, stat(a, tag, 'avg'), stat(b, tag, 'avg'));
  return rows;
}

export function registerBench(program: Command, io: Io = processIo): void {
  const bench = program
    .command('bench')
    .description(
      'Benchmark an OpenAI-compatible endpoint (AIPerf-compatible metrics and exports).\n' +
        'Note: --url and --api-key are the target endpoint here.',
    )
    .option('--url <base>', 'base URL of the OpenAI API, e.g. http://127.0.0.1:8000')
    .option('--api-key <key>', 'bearer token sent to the target')
    .option('--model <name>', 'model name sent in requests')
    .option(
      '--endpoint <kind>',
      'chat or completions',
      oneOf('endpoint', ['chat', 'completions'] as const),
      'chat',
    )
    .option('--no-stream', 'non-streaming requests')
    .option('--no-ignore-eos', 'do not send ignore_eos (outputs may be shorter than --osl)')
    .option('--extra-body <json>', 'JSON object merged into every request body')
    .option('--workload <preset>', `preset: ${PRESETS.join(', ')}`, oneOf('workload', PRESETS))
    .option('--scale <f>', 'scale a preset (groups, lengths, rates)', num('scale', 0.0001), 1)
    .option('--isl <n>', 'input tokens per request', num('isl', 1, true), 550)
    .option('--isl-stddev <n>', 'stddev of input tokens', num('isl-stddev', 0), 0)
    .option('--osl <n>', 'output tokens per request', num('osl', 1, true), 150)
    .option('--osl-stddev <n>', 'stddev of output tokens', num('osl-stddev', 0), 0)
    .option('--seed <n>', 'random seed', num('seed', 0, true), 0)
    .option('--prefix-groups <g>', 'shared-prefix groups', num('prefix-groups', 1, true))
    .option('--prefix-length <l>', 'shared prefix tokens per group', num('prefix-length', 1, true))
    .option('--users-per-group <u>', 'users per prefix group', num('users-per-group', 1, true), 1)
    .option('--zipf <s>', 'Zipf exponent over prefix groups', num('zipf', 0))
    .option('--turns <n>', 'turns per session (history carried)', num('turns', 1, true), 1)
    .option('--trace <file>', 'replay a Mooncake-format JSONL trace')
    .option(
      '--trace-block-size <n>',
      'tokens per trace hash block',
      num('trace-block-size', 1, true),
      512,
    )
    .option(
      '--trace-speed <f>',
      'trace replay speed (timestamps ÷ f)',
      num('trace-speed', 0.0001),
      1,
    )
    .option(
      '--concurrency <n[,n…]>',
      'closed loop with N in flight (a list sweeps)',
      list('concurrency', true),
    )
    .option(
      '--request-rate <r[,r…]>',
      'open loop at R requests/s (a list sweeps)',
      list('request-rate', false),
    )
    .option(
      '--arrival <kind>',
      'constant, poisson or gamma',
      oneOf('arrival', ['constant', 'poisson', 'gamma'] as const),
      'poisson',
    )
    .option('--burstiness <k>', 'gamma shape (CV = 1/√k)', num('burstiness', 0.0001), 1)
    .option(
      '--ramp-up <sec>',
      'ramp workers (closed) or the rate (open) up over this time',
      num('ramp-up', 0),
    )
    .option('--ramp-from-rate <r>', 'open-loop ramp start rate', num('ramp-from-rate', 0))
    .option(
      '--warmup-requests <n>',
      'requests sent first and excluded',
      num('warmup-requests', 0, true),
      0,
    )
    .option('--request-count <n>', 'profiling requests to send', num('request-count', 1, true))
    .option('--duration <sec>', 'stop sending after this time', num('duration', 0.001))
    .option(
      '--request-cancellation-rate <pct>',
      'cancel this % of requests',
      num('request-cancellation-rate', 0),
    )
    .option(
      '--request-cancellation-delay <ms>',
      'cancel after a random delay up to this',
      num('request-cancellation-delay', 0),
      1000,
    )
    .option(
      '--goodput <slos>',
      'SLOs, e.g. "time_to_first_token:500 inter_token_latency:50" (ms)',
      goodputSpec,
    )
    .option(
      '--search-max-rate <r>',
      'find the highest rate ≤ R meeting the SLOs (bisection)',
      num('search-max-rate', 0.0001),
    )
    .option('--search-trials <n>', 'runs of the search', num('search-trials', 1, true), 6)
    .option(
      '--search-min-good-fraction <f>',
      'good fraction a rate must reach',
      num('search-min-good-fraction', 0),
      0.95,
    )
    .option('--metrics-url <url>', 'Prometheus endpoint of the engine (default <url>/metrics)')
    .option('--no-metrics', 'do not scrape engine metrics')
    .option(
      '--artifacts-dir <dir>',
      'where to write exports (default ./artifacts/<model>-<timestamp>)',
    )
    .option('--json', 'print the profile_export_aiperf.json summary')
    .option('--no-report', 'do not write report.html')
    .option(
      '--progress-interval <sec>',
      'progress line period when stderr is not a TTY',
      num('progress-interval', 0.1),
      5,
    )
    .option('--self-test', "measure the tool's own ceiling against a built-in zero-latency target")
    .action(async (_opts: unknown, cmd: Command) => {
      const f = cmd.optsWithGlobals<BenchFlags>();
      const raw = (cmd.parent as unknown as { rawArgs?: string[] } | null)?.rawArgs ?? [];
      await runBenchCommand(f, io, ['inferplane', ...raw.slice(2)].join(' '));
    });

  bench
    .command('compare <a> <b>')
    .description('compare two artifacts dirs: p50/avg/throughput deltas (B − A)')
    .option('--json', 'print the rows as JSON')
    .action((a: string, b: string, opts: { json?: boolean }) => {
      const rows = compareRuns(resultJson(a) as AiperfJson, resultJson(b) as AiperfJson);
      if (opts.json) io.out(JSON.stringify(rows, null, 2) + '\n');
      else io.out(formatTable(['METRIC', 'A', 'B', 'DELTA', 'DELTA%'], rows));
    });
}
