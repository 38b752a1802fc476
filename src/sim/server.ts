/**
 * OpenAI-compatible HTTP layer of the simulated engine (plain `node:http`, no framework: dozens of
 * replicas must fit on a couple of cores).
 *
 * Endpoints: GET /health, GET /v1/models, GET /metrics, POST /v1/completions,
 * POST /v1/chat/completions. Request bodies are validated by hand and bad ones get OpenAI-shaped
 * errors. Generation is delegated to {@link EngineCore}; a client disconnect cancels it at once.
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { EngineCore, type EngineOptions, type FinishEvent, type FinishReason } from './engine.js';
import { SimMetrics } from './metrics.js';
import { chatPromptText, tokenize, type ChatMessageText } from './tokenizer.js';

export interface SimServerOptions extends EngineOptions {
  /** Served model name (the only one accepted in `model`). */
  model: string;
  /** Maximum context length (prompt + completion tokens). Default 8192. */
  maxModelLen?: number;
}

export interface SimServer {
  /** Starts listening; resolves with the actual port (0 = ephemeral). Host defaults to 127.0.0.1. */
  listen(port: number, host?: string): Promise<number>;
  /** Stops accepting, aborts in-flight generations, closes all connections. */
  close(): Promise<void>;
  readonly engine: EngineCore;
  readonly metrics: SimMetrics;
  readonly model: string;
  readonly maxModelLen: number;
}

export const DEFAULT_MAX_MODEL_LEN = 8192;
export const DEFAULT_MAX_TOKENS = 16;
export const MAX_BODY_BYTES = 16 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Errors

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    readonly type = 'invalid_request_error',
  ) {
    super(message);
  }
}

function badRequest(message: string, param: string | null): ApiError {
  return new ApiError(400, message, param);
}

function errorBody(e: ApiError): string {
  return JSON.stringify({
    error: { message: e.message, type: e.type, param: e.param, code: e.code },
  });
}

// ---------------------------------------------------------------------------------------------
// Validation

type Json = Record<string, unknown>;

interface CommonParams {
  model: string;
  maxTokens: number | null;
  stream: boolean;
  includeUsage: boolean;
  stop: string[];
  seed: number | undefined;
  temperature: number | undefined;
}

interface ParsedRequest extends CommonParams {
  kind: 'completion' | 'chat';
  promptText: string;
  /** Prompt given directly as token ids (completions only). */
  promptIds?: number[];
}

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function optBool(body: Json, key: string): boolean | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw badRequest(`'${key}' must be a boolean`, key);
  return v;
}

function optNumber(body: Json, key: string, min?: number, max?: number): number | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v))
    throw badRequest(`'${key}' must be a number`, key);
  if (min !== undefined && v < min) throw badRequest(`'${key}' must be at least ${min}`, key);
  if (max !== undefined && v > max) throw badRequest(`'${key}' must be at most ${max}`, key);
  return v;
}

function optInt(body: Json, key: string, min?: number): number | undefined {
  const v = optNumber(body, key);
  if (v === undefined) return undefined;
  if (!Number.isInteger(v)) throw badRequest(`'${key}' must be an integer`, key);
  if (min !== undefined && v < min) throw badRequest(`'${key}' must be at least ${min}`, key);
  return v;
}

function parseCommon(body: Json, servedModel: string, kind: 'completion' | 'chat'): CommonParams {
  const model = body.model ?? servedModel;
  if (typeof model !== 'string') throw badRequest(`'model' must be a string`, 'model');
  if (model !== servedModel)
    throw new ApiError(404, `The model \`${model}\` does not exist.`, 'model', 'model_not_found');

  const n = optInt(body, 'n', 1);
  if (n !== undefined && n > 1) throw badRequest(`Only n=1 is supported (got n=${n})`, 'n');

  let maxTokens: number | null = null;
  const maxCompletion = kind === 'chat' ? optInt(body, 'max_completion_tokens', 1) : undefined;
  const max = optInt(body, 'max_tokens', 1);
  if (maxCompletion !== undefined) maxTokens = maxCompletion;
  else if (max !== undefined) maxTokens = max;

  const stream = optBool(body, 'stream') ?? false;
  let includeUsage = false;
  const so = body.stream_options;
  if (so !== undefined && so !== null) {
    if (!isObject(so)) throw badRequest(`'stream_options' must be an object`, 'stream_options');
    if (!stream)
      throw badRequest('Stream options can only be defined when `stream=True`.', 'stream_options');
    const iu = so.include_usage;
    if (iu !== undefined && iu !== null && typeof iu !== 'boolean')
      throw badRequest(`'stream_options.include_usage' must be a boolean`, 'stream_options');
    includeUsage = iu === true;
  }

  let stop: string[] = [];
  const s = body.stop;
  if (typeof s === 'string') stop = [s];
  else if (Array.isArray(s)) {
    if (!s.every((x): x is string => typeof x === 'string'))
      throw badRequest(`'stop' must be a string or an array of strings`, 'stop');
    stop = s;
  } else if (s !== undefined && s !== null)
    throw badRequest(`'stop' must be a string or an array of strings`, 'stop');
  stop = stop.filter((x) => x.length > 0);

  optBool(body, 'ignore_eos'); // accepted; without a real EOS token it changes nothing
  const temperature = optNumber(body, 'temperature', 0);
  optNumber(body, 'top_p', 0, 1);
  const seed = optInt(body, 'seed');
  const user = body.user;
  if (user !== undefined && user !== null && typeof user !== 'string')
    throw badRequest(`'user' must be a string`, 'user');

  return { model, maxTokens, stream, includeUsage, stop, seed, temperature };
}

