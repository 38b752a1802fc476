/**
 * HTML report of one benchmark run: reads an artifacts folder in AIPerf's formats
 * (`profile_export.jsonl`, `profile_export_aiperf.json`, optional `run_metadata.json`) and writes
 * `report.html` — one self-contained file (inline CSS, inline SVG plots drawn here, no scripts, no
 * network) that opens from disk.
 *
 * Liberal in what it reads (missing optional fields, metrics absent on error records, numbers as
 * strings, other time units), strict in what it writes (every number is finite and formatted;
 * absent values render as an em dash).
 */
import { createReadStream } from 'node:fs';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

export interface RenderReportInput {
  /** Parsed lines of `profile_export.jsonl`. */
  records: unknown[];
  /** Parsed `profile_export_aiperf.json`. */
  aggregate: Record<string, unknown>;
  /** Parsed `run_metadata.json`, if any. */
  metadata?: Record<string, unknown>;
  title?: string;
}

export const REPORT_FILE = 'report.html';
export const RECORDS_FILE = 'profile_export.jsonl';
export const AGGREGATE_FILE = 'profile_export_aiperf.json';
export const METADATA_FILE = 'run_metadata.json';

/** Most points drawn in a scatter plot; more requests are sampled (said in the caption). */
export const MAX_SCATTER_POINTS = 5000;

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/**
 * Reads the artifacts in `dir`, writes `dir/report.html` and returns its path. Either export file
 * may be missing (the report shows what it has); both missing is an error.
 */
export async function writeHtmlReport(dir: string, opts: { title?: string } = {}): Promise<string> {
  const recordsPath = join(dir, RECORDS_FILE);
  const aggregatePath = join(dir, AGGREGATE_FILE);
  const hasRecords = await exists(recordsPath);
  const hasAggregate = await exists(aggregatePath);
  if (!hasRecords && !hasAggregate) {
    throw new Error(
      `no benchmark artifacts in ${dir}: expected ${RECORDS_FILE} and ${AGGREGATE_FILE}`,
    );
  }
  const records = hasRecords ? await readJsonl(recordsPath) : [];
  const aggregate = hasAggregate ? await readJsonObject(aggregatePath) : {};
  const metadataPath = join(dir, METADATA_FILE);
  const metadata = (await exists(metadataPath)) ? await readJsonObject(metadataPath) : undefined;
  const html = renderHtmlReport({
    records,
    aggregate,
    ...(metadata ? { metadata } : {}),
    ...(opts.title !== undefined ? { title: opts.title } : {}),
  });
  const out = join(dir, REPORT_FILE);
  await writeFile(out, html, 'utf8');
  return out;
}

async function exists(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

/** Streams a JSON Lines file (exports of long runs can be larger than one string may hold). */
async function readJsonl(path: string): Promise<unknown[]> {
  const out: unknown[] = [];
  const lines = createInterface({ input: createReadStream(path, 'utf8'), crlfDelay: Infinity });
  for await (const line of lines) {
    const text = line.trim();
    if (text === '') continue;
    try {
      out.push(JSON.parse(text) as unknown);
    } catch {
      out.push({ __unparsable: true });
    }
  }
  return out;
}

async function readJsonObject(path: string): Promise<Record<string, unknown>> {
  const parsed = JSON.parse(await readFile(path, 'utf8')) as unknown;
  if (!isObj(parsed)) throw new Error(`${path}: expected a JSON object`);
  return parsed;
}

// ---------------------------------------------------------------------------------------------
// Normalising records
// ---------------------------------------------------------------------------------------------

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function num(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isFinite(v) ? v : undefined;
  if (typeof v === 'bigint') return Number(v);
  if (typeof v === 'string' && v.trim() !== '') {
    const n = Number(v);
    return Number.isFinite(n) ? n : undefined;
  }
  return undefined;
}

const TIME_TO_MS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3,
  ms: 1,
  s: 1000,
  sec: 1000,
  secs: 1000,
  seconds: 1000,
};

/** Converts a time in `unit` to ms; unknown units are taken as ms. */
function toMs(v: number, unit: unknown): number {
  const k = typeof unit === 'string' ? TIME_TO_MS[unit.trim().toLowerCase()] : undefined;
  return k === undefined ? v : v * k;
}

interface ErrInfo {
  code: string;
  type: string;
  message: string;
}

/** One request, times in seconds since the first send. */
interface Req {
  start?: number;
  end?: number;
  ttft?: number;
  ttst?: number;
  itl?: number;
  icl?: number[];
  latency?: number;
  osl?: number;
  isl?: number;
  perUser?: number;
  error?: ErrInfo;
}

interface Parsed {
  reqs: Req[];
  valid: Req[];
  errors: Req[];
  /** Lines that were not records (unparsable or not objects). */
  skipped: number;
  warmup: number;
  /** Last end (or start) in seconds since the first send; 0 without timings. */
  span: number;
}

const TIME_METRICS = new Set([
  'time_to_first_token',
  'time_to_second_token',
  'inter_token_latency',
  'inter_chunk_latency',
  'request_latency',
]);

function metricValue(metrics: Obj, tag: string): number | undefined {
  const m = metrics[tag];
  if (isObj(m)) {
    const v = num(m.value);
    if (v === undefined) return undefined;
    return TIME_METRICS.has(tag) ? toMs(v, m.unit) : v;
  }
  return num(m);
}

function metricArray(metrics: Obj, tag: string): number[] | undefined {
  const m = metrics[tag];
  const raw = isObj(m) ? m.value : m;
  if (!Array.isArray(raw)) return undefined;
  const unit = isObj(m) ? m.unit : undefined;
  const out: number[] = [];
  for (const x of raw) {
    const v = num(x);
    if (v !== undefined) out.push(toMs(v, unit));
  }
  return out;
}

function errorInfo(e: unknown): ErrInfo | undefined {
  if (e === null || e === undefined || e === false) return undefined;
  if (isObj(e)) {
    const code = num(e.code);
    return {
      code: code === undefined ? '—' : String(code),
      type: typeof e.type === 'string' && e.type !== '' ? e.type : 'Error',
      message: typeof e.message === 'string' ? e.message : '',
    };
  }
  return { code: '—', type: 'Error', message: typeof e === 'string' ? e : '' };
}

function parseRecords(records: readonly unknown[]): Parsed {
  interface Raw {
    startNs?: number;
    endNs?: number;
    req: Req;
  }
  const raws: Raw[] = [];
  let skipped = 0;
  let warmup = 0;
  for (const rec of records) {
    if (!isObj(rec) || rec.__unparsable === true) {
      skipped++;
      continue;
    }
    const md = isObj(rec.metadata) ? rec.metadata : {};
    if (md.benchmark_phase === 'warmup') {
      warmup++;
      continue;
    }
    const metrics = isObj(rec.metrics) ? rec.metrics : {};
    const req: Req = {};
    const set = <K extends keyof Req>(k: K, v: Req[K] | undefined): void => {
      if (v !== undefined) req[k] = v;
    };
    set('ttft', metricValue(metrics, 'time_to_first_token'));
    set('ttst', metricValue(metrics, 'time_to_second_token'));
    set('itl', metricValue(metrics, 'inter_token_latency'));
    set('icl', metricArray(metrics, 'inter_chunk_latency'));
    set('latency', metricValue(metrics, 'request_latency'));
    set('osl', metricValue(metrics, 'output_sequence_length'));
    set('isl', metricValue(metrics, 'input_sequence_length') ?? metricValue(metrics, 'error_isl'));
    set('perUser', metricValue(metrics, 'output_token_throughput_per_user'));
    set('error', errorInfo(rec.error));
    let startNs = num(md.request_start_ns) ?? num(md.timestamp_ns);
    let endNs = num(md.request_end_ns);
    if (startNs === undefined && endNs !== undefined && req.latency !== undefined) {
      startNs = endNs - req.latency * 1e6;
    }
    if (endNs === undefined && startNs !== undefined && req.latency !== undefined) {
      endNs = startNs + req.latency * 1e6;
    }
    if (startNs !== undefined && endNs !== undefined && endNs < startNs) endNs = startNs;
    raws.push({
      ...(startNs !== undefined ? { startNs } : {}),
      ...(endNs !== undefined ? { endNs } : {}),
      req,
    });
  }
  let t0 = Infinity;
  for (const r of raws) {
    const t = r.startNs ?? r.endNs;
    if (t !== undefined && t < t0) t0 = t;
  }
  let span = 0;
  for (const r of raws) {
    if (r.startNs !== undefined) r.req.start = (r.startNs - t0) / 1e9;
    if (r.endNs !== undefined) r.req.end = (r.endNs - t0) / 1e9;
    span = Math.max(span, r.req.end ?? r.req.start ?? 0);
  }
  const reqs = raws.map((r) => r.req);
  return {
    reqs,
    valid: reqs.filter((r) => !r.error),
    errors: reqs.filter((r) => r.error),
    skipped,
    warmup,
    span,
  };
}

