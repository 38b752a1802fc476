// The access line is written by hand (not through pino's serializer) and every line goes through a
// batcher: the line must be exactly what pino would write, and batching must lose or reorder
// nothing.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  LineBatcher,
  accessFields,
  accessLogger,
  createLogger,
  type Logger,
} from '../../src/telemetry/logger.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function logFile(): string {
  const d = mkdtempSync(join(tmpdir(), 'inferplane-log-'));
  dirs.push(d);
  return join(d, 'log.jsonl');
}

function lines(path: string): Record<string, unknown>[] {
  let text = '';
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** Flushes the logger and waits until the file holds `n` lines (the write itself is async). */
async function flushed(logger: Logger, path: string, n: number): Promise<void> {
  logger.flush();
  const deadline = Date.now() + 10_000;
  while (lines(path).length < n && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('access log', () => {
  it('writes the line pino would write for the same fields', async () => {
    const path = logFile();
    const logger = createLogger({ destination: path, buffered: true });
    const log = accessLogger(logger);
    const record = {
      reqId: 'req-"quoted"\\id\u0001',
      status: 200,
      outcome: 'ok',
      retried: false,
      ms: 1.2345,
      traceId: '0123456789abcdef0123456789abcdef',
      promptTokens: 12,
      completionTokens: 9,
    };
    const labels = { tenant: 'team "a"', model: 'llama/8b', version: 'v2', replica: 3 };
    log({
      ...record,
      fields: accessFields(labels.tenant, labels.model, labels.version, labels.replica),
    });
    logger.info(
      {
        reqId: record.reqId,
        ...labels,
        status: 200,
        outcome: 'ok',
        retried: false,
        ms: 1.2345,
        traceId: record.traceId,
        promptTokens: 12,
        completionTokens: 9,
      },
      'request done',
    );
    log({
      reqId: 'plain-id',
      fields: accessFields('t', 'm', 'default', 0),
      status: 499,
      outcome: 'cancelled',
      retried: true,
      ms: 3,
      traceId: 'ffffffffffffffffffffffffffffffff',
    });
    await flushed(logger, path, 3);
    const raw = readFileSync(path, 'utf8').split('\n');
    const [ours, pinos, third] = lines(path);
    // Same keys in the same order, same values; only the time differs.
    expect(Object.keys(ours!)).toEqual(Object.keys(pinos!));
    expect({ ...ours, time: 0 }).toEqual({ ...pinos, time: 0 });
    expect(ours!.time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(Math.abs(Date.parse(ours!.time as string) - Date.now())).toBeLessThan(60_000);
    expect(raw[0]!.replace(/"time":"[^"]+"/, '')).toBe(raw[1]!.replace(/"time":"[^"]+"/, ''));
    expect(third).toMatchObject({ reqId: 'plain-id', status: 499, retried: true, replica: 0 });
    expect(third).not.toHaveProperty('promptTokens');
  });

  it('writes nothing below info level', async () => {
    const path = logFile();
    const logger = createLogger({ destination: path, level: 'warn', buffered: true });
    accessLogger(logger)({
      reqId: 'r',
      fields: accessFields('t', 'm', 'v', 0),
      status: 200,
      outcome: 'ok',
      retried: false,
      ms: 1,
      traceId: 'a'.repeat(32),
    });
    logger.warn('only this');
    await flushed(logger, path, 1);
    expect(lines(path).map((l) => l.msg)).toEqual(['only this']);
  });
});

describe('LineBatcher', () => {
  function sink() {
    const writes: string[] = [];
    let syncs = 0;
    return {
      writes,
      syncs: () => syncs,
      out: {
        write: (s: string) => (writes.push(s), true),
        flush: (cb?: (e?: Error | null) => void) => cb?.(null),
        flushSync: () => void syncs++,
        end: () => undefined,
      },
    };
  }

  it('hands lines over in order, one block per maxChars', () => {
    const s = sink();
    const b = new LineBatcher(s.out, 100, 60_000);
    const want: string[] = [];
    for (let i = 0; i < 50; i++) {
      const line = `{"n":${i}}\n`;
      want.push(line);
      b.write(line);
    }
    expect(s.writes.length).toBeGreaterThanOrEqual(4);
    expect(s.writes.every((w) => w.length >= 100)).toBe(true);
    b.flushSync();
    expect(s.writes.join('')).toBe(want.join(''));
    expect(s.syncs()).toBe(1);
  });

  it('writes a partial block after flushMs', async () => {
    const s = sink();
    const b = new LineBatcher(s.out, 1 << 20, 20);
    b.write('a\n');
    b.write('b\n');
    expect(s.writes).toEqual([]);
    const deadline = Date.now() + 5_000;
    while (s.writes.length === 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(s.writes).toEqual(['a\nb\n']);
    b.write('c\n');
    b.flush();
    expect(s.writes).toEqual(['a\nb\n', 'c\n']);
  });

  it('a buffered logger writes what is left when the process exits', async () => {
    const path = logFile();
    const { spawnSync } = await import('node:child_process');
    // The built module (test/global-setup.ts builds dist/ when it is older than src/).
    const src = new URL('../../dist/telemetry/logger.js', import.meta.url).pathname;
    const script =
      `const { createLogger } = await import(${JSON.stringify(src)});` +
      `const l = createLogger({ destination: ${JSON.stringify(path)}, buffered: true, flushMs: 60000 });` +
      `await new Promise((r) => setTimeout(r, 100));` +
      `for (let i = 0; i < 3; i++) l.info({ i }, 'line');` +
      `process.exit(0);`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(r.status, r.stderr).toBe(0);
    expect(lines(path).map((l) => l.i)).toEqual([0, 1, 2]);
  });
});
