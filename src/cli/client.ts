// A thin client of the control-plane HTTP API (`/api/v1`), built on the global fetch.
import { CliError, type ErrorDetail } from './errors.js';

export const DEFAULT_URL = 'http://127.0.0.1:8080';
export const API_PREFIX = '/api/v1';
const DEFAULT_TIMEOUT_MS = 30_000;

/** An error answered by the server (non-2xx), or a failure to reach it at all. */
export class ApiError extends CliError {
  /** HTTP status; 0 when no response came back (unreachable, timeout). */
  readonly status: number;

  constructor(code: string, message: string, status: number, details: ErrorDetail[] = []) {
    super(code, message, details);
    this.name = 'ApiError';
    this.status = status;
  }
}

export interface ApiClientOptions {
  baseUrl: string;
  apiKey?: string;
  timeoutMs?: number;
}

/** Where the CLI connects: flags win over the environment, which wins over the default. */
export function resolveConnection(
  flags: { url?: string; apiKey?: string },
  env: NodeJS.ProcessEnv = process.env,
): { baseUrl: string; apiKey?: string } {
  const baseUrl = nonEmpty(flags.url) ?? nonEmpty(env.INFERPLANE_URL) ?? DEFAULT_URL;
  const apiKey = nonEmpty(flags.apiKey) ?? nonEmpty(env.INFERPLANE_API_KEY);
  return apiKey === undefined ? { baseUrl } : { baseUrl, apiKey };
}

function nonEmpty(s: string | undefined): string | undefined {
  const t = s?.trim();
  return t ? t : undefined;
}

export class ApiClient {
  readonly baseUrl: string;
  private readonly apiKey: string | undefined;
  private readonly timeoutMs: number;

  constructor(opts: ApiClientOptions) {
    this.baseUrl = opts.baseUrl.replace(/\/+$/, '');
    this.apiKey = opts.apiKey;
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  }

  /**
   * Sends a JSON request and returns the parsed JSON answer (undefined for 204).
   * `path` is either relative to `/api/v1` (`/deployments`) or absolute (`/api/v1/deployments`).
   */
  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.send(method, path, body, 'application/json');
    const text = await res.text();
    if (res.status === 204 || text.trim() === '') return undefined as T;
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new ApiError(
        'IP_CLI_BAD_RESPONSE',
        `${method} ${this.url(path)} answered ${res.status} with a body that is not JSON`,
        res.status,
      );
    }
  }

  /** GETs a text/plain resource (e.g. logs) and returns it as is. */
  async text(path: string): Promise<string> {
    const res = await this.send('GET', path, undefined, 'text/plain, application/json');
    return res.text();
  }

  /** Full URL of an API path. */
  url(path: string): string {
    const p = path.startsWith('/') ? path : `/${path}`;
    return this.baseUrl + (p.startsWith('/api/') ? p : API_PREFIX + p);
  }

  private async send(
    method: string,
    path: string,
    body: unknown,
    accept: string,
  ): Promise<Response> {
    const url = this.url(path);
    const headers: Record<string, string> = { accept };
    if (this.apiKey !== undefined) headers.authorization = `Bearer ${this.apiKey}`;
    if (body !== undefined) headers['content-type'] = 'application/json';

    let res: Response;
    try {
      res = await fetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (err) {
      throw this.networkError(err, url);
    }
    if (!res.ok) throw await this.httpError(res, method, url);
    return res;
  }

  private networkError(err: unknown, url: string): ApiError {
    if (err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError')) {
      return new ApiError(
        'IP_CLI_TIMEOUT',
        `no answer from ${url} within ${this.timeoutMs} ms; is the control plane healthy?`,
        0,
      );
    }
    if (err instanceof TypeError && /invalid url|failed to parse url/i.test(err.message)) {
      return new ApiError(
        'IP_CLI_BAD_URL',
        `invalid control-plane URL ${JSON.stringify(this.baseUrl)}; set INFERPLANE_URL or --url to e.g. ${DEFAULT_URL}`,
        0,
      );
    }
    const code = systemErrorCode(err);
    const why = code ? describeSystemError(code) : errorMessage(err);
    return new ApiError(
      'IP_CLI_UNREACHABLE',
      `cannot reach the Inferplane control plane at ${this.baseUrl} (${why}); ` +
        'start it with `inferplane up`, or point INFERPLANE_URL (or --url) at a running server',
      0,
    );
  }

  private async httpError(res: Response, method: string, url: string): Promise<ApiError> {
    const text = await res.text().catch(() => '');
    const parsed = parseErrorBody(text);
    let code = parsed?.code ?? `IP_HTTP_${res.status}`;
    let message =
      parsed?.message ??
      `${method} ${url} failed: HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ''}` +
        (text.trim() ? `: ${truncate(text.trim(), 200)}` : '');
    if (res.status === 401) {
      code = parsed?.code ?? 'IP_UNAUTHORIZED';
      message +=
        this.apiKey === undefined
          ? '; no API key is set: export INFERPLANE_API_KEY=<key> or pass --api-key'
          : '; the API key was rejected: check INFERPLANE_API_KEY (or --api-key)';
    }
    return new ApiError(code, message, res.status, parsed?.details ?? []);
  }
}

interface ParsedErrorBody {
  code?: string;
  message?: string;
  details: ErrorDetail[];
}

/** Reads `{"error":{"code","message","status","details":[{path,message}]}}`; undefined if not that shape. */
export function parseErrorBody(text: string): ParsedErrorBody | undefined {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!isRecord(data) || !isRecord(data.error)) return undefined;
  const e = data.error;
  const details: ErrorDetail[] = [];
  if (Array.isArray(e.details)) {
    for (const d of e.details as unknown[]) {
      if (isRecord(d) && typeof d.message === 'string') {
        details.push({ path: typeof d.path === 'string' ? d.path : '', message: d.message });
      }
    }
  }
  const out: ParsedErrorBody = { details };
  if (typeof e.code === 'string' && e.code) out.code = e.code;
  if (typeof e.message === 'string' && e.message) out.message = e.message;
  return out;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The errno-style code (`ECONNREFUSED`, ...) anywhere in a fetch error's cause chain. */
function systemErrorCode(err: unknown, depth = 0): string | undefined {
  if (depth > 5 || !isObject(err)) return undefined;
  if (
    'code' in err &&
    typeof err.code === 'string' &&
    /^(E[A-Z_]+|UND_ERR_[A-Z_]+)$/.test(err.code)
  )
    return err.code;
  if (err instanceof AggregateError) {
    for (const e of err.errors as unknown[]) {
      const c = systemErrorCode(e, depth + 1);
      if (c) return c;
    }
  }
  return 'cause' in err ? systemErrorCode(err.cause, depth + 1) : undefined;
}

function isObject(v: unknown): v is object {
  return typeof v === 'object' && v !== null;
}

function describeSystemError(code: string): string {
  switch (code) {
    case 'ECONNREFUSED':
      return 'connection refused';
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return 'host not found';
    case 'ECONNRESET':
      return 'connection reset';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return 'host unreachable';
    case 'ETIMEDOUT':
    case 'UND_ERR_CONNECT_TIMEOUT':
      return 'connection timed out';
    default:
      return code;
  }
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function truncate(s: string, n: number): string {
  const one = s.replace(/\s+/g, ' ');
  return one.length > n ? `${one.slice(0, n - 1)}…` : one;
}
