/**
 * Workloads of the benchmark: what each request asks. Every workload is a deterministic function
 * of its seed: session i is always the same prompts. Prompt text is made of words with one leading
 * space each, so for the simulator's tokenizer (src/sim/tokenizer.ts) a text of n words is exactly
 * n tokens and concatenated texts keep each part's tokens (shared prefixes share token prefixes).
 *
 * Presets follow shared/reference/workloads.md and scale down with `scale` (groups, lengths and
 * rates × scale, at least 1) so tests can run them small.
 */
import { readFileSync } from 'node:fs';
import { Rng, mixSeed } from './random.js';

export interface TurnSpec {
  /** New user text of this turn (appended to the session's history). */
  userText: string;
  maxTokens: number;
}

export interface SessionSpec {
  /** Conversation id (stable for a seed). */
  id: string;
  /** Shared system prompt, sent first (chat: system message; completions: prompt head). */
  systemText?: string;
  turns: TurnSpec[];
  /** Trace replay: send time of the first turn, in ms from the start. */
  timestampMs?: number;
  /** Trace session id (used as the correlation id of its requests). */
  traceSessionId?: string;
}

export interface Workload {
  name: string;
  /** Number of distinct sessions, or null when session(i) is defined for every i. */
  size: number | null;
  session(i: number): SessionSpec;
}

/** Load settings a preset suggests (flags given explicitly win). */
export interface SuggestedLoad {
  concurrency?: number;
  requestRate?: number;
  rampFromRate?: number;
  rampUpSec?: number;
  arrival?: 'constant' | 'poisson' | 'gamma';
  burstiness?: number;
  requestCount?: number;
}

/** The words synthetic prompts are made of (`model synth` puts each in its vocabulary). */
export const PROMPT_WORDS: readonly string[] = [
  'alpha',
  'bravo',
  'charlie',
  'delta',
  'echo',
  'foxtrot',
  'golf',
  'hotel',
  'india',
  'juliet',
  'kilo',
  'lima',
  'mike',
  'november',
  'oscar',
  'papa',
  'quebec',
  'romeo',
  'sierra',
  'tango',
  'uniform',
  'victor',
  'whiskey',
  'xray',
  'yankee',
  'zulu',
  'red',
  'orange',
  'yellow',
  'green',
  'blue',
  'indigo',
  'violet',
  'black',
  'white',
  'gray',
  'river',
  'mountain',
  'forest',
  'desert',
  'ocean',
  'island',
  'valley',
  'canyon',
  'meadow',
  'glacier',
  'volcano',
  'prairie',
  'tundra',
  'lagoon',
  'harbor',
  'bridge',
  'tower',
  'castle',
  'garden',
  'market',
  'library',
  'station',
  'engine',
  'signal',
  'vector',
  'matrix',
  'tensor',
  'kernel',
] as const;

/** Text of exactly `n` tokens (for the sim tokenizer): n words, each with a leading space. */
export function wordsText(rng: Rng, n: number): string {
  let s = '';
  for (let i = 0; i < n; i++) s += ' ' + (PROMPT_WORDS[rng.int(PROMPT_WORDS.length)] as string);
  return s;
}

/** A length drawn from N(mean, stddev), rounded, at least 1. */
export function drawLength(rng: Rng, mean: number, stddev: number): number {
  if (stddev <= 0) return Math.max(1, Math.round(mean));
  return Math.max(1, Math.round(mean + stddev * rng.normal()));
}

export interface SyntheticOptions {
  isl: number;
  islStddev?: number;
  osl: number;
  oslStddev?: number;
  seed: number;
  turns?: number;
  /** Start every prompt with a token unique to the session (no accidental reuse). Default true. */
  unique?: boolean;
}

/** Independent random prompts of ISL ± stddev tokens asking for OSL ± stddev tokens. */
export function syntheticWorkload(o: SyntheticOptions, name = 'synthetic'): Workload {
  const turns = Math.max(1, o.turns ?? 1);
  return {
    name,
    size: null,
    session(i) {
      const rng = new Rng(mixSeed(o.seed, i));
      const t: TurnSpec[] = [];
      for (let k = 0; k < turns; k++) {
        const isl = drawLength(rng, o.isl, o.islStddev ?? 0);
        const head = (o.unique ?? true) && k === 0 ? ` s${o.seed}x${i}` : '';
        const body = wordsText(rng, head ? isl - 1 : isl);
        t.push({ userText: head + body, maxTokens: drawLength(rng, o.osl, o.oslStddev ?? 0) });
      }
      return { id: `${name}-${o.seed}-${i}`, turns: t };
    },
  };
}

