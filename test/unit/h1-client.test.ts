// The raw-socket upstream client against real loopback servers (node:http and raw node:net):
// framings, keep-alive pooling, stale-connection retry, timeouts, aborts and backpressure.
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server as HttpServer,
  type ServerResponse,
} from 'node:http';
import {
  createServer as createNetServer,
  type AddressInfo,
  type Server,
  type Socket,
} from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import {
  UpstreamClient,
  UpstreamError,
  type UpstreamBody,
  type UpstreamClientOptions,
  statusOf,
} from '../../src/gateway/h1/client.js';
import { sleep, until, within } from './wait-helpers.js';

interface Collected {
  text: string;
  chunks: Buffer[];
  error?: UpstreamError;
}

/** Reads a body to its end or error. */
function collect(body: UpstreamBody, ms = 1500): Promise<Collected> {
  return within(
    new Promise<Collected>((resolve) => {
      const chunks: Buffer[] = [];
      body.read({
        data: (c) => chunks.push(Buffer.from(c)),
        end: () => resolve({ text: Buffer.concat(chunks).toString('utf8'), chunks }),
        error: (e) => resolve({ text: Buffer.concat(chunks).toString('utf8'), chunks, error: e }),
      });
    }),
    ms,
    'the response body',
  );
}

/** Expects `p` to reject with an UpstreamError; returns it. */
async function upstreamError(p: Promise<unknown>, ms = 1500): Promise<UpstreamError> {
  let result: unknown;
  try {
    result = await within(p, ms, 'the request to fail');
  } catch (e) {
    if (e instanceof UpstreamError) return e;
    throw e;
  }
  throw new Error(`expected an UpstreamError, got a response: ${JSON.stringify(result)}`);
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function newClient(o: UpstreamClientOptions = {}): UpstreamClient {
  const c = new UpstreamClient({ headersTimeoutMs: 1500, idleTimeoutMs: 1500, ...o });
  cleanups.push(() => c.close());
  return c;
}

interface HttpFake {
  url: string;
  server: HttpServer;
  /** Connections accepted so far. */
  connections: number;
  sockets: Set<Socket>;
}

async function httpServer(
  handler: (req: IncomingMessage, res: ServerResponse, body: Buffer) => void,
): Promise<HttpFake> {
  const f = { connections: 0, sockets: new Set<Socket>() } as HttpFake;
  f.server = createHttpServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (d: Buffer) => parts.push(d));
    req.on('end', () => handler(req, res, Buffer.concat(parts)));
  });
  f.server.on('connection', (s: Socket) => {
    f.connections++;
    f.sockets.add(s);
    s.on('close', () => f.sockets.delete(s));
  });
  await new Promise<void>((r) => f.server.listen(0, '127.0.0.1', r));
  f.url = `http://127.0.0.1:${(f.server.address() as AddressInfo).port}`;
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        f.server.closeAllConnections();
        f.server.close(() => r());
      }),
  );
  return f;
}

interface RawFake {
  url: string;
  server: Server;
  connections: number;
  sockets: Set<Socket>;
  /** Request heads received, in order (each with the index of its connection). */
  requests: { conn: number; head: string }[];
}

/**
 * A raw server: `onRequest` is called for each request head (requests carry no body here, or a
 * Content-Length one which is skipped) with the socket and the connection's request number.
 */
async function rawServer(
  onRequest: (s: Socket, head: string, nthOnConn: number, conn: number) => void,
): Promise<RawFake> {
  const f = { connections: 0, sockets: new Set<Socket>(), requests: [] } as unknown as RawFake;
  f.server = createNetServer((s) => {
    const conn = ++f.connections;
    f.sockets.add(s);
    s.on('close', () => f.sockets.delete(s));
    s.on('error', () => undefined);
    let buf = Buffer.alloc(0);
    let n = 0;
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.toString('latin1', 0, end);
        const m = /content-length: *(\d+)/i.exec(head);
        const total = end + 4 + (m ? Number(m[1]) : 0);
        if (buf.length < total) return;
        buf = buf.subarray(total);
        f.requests.push({ conn, head });
        onRequest(s, head, ++n, conn);
      }
    });
  });
  await new Promise<void>((r) => f.server.listen(0, '127.0.0.1', r));
  f.url = `http://127.0.0.1:${(f.server.address() as AddressInfo).port}`;
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        for (const s of f.sockets) s.destroy();
        f.server.close(() => r());
      }),
  );
  return f;
}

