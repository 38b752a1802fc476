/**
 * OpenAI-compatible HTTP layer of the simulated engine (plain `node:http`, no framework: dozens of
 * replicas must fit on a couple of cores).
 *
 * Endpoints:
 *
 * - `POST /v1/completions`, `POST /v1/chat/completions` — OpenAI-compatible generation (streaming
 *   or not); `model` must be the served model name. `usage.prompt_tokens_details.cached_tokens`
 *   is the number of prompt tokens served from the engine's prefix cache.
 * - `POST /v1/embeddings` — OpenAI-compatible embeddings: each input is a prefill-only request of
 *   the engine (so it queues and costs like one); the vector is a deterministic, L2-normalised
 *   feature hash of the tokens (`dimensions`, default 384; `encoding_format` float or base64).
 * - `GET /health` (200 `{"status":"ok"}`; hangs while a `hang` fault is on), `GET /v1/models`,
 *   `GET /metrics` (vLLM metric names).
 * - `GET /kv/events` — server-sent events, one per KV-cache event batch of the engine:
 *   `data: {"ts":…,"replica":n,"events":[{"type":"BlockStored",…}|{"type":"BlockRemoved",…}|
 *   {"type":"AllBlocksCleared"}]}`, and a `: keepalive` comment line every 15 s. The stream starts
 *   from "now": there is no snapshot of the blocks already cached, so a router must treat a fresh
 *   (or re-established) subscription as a cold cache. Any number of subscribers; a subscriber that
 *   does not read (more than 8 MiB buffered) is disconnected.
 * - `GET /telemetry/gpus` — simulated `nvidia-smi`-like telemetry of the replica's GPUs (see
 *   telemetry.ts).
 * - `GET /admin/faults`, `POST /admin/faults` — run-time fault injection (see faults.ts): the body
 *   is merged into the current fault spec (`null` removes a key, `{"clear": true}` resets). Admin
 *   endpoints have no authentication: they are meant for tests and operators, and the simulator
 *   binds to loopback by default.
 *
 * Request bodies are validated by hand and bad ones get OpenAI-shaped errors. Generation is
 * delegated to {@link EngineCore}; a client disconnect cancels it at once.
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import {
  EngineCore,
  type EngineOptions,
  type EngineRequest,
  type FinishEvent,
  type FinishReason,
} from './engine.js';
import { FaultController, type FaultSpec } from './faults.js';
import { SimMetrics } from './metrics.js';
import { GpuTelemetry } from './telemetry.js';
import { chatPromptText, tokenize, type ChatMessageText } from './tokenizer.js';

export type SimServerOptions = EngineOptions & {
  /** Name clients must send in `model` (default: the model profile name). */
  servedModelName?: string;
  /** Index of this replica in its fleet (telemetry GPU indices, KV event stream). Default 0. */
  replicaIndex?: number;
  /** Node GPU indices of this replica (telemetry reports these), one per TP rank. */
  gpuIndices?: readonly number[];
  /** Faults active from the start. */
  faults?: FaultSpec;
  /** Seed of the fault draws (errorRate, disconnect rate). Default: random. */
  seed?: number;
  /**
   * What a simulated crash does. Default: {@link SimServer.kill} (tear this server down abruptly).
   * A single-replica process passes a callback that logs and exits with status 1.
   */
  onCrash?: (server: SimServer, reason: string) => void;
  /** Interval of `: keepalive` lines on `/kv/events`, in ms. Default 15 000. */
  kvKeepaliveMs?: number;
};

export interface SimServer {
  /** Starts listening; resolves with the actual port (0 = ephemeral). Host defaults to 127.0.0.1. */
  listen(port: number, host?: string): Promise<number>;
  /** Stops accepting, aborts in-flight generations, closes all connections. */
  close(): Promise<void>;
  /**
   * Tears the server down abruptly, as if its process had died: every socket is destroyed
   * (no answers, no [DONE]), the port is closed and the engine stops. Idempotent.
   */
  kill(): void;
  readonly engine: EngineCore;
  readonly metrics: SimMetrics;
  /** The model name clients use. */
  readonly servedModelName: string;
  /** The model profile simulated. */
  readonly profileName: string;
  readonly maxModelLen: number;
  readonly replicaIndex: number;
  readonly faults: FaultController;
  readonly telemetry: GpuTelemetry;
  /** Listening port, or null before listen / after close. */
  readonly port: number | null;
  /** Whether a simulated crash has happened (or kill() was called). */
  readonly crashed: boolean;
}

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
  ignoreEos: boolean;
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

  const ignoreEos = optBool(body, 'ignore_eos') ?? false;
  const temperature = optNumber(body, 'temperature', 0);
  optNumber(body, 'top_p', 0, 1);
  const seed = optInt(body, 'seed');
  const user = body.user;
  if (user !== undefined && user !== null && typeof user !== 'string')
    throw badRequest(`'user' must be a string`, 'user');

  return { model, maxTokens, stream, includeUsage, stop, seed, temperature, ignoreEos };
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

