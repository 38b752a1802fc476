// The floor of a Node proxy: node:http server + undici request to round-robin upstreams, nothing
// else (no auth, no parsing, no routing, no metrics, no logs). Used by gateway-overhead.mjs as a
// reference variant (`--variant floor=bench/lib/floor-proxy.mjs`) to show how much of the gap to
// nginx is the platform's work and how much is the runtime's. Same child protocol as
// gateway-server.mjs.
import { createServer } from 'node:http';
import { Agent, request } from 'undici';

const opts = JSON.parse(process.argv[2] ?? '{}');
const urls = opts.upstreamPorts.map((p) => `http://127.0.0.1:${p}`);
const dispatcher = new Agent({ keepAliveTimeout: 30_000 });
let next = 0;

const server = createServer((req, res) => {
  const chunks = [];
  req.on('data', (d) => chunks.push(d));
  req.on('end', () => {
    const url = urls[next++ % urls.length] + req.url.replace(/^\/v1/, '/v1');
    request(url, {
      method: 'POST',
      dispatcher,
      headers: { 'content-type': 'application/json' },
      body: Buffer.concat(chunks),
    }).then(
      async (up) => {
        const body = Buffer.from(await up.body.arrayBuffer());
        res.writeHead(up.statusCode, {
          'content-type': up.headers['content-type'] ?? 'application/json',
          'content-length': String(body.length),
        });
        res.end(body);
      },
      () => {
        res.writeHead(502);
        res.end();
      },
    );
  });
});
server.keepAliveTimeout = 65_000;
await new Promise((resolve) => server.listen(opts.port ?? 0, '127.0.0.1', resolve));

const stop = () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.resume();
process.stdout.write(JSON.stringify({ port: server.address().port, pid: process.pid }) + '\n');
