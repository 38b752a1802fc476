// Relaying an upstream response body to the client chunk by chunk (no buffering), watching it on
// the way: first byte (TTFT), gaps between chunks (ITL), the `usage` the engine reports at the end
// (token counters and the tokens/min correction), and — when the gateway asked a stream for its
// usage and the client did not — dropping that usage event.
//
// `StreamWatcher` holds that logic independent of the transport; `pipeToH1` writes to the raw
// front door (the serving path) and `relayWatched` makes a Web ReadableStream (the Hono
// path).
import { performance } from 'node:perf_hooks';
import { Buffer } from 'node:buffer';
import type { UpstreamBody } from './h1/client.js';
import type { H1Response } from './h1/server.js';

export interface Usage {
  promptTokens: number;
  completionTokens: number;
  cachedTokens: number;
}

export type RelayOutcome = 'ok' | 'error' | 'cancelled';

export interface RelayHooks {
  streaming: boolean;
  /** Drop the usage-only SSE event (`"choices":[]` with `"usage"`) after reading it. */
  stripUsage?: boolean;
  onFirstByte: () => void;
  /** Seconds between successive chunks of a stream (inter-token latency as relayed). */
  onGap?: (seconds: number) => void;
  onEnd: (outcome: RelayOutcome, usage: Usage | undefined) => void;
  onError: (e: unknown) => void;
}

/** How many trailing chunks are kept to find `usage` in (it is in the last event or two). */
const TAIL_CHUNKS = 3;

const STREAM_ERROR_EVENT = Buffer.from(
  `data: ${JSON.stringify({
    error: {
      message: 'The model replica failed while streaming; the response is incomplete.',
      type: 'api_error',
      param: null,
      code: 'IP_UPSTREAM_UNAVAILABLE',
    },
  })}\n\ndata: [DONE]\n\n`,
);

/** Watches one response body chunk by chunk; ends exactly once. */
export class StreamWatcher {
  private first = true;
  private last = 0;
  private readonly tail: Buffer[] = [];
  private readonly filter: UsageEventFilter | undefined;
  private ended = false;

  constructor(private readonly hooks: RelayHooks) {
    this.filter = hooks.streaming && hooks.stripUsage ? new UsageEventFilter() : undefined;
  }

  /** The bytes to forward for this upstream chunk (possibly empty). */
  chunk(chunk: Buffer): Buffer {
    if (this.hooks.streaming) {
      const now = performance.now();
      if (!this.first && this.hooks.onGap) this.hooks.onGap((now - this.last) / 1000);
      this.last = now;
    }
    if (this.first) {
      this.first = false;
      this.hooks.onFirstByte();
    }
    if (this.filter) return this.filter.push(chunk);
    this.tail.push(chunk);
    if (this.tail.length > TAIL_CHUNKS) this.tail.shift();
    return chunk;
  }

  /** The upstream body ended: what is left to forward. */
  finish(): Buffer | undefined {
    const rest = this.filter?.flush();
    this.end('ok');
    return rest;
  }

  /** The upstream failed mid-body: for a stream, the bytes that end it cleanly (error event). */
  fail(e: unknown): Buffer | undefined {
    if (this.ended) return undefined;
    this.hooks.onError(e);
    this.end('error');
    return this.hooks.streaming ? STREAM_ERROR_EVENT : undefined;
  }

  /** The client went away. */
  cancel(): void {
    this.end('cancelled');
  }

  get done(): boolean {
    return this.ended;
  }

  private end(outcome: RelayOutcome): void {
    if (this.ended) return;
    this.ended = true;
    const usage = this.filter
      ? this.filter.usage
      : parseUsage(this.tail.length === 1 ? this.tail[0]! : Buffer.concat(this.tail));
    this.hooks.onEnd(outcome, usage);
  }
}

/**
 * Relays an upstream body as a Web stream. If the client goes away, the upstream body is
 * destroyed, which closes the upstream connection and cancels the engine's work. If the upstream
 * dies mid-stream, an SSE client gets an error event and a clean end, never a hang.
 */
export function relayWatched(body: UpstreamBody, w: StreamWatcher): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>(
    {
      start(controller) {
        body.read({
          data: (chunk) => {
            if (w.done) return;
            const out = w.chunk(chunk);
            if (out.length === 0) return; // held back: a partial event, or the dropped usage
            controller.enqueue(out);
            if ((controller.desiredSize ?? 1) <= 0) body.pause();
          },
          end: () => {
            if (w.done) return;
            const rest = w.finish();
            if (rest && rest.length > 0) controller.enqueue(rest);
            controller.close();
          },
          error: (e) => {
            if (w.done) return;
            const tail = w.fail(e);
            if (tail) {
              controller.enqueue(tail);
              controller.close();
            } else controller.error(e);
          },
        });
      },
      pull() {
        body.resume();
      },
      cancel() {
        body.destroy();
        w.cancel();
      },
    },
    { highWaterMark: 1 },
  );
}

