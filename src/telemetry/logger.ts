import { pino, destination, stdTimeFunctions, type Logger, type LevelWithSilent } from 'pino';

export type { Logger } from 'pino';

export interface LoggerOptions {
  level?: LevelWithSilent;
  /** File descriptor or path for the JSON log stream (default: stdout). */
  destination?: number | string;
}

/** Structured JSON logs; request logs carry reqId, tenant and model. */
export function createLogger(opts: LoggerOptions = {}): Logger {
  return pino(
    {
      level: opts.level ?? 'info',
      base: { service: 'inferplane' },
      timestamp: stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination({ dest: opts.destination ?? 1, sync: false, mkdir: true }),
  );
}
