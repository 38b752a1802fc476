// The gateway's upstream HTTP/1.1 client on raw sockets: pooled keep-alive connections per engine
// endpoint, one request per connection at a time, the request written in one call, the response
// framed by ./framing.ts and handed over as a callback body (no stream objects per request).
// Timeouts — connect, first byte (until the response head) and idle between body bytes — are
// deadlines checked by one sweep timer, not a timer per request.
import { performance } from 'node:perf_hooks';
import { Buffer } from 'node:buffer';
import { connect, type Socket } from 'node:net';
import {
  BodyDecoder,
  FramingError,
  connectionHas,
  contentLength,
  isChunked,
  parseHead,
  type Fields,
} from './framing.js';
import { sharedReads } from './reads.js';

export type UpstreamErrorKind =
  | 'connect'
  | 'connect_timeout'
  | 'reset'
  | 'headers_timeout'
  | 'idle_timeout'
  | 'protocol'
  | 'aborted';

export class UpstreamError extends Error {
  constructor(
    readonly kind: UpstreamErrorKind,
    message: string,
    /** Nothing of a response arrived: the engine may not have seen the request at all. */
    readonly beforeResponse: boolean,
    /** The system error code, when there is one (ECONNREFUSED, ECONNRESET...). */
    readonly code?: string,
  ) {
    super(message);
  }
}

/**
 * What cancels a request: an AbortSignal, or anything with its `aborted` flag and 'abort'
 * listeners (the raw front door's answer is one, without an AbortController per request).
 */
export interface Cancellation {
  readonly aborted: boolean;
  addEventListener(type: 'abort', listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: 'abort', listener: () => void): void;
}

export interface BodySink {
  data(chunk: Buffer): void;
  end(): void;
  error(e: UpstreamError): void;
}

export interface UpstreamClientOptions {
  connectTimeoutMs?: number;
  /** Until the response head arrives (queueing and prefill; the whole answer when not streamed). */
  headersTimeoutMs?: number;
  /** Between body bytes. */
  idleTimeoutMs?: number;
  /** Longest an idle connection is kept (the server's `Keep-Alive: timeout` hint lowers it). */
  keepAliveMs?: number;
  /** Idle connections kept per endpoint. */
  maxIdlePerOrigin?: number;
  /** Response heads larger than this are a protocol error. */
  maxHeadBytes?: number;
}

interface Origin {
  host: string;
  port: number;
  hostHeader: string;
  idle: Conn[];
}

const enum Phase {
  Head,
  Body,
}

/** A response body, read once through a sink; chunks that arrive before the sink are kept. */
export class UpstreamBody {
  private sink: BodySink | undefined;
  private held: Buffer[] | undefined;
  private ended = false;
  private failed: UpstreamError | undefined;
  /** @internal */ paused = false;

  constructor(private conn: Conn | undefined) {}

  read(sink: BodySink): void {
    this.sink = sink;
    if (this.held) {
      const held = this.held;
      this.held = undefined;
      for (const c of held) sink.data(c);
    }
    if (this.failed) sink.error(this.failed);
    else if (this.ended) sink.end();
  }

  /** Stops reading from the engine (backpressure); the idle timeout does not run meanwhile. */
  pause(): void {
    if (this.paused || !this.conn || this.complete) return;
    this.paused = true;
    this.conn.socket.pause();
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    if (this.conn) {
      this.conn.lastActivity = performance.now();
      this.conn.socket.resume();
    }
  }

  /** Abandons the body: the connection is closed (which cancels the engine's work). */
  destroy(): void {
    if (this.ended || this.failed) return;
    this.ended = true;
    const c = this.conn;
    this.conn = undefined;
    c?.destroy();
  }

  get complete(): boolean {
    return this.ended || this.failed !== undefined;
  }

  /** @internal */ deliver(chunk: Buffer): void {
    if (this.sink) this.sink.data(chunk);
    else (this.held ??= []).push(chunk);
  }

  /** @internal */ finish(): void {
    if (this.ended || this.failed) return;
    this.ended = true;
    this.conn = undefined;
    this.sink?.end();
  }

  /** @internal */ fail(e: UpstreamError): void {
    if (this.ended || this.failed) return;
    this.failed = e;
    this.conn = undefined;
    this.sink?.error(e);
  }
}

export interface UpstreamResponse {
  status: number;
  /** Lowercased names. */
  headers: Fields;
  body: UpstreamBody;
}