/**
 * Relays an upstream body on the raw path with backpressure (the response head already written).
 * The client going away destroys the upstream body (cancelling the engine's work); the upstream
 * dying mid-stream ends an SSE response with an error event, and destroys any other response (the
 * client sees a truncated body, never a hang).
 */
export function pipeToH1(body: UpstreamBody, res: H1Response, w: StreamWatcher): void {
  res.onClose(() => {
    if (!w.done) {
      body.destroy();
      w.cancel();
    }
  });
  res.onDrain(() => body.resume());
  body.read({
    data: (chunk) => {
      if (w.done) return;
      const out = w.chunk(chunk);
      if (out.length > 0 && !res.write(out)) body.pause();
    },
    end: () => {
      if (w.done) return;
      res.end(w.finish());
    },
    error: (e) => {
      if (w.done) return; // cancelled by the client: nothing to say
      const tail = w.fail(e);
      if (tail && !res.destroyed) res.end(tail);
      else res.destroy();
    },
  });
}

const EVENT_END = Buffer.from('\n\n');

/**
 * Splits an SSE byte stream into whole events, forwards them, and drops the usage-only event
 * (reading its usage). A partial event is held until its end arrives.
 */
export class UsageEventFilter {
  usage: Usage | undefined;
  private pending: Buffer | undefined;

  push(chunk: Buffer): Buffer {
    const buf = this.pending ? Buffer.concat([this.pending, chunk]) : chunk;
    this.pending = undefined;
    let start = 0;
    let outStart = 0;
    const parts: Buffer[] = [];
    for (;;) {
      const i = buf.indexOf(EVENT_END, start);
      if (i === -1) break;
      const evEnd = i + 2;
      if (isUsageEvent(buf, start, i)) {
        this.usage = parseUsage(buf.subarray(start, i)) ?? this.usage;
        if (start > outStart) parts.push(buf.subarray(outStart, start));
        outStart = evEnd;
      }
      start = evEnd;
    }
    if (start < buf.length) this.pending = Buffer.from(buf.subarray(start));
    if (start > outStart) parts.push(buf.subarray(outStart, start));
    if (parts.length === 0) return EMPTY;
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }

  /** What is left at the end of the stream (an unterminated event is forwarded as it is). */
  flush(): Buffer | undefined {
    const p = this.pending;
    this.pending = undefined;
    return p;
  }
}

const EMPTY = Buffer.alloc(0);
const CHOICES_EMPTY = Buffer.from('"choices":[]');
const USAGE_KEY = Buffer.from('"usage"');

function isUsageEvent(buf: Buffer, start: number, end: number): boolean {
  const ev = buf.subarray(start, end);
  return ev.indexOf(USAGE_KEY) !== -1 && ev.indexOf(CHOICES_EMPTY) !== -1;
}

/** The last `usage` object in `bytes` (engines put it at the end of a response or stream). */
export function parseUsage(bytes: Buffer): Usage | undefined {
  const at = bytes.lastIndexOf(USAGE_KEY);
  if (at === -1) return undefined;
  const text = bytes.toString('latin1', at, Math.min(bytes.length, at + 600));
  const promptTokens = countAfter(text, '"prompt_tokens"');
  if (promptTokens === undefined) return undefined;
  return {
    promptTokens,
    completionTokens: countAfter(text, '"completion_tokens"') ?? 0,
    cachedTokens: countAfter(text, '"cached_tokens"') ?? 0,
  };
}

/** The non-negative integer after `key`, optional whitespace and a colon, or undefined. */
function countAfter(text: string, key: string): number | undefined {
  const k = text.indexOf(key);
  if (k === -1) return undefined;
  let i = k + key.length;
  while (i < text.length && isSpace(text.charCodeAt(i))) i++;
  if (text.charCodeAt(i) !== 58) return undefined; // ':'
  i++;
  while (i < text.length && isSpace(text.charCodeAt(i))) i++;
  let n = 0;
  let digits = 0;
  for (; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 48 || c > 57) break;
    n = n * 10 + (c - 48);
    digits++;
  }
  return digits === 0 || digits > 15 ? undefined : n;
}

function isSpace(c: number): boolean {
  return c === 32 || c === 9 || c === 10 || c === 13;
}