interface EmbeddingsRequest {
  inputs: number[][];
  dimensions: number;
  encoding: 'float' | 'base64';
}

export const DEFAULT_EMBEDDING_DIMENSIONS = 384;

function parseEmbeddings(body: Json, servedModel: string): EmbeddingsRequest {
  const model = body.model ?? servedModel;
  if (typeof model !== 'string') throw badRequest(`'model' must be a string`, 'model');
  if (model !== servedModel)
    throw new ApiError(404, `The model \`${model}\` does not exist.`, 'model', 'model_not_found');
  const input = body.input;
  let inputs: number[][];
  const isIds = (v: unknown): v is number[] =>
    Array.isArray(v) && v.every((x) => Number.isInteger(x) && (x as number) >= 0);
  if (typeof input === 'string') inputs = [tokenize(input)];
  else if (Array.isArray(input) && input.length > 0 && input.every((x) => typeof x === 'string'))
    inputs = input.map((x) => tokenize(x));
  else if (isIds(input) && input.length > 0) inputs = [input];
  else if (Array.isArray(input) && input.length > 0 && input.every(isIds)) inputs = input;
  else
    throw badRequest(
      "'input' must be a string, an array of strings, or token ids (an array or arrays of integers)",
      'input',
    );
  if (inputs.length > 2048) throw badRequest("'input' may hold at most 2048 items", 'input');
  if (inputs.some((ids) => ids.length === 0))
    throw badRequest("'input' items must not be empty", 'input');
  const dimensions = optInt(body, 'dimensions', 1) ?? DEFAULT_EMBEDDING_DIMENSIONS;
  if (dimensions > 4096) throw badRequest("'dimensions' must be at most 4096", 'dimensions');
  const enc = body.encoding_format ?? 'float';
  if (enc !== 'float' && enc !== 'base64')
    throw badRequest("'encoding_format' must be 'float' or 'base64'", 'encoding_format');
  return { inputs, dimensions, encoding: enc };
}

/**
 * A deterministic embedding: each token adds ±1 to 4 hashed coordinates (feature hashing), then
 * the vector is L2-normalised. Texts sharing tokens get similar vectors.
 */
export function embedTokens(ids: readonly number[], dimensions: number): Float32Array {
  const v = new Float32Array(dimensions);
  for (const id of ids) {
    let h = (Math.imul(id + 1, 0x9e3779b1) ^ 0x85ebca6b) >>> 0;
    for (let k = 0; k < 4; k++) {
      h ^= h >>> 16;
      h = Math.imul(h, 0x7feb352d) >>> 0;
      h ^= h >>> 15;
      v[h % dimensions]! += h & 0x80000000 ? -1 : 1;
    }
  }
  let norm = 0;
  for (const x of v) norm += x * x;
  norm = Math.sqrt(norm) || 1;
  for (let i = 0; i < v.length; i++) v[i] = v[i]! / norm;
  return v;
}

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
// Engine facts (the parts of the engine's resolved configuration the server reports)

interface EngineFacts {
  profileName: string;
  gpuType: string;
  tp: number;
  maxModelLen: number;
  /** Memory of one GPU, bytes. */
  gpuMemoryBytes: number;
  /** Bytes reserved on each GPU: weights shard + KV-cache shard. */
  usedBytesPerGpu: () => number;
}

function engineFacts(engine: EngineCore): EngineFacts {
  const p = engine.profile;
  // What vLLM reserves at start and nvidia-smi then shows: weights, the activation / runtime
  // reserve and every KV block, each split evenly over the tp ranks.
  const reserved =
    p.weightBytes + p.activationBytes + p.numGpuBlocks * p.blockSize * p.kvBytesPerToken;
  const perGpu = reserved / p.tp;
  return {
    profileName: engine.options.model,
    gpuType: engine.options.gpu,
    tp: p.tp,
    maxModelLen: engine.options.maxModelLen,
    gpuMemoryBytes: p.gpu.memoryBytes,
    usedBytesPerGpu: () => perGpu,
  };
}

// ---------------------------------------------------------------------------------------------
// Server

