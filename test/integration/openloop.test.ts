// The open-loop generators of bench/lib/openloop.mjs against a node:http server on loopback: both
// send what the rate asks and count what came back (content-length and chunked answers, non-2xx
// answers, a server that closes connections). Behaviour only: no speed, and no pacing (how evenly
// the requests go out is a timing, reported by the bench as the send gaps, not asserted here).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
// @ts-expect-error: a plain .mjs module of the benches, without types
import { cGenerator, runOpenLoop } from '../../bench/lib/openloop.mjs';

interface Summary {
  sent: number;
  measured: number;
  errors: number;
  non2xx: number;
  generator: string;
  serviceMs: Record<'p50' | 'p90' | 'p95' | 'p98' | 'p99' | 'p995' | 'p999' | 'max', number>;
  sendGapMs: { p50: number };
}
const run = runOpenLoop as (o: Record<string, unknown>) => Promise<Summary>;

const hasCc = (() => {
  try {
    execFileSync(process.env.CC ?? 'cc', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

let server: Server;
let port = 0;
let served = 0;

beforeAll(async () => {
  server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      served++;
      if (req.url === '/chunked') {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('a'.repeat(100));
        res.end('b'.repeat(50));
      } else if (req.url === '/odd' && served % 2 === 1) {
        res.writeHead(503, { 'content-length': '4' });
        res.end('busy');
      } else if (req.url === '/close' && served % 10 === 0) {
        res.writeHead(200, { 'content-length': '2', connection: 'close' });
        res.end('ok');
      } else {
        res.writeHead(200, { 'content-length': '2' });
        res.end('ok');
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as AddressInfo).port;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

const base = { durationS: 1, warmupS: 0.2, preopen: 4, maxConnections: 64, body: '{}' };

describe.each(hasCc ? ['c', 'node'] : ['node'])('the %s generator', (generator) => {
  it('sends rate × time requests and counts every answer', async () => {
    for (const path of ['/plain', '/chunked', '/close']) {
      const s = await run({ ...base, port, path, rate: 400, generator });
      expect(s.generator).toBe(generator);
      expect(s.sent).toBe(480); // 400/s over 0.2 s of warm-up and 1 s measured
      expect(s.errors).toBe(0);
      expect(s.non2xx).toBe(0);
      expect(s.measured).toBe(400);
      expect(s.serviceMs.p50).toBeGreaterThan(0);
      // The same percentiles from both generators, in order.
      const q = s.serviceMs;
      const order = [q.p50, q.p90, q.p95, q.p98, q.p99, q.p995, q.p999, q.max];
      expect(order.every((v, i) => Number.isFinite(v) && (i === 0 || v >= order[i - 1]!))).toBe(
        true,
      );
      expect(Number.isFinite(s.sendGapMs.p50)).toBe(true);
    }
  });

  it('counts non-2xx answers', async () => {
    served = 0;
    const s = await run({ ...base, port, path: '/odd', rate: 200, generator });
    expect(s.errors).toBe(0);
    expect(s.non2xx).toBe(120); // every other one of 240
  });
});

describe.skipIf(!hasCc)('the C generator', () => {
  it('is built once and reused', () => {
    const a = (cGenerator as () => string | null)();
    expect(a).toBeTruthy();
    expect((cGenerator as () => string | null)()).toBe(a);
  });

  it('traces each measured request: when it was written and how long it took', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'openloop-trace-'));
    try {
      const traceFile = join(dir, 'trace.txt');
      const before = Date.now() * 1000;
      const s = await run({ ...base, port, path: '/plain', rate: 300, generator: 'c', traceFile });
      const after = Date.now() * 1000;
      const lines = readFileSync(traceFile, 'utf8').trim().split('\n');
      expect(lines).toHaveLength(s.measured);
      const rows = lines.map((l) => l.split(' ').map(Number));
      // Wall-clock µs within the run, and the latencies the summary's percentiles come from.
      for (const [at, us] of rows) {
        expect(at).toBeGreaterThanOrEqual(before);
        expect(at).toBeLessThanOrEqual(after);
        expect(us).toBeGreaterThan(0);
      }
      const sorted = rows.map(([, us]) => us!).sort((x, y) => x - y);
      expect(sorted.at(-1)! / 1000).toBeCloseTo(s.serviceMs.max, 3);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
