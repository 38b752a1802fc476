import { describe, expect, it } from 'vitest';
import { Rng } from '../../src/bench/random.js';
import { SseParser } from '../../src/bench/sse.js';

const STREAM =
  ': keepalive\n\n' +
  'data: {"choices":[{"delta":{"content":"héllo 🌍"}}]}\n\n' +
  'event: message\r\ndata: {"a":1}\r\n\r\n' +
  'data: line1\ndata: line2\n\n' +
  'data:nospace\n\n' +
  'data: [DONE]\n\n';
const EXPECTED = [
  '{"choices":[{"delta":{"content":"héllo 🌍"}}]}',
  '{"a":1}',
  'line1\nline2',
  'nospace',
  '[DONE]',
];

function parseSplit(bytes: Buffer, cuts: number[]): string[] {
  const out: string[] = [];
  const p = new SseParser((d) => out.push(d));
  let prev = 0;
  for (const c of [...cuts, bytes.length]) {
    p.push(bytes.subarray(prev, c));
    prev = c;
  }
  p.end();
  return out;
}

describe('SseParser', () => {
  const bytes = Buffer.from(STREAM, 'utf8');

  it('parses a whole stream', () => {
    expect(parseSplit(bytes, [])).toEqual(EXPECTED);
  });

  it('parses the same events whatever the chunk boundaries (incl. inside UTF-8 characters)', () => {
    for (let i = 1; i < bytes.length; i++) expect(parseSplit(bytes, [i])).toEqual(EXPECTED);
    const rng = new Rng(7);
    for (let t = 0; t < 300; t++) {
      const cuts = Array.from({ length: 1 + rng.int(12) }, () => rng.int(bytes.length)).sort(
        (a, b) => a - b,
      );
      expect(parseSplit(bytes, cuts)).toEqual(EXPECTED);
    }
  });

  it('delivers a final event without its blank line at end()', () => {
    expect(parseSplit(Buffer.from('data: x\n\ndata: tail'), [])).toEqual(['x', 'tail']);
  });
});
