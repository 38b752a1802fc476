// A lean open-loop (fixed-rate) HTTP/1.1 load generator on raw sockets, run as a child process so
// its event loop is not the benchmark's. Requests are scheduled at absolute times (rate constant);
// each goes out on an idle keep-alive connection (a new one is opened when none is idle, up to
// `maxConnections`; past that, it waits and the wait shows in the intended-time latency).
// Two latencies per request: from the actual write (service latency, what wrk measures) and from
// the intended send time (coordinated-omission corrected, what wrk2 measures).
//
// Two generators with the same options and summary: `generator: 'c'` (openloop.c, compiled on
// first use with the system's C compiler into a cache folder) sends each request at its due time
// from a timerfd; `generator: 'node'` (this file) can only wake on 1 ms timers and sends what fell
// due since then together — bursts of ~7 requests at 7,000 req/s, which queue behind one another in
// the server under test and show in its latency. `'auto'` (the default) takes C when a compiler is
// there. The summary's `generator` says which ran.
//
// As a library: `runOpenLoop(opts)` → summary. As a program: `node openloop.mjs '<json opts>'`
// prints one JSON line (the Node generator).
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const SELF = fileURLToPath(import.meta.url);
const C_SOURCE = fileURLToPath(new URL('openloop.c', import.meta.url));

/** The request as sent: head and body. */
function requestBytes({
  port,
  host = '127.0.0.1',
  path = '/',
  method = 'POST',
  body = '',
  headers = {},
}) {
  const bodyBuf = Buffer.from(body);
  const head =
    `${method} ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\n` +
    Object.entries(headers)
      .map(([k, v]) => `${k}: ${v}\r\n`)
      .join('') +
    `Content-Length: ${bodyBuf.length}\r\n\r\n`;
  return Buffer.concat([Buffer.from(head, 'latin1'), bodyBuf]);
}

let cBinary; // path, or null when it cannot be built here
/** The compiled C generator (built once per source version), or null without a C compiler. */
export function cGenerator() {
  if (cBinary !== undefined) return cBinary;
  const src = readFileSync(C_SOURCE);
  const dir = join(tmpdir(), 'inferplane-openloop');
  const bin = join(dir, `openloop-${createHash('sha256').update(src).digest('hex').slice(0, 16)}`);
  if (existsSync(bin)) return (cBinary = bin);
  const cc = process.env.CC ?? 'cc';
  try {
    mkdirSync(dir, { recursive: true });
    const tmp = `${bin}.${process.pid}.tmp`;
    execFileSync(cc, ['-O2', '-o', tmp, C_SOURCE], { stdio: ['ignore', 'ignore', 'pipe'] });
    renameSync(tmp, bin);
    return (cBinary = bin);
  } catch {
    return (cBinary = null);
  }
}

/**
 * Runs the generator in a child process. opts: { port, path, body, headers, rate, durationS,
 * warmupS, maxConnections, preopen, generator: 'auto' | 'c' | 'node', traceFile? } — traceFile (C
 * generator only): each measured request's write time (µs since the epoch) and service latency (µs),
 * a line each.
 */
export function runOpenLoop(opts, { signal } = {}) {
  const kind = opts.generator ?? 'auto';
  const bin = kind === 'node' ? null : cGenerator();
  if (kind === 'c' && !bin) {
    return Promise.reject(new Error('the C open-loop generator needs a C compiler (cc, or $CC)'));
  }
  let cmd = process.execPath;
  let args = [SELF, JSON.stringify(opts)];
  let reqFile;
  if (bin) {
    reqFile = join(tmpdir(), 'inferplane-openloop', `req-${process.pid}-${opts.port}.bin`);
    writeFileSync(reqFile, requestBytes(opts));
    cmd = bin;
    args = [
      '--port',
      String(opts.port),
      '--host',
      opts.host ?? '127.0.0.1',
      '--rate',
      String(opts.rate),
      '--duration',
      String(opts.durationS),
      '--warmup',
      String(opts.warmupS ?? 1),
      '--max-conns',
      String(opts.maxConnections ?? 256),
      '--preopen',
      String(opts.preopen ?? 32),
      '--request',
      reqFile,
      ...(opts.traceFile ? ['--trace', opts.traceFile] : []),
    ];
  }
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d.toString('utf8')));
    child.stderr.on('data', (d) => (err += d.toString('utf8')));
    const onAbort = () => child.kill('SIGKILL');
    signal?.addEventListener('abort', onAbort, { once: true });
    child.once('exit', (code) => {
      signal?.removeEventListener('abort', onAbort);
      if (reqFile) rmSync(reqFile, { force: true });
      if (code !== 0) {
        reject(new Error(`open-loop generator failed (${code}): ${err.trim().slice(-500)}`));
        return;
      }
      resolve(JSON.parse(out.trim().split('\n').pop()));
    });
  });
}

