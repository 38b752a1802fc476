// Floor of the gateway's own raw transport (dist/gateway/h1): H1Server + UpstreamClient, round-robin, no logic.
import { createServer } from 'node:http';
const DIST = new URL('../../dist/', import.meta.url);
const { H1Server } = await import(new URL('gateway/h1/server.js', DIST).href);
const { UpstreamClient } = await import(new URL('gateway/h1/client.js', DIST).href);
const opts = JSON.parse(process.argv[2] ?? '{}');
const urls = opts.upstreamPorts.map((p) => `http://127.0.0.1:${p}`);
const client = new UpstreamClient();
let next = 0;
const server = new H1Server({
  accepts: (m) => m === 'POST',
  maxBodyBytes: 1 << 24,
  fallback: createServer((q, s) => {
    s.writeHead(404);
    s.end();
  }),
  handle: (req, res) => {
    client
      .request(
        urls[next++ % urls.length],
        'POST',
        req.path,
        'content-type: application/json\r\n',
        req.body.toString(),
      )
      .then(
        (up) => {
          const chunks = [];
          up.body.read({
            data: (c) => chunks.push(c),
            end: () =>
              res.send(up.status, { 'content-type': 'application/json' }, Buffer.concat(chunks)),
            error: () => res.destroy(),
          });
        },
        () => res.send(502, {}, ''),
      );
  },
});
await server.listen(opts.port ?? 0, '127.0.0.1');
const stop = () => process.exit(0);
process.on('SIGTERM', stop);
process.stdin.on('end', stop);
process.stdin.resume();
process.stdout.write(JSON.stringify({ port: server.address().port, pid: process.pid }) + '\n');