// ---------------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------------

const STAT_KEYS = [
  'avg',
  'min',
  'max',
  'std',
  'p1',
  'p5',
  'p10',
  'p25',
  'p50',
  'p75',
  'p90',
  'p95',
  'p99',
  'count',
  'sum',
] as const;
type StatKey = (typeof STAT_KEYS)[number];

interface Stat {
  unit: string;
  v: Partial<Record<StatKey, number>>;
}

/** Percentile of sorted values, linear interpolation (numpy's default). */
function quantile(sorted: ArrayLike<number>, q: number): number {
  const n = sorted.length;
  if (n === 0) return NaN;
  const pos = Math.min(Math.max(q, 0), 1) * (n - 1);
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, n - 1);
  const a = sorted[lo] ?? 0;
  const b = sorted[hi] ?? a;
  return a + (b - a) * (pos - lo);
}

function sortedCopy(values: readonly number[]): Float64Array {
  return Float64Array.from(values).sort();
}

function computeStat(values: readonly number[], unit: string): Stat | undefined {
  if (values.length === 0) return undefined;
  const s = sortedCopy(values);
  let sum = 0;
  for (const x of s) sum += x;
  const avg = sum / s.length;
  let ss = 0;
  for (const x of s) ss += (x - avg) ** 2;
  const v: Stat['v'] = {
    avg,
    min: s[0] ?? 0,
    max: s[s.length - 1] ?? 0,
    std: Math.sqrt(ss / s.length),
    count: s.length,
    sum,
  };
  for (const p of [1, 5, 10, 25, 50, 75, 90, 95, 99] as const) v[`p${p}`] = quantile(s, p / 100);
  return { unit, v };
}

/** A metric's statistics from the aggregate file (time metrics converted to ms). */
function aggStat(aggregate: Obj, tag: string): Stat | undefined {
  const m = aggregate[tag];
  if (!isObj(m)) {
    const n = num(m);
    return n === undefined ? undefined : { unit: '', v: { avg: n } };
  }
  const unit = typeof m.unit === 'string' ? m.unit : '';
  const isTime = TIME_METRICS.has(tag);
  const v: Stat['v'] = {};
  let any = false;
  for (const k of STAT_KEYS) {
    const x = num(m[k]);
    if (x === undefined) continue;
    v[k] = isTime && k !== 'count' ? toMs(x, unit) : x;
    any = true;
  }
  if (!any) return undefined;
  return { unit: isTime ? 'ms' : unit, v };
}

// ---------------------------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------------------------

const DASH = '—';

function escapeHtml(s: string): string {
  return s
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;');
}

function fmtFixed(v: number | undefined, decimals: number): string {
  if (v === undefined || !Number.isFinite(v)) return DASH;
  const out = v.toLocaleString('en-US', {
    minimumFractionDigits: decimals,
    maximumFractionDigits: decimals,
  });
  return out === '-0' || /^-0\.0*$/.test(out) ? out.slice(1) : out;
}

/** Milliseconds: 2 decimals below 100 ms, 1 above. */
function fmtMs(v: number | undefined): string {
  if (v === undefined || !Number.isFinite(v)) return DASH;
  return fmtFixed(v, Math.abs(v) < 100 ? 2 : 1);
}

function fmtInt(v: number | undefined): string {
  return fmtFixed(v === undefined ? undefined : Math.round(v), 0);
}

/** Token counts: integers as such, averages with one decimal. */
function fmtTokens(v: number | undefined): string {
  if (v === undefined || !Number.isFinite(v)) return DASH;
  return Number.isInteger(v) ? fmtFixed(v, 0) : fmtFixed(v, 1);
}

/** Token rates: integers, one decimal below 100. */
function fmtRate(v: number | undefined): string {
  if (v === undefined || !Number.isFinite(v)) return DASH;
  return Math.abs(v) < 100 ? fmtFixed(v, 1) : fmtInt(v);
}

function fmtSeconds(v: number | undefined): string {
  if (v === undefined || !Number.isFinite(v)) return DASH;
  return `${fmtFixed(v, Math.abs(v) < 100 ? 2 : 1)} s`;
}

function fmtPct(v: number | undefined): string {
  if (v === undefined || !Number.isFinite(v)) return DASH;
  return `${fmtFixed(v, v === 0 || v === 100 ? 0 : 1)}%`;
}

type Kind = 'ms' | 'tokens' | 'rate';

function fmtKind(kind: Kind, v: number | undefined): string {
  switch (kind) {
    case 'ms':
      return fmtMs(v);
    case 'tokens':
      return fmtTokens(v);
    case 'rate':
      return fmtRate(v);
  }
}

/** A number, for SVG coordinates: always finite, one decimal. */
function c(v: number): string {
  if (!Number.isFinite(v)) return '0';
  const r = Math.round(v * 10) / 10;
  return String(Object.is(r, -0) ? 0 : r);
}

/** ISO timestamps without the noise: `2025-10-07 05:00:07 UTC`; anything else as given. */
function fmtTimestamp(v: unknown): string | undefined {
  const text = describe(v);
  if (text === undefined) return undefined;
  const m = /^(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:?\d\d)?$/.exec(text);
  if (!m) return text;
  const zone = m[3] === undefined ? '' : m[3] === 'Z' ? ' UTC' : ` ${m[3]}`;
  return `${m[1] ?? ''} ${m[2] ?? ''}${zone}`;
}

function truncateText(s: string, max: number): string {
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

// ---------------------------------------------------------------------------------------------
// Looking things up in metadata
// ---------------------------------------------------------------------------------------------

function atPath(root: unknown, path: string): unknown {
  let cur: unknown = root;
  for (const part of path.split('.')) {
    if (Array.isArray(cur)) cur = cur[Number(part)];
    else if (isObj(cur)) cur = cur[part];
    else return undefined;
  }
  return cur;
}

function present(v: unknown): boolean {
  return v !== undefined && v !== null && v !== '' && !(Array.isArray(v) && v.length === 0);
}

function pick(sources: readonly unknown[], paths: readonly string[]): unknown {
  for (const src of sources) {
    for (const p of paths) {
      const v = atPath(src, p);
      if (present(v)) return v;
    }
  }
  return undefined;
}

/** A short, single-line description of a scalar, array or object. */
function describe(v: unknown): string | undefined {
  if (!present(v)) return undefined;
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'bigint') return String(v);
  if (typeof v === 'boolean') return v ? 'yes' : 'no';
  if (Array.isArray(v)) {
    const parts = v.map(describe).filter((x): x is string => x !== undefined);
    return parts.length > 0 ? parts.join(', ') : undefined;
  }
  if (isObj(v)) {
    const name = v.name ?? v.kind ?? v.type;
    const rest = Object.entries(v)
      .filter(([k, x]) => x !== name && k !== 'name' && (typeof x !== 'object' || x === null))
      .map(([k, x]) => (present(x) ? `${k}=${describe(x) ?? ''}` : undefined))
      .filter((x): x is string => x !== undefined);
    const head = typeof name === 'string' ? name : undefined;
    const text = [head, rest.length > 0 ? rest.join(', ') : undefined]
      .filter((x) => x !== undefined)
      .join(head !== undefined && rest.length > 0 ? ' · ' : '');
    return text === '' ? undefined : text;
  }
  return undefined;
}