/** A subscriber that lets more than this much pile up on `/kv/events` is disconnected. */
const KV_EVENTS_MAX_BUFFER = 8 * 1024 * 1024;

export function createSimServer(options: SimServerOptions = {}): SimServer {
  const replicaIndex = options.replicaIndex ?? 0;
  if (!Number.isInteger(replicaIndex) || replicaIndex < 0)
    throw new RangeError('createSimServer: replicaIndex must be a non-negative integer');
  const kvKeepaliveMs = options.kvKeepaliveMs ?? 15_000;

  const engine = new EngineCore(options);
  const facts = engineFacts(engine);
  const servedModelName = options.servedModelName ?? facts.profileName;
  if (typeof servedModelName !== 'string' || servedModelName.length === 0)
    throw new TypeError('createSimServer: servedModelName must be a non-empty string');
  const maxModelLen = facts.maxModelLen;
  const model = servedModelName;

  const faults = new FaultController({
    ...(options.faults ? { spec: options.faults } : {}),
    ...(options.seed !== undefined ? { seed: options.seed } : {}),
    onSlowFactor: (f) => engine.setSlowFactor(f),
  });
  if (faults.slowFactor !== 1) engine.setSlowFactor(faults.slowFactor);
  const telemetry = new GpuTelemetry({
    replicaIndex,
    tp: facts.tp,
    ...(options.gpuIndices ? { gpuIndices: options.gpuIndices } : {}),
    gpuType: facts.gpuType,
    memoryTotalBytes: facts.gpuMemoryBytes,
    memoryUsedBytesPerGpu: facts.usedBytesPerGpu,
    busy: () => engine.running > 0,
    faults,
    uuidKey: servedModelName,
  });
  const metrics = new SimMetrics({ model, engine, engineIndex: replicaIndex });
  const createdAt = Math.floor(Date.now() / 1000);
  let closing = false;
  let crashed = false;
  let port: number | null = null;
  const sockets = new Set<Socket>();

  const server = http.createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      console.error('sim server: unhandled error', err);
      if (!res.headersSent)
        sendError(res, new ApiError(500, 'Internal server error', null, null, 'server_error'));
      else res.destroy();
    });
  });
  server.on('connection', (socket) => {
    if (crashed) {
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  server.on('clientError', (_err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
    else socket.destroy();
  });

  const self: SimServer = {
    engine,
    metrics,
    servedModelName,
    profileName: facts.profileName,
    maxModelLen,
    replicaIndex,
    faults,
    telemetry,
    get port() {
      return port;
    },
    get crashed() {
      return crashed;
    },
    listen(p: number, host = '127.0.0.1'): Promise<number> {
      if (crashed || closing) return Promise.reject(new Error('sim server is closed'));
      return new Promise((resolve, reject) => {
        const onError = (err: Error) => reject(err);
        server.once('error', onError);
        server.listen(p, host, () => {
          server.off('error', onError);
          port = (server.address() as AddressInfo).port;
          telemetry.start();
          resolve(port);
        });
      });
    },
    close(): Promise<void> {
      closing = true;
      telemetry.stop();
      engine.abortAll();
      return new Promise((resolve) => {
        const done = () => {
          metrics.detach();
          engine.close();
          port = null;
          resolve();
        };
        if (server.listening) server.close(() => done());
        else done();
        server.closeAllConnections();
        for (const s of sockets) s.destroy();
      });
    },
    kill(): void {
      if (crashed) return;
      crashed = true;
      closing = true;
      telemetry.stop();
      for (const s of sockets) s.destroy();
      sockets.clear();
      if (server.listening) server.close();
      server.closeAllConnections();
      engine.abortAll();
      metrics.detach();
      engine.close();
      port = null;
    },
  };

  const onCrash = options.onCrash ?? ((srv: SimServer) => srv.kill());
  let crashTriggered = false;
  function crash(reason: string): void {
    if (crashTriggered || crashed) return;
    crashTriggered = true;
    onCrash(self, reason);
  }

  /** Accepts a request and never answers it (a hung engine); the socket stays open. */
  function park(req: http.IncomingMessage): void {
    req.resume();
  }

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
    if (!route.includes(method)) {
      req.resume();
      sendError(
        res,
        new ApiError(405, `Method not allowed: ${method} ${path}`, null, 'method_not_allowed'),
        { allow: route.join(', ') },
      );
      return;
    }

    switch (path) {
      case '/health':
        if (faults.hung) {
          park(req);
          return;
        }
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
              root: facts.profileName,
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
      case '/kv/events':
        handleKvEvents(req, res);
        return;
      case '/telemetry/gpus':
        sendJson(res, 200, telemetry.snapshot());
        return;
      case '/admin/faults':
        if (method === 'GET') sendJson(res, 200, faultState());
        else await handleFaultPost(req, res);
        return;
      case '/v1/embeddings':
        await handleEmbeddings(req, res);
        return;
      default:
        await handleGenerate(req, res, path === '/v1/chat/completions' ? 'chat' : 'completion');
    }
  }

  function faultState() {
    return {
      replica: replicaIndex,
      seed: faults.seed,
      faults: faults.spec,
      slow_factor: faults.slowFactor,
      requests_since_crash_set: faults.requestsSinceCrashSet,
      xid_events: faults.xidEvents,
    };
  }

  async function handleFaultPost(
    req: http.IncomingMessage,
    res: http.ServerResponse,
  ): Promise<void> {
    let raw: Buffer;
    try {
      raw = await readBody(req);
    } catch {
      res.destroy();
      return;
    }
    let body: unknown;
    try {
      body = raw.length === 0 ? {} : JSON.parse(raw.toString('utf8'));
    } catch {
      sendError(res, badRequest('Request body is not valid JSON', null));
      return;
    }
    try {
      faults.apply(body);
    } catch (err) {
      sendError(res, badRequest(err instanceof Error ? err.message : String(err), null));
      return;
    }
    if (faults.spec.crash === 'now') {
      // Answer the admin call first, then die.
      res.once('finish', () => setImmediate(() => crash('fault: crash now')));
      res.once('close', () => setImmediate(() => crash('fault: crash now')));
    }
    sendJson(res, 200, faultState());
  }

  function handleKvEvents(req: http.IncomingMessage, res: http.ServerResponse): void {
    req.resume();
    res.writeHead(200, {
      'content-type': 'text/event-stream',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
    });
    // A first comment, so clients see the stream open; events start from now (no snapshot).
    res.write(`: kv events of replica ${replicaIndex} from now on\n\n`);
    const drop = () => {
      if (!res.destroyed) res.destroy();
    };
    const unsubscribe = engine.onKvEvent((batch) => {
      if (res.writableEnded || res.destroyed) return;
      if (res.writableLength > KV_EVENTS_MAX_BUFFER) {
        drop();
        return;
      }
      res.write(
        `data: ${JSON.stringify({ ts: batch.ts, replica: replicaIndex, events: batch.events })}\n\n`,
      );
    });
    const keepalive = setInterval(() => {
      if (!res.writableEnded && !res.destroyed) res.write(': keepalive\n\n');
    }, kvKeepaliveMs);
    keepalive.unref();
    res.once('close', () => {
      clearInterval(keepalive);
      unsubscribe();
    });
  }

  /**
   * A work request arrives: the crash and hang faults first, then its body. Undefined when it was
   * answered (or parked) already.
   */
  async function arrive(
    req: http.IncomingMessage,
    res: http.ServerResponse,
  ): Promise<Buffer | undefined> {
    const decision = faults.onArrival();
    if (decision === 'crash') {
      park(req);
      crash('fault: crash after requests');
      return undefined;
    }
    if (decision === 'hang') {
      park(req);
      return undefined;
    }
    try {
      const raw = await readBody(req);
      return res.destroyed ? undefined : raw;
    } catch (err) {
      if (err instanceof BodyTooLarge) {
        sendError(
          res,
          new ApiError(413, `Request body exceeds ${MAX_BODY_BYTES} bytes`, null, 'body_too_large'),
          { connection: 'close' },
        );
      } else res.destroy();
      return undefined;
    }
  }

  /** A valid request is refused while shutting down, or by the errorRate fault (HTTP 500). */
  function refuse(res: http.ServerResponse): boolean {
    if (closing) {
      sendError(res, new ApiError(503, 'Server is shutting down', null, null, 'server_error'));
      return true;
    }
    if (faults.shouldError()) {
      sendError(
        res,
        new ApiError(
          500,
          'Simulated engine failure (fault injection: errorRate)',
          null,
          'simulated_fault',
          'server_error',
        ),
      );
      return true;
    }
    return false;
  }

  async function handleEmbeddings(
    req: http.IncomingMessage,
    res: http.ServerResponse,
  ): Promise<void> {
    const raw = await arrive(req, res);
    if (raw === undefined) return;
    let parsed: EmbeddingsRequest;
    try {
      let body: unknown;
      try {
        body = JSON.parse(raw.toString('utf8'));
      } catch {
        throw badRequest('Request body is not valid JSON', null);
      }
      if (!isObject(body)) throw badRequest('Request body must be a JSON object', null);
      parsed = parseEmbeddings(body, model);
      for (const ids of parsed.inputs) {
        if (ids.length > maxModelLen)
          throw badRequest(
            `This model's maximum context length is ${maxModelLen} tokens. However, an input has ${ids.length} tokens.`,
            'input',
          );
      }
    } catch (err) {
      if (err instanceof ApiError) {
        sendError(res, err);
        return;
      }
      throw err;
    }
    if (refuse(res)) return;
    const headerId = req.headers['x-request-id'];
    const base = typeof headerId === 'string' && headerId.length > 0 ? headerId : 'emb-' + hexId();
    const handles = parsed.inputs.map((ids, i) =>
      engine.submit({
        id: `${base}-${i}`,
        promptTokens: ids.length,
        promptTokenIds: ids,
        maxTokens: 0,
      }),
    );
    res.on('close', () => {
      if (!res.writableFinished) for (const h of handles) h.cancel();
    });
    const finished = await Promise.all(handles.map((h) => h.done));
    if (finished.some((f) => f.finishReason === 'abort')) {
      if (!res.writableEnded) res.destroy();
      return;
    }
    const promptTokens = parsed.inputs.reduce((n, ids) => n + ids.length, 0);
    sendJson(
      res,
      200,
      {
        object: 'list',
        model,
        data: parsed.inputs.map((ids, index) => {
          const v = embedTokens(ids, parsed.dimensions);
          return {
            object: 'embedding',
            index,
            embedding:
              parsed.encoding === 'base64' ? Buffer.from(v.buffer).toString('base64') : [...v],
          };
        }),
        usage: { prompt_tokens: promptTokens, total_tokens: promptTokens },
      },
      typeof headerId === 'string' ? { 'x-request-id': headerId } : {},
    );
  }

  async function handleGenerate(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    kind: 'completion' | 'chat',
  ): Promise<void> {
    const raw = await arrive(req, res);
    if (raw === undefined) return;

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
    if (refuse(res)) return;
    const dropAfter = faults.disconnectAfter();

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
      prompt_tokens_details: { cached_tokens: ev.cachedTokens },
    });

    const common: EngineRequest = {
      id: typeof headerId === 'string' && headerId.length > 0 ? headerId : id,
      promptTokens: promptIds.length,
      promptTokenIds: promptIds,
      maxTokens,
      stop: parsed.stop,
      ignoreEos: parsed.ignoreEos,
      ...(seed !== undefined ? { seed } : {}),
    };

    /** The disconnect fault: drop the connection when token `dropAfter + 1` is generated. */
    const dropNow = (index: number): boolean => {
      if (dropAfter === null || index < dropAfter) return false;
      res.socket?.destroy();
      res.destroy();
      return true;
    };

    if (!parsed.stream) {
      const handle = engine.submit(common, {
        onToken: (ev) => {
          if (dropNow(ev.index)) handle.cancel();
        },
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

    // Hot path (one event per token): the JSON of a content chunk around its delta, built once;
    // the same bytes as JSON.stringify(chunk(delta, null)).
    const tokenHead = `data: {"id":${JSON.stringify(id)},"object":"${object}","created":${created},"model":${JSON.stringify(model)},"choices":[{"index":0,${kind === 'chat' ? '"delta":{"content":' : '"text":'}`;
    const TOKEN_TAIL =
      kind === 'chat'
        ? '},"logprobs":null,"finish_reason":null}]}\n\n'
        : ',"logprobs":null,"finish_reason":null}]}\n\n';

    const handle = engine.submit(common, {
      onToken: (ev) => {
        if (dropNow(ev.index)) {
          handle.cancel();
          return;
        }
        // The assistant role is announced with the first token (as vLLM does, after prefill).
        if (ev.index === 0 && kind === 'chat') write(chunk('', null, true));
        if (ev.delta.length > 0 && !res.writableEnded && !res.destroyed)
          res.write(tokenHead + JSON.stringify(ev.delta) + TOKEN_TAIL);
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

  return self;
}

const ROUTES: Record<string, readonly string[] | undefined> = {
  '/health': ['GET'],
  '/v1/models': ['GET'],
  '/metrics': ['GET'],
  '/v1/completions': ['POST'],
  '/v1/chat/completions': ['POST'],
  '/v1/embeddings': ['POST'],
  '/kv/events': ['GET'],
  '/telemetry/gpus': ['GET'],
  '/admin/faults': ['GET', 'POST'],
};