export interface SharedPrefixOptions extends SyntheticOptions {
  groups: number;
  prefixLength: number;
  usersPerGroup: number;
  /** Zipf exponent over groups (0 or absent: round robin). */
  zipf?: number;
}

/** Cumulative Zipf(s) distribution over n items (item k has weight 1/(k+1)^s). */
export function zipfCdf(n: number, s: number): Float64Array {
  const cdf = new Float64Array(n);
  let acc = 0;
  for (let k = 0; k < n; k++) cdf[k] = acc += 1 / Math.pow(k + 1, s);
  for (let k = 0; k < n; k++) cdf[k] = (cdf[k] as number) / acc;
  return cdf;
}

function sampleCdf(cdf: Float64Array, u: number): number {
  let lo = 0;
  let hi = cdf.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if ((cdf[mid] as number) > u) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/**
 * G groups of U users: every session of group g starts with the same `prefixLength`-token system
 * prompt, followed by its own question. Session i goes to group i mod G (or a Zipf draw), user
 * ⌊i/G⌋ mod U.
 */
export function sharedPrefixWorkload(o: SharedPrefixOptions, name = 'shared-prefix'): Workload {
  const groups = Math.max(1, o.groups);
  const prefixes = new Map<number, string>();
  const prefix = (g: number) => {
    let p = prefixes.get(g);
    if (p === undefined) {
      p =
        ` group${g}x${o.seed}` +
        wordsText(new Rng(mixSeed(o.seed ^ 0x5eed, g)), o.prefixLength - 1);
      prefixes.set(g, p);
    }
    return p;
  };
  const cdf = o.zipf !== undefined && o.zipf > 0 ? zipfCdf(groups, o.zipf) : null;
  const questions = syntheticWorkload({ ...o, unique: true }, name);
  return {
    name,
    size: null,
    session(i) {
      const g = cdf ? sampleCdf(cdf, new Rng(mixSeed(o.seed ^ 0x21bf, i)).next()) : i % groups;
      const user = Math.floor(i / groups) % Math.max(1, o.usersPerGroup);
      const q = questions.session(i);
      return { ...q, id: `${name}-g${g}-u${user}-${i}`, systemText: prefix(g) };
    },
  };
}

/** One row of a Mooncake-format trace. */
export interface TraceRow {
  timestamp: number;
  input_length: number;
  output_length: number;
  hash_ids: number[];
  session_id?: string | number;
}

/** Parses Mooncake JSONL (blank lines skipped; a bad line throws with its number). */
export function parseMooncakeTrace(text: string): TraceRow[] {
  const rows: TraceRow[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] as string).trim();
    if (line === '') continue;
    let j: unknown;
    try {
      j = JSON.parse(line);
    } catch {
      throw new Error(`trace line ${i + 1}: not JSON`);
    }
    const o = j as Partial<TraceRow>;
    if (
      typeof o !== 'object' ||
      o === null ||
      typeof o.input_length !== 'number' ||
      typeof o.output_length !== 'number'
    )
      throw new Error(`trace line ${i + 1}: needs input_length and output_length`);
    const row: TraceRow = {
      timestamp: typeof o.timestamp === 'number' ? o.timestamp : 0,
      input_length: o.input_length,
      output_length: o.output_length,
      hash_ids: Array.isArray(o.hash_ids) ? o.hash_ids.filter((h) => typeof h === 'number') : [],
    };
    if (o.session_id !== undefined) row.session_id = o.session_id;
    rows.push(row);
  }
  return rows;
}

export function loadMooncakeTrace(path: string): TraceRow[] {
  return parseMooncakeTrace(readFileSync(path, 'utf8'));
}

export interface TraceOptions {
  /** Tokens per hash block (default 512). */
  blockSize?: number;
  seed: number;
  /** Replay speed: timestamps are divided by it (default 1). */
  speed?: number;
}

/**
 * Trace replay: row i is session i, sent at its timestamp. Its prompt is one block of
 * `blockSize` tokens per hash id (equal ids → equal blocks, so prefix reuse is what the trace
 * says), the last block cut to `input_length`; tokens past the hash blocks are unique to the row.
 */