describe('statusOf', () => {
  it('reads HTTP/1.0 and HTTP/1.1 status lines, with or without a reason', () => {
    expect(statusOf('HTTP/1.1 200 OK')).toBe(200);
    expect(statusOf('HTTP/1.0 503 Service Unavailable')).toBe(503);
    expect(statusOf('HTTP/1.1 204')).toBe(204);
    expect(statusOf('HTTP/1.1 101 ')).toBe(101);
  });

  it('is -1 for anything else', () => {
    for (const line of [
      '',
      'HTTP/1.1',
      'HTTP/1.1 20 OK',
      'HTTP/1.1 2000 OK',
      'HTTP/1.1 2x0 OK',
      'HTTP/1.2 200 OK',
      'HTTP/2.0 200 OK',
      'http/1.1 200 OK',
      'HTTP/1.1  200 OK',
      'HTTP/1.1 200OK',
      'ICY 200 OK',
    ]) {
      expect(statusOf(line), line).toBe(-1);
    }
  });
});

describe('UpstreamClient: responses', () => {
  it('reads a Content-Length response', async () => {
    const srv = await httpServer((_req, res) => {
      res.writeHead(201, {
        'content-type': 'application/json',
        'content-length': '11',
        'x-engine': 'e1',
      });
      res.end('{"ok":true}');
    });
    const client = newClient();
    const r = await within(client.request(srv.url, 'POST', '/v1/x', '', '{}'), 1500, 'response');
    expect(r.status).toBe(201);
    expect(r.headers.get('content-type')).toBe('application/json');
    expect(r.headers.get('x-engine')).toBe('e1');
    expect(r.headers.get('content-length')).toBe('11');
    const got = await collect(r.body);
    expect(got.error).toBeUndefined();
    expect(got.text).toBe('{"ok":true}');
    expect(r.body.complete).toBe(true);
  });

  it('reads a chunked response delivered in pieces as they arrive', async () => {
    const srv = await httpServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      void (async () => {
        for (const piece of ['data: 1\n\n', 'data: 2\n\n', 'data: [DONE]\n\n']) {
          res.write(piece);
          await sleep(30);
        }
        res.end();
      })();
    });
    const client = newClient();
    const r = await within(client.request(srv.url, 'POST', '/s', '', ''), 1500, 'response');
    expect(r.headers.get('transfer-encoding')).toBe('chunked');
    const arrivals: number[] = [];
    const t0 = performance.now();
    const got = await within(
      new Promise<string>((resolve, reject) => {
        let s = '';
        r.body.read({
          data: (c) => {
            arrivals.push(performance.now() - t0);
            s += c.toString();
          },
          end: () => resolve(s),
          error: reject,
        });
      }),
      1500,
      'the streamed body',
    );
    expect(got).toBe('data: 1\n\ndata: 2\n\ndata: [DONE]\n\n');
    // Delivered incrementally, not collected to the end.
    expect(arrivals.length).toBeGreaterThanOrEqual(3);
    expect(arrivals[arrivals.length - 1]! - arrivals[0]!).toBeGreaterThan(30);
  });

  it('reads a chunked response whose framing is split into single bytes', async () => {
    const wire = Buffer.from(
      'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-t: 1\r\n\r\n',
    );
    const srv = await rawServer((s) => {
      void (async () => {
        for (let i = 0; i < wire.length; i += 7) {
          s.write(wire.subarray(i, i + 7));
          await sleep(1);
        }
      })();
    });
    const client = newClient();
    const r = await within(client.request(srv.url, 'POST', '/', '', ''), 1500, 'response');
    const got = await collect(r.body);
    expect(got.error).toBeUndefined();
    expect(got.text).toBe('hello world');
  });

  it('reads a close-delimited response (connection: close, no Content-Length)', async () => {
    const srv = await rawServer((s) => {
      s.write('HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nfirst ');
      setTimeout(() => s.end('second'), 20);
    });
    const client = newClient();
    const r = await within(client.request(srv.url, 'POST', '/', '', ''), 1500, 'response');
    const got = await collect(r.body);
    expect(got.error).toBeUndefined();
    expect(got.text).toBe('first second');
    // The connection is not pooled: the next request opens another one.
    const r2 = await within(client.request(srv.url, 'POST', '/', '', ''), 1500, 'response 2');
    expect((await collect(r2.body)).text).toBe('first second');
    expect(srv.connections).toBe(2);
  });

  it('reads an HTTP/1.0 close-delimited response', async () => {
    const srv = await rawServer((s) =>
      s.end('HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nold'),
    );
    const client = newClient();
    const r = await within(client.request(srv.url, 'POST', '/', '', ''), 1500, 'response');
    expect(r.status).toBe(200);
    expect((await collect(r.body)).text).toBe('old');
  });

  it('reads a 204 with no body and keeps the connection', async () => {
    const srv = await rawServer((s) => s.write('HTTP/1.1 204 No Content\r\n\r\n'));
    const client = newClient();
    const r = await within(client.request(srv.url, 'POST', '/', '', ''), 1500, 'response');
    expect(r.status).toBe(204);
    const got = await collect(r.body);
    expect(got.text).toBe('');
    const r2 = await within(client.request(srv.url, 'POST', '/', '', ''), 1500, 'response 2');
    expect(r2.status).toBe(204);
    await collect(r2.body);
    expect(srv.connections).toBe(1);
  });

  it('keeps chunks that arrive before read() and delivers them, then the end', async () => {
    const srv = await httpServer((_req, res) => res.end('early body'));
    const client = newClient();
    const r = await within(client.request(srv.url, 'POST', '/', '', ''), 1500, 'response');
    await sleep(50); // the whole body has arrived by now
    expect(r.body.complete).toBe(true);
    const got = await collect(r.body);
    expect(got.error).toBeUndefined();
    expect(got.text).toBe('early body');
  });

  it('skips 1xx interim responses', async () => {
    const srv = await rawServer((s) => {
      s.write('HTTP/1.1 100 Continue\r\n\r\n');
      setTimeout(() => {
        s.write('HTTP/1.1 103 Early Hints\r\nlink: </a>; rel=preload\r\n\r\nHTTP/1.1 2');
        setTimeout(() => s.write('00 OK\r\ncontent-length: 5\r\n\r\nfinal'), 10);
      }, 10);
    });
    const client = newClient();
    const r = await within(client.request(srv.url, 'POST', '/', '', ''), 1500, 'response');
    expect(r.status).toBe(200);
    expect(r.headers.get('link')).toBeUndefined();
    expect((await collect(r.body)).text).toBe('final');
  });

  it('skips interim responses that arrive in the same packet as the final one', async () => {
    const srv = await rawServer((s) =>
      s.write(
        'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok',
      ),
    );
    const client = newClient();
    const r = await within(client.request(srv.url, 'POST', '/', '', ''), 1500, 'response');
    expect(r.status).toBe(200);
    expect((await collect(r.body)).text).toBe('ok');
  });

  it('sends the request line, host, extra headers and the body intact', async () => {
    let seen: {
      method?: string;
      url?: string;
      headers?: IncomingMessage['headers'];
      body?: string;
    } = {};
    const srv = await httpServer((req, res, body) => {
      seen = { method: req.method, url: req.url, headers: req.headers, body: body.toString() };
      res.end('ok');
    });
    const client = newClient();
    const body = JSON.stringify({ prompt: 'h\u00e9llo \u4e16\u754c \ud83d\ude00' });
    const r = await within(
      client.request(
        srv.url,
        'POST',
        '/v1/chat/completions?x=1',
        'content-type: application/json\r\nx-request-id: abc-123\r\n',
        body,
      ),
      1500,
      'response',
    );
    await collect(r.body);
    expect(seen.method).toBe('POST');
    expect(seen.url).toBe('/v1/chat/completions?x=1');
    expect(seen.headers?.host).toBe(new URL(srv.url).host);
    expect(seen.headers?.['content-type']).toBe('application/json');
    expect(seen.headers?.['x-request-id']).toBe('abc-123');
    expect(seen.headers?.['content-length']).toBe(String(Buffer.byteLength(body)));
    expect(seen.body).toBe(body);
  });

  it('fails a malformed status line with a protocol error before the response', async () => {
    const srv = await rawServer((s) => s.write('HTTP/2 200 OK\r\ncontent-length: 0\r\n\r\n'));
    const client = newClient();
    const e = await upstreamError(client.request(srv.url, 'POST', '/', '', ''));
    expect(e.kind).toBe('protocol');
    expect(e.beforeResponse).toBe(true);
  });

  it('fails a malformed response head with a protocol error', async () => {
    const srv = await rawServer((s) => s.write('HTTP/1.1 200 OK\r\nbroken header\r\n\r\n'));
    const client = newClient();
    const e = await upstreamError(client.request(srv.url, 'POST', '/', '', ''));
    expect(e.kind).toBe('protocol');
    expect(e.beforeResponse).toBe(true);
  });

  it('fails a response head over maxHeadBytes with a protocol error', async () => {
    const srv = await rawServer((s) =>
      s.write(`HTTP/1.1 200 OK\r\nx-big: ${'a'.repeat(2000)}\r\ncontent-length: 0\r\n\r\n`),
    );
    const client = newClient({ maxHeadBytes: 512 });
    const e = await upstreamError(client.request(srv.url, 'POST', '/', '', ''));
    expect(e.kind).toBe('protocol');
  });

  it('fails an unsupported transfer coding or a repeated Content-Length', async () => {
    const srv = await rawServer((s, _h, n) =>
      s.write(
        n === 1
          ? 'HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n'
          : 'HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab',
      ),
    );
    const client = newClient();
    expect((await upstreamError(client.request(srv.url, 'POST', '/', '', ''))).kind).toBe(
      'protocol',
    );
    expect((await upstreamError(client.request(srv.url, 'POST', '/', '', ''))).kind).toBe(
      'protocol',
    );
  });

  it('fails a bad chunked body with a protocol error on the body', async () => {
    const srv = await rawServer((s) =>
      s.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n'),
    );
    const client = newClient();
    const r = await within(client.request(srv.url, 'POST', '/', '', ''), 1500, 'response');
    const got = await collect(r.body);
    expect(got.text).toBe('abc');
    expect(got.error?.kind).toBe('protocol');
    expect(got.error?.beforeResponse).toBe(false);
    await until(() => srv.sockets.size === 0, 1000, 'the server to see the close');
  });
});

