/**
 * Load generator: closed loop (N workers, each sending its next request when the last one ends),
 * open loop (arrivals at absolute offsets from one start instant; intended and actual send times
 * are both recorded) and trace replay (sessions sent at their trace timestamps). Warmup requests
 * run first and are tagged `warmup` (excluded from the metrics). Multi-turn sessions send each
 * turn after the previous answer, with the conversation so far as history.
 */
import { chatPromptText, countTokens } from '../sim/tokenizer.js';
import { ArrivalSchedule, type ArrivalKind } from './arrivals.js';
import type { ChatMessage, EndpointKind, RequestInput } from './client.js';
import { realClock, type SchedClock } from './clock.js';
import { Rng } from './random.js';
import type { BenchmarkPhase, RequestRecord } from './types.js';
import type { SessionSpec, Workload } from './workloads.js';

/** What sends requests (the HTTP client, or a fake in tests). */
export interface Sender {
  send(input: RequestInput): Promise<RequestRecord>;
}

export interface LoadOptions {
  mode: 'closed' | 'open' | 'trace';
  endpoint: EndpointKind;
  /** Closed loop: number of workers. */
  concurrency?: number;
  /** Open loop: arrivals per second. */
  requestRate?: number;
  arrival?: ArrivalKind;
  burstiness?: number;
  /** Closed loop: workers start evenly over this many seconds; open loop: the rate ramps up. */
  rampUpSec?: number;
  rampFromRate?: number;
  /** Stop after this many profiling requests (turns). */
  requestCount?: number;
  /** Stop sending new requests after this many seconds (in-flight ones finish). */
  durationSec?: number;
  warmupRequests?: number;
  seed: number;
  /** Percentage (0–100) of requests cancelled after a random delay in [0, cancellationDelayMs]. */
  cancellationRate?: number;
  cancellationDelayMs?: number;
  /** Prefix of request ids. */
  runId?: string;
  /** Called after every request (progress). */
  onRecord?: (r: RequestRecord) => void;
  /** Stops sending new requests. */
  signal?: AbortSignal;
}

/** Builds the request of one turn from the session's history. */
export class Conversation {
  private readonly messages: ChatMessage[] = [];
  private prompt = '';

  constructor(
    readonly session: SessionSpec,
    private readonly endpoint: EndpointKind,
  ) {
    if (session.systemText !== undefined) {
      if (endpoint === 'chat') this.messages.push({ role: 'system', content: session.systemText });
      else this.prompt = session.systemText;
    }
  }

  /** The body fields and client token count of turn k. */
  input(k: number): Pick<RequestInput, 'messages' | 'prompt' | 'maxTokens' | 'clientInputTokens'> {
    const t = this.session.turns[k];
    if (!t) throw new RangeError(`session ${this.session.id} has no turn ${k}`);
    if (this.endpoint === 'chat') {
      const messages = [...this.messages, { role: 'user', content: t.userText }];
      return {
        messages,
        maxTokens: t.maxTokens,
        clientInputTokens: countTokens(chatPromptText(messages)),
      };
    }
    const prompt = this.prompt + t.userText;
    return { prompt, maxTokens: t.maxTokens, clientInputTokens: countTokens(prompt) };
  }

  /** Appends turn k and its answer to the history. */
  record(k: number, answer: string): void {
    const t = this.session.turns[k];
    if (!t) return;
    if (this.endpoint === 'chat') {
      this.messages.push(
        { role: 'user', content: t.userText },
        { role: 'assistant', content: answer },
      );
    } else {
      this.prompt += t.userText + answer;
    }
  }
}

interface RunState {
  /** Profiling requests still allowed to start (Infinity without a count). */
  budget: number;
  sent: number;
  deadlineNs: number;
  records: RequestRecord[];
}

/**
 * Runs the load and returns every record (warmup ones first, tagged `warmup`). Resolves when the
 * last in-flight request has ended.
 */
