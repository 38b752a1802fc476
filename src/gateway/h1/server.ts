// The gateway's front door on raw sockets. It serves the inference requests it fully understands
// itself — `POST <path> HTTP/1.1` with one Content-Length, no Transfer-Encoding, Expect or
// Upgrade, a well-formed head — and hands every other connection, at a request boundary and with
// the bytes it has read put back, to a node:http server (which answers everything else: the API,
// metrics, model listing, and any request this parser declines, including malformed ones with the
// right 4xx). The serving path thus costs a head parse and one write per answer, while node:http's
// complete parser still guards everything unusual.
import { performance } from 'node:perf_hooks';
import { Buffer } from 'node:buffer';
import type { Server as HttpServer } from 'node:http';
import { Socket, createServer, type AddressInfo, type Server } from 'node:net';
import {
  LAST_CHUNK,
  REASON,
  chunkFrame,
  connectionHas,
  contentLength,
  parseHead,
  type Fields,
  type Head,
} from './framing.js';
import { sharedReads } from './reads.js';

export interface H1Request {
  method: string;
  /** Path and query, as sent. */
  url: string;
  /** Path without the query. */
  path: string;
  /** Lowercased names. */
  headers: Fields;
  body: Buffer;
}

export interface H1ServerOptions {
  /** Whether the raw path serves `method path` (others go to the fallback). */
  accepts: (method: string, path: string) => boolean;
  /** Serves one accepted request; must finish `res` (answer, end or destroy) eventually. */
  handle: (req: H1Request, res: H1Response) => void;
  /** A node:http server (not listening) that gets every connection the raw path declines. */
  fallback: HttpServer;
  /** Bodies larger than this go to the fallback (which refuses them). */
  maxBodyBytes: number;
  maxHeadBytes?: number;
  /** A request's head and body must arrive within this (ms). Default 60 s. */
  headersTimeoutMs?: number;
  /** An idle kept-alive connection is closed after this (ms). Default 65 s. */
  keepAliveTimeoutMs?: number;
  /**
   * Take reads as 'data' events of stream sockets (node:net's default) rather than through
   * `onread` into one shared buffer (the default, where the listening handle allows it).
   */
  streamReads?: boolean;
}

/** The `date` field line (HTTP-date), recomputed at most once a second. */
let dateCache = '';
let dateAt = 0;
function dateLine(): string {
  const now = Date.now();
  if (now - dateAt >= 1000) {
    dateAt = now - (now % 1000);
    dateCache = `date: ${new Date(dateAt).toUTCString()}\r\n`;
  }
  return dateCache;
}

const HTTP11 = ' HTTP/1.1';

/**
 * `METHOD /target HTTP/1.1` → [method, target], or undefined for anything else (an upper-case
 * method, an origin-form target without whitespace or control characters). Without a regular
 * expression: no match array per request.
 */
function requestLine(line: string): [string, string] | undefined {
  const sp = line.indexOf(' ');
  const end = line.length - HTTP11.length;
  if (sp < 1 || end <= sp + 1 || !line.endsWith(HTTP11)) return undefined;
  for (let i = 0; i < sp; i++) {
    const c = line.charCodeAt(i);
    if (c < 65 || c > 90) return undefined; // A-Z
  }
  if (line.charCodeAt(sp + 1) !== 47) return undefined; // '/'
  for (let i = sp + 2; i < end; i++) {
    const c = line.charCodeAt(i);
    if (c <= 32 || c === 127 || c === 0xa0) return undefined;
  }
  return [line.slice(0, sp), line.slice(sp + 1, end)];
}

/**
 * The answer to one raw-path request. It is also the request's cancellation: `aborted` and
 * 'abort' listeners fire when the client goes away before the answer is complete.
 */
export class H1Response {
  headersSent = false;
  finished = false;
  /** The client went away before the answer was complete. */
  aborted = false;
  private onCloseCb: (() => void) | undefined;
  private abortListeners: (() => void)[] | undefined;
  private onDrainCb: (() => void) | undefined;

  constructor(
    private readonly conn: H1Conn,
    private readonly close: boolean,
  ) {}

  /** The client went away (or the connection failed) before the answer finished. */
  get destroyed(): boolean {
    return this.conn.socket.destroyed;
  }

  onClose(cb: () => void): void {
    this.onCloseCb = cb;
  }

  addEventListener(_type: 'abort', listener: () => void): void {
    (this.abortListeners ??= []).push(listener);
  }

