// Generic output helpers: aligned tables, JSON, ages.
import type { Writable } from 'node:stream';

/** Where a command writes; injectable so commands can run in-process in tests. */
export interface Io {
  out(text: string): void;
  err(text: string): void;
  readStdin(): Promise<string>;
  env: NodeJS.ProcessEnv;
  now(): Date;
}

export const processIo: Io = {
  out: (text) => write(process.stdout, text),
  err: (text) => write(process.stderr, text),
  readStdin: () => readAll(process.stdin),
  env: process.env,
  now: () => new Date(),
};

function write(stream: Writable, text: string): void {
  stream.write(text);
}

async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) {
    chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** The raw API JSON, 2-space indented, with a trailing newline. */
export function formatJson(data: unknown): string {
  return JSON.stringify(data, null, 2) + '\n';
}

/** Column gap, as in kubectl. */
const GAP = '   ';

/**
 * Left-aligned table: a header row, then one row per item. Cells are flattened to one line;
 * empty cells print as `-`; the last column is not padded, so lines carry no trailing spaces.
 */
export function formatTable(
  headers: readonly string[],
  rows: readonly (readonly string[])[],
): string {
  const cells = [headers, ...rows].map((row) =>
    headers.map((_, i) => {
      const c = oneLine(row[i] ?? '');
      return c === '' ? '-' : c;
    }),
  );
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return (
    cells
      .map((r) =>
        r
          .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
          .join(GAP)
          .trimEnd(),
      )
      .join('\n') + '\n'
  );
}

/** `key: value` lines with the values aligned. */
export function formatFields(fields: readonly (readonly [string, string])[]): string {
  const width = Math.max(0, ...fields.map(([k]) => k.length + 1));
  return fields.map(([k, v]) => `${`${k}:`.padEnd(width)}  ${v}`.trimEnd()).join('\n') + '\n';
}

/** Replaces newlines and tabs by spaces (and collapses runs), so a cell stays on its row. */
export function oneLine(s: string): string {
  return s.replace(/\s*[\r\n\t]+\s*/g, ' ').trim();
}

/** Cuts `s` to at most `max` characters, ending with `…` when cut. */
export function truncate(s: string, max: number): string {
  if (s.length <= max) return s;
  return max <= 1 ? s.slice(0, max) : `${s.slice(0, max - 1)}…`;
}

/**
 * Age of a timestamp relative to `now`, kubectl style: `45s`, `12m`, `5h`, `3d`, `2y`.
 * Missing or unparseable timestamps give `-`; timestamps in the future give `0s`.
 */
export function formatAge(time: string | null | undefined, now: Date): string {
  if (!time) return '-';
  const t = Date.parse(time);
  if (Number.isNaN(t)) return '-';
  const secs = Math.max(0, Math.floor((now.getTime() - t) / 1000));
  if (secs < 120) return `${secs}s`;
  const mins = Math.floor(secs / 60);
  if (mins < 60) return `${mins}m`;
  const hours = Math.floor(mins / 60);
  if (hours < 48) return `${hours}h`;
  const days = Math.floor(hours / 24);
  if (days < 365) return `${days}d`;
  return `${Math.floor(days / 365)}y`;
}
