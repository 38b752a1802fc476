import { describe, it, expect } from 'vitest';
import {
  chatPromptText,
  countTokens,
  generatedToken,
  splitTokens,
  tokenize,
  VOCAB_SIZE,
} from '../../src/sim/tokenizer.js';

describe('sim tokenizer', () => {
  it('is deterministic and in vocabulary', () => {
    const text = 'Hello, world!  The answer is 42.\nNext line';
    const a = tokenize(text);
    const b = tokenize(text);
    expect(a).toEqual(b);
    expect(a.length).toBeGreaterThan(5);
    for (const id of a) {
      expect(Number.isInteger(id)).toBe(true);
      expect(id).toBeGreaterThanOrEqual(0);
      expect(id).toBeLessThan(VOCAB_SIZE);
    }
    expect(countTokens(text)).toBe(a.length);
    expect(splitTokens(text).join('')).toBe(text);
    expect(tokenize('')).toEqual([]);
    expect(countTokens('')).toBe(0);
  });

  it('different texts give different tokens', () => {
    expect(tokenize('the cat')).not.toEqual(tokenize('the dog'));
  });

  it('shared prefixes give shared token prefixes', () => {
    const prefix = 'You are a helpful assistant. Answer briefly.';
    const a = tokenize(prefix + ' What is 2+2?');
    const b = tokenize(prefix + ' Tell me a joke.');
    const p = tokenize(prefix);
    expect(a.slice(0, p.length)).toEqual(p);
    expect(b.slice(0, p.length)).toEqual(p);
    expect(a).not.toEqual(b);
  });

  it('chat prompts extend as messages are appended', () => {
    const m1 = [
      { role: 'system', content: 'Be nice.' },
      { role: 'user', content: 'Hi there' },
    ];
    const m2 = [...m1, { role: 'assistant', content: 'Hello!' }, { role: 'user', content: 'More' }];
    const t1 = chatPromptText(m1, false);
    expect(t1).toBe('<|system|>Be nice.\n<|user|>Hi there\n');
    expect(chatPromptText(m1)).toBe(t1 + '<|assistant|>');
    const ids1 = tokenize(t1);
    const ids2 = tokenize(chatPromptText(m2));
    expect(ids2.slice(0, ids1.length)).toEqual(ids1);
  });

  it('generates deterministic readable word pieces', () => {
    const a = Array.from({ length: 20 }, (_, i) => generatedToken(7, i));
    const b = Array.from({ length: 20 }, (_, i) => generatedToken(7, i));
    const c = Array.from({ length: 20 }, (_, i) => generatedToken(8, i));
    expect(a).toEqual(b);
    expect(a).not.toEqual(c);
    for (const t of a) expect(t).toMatch(/^ [a-z]+$/);
    expect(new Set(a).size).toBeGreaterThan(5);
  });
});