interface Exchange {
  resolve: (r: UpstreamResponse) => void;
  reject: (e: UpstreamError) => void;
  signal: Cancellation | undefined;
  onAbort: (() => void) | undefined;
  wire: string;
  /** Retries left on a fresh connection when a reused one turns out closed. */
  staleRetry: boolean;
  phase: Phase;
  deadline: number;
  body: UpstreamBody | undefined;
  decoder: BodyDecoder | undefined;
  keepAlive: boolean;
}

/**
 * The status code of an `HTTP/1.0` or `HTTP/1.1` status line (`HTTP/1.x ddd[ reason]`), or -1.
 * Without a regular expression: no match array per response.
 */
export function statusOf(line: string): number {
  if (line.length < 12 || !line.startsWith('HTTP/1.')) return -1;
  const minor = line.charCodeAt(7);
  if ((minor !== 48 && minor !== 49) || line.charCodeAt(8) !== 32) return -1;
  let status = 0;
  for (let i = 9; i < 12; i++) {
    const d = line.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return -1;
    status = status * 10 + d;
  }
  return line.length === 12 || line.charCodeAt(12) === 32 ? status : -1;
}

/** One connection to an endpoint. */
class Conn {
  readonly socket: Socket;
  connected = false;
  ex: Exchange | undefined;
  lastActivity = 0;
  /** When this idle connection expires (performance.now() ms). */
  idleUntil = 0;
  /** The server's `Keep-Alive: timeout` hint, less a second (ms); -1 without one. */
  keepAliveHintMs = -1;
  closed = false;
  /** Whether this connection had served an exchange before the current one. */
  usedBefore = false;
  private head: Buffer | undefined;

  constructor(
    readonly client: UpstreamClient,
    readonly origin: Origin,
  ) {
    // Reads land in one shared buffer and come straight to onData (no stream per read); what is
    // kept past the callback is copied out first.
    const s = connect({
      host: origin.host,
      port: origin.port,
      noDelay: true,
      onread: sharedReads((d) => this.onData(d)),
    });
    this.socket = s;
    s.on('connect', () => {
      this.connected = true;
      this.lastActivity = performance.now();
      if (this.ex) this.ex.deadline = this.lastActivity + this.client.headersTimeoutMs;
    });
    s.on('end', () => this.onClosed(undefined));
    s.on('error', (e: NodeJS.ErrnoException) => this.onClosed(e));
    s.on('close', () => this.onClosed(undefined));
  }

  start(ex: Exchange): void {
    this.ex = ex;
    this.head = undefined;
    const now = performance.now();
    this.lastActivity = now;
    ex.deadline =
      now + (this.connected ? this.client.headersTimeoutMs : this.client.connectTimeoutMs);
    this.client.busy.add(this);
    this.socket.write(ex.wire, 'utf8');
  }