  removeEventListener(_type: 'abort', listener: () => void): void {
    const l = this.abortListeners;
    if (!l) return;
    const i = l.indexOf(listener);
    if (i >= 0) l.splice(i, 1);
  }

  onDrain(cb: (() => void) | undefined): void {
    this.onDrainCb = cb;
  }

  /** A whole answer, in one write. */
  send(status: number, headers: Record<string, string>, body: Buffer | string): void {
    if (this.headersSent || this.destroyed) return;
    const len = typeof body === 'string' ? Buffer.byteLength(body) : body.length;
    const head = this.head(status, headers, `content-length: ${len}\r\n`);
    this.headersSent = true;
    const s = this.conn.socket;
    if (typeof body === 'string') s.write(head + body, 'utf8');
    else {
      // One buffer, one write (a corked pair costs a writev and its bookkeeping).
      const out = Buffer.allocUnsafe(head.length + body.length);
      out.write(head, 0, 'latin1');
      body.copy(out, head.length);
      s.write(out);
    }
    this.done();
  }

  /** Starts a chunked answer (a stream); its head goes out at once. */
  writeHead(status: number, headers: Record<string, string>): void {
    if (this.headersSent || this.destroyed) return;
    this.headersSent = true;
    this.conn.socket.write(this.head(status, headers, 'transfer-encoding: chunked\r\n'), 'latin1');
  }

  /** One chunk of a streamed answer; false when the client is not keeping up (wait for drain). */
  write(data: Buffer): boolean {
    if (this.finished || this.destroyed || data.length === 0) return !this.destroyed;
    const s = this.conn.socket;
    let ok = true;
    s.cork();
    for (const part of chunkFrame(data)) ok = s.write(part);
    s.uncork();
    return ok;
  }

  /** Ends a streamed answer (with a last chunk of data, if any). */
  end(last?: Buffer): void {
    if (this.finished || this.destroyed) return;
    if (last && last.length > 0) this.write(last);
    this.conn.socket.write(LAST_CHUNK);
    this.done();
  }

  /** Abandons the answer: the connection is closed (a truncated body, never a hang). */
  destroy(): void {
    this.finished = true;
    this.conn.socket.destroy();
  }

  /** @internal */ closed(): void {
    const cb = this.onCloseCb;
    this.onCloseCb = undefined;
    if (this.finished) return;
    this.aborted = true;
    cb?.();
    const l = this.abortListeners;
    this.abortListeners = undefined;
    if (l) for (const f of l) f();
  }

  /** @internal */ drained(): void {
    this.onDrainCb?.();
  }

  private head(status: number, headers: Record<string, string>, framing: string): string {
    let h = `HTTP/1.1 ${status} ${REASON[status] ?? 'Status'}\r\n`;
    for (const name in headers) h += `${name}: ${headers[name]}\r\n`;
    h += dateLine();
    h += this.close ? 'connection: close\r\n' : this.conn.server.keepAliveLines;
    return h + framing + '\r\n';
  }

  private done(): void {
    this.finished = true;
    this.conn.finished(this.close);
  }
}

/** One client connection while the raw path owns it. */
class H1Conn {
  private buf: Buffer | undefined;
  /**
   * While a request's body is on its way (its head parsed, `buf` holding what came with it): the
   * chunks read since and how many bytes the request has in all. They are joined once, when the
   * last one arrives — joining at every read copies a body of n chunks n times over (a 2.6 MB
   * body took ~0.2 s to take in).
   */
  private more: Buffer[] = [];
  private moreBytes = 0;
  private need = 0;
  private res: H1Response | undefined;
  private headStarted = 0;
  /** When the server's sweep times this connection out (performance.now() ms; 0: never). */
  deadline: number;
  /**
   * Whether reads reach `data`: false once the connection reads no more (after its last answer,
   * at its timeout) or is handed to node:http.
   */
  private reading = true;
  private handedOff = false;
  private readonly onData = (d: Buffer): void => {
    if (this.reading) this.data(d);
  };
  private readonly onClose = (): void => this.gone();
  private readonly onDrain = (): void => this.res?.drained();

  /**
   * @param viaOnread the socket's reads come to `read` (an `onread` socket), not as 'data' events
   */
  constructor(
    readonly socket: Socket,
    readonly server: H1Server,
    viaOnread: boolean,
  ) {
    socket.setNoDelay(true);
    if (!viaOnread) socket.on('data', this.onData);
    socket.on('close', this.onClose);
    socket.on('drain', this.onDrain);
    socket.on('error', () => undefined);
    this.deadline = performance.now() + server.keepAliveTimeoutMs;
  }