describe('UpstreamClient: keep-alive pool', () => {
  it('reuses one connection for sequential requests', async () => {
    const ports: number[] = [];
    const srv = await httpServer((req, res) => {
      ports.push(req.socket.remotePort!);
      res.end(`hit ${ports.length}`);
    });
    const client = newClient();
    for (let i = 1; i <= 3; i++) {
      const r = await within(client.request(srv.url, 'POST', '/', '', 'x'), 1500, `request ${i}`);
      expect((await collect(r.body)).text).toBe(`hit ${i}`);
    }
    expect(srv.connections).toBe(1);
    expect(new Set(ports).size).toBe(1);
  });

  it('reuses a connection after a chunked response', async () => {
    const srv = await httpServer((_req, res) => {
      res.write('a');
      res.end('b');
    });
    const client = newClient();
    for (let i = 0; i < 2; i++) {
      const r = await within(client.request(srv.url, 'POST', '/', '', ''), 1500, 'response');
      expect((await collect(r.body)).text).toBe('ab');
    }
    expect(srv.connections).toBe(1);
  });

  it('opens separate connections for concurrent requests, then pools them', async () => {
    const srv = await httpServer((_req, res, body) => setTimeout(() => res.end(body), 30));
    const client = newClient();
    const rs = await within(
      Promise.all([1, 2, 3].map((i) => client.request(srv.url, 'POST', '/', '', `b${i}`))),
      1500,
      'three responses',
    );
    expect(await Promise.all(rs.map(async (r) => (await collect(r.body)).text))).toEqual([
      'b1',
      'b2',
      'b3',
    ]);
    expect(srv.connections).toBe(3);
    const r = await within(client.request(srv.url, 'POST', '/', '', 'again'), 1500, 'response');
    expect((await collect(r.body)).text).toBe('again');
    expect(srv.connections).toBe(3);
  });

  it('does not reuse a connection the response marked `connection: close`', async () => {
    const srv = await rawServer((s) =>
      s.write('HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok'),
    );
    const client = newClient();
    for (let i = 0; i < 2; i++) {
      const r = await within(client.request(srv.url, 'POST', '/', '', ''), 1500, 'response');
      expect((await collect(r.body)).text).toBe('ok');
    }
    expect(srv.connections).toBe(2);
    // The client closed the first one itself.
    await until(() => srv.sockets.size === 0, 1000, 'both connections to close');
  });

  it('does not reuse an HTTP/1.0 connection without keep-alive, but does with it', async () => {
    const srv = await rawServer((s, head) =>
      s.write(
        head.includes('/ka')
          ? 'HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nka'
          : 'HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nno',
      ),
    );
    const client = newClient();
    for (let i = 0; i < 2; i++) {
      const r = await within(client.request(srv.url, 'POST', '/no', '', ''), 1500, 'response');
      expect((await collect(r.body)).text).toBe('no');
    }
    expect(srv.connections).toBe(2);
    for (let i = 0; i < 2; i++) {
      const r = await within(client.request(srv.url, 'POST', '/ka', '', ''), 1500, 'response');
      expect((await collect(r.body)).text).toBe('ka');
    }
    expect(srv.connections).toBe(3);
  });

  it('does not reuse a connection that sent bytes past the response', async () => {
    const srv = await rawServer((s) =>
      s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA'),
    );
    const client = newClient();
    for (let i = 0; i < 2; i++) {
      const r = await within(client.request(srv.url, 'POST', '/', '', ''), 1500, 'response');
      expect((await collect(r.body)).text).toBe('ok');
    }
    expect(srv.connections).toBe(2);
  });

  it('drops an idle connection that sends unsolicited bytes', async () => {
    let first: Socket | undefined;
    const srv = await rawServer((s) => {
      first ??= s;
      s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
    });
    const client = newClient();
    const r = await within(client.request(srv.url, 'POST', '/', '', ''), 1500, 'response');
    await collect(r.body);
    first!.write('HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nbogus');
    await until(() => first!.destroyed || srv.sockets.size === 0, 1000, 'the client to drop it');
    const r2 = await within(client.request(srv.url, 'POST', '/', '', ''), 1500, 'response 2');
    expect((await collect(r2.body)).text).toBe('ok');
    expect(srv.connections).toBe(2);
  });

  it('opens a new connection after the server closed an idle kept-alive one', async () => {
    const srv = await httpServer((_req, res) => res.end('ok'));
    const client = newClient();
    const r = await within(client.request(srv.url, 'POST', '/', '', ''), 1500, 'response');
    await collect(r.body);
    await until(() => srv.sockets.size === 1, 1000, 'the kept-alive connection');
    srv.server.closeIdleConnections();
    await until(() => srv.sockets.size === 0, 1000, 'the server to close the idle connection');
    await sleep(20);
    const r2 = await within(client.request(srv.url, 'POST', '/', '', ''), 1500, 'response 2');
    expect((await collect(r2.body)).text).toBe('ok');
    expect(srv.connections).toBe(2);
  });

  it('retries once on a fresh connection when a reused one turns out closed', async () => {
    // The server answers the first request on each connection and drops later ones unanswered:
    // exactly what a keep-alive close racing the next request looks like.
    const srv = await rawServer((s, _head, n) => {
      if (n === 1) s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
      else s.destroy();
    });
    const client = newClient();
    const r = await within(client.request(srv.url, 'POST', '/a', '', 'one'), 1500, 'response');
    expect((await collect(r.body)).text).toBe('ok');
    const r2 = await within(client.request(srv.url, 'POST', '/b', '', 'two'), 1500, 'response 2');
    expect(r2.status).toBe(200);
    expect((await collect(r2.body)).text).toBe('ok');
    expect(srv.connections).toBe(2);
    expect(srv.requests.map((q) => [q.conn, q.head.split('\r\n')[0]])).toEqual([
      [1, 'POST /a HTTP/1.1'],
      [1, 'POST /b HTTP/1.1'],
      [2, 'POST /b HTTP/1.1'],
    ]);
  });

  it('retries a stale connection only once', async () => {
    let served = 0;
    const srv = await rawServer((s) => {
      if (served++ === 0) s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
      else s.destroy();
    });
    const client = newClient();
    const r = await within(client.request(srv.url, 'POST', '/', '', ''), 1500, 'response');
    await collect(r.body);
    const e = await upstreamError(client.request(srv.url, 'POST', '/', '', ''));
    expect(e.kind).toBe('reset');
    expect(e.beforeResponse).toBe(true);
    expect(srv.requests.length).toBe(3);
  });

  it('does not retry a fresh connection closed before the response', async () => {
    const srv = await rawServer((s) => s.destroy());
    const client = newClient();
    const e = await upstreamError(client.request(srv.url, 'POST', '/', '', ''));
    expect(e.kind).toBe('reset');
    expect(e.beforeResponse).toBe(true);
    expect(srv.requests.length).toBe(1);
  });

  it('honours the Keep-Alive timeout hint (no reuse after it expires)', async () => {
    // timeout=2 → kept at most 1 s (a second's margin).
    const srv = await rawServer((s) =>
      s.write('HTTP/1.1 200 OK\r\nkeep-alive: timeout=2\r\ncontent-length: 2\r\n\r\nok'),
    );
    const client = newClient();
    const one = async (): Promise<void> => {
      const r = await within(client.request(srv.url, 'POST', '/', '', ''), 1500, 'response');
      expect((await collect(r.body)).text).toBe('ok');
    };
    await one();
    await sleep(100);
    await one();
    expect(srv.connections).toBe(1);
    await sleep(1100);
    await one();
    expect(srv.connections).toBe(2);
  });

  it('honours a Keep-Alive: timeout=1 hint (not kept for the default 30 s)', async () => {
    // BUG (client.ts, Conn.keepAliveHintMs / release): timeout=1 less the one-second margin is 0,
    // which release() reads as "no hint" and keeps the connection for keepAliveMs (30 s).
    const srv = await rawServer((s) =>
      s.write('HTTP/1.1 200 OK\r\nkeep-alive: timeout=1\r\ncontent-length: 2\r\n\r\nok'),
    );
    const client = newClient();
    const one = async (): Promise<void> => {
      const r = await within(client.request(srv.url, 'POST', '/', '', ''), 1500, 'response');
      expect((await collect(r.body)).text).toBe('ok');
    };
    await one();
    await sleep(1100); // past the server's own 1 s keep-alive
    await one();
    expect(srv.connections).toBe(2);
  });

  it('drops idle connections after keepAliveMs', async () => {
    const srv = await httpServer((_req, res) => res.end('ok'));
    const client = newClient({ keepAliveMs: 100 });
    const r = await within(client.request(srv.url, 'POST', '/', '', ''), 1500, 'response');
    await collect(r.body);
    // The sweep closes it: the server sees the close.
    await until(() => srv.sockets.size === 0, 1000, 'the idle connection to be closed');
    const r2 = await within(client.request(srv.url, 'POST', '/', '', ''), 1500, 'response 2');
    expect((await collect(r2.body)).text).toBe('ok');
    expect(srv.connections).toBe(2);
  });

  it('keeps at most maxIdlePerOrigin idle connections', async () => {
    const srv = await httpServer((_req, res) => setTimeout(() => res.end('ok'), 20));
    const client = newClient({ maxIdlePerOrigin: 1 });
    const rs = await within(
      Promise.all([0, 1, 2].map(() => client.request(srv.url, 'POST', '/', '', ''))),
      1500,
      'responses',
    );
    await Promise.all(rs.map((r) => collect(r.body)));
    await until(() => srv.sockets.size === 1, 1000, 'the extra connections to be closed');
  });
});

