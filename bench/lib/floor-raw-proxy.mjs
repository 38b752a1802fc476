// The floor of a Node proxy on raw sockets: node:net server and pooled keep-alive upstream
// sockets, a minimal HTTP/1.1 framing (Content-Length bodies only), round-robin, nothing else. A
// reference variant for gateway-overhead.mjs (`--variant rawfloor=bench/lib/floor-raw-proxy.mjs`):
// what the runtime costs without node:http and undici. Same child protocol as gateway-server.mjs.
// It reads and writes as cheaply as the gateway does: every socket an `onread` socket (reads land
// in one shared buffer and come straight to the framer: no buffer, stream push or 'data' event
// per read; accepted sockets built as src/gateway/h1/server.ts builds them), one write a message.
import { Socket, connect, createServer } from 'node:net';

const opts = JSON.parse(process.argv[2] ?? '{}');
const ports = opts.upstreamPorts;
const CRLF2 = Buffer.from('\r\n\r\n');
const idle = ports.map(() => []);
let next = 0;

function headerEnd(buf) {
  return buf.indexOf(CRLF2);
}
function contentLength(head) {
  const m = /\r\ncontent-length:\s*(\d+)/i.exec(head);
  return m ? Number(m[1]) : 0;
}

/** The read buffer every socket shares (a read is handled before the next). */
const READ_BUFFER = Buffer.allocUnsafe(64 * 1024);

/** `onread` options whose reads go to `to.onData` (set once the socket's framer exists). */
function onread(to) {
  return {
    buffer: READ_BUFFER,
    callback: (n, buf) => {
      const d = Buffer.allocUnsafe(n);
      d.set(buf.subarray(0, n));
      to.onData(d);
      return true;
    },
  };
}

/** Reads framed messages off a socket: calls onMessage(headString, body) per message. */
function framer(to, onMessage) {
  let buf = Buffer.alloc(0);
  to.onData = (d) => {
    buf = buf.length ? Buffer.concat([buf, d]) : d;
    for (;;) {
      const he = headerEnd(buf);
      if (he < 0) return;
      const head = buf.toString('latin1', 0, he);
      const len = contentLength(head);
      const end = he + 4 + len;
      if (buf.length < end) return;
      const body = buf.subarray(he + 4, end);
      buf = buf.subarray(end);
      onMessage(head, body);
    }
  };
}

function upstream(i, cb) {
  const s = idle[i].pop();
  if (s) return cb(s);
  const to = {};
  const sock = connect({ port: ports[i], host: '127.0.0.1', noDelay: true, onread: onread(to) });
  sock.ipPending = null;
  framer(to, (head, body) => {
    const p = sock.ipPending;
    sock.ipPending = null;
    idle[i].push(sock);
    p(head, body);
  });
  sock.on('error', () => {
    const k = idle[i].indexOf(sock);
    if (k >= 0) idle[i].splice(k, 1);
    if (sock.ipPending) sock.ipPending(null, null);
  });
  sock.on('close', () => {
    const k = idle[i].indexOf(sock);
    if (k >= 0) idle[i].splice(k, 1);
  });
  cb(sock);
}

const server = createServer(() => undefined);
function serve(client, to) {
  client.setNoDelay(true);
  framer(to, (head, body) => {
    const sp1 = head.indexOf(' ');
    const sp2 = head.indexOf(' ', sp1 + 1);
    const path = head.slice(sp1 + 1, sp2);
    const i = next++ % ports.length;
    upstream(i, (up) => {
      up.ipPending = (rhead, rbody) => {
        if (rhead === null) {
          client.write('HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n');
          return;
        }
        const status = rhead.slice(9, 12);
        const answerHead = `HTTP/1.1 ${status} OK\r\ncontent-type: application/json\r\ncontent-length: ${rbody.length}\r\nconnection: keep-alive\r\n\r\n`;
        client.write(Buffer.concat([Buffer.from(answerHead, 'latin1'), rbody]));
      };
      const uhead = `POST ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n`;
      up.write(Buffer.concat([Buffer.from(uhead, 'latin1'), body]));
    });
  });
  client.on('error', () => undefined);
}
await new Promise((resolve) => server.listen(opts.port ?? 0, '127.0.0.1', resolve));
// Accepted connections as onread sockets (node:net offers onread only to sockets it connects).
server._handle.onconnection = (err, handle) => {
  if (err) return;
  const to = {};
  const client = new Socket({ handle, readable: true, writable: true, onread: onread(to) });
  server._connections++;
  client.server = server;
  client._server = server;
  serve(client, to);
};

const stop = () => process.exit(0);
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.resume();
process.stdout.write(JSON.stringify({ port: server.address().port, pid: process.pid }) + '\n');