  /** @internal a read of an `onread` socket (see reads.ts) */
  read(d: Buffer): void {
    if (this.handedOff)
      this.socket.push(d); // node:http reads the stream (see handoff)
    else if (this.reading) this.data(d);
  }

  private data(d: Buffer): void {
    if (this.need > 0) {
      this.more.push(d);
      this.moreBytes += d.length;
      if (this.buf!.length + this.moreBytes < this.need) return;
      this.buf = Buffer.concat([this.buf!, ...this.more]);
      this.more = [];
      this.moreBytes = 0;
      this.need = 0;
      this.process();
      return;
    }
    this.buf = this.buf ? Buffer.concat([this.buf, d]) : d;
    if (this.res) {
      // Pipelined bytes while an answer is in progress: kept for after it (bounded).
      if (this.buf.length > this.server.maxHeadBytes + this.server.maxBodyBytes) {
        this.socket.destroy();
      }
      return;
    }
    this.process();
  }

  /** Serves what is buffered: at most one request (the next waits for this answer). */
  private process(): void {
    const buf = this.buf;
    if (!buf || buf.length === 0) return;
    if (this.headStarted === 0) {
      this.headStarted = performance.now();
      this.deadline = this.headStarted + this.server.headersTimeoutMs;
    }
    let head: Head | undefined;
    try {
      head = parseHead(buf, this.server.maxHeadBytes);
    } catch {
      this.handoff();
      return;
    }
    if (!head) return;
    const m = requestLine(head.line);
    const h = head.headers;
    if (
      !m ||
      h.get('transfer-encoding') !== undefined ||
      h.get('expect') !== undefined ||
      h.get('upgrade') !== undefined ||
      h.get('host') === undefined
    ) {
      this.handoff();
      return;
    }
    const [method, url] = m;
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    let len: number | undefined;
    try {
      len = contentLength(head);
    } catch {
      len = undefined; // invalid or repeated: node:http answers it
    }
    if (len === undefined || len > this.server.maxBodyBytes || !this.server.accepts(method, path)) {
      this.handoff();
      return;
    }
    const end = head.size + len;
    if (buf.length < end) {
      this.need = end; // the rest of the body is on its way (see `more`)
      return;
    }
    const body = buf.subarray(head.size, end);
    this.buf = end === buf.length ? undefined : buf.subarray(end);
    this.headStarted = 0;
    this.deadline = 0;
    const close = connectionHas(head, 'close');
    const res = new H1Response(this, close);
    this.res = res;
    this.server.handle({ method, url, path, headers: h, body }, res);
  }

  /** Between requests: no answer in progress and nothing of the next request read. */
  get idle(): boolean {
    return this.res === undefined && (this.buf === undefined || this.buf.length === 0);
  }

  /** @internal the current answer is complete */
  finished(close: boolean): void {
    this.res = undefined;
    if (close || this.server.closing) {
      // Nothing more is read (a request sent after `connection: close` gets no work done).
      this.reading = false;
      this.buf = undefined;
      this.socket.end();
      return;
    }
    this.deadline = performance.now() + this.server.keepAliveTimeoutMs;
    if (this.buf) this.process();
  }

  /** @internal past its deadline: a request that did not arrive in time, or an idle connection */
  timeout(): void {
    if (this.res) return;
    this.reading = false;
    if (this.buf && this.buf.length > 0) {
      // A request that did not arrive in time: say so, then close (whether or not it reads).
      this.buf = undefined;
      this.more = [];
      this.moreBytes = 0;
      this.need = 0;
      this.socket.end(
        'HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n',
      );
      setTimeout(() => this.socket.destroy(), 1000).unref();
      return;
    }
    this.socket.destroy();
  }

  private gone(): void {
    this.server.conns.delete(this);
    const res = this.res;
    this.res = undefined;
    res?.closed();
  }

  /** Gives the connection, and what was read of the current request, to node:http. */
  private handoff(): void {
    const s = this.socket;
    s.pause();
    this.reading = false;
    this.handedOff = true;
    s.off('data', this.onData);
    s.off('close', this.onClose);
    s.off('drain', this.onDrain);
    s.removeAllListeners('error');
    this.server.conns.delete(this);
    if (this.buf) s.unshift(this.buf);
    this.buf = undefined;
    this.server.fallback.emit('connection', s);
    s.resume();
  }
}