export async function runLoad(
  sender: Sender,
  workload: Workload,
  o: LoadOptions,
  clock: SchedClock = realClock,
): Promise<RequestRecord[]> {
  if (o.requestCount === undefined && o.durationSec === undefined && workload.size === null)
    throw new Error('give a request count or a duration');
  const runId = o.runId ?? 'req';
  const cancelRng = new Rng(o.seed ^ 0xca11);
  const all: RequestRecord[] = [];
  let counter = { warmup: 0, profiling: 0 };

  const sendTurn = async (
    conv: Conversation,
    sessionIndex: number,
    k: number,
    phase: BenchmarkPhase,
    intendedNs: number | null,
  ): Promise<RequestRecord> => {
    const n = counter[phase]++;
    const input: RequestInput = {
      ...conv.input(k),
      sessionNum: n,
      requestId: `${runId}-${phase === 'warmup' ? 'w' : 'p'}${n}`,
      correlationId: conv.session.traceSessionId ?? `${runId}-s${sessionIndex}`,
      conversationId: conv.session.id,
      turnIndex: k,
      phase,
      intendedNs,
    };
    if (phase === 'profiling' && o.cancellationRate && cancelRng.next() * 100 < o.cancellationRate)
      input.cancelAfterMs = cancelRng.next() * (o.cancellationDelayMs ?? 1000);
    const rec = await sender.send(input);
    all.push(rec);
    o.onRecord?.(rec);
    return rec;
  };

  // Warmup: closed loop, first turns only, excluded from the metrics.
  const warm = o.warmupRequests ?? 0;
  if (warm > 0) {
    let next = 0;
    const base = workload.size === null ? 1_000_000_000 : 0;
    const workers = Math.min(warm, Math.max(1, o.concurrency ?? 8));
    await Promise.all(
      Array.from({ length: workers }, async () => {
        while (next < warm) {
          const i = next++;
          const idx = workload.size === null ? base + i : i % workload.size;
          await sendTurn(
            new Conversation(workload.session(idx), o.endpoint),
            idx,
            0,
            'warmup',
            null,
          );
        }
      }),
    );
  }
  counter = { warmup: counter.warmup, profiling: 0 };

  const start = clock.now();
  const st: RunState = {
    budget: o.requestCount ?? Number.POSITIVE_INFINITY,
    sent: 0,
    deadlineNs:
      o.durationSec !== undefined ? start + o.durationSec * 1e9 : Number.POSITIVE_INFINITY,
    records: all,
  };
  const canSend = () => st.budget > 0 && clock.now() < st.deadlineNs && !o.signal?.aborted;

  /** Runs one session's turns; the first at `intendedNs`, the next ones after each answer. */
  const runSession = async (idx: number, intendedNs: number | null): Promise<void> => {
    const session = workload.session(idx);
    const conv = new Conversation(session, o.endpoint);
    for (let k = 0; k < session.turns.length; k++) {
      if (k > 0 && !canSend()) return;
      st.budget--;
      const rec = await sendTurn(conv, idx, k, 'profiling', k === 0 ? intendedNs : null);
      if (rec.error !== null) return;
      conv.record(k, rec.outputText);
    }
  };

  if (o.mode === 'closed') {
    const n = Math.max(1, o.concurrency ?? 1);
    let nextSession = 0;
    const ramp = (o.rampUpSec ?? 0) * 1e9;
    await Promise.all(
      Array.from({ length: n }, async (_, w) => {
        if (ramp > 0 && w > 0) await clock.sleepUntil(start + (ramp * w) / n);
        while (canSend()) {
          if (workload.size !== null && nextSession >= workload.size) return;
          await runSession(nextSession++, null);
        }
      }),
    );
    return all;
  }

  const inflight = new Set<Promise<void>>();
  const launch = (idx: number, intended: number) => {
    const p = runSession(idx, intended).finally(() => inflight.delete(p));
    inflight.add(p);
  };

  if (o.mode === 'open') {
    const sched = new ArrivalSchedule({
      rate: o.requestRate ?? 1,
      arrival: o.arrival ?? 'poisson',
      burstiness: o.burstiness ?? 1,
      seed: o.seed,
      rampUpSec: o.rampUpSec ?? 0,
      rampFromRate: o.rampFromRate ?? 0,
    });
    for (let i = 0; ; i++) {
      if (workload.size !== null && i >= workload.size) break;
      const target = start + sched.next() * 1e9;
      if (target >= st.deadlineNs || st.budget <= 0 || o.signal?.aborted) break;
      await clock.sleepUntil(target);
      if (o.signal?.aborted) break;
      launch(i, target);
    }
  } else {
    // Trace replay: sessions in timestamp order, each at start + its timestamp.
    const size = workload.size ?? 0;
    const order = Array.from({ length: size }, (_, i) => i);
    const ts = order.map((i) => workload.session(i).timestampMs ?? 0);
    order.sort((a, b) => (ts[a] as number) - (ts[b] as number) || a - b);
    for (const i of order) {
      const target = start + (ts[i] as number) * 1e6;
      if (target >= st.deadlineNs || st.budget <= 0 || o.signal?.aborted) break;
      await clock.sleepUntil(target);
      if (o.signal?.aborted) break;
      launch(i, target);
    }
  }
  while (inflight.size > 0) await Promise.all([...inflight]);
  return all;
}