describe('UpstreamClient: failures and timeouts', () => {
  it('fails a refused connection with kind connect, before the response', async () => {
    const tmp = createNetServer();
    await new Promise<void>((r) => tmp.listen(0, '127.0.0.1', r));
    const port = (tmp.address() as AddressInfo).port;
    await new Promise<void>((r) => tmp.close(() => r()));
    const client = newClient();
    const e = await upstreamError(client.request(`http://127.0.0.1:${port}`, 'POST', '/', '', ''));
    expect(e.kind).toBe('connect');
    expect(e.beforeResponse).toBe(true);
    expect(e.code).toBe('ECONNREFUSED');
  });

  it('fails with headers_timeout when the server accepts but never answers', async () => {
    const srv = await rawServer(() => undefined);
    const client = newClient({ headersTimeoutMs: 150 });
    const t0 = performance.now();
    const e = await upstreamError(client.request(srv.url, 'POST', '/', '', ''));
    const took = performance.now() - t0;
    expect(e.kind).toBe('headers_timeout');
    expect(e.beforeResponse).toBe(true);
    expect(took).toBeGreaterThanOrEqual(140);
    expect(took).toBeLessThan(1000);
    // The connection is closed, not pooled.
    await until(() => srv.sockets.size === 0, 1000, 'the server to see the close');
  });

  it('counts headers_timeout over a partial head too', async () => {
    const srv = await rawServer((s) => s.write('HTTP/1.1 200 OK\r\ncontent-'));
    const client = newClient({ headersTimeoutMs: 150 });
    const e = await upstreamError(client.request(srv.url, 'POST', '/', '', ''));
    expect(e.kind).toBe('headers_timeout');
  });

  it('fails the body with idle_timeout when the server stalls after the head', async () => {
    const srv = await rawServer((s) =>
      s.write('HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npart'),
    );
    const client = newClient({ idleTimeoutMs: 150 });
    const r = await within(client.request(srv.url, 'POST', '/', '', ''), 1500, 'response');
    const t0 = performance.now();
    const got = await collect(r.body);
    expect(got.text).toBe('part');
    expect(got.error?.kind).toBe('idle_timeout');
    expect(got.error?.beforeResponse).toBe(false);
    expect(performance.now() - t0).toBeLessThan(1000);
    await until(() => srv.sockets.size === 0, 1000, 'the server to see the close');
  });

  it('resets the idle timer on every body byte', async () => {
    const srv = await rawServer((s) => {
      s.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n');
      void (async () => {
        for (let i = 0; i < 6; i++) {
          await sleep(60);
          if (s.destroyed) return;
          s.write('1\r\nx\r\n');
        }
        s.write('0\r\n\r\n');
      })();
    });
    const client = newClient({ idleTimeoutMs: 150 });
    const r = await within(client.request(srv.url, 'POST', '/', '', ''), 1500, 'response');
    const got = await collect(r.body);
    expect(got.error).toBeUndefined();
    expect(got.text).toBe('xxxxxx');
  });

  it('fails the body with reset when the server dies mid-body', async () => {
    const srv = await rawServer((s) => {
      s.write('HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789');
      setTimeout(() => s.destroy(), 20);
    });
    const client = newClient();
    const r = await within(client.request(srv.url, 'POST', '/', '', ''), 1500, 'response');
    const got = await collect(r.body);
    expect(got.text).toBe('0123456789');
    expect(got.error?.kind).toBe('reset');
    expect(got.error?.beforeResponse).toBe(false);
  });

  it('fails a chunked body with reset when the connection ends before the last chunk', async () => {
    const srv = await rawServer((s) =>
      s.end('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n'),
    );
    const client = newClient();
    const r = await within(client.request(srv.url, 'POST', '/', '', ''), 1500, 'response');
    const got = await collect(r.body);
    expect(got.text).toBe('abc');
    expect(got.error?.kind).toBe('reset');
  });

  it('fails with reset, before the response, when the server closes mid-head', async () => {
    const srv = await rawServer((s) => s.end('HTTP/1.1 200 OK\r\ncontent-len'));
    const client = newClient();
    const e = await upstreamError(client.request(srv.url, 'POST', '/', '', ''));
    expect(e.kind).toBe('reset');
    expect(e.beforeResponse).toBe(true);
  });

  it('aborts via AbortSignal before the head, closing the connection', async () => {
    const srv = await rawServer(() => undefined);
    const client = newClient();
    const ac = new AbortController();
    const p = client.request(srv.url, 'POST', '/', '', '', ac.signal);
    await until(() => srv.requests.length === 1, 1000, 'the request to arrive');
    ac.abort();
    const e = await upstreamError(p, 500);
    expect(e.kind).toBe('aborted');
    expect(e.beforeResponse).toBe(true);
    await until(() => srv.sockets.size === 0, 1000, 'the server to see the close');
  });

  it('aborts via AbortSignal while still connecting', async () => {
    const srv = await rawServer(() => undefined);
    const client = newClient();
    const ac = new AbortController();
    const p = client.request(srv.url, 'POST', '/', '', '', ac.signal);
    ac.abort();
    const e = await upstreamError(p, 500);
    expect(e.kind).toBe('aborted');
  });

  it('accepts any Cancellation (aborted flag + abort listeners), not only an AbortSignal', async () => {
    const listeners = new Set<() => void>();
    const cancel = {
      aborted: false,
      addEventListener: (_t: 'abort', l: () => void) => void listeners.add(l),
      removeEventListener: (_t: 'abort', l: () => void) => void listeners.delete(l),
    };
    const srv = await rawServer((s, _h, n, conn) => {
      if (conn === 1 && n === 1) s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
    });
    const client = newClient();
    // A completed request leaves no listener behind.
    const r = await within(client.request(srv.url, 'POST', '/', '', '', cancel), 1500, 'response');
    await collect(r.body);
    expect(listeners.size).toBe(0);
    // One that is cancelled before its head fails with kind aborted.
    const p = client.request(srv.url, 'POST', '/', '', '', cancel);
    await until(() => srv.requests.length === 2, 1000, 'the second request');
    expect(listeners.size).toBe(1);
    cancel.aborted = true;
    for (const l of [...listeners]) l();
    const e = await upstreamError(p, 500);
    expect(e.kind).toBe('aborted');
    await until(() => srv.sockets.size === 0, 1000, 'the server to see the close');
    // An already-cancelled one is refused at once.
    const e2 = await upstreamError(client.request(srv.url, 'POST', '/', '', '', cancel), 200);
    expect(e2.kind).toBe('aborted');
  });

  it('rejects at once with an already-aborted signal', async () => {
    const srv = await rawServer(() => undefined);
    const client = newClient();
    const e = await upstreamError(
      client.request(srv.url, 'POST', '/', '', '', AbortSignal.abort()),
      200,
    );
    expect(e.kind).toBe('aborted');
    await sleep(30);
    expect(srv.connections).toBe(0);
  });

  it('ignores an abort after the head arrived (the body is the caller’s)', async () => {
    const srv = await rawServer((s) => {
      s.write('HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nab');
      setTimeout(() => s.write('cd'), 40);
    });
    const client = newClient();
    const ac = new AbortController();
    const r = await within(client.request(srv.url, 'POST', '/', '', '', ac.signal), 1500, 'head');
    ac.abort();
    const got = await collect(r.body);
    expect(got.error).toBeUndefined();
    expect(got.text).toBe('abcd');
  });

  it('can still abort a request that was retried after a stale connection', async () => {
    // BUG (client.ts, Conn.onClosed): detachAbort(ex) runs before the stale-retry dispatch, so the
    // retried exchange no longer listens to its AbortSignal and runs to the headers timeout.
    const srv = await rawServer((s, _head, n, conn) => {
      if (conn === 1 && n === 1) s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
      else if (conn === 1) s.destroy();
      // later connections: never answer
    });
    const client = newClient({ headersTimeoutMs: 1200 });
    const r = await within(client.request(srv.url, 'POST', '/', '', ''), 1500, 'response');
    await collect(r.body);
    const ac = new AbortController();
    const p = client.request(srv.url, 'POST', '/', '', '', ac.signal);
    await until(() => srv.requests.length === 3, 1000, 'the retried request to arrive');
    ac.abort();
    const e = await upstreamError(p, 1500);
    expect(e.kind).toBe('aborted');
  });

  it('fails requests once the client is closed', async () => {
    const srv = await httpServer((_req, res) => res.end('ok'));
    const client = newClient();
    await client.close();
    const e = await upstreamError(client.request(srv.url, 'POST', '/', '', ''), 200);
    expect(e.kind).toBe('aborted');
  });

  it('close() fails an in-flight request on a fresh connection', async () => {
    const srv = await rawServer(() => undefined);
    const client = newClient();
    const p = client.request(srv.url, 'POST', '/', '', '');
    await until(() => srv.requests.length === 1, 1000, 'the request to arrive');
    await client.close();
    const e = await upstreamError(p, 1000);
    expect(e.beforeResponse).toBe(true);
    await until(() => srv.sockets.size === 0, 1000, 'the server to see the close');
  });

  it('close() fails an in-flight request on a reused connection without sending it again', async () => {
    // BUG (client.ts, Conn.onClosed): close() destroys busy connections, and onClosed takes the
    // closed reused connection for a stale keep-alive and dispatches the request again on a
    // fresh connection (dispatch does not check `closing`): the request is re-sent after close().
    const srv = await rawServer((s, _head, n) => {
      if (n === 1) s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
    });
    const client = newClient({ headersTimeoutMs: 1000 });
    const r = await within(client.request(srv.url, 'POST', '/', '', ''), 1500, 'response');
    await collect(r.body);
    const p = client.request(srv.url, 'POST', '/', '', '');
    const settled = p.then(
      () => 'resolved',
      (e: unknown) => e,
    );
    await until(() => srv.requests.length === 2, 1000, 'the second request to arrive');
    await client.close();
    await sleep(100);
    expect(srv.requests.length).toBe(2);
    expect(srv.connections).toBe(1);
    const e = await within(settled, 1500, 'the request to settle');
    expect(e).toBeInstanceOf(UpstreamError);
  });

  it('close() fails a body in progress', async () => {
    const srv = await rawServer((s) => s.write('HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nab'));
    const client = newClient();
    const r = await within(client.request(srv.url, 'POST', '/', '', ''), 1500, 'response');
    const got = collect(r.body);
    await client.close();
    const res = await got;
    expect(res.error?.kind).toBe('reset');
  });
});