function percentile(sorted, p) {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

function stats(values) {
  const s = Float64Array.from(values).sort();
  let sum = 0;
  for (const v of s) sum += v;
  return {
    mean: s.length ? sum / s.length : Number.NaN,
    p50: percentile(s, 50),
    p90: percentile(s, 90),
    p95: percentile(s, 95),
    p98: percentile(s, 98),
    p99: percentile(s, 99),
    p995: percentile(s, 99.5),
    p999: percentile(s, 99.9),
    max: s.length ? s[s.length - 1] : Number.NaN,
  };
}

/** Incremental parser of HTTP/1.1 responses (content-length or chunked), one at a time. */
class ResponseParser {
  constructor(onResponse) {
    this.onResponse = onResponse;
    this.buf = Buffer.alloc(0);
    this.reset();
  }
  reset() {
    this.state = 'head';
    this.status = 0;
    this.remaining = 0;
    this.chunked = false;
    this.close = false;
  }
  push(chunk) {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    for (;;) {
      if (this.state === 'head') {
        const end = this.buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = this.buf.toString('latin1', 0, end);
        this.buf = this.buf.subarray(end + 4);
        this.status = Number(head.slice(9, 12));
        const lower = head.toLowerCase();
        const cl = /\r\ncontent-length:\s*(\d+)/.exec(lower);
        this.chunked = /\r\ntransfer-encoding:[^\r]*chunked/.test(lower);
        this.close = /\r\nconnection:[^\r]*close/.test(lower);
        if (this.chunked) this.state = 'chunk-size';
        else {
          this.remaining = cl ? Number(cl[1]) : 0;
          this.state = 'body';
        }
      } else if (this.state === 'body') {
        if (this.buf.length < this.remaining) {
          this.remaining -= this.buf.length;
          this.buf = Buffer.alloc(0);
          return;
        }
        this.buf = this.buf.subarray(this.remaining);
        this.done();
      } else if (this.state === 'chunk-size') {
        const nl = this.buf.indexOf('\r\n');
        if (nl < 0) return;
        const size = parseInt(this.buf.toString('latin1', 0, nl), 16);
        this.buf = this.buf.subarray(nl + 2);
        if (size === 0) this.state = 'trailer';
        else {
          this.remaining = size + 2; // data + CRLF
          this.state = 'chunk-data';
        }
      } else if (this.state === 'chunk-data') {
        if (this.buf.length < this.remaining) {
          this.remaining -= this.buf.length;
          this.buf = Buffer.alloc(0);
          return;
        }
        this.buf = this.buf.subarray(this.remaining);
        this.state = 'chunk-size';
      } else {
        // trailer: lines until an empty one
        const nl = this.buf.indexOf('\r\n');
        if (nl < 0) return;
        const empty = nl === 0;
        this.buf = this.buf.subarray(nl + 2);
        if (empty) this.done();
      }
    }
  }
  done() {
    const status = this.status;
    const close = this.close;
    this.reset();
    this.onResponse(status, close);
  }
}

async function main(opts) {
  const { port, host = '127.0.0.1', rate, durationS } = opts;
  const { warmupS = 1, maxConnections = 256, preopen = 32 } = opts;
  const reqBuf = requestBytes(opts);

  const hr = () => Number(process.hrtime.bigint()) / 1e3; // µs
  const idle = [];
  let open = 0;
  const queue = []; // intended times waiting for a connection
  const service = [];
  const intended = [];
  const gaps = []; // between consecutive writes (µs)
  let lastSend = 0;
  let errors = 0;
  let non2xx = 0;
  let completed = 0;
  let measureFrom = 0;
  let measureTo = 0;

  const newConn = () =>
    new Promise((resolve) => {
      open++;
      const sock = connect(port, host);
      sock.setNoDelay(true);
      const conn = { sock, cur: null };
      conn.parser = new ResponseParser((status, close) => {
        const now = hr();
        const c = conn.cur;
        conn.cur = null;
        completed++;
        if (status < 200 || status >= 300) non2xx++;
        if (c && c.intendedAt >= measureFrom && c.intendedAt < measureTo) {
          service.push(now - c.sentAt);
          intended.push(now - c.intendedAt);
        }
        if (close) {
          // The server closes it: not reused (a request sent on it now would be lost); one in its
          // place if requests are waiting.
          fail();
          sock.destroy();
          if (queue.length > 0 && open < maxConnections) {
            void newConn().then((nc) => {
              if (nc) release(nc);
            });
          }
          return;
        }
        release(conn);
      });
      sock.on('data', (d) => conn.parser.push(d));
      sock.once('connect', () => resolve(conn));
      const fail = () => {
        if (conn.dead) return;
        conn.dead = true;
        open--;
        if (conn.cur) errors++;
        conn.cur = null;
        const i = idle.indexOf(conn);
        if (i >= 0) idle.splice(i, 1);
        resolve(null);
      };
      sock.once('error', fail);
      sock.once('close', fail);
    });

  const send = (conn, intendedAt) => {
    const sentAt = hr();
    if (lastSend !== 0 && intendedAt >= measureFrom) gaps.push(sentAt - lastSend);
    lastSend = sentAt;
    conn.cur = { intendedAt, sentAt };
    conn.sock.write(reqBuf);
  };
  const release = (conn) => {
    if (conn.dead) return;
    const next = queue.shift();
    if (next !== undefined) send(conn, next);
    else idle.push(conn);
  };
  const dispatch = (intendedAt) => {
    const conn = idle.pop();
    if (conn) {
      send(conn, intendedAt);
      return;
    }
    queue.push(intendedAt);
    if (open < maxConnections) {
      void newConn().then((c) => {
        if (c) release(c);
      });
    }
  };

  for (const c of await Promise.all(Array.from({ length: preopen }, newConn))) {
    if (c) idle.push(c);
  }

  const intervalUs = 1e6 / rate;
  const start = hr() + 1000;
  const end = start + (warmupS + durationS) * 1e6;
  measureFrom = start + warmupS * 1e6;
  measureTo = end;
  let next = start;
  let sent = 0;
  await new Promise((resolve) => {
    const tick = () => {
      const now = hr();
      while (next <= now && next < end) {
        dispatch(next);
        sent++;
        next += intervalUs;
      }
      if (next >= end) {
        resolve();
        return;
      }
      setTimeout(tick, Math.max(0, (next - hr()) / 1000 - 0.5));
    };
    setTimeout(tick, 1);
  });
  // Drain: wait for in-flight requests (at most 5 s).
  const drainDeadline = hr() + 5e6;
  while ((queue.length > 0 || completed + errors < sent) && hr() < drainDeadline) {
    await new Promise((r) => setTimeout(r, 5));
  }
  const lost = sent - completed - errors;
  for (const c of idle) c.sock.destroy();
  const ms = (s) => Object.fromEntries(Object.entries(s).map(([k, v]) => [k, v / 1000]));
  const out = {
    rate,
    durationS,
    sent,
    measured: service.length,
    achievedRps: service.length / durationS,
    connections: open,
    errors: errors + lost,
    non2xx,
    generator: 'node',
    serviceMs: ms(stats(service)),
    intendedMs: ms(stats(intended)),
    sendGapMs: ms(stats(gaps)),
  };
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(0);
}

if (process.argv[1] === SELF) {
  main(JSON.parse(process.argv[2] ?? '{}')).catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
