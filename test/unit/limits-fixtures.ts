// Shared fixtures of the tenant-limit tests: a hand-driven clock and admission unwrappers.
import type { Admission } from '../../src/gateway/limits.js';

export function clock(): { now: () => number; advance: (ms: number) => void } {
  let t = 1000;
  return { now: () => t, advance: (ms) => (t += ms) };
}

export function ok(a: Admission): Extract<Admission, { ok: true }> {
  if (!a.ok) throw new Error(`expected admission, got ${a.error.message}`);
  return a;
}

export function refused(a: Admission): Extract<Admission, { ok: false }> {
  if (a.ok) throw new Error('expected refusal');
  return a;
}