describe('UpstreamClient: body control', () => {
  it('body.destroy() closes the connection and the server sees it', async () => {
    let closed = false;
    const srv = await rawServer((s) => {
      s.on('close', () => (closed = true));
      s.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n');
    });
    const client = newClient();
    const r = await within(client.request(srv.url, 'POST', '/', '', ''), 1500, 'response');
    const events: string[] = [];
    r.body.read({
      data: (c) => events.push(`data:${c.toString()}`),
      end: () => events.push('end'),
      error: (e) => events.push(`error:${e.kind}`),
    });
    await until(() => events.length > 0, 1000, 'the first chunk');
    r.body.destroy();
    await until(() => closed, 1000, 'the server to see the close');
    await sleep(20);
    // No error or end reaches the reader after it abandoned the body.
    expect(events).toEqual(['data:abc']);
    expect(r.body.complete).toBe(true);
  });

  it('does not reuse the connection after body.destroy()', async () => {
    const srv = await rawServer((s, _h, _n, conn) => {
      if (conn === 1) s.write('HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nabc');
      else s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
    });
    const client = newClient();
    const r = await within(client.request(srv.url, 'POST', '/', '', ''), 1500, 'response');
    r.body.destroy();
    const r2 = await within(client.request(srv.url, 'POST', '/', '', ''), 1500, 'response 2');
    expect((await collect(r2.body)).text).toBe('ok');
    expect(srv.connections).toBe(2);
  });

  it('pause()/resume() delivers every byte, and the idle timeout does not run while paused', async () => {
    const size = 4 * 1024 * 1024;
    const payload = Buffer.alloc(size);
    for (let i = 0; i < size; i++) payload[i] = (i * 31) & 0xff;
    const srv = await httpServer((_req, res) => {
      res.writeHead(200, { 'content-length': String(size) });
      res.end(payload);
    });
    const client = newClient({ idleTimeoutMs: 100 });
    const r = await within(client.request(srv.url, 'POST', '/', '', ''), 1500, 'response');
    const chunks: Buffer[] = [];
    let pausedOnce = false;
    let dataWhilePaused = 0;
    let paused = false;
    const done = within(
      new Promise<void>((resolve, reject) => {
        r.body.read({
          data: (c) => {
            if (paused) dataWhilePaused++;
            chunks.push(Buffer.from(c));
            if (!pausedOnce) {
              pausedOnce = true;
              paused = true;
              r.body.pause();
              // Longer than the idle timeout: must not fail.
              setTimeout(() => {
                paused = false;
                r.body.resume();
              }, 300);
            }
          },
          end: resolve,
          error: reject,
        });
      }),
      1800,
      'the paused body',
    );
    await done;
    const got = Buffer.concat(chunks);
    expect(got.length).toBe(size);
    expect(got.equals(payload)).toBe(true);
    // At most what was already read from the socket in that turn arrives while paused.
    expect(dataWhilePaused).toBeLessThanOrEqual(1);
  });

  it('pause() after the body completed is harmless and the connection is reused', async () => {
    const srv = await httpServer((_req, res) => res.end('small'));
    const client = newClient();
    const r = await within(client.request(srv.url, 'POST', '/', '', ''), 1500, 'response');
    await collect(r.body);
    r.body.pause();
    r.body.resume();
    const r2 = await within(client.request(srv.url, 'POST', '/', '', ''), 1500, 'response 2');
    expect((await collect(r2.body)).text).toBe('small');
    expect(srv.connections).toBe(1);
  });

  it('a body paused as its last bytes arrived leaves the connection readable for the next request', async () => {
    const srv = await rawServer((s) => s.write('HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nabcd'));
    const client = newClient();
    const r = await within(client.request(srv.url, 'POST', '/', '', ''), 1500, 'response');
    await new Promise<void>((resolve, reject) =>
      r.body.read({ data: () => r.body.pause(), end: resolve, error: reject }),
    );
    const r2 = await within(client.request(srv.url, 'POST', '/', '', ''), 1500, 'response 2');
    expect((await collect(r2.body)).text).toBe('abcd');
    expect(srv.connections).toBe(1);
  });
});
