// Relaying an upstream response body to the client chunk by chunk (no buffering), watching it on
// the way: first byte (TTFT), gaps between chunks (ITL), the `usage` the engine reports at the end
// (token counters and the tokens/min correction), and — when the gateway asked a stream for its
// usage and the client did not — dropping that usage event.
import type { Readable } from 'node:stream';

export interface Usage {
  promptTokens: number;
  completionTokens: number;
  cachedTokens: number;
}

export interface RelayHooks {
  streaming: boolean;
  /** Drop the usage-only SSE event (`"choices":[]` with `"usage"`) after reading it. */
  stripUsage?: boolean;
  onFirstByte: () => void;
  /** Seconds between successive chunks of a stream (inter-token latency as relayed). */
  onGap?: (seconds: number) => void;
  onEnd: (outcome: 'ok' | 'error' | 'cancelled', usage: Usage | undefined) => void;
  onError: (e: unknown) => void;
}

/** How many trailing chunks are kept to find `usage` in (it is in the last event or two). */
const TAIL_CHUNKS = 3;

/**
 * Relays an upstream body chunk by chunk. If the client goes away, the upstream body is destroyed,
 * which closes the upstream connection and cancels the engine's work. If the upstream dies
 * mid-stream, an SSE client gets an error event and a clean end, never a hang.
 */
export function relay(body: Readable, hooks: RelayHooks): ReadableStream<Uint8Array> {
  const it: AsyncIterator<Buffer, undefined> = body[Symbol.asyncIterator]();
  let first = true;
  let last = 0;
  const tail: Buffer[] = [];
  const filter = hooks.streaming && hooks.stripUsage ? new UsageEventFilter() : undefined;
  let ended = false;
  const end = (outcome: 'ok' | 'error' | 'cancelled'): void => {
    if (ended) return;
    ended = true;
    const usage = filter?.usage ?? parseUsage(Buffer.concat(tail));
    hooks.onEnd(outcome, usage);
  };
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        try {
          for (;;) {
            const next = await it.next();
            if (next.done) {
              const rest = filter?.flush();
              if (rest && rest.length > 0) controller.enqueue(rest);
              end('ok');
              controller.close();
              return;
            }
            const chunk = next.value;
            if (hooks.streaming) {
              const now = performance.now();
              if (!first && hooks.onGap) hooks.onGap((now - last) / 1000);
              last = now;
            }
            if (first) {
              first = false;
              hooks.onFirstByte();
            }
            if (!filter) {
              tail.push(chunk);
              if (tail.length > TAIL_CHUNKS) tail.shift();
              controller.enqueue(chunk);
              return;
            }
            const out = filter.push(chunk);
            if (out.length > 0) {
              controller.enqueue(out);
              return;
            }
            // Everything was held back (a partial event, or the dropped usage event): read on.
          }
        } catch (e) {
          hooks.onError(e);
          end('error');
          if (hooks.streaming) {
            const event = {
              error: {
                message: 'The model replica failed while streaming; the response is incomplete.',
                type: 'api_error',
                param: null,
                code: 'IP_UPSTREAM_UNAVAILABLE',
              },
            };
            controller.enqueue(Buffer.from(`data: ${JSON.stringify(event)}\n\ndata: [DONE]\n\n`));
            controller.close();
          } else {
            controller.error(e);
          }
        }
      },
      cancel() {
        body.destroy();
        end('cancelled');
      },
    },
    { highWaterMark: 0 },
  );
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
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }

  /** What is left at the end of the stream (an unterminated event is forwarded as it is). */
  flush(): Buffer | undefined {
    const p = this.pending;
    this.pending = undefined;
    return p;
  }
}

const CHOICES_EMPTY = Buffer.from('"choices":[]');
const USAGE_KEY = Buffer.from('"usage"');

function isUsageEvent(buf: Buffer, start: number, end: number): boolean {
  const ev = buf.subarray(start, end);
  return ev.indexOf(USAGE_KEY) !== -1 && ev.indexOf(CHOICES_EMPTY) !== -1;
}

const PROMPT_RE = /"prompt_tokens"\s*:\s*(\d+)/;
const COMPLETION_RE = /"completion_tokens"\s*:\s*(\d+)/;
const CACHED_RE = /"cached_tokens"\s*:\s*(\d+)/;

/** The last `usage` object in `text` (engines put it at the end of a response or stream). */
export function parseUsage(bytes: Buffer): Usage | undefined {
  const at = bytes.lastIndexOf(USAGE_KEY);
  if (at === -1) return undefined;
  const text = bytes.toString('utf8', at, Math.min(bytes.length, at + 600));
  const p = PROMPT_RE.exec(text);
  if (!p) return undefined;
  const c = COMPLETION_RE.exec(text);
  const k = CACHED_RE.exec(text);
  return {
    promptTokens: Number(p[1]),
    completionTokens: c ? Number(c[1]) : 0,
    cachedTokens: k ? Number(k[1]) : 0,
  };
}