  destroy(): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.destroy();
    this.client.forget(this);
  }

  private onData(d: Buffer): void {
    const ex = this.ex;
    if (!ex) {
      // Bytes nobody asked for: the connection is out of step.
      this.destroy();
      return;
    }
    this.lastActivity = performance.now();
    let buf = d;
    let at = 0;
    if (ex.phase === Phase.Head) {
      buf = this.head ? Buffer.concat([this.head, d]) : d;
      for (;;) {
        let head;
        try {
          head = parseHead(buf, this.client.maxHeadBytes);
        } catch (e) {
          this.failExchange(new UpstreamError('protocol', errText(e), true));
          return;
        }
        if (!head) {
          this.head = buf;
          return;
        }
        const line = head.line;
        const status = statusOf(line);
        if (status < 0) {
          this.failExchange(new UpstreamError('protocol', 'malformed status line', true));
          return;
        }
        const minor = line.charCodeAt(7) - 48;
        buf = buf.subarray(head.size);
        if (status >= 100 && status < 200) continue; // interim (100 Continue, 103): skip
        this.head = undefined;
        let framing: number | 'chunked' | 'close';
        try {
          if (status === 204 || status === 304) framing = 0;
          else if (isChunked(head)) framing = 'chunked';
          else framing = contentLength(head) ?? 'close';
        } catch (e) {
          this.failExchange(new UpstreamError('protocol', errText(e), true));
          return;
        }
        ex.keepAlive =
          framing !== 'close' &&
          (minor === 1 ? !connectionHas(head, 'close') : connectionHas(head, 'keep-alive'));
        const ka = head.headers.get('keep-alive');
        if (ka) {
          const t = /timeout=(\d+)/i.exec(ka);
          if (t) {
            // Leave a second's margin before the server's own timeout closes it.
            this.keepAliveHintMs = Math.max(0, Number(t[1]) * 1000 - 1000);
          }
        }
        const body = new UpstreamBody(this);
        ex.body = body;
        ex.decoder = new BodyDecoder(framing, (c) => body.deliver(c));
        ex.phase = Phase.Body;
        this.detachAbort(ex);
        ex.resolve({ status, headers: head.headers, body });
        break;
      }
    }
    const dec = ex.decoder!;
    try {
      const used = dec.push(buf, at);
      at += used;
    } catch (e) {
      ex.body!.fail(new UpstreamError('protocol', errText(e), false));
      this.ex = undefined;
      this.destroy();
      return;
    }
    if (dec.done) this.complete(ex, at < buf.length);
  }

  private complete(ex: Exchange, extra: boolean): void {
    this.ex = undefined;
    this.client.busy.delete(this);
    const body = ex.body!;
    // Paused by a slow reader as the last bytes arrived: the next exchange must read.
    if (body.paused) this.socket.resume();
    body.finish();
    if (!ex.keepAlive || extra || this.closed) this.destroy();
    else this.client.release(this);
  }

  private failExchange(e: UpstreamError): void {
    const ex = this.ex;
    this.ex = undefined;
    this.destroy();
    if (!ex) return;
    if (ex.phase === Phase.Head) {
      this.detachAbort(ex);
      ex.reject(e);
    } else ex.body!.fail(e);
  }

  /** @internal the sweep found this exchange past its deadline */
  expire(now: number): void {
    const ex = this.ex;
    if (!ex) return;
    if (ex.phase === Phase.Head) {
      if (now < ex.deadline) return;
      this.failExchange(
        this.connected
          ? new UpstreamError(
              'headers_timeout',
              `no response head within ${this.client.headersTimeoutMs} ms`,
              true,
            )
          : new UpstreamError(
              'connect_timeout',
              `connect to ${this.origin.hostHeader} timed out after ${this.client.connectTimeoutMs} ms`,
              true,
            ),
      );
      return;
    }
    if (ex.body!.paused) return;
    if (now - this.lastActivity >= this.client.idleTimeoutMs) {
      this.failExchange(
        new UpstreamError(
          'idle_timeout',
          `no response bytes for ${this.client.idleTimeoutMs} ms`,
          false,
        ),
      );
    }
  }

  private detachAbort(ex: Exchange): void {
    if (ex.onAbort) ex.signal!.removeEventListener('abort', ex.onAbort);
    ex.onAbort = undefined;
  }

  private onClosed(err: NodeJS.ErrnoException | undefined): void {
    const ex = this.ex;
    const wasClosed = this.closed;
    this.closed = true;
    if (!wasClosed) {
      this.socket.destroy();
      this.client.forget(this);
    }
    if (!ex) return;
    this.ex = undefined;
    if (ex.phase === Phase.Body) {
      if (ex.decoder!.endOfInput()) ex.body!.finish();
      else {
        ex.body!.fail(
          new UpstreamError(
            'reset',
            err
              ? `connection failed mid-response: ${err.message}`
              : 'connection closed mid-response',
            false,
            err?.code,
          ),
        );
      }
      return;
    }
    const nothingBack = this.head === undefined;
    if (this.connected && this.usedBefore && nothingBack && ex.staleRetry && !this.client.closed) {
      // A kept-alive connection the engine had closed: once more on a fresh one.
      ex.staleRetry = false;
      this.client.dispatch(this.origin, ex);
      return;
    }
    this.detachAbort(ex);
    const kind = !this.connected ? 'connect' : 'reset';
    ex.reject(
      new UpstreamError(
        kind,
        err
          ? `${kind === 'connect' ? 'connect' : 'connection'} failed: ${err.message}`
          : 'connection closed before a response',
        true,
        err?.code,
      ),
    );
  }
}

/** Pooled raw HTTP/1.1 connections to engine endpoints. */
export class UpstreamClient {
  readonly connectTimeoutMs: number;
  readonly headersTimeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly maxHeadBytes: number;
  private readonly keepAliveMs: number;
  private readonly maxIdle: number;
  private readonly origins = new Map<string, Origin>();
  /** @internal */ readonly busy = new Set<Conn>();
  private sweeper: NodeJS.Timeout | undefined;
  private closing = false;

  /** @internal whether close() was called */
  get closed(): boolean {
    return this.closing;
  }

