/**
 * OpenAI streaming client of the benchmark, over undici with a dedicated keep-alive Agent. It
 * records the send time, the response headers' arrival, every content chunk's arrival (one clock
 * read per network read, shared by the events it completes) and the server's `usage`.
 */
import { Agent, request, type Dispatcher } from 'undici';
import { nowNs } from './clock.js';
import { SseParser } from './sse.js';
import type { BenchmarkPhase, ErrorDetails, RequestRecord } from './types.js';

export type EndpointKind = 'chat' | 'completions';

export interface ChatMessage {
  role: string;
  content: string;
}

export interface ClientOptions {
  /** Base URL of the OpenAI API, with or without /v1 (e.g. http://127.0.0.1:8000). */
  baseUrl: string;
  endpoint: EndpointKind;
  model: string;
  apiKey?: string;
  /** Stream (default true). */
  stream?: boolean;
  /** Send `ignore_eos: true` so exactly max_tokens come back (vLLM/SGLang extension). Default true. */
  ignoreEos?: boolean;
  /** Extra body fields merged into every request. */
  extraBody?: Record<string, unknown>;
  /** Maximum connections to the target (default: unlimited). */
  maxConnections?: number;
  /** Per-request timeout in ms (default 10 min). */
  timeoutMs?: number;
}

export interface RequestInput {
  /** Chat messages (chat endpoint). */
  messages?: readonly ChatMessage[];
  /** Prompt (completions endpoint). */
  prompt?: string;
  maxTokens?: number;
  /** Prompt tokens by the client tokenizer (ISL fallback). */
  clientInputTokens: number;
  sessionNum: number;
  requestId: string;
  correlationId: string;
  conversationId: string;
  turnIndex: number;
  phase: BenchmarkPhase;
  intendedNs: number | null;
  /** Abort the request this many ms after sending (request cancellation). */
  cancelAfterMs?: number;
}

/** The URL of the endpoint for a base URL (appends /v1 unless the base already ends with it). */
export function endpointUrl(baseUrl: string, endpoint: EndpointKind): string {
  const base = baseUrl.replace(/\/+$/, '');
  const v1 = /\/v1$/.test(base) ? base : `${base}/v1`;
  return `${v1}/${endpoint === 'chat' ? 'chat/completions' : 'completions'}`;
}

interface Usage {
  prompt_tokens?: unknown;
  completion_tokens?: unknown;
  prompt_tokens_details?: { cached_tokens?: unknown } | null;
}

interface Choice {
  delta?: { content?: unknown } | null;
  message?: { content?: unknown } | null;
  text?: unknown;
}

interface ResponseJson {
  choices?: Choice[];
  usage?: Usage | null;
  error?: { message?: unknown; type?: unknown; code?: unknown } | null;
}

function str(v: unknown, dflt: string): string {
  return typeof v === 'string' ? v : typeof v === 'number' ? String(v) : dflt;
}

