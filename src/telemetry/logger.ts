import {
  pino,
  destination,
  stdTimeFunctions,
  symbols,
  type Logger,
  type LevelWithSilent,
} from 'pino';
import { isatty } from 'node:tty';

export type { Logger } from 'pino';

export interface LoggerOptions {
  level?: LevelWithSilent;
  /** File descriptor or path for the JSON log stream (default: stdout). */
  destination?: number | string;
  /**
   * Gather lines and write them in blocks (16 KiB, or every `flushMs`) instead of one write per
   * line — what nginx's `access_log ... buffer= flush=` does. Default: on, unless the destination
   * is a terminal. Lines still in the buffer are written synchronously when the process exits.
   */
  buffered?: boolean;
  /** Longest a buffered line waits before it is written (default 500 ms). */
  flushMs?: number;
}

/** Structured JSON logs; request logs carry reqId, tenant and model. */
export function createLogger(opts: LoggerOptions = {}): Logger {
  const dest = opts.destination ?? 1;
  const buffered = opts.buffered ?? !(typeof dest === 'number' && isatty(dest));
  const file = destination({ dest, sync: false, mkdir: true });
  const options = {
    level: opts.level ?? 'info',
    base: { service: 'inferplane' },
    timestamp: stdTimeFunctions.isoTime,
    formatters: { level: (label: string) => ({ level: label }) },
  };
  if (!buffered) return pino(options, file);
  const batcher = new LineBatcher(file, BLOCK_CHARS, opts.flushMs ?? 500);
  flushAtExit(batcher);
  return pino(options, batcher);
}

/** Batchers to flush when the process exits (weakly held: a dropped logger is not kept alive). */
const atExit = new Set<WeakRef<LineBatcher>>();

/** A block still in memory when the process ends is written, not lost. One exit listener in all. */
function flushAtExit(b: LineBatcher): void {
  if (atExit.size === 0) {
    process.once('exit', () => {
      for (const ref of atExit) ref.deref()?.flushSync();
      atExit.clear();
    });
  }
  if (atExit.size >= 64) {
    for (const ref of atExit) if (ref.deref() === undefined) atExit.delete(ref);
  }
  atExit.add(new WeakRef(b));
}

/** Characters gathered before a block is handed to the file stream. */
const BLOCK_CHARS = 16 * 1024;

/** What LineBatcher needs of its destination (pino's SonicBoom). */
interface BlockSink {
  write(s: string): boolean;
  flush(cb?: (err?: Error | null) => void): void;
  flushSync(): void;
  end(): void;
}

/**
 * Gathers whole lines in memory and hands them to the file stream as one string per block (at
 * `maxChars`, or `flushMs` after the first line of a block). Every line, pino's and the access
 * log's, goes through it, so lines keep their order. The file stream then does its per-write work
 * (a UTF-8 length, a concatenation, a write syscall) once per block instead of once per line.
 */
export class LineBatcher {
  private lines: string[] = [];
  private chars = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly out: BlockSink,
    private readonly maxChars: number,
    private readonly flushMs: number,
  ) {}

  write(line: string): boolean {
    this.lines.push(line);
    this.chars += line.length;
    if (this.chars >= this.maxChars) this.push();
    else if (this.timer === undefined) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.push();
      }, this.flushMs);
      this.timer.unref();
    }
    return true;
  }

  /** Hands the lines gathered so far to the file stream (pino's `logger.flush` calls this). */
  flush(cb?: (err?: Error | null) => void): void {
    this.push();
    this.out.flush(cb);
  }

  /** Writes everything now (process exit). Never throws. */
  flushSync(): void {
    this.push();
    try {
      this.out.flushSync();
    } catch {
      // not open yet, or already closed: nothing more can be written
    }
  }

  end(): void {
    this.push();
    this.out.end();
  }

  private push(): void {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (this.lines.length === 0) return;
    const block = this.lines.length === 1 ? this.lines[0]! : this.lines.join('');
    this.lines = [];
    this.chars = 0;
    this.out.write(block);
  }
}

/** One served request, as the access line records it. */
export interface AccessRecord {
  reqId: string;
  /** The tenant, model, version and replica fields, from {@link accessFields} (made once). */
  fields: string;
  status: number;
  outcome: string;
  retried: boolean;
  ms: number;
  traceId: string;
  promptTokens?: number | undefined;
  completionTokens?: number | undefined;
}

/** The access line's `"tenant":…,"model":…,"version":…,"replica":…` fields, serialized. */
export function accessFields(
  tenant: string,
  model: string,
  version: string,
  replica: number,
): string {
  return (
    `,"tenant":${JSON.stringify(tenant)},"model":${JSON.stringify(model)}` +
    `,"version":${JSON.stringify(version)},"replica":${replica}`
  );
}

/** Characters a JSON string literal escapes (and anything outside printable ASCII). */
// eslint-disable-next-line no-control-regex -- control characters are what it looks for
const NEEDS_ESCAPE = /[\x00-\x1f"\\\x7f-\uffff]/;

/**
 * `s` as a JSON string literal; ids made of safe characters (the usual case) skip the escaper.
 * One regular-expression test: a loop of charCodeAt over a sliced string (a pooled request id)
 * costs twice as much.
 */
function jsonString(s: string): string {
  return NEEDS_ESCAPE.test(s) ? JSON.stringify(s) : `"${s}"`;
}

/**
 * The per-request access line ("request done", info level), written straight to the logger's
 * destination in exactly the line pino writes (level, time, bindings, fields, msg), without
 * pino's generic object serializer — several µs a line on the serving path. Falls back to
 * `logger.info` for a logger that is not pino's own.
 */
export function accessLogger(logger: Logger): (r: AccessRecord) => void {
  const l = logger as unknown as Record<symbol, unknown>;
  const stream = l[symbols.streamSym] as { write(s: string): unknown } | undefined;
  const bindings = l[symbols.chindingsSym];
  if (!stream || typeof stream.write !== 'function' || typeof bindings !== 'string') {
    return (r) => {
      const { fields, ...rest } = r;
      logger.info({ ...(JSON.parse(`{${fields.slice(1)}}`) as object), ...rest }, 'request done');
    };
  }
  // pino's isoTime, formatted once per second (toISOString costs µs): "…T03:00:00." + ms + "Z".
  let second = -1;
  let prefix = '';
  return (r) => {
    if (!logger.isLevelEnabled('info')) return;
    const now = Date.now();
    const s = Math.floor(now / 1000);
    if (s !== second) {
      second = s;
      prefix = new Date(s * 1000).toISOString().slice(0, 20);
    }
    const ms = now - s * 1000;
    let line =
      `{"level":"info","time":"${prefix}${ms < 10 ? '00' : ms < 100 ? '0' : ''}${ms}Z"` +
      `${bindings},"reqId":${jsonString(r.reqId)}${r.fields},"status":${r.status}` +
      `,"outcome":"${r.outcome}","retried":${r.retried},"ms":${r.ms}` +
      `,"traceId":"${r.traceId}"`;
    if (r.promptTokens !== undefined) line += `,"promptTokens":${r.promptTokens}`;
    if (r.completionTokens !== undefined) line += `,"completionTokens":${r.completionTokens}`;
    stream.write(line + ',"msg":"request done"}\n');
  };
}