function parseCompletion(body: Json, servedModel: string): ParsedRequest {
  const p = body.prompt;
  const common = parseCommon(body, servedModel, 'completion');
  if (typeof p === 'string') return { kind: 'completion', promptText: p, ...common };
  if (Array.isArray(p) && p.length > 0) {
    if (p.every((x) => typeof x === 'string')) {
      // Several prompts would mean several choices; with n=1 only, they are joined into one prompt.
      return { kind: 'completion', promptText: p.join(''), ...common };
    }
    if (p.every((x) => Number.isInteger(x) && (x as number) >= 0)) {
      // A prompt given as token ids.
      return { kind: 'completion', promptText: '', promptIds: p as number[], ...common };
    }
  }
  if (p === undefined || p === null) throw badRequest(`'prompt' is required`, 'prompt');
  throw badRequest(
    `'prompt' must be a string, a non-empty array of strings or an array of token ids`,
    'prompt',
  );
}

function messageContent(content: unknown, i: number): string {
  if (typeof content === 'string') return content;
  if (content === undefined || content === null) return '';
  if (Array.isArray(content)) {
    let out = '';
    for (const part of content) {
      if (!isObject(part) || typeof part.type !== 'string')
        throw badRequest(`'messages[${i}].content' has an invalid part`, 'messages');
      if (part.type === 'text') {
        if (typeof part.text !== 'string')
          throw badRequest(`'messages[${i}].content' text part needs 'text'`, 'messages');
        out += part.text;
      }
      // Non-text parts (images, audio) are accepted and ignored.
    }
    return out;
  }
  throw badRequest(`'messages[${i}].content' must be a string or an array of parts`, 'messages');
}

function parseChat(body: Json, servedModel: string): ParsedRequest {
  const msgs = body.messages;
  if (msgs === undefined || msgs === null) throw badRequest(`'messages' is required`, 'messages');
  if (!Array.isArray(msgs) || msgs.length === 0)
    throw badRequest(`'messages' must be a non-empty array`, 'messages');
  const messages: ChatMessageText[] = msgs.map((m: unknown, i) => {
    if (!isObject(m) || typeof m.role !== 'string')
      throw badRequest(`'messages[${i}]' must be an object with a string 'role'`, 'messages');
    return { role: m.role, content: messageContent(m.content, i) };
  });
  return {
    kind: 'chat',
    promptText: chatPromptText(messages),
    ...parseCommon(body, servedModel, 'chat'),
  };
}

// ---------------------------------------------------------------------------------------------
// HTTP helpers

function sendJson(
  res: http.ServerResponse,
  status: number,
  body: unknown,
  headers: http.OutgoingHttpHeaders = {},
): void {
  if (res.headersSent || res.destroyed) return;
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

function sendError(res: http.ServerResponse, e: ApiError, headers?: http.OutgoingHttpHeaders) {
  sendJson(res, e.status, errorBody(e), headers);
}

class BodyTooLarge extends Error {}

function readBody(req: http.IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > MAX_BODY_BYTES) {
      req.resume();
      reject(new BodyTooLarge());
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on('data', (chunk: Buffer) => {
      if (failed) return;
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        failed = true;
        chunks.length = 0;
        reject(new BodyTooLarge());
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (!failed) resolve(Buffer.concat(chunks));
    });
    req.on('error', (err) => {
      if (!failed) {
        failed = true;
        reject(err);
      }
    });
  });
}

