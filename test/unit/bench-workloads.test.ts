import { describe, expect, it } from 'vitest';
import { Conversation } from '../../src/bench/loadgen.js';
import {
  parseMooncakeTrace,
  presetWorkload,
  PRESETS,
  sharedPrefixWorkload,
  syntheticWorkload,
  traceWorkload,
} from '../../src/bench/workloads.js';
import { countTokens, tokenize } from '../../src/sim/tokenizer.js';

function commonPrefix(a: number[], b: number[]): number {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}

describe('synthetic workload', () => {
  it('is deterministic by seed and has exact token counts', () => {
    const a = syntheticWorkload({ isl: 100, osl: 20, seed: 3 });
    const b = syntheticWorkload({ isl: 100, osl: 20, seed: 3 });
    const c = syntheticWorkload({ isl: 100, osl: 20, seed: 4 });
    expect(a.session(5)).toEqual(b.session(5));
    expect(a.session(5)).not.toEqual(c.session(5));
    for (let i = 0; i < 20; i++) {
      const t = a.session(i).turns[0];
      expect(countTokens(t?.userText ?? '')).toBe(100);
      expect(t?.maxTokens).toBe(20);
    }
  });

  it('draws lengths around the mean with a stddev', () => {
    const w = syntheticWorkload({ isl: 200, islStddev: 20, osl: 50, oslStddev: 5, seed: 1 });
    const isl = Array.from({ length: 400 }, (_, i) =>
      countTokens(w.session(i).turns[0]?.userText ?? ''),
    );
    const mean = isl.reduce((s, x) => s + x, 0) / isl.length;
    const sd = Math.sqrt(isl.reduce((s, x) => s + (x - mean) ** 2, 0) / isl.length);
    expect(Math.abs(mean - 200)).toBeLessThan(4);
    expect(Math.abs(sd - 20)).toBeLessThan(3);
  });

  it('multi-turn sessions carry history', () => {
    const w = syntheticWorkload({ isl: 10, osl: 5, seed: 1, turns: 3 });
    const conv = new Conversation(w.session(0), 'chat');
    const first = conv.input(0);
    conv.record(0, ' answer one');
    const second = conv.input(1);
    expect(second.messages?.slice(0, 2)).toEqual([
      { role: 'user', content: w.session(0).turns[0]?.userText },
      { role: 'assistant', content: ' answer one' },
    ]);
    expect(second.clientInputTokens).toBeGreaterThan(first.clientInputTokens);
    const comp = new Conversation(w.session(0), 'completions');
    comp.record(0, ' answer');
    expect(
      comp.input(1).prompt?.startsWith((w.session(0).turns[0]?.userText ?? '') + ' answer'),
    ).toBe(true);
  });
});

describe('shared-prefix workload', () => {
  it('sessions of a group share the prefix tokens; other groups do not', () => {
    const w = sharedPrefixWorkload({
      groups: 3,
      usersPerGroup: 2,
      prefixLength: 64,
      isl: 16,
      osl: 8,
      seed: 9,
    });
    const ids = (i: number) => {
      const s = w.session(i);
      return tokenize((s.systemText ?? '') + (s.turns[0]?.userText ?? ''));
    };
    expect(countTokens(w.session(0).systemText ?? '')).toBe(64);
    expect(commonPrefix(ids(0), ids(3))).toBeGreaterThanOrEqual(64); // same group (i mod 3)
    expect(commonPrefix(ids(0), ids(1))).toBe(0); // different groups
    expect(w.session(0).systemText).toBe(w.session(6).systemText);
  });

  it('Zipf concentrates sessions on the first groups', () => {
    const w = sharedPrefixWorkload({
      groups: 10,
      usersPerGroup: 1,
      prefixLength: 4,
      isl: 4,
      osl: 1,
      seed: 1,
      zipf: 1.5,
    });
    const counts = new Map<string, number>();
    for (let i = 0; i < 500; i++) {
      const p = w.session(i).systemText ?? '';
      counts.set(p, (counts.get(p) ?? 0) + 1);
    }
    const top = Math.max(...counts.values());
    expect(top / 500).toBeGreaterThan(0.3); // 1/H(10,1.5) ≈ 0.5
  });
});

describe('Mooncake trace', () => {
  const text = [
    '{"timestamp": 0, "input_length": 1200, "output_length": 10, "hash_ids": [1, 2, 3]}',
    '',
    '{"timestamp": 500, "input_length": 700, "output_length": 5, "hash_ids": [1, 4], "session_id": "s1"}',
    '{"timestamp": 250, "input_length": 30, "output_length": 5, "hash_ids": []}',
  ].join('\n');

  it('parses rows and builds prompts where equal hash ids give equal blocks', () => {
    const rows = parseMooncakeTrace(text);
    expect(rows).toHaveLength(3);
    const w = traceWorkload(rows, { seed: 1 });
    const a = w.session(0);
    const b = w.session(1);
    expect(countTokens(a.turns[0]?.userText ?? '')).toBe(1200);
    expect(countTokens(b.turns[0]?.userText ?? '')).toBe(700);
    expect(countTokens(w.session(2).turns[0]?.userText ?? '')).toBe(30);
    const ta = tokenize(a.turns[0]?.userText ?? '');
    const tb = tokenize(b.turns[0]?.userText ?? '');
    expect(commonPrefix(ta, tb)).toBe(512); // block 1 shared, then 2 vs 4 differ
    expect(a.timestampMs).toBe(0);
    expect(b.timestampMs).toBe(500);
    expect(b.traceSessionId).toBe('s1');
    expect(a.turns[0]?.maxTokens).toBe(10);
    expect(traceWorkload(rows, { seed: 1, speed: 2 }).session(1).timestampMs).toBe(250);
  });

  it('rejects a bad line with its number', () => {
    expect(() => parseMooncakeTrace('{"timestamp":0}\n')).toThrow(/line 1/);
  });
});

describe('presets', () => {
  it('every preset builds small with --scale and is deterministic', () => {
    for (const name of PRESETS) {
      const p = presetWorkload(name, 1, 0.01);
      expect(p.workload.session(0)).toEqual(presetWorkload(name, 1, 0.01).workload.session(0));
      expect(p.load.requestCount).toBeGreaterThan(0);
    }
    const b2b = presetWorkload('shared-prefix-b2b', 1, 0.01);
    expect(countTokens(b2b.workload.session(0).systemText ?? '')).toBe(60);
    expect(b2b.load).toMatchObject({ arrival: 'poisson', requestRate: 0.6, rampFromRate: 0.03 });
    expect(presetWorkload('multi-round-qa', 1, 0.01).workload.session(0).turns).toHaveLength(10);
  });
});
