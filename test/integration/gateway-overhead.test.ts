// Smoke run of bench/gateway-overhead.mjs (upstream, nginx, gateway, wrk and the open-loop
// generator all start, answer and stop). Asserts the report's shape, never a speed: performance
// is judged by the bench's side-by-side ratios, not by a test. Skips when nginx or wrk is missing.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '..', '..');

function findTool(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/sbin'];
  return dirs
    .filter(Boolean)
    .map((d) => join(d, name))
    .find((p) => existsSync(p));
}

// --pin needs a CPU for the proxy and one for the rest.
const PIN = availableParallelism() >= 2;

const missing = ['nginx', 'wrk'].filter((t) => !findTool(t));
const skip = missing.length > 0 ? `${missing.join(' and ')} not installed` : false;

it.skipIf(skip)(
  `gateway-overhead smoke run reports direct, nginx and gateway${skip ? ` (skipped: ${skip})` : ''}`,
  async () => {
    const { stdout } = await promisify(execFile)(
      process.execPath,
      [
        join(ROOT, 'bench', 'gateway-overhead.mjs'),
        '--smoke',
        '--own-rate',
        '--open-connections',
        '40',
        ...(PIN ? ['--pin'] : []),
        '--json',
      ],
      { cwd: ROOT, timeout: 90_000 },
    );
    const r = JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as {
      closed: Record<
        string,
        Record<
          string,
          {
            rps: number;
            errors: number;
            cpuUsPerReq: number;
            userUsPerReq: number;
            sysUsPerReq: number;
          }
        >
      >;
      open: {
        rate: number;
        maxConnections: number;
        targets: Record<
          string,
          { p50Ms: number; errors: number; cpuUsPerReq: number; busy: number }
        >;
      };
      ownRate: Record<string, { rate: number; addedP99Ms: number; busy: number; errors: number }>;
      verdict: { ratio: number; addedP50Ms: number; addedP99Ms: number };
      pin: {
        proxy: number[];
        upstream: number[];
        generator: number[];
        affinity: Record<string, number[]>;
      } | null;
    };
    const c = r.closed['8'];
    for (const t of ['direct', 'nginx', 'gateway rr']) {
      expect(c?.[t]?.rps).toBeGreaterThan(0);
      expect(c?.[t]?.errors).toBe(0);
    }
    // The closed loop's CPU per request, split into user and kernel time (one round: the parts
    // add up to the whole).
    const g = c?.['gateway rr'];
    expect(g?.userUsPerReq).toBeGreaterThan(0);
    expect(g?.sysUsPerReq).toBeGreaterThan(0);
    expect(g!.userUsPerReq + g!.sysUsPerReq).toBeCloseTo(g!.cpuUsPerReq, 6);
    expect(r.open.rate).toBeGreaterThan(0);
    expect(r.open.maxConnections).toBe(40);
    expect(r.open.targets['gateway rr']?.errors).toBe(0);
    expect(Number.isFinite(r.verdict.ratio)).toBe(true);
    expect(Number.isFinite(r.verdict.addedP50Ms)).toBe(true);
    // The open loop's CPU figures, and the control: nginx and the gateway each at half of its
    // own closed-loop maximum (so nginx's rate is its own, not the gateway's).
    expect(r.open.targets['gateway rr']?.cpuUsPerReq).toBeGreaterThan(0);
    expect(r.open.targets['gateway rr']?.busy).toBeGreaterThan(0);
    for (const t of ['nginx', 'gateway rr']) {
      expect(r.ownRate[t]?.errors).toBe(0);
      expect(Number.isFinite(r.ownRate[t]?.addedP99Ms)).toBe(true);
    }
    expect(r.ownRate.nginx?.rate).toBe(Math.round(c!.nginx!.rps * 0.5));
    // --pin: the kernel's own affinity of each process, read back — the proxies on their CPU(s),
    // the upstream and the generators off them.
    if (PIN) {
      const p = r.pin!;
      expect(p.affinity.nginx).toEqual(p.proxy);
      expect(p.affinity['gateway rr']).toEqual(p.proxy);
      expect(p.affinity.direct).toEqual(p.upstream);
      expect(p.affinity.generator).toEqual(p.generator);
      for (const cpu of p.proxy) {
        expect(p.upstream).not.toContain(cpu);
        expect(p.generator).not.toContain(cpu);
      }
    }
    expect(r.ownRate['gateway rr']?.rate).toBe(r.open.rate);
  },
  150_000,
);

it('gateway-overhead refuses an open-loop connection cap below the 32 it opens at the start', async () => {
  const run = promisify(execFile)(
    process.execPath,
    [join(ROOT, 'bench', 'gateway-overhead.mjs'), '--open-connections', '8'],
    { cwd: ROOT, timeout: 30_000 },
  );
  await expect(run).rejects.toMatchObject({
    code: 2,
    stderr: expect.stringContaining('--open-connections takes a whole number ≥ 32') as unknown,
  });
});
