// Opens a written report in headless Chromium (Debian's /usr/bin/chromium, no downloaded
// browser): every plot is visible and drawn, and a full-page screenshot is a real picture.
import { copyFile, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { writeHtmlReport } from '../../src/bench/report.js';
import { syntheticRun } from '../fixtures/bench/synthetic.js';
import { CHROMIUM, HAS_CHROMIUM, launchChromium } from '../helpers/chromium.js';

const PLOTS = ['ttft', 'itl', 'throughput', 'concurrency', 'ttft-over-time'];

interface PixelStats {
  width: number;
  height: number;
  colours: number;
  nonWhite: number;
}

if (!HAS_CHROMIUM) {
  console.warn(`bench-report browser test skipped: ${CHROMIUM} not found (CI installs it)`);
}

describe('bench report in a browser', () => {
  it.skipIf(!HAS_CHROMIUM)(
    'renders every plot visibly and screenshots to a non-trivial PNG (needs /usr/bin/chromium)',
    async () => {
      const dir = await mkdtemp(join(tmpdir(), 'bench-report-browser-'));
      const browser = await launchChromium();
      try {
        const run = syntheticRun({ count: 1500, concurrency: 16, errorRate: 0.02, seed: 11 });
        await writeFile(
          join(dir, 'profile_export.jsonl'),
          run.records.map((r) => JSON.stringify(r)).join('\n') + '\n',
        );
        await writeFile(join(dir, 'profile_export_aiperf.json'), JSON.stringify(run.aggregate));
        await writeFile(join(dir, 'run_metadata.json'), JSON.stringify(run.metadata));
        const report = await writeHtmlReport(dir);

        const page = await browser.newPage({ viewport: { width: 1360, height: 900 } });
        // Offline: any request other than the file itself is a failure.
        const requests: string[] = [];
        page.on('request', (req) => requests.push(req.url()));
        const response = await page.goto(pathToFileURL(report).href);
        expect(response === null || response.ok()).toBe(true);
        expect(await page.title()).toContain('llama-3.1-8b-instruct');

        for (const name of PLOTS) {
          const svg = page.locator(`svg[data-plot="${name}"]`);
          await expect.poll(() => svg.isVisible(), { message: name }).toBe(true);
          const box = await svg.boundingBox();
          expect(box?.width ?? 0, name).toBeGreaterThan(200);
          expect(box?.height ?? 0, name).toBeGreaterThan(100);
          const drawn = await svg.locator('.marks').locator('rect, path, circle').count();
          expect(drawn, name).toBeGreaterThan(0);
          // The marks themselves have area on screen.
          const marksBox = await svg.locator('.marks').boundingBox();
          expect((marksBox?.width ?? 0) * (marksBox?.height ?? 0), name).toBeGreaterThan(100);
        }
        expect(requests.filter((u) => !u.startsWith('file://'))).toEqual([]);

        const png = join(dir, 'report.png');
        await page.screenshot({ path: png, fullPage: true });
        if (process.env.BENCH_REPORT_SCREENSHOT) {
          await copyFile(png, process.env.BENCH_REPORT_SCREENSHOT);
        }
        const { size } = await stat(png);
        expect(size).toBeGreaterThan(50_000);

        // Pixel variety: decode the screenshot on a canvas in a blank page and count colours (the
        // page function is a string: this project's types have no DOM).
        const blank = await browser.newPage();
        const dataUrl = `data:image/png;base64,${(await readFile(png)).toString('base64')}`;
        const stats = await blank.evaluate<PixelStats>(`(async () => {
          const img = new Image();
          img.src = ${JSON.stringify(dataUrl)};
          await img.decode();
          const canvas = document.createElement('canvas');
          canvas.width = img.width;
          canvas.height = img.height;
          const ctx = canvas.getContext('2d');
          ctx.drawImage(img, 0, 0);
          const data = ctx.getImageData(0, 0, img.width, img.height).data;
          const colours = new Set();
          let nonWhite = 0;
          let samples = 0;
          for (let i = 0; i < data.length; i += 4 * 97) {
            colours.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
            if (data[i] + data[i + 1] + data[i + 2] < 3 * 235) nonWhite++;
            samples++;
          }
          return { width: img.width, height: img.height, colours: colours.size, nonWhite: nonWhite / samples };
        })()`);
        expect(stats.width).toBe(1360);
        expect(stats.height).toBeGreaterThan(1500);
        expect(stats.colours).toBeGreaterThan(20);
        expect(stats.nonWhite).toBeGreaterThan(0.01);
      } finally {
        await browser.close();
        await rm(dir, { recursive: true, force: true });
      }
    },
    60_000,
  );
});
