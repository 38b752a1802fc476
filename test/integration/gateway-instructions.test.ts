// Smoke run of bench/gateway-instructions.mjs: the gateway starts under callgrind, counting is
// switched on for exactly the requests asked for, and the dump is read back; the same for the
// no-logic floor proxy (--floor). Asserts the report's shape, never a count. Skips when valgrind
// or nginx is missing.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '..', '..');
const has = (name: string): boolean =>
  [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/sbin']
    .filter(Boolean)
    .some((d) => existsSync(join(d, name)));
const missing = ['valgrind', 'callgrind_control', 'nginx'].filter((t) => !has(t));
const skip = missing.length > 0 ? `${missing.join(', ')} not installed` : false;

it.skipIf(skip)(
  `gateway-instructions smoke run counts the main thread's instructions${skip ? ` (skipped: ${skip})` : ''}`,
  async () => {
    const { stdout } = await promisify(execFile)(
      process.execPath,
      [
        join(ROOT, 'bench', 'gateway-instructions.mjs'),
        '--warmup',
        '200',
        '--requests',
        '100',
        '--floor',
        '--json',
      ],
      { cwd: ROOT, timeout: 170_000 },
    );
    const r = JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as {
      requests: number;
      results: { this?: { main: number; others: number }; floor?: { main: number } };
    };
    expect(r.requests).toBe(100);
    // A request through the gateway is tens of thousands of instructions at the least.
    expect(r.results.this?.main).toBeGreaterThan(10_000);
    expect(r.results.this?.others).toBeGreaterThanOrEqual(0);
    // The no-logic proxy, counted the same way (--floor).
    expect(r.results.floor?.main).toBeGreaterThan(10_000);
  },
  180_000,
);