/** A listening front door: the raw path, with node:http behind it. */
export class H1Server {
  readonly net: Server;
  /** @internal */ readonly conns = new Set<H1Conn>();
  readonly fallback: HttpServer;
  readonly maxBodyBytes: number;
  readonly maxHeadBytes: number;
  readonly headersTimeoutMs: number;
  readonly keepAliveTimeoutMs: number;
  /** @internal the field lines of an answer that keeps its connection open */
  readonly keepAliveLines: string;
  readonly accepts: H1ServerOptions['accepts'];
  readonly handle: H1ServerOptions['handle'];
  private readonly streamReads: boolean;

  constructor(o: H1ServerOptions) {
    this.fallback = o.fallback;
    this.maxBodyBytes = o.maxBodyBytes;
    this.maxHeadBytes = o.maxHeadBytes ?? 64 * 1024;
    this.headersTimeoutMs = o.headersTimeoutMs ?? 60_000;
    this.keepAliveTimeoutMs = o.keepAliveTimeoutMs ?? 65_000;
    this.keepAliveLines = `connection: keep-alive\r\nkeep-alive: timeout=${Math.floor(this.keepAliveTimeoutMs / 1000)}\r\n`;
    this.accepts = o.accepts;
    this.handle = o.handle;
    this.streamReads = o.streamReads ?? false;
    this.fallback.keepAliveTimeout = this.keepAliveTimeoutMs;
    // It never listens itself, but tracks the connections it is handed (closeAllConnections,
    // header and request timeouts) once it has seen 'listening'.
    this.fallback.emit('listening');
    this.net = createServer((socket) => this.accept(socket, false));
  }

  private accept(socket: Socket, viaOnread: boolean): H1Conn {
    const c = new H1Conn(socket, this, viaOnread);
    this.conns.add(c);
    this.sweeper ??= setInterval(() => this.sweep(), 500).unref();
    return c;
  }

  /**
   * Makes accepted connections `onread` sockets: each read lands in one shared buffer and goes
   * straight to the connection's parser, where a stream socket allocates a buffer per read (a
   * backing store V8 frees on its own threads) and passes it through the stream's push and a
   * 'data' event. node:net offers `onread` to sockets it connects, not to those a server
   * accepts, so this takes the listening handle's accept callback and builds the socket itself
   * as node:net's would (what net.Server counts, to close once they are gone, included). Where
   * the handle is not what this expects, connections stay stream sockets.
   */
  private takeAccepts(): void {
    const net = this.net as Server & {
      _handle?: { onconnection?: unknown } | null;
      _connections: number;
    };
    const handle = net._handle;
    if (
      !handle ||
      typeof handle.onconnection !== 'function' ||
      typeof net._connections !== 'number'
    ) {
      return;
    }
    handle.onconnection = (err: number, clientHandle: unknown): void => {
      // An accept that failed (node:net would emit it as the server's error): nothing to serve.
      if (err || !clientHandle) return;
      const to: { conn?: H1Conn } = {};
      const socket = new Socket({
        handle: clientHandle,
        readable: true,
        writable: true,
        onread: sharedReads((d) => to.conn?.read(d)),
      } as ConstructorParameters<typeof Socket>[0]) as Socket & { server: Server; _server: Server };
      net._connections++;
      socket.server = net;
      socket._server = net;
      to.conn = this.accept(socket, true);
    };
  }

  private sweeper: NodeJS.Timeout | undefined;

  /** Times out connections past their deadline (one timer for all, none per request). */
  private sweep(): void {
    const now = performance.now();
    for (const c of this.conns) if (c.deadline !== 0 && now > c.deadline) c.timeout();
    if (this.conns.size === 0 && this.sweeper) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  }

  listen(port: number, host: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.net.once('error', reject);
      this.net.listen(port, host, () => {
        this.net.off('error', reject);
        if (!this.streamReads) this.takeAccepts();
        resolve();
      });
    });
  }

  address(): AddressInfo {
    return this.net.address() as AddressInfo;
  }

  /** Stops accepting; resolves when every connection is gone. */
  /** @internal close() was called: connections end after their current answer */
  closing = false;

  close(): Promise<void> {
    this.closing = true;
    // Idle connections go now; busy ones after their answer (the sweep keeps running meanwhile).
    for (const c of this.conns) if (c.idle) c.socket.destroy();
    this.fallback.close(() => undefined);
    return new Promise((resolve) => this.net.close(() => resolve()));
  }

  /** Closes every connection now (raw and handed-off). */
  closeAllConnections(): void {
    for (const c of this.conns) c.socket.destroy();
    this.conns.clear();
    this.fallback.closeAllConnections();
  }
}
