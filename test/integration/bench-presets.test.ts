// Every workload preset of shared/reference/workloads.md, scaled down, run through the CLI
// (`inferplane bench`, in process) against a real simulated fleet; each run's HTML report is then
// opened in headless Chromium, screenshotted, and checked for its plots.
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PRESETS } from '../../src/bench/workloads.js';
import { run } from '../../src/cli/program.js';
import type { Io } from '../../src/cli/output.js';
import { startSimFleet, type SimFleet } from '../../src/sim/fleet.js';
import { CHROMIUM, HAS_CHROMIUM, launchChromium } from '../helpers/chromium.js';

const PLOTS = ['ttft', 'itl', 'throughput', 'concurrency', 'ttft-over-time'];

let fleet: SimFleet;
let dir: string;
let browser: Browser | undefined;

beforeAll(async () => {
  // Two replicas behind no gateway: the bench targets replica 0; time runs 50× faster.
  fleet = await startSimFleet({
    replicas: 2,
    basePort: 0,
    host: '127.0.0.1',
    model: 'llama-3.1-8b',
    servedModelName: 'm',
    timeScale: 0.02,
  });
  dir = mkdtempSync(join(tmpdir(), 'inferplane-presets-'));
  if (HAS_CHROMIUM) {
    browser = await launchChromium();
  }
});

afterAll(async () => {
  await browser?.close();
  await fleet?.close();
  rmSync(dir, { recursive: true, force: true });
});

function captureIo(): Io & { stdout: () => string; stderr: () => string } {
  let out = '';
  let err = '';
  return {
    out: (t) => (out += t),
    err: (t) => (err += t),
    readStdin: () => Promise.resolve(''),
    env: {},
    now: () => new Date(),
    stdout: () => out,
    stderr: () => err,
  };
}

describe('bench presets against the simulator', () => {
  for (const preset of PRESETS) {
    it(`${preset}: completes, exports, and its report renders in Chromium`, async () => {
      const artifacts = join(dir, preset);
      const load =
        preset === 'shared-prefix-b2b'
          ? ['--request-rate', '40', '--arrival', 'poisson']
          : ['--concurrency', '8'];
      const io = captureIo();
      const code = await run(
        [
          'node',
          'inferplane',
          'bench',
          '--url',
          fleet.replicas[0]!.url,
          '--model',
          'm',
          '--workload',
          preset,
          '--scale',
          '0.02',
          '--request-count',
          '24',
          ...load,
          '--artifacts-dir',
          artifacts,
          '--seed',
          '7',
          '--json',
        ],
        io,
      );
      expect(code, io.stderr()).toBe(0);
      const summary = JSON.parse(
        readFileSync(join(artifacts, 'profile_export_aiperf.json'), 'utf8'),
      ) as {
        request_count?: { avg: number };
        error_request_count?: { avg: number };
      };
      expect(summary.request_count?.avg).toBe(24);
      expect(summary.error_request_count?.avg ?? 0).toBe(0);
      const lines = readFileSync(join(artifacts, 'profile_export.jsonl'), 'utf8')
        .trim()
        .split('\n');
      expect(lines.length).toBeGreaterThanOrEqual(24);

      const report = join(artifacts, 'report.html');
      expect(existsSync(report)).toBe(true);
      if (!browser) {
        console.warn(`${CHROMIUM} missing: report not opened in a browser (CI installs it)`);
        return;
      }
      const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
      try {
        await page.goto(pathToFileURL(report).href);
        for (const plot of PLOTS) {
          const svg = page.locator(`svg[data-plot="${plot}"]`);
          await expect(svg.isVisible()).resolves.toBe(true);
          const box = await svg.boundingBox();
          expect(box?.width ?? 0).toBeGreaterThan(200);
          expect(await svg.locator('rect, path, circle').count()).toBeGreaterThan(3);
        }
        const shot = process.env.BENCH_PRESET_SCREENSHOT_DIR
          ? join(process.env.BENCH_PRESET_SCREENSHOT_DIR, `${preset}.png`)
          : join(artifacts, 'report.png');
        await page.screenshot({ path: shot, fullPage: true });
        expect(statSync(shot).size).toBeGreaterThan(50_000);
      } finally {
        await page.close();
      }
    }, 60_000);
  }
});
