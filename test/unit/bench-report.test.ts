import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { MAX_SCATTER_POINTS, renderHtmlReport, writeHtmlReport } from '../../src/bench/report.js';
import { syntheticRun } from '../fixtures/bench/synthetic.js';

const PLOTS = ['ttft', 'itl', 'throughput', 'concurrency', 'ttft-over-time'] as const;
const FIXTURE = resolve(import.meta.dirname, '../fixtures/bench/small-run');

function plot(html: string, name: string): string {
  const m = new RegExp(`<svg data-plot="${name}"[\\s\\S]*?</svg>`).exec(html);
  if (!m) throw new Error(`no plot ${name}`);
  return m[0];
}

/** Drawn marks inside a plot's `marks` group (not axes, grid or legend). */
function marks(svg: string): number {
  const m = /<g class="marks"[^>]*>([\s\S]*?)<\/g>/.exec(svg);
  return m?.[1]?.match(/<(rect|path|circle)\b/g)?.length ?? 0;
}

/** The invariants every page must satisfy, whatever the input. */
function expectWellFormed(html: string): void {
  expect(html.startsWith('<!doctype html>')).toBe(true);
  expect(html).toMatch(/<title>[^<]+<\/title>/);
  for (const name of PLOTS) expect(html).toContain(`<svg data-plot="${name}"`);
  expect(html.match(/<svg data-plot=/g)).toHaveLength(PLOTS.length);
  expect(html).not.toMatch(/\bNaN\b|\bundefined\b|\bInfinity\b|\[object Object\]/);
  // Self-contained: no scripts, no linked resources, nothing fetched from CSS.
  expect(html).not.toMatch(/<script|<link|<img|<iframe|@import|url\(/i);
  for (const m of html.matchAll(
    /\b(?:src|href|xlink:href|action|srcset)\s*=\s*["']?([^"'\s>]*)/gi,
  )) {
    expect(m[1] ?? '', `external reference ${m[0]}`).toMatch(/^(#|data:)/);
  }
  // Every SVG coordinate attribute is a finite number.
  for (const m of html.matchAll(/\s(x|y|x1|x2|y1|y2|cx|cy|r|width|height)="([^"]*)"/g)) {
    expect(Number.isFinite(Number(m[2])), `${m[1]}="${m[2]}"`).toBe(true);
  }
  for (const m of html.matchAll(/\sd="([^"]*)"/g)) {
    expect(m[1] ?? '').toMatch(/^[MLHVZ0-9.,\s-]+$/);
  }
}

describe('renderHtmlReport', () => {
  it('renders a realistic run: header, tables, five plots with marks', () => {
    const run = syntheticRun({ count: 600, concurrency: 12, errorRate: 0.03, seed: 7 });
    const html = renderHtmlReport(run);
    expectWellFormed(html);
    expect(html).toContain('<title>Benchmark report — llama-3.1-8b-instruct</title>');
    expect(html).toContain('closed loop · concurrency 12');
    expect(html).toContain('Goodput (requests meeting every SLO: TTFT ≤ 500 ms)');
    expect(html).toMatch(/Server metrics[\s\S]*prefix cache hit rate<\/th><td>42.1%/);
    expect(html).toMatch(/kv cache usage<\/th><td>42.0%/);
    expect(html).toContain('http://127.0.0.1:8080/v1/chat/completions');
    expect(html).toContain('synthetic · isl=550, osl=100');
    expect(html).toContain('2025-10-07 05:00:07 UTC');
    for (const abbr of ['TTFT', 'TTST', 'ITL', 'ICL', 'OSL', 'ISL']) {
      expect(html).toContain(`<span class="abbr">${abbr}</span>`);
    }
    expect(html).toContain('<th scope="col">p99</th>');
    expect(html).toContain('Output token throughput');
    expect(html).toContain('InternalServerError');
    for (const name of PLOTS) {
      const svg = plot(html, name);
      expect(marks(svg), name).toBeGreaterThan(0);
      expect(svg).toMatch(/<title id="[^"]+">[^<]+<\/title>/);
      // Axes with tick labels and a unit in the axis title.
      expect(
        svg.match(/<text [^>]*text-anchor="end"[^>]*>[^<]+<\/text>/g)?.length ?? 0,
      ).toBeGreaterThan(2);
      expect(svg).toMatch(/\((ms|s)\)|tokens\/s|in-flight/);
    }
    expect(marks(plot(html, 'ttft'))).toBeGreaterThan(5);
    expect(plot(html, 'ttft')).toContain('class="cdf"');
    expect(plot(html, 'itl')).toContain('class="cdf"');
    expect(marks(plot(html, 'ttft-over-time'))).toBe(
      run.records.filter((r) => r.error === null).length,
    );
    expect(html).toContain('in 1 s buckets');
  });

  it('formats numbers: ms with decimals, tok/s as integers, thousands separators', () => {
    const html = renderHtmlReport({
      records: [],
      aggregate: {
        time_to_first_token: {
          unit: 'ms',
          avg: 1234.5678,
          p50: 12.3456,
          p90: 99.999,
          p99: 2000,
          min: 1,
          max: 3000.04,
        },
        output_token_throughput: { unit: 'tokens/sec', avg: 8730.4 },
        request_throughput: { unit: 'requests/sec', avg: 13.16084 },
        benchmark_duration: { unit: 'sec', avg: 15.19659 },
        request_count: { unit: 'requests', avg: 200 },
      },
    });
    expectWellFormed(html);
    expect(html).toContain(
      '<td>1,234.6</td><td>12.35</td><td>100.00</td><td>2,000.0</td><td>1.00</td><td>3,000.0</td>',
    );
    expect(html).toContain('<td>8,730</td>');
    expect(html).toContain('<td>13.16</td>');
    expect(html).toContain('15.20 s');
    expect(html).toContain('No per-request records');
  });

  it('converts other time units to ms, in records and aggregates', () => {
    const html = renderHtmlReport({
      records: [
        {
          metadata: { request_start_ns: 0, request_end_ns: 2e9 },
          metrics: {
            time_to_first_token: { value: 0.25, unit: 's' },
            request_latency: { value: 2_000_000_000, unit: 'ns' },
            output_sequence_length: { value: 10, unit: 'tokens' },
          },
          error: null,
        },
      ],
      aggregate: { inter_token_latency: { unit: 'sec', avg: 0.0125 } },
    });
    expectWellFormed(html);
    expect(html).toMatch(/Time to first token[\s\S]*?<td>250.0<\/td>/);
    expect(html).toMatch(/Request latency[\s\S]*?<td>2,000.0<\/td>/);
    expect(html).toMatch(/Inter-token latency[\s\S]*?<td>12.50<\/td>/);
  });

  it('0 records, no aggregate: an empty but valid page', () => {
    const html = renderHtmlReport({ records: [], aggregate: {} });
    expectWellFormed(html);
    expect(html).toContain('<title>Benchmark report</title>');
    for (const name of PLOTS) expect(plot(html, name)).toContain('class="no-data"');
    expect(html).toContain('No failed requests.');
  });

  it('1 record', () => {
    const run = syntheticRun({ count: 1, errorRate: 0 });
    const html = renderHtmlReport(run);
    expectWellFormed(html);
    for (const name of PLOTS) expect(marks(plot(html, name)), name).toBeGreaterThan(0);
    expect(html).toMatch(/1 requests? in 1 bin[^<]*All values are equal\./);
    expect(html).toContain('1 (1 succeeded)');
  });

  it('all requests failed', () => {
    const run = syntheticRun({ count: 40, errorRate: 1 });
    const html = renderHtmlReport(run);
    expectWellFormed(html);
    expect(html).toContain('40 (0 succeeded)');
    expect(html).toContain('40 (100%)');
    expect(plot(html, 'ttft')).toContain('class="no-data"');
    expect(plot(html, 'throughput')).toContain('class="no-data"');
    // In-flight failed requests still count.
    expect(marks(plot(html, 'concurrency'))).toBeGreaterThan(0);
    expect(html).toContain('RateLimitError');
    expect(plot(html, 'ttft-over-time')).toContain('class="no-data"');
  });

  it('constant values (zero-width ranges)', () => {
    const run = syntheticRun({ count: 50, concurrency: 50, constant: true });
    const html = renderHtmlReport(run);
    expectWellFormed(html);
    expect(html.match(/50 requests in 1 bin[^<]*All values are equal\./g)).toHaveLength(2);
    for (const name of PLOTS) expect(marks(plot(html, name)), name).toBeGreaterThan(0);
  });

  it('is liberal: odd records, missing fields, numbers as strings', () => {
    const html = renderHtmlReport({
      records: [
        null,
        42,
        'x',
        { metadata: {}, metrics: {}, error: null },
        { metrics: { time_to_first_token: 12 } },
        {
          metadata: { request_start_ns: '1000000000', request_end_ns: '1500000000' },
          metrics: { time_to_first_token: { value: '100' }, output_sequence_length: { value: 5 } },
        },
        {
          metadata: { request_start_ns: 2e9 },
          metrics: { request_latency: { value: 300, unit: 'ms' } },
        },
        { metadata: { request_end_ns: 3e9 }, metrics: null, error: 'boom' },
        { metadata: { benchmark_phase: 'warmup', request_start_ns: 0 }, metrics: {} },
      ],
      aggregate: { input_config: 'not an object', time_to_first_token: null, goodput: null },
      metadata: { model: { name: 'm' }, seed: 0, load: 'trace replay' },
    });
    expectWellFormed(html);
    expect(html).toContain('3 lines of the records file could not be read');
    expect(html).toContain('1 warm-up request excluded');
    expect(html).toContain('trace replay');
    expect(html).toMatch(/<dt>Seed<\/dt><dd>0<\/dd>/);
  });

  it('escapes metadata text', () => {
    const html = renderHtmlReport({
      records: [],
      aggregate: {},
      metadata: {
        model: '<script>alert(1)</script>',
        endpoint: 'https://example.com/v1?a=1&b="2"',
      },
    });
    expectWellFormed(html);
    expect(html).toContain('&lt;script&gt;alert(1)&lt;/script&gt;');
    expect(html).toContain('https://example.com/v1?a=1&amp;b=&quot;2&quot;');
  });

  it('100k records: bins and samples instead of drawing every request', () => {
    const run = syntheticRun({ count: 100_000, concurrency: 64, withoutChunks: true, seed: 3 });
    const html = renderHtmlReport(run);
    expectWellFormed(html);
    const scatter = plot(html, 'ttft-over-time');
    expect(marks(scatter)).toBe(MAX_SCATTER_POINTS);
    expect(html).toMatch(/systematic sample of 5,000 of \d{2},\d{3} requests/);
    expect(html).toContain('maximum per 600th of the run');
    expect(marks(plot(html, 'ttft'))).toBeLessThanOrEqual(60 + 1); // bins + the CDF path
    expect(html.length).toBeLessThan(1_500_000);
  }, 60_000);

  it('long and short runs get coarser and finer throughput buckets', () => {
    const tiny = syntheticRun({ count: 30, concurrency: 10 });
    expect(renderHtmlReport(tiny)).toMatch(/in \d+ ms buckets/);
    const long = {
      records: Array.from({ length: 200 }, (_, i) => ({
        metadata: { request_start_ns: i * 20e9, request_end_ns: i * 20e9 + 1e9 },
        metrics: {
          time_to_first_token: { value: 50, unit: 'ms' },
          output_sequence_length: { value: 10, unit: 'tokens' },
        },
        error: null,
      })),
      aggregate: {},
    };
    const html = renderHtmlReport(long);
    expectWellFormed(html);
    expect(html).toContain('in 10 s buckets');
  });
});

describe('writeHtmlReport', () => {
  const dirs: string[] = [];
  afterEach(async () => {
    await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
  });
  async function tempDir(): Promise<string> {
    const d = await mkdtemp(join(tmpdir(), 'bench-report-'));
    dirs.push(d);
    return d;
  }

  it('writes report.html from the artifact files', async () => {
    const dir = await tempDir();
    for (const f of ['profile_export.jsonl', 'profile_export_aiperf.json', 'run_metadata.json']) {
      await copyFile(join(FIXTURE, f), join(dir, f));
    }
    const out = await writeHtmlReport(dir);
    expect(out).toBe(join(dir, 'report.html'));
    const html = await readFile(out, 'utf8');
    expectWellFormed(html);
    expect(html).toContain('<title>Benchmark report — openai/gpt-oss-20b</title>');
    expect(html).toContain('open loop · 3.50 req/s · poisson arrivals');
    expect(html).not.toContain('Server metrics');
    expect(html).toContain('RequestCancellationError');
    expect(html).toContain('ConnectError');
    expect(html).toContain('1 line of the records file could not be read');
    // Aggregate values win over values recomputed from records.
    expect(html).toMatch(/Time to first token[\s\S]*?<td>241.4<\/td>/);
    expect(html).toMatch(/Goodput[\s\S]*?<td>2.57<\/td>/);
    for (const name of PLOTS) expect(marks(plot(html, name)), name).toBeGreaterThan(0);
  });

  it('takes a title, and works without metadata or without the aggregate', async () => {
    const dir = await tempDir();
    const run = syntheticRun({ count: 20 });
    await writeFile(
      join(dir, 'profile_export.jsonl'),
      run.records.map((r) => JSON.stringify(r)).join('\n'),
    );
    const html = await readFile(await writeHtmlReport(dir, { title: 'Nightly run' }), 'utf8');
    expectWellFormed(html);
    expect(html).toContain('<title>Nightly run</title>');
    expect(html).toMatch(/Time to first token[\s\S]*?<td>\d/);
  });

  it('fails clearly when the folder has no artifacts', async () => {
    const dir = await tempDir();
    await expect(writeHtmlReport(dir)).rejects.toThrow(/no benchmark artifacts/);
  });
});
