// Reading the engine's `usage` from the end of a response or stream, and dropping the usage-only
// SSE event the gateway asked for on the client's behalf.
import { describe, expect, it } from 'vitest';
import { UsageEventFilter, parseUsage } from '../../src/gateway/relay.js';

const b = (s: string): Buffer => Buffer.from(s, 'utf8');

describe('parseUsage', () => {
  it('reads prompt, completion and cached tokens of a whole answer', () => {
    const body = JSON.stringify({
      id: 'x',
      choices: [{ message: { content: 'usage "prompt_tokens": 99' } }],
      usage: {
        prompt_tokens: 1234,
        completion_tokens: 56,
        total_tokens: 1290,
        prompt_tokens_details: { cached_tokens: 1024 },
      },
    });
    expect(parseUsage(b(body))).toEqual({
      promptTokens: 1234,
      completionTokens: 56,
      cachedTokens: 1024,
    });
  });

  it('takes the last usage object, with whitespace around the colons', () => {
    const text =
      'data: {"usage": {"prompt_tokens": 1, "completion_tokens": 1}}\n\n' +
      'data: {"choices":[],"usage" : { "prompt_tokens" :\t7 ,\n"completion_tokens":\r\n 3 }}\n\n';
    expect(parseUsage(b(text))).toEqual({ promptTokens: 7, completionTokens: 3, cachedTokens: 0 });
  });

  it('is undefined without usage or without a prompt count', () => {
    expect(parseUsage(b('{"choices":[]}'))).toBeUndefined();
    expect(parseUsage(b('{"usage":{"completion_tokens":3}}'))).toBeUndefined();
    expect(parseUsage(b('{"usage":{"prompt_tokens":"3"}}'))).toBeUndefined();
    expect(parseUsage(b('{"usage":{"prompt_tokens":}}'))).toBeUndefined();
    expect(parseUsage(b('{"usage":{"prompt_tokens":1234567890123456}}'))).toBeUndefined();
  });

  it('defaults missing completion and cached counts to 0', () => {
    expect(parseUsage(b('{"usage":{"prompt_tokens":0}}'))).toEqual({
      promptTokens: 0,
      completionTokens: 0,
      cachedTokens: 0,
    });
  });
});

describe('UsageEventFilter', () => {
  it('drops the usage-only event, keeps the rest, reads its usage across chunk splits', () => {
    const stream =
      'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n' +
      'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}\n\n' +
      'data: [DONE]\n\n';
    for (let cut = 1; cut < stream.length; cut += 7) {
      const f = new UsageEventFilter();
      const out = Buffer.concat([
        f.push(b(stream.slice(0, cut))),
        f.push(b(stream.slice(cut))),
        f.flush() ?? Buffer.alloc(0),
      ]).toString();
      expect(out).toBe('data: {"choices":[{"delta":{"content":"hi"}}]}\n\ndata: [DONE]\n\n');
      expect(f.usage).toEqual({ promptTokens: 5, completionTokens: 2, cachedTokens: 0 });
    }
  });
});