function flatten(v: unknown, prefix: string, out: [string, string][], limit: number): void {
  if (out.length >= limit) return;
  if (isObj(v)) {
    for (const [k, x] of Object.entries(v)) flatten(x, prefix ? `${prefix}.${k}` : k, out, limit);
    return;
  }
  if (Array.isArray(v)) {
    if (v.every((x) => !isObj(x) && !Array.isArray(x))) {
      out.push([prefix, v.map((x) => String(x)).join(', ')]);
      return;
    }
    v.forEach((x, i) => flatten(x, `${prefix}.${i}`, out, limit));
    return;
  }
  if (v === null) out.push([prefix, 'null']);
  else if (typeof v === 'string') out.push([prefix, v]);
  else if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') {
    out.push([prefix, String(v)]);
  }
}

// ---------------------------------------------------------------------------------------------
// SVG plotting
// ---------------------------------------------------------------------------------------------

const W = 640;
const H = 340;
const M = { l: 64, r: 60, t: 40, b: 50 };
const PW = W - M.l - M.r;
const PH = H - M.t - M.b;
const COLORS = {
  bar: '#4e79a7',
  cdf: '#d1495b',
  tput: '#2a9d8f',
  conc: '#e07a2f',
  dot: '#4e79a7',
  grid: '#e5e7eb',
  axis: '#6b7280',
  text: '#374151',
  mean: '#111827',
};

interface Ticks {
  lo: number;
  hi: number;
  ticks: number[];
  decimals: number;
}

/** Round ticks (1, 2, 5 × 10^k) covering [lo, hi]; a zero-width range is widened. */
function niceTicks(lo: number, hi: number, target = 5, integer = false): Ticks {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) {
    lo = 0;
    hi = 1;
  }
  if (hi < lo) [lo, hi] = [hi, lo];
  if (hi === lo) {
    const pad = lo === 0 ? 1 : Math.abs(lo) * 0.1;
    hi = lo + pad;
    lo = lo >= 0 && lo - pad < 0 ? 0 : lo - pad;
  }
  const raw = (hi - lo) / target;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  let step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * mag;
  if (integer && step < 1) step = 1;
  const start = Math.floor(lo / step + 1e-9) * step;
  const end = Math.ceil(hi / step - 1e-9) * step;
  const ticks: number[] = [];
  for (let i = 0; ; i++) {
    const t = start + i * step;
    if (t > end + step * 1e-6 || i > 50) break;
    ticks.push(Math.round(t / step) * step);
  }
  const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  return { lo: start, hi: end, ticks, decimals: Math.min(decimals, 6) };
}

function scale(d0: number, d1: number, r0: number, r1: number): (v: number) => number {
  const span = d1 - d0 || 1;
  return (v) => r0 + ((v - d0) / span) * (r1 - r0);
}

interface Axes {
  x: Ticks;
  y: Ticks;
  xLabel: string;
  yLabel: string;
  /** Right-hand axis (a percentage, for CDFs). */
  y2?: { label: string };
}

function svgOpen(name: string, title: string, desc: string): string {
  const id = `plot-${name}`;
  return (
    `<svg data-plot="${escapeHtml(name)}" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" ` +
    `role="img" aria-labelledby="${id}-title ${id}-desc" preserveAspectRatio="xMidYMid meet">` +
    `<title id="${id}-title">${escapeHtml(title)}</title>` +
    `<desc id="${id}-desc">${escapeHtml(desc)}</desc>` +
    `<rect class="bg" x="0" y="0" width="${W}" height="${H}" fill="#ffffff"/>` +
    `<text class="plot-title" x="${M.l}" y="22" font-size="15" font-weight="600" fill="${COLORS.text}">${escapeHtml(title)}</text>`
  );
}

function fmtTick(v: number, decimals: number): string {
  return fmtFixed(v, decimals);
}

function drawAxes(a: Axes): string {
  const sx = scale(a.x.lo, a.x.hi, M.l, M.l + PW);
  const sy = scale(a.y.lo, a.y.hi, M.t + PH, M.t);
  const parts: string[] = ['<g class="axes">'];
  for (const t of a.y.ticks) {
    const y = c(sy(t));
    parts.push(
      `<line x1="${M.l}" x2="${M.l + PW}" y1="${y}" y2="${y}" stroke="${COLORS.grid}" stroke-width="1"/>`,
      `<text x="${M.l - 6}" y="${y}" dy="0.32em" text-anchor="end" font-size="11" fill="${COLORS.axis}">${escapeHtml(fmtTick(t, a.y.decimals))}</text>`,
    );
  }
  for (const t of a.x.ticks) {
    const x = c(sx(t));
    parts.push(
      `<line x1="${x}" x2="${x}" y1="${M.t + PH}" y2="${M.t + PH + 5}" stroke="${COLORS.axis}" stroke-width="1"/>`,
      `<text x="${x}" y="${M.t + PH + 18}" text-anchor="middle" font-size="11" fill="${COLORS.axis}">${escapeHtml(fmtTick(t, a.x.decimals))}</text>`,
    );
  }
  parts.push(
    `<path d="M${M.l},${M.t}V${M.t + PH}H${M.l + PW}" fill="none" stroke="${COLORS.axis}" stroke-width="1"/>`,
    `<text x="${M.l + PW / 2}" y="${H - 8}" text-anchor="middle" font-size="12" fill="${COLORS.text}">${escapeHtml(a.xLabel)}</text>`,
    `<text transform="translate(16 ${M.t + PH / 2}) rotate(-90)" text-anchor="middle" font-size="12" fill="${COLORS.text}">${escapeHtml(a.yLabel)}</text>`,
  );
  if (a.y2) {
    const s2 = scale(0, 100, M.t + PH, M.t);
    parts.push(
      `<path d="M${M.l + PW},${M.t}V${M.t + PH}" fill="none" stroke="${COLORS.axis}" stroke-width="1"/>`,
    );
    for (const t of [0, 25, 50, 75, 100]) {
      parts.push(
        `<text x="${M.l + PW + 6}" y="${c(s2(t))}" dy="0.32em" font-size="11" fill="${COLORS.cdf}">${t}%</text>`,
      );
    }
    parts.push(
      `<text transform="translate(${W - 12} ${M.t + PH / 2}) rotate(90)" text-anchor="middle" font-size="12" fill="${COLORS.cdf}">${escapeHtml(a.y2.label)}</text>`,
    );
  }
  parts.push('</g>');
  return parts.join('');
}

function legend(
  items: { label: string; color: string; shape: 'rect' | 'line' | 'dash' | 'dot' }[],
): string {
  let x = M.l + PW;
  const parts: string[] = [];
  for (const it of [...items].reverse()) {
    const textW = it.label.length * 6.2;
    x -= textW;
    parts.push(
      `<text x="${c(x)}" y="22" font-size="11" fill="${COLORS.text}">${escapeHtml(it.label)}</text>`,
    );
    x -= 18;
    const y = 18;
    if (it.shape === 'rect') {
      parts.push(
        `<rect x="${c(x)}" y="${y - 5}" width="12" height="10" fill="${it.color}" fill-opacity="0.75"/>`,
      );
    } else if (it.shape === 'dot') {
      parts.push(`<circle cx="${c(x + 6)}" cy="${y}" r="3.5" fill="${it.color}"/>`);
    } else {
      parts.push(
        `<line x1="${c(x)}" x2="${c(x + 14)}" y1="${y}" y2="${y}" stroke="${it.color}" stroke-width="2"${it.shape === 'dash' ? ' stroke-dasharray="5 3"' : ''}/>`,
      );
    }
    x -= 14;
  }
  return `<g class="legend">${parts.join('')}</g>`;
}