function num(v: unknown): number | null {
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

export class BenchClient {
  readonly url: string;
  readonly stream: boolean;
  private readonly agent: Agent;
  private readonly headers: Record<string, string>;
  private readonly timeoutMs: number;

  constructor(readonly options: ClientOptions) {
    this.url = endpointUrl(options.baseUrl, options.endpoint);
    this.stream = options.stream ?? true;
    this.timeoutMs = options.timeoutMs ?? 600_000;
    this.agent = new Agent({
      connections: options.maxConnections ?? null,
      pipelining: 1,
      keepAliveTimeout: 60_000,
      keepAliveMaxTimeout: 600_000,
      headersTimeout: this.timeoutMs,
      bodyTimeout: this.timeoutMs,
    });
    this.headers = { 'content-type': 'application/json' };
    if (options.apiKey) this.headers.authorization = `Bearer ${options.apiKey}`;
  }

  get dispatcher(): Dispatcher {
    return this.agent;
  }

  async close(): Promise<void> {
    await this.agent.close();
  }

  /** The JSON body of a request. */
  body(input: RequestInput): string {
    const o = this.options;
    const b: Record<string, unknown> = { model: o.model };
    if (o.endpoint === 'chat') b.messages = input.messages ?? [];
    else b.prompt = input.prompt ?? '';
    if (input.maxTokens !== undefined) {
      b[o.endpoint === 'chat' ? 'max_completion_tokens' : 'max_tokens'] = input.maxTokens;
      if (o.endpoint === 'chat') b.max_tokens = input.maxTokens;
    }
    if (this.stream) {
      b.stream = true;
      b.stream_options = { include_usage: true };
    }
    if ((o.ignoreEos ?? true) && input.maxTokens !== undefined) b.ignore_eos = true;
    if (o.extraBody) Object.assign(b, o.extraBody);
    return JSON.stringify(b);
  }

  /** Sends one request and records what happened; never throws. */
  async send(input: RequestInput): Promise<RequestRecord> {
    const body = this.body(input);
    const rec: RequestRecord = {
      sessionNum: input.sessionNum,
      requestId: input.requestId,
      correlationId: input.correlationId,
      conversationId: input.conversationId,
      turnIndex: input.turnIndex,
      phase: input.phase,
      intendedNs: input.intendedNs,
      startNs: 0,
      ackNs: null,
      endNs: 0,
      chunkNs: [],
      streaming: this.stream,
      usagePromptTokens: null,
      usageCompletionTokens: null,
      usageCachedTokens: null,
      clientInputTokens: input.clientInputTokens,
      outputText: '',
      cancelled: false,
      cancellationNs: null,
      error: null,
    };
    const ac = new AbortController();
    let cancelTimer: NodeJS.Timeout | undefined;
    const timeout = setTimeout(() => ac.abort(new Error('timeout')), this.timeoutMs);
    if (input.cancelAfterMs !== undefined) {
      cancelTimer = setTimeout(() => {
        rec.cancelled = true;
        rec.cancellationNs = nowNs();
        ac.abort(new Error('cancelled'));
      }, input.cancelAfterMs);
    }
    const headers = {
      ...this.headers,
      'x-request-id': input.requestId,
      'x-correlation-id': input.correlationId,
    };
    rec.startNs = nowNs();
    try {
      const res = await request(this.url, {
        method: 'POST',
        dispatcher: this.agent,
        headers,
        body,
        signal: ac.signal,
      });
      rec.ackNs = nowNs();
      const replica = res.headers['x-inferplane-replica'];
      if (typeof replica === 'string') rec.servedBy = replica;
      if (res.statusCode >= 400) {
        const text = await res.body.text();
        rec.endNs = nowNs();
        rec.error = httpError(res.statusCode, text);
      } else if (this.stream && isEventStream(res.headers['content-type'])) {
        await this.readStream(res.body, rec);
      } else {
        const text = await res.body.text();
        rec.endNs = nowNs();
        rec.streaming = false;
        this.readJson(text, rec);
      }
    } catch (err) {
      rec.endNs = nowNs();
      if (rec.cancelled) {
        const secs = ((rec.cancellationNs ?? rec.endNs) - rec.startNs) / 1e9;
        rec.error = {
          code: 499,
          type: 'RequestCancellationError',
          message: `Request was cancelled after ${secs.toFixed(3)} seconds`,
        };
      } else if (rec.error === null) {
        const e = err instanceof Error ? err : new Error(String(err));
        const cause = ac.signal.aborted
          ? 'TimeoutError'
          : e.name === 'Error'
            ? 'ConnectionError'
            : e.name;
        rec.error = {
          code: null,
          type: cause,
          message: ac.signal.aborted ? 'Request timed out' : e.message,
        };
      }
    } finally {
      clearTimeout(timeout);
      if (cancelTimer) clearTimeout(cancelTimer);
    }
    return rec;
  }

  private readJson(text: string, rec: RequestRecord): void {
    let j: ResponseJson;
    try {
      j = JSON.parse(text) as ResponseJson;
    } catch {
      rec.error = { code: null, type: 'InvalidResponse', message: 'response is not JSON' };
      return;
    }
    if (j.error) {
      rec.error = {
        code: null,
        type: str(j.error.type, 'ServerError'),
        message: str(j.error.message, ''),
      };
      return;
    }
    const c = j.choices?.[0];
    const content = c?.message?.content ?? c?.text;
    if (typeof content === 'string') rec.outputText = content;
    rec.chunkNs.push(rec.endNs);
    applyUsage(j.usage, rec);
  }

  private readStream(body: Dispatcher.ResponseData['body'], rec: RequestRecord): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let t = 0;
      const parser = new SseParser((data) => {
        if (data === '[DONE]') return;
        let j: ResponseJson;
        try {
          j = JSON.parse(data) as ResponseJson;
        } catch {
          return;
        }
        if (j.error) {
          rec.error ??= {
            code: num(j.error.code),
            type: str(j.error.type, 'ServerError'),
            message: str(j.error.message, ''),
          };
          return;
        }
        const c = j.choices?.[0];
        if (c !== undefined) {
          const content = c.delta ? c.delta.content : c.text;
          if (typeof content === 'string' && content.length > 0) {
            rec.chunkNs.push(t);
            rec.outputText += content;
          }
        }
        if (j.usage) applyUsage(j.usage, rec);
      });
      body.on('data', (b: Buffer) => {
        t = nowNs();
        parser.push(b);
      });
      body.on('end', () => {
        parser.end();
        rec.endNs = t === 0 ? nowNs() : t;
        resolve();
      });
      body.on('error', reject);
    });
  }
}

function isEventStream(ct: string | string[] | undefined): boolean {
  const v = Array.isArray(ct) ? ct[0] : ct;
  return v !== undefined && v.includes('text/event-stream');
}

function applyUsage(u: Usage | null | undefined, rec: RequestRecord): void {
  if (!u) return;
  const p = num(u.prompt_tokens);
  const c = num(u.completion_tokens);
  if (p !== null) rec.usagePromptTokens = p;
  if (c !== null) rec.usageCompletionTokens = c;
  const cached = num(u.prompt_tokens_details?.cached_tokens);
  if (cached !== null) rec.usageCachedTokens = cached;
}

/** ErrorDetails of an HTTP error answer (OpenAI-shaped body when possible). */
export function httpError(status: number, text: string): ErrorDetails {
  let message = text.slice(0, 500);
  let type = status >= 500 ? 'InternalServerError' : 'HTTPError';
  try {
    const j = JSON.parse(text) as ResponseJson;
    if (j.error && typeof j.error.message === 'string') message = j.error.message;
    if (j.error && typeof j.error.type === 'string') type = j.error.type;
  } catch {
    // not JSON: keep the text
  }
  return { code: status, type, message };
}