function hexId(): string {
  return randomBytes(16).toString('hex');
}

// ---------------------------------------------------------------------------------------------
// Server

export function createSimServer(options: SimServerOptions): SimServer {
  const model = options.model;
  if (typeof model !== 'string' || model.length === 0)
    throw new TypeError('createSimServer: model must be a non-empty string');
  const maxModelLen = options.maxModelLen ?? DEFAULT_MAX_MODEL_LEN;
  if (!Number.isInteger(maxModelLen) || maxModelLen < 1)
    throw new RangeError('createSimServer: maxModelLen must be a positive integer');

  const engine = new EngineCore(options);
  const metrics = new SimMetrics({ model, engine });
  const createdAt = Math.floor(Date.now() / 1000);
  let closing = false;

  const server = http.createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      console.error('sim server: unhandled error', err);
      if (!res.headersSent)
        sendError(res, new ApiError(500, 'Internal server error', null, null, 'server_error'));
      else res.destroy();
    });
  });
  server.on('connection', (socket) => socket.setNoDelay(true));
  server.on('clientError', (_err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
    else socket.destroy();
  });

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    const method = req.method ?? 'GET';

    const route = ROUTES[path];
    if (route === undefined) {
      req.resume();
      sendError(res, new ApiError(404, `Not found: ${method} ${path}`, null, 'not_found'));
      return;
    }
    if (route !== method) {
      req.resume();
      sendError(
        res,
        new ApiError(405, `Method not allowed: ${method} ${path}`, null, 'method_not_allowed'),
        { allow: route },
      );
      return;
    }

    switch (path) {
      case '/health':
        sendJson(res, 200, { status: 'ok' });
        return;
      case '/v1/models':
        sendJson(res, 200, {
          object: 'list',
          data: [
            {
              id: model,
              object: 'model',
              created: createdAt,
              owned_by: 'inferplane-sim',
              max_model_len: maxModelLen,
            },
          ],
        });
        return;
      case '/metrics': {
        const text = await metrics.metrics();
        res.writeHead(200, {
          'content-type': metrics.contentType,
          'content-length': Buffer.byteLength(text),
        });
        res.end(text);
        return;
      }
      default:
        await handleGenerate(req, res, path === '/v1/chat/completions' ? 'chat' : 'completion');
    }
  }

  async function handleGenerate(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    kind: 'completion' | 'chat',
  ): Promise<void> {
    let raw: Buffer;
    try {
      raw = await readBody(req);
    } catch (err) {
      if (err instanceof BodyTooLarge) {
        sendError(
          res,
          new ApiError(413, `Request body exceeds ${MAX_BODY_BYTES} bytes`, null, 'body_too_large'),
          { connection: 'close' },
        );
      } else {
        res.destroy();
      }
      return;
    }
    if (res.destroyed) return;

    let parsed: ParsedRequest;
    let promptIds: number[];
    try {
      let body: unknown;
      try {
        body = JSON.parse(raw.toString('utf8'));
      } catch {
        throw badRequest('Request body is not valid JSON', null);
      }
      if (!isObject(body)) throw badRequest('Request body must be a JSON object', null);
      parsed = kind === 'chat' ? parseChat(body, model) : parseCompletion(body, model);
      promptIds = parsed.promptIds ?? tokenize(parsed.promptText);
      const promptParam = kind === 'chat' ? 'messages' : 'prompt';
      if (promptIds.length > maxModelLen)
        throw badRequest(
          `This model's maximum context length is ${maxModelLen} tokens. However, your request has ${promptIds.length} input tokens. Please reduce the length of the input messages.`,
          promptParam,
        );
      if (parsed.maxTokens !== null && promptIds.length + parsed.maxTokens > maxModelLen)
        throw badRequest(
          `This model's maximum context length is ${maxModelLen} tokens. However, you requested ${promptIds.length + parsed.maxTokens} tokens (${promptIds.length} in the messages, ${parsed.maxTokens} in the completion). Please reduce the length of the messages or completion.`,
          kind === 'chat' ? 'max_completion_tokens' : 'max_tokens',
        );
    } catch (err) {
      if (err instanceof ApiError) {
        sendError(res, err);
        return;
      }
      throw err;
    }
    if (closing) {
      sendError(res, new ApiError(503, 'Server is shutting down', null, null, 'server_error'));
      return;
    }

    const maxTokens = Math.min(
      parsed.maxTokens ?? DEFAULT_MAX_TOKENS,
      maxModelLen - promptIds.length,
    );
    const id = (kind === 'chat' ? 'chatcmpl-' : 'cmpl-') + hexId();
    const created = Math.floor(Date.now() / 1000);
    const seed =
      parsed.seed ?? (parsed.temperature === 0 ? undefined : randomBytes(4).readUInt32LE(0));
    const headerId = req.headers['x-request-id'];
    const extraHeaders: http.OutgoingHttpHeaders =
      typeof headerId === 'string' ? { 'x-request-id': headerId } : {};

    const usage = (ev: FinishEvent) => ({
      prompt_tokens: ev.promptTokens,
      completion_tokens: ev.completionTokens,
      total_tokens: ev.promptTokens + ev.completionTokens,
      prompt_tokens_details: { cached_tokens: 0 },
    });

    const common = {
      id: typeof headerId === 'string' && headerId.length > 0 ? headerId : id,
      promptTokens: promptIds.length,
      promptTokenIds: promptIds,
      maxTokens,
      stop: parsed.stop,
      ...(seed !== undefined ? { seed } : {}),
    };

    if (!parsed.stream) {
      const handle = engine.submit(common, {
        onFinish: (ev) => {
          if (ev.finishReason === 'abort') {
            if (!res.writableEnded) res.destroy();
            return;
          }
          const choice =
            kind === 'chat'
              ? {
                  index: 0,
                  message: { role: 'assistant', content: ev.text },
                  logprobs: null,
                  finish_reason: ev.finishReason,
                }
              : { index: 0, text: ev.text, logprobs: null, finish_reason: ev.finishReason };
          sendJson(
            res,
            200,
            {
              id,
              object: kind === 'chat' ? 'chat.completion' : 'text_completion',
              created,
              model,
              choices: [choice],
              usage: usage(ev),
            },
            extraHeaders,
          );
        },
      });
      res.on('close', () => {
        if (!res.writableFinished) handle.cancel();
      });
      return;
    }

    // Streaming (server-sent events).
    res.writeHead(200, {
      'content-type': 'text/event-stream',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      ...extraHeaders,
    });
    res.flushHeaders();
    const object = kind === 'chat' ? 'chat.completion.chunk' : 'text_completion';
    const write = (data: unknown) => {
      if (res.writableEnded || res.destroyed) return;
      res.write(`data: ${JSON.stringify(data)}\n\n`);
    };
    const chunk = (delta: string, finishReason: FinishReason | null, role = false) => {
      const choice =
        kind === 'chat'
          ? {
              index: 0,
              delta:
                finishReason !== null
                  ? {}
                  : role
                    ? { role: 'assistant', content: delta }
                    : { content: delta },
              logprobs: null,
              finish_reason: finishReason,
            }
          : { index: 0, text: delta, logprobs: null, finish_reason: finishReason };
      return { id, object, created, model, choices: [choice] };
    };

    const handle = engine.submit(common, {
      onToken: (ev) => {
        // The assistant role is announced with the first token (as vLLM does, after prefill).
        if (ev.index === 0 && kind === 'chat') write(chunk('', null, true));
        if (ev.delta.length > 0) write(chunk(ev.delta, null));
      },
      onFinish: (ev) => {
        if (ev.finishReason === 'abort') {
          if (!res.writableEnded) res.destroy();
          return;
        }
        if (ev.completionTokens === 0 && kind === 'chat') write(chunk('', null, true));
        write(chunk('', ev.finishReason));
        if (parsed.includeUsage)
          write({ id, object, created, model, choices: [], usage: usage(ev) });
        if (!res.writableEnded && !res.destroyed) res.end('data: [DONE]\n\n');
      },
    });
    res.on('close', () => {
      if (!res.writableFinished) handle.cancel();
    });
  }

  return {
    engine,
    metrics,
    model,
    maxModelLen,
    listen(port: number, host = '127.0.0.1'): Promise<number> {
      return new Promise((resolve, reject) => {
        const onError = (err: Error) => reject(err);
        server.once('error', onError);
        server.listen(port, host, () => {
          server.off('error', onError);
          resolve((server.address() as AddressInfo).port);
        });
      });
    },
    close(): Promise<void> {
      closing = true;
      engine.abortAll();
      return new Promise((resolve) => {
        const done = () => {
          metrics.detach();
          resolve();
        };
        if (server.listening) server.close(() => done());
        else done();
        server.closeAllConnections();
      });
    },
  };
}

const ROUTES: Record<string, string | undefined> = {
  '/health': 'GET',
  '/v1/models': 'GET',
  '/metrics': 'GET',
  '/v1/completions': 'POST',
  '/v1/chat/completions': 'POST',
};