interface Figure {
  svg: string;
  caption: string;
}

function emptyPlot(
  name: string,
  title: string,
  xLabel: string,
  yLabel: string,
  why: string,
): Figure {
  const svg =
    svgOpen(name, title, why) +
    drawAxes({ x: niceTicks(0, 1), y: niceTicks(0, 1), xLabel, yLabel }) +
    `<text class="no-data" x="${M.l + PW / 2}" y="${M.t + PH / 2}" text-anchor="middle" font-size="14" fill="${COLORS.axis}">${escapeHtml(why)}</text>` +
    '</svg>';
  return { svg, caption: why };
}

/** Upper bound: number of sorted values ≤ x. */
function countAtMost(sorted: Float64Array, x: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((sorted[mid] ?? 0) <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Histogram (count per bin) with the empirical CDF on a right-hand percentage axis. */
function distributionPlot(
  name: string,
  title: string,
  metricLabel: string,
  values: readonly number[],
): Figure {
  const xLabel = `${metricLabel} (ms)`;
  if (values.length === 0) {
    return emptyPlot(name, title, xLabel, 'requests', 'No successful request has this metric');
  }
  const sorted = sortedCopy(values);
  const n = sorted.length;
  const min = sorted[0] ?? 0;
  const max = sorted[n - 1] ?? 0;
  // A long tail squashes the body: past 3× the p99 spread, stop the axis at p99.
  let hi = max;
  let clipped = 0;
  const q99 = quantile(sorted, 0.99);
  if (n >= 100 && q99 > min && max - min > 3 * (q99 - min)) {
    hi = q99;
    clipped = n - countAtMost(sorted, hi);
  }
  let lo = min;
  let bins: number;
  let width: number;
  let axisLo = lo;
  let axisHi = hi;
  if (hi === lo) {
    // Constant values: one narrow bar centred on the value, on an axis around it.
    const pad = lo === 0 ? 0.5 : Math.abs(lo) * 0.05;
    axisLo = lo - pad >= 0 || lo < 0 ? lo - pad : 0;
    axisHi = lo + pad;
    bins = 1;
    width = pad / 5;
    lo = lo - width / 2;
    hi = lo + width;
  } else {
    const iqr = quantile(sorted, 0.75) - quantile(sorted, 0.25);
    const fd = iqr > 0 ? (2 * iqr) / Math.cbrt(n) : 0;
    const guess = fd > 0 ? Math.ceil((hi - lo) / fd) : Math.ceil(Math.sqrt(n));
    bins = Math.max(1, Math.min(60, Math.max(Math.min(n, 5), guess)));
    width = (hi - lo) / bins;
  }
  const counts = new Array<number>(bins).fill(0);
  for (const v of sorted) {
    if (v > hi) break;
    const i = Math.min(bins - 1, Math.max(0, Math.floor((v - lo) / width)));
    counts[i] = (counts[i] ?? 0) + 1;
  }
  const maxCount = Math.max(1, ...counts);
  const x = niceTicks(axisLo, axisHi, 6);
  const y = niceTicks(0, maxCount, 5, true);
  const sx = scale(x.lo, x.hi, M.l, M.l + PW);
  const sy = scale(y.lo, y.hi, M.t + PH, M.t);
  const s2 = scale(0, 1, M.t + PH, M.t);
  const bars = counts
    .map((k, i) => {
      if (k === 0) return '';
      const x0 = sx(lo + i * width);
      const x1 = sx(lo + (i + 1) * width);
      const w = Math.max(1, x1 - x0 - (x1 - x0 > 4 ? 1 : 0));
      const top = sy(k);
      return `<rect x="${c(x0)}" y="${c(top)}" width="${c(w)}" height="${c(M.t + PH - top)}" fill="${COLORS.bar}" fill-opacity="0.75"><title>${escapeHtml(`${fmtMs(lo + i * width)}–${fmtMs(lo + (i + 1) * width)} ms: ${fmtInt(k)}`)}</title></rect>`;
    })
    .join('');
  // Empirical CDF: exact steps for small samples, evaluated on a grid for large ones.
  const pts: string[] = [];
  const xEnd = Math.min(hi, x.hi);
  if (n <= 400) {
    pts.push(`M${c(sx(x.lo))},${c(s2(0))}`);
    for (let i = 0; i < n; i++) {
      const v = sorted[i] ?? 0;
      if (v > hi) break;
      if (i + 1 < n && sorted[i + 1] === v) continue; // one step per distinct value
      pts.push(`H${c(sx(v))}V${c(s2((i + 1) / n))}`);
    }
    pts.push(`H${c(sx(xEnd))}`);
  } else {
    const steps = 400;
    for (let i = 0; i <= steps; i++) {
      const xv = x.lo + ((xEnd - x.lo) * i) / steps;
      pts.push(`${i === 0 ? 'M' : 'L'}${c(sx(xv))},${c(s2(countAtMost(sorted, xv) / n))}`);
    }
  }
  const cdf = `<path class="cdf" d="${pts.join('')}" fill="none" stroke="${COLORS.cdf}" stroke-width="2"/>`;
  const svg =
    svgOpen(
      name,
      title,
      `Histogram and cumulative distribution of ${metricLabel} over ${n} requests`,
    ) +
    drawAxes({ x, y, xLabel, yLabel: 'requests', y2: { label: 'cumulative share' } }) +
    `<g class="marks">${bars}${cdf}</g>` +
    legend([
      { label: 'requests per bin', color: COLORS.bar, shape: 'rect' },
      { label: 'CDF', color: COLORS.cdf, shape: 'line' },
    ]) +
    '</svg>';
  const p50 = quantile(sorted, 0.5);
  const p99 = quantile(sorted, 0.99);
  let caption =
    `${fmtInt(n)} requests in ${bins} bin${bins === 1 ? '' : 's'} · ` +
    `p50 ${fmtMs(p50)} ms · p99 ${fmtMs(p99)} ms · max ${fmtMs(max)} ms.`;
  if (min === max) caption += ' All values are equal.';
  if (clipped > 0) {
    caption += ` Axis stops at p99 (${fmtMs(hi)} ms): ${fmtInt(clipped)} slower request${clipped === 1 ? ' is' : 's are'} not drawn but counted in the CDF.`;
  }
  return { svg, caption };
}

/** Bucket width in seconds: 1 s for runs of 10 s to 10 min, finer for short runs, coarser for long. */
function bucketWidth(span: number): number {
  const sizes = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600,
    1800, 3600,
  ];
  if (span >= 10 && span <= 600) return 1;
  if (span < 10) {
    for (let i = sizes.length - 1; i >= 0; i--) {
      const s = sizes[i] ?? 1;
      if (s <= 1 && span / s >= 20) return s;
    }
    return sizes[0] ?? 0.001;
  }
  for (const s of sizes) if (s >= 1 && span / s <= 600) return s;
  return 3600;
}

function fmtBucket(s: number): string {
  return s >= 1 ? `${fmtFixed(s, 0)} s` : `${fmtFixed(s * 1000, 0)} ms`;
}

function throughputPlot(p: Parsed, avgTput: number | undefined): Figure {
  const title = 'Output token throughput over time';
  const xLabel = 'time since first request (s)';
  const yLabel = 'output tokens/s';
  const done = p.valid.filter((r) => r.end !== undefined && r.osl !== undefined);
  if (done.length === 0) {
    return emptyPlot(
      'throughput',
      title,
      xLabel,
      yLabel,
      'No completed request with timings and output length',
    );
  }
  const span = Math.max(p.span, ...done.map((r) => r.end ?? 0));
  const bw = bucketWidth(span > 0 ? span : 1e-3);
  const nb = Math.max(1, Math.ceil(span / bw - 1e-9));
  const tokens = new Array<number>(nb).fill(0);
  for (const r of done) {
    const i = Math.min(nb - 1, Math.max(0, Math.floor((r.end ?? 0) / bw)));
    tokens[i] = (tokens[i] ?? 0) + (r.osl ?? 0);
  }
  const rates = tokens.map((t) => t / bw);
  const peak = Math.max(...rates);
  const avg = avgTput ?? (span > 0 ? done.reduce((s, r) => s + (r.osl ?? 0), 0) / span : undefined);
  const x = niceTicks(0, nb * bw, 6);
  const y = niceTicks(0, Math.max(peak, avg ?? 0, 1), 5);
  const sx = scale(x.lo, x.hi, M.l, M.l + PW);
  const sy = scale(y.lo, y.hi, M.t + PH, M.t);
  const marks = stepMarks(
    Array.from({ length: nb + 1 }, (_, i) => sx(i * bw)),
    rates.map(sy),
    M.t + PH,
    COLORS.tput,
  );
  const meanLine =
    avg !== undefined && Number.isFinite(avg)
      ? `<line class="mean" x1="${M.l}" x2="${M.l + PW}" y1="${c(sy(avg))}" y2="${c(sy(avg))}" stroke="${COLORS.mean}" stroke-width="1.5" stroke-dasharray="5 3"/>`
      : '';
  const svg =
    svgOpen(
      'throughput',
      title,
      `Output tokens per second in ${fmtBucket(bw)} buckets by request end time`,
    ) +
    drawAxes({ x, y, xLabel, yLabel }) +
    `<g class="marks">${marks}${meanLine}</g>` +
    legend([
      { label: `per ${fmtBucket(bw)}`, color: COLORS.tput, shape: 'line' },
      ...(meanLine ? [{ label: 'run average', color: COLORS.mean, shape: 'dash' as const }] : []),
    ]) +
    '</svg>';
  const caption =
    `Output tokens of completed requests, counted at their end time in ${fmtBucket(bw)} buckets. ` +
    `Peak ${fmtRate(peak)} tok/s · run average ${fmtRate(avg)} tok/s.`;
  return { svg, caption };
}

/** A filled step function; xs are bucket edges (one more than ys), all in pixels. */
function stepMarks(
  xs: readonly number[],
  ys: readonly number[],
  baseline: number,
  color: string,
): string {
  const first = xs[0] ?? 0;
  let line = '';
  for (let i = 0; i < ys.length; i++) {
    const y = c(ys[i] ?? baseline);
    line += i === 0 ? `M${c(first)},${y}` : `V${y}`;
    line += `H${c(xs[i + 1] ?? first)}`;
  }
  const area = `M${c(first)},${c(baseline)}${line.replace(/^M[^,]+,/, 'V')}V${c(baseline)}Z`;
  return (
    `<path class="area" d="${area}" fill="${color}" fill-opacity="0.18" stroke="none"/>` +
    `<path class="line" d="${line}" fill="none" stroke="${color}" stroke-width="1.75" stroke-linejoin="round"/>`
  );
}

function concurrencyPlot(p: Parsed, target: number | undefined): Figure {
  const title = 'Concurrency over time';
  const xLabel = 'time since first request (s)';
  const yLabel = 'in-flight requests';
  const timed = p.reqs.filter((r) => r.start !== undefined && r.end !== undefined);
  if (timed.length === 0) {
    return emptyPlot('concurrency', title, xLabel, yLabel, 'No request with start and end times');
  }
  // Events: +1 at start, −1 at end; ends first at equal times.
  const events = new Float64Array(timed.length * 2);
  const deltas = new Int8Array(timed.length * 2);
  timed.forEach((r, i) => {
    events[2 * i] = r.start ?? 0;
    deltas[2 * i] = 1;
    events[2 * i + 1] = r.end ?? 0;
    deltas[2 * i + 1] = -1;
  });
  const order = Array.from({ length: events.length }, (_, i) => i).sort(
    (a, b) => (events[a] ?? 0) - (events[b] ?? 0) || (deltas[a] ?? 0) - (deltas[b] ?? 0),
  );
  const span = Math.max(p.span, events[order[order.length - 1] ?? 0] ?? 0);
  const end = span > 0 ? span : 1e-3;
  const cols = 600;
  let level = 0;
  let peak = 0;
  let area = 0;
  let prevT = 0;
  const colMax = new Array<number>(cols).fill(-1);
  const colLast = new Array<number>(cols).fill(-1);
  const exact: { t: number; level: number }[] = [];
  for (const i of order) {
    const t = events[i] ?? 0;
    area += level * (t - prevT);
    prevT = t;
    level += deltas[i] ?? 0;
    peak = Math.max(peak, level);
    const col = Math.min(cols - 1, Math.max(0, Math.floor((t / end) * cols)));
    colMax[col] = Math.max(colMax[col] ?? -1, level);
    colLast[col] = level;
    exact.push({ t, level });
  }
  const mean = span > 0 ? area / span : peak;
  const x = niceTicks(0, end, 6);
  const y = niceTicks(0, Math.max(peak, target ?? 0, 1), 5, true);
  const sx = scale(x.lo, x.hi, M.l, M.l + PW);
  const sy = scale(y.lo, y.hi, M.t + PH, M.t);
  let xs: number[];
  let ys: number[];
  let binned = false;
  if (exact.length <= 4000) {
    // Collapse simultaneous events to their final level.
    const pts: { t: number; level: number }[] = [];
    for (const e of exact) {
      const last = pts[pts.length - 1];
      if (last && last.t === e.t) last.level = e.level;
      else pts.push({ ...e });
    }
    xs = [sx(0), ...pts.map((e) => sx(e.t))];
    ys = [sy(0), ...pts.map((e) => sy(e.level))];
    // The last level (0) lasts until the end of the axis.
    xs.push(sx(Math.max(end, pts[pts.length - 1]?.t ?? 0)));
  } else {
    binned = true;
    let carry = 0;
    const levels: number[] = [];
    for (let k = 0; k < cols; k++) {
      const m = Math.max(colMax[k] ?? -1, carry);
      levels.push(m);
      if ((colLast[k] ?? -1) >= 0) carry = colLast[k] ?? carry;
    }
    xs = Array.from({ length: cols + 1 }, (_, k) => sx((end * k) / cols));
    ys = levels.map(sy);
  }
  const marks = stepMarks(xs, ys, M.t + PH, COLORS.conc);
  const meanLine = `<line class="mean" x1="${M.l}" x2="${M.l + PW}" y1="${c(sy(mean))}" y2="${c(sy(mean))}" stroke="${COLORS.mean}" stroke-width="1.5" stroke-dasharray="5 3"/>`;
  const svg =
    svgOpen(
      'concurrency',
      title,
      'Number of requests in flight over time, from request start and end times',
    ) +
    drawAxes({ x, y, xLabel, yLabel }) +
    `<g class="marks">${marks}${meanLine}</g>` +
    legend([
      {
        label: binned ? 'in flight (max per pixel)' : 'in flight',
        color: COLORS.conc,
        shape: 'line',
      },
      { label: 'time-weighted mean', color: COLORS.mean, shape: 'dash' },
    ]) +
    '</svg>';
  let caption = `Requests between send and last byte (errors included). Peak ${fmtInt(peak)} · time-weighted mean ${fmtFixed(mean, 1)}`;
  caption += target !== undefined ? ` · configured concurrency ${fmtInt(target)}.` : '.';
  if (binned)
    caption += ` ${fmtInt(timed.length)} requests: drawn as the maximum per ${cols}th of the run.`;
  return { svg, caption };
}

function ttftScatterPlot(p: Parsed): Figure {
  const title = 'Time to first token over time';
  const xLabel = 'request send time since first request (s)';
  const yLabel = 'TTFT (ms)';
  const pts = p.valid
    .filter((r) => r.start !== undefined && r.ttft !== undefined)
    .sort((a, b) => (a.start ?? 0) - (b.start ?? 0));
  if (pts.length === 0) {
    return emptyPlot(
      'ttft-over-time',
      title,
      xLabel,
      yLabel,
      'No successful request with a send time and TTFT',
    );
  }
  const total = pts.length;
  let shown = pts;
  if (total > MAX_SCATTER_POINTS) {
    // Systematic sample: every (total / cap)-th request in send order.
    shown = Array.from(
      { length: MAX_SCATTER_POINTS },
      (_, i) => pts[Math.floor((i * total) / MAX_SCATTER_POINTS)],
    ).filter((r): r is Req => r !== undefined);
  }
  const maxT = Math.max(p.span, ...pts.map((r) => r.start ?? 0));
  let maxY = 0;
  for (const r of pts) maxY = Math.max(maxY, r.ttft ?? 0);
  const minY = Math.min(0, ...pts.map((r) => r.ttft ?? 0));
  const x = niceTicks(0, maxT > 0 ? maxT : 1e-3, 6);
  const y = niceTicks(minY, maxY, 5);
  const sx = scale(x.lo, x.hi, M.l, M.l + PW);
  const sy = scale(y.lo, y.hi, M.t + PH, M.t);
  const r = shown.length > 2000 ? 1.6 : shown.length > 300 ? 2.2 : 3;
  const dots = shown
    .map((q) => `<circle cx="${c(sx(q.start ?? 0))}" cy="${c(sy(q.ttft ?? 0))}" r="${r}"/>`)
    .join('');
  const svg =
    svgOpen('ttft-over-time', title, 'Time to first token of each request against its send time') +
    drawAxes({ x, y, xLabel, yLabel }) +
    `<g class="marks" fill="${COLORS.dot}" fill-opacity="${shown.length > 1000 ? 0.35 : 0.6}">${dots}</g>` +
    legend([{ label: 'one request', color: COLORS.dot, shape: 'dot' }]) +
    '</svg>';
  let caption = 'One dot per successful request: x = send time, y = time to first token.';
  if (shown.length < total) {
    caption += ` Showing a systematic sample of ${fmtInt(shown.length)} of ${fmtInt(total)} requests (every ${fmtFixed(total / shown.length, 1)}th in send order).`;
  }
  if (p.errors.length > 0)
    caption += ` ${fmtInt(p.errors.length)} failed request${p.errors.length === 1 ? '' : 's'} not shown.`;
  return { svg, caption };
}

// ---------------------------------------------------------------------------------------------
// Page
// ---------------------------------------------------------------------------------------------

interface MainMetric {
  tag: string;
  label: string;
  abbr: string;
  kind: Kind;
  values: (p: Parsed) => number[];
}

const collect =
  (f: (r: Req) => number | undefined) =>
  (p: Parsed): number[] =>
    p.valid.map(f).filter((v): v is number => v !== undefined);

const MAIN_METRICS: readonly MainMetric[] = [
  {
    tag: 'time_to_first_token',
    label: 'Time to first token',
    abbr: 'TTFT',
    kind: 'ms',
    values: collect((r) => r.ttft),
  },
  {
    tag: 'time_to_second_token',
    label: 'Time to second token',
    abbr: 'TTST',
    kind: 'ms',
    values: collect((r) => r.ttst),
  },
  {
    tag: 'inter_token_latency',
    label: 'Inter-token latency',
    abbr: 'ITL',
    kind: 'ms',
    values: collect((r) => r.itl),
  },
  {
    tag: 'inter_chunk_latency',
    label: 'Inter-chunk latency',
    abbr: 'ICL',
    kind: 'ms',
    values: (p) => p.valid.flatMap((r) => r.icl ?? []),
  },
  {
    tag: 'request_latency',
    label: 'Request latency',
    abbr: 'E2E',
    kind: 'ms',
    values: collect((r) => r.latency),
  },
  {
    tag: 'output_token_throughput_per_user',
    label: 'Output throughput per user',
    abbr: 'tok/s/user',
    kind: 'rate',
    values: collect((r) => r.perUser),
  },
  {
    tag: 'output_sequence_length',
    label: 'Output sequence length',
    abbr: 'OSL',
    kind: 'tokens',
    values: collect((r) => r.osl),
  },
  {
    tag: 'input_sequence_length',
    label: 'Input sequence length',
    abbr: 'ISL',
    kind: 'tokens',
    values: collect((r) => r.isl),
  },
];

const UNIT_LABEL: Record<Kind, string> = { ms: 'ms', tokens: 'tokens', rate: 'tok/s/user' };

/** Renders the report page (pure; see {@link writeHtmlReport}). */
export function renderHtmlReport(input: RenderReportInput): string {
  const aggregate = isObj(input.aggregate) ? input.aggregate : {};
  const metadata = isObj(input.metadata) ? input.metadata : {};
  const inputConfig = isObj(aggregate.input_config) ? aggregate.input_config : {};
  const p = parseRecords(Array.isArray(input.records) ? input.records : []);
  const sources = [metadata, isObj(metadata.config) ? metadata.config : {}, inputConfig, aggregate];

  // Statistics: the aggregate file first (it is what the tool reported), records otherwise.
  const stats = new Map<string, Stat | undefined>();
  for (const m of MAIN_METRICS) {
    stats.set(m.tag, aggStat(aggregate, m.tag) ?? computeStat(m.values(p), UNIT_LABEL[m.kind]));
  }
  const scalar = (tag: string): number | undefined => aggStat(aggregate, tag)?.v.avg;

  const hasRecords = p.reqs.length > 0;
  const validCount = hasRecords ? p.valid.length : scalar('request_count');
  const errorCount = hasRecords ? p.errors.length : (scalar('error_request_count') ?? 0);
  const totalCount = validCount === undefined ? undefined : validCount + errorCount;
  const durationSec =
    scalar('benchmark_duration') ?? (hasRecords && p.span > 0 ? p.span : undefined);
  const sumOf = (f: (r: Req) => number | undefined): number =>
    p.valid.reduce((s, r) => s + (f(r) ?? 0), 0);
  const totalOsl = scalar('total_osl') ?? (hasRecords ? sumOf((r) => r.osl) : undefined);
  const totalIsl = scalar('total_isl') ?? (hasRecords ? sumOf((r) => r.isl) : undefined);
  const per = (x: number | undefined): number | undefined =>
    x !== undefined && durationSec !== undefined && durationSec > 0 ? x / durationSec : undefined;
  const reqTput = scalar('request_throughput') ?? per(validCount);
  const outTput = scalar('output_token_throughput') ?? per(totalOsl);
  const totalTput =
    scalar('total_token_throughput') ??
    (totalOsl !== undefined && totalIsl !== undefined ? per(totalOsl + totalIsl) : undefined);
  const goodput = scalar('goodput');
  const goodCount = scalar('good_request_count');

  // Header facts.
  const model = describe(
    pick(sources, [
      'model',
      'model_name',
      'models',
      'endpoint.model',
      'endpoint.model_names',
      'model_names',
    ]),
  );
  const endpointUrl = describe(
    pick(sources, ['endpoint_url', 'endpoint.url', 'url', 'base_url', 'baseUrl', 'endpoint']),
  );
  const endpointType = describe(
    pick(sources, ['endpoint_type', 'endpoint.type', 'endpointType', 'api']),
  );
  const streaming = pick(sources, ['streaming', 'endpoint.streaming', 'stream']);
  const mode = describe(pick(sources, ['load.mode', 'load_mode', 'mode']));
  const concurrencyV = num(
    pick(sources, ['load.concurrency', 'concurrency', 'loadgen.concurrency']),
  );
  const rateV = num(
    pick(sources, [
      'load.requestRate',
      'load.request_rate',
      'load.rate',
      'request_rate',
      'requestRate',
      'rate',
      'loadgen.request_rate',
    ]),
  );
  const arrival = describe(
    pick(sources, ['load.arrival', 'arrival', 'arrival_pattern', 'loadgen.arrival_pattern']),
  );
  const burstiness = num(pick(sources, ['load.burstiness', 'burstiness']));
  const loadText = (() => {
    const parts: string[] = [];
    const m = mode?.toLowerCase();
    if (m === 'closed') parts.push('closed loop');
    else if (m === 'open') parts.push('open loop');
    else if (m === 'trace') parts.push('trace replay');
    else if (mode !== undefined && !/concurrency/i.test(mode)) parts.push(mode);
    if (concurrencyV !== undefined && m !== 'open') {
      parts.push(`concurrency ${fmtInt(concurrencyV)}`);
    }
    if (rateV !== undefined && m !== 'closed') {
      parts.push(`${fmtFixed(rateV, rateV < 10 ? 2 : 1)} req/s`);
    }
    if (arrival !== undefined && m !== 'closed') {
      parts.push(
        burstiness !== undefined && burstiness !== 1
          ? `${arrival} arrivals (burstiness ${fmtFixed(burstiness, 2)})`
          : `${arrival} arrivals`,
      );
    }
    if (parts.length === 0) {
      const loadStr = pick(sources, ['load']);
      if (typeof loadStr === 'string') parts.push(loadStr);
      const rateMode = describe(pick(sources, ['loadgen.request_rate_mode']));
      if (rateMode !== undefined) parts.push(rateMode);
    }
    return parts.length > 0 ? parts.join(' · ') : undefined;
  })();
  const workload = describe(
    pick(sources, ['workload', 'dataset', 'input.dataset', 'input.custom_dataset_type', 'trace']),
  );
  const seed = describe(
    pick(sources, ['seed', 'random_seed', 'workload.seed', 'input.random_seed']),
  );
  const started = fmtTimestamp(
    pick(sources, ['started_at', 'startedAt', 'start_time', 'startTime']),
  );
  const title =
    input.title ?? (model !== undefined ? `Benchmark report — ${model}` : 'Benchmark report');

  const facts: [string, string | undefined, string?][] = [
    ['Model', model],
    [
      'Endpoint',
      endpointUrl === undefined
        ? undefined
        : [
            endpointUrl,
            endpointType,
            streaming === true ? 'streaming' : streaming === false ? 'non-streaming' : undefined,
          ]
            .filter((x) => x !== undefined)
            .join(' · '),
    ],
    ['Load', loadText],
    ['Workload', workload !== undefined ? truncateText(workload, 160) : undefined],
    ['Seed', seed],
    ['Started', started],
    ['Duration', durationSec !== undefined ? fmtSeconds(durationSec) : undefined],
    [
      'Requests',
      totalCount === undefined
        ? undefined
        : `${fmtInt(totalCount)} (${fmtInt(validCount)} succeeded)`,
    ],
    [
      'Errors',
      totalCount === undefined && errorCount === 0
        ? undefined
        : `${fmtInt(errorCount)}${totalCount ? ` (${fmtPct((100 * errorCount) / totalCount)})` : ''}`,
      errorCount > 0 ? 'bad' : 'good',
    ],
  ];
  const factsHtml = facts
    .map(
      ([k, v, cls]) =>
        `<div class="fact${cls ? ` ${cls}` : ''}"><dt>${escapeHtml(k)}</dt><dd>${escapeHtml(v ?? DASH)}</dd></div>`,
    )
    .join('');

  // Summary table.
  const cols: [StatKey, string][] = [
    ['avg', 'avg'],
    ['p50', 'p50'],
    ['p90', 'p90'],
    ['p99', 'p99'],
    ['min', 'min'],
    ['max', 'max'],
  ];
  const summaryRows = MAIN_METRICS.map((m) => {
    const s = stats.get(m.tag);
    const cells = cols.map(([k]) => `<td>${escapeHtml(fmtKind(m.kind, s?.v[k]))}</td>`).join('');
    const count = s?.v.count;
    return (
      `<tr><th scope="row">${escapeHtml(m.label)} <span class="abbr">${escapeHtml(m.abbr)}</span></th>` +
      `<td class="unit">${escapeHtml(UNIT_LABEL[m.kind])}</td>${cells}<td>${escapeHtml(fmtInt(count))}</td></tr>`
    );
  }).join('');
  const summaryTable =
    `<table class="stats"><caption>Per-request metrics over successful requests</caption><thead><tr><th scope="col">Metric</th><th scope="col" class="unit">Unit</th>` +
    cols.map(([, h]) => `<th scope="col">${h}</th>`).join('') +
    `<th scope="col">count</th></tr></thead><tbody>${summaryRows}</tbody></table>`;

  const slos = pick(sources, ['load.goodput', 'goodput_slos', 'slos', 'goodput']);
  const slosText = isObj(slos)
    ? Object.entries(slos)
        .map(([k, v]) => {
          const x = num(v);
          if (x === undefined) return undefined;
          const abbr = MAIN_METRICS.find((m) => m.tag === k);
          const unit =
            abbr === undefined
              ? ''
              : abbr.kind === 'ms'
                ? ' ms'
                : abbr.kind === 'rate'
                  ? ' tok/s'
                  : '';
          return `${abbr?.abbr ?? k} ${abbr?.kind === 'rate' ? '≥' : '≤'} ${fmtFixed(x, Number.isInteger(x) ? 0 : 2)}${unit}`;
        })
        .filter((x): x is string => x !== undefined)
        .join(', ')
    : undefined;
  const tputRows: [string, string, string][] = [
    ['Output token throughput', fmtRate(outTput), 'tok/s'],
    ['Total token throughput (input + output)', fmtRate(totalTput), 'tok/s'],
    ['Request throughput', fmtFixed(reqTput, 2), 'req/s'],
    [
      `Goodput (requests meeting every SLO${slosText ? `: ${slosText}` : ''})`,
      fmtFixed(goodput, 2),
      'req/s',
    ],
    [
      'Good requests',
      goodCount === undefined
        ? DASH
        : `${fmtInt(goodCount)}${totalCount ? ` (${fmtPct((100 * goodCount) / totalCount)})` : ''}`,
      'requests',
    ],
    ['Benchmark duration', durationSec === undefined ? DASH : fmtFixed(durationSec, 2), 's'],
    ['Total output tokens', fmtInt(totalOsl), 'tokens'],
    ['Total input tokens', fmtInt(totalIsl), 'tokens'],
  ];
  const tputTable =
    `<table class="kv"><caption>Run throughput</caption><thead><tr><th scope="col">Metric</th><th scope="col">Value</th><th scope="col" class="unit">Unit</th></tr></thead><tbody>` +
    tputRows
      .map(
        ([k, v, u]) =>
          `<tr><th scope="row">${escapeHtml(k)}</th><td>${escapeHtml(v)}</td><td class="unit">${escapeHtml(u)}</td></tr>`,
      )
      .join('') +
    '</tbody></table>';

  // Errors: from the records, else the aggregate's error_summary.
  const errGroups = new Map<string, { e: ErrInfo; count: number }>();
  for (const r of p.errors) {
    const e = r.error ?? { code: DASH, type: 'Error', message: '' };
    const key = `${e.code}\u0000${e.type}\u0000${e.message}`;
    const g = errGroups.get(key);
    if (g) g.count++;
    else errGroups.set(key, { e, count: 1 });
  }
  if (errGroups.size === 0 && Array.isArray(aggregate.error_summary)) {
    for (const item of aggregate.error_summary) {
      if (!isObj(item)) continue;
      const e = errorInfo(item.error_details) ?? { code: DASH, type: 'Error', message: '' };
      errGroups.set(`${errGroups.size}`, { e, count: num(item.count) ?? 0 });
    }
  }
  const errList = [...errGroups.values()].sort((a, b) => b.count - a.count);
  const errorsHtml =
    errList.length === 0
      ? '<p class="ok">No failed requests.</p>'
      : `<table class="errors"><caption>Failed requests by error</caption><thead><tr><th scope="col">Count</th><th scope="col">Code</th><th scope="col">Type</th><th scope="col">Message</th></tr></thead><tbody>` +
        errList
          .slice(0, 50)
          .map(
            ({ e, count }) =>
              `<tr><td>${escapeHtml(fmtInt(count))}</td><td>${escapeHtml(e.code)}</td><td>${escapeHtml(e.type)}</td><td class="msg">${escapeHtml(truncateText(e.message, 300) || DASH)}</td></tr>`,
          )
          .join('') +
        '</tbody></table>' +
        (errList.length > 50
          ? `<p class="note">${fmtInt(errList.length - 50)} more error kinds not listed.</p>`
          : '');

  // Server-side metrics scraped during the run, when the run metadata has them.
  const server = isObj(metadata.server_metrics) ? metadata.server_metrics : undefined;
  const serverRows: string[] = [];
  if (server) {
    for (const [k, v] of Object.entries(server)) {
      if (k === 'metrics_url' || k === 'samples') continue;
      const label = escapeHtml(k.replace(/_/g, ' '));
      const x = num(v);
      if (x !== undefined) {
        const text = /rate$/.test(k) ? fmtPct(x * 100) : fmtFixed(x, Number.isInteger(x) ? 0 : 2);
        serverRows.push(
          `<tr><th scope="row">${label}</th><td>${escapeHtml(text)}</td><td>${DASH}</td><td>${DASH}</td><td>${DASH}</td></tr>`,
        );
      } else if (isObj(v)) {
        const f = (key: string): string => {
          const y = num(v[key]);
          return escapeHtml(/usage/.test(k) && y !== undefined ? fmtPct(y * 100) : fmtFixed(y, 2));
        };
        serverRows.push(
          `<tr><th scope="row">${label}</th><td>${f('avg')}</td><td>${f('p50')}</td><td>${f('p99')}</td><td>${f('max')}</td></tr>`,
        );
      }
    }
  }
  const serverHtml =
    serverRows.length === 0
      ? ''
      : `<section aria-labelledby="server-h"><h2 id="server-h">Server metrics</h2><table class="kv"><caption>Scraped from ${escapeHtml(describe(server?.metrics_url) ?? 'the engine')} (${escapeHtml(fmtInt(num(server?.samples)))} samples)</caption><thead><tr><th scope="col">Metric</th><th scope="col">avg / value</th><th scope="col">p50</th><th scope="col">p99</th><th scope="col">max</th></tr></thead><tbody>${serverRows.join('')}</tbody></table></section>`;

  // Plots.
  const figures: Figure[] = [
    distributionPlot(
      'ttft',
      'Time to first token distribution',
      'TTFT',
      p.valid.map((r) => r.ttft).filter((v): v is number => v !== undefined),
    ),
    distributionPlot(
      'itl',
      'Inter-token latency distribution',
      'ITL',
      p.valid.map((r) => r.itl).filter((v): v is number => v !== undefined),
    ),
    throughputPlot(p, outTput),
    concurrencyPlot(p, concurrencyV),
    ttftScatterPlot(p),
  ];
  const plotsHtml = figures
    .map((f) => `<figure>${f.svg}<figcaption>${escapeHtml(f.caption)}</figcaption></figure>`)
    .join('');

  const notes: string[] = [];
  if (!hasRecords)
    notes.push(
      'No per-request records: plots are empty and statistics come from the aggregate file only.',
    );
  if (p.skipped > 0)
    notes.push(
      `${fmtInt(p.skipped)} line${p.skipped === 1 ? '' : 's'} of the records file could not be read and were skipped.`,
    );
  if (p.warmup > 0)
    notes.push(`${fmtInt(p.warmup)} warm-up request${p.warmup === 1 ? '' : 's'} excluded.`);
  const notesHtml = notes.map((n) => `<p class="note">${escapeHtml(n)}</p>`).join('');

  // Everything in the metadata, for the record.
  const flat: [string, string][] = [];
  if (Object.keys(metadata).length > 0) flatten(metadata, '', flat, 300);
  if (Object.keys(inputConfig).length > 0) flatten(inputConfig, 'input_config', flat, 300);
  const configHtml =
    flat.length === 0
      ? ''
      : `<section aria-labelledby="config-h"><h2 id="config-h">Run configuration</h2><details><summary>${fmtInt(flat.length)} settings from run metadata and input configuration</summary>` +
        `<table class="kv config"><thead><tr><th scope="col">Key</th><th scope="col">Value</th></tr></thead><tbody>` +
        flat
          .map(
            ([k, v]) =>
              `<tr><th scope="row"><code>${escapeHtml(k)}</code></th><td><code>${escapeHtml(truncateText(v, 400))}</code></td></tr>`,
          )
          .join('') +
        '</tbody></table></details></section>';

  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<title>${escapeHtml(title)}</title>
<style>${CSS}</style>
</head>
<body>
<main>
<header>
<p class="kicker">Inferplane · benchmark report</p>
<h1>${escapeHtml(title)}</h1>
<dl class="facts">${factsHtml}</dl>
${notesHtml}
</header>
<section aria-labelledby="summary-h"><h2 id="summary-h">Latency and tokens</h2>${summaryTable}</section>
<section aria-labelledby="tput-h"><h2 id="tput-h">Throughput</h2>${tputTable}</section>
${serverHtml}
<section aria-labelledby="errors-h"><h2 id="errors-h">Errors</h2>${errorsHtml}</section>
<section aria-labelledby="plots-h"><h2 id="plots-h">Plots</h2><div class="plots">${plotsHtml}</div></section>
${configHtml}
<footer>Metrics follow AIPerf's definitions: TTFT = first chunk − send; ITL = (latency − TTFT) / (OSL − 1); ICL = gaps between chunks; throughputs over the benchmark duration (first send to last response). Latencies in milliseconds.</footer>
</main>
</body>
</html>
`;
}

const CSS = `
:root{color-scheme:light;--fg:#111827;--muted:#6b7280;--line:#e5e7eb;--bg:#f8fafc;--card:#fff;--accent:#4e79a7;--bad:#b91c1c;--good:#15803d}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,"Noto Sans",sans-serif}
main{max-width:1360px;margin:0 auto;padding:24px 28px 40px}
.kicker{margin:0;color:var(--muted);font-size:12px;letter-spacing:.06em;text-transform:uppercase}
h1{margin:2px 0 16px;font-size:24px;line-height:1.25;overflow-wrap:anywhere}
h2{font-size:17px;margin:28px 0 10px}
.facts{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:8px;margin:0}
.fact{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:8px 12px;min-width:0}
.fact dt{color:var(--muted);font-size:12px}
.fact dd{margin:0;font-weight:600;overflow-wrap:anywhere}
.fact.bad dd{color:var(--bad)}
.fact.good dd{color:var(--good)}
table{border-collapse:collapse;background:var(--card);border:1px solid var(--line);border-radius:8px;font-variant-numeric:tabular-nums;width:100%}
caption{text-align:left;color:var(--muted);font-size:12px;padding:0 0 6px}
th,td{padding:6px 12px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
thead th{background:#f1f5f9;font-weight:600;font-size:12px;color:#374151}
th[scope=row],th:first-child{text-align:left;font-weight:500}
td.unit{color:var(--muted);text-align:left}
th.unit{text-align:left}
table.errors td,table.errors th{text-align:left}
table.errors td:first-child{text-align:right;width:1%}
td.msg{text-align:left;white-space:normal;overflow-wrap:anywhere}
tbody tr:last-child th,tbody tr:last-child td{border-bottom:none}
.abbr{color:var(--muted);font-size:12px;margin-left:4px}
table.kv{width:auto;min-width:420px}
table.config td{text-align:left;white-space:normal;overflow-wrap:anywhere}
.stats{overflow-x:auto}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:16px}
figure{margin:0;background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 12px}
figure svg{display:block;width:100%;height:auto;font-family:inherit}
figcaption{color:var(--muted);font-size:12.5px;margin-top:4px}
.note{color:#92400e;background:#fffbeb;border:1px solid #fde68a;border-radius:6px;padding:6px 10px;margin:10px 0 0}
.ok{color:var(--good);margin:0}
details summary{cursor:pointer;color:var(--accent);margin-bottom:8px}
code{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
footer{margin-top:32px;color:var(--muted);font-size:12px}
@media (max-width:640px){.plots{grid-template-columns:1fr}main{padding:16px}}
`;