  constructor(o: UpstreamClientOptions = {}) {
    this.connectTimeoutMs = o.connectTimeoutMs ?? 5000;
    this.headersTimeoutMs = o.headersTimeoutMs ?? 300_000;
    this.idleTimeoutMs = o.idleTimeoutMs ?? 120_000;
    this.keepAliveMs = o.keepAliveMs ?? 30_000;
    this.maxIdle = o.maxIdlePerOrigin ?? 256;
    this.maxHeadBytes = o.maxHeadBytes ?? 64 * 1024;
  }

  /**
   * Sends `POST`-style request `method path` to `baseUrl` (http://host:port) with extra header
   * lines (`name: value\r\n` each) and a body; resolves with the response head once it arrives.
   */
  request(
    baseUrl: string,
    method: string,
    path: string,
    headerLines: string,
    body: string,
    signal?: Cancellation,
  ): Promise<UpstreamResponse> {
    if (this.closing) {
      return Promise.reject(new UpstreamError('aborted', 'the client is closed', true));
    }
    if (signal?.aborted) {
      return Promise.reject(new UpstreamError('aborted', 'the request was aborted', true));
    }
    let origin: Origin;
    try {
      origin = this.originOf(baseUrl);
    } catch (e) {
      return Promise.reject(new UpstreamError('connect', errText(e), true));
    }
    const wire =
      `${method} ${path} HTTP/1.1\r\nhost: ${origin.hostHeader}\r\n${headerLines}` +
      `content-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
    return new Promise<UpstreamResponse>((resolve, reject) => {
      const ex: Exchange = {
        resolve,
        reject,
        signal,
        onAbort: undefined,
        wire,
        staleRetry: true,
        phase: Phase.Head,
        deadline: 0,
        body: undefined,
        decoder: undefined,
        keepAlive: true,
      };
      if (signal) {
        ex.onAbort = () => {
          ex.onAbort = undefined;
          for (const c of this.busy) {
            if (c.ex === ex) {
              c.ex = undefined;
              c.destroy();
            }
          }
          reject(new UpstreamError('aborted', 'the request was aborted', true));
        };
        signal.addEventListener('abort', ex.onAbort, { once: true });
      }
      this.dispatch(origin, ex);
    });
  }

  /** @internal */ dispatch(origin: Origin, ex: Exchange): void {
    let conn: Conn | undefined;
    const now = performance.now();
    while ((conn = origin.idle.pop())) {
      if (!conn.closed && now < conn.idleUntil) break;
      conn.destroy();
    }
    if (!conn) conn = new Conn(this, origin);
    else conn.usedBefore = true;
    conn.start(ex);
    this.sweeper ??= setInterval(() => this.sweep(), 50).unref();
  }

  /** @internal a finished exchange's connection goes back to the pool */
  release(conn: Conn): void {
    const hint = conn.keepAliveHintMs;
    conn.idleUntil =
      performance.now() + (hint >= 0 && hint < this.keepAliveMs ? hint : this.keepAliveMs);
    if (this.closing || conn.origin.idle.length >= this.maxIdle) {
      conn.destroy();
      return;
    }
    conn.origin.idle.push(conn);
  }

  /** @internal */ forget(conn: Conn): void {
    this.busy.delete(conn);
    const idle = conn.origin.idle;
    const i = idle.indexOf(conn);
    if (i >= 0) idle.splice(i, 1);
  }

  private sweep(): void {
    const now = performance.now();
    for (const c of this.busy) c.expire(now);
    let any = this.busy.size > 0;
    for (const o of this.origins.values()) {
      // Oldest first: drop the ones past their keep-alive.
      while (o.idle.length > 0 && o.idle[0]!.idleUntil <= now) o.idle.shift()!.destroy();
      if (o.idle.length > 0) any = true;
    }
    if (!any && this.sweeper) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  }

  private originOf(baseUrl: string): Origin {
    let o = this.origins.get(baseUrl);
    if (o) return o;
    const u = new URL(baseUrl);
    if (u.protocol !== 'http:') throw new Error(`unsupported upstream scheme: ${u.protocol}`);
    const port = u.port ? Number(u.port) : 80;
    const host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
    o = { host, port, hostHeader: u.host, idle: [] };
    this.origins.set(baseUrl, o);
    return o;
  }

  /** Closes every connection; requests in flight fail. */
  async close(): Promise<void> {
    this.closing = true;
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = undefined;
    for (const c of [...this.busy]) c.destroy();
    for (const o of this.origins.values()) for (const c of [...o.idle]) c.destroy();
    await Promise.resolve();
  }
}

function errText(e: unknown): string {
  return e instanceof FramingError ? `bad response from the engine: ${e.message}` : String(e);
}