export function traceWorkload(rows: readonly TraceRow[], o: TraceOptions): Workload {
  const bs = o.blockSize ?? 512;
  const speed = o.speed ?? 1;
  const blocks = new Map<number, string[]>();
  const block = (h: number) => {
    let b = blocks.get(h);
    if (!b) {
      const rng = new Rng(mixSeed(o.seed ^ 0x7ace, h));
      b = [` blk${h}`];
      for (let k = 1; k < bs; k++)
        b.push(' ' + (PROMPT_WORDS[rng.int(PROMPT_WORDS.length)] as string));
      blocks.set(h, b);
    }
    return b;
  };
  const t0 = rows.length > 0 ? Math.min(...rows.map((r) => r.timestamp)) : 0;
  return {
    name: 'trace',
    size: rows.length,
    session(i) {
      const r = rows[i];
      if (!r) throw new RangeError(`trace has ${rows.length} rows`);
      let text = '';
      let left = r.input_length;
      for (const h of r.hash_ids) {
        if (left <= 0) break;
        const b = block(h);
        const n = Math.min(left, b.length);
        for (let k = 0; k < n; k++) text += b[k] as string;
        left -= n;
      }
      if (left > 0) text += ` row${i}` + wordsText(new Rng(mixSeed(o.seed, i)), left - 1);
      const s: SessionSpec = {
        id: `trace-${i}`,
        turns: [{ userText: text, maxTokens: Math.max(1, r.output_length) }],
        timestampMs: (r.timestamp - t0) / speed,
      };
      if (r.session_id !== undefined) s.traceSessionId = String(r.session_id);
      return s;
    },
  };
}

export const PRESETS = [
  'shared-prefix-b2b',
  'generated-shared-prefix',
  'multi-round-qa',
  'unique',
  'bursty',
] as const;
export type PresetName = (typeof PRESETS)[number];

export interface Preset {
  workload: Workload;
  load: SuggestedLoad;
  description: string;
}

/** A preset of shared/reference/workloads.md, scaled by `scale` (0 < scale ≤ 1 shrinks it). */
export function presetWorkload(name: PresetName, seed: number, scale = 1, zipf?: number): Preset {
  const s = (x: number) => Math.max(1, Math.round(x * scale));
  const r = (x: number) => x * scale;
  switch (name) {
    case 'shared-prefix-b2b':
      return {
        description:
          '150 groups × 5 users; 6000 shared + 1200 question tokens; 1000 output; Poisson 3→60 QPS',
        workload: sharedPrefixWorkload(
          {
            groups: s(150),
            usersPerGroup: 5,
            prefixLength: s(6000),
            isl: s(1200),
            osl: s(1000),
            seed,
            zipf,
          },
          name,
        ),
        load: {
          arrival: 'poisson',
          requestRate: r(60),
          rampFromRate: r(3),
          rampUpSec: 60 * scale,
          requestCount: s(150) * 5,
        },
      };
    case 'generated-shared-prefix':
      return {
        description: '64 groups × 16 prompts; 2048 system + 128 question tokens; 256 output',
        workload: sharedPrefixWorkload(
          {
            groups: s(64),
            usersPerGroup: 16,
            prefixLength: s(2048),
            isl: s(128),
            osl: s(256),
            seed,
            zipf,
          },
          name,
        ),
        load: { concurrency: s(64), requestCount: s(64) * 16 },
      };
    case 'multi-round-qa':
      return {
        description:
          '320 users × 10 rounds; 1000 shared system tokens + per-user history; 100 output',
        workload: sharedPrefixWorkload(
          {
            groups: 1,
            usersPerGroup: s(320),
            prefixLength: s(1000),
            isl: s(100),
            osl: s(100),
            turns: 10,
            seed,
          },
          name,
        ),
        load: { concurrency: s(320), requestCount: s(320) * 10 },
      };
    case 'unique':
      return {
        description: 'unique prompts (no reuse): 1024 input, 256 output',
        workload: syntheticWorkload({ isl: s(1024), osl: s(256), seed, unique: true }, name),
        load: { concurrency: s(64), requestCount: s(512) },
      };
    case 'bursty':
      return {
        description: 'bursty 1000/1000 at high concurrency, unique prompts',
        workload: syntheticWorkload({ isl: s(1000), osl: s(1000), seed, unique: true }, name),
        load: { concurrency: s(256), requestCount: s(512) },
      };
  }
}
