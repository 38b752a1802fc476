// A zero-latency OpenAI upstream on raw node:http (the alternative to nginx's `return 200`):
// POST /v1/chat/completions and /v1/completions answer a fixed JSON, /metrics a vLLM-style text,
// /health 200. Run as a child: `node upstream-node.mjs '<json>'` with { ports, json, metrics };
// prints `{"ports":[...]}` once listening; exits on SIGTERM or when stdin closes.
import { createServer } from 'node:http';

const opts = JSON.parse(process.argv[2] ?? '{}');
const json = Buffer.from(opts.json);
const metrics = Buffer.from(opts.metrics);

const handler = (req, res) => {
  const send = (status, type, body) => {
    res.writeHead(status, { 'content-type': type, 'content-length': body.length });
    res.end(body);
  };
  // Drain the body before answering (keep-alive stays usable).
  req.on('data', () => undefined);
  req.on('end', () => {
    if (
      req.method === 'POST' &&
      (req.url === '/v1/chat/completions' || req.url === '/v1/completions')
    )
      send(200, 'application/json', json);
    else if (req.url === '/metrics') send(200, 'text/plain; version=0.0.4', metrics);
    else if (req.url === '/health') send(200, 'text/plain', Buffer.alloc(0));
    else send(404, 'text/plain', Buffer.from('not found'));
  });
};

const servers = await Promise.all(
  opts.ports.map(
    (p) =>
      new Promise((resolve, reject) => {
        const s = createServer({ keepAliveTimeout: 75_000 }, handler);
        s.once('error', reject);
        s.listen(p, '127.0.0.1', () => resolve(s));
      }),
  ),
);
const stop = () => {
  for (const s of servers) s.closeAllConnections();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.resume();
process.stdout.write(JSON.stringify({ ports: servers.map((s) => s.address().port) }) + '\n');
