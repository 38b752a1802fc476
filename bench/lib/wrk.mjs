// Runs wrk (closed loop: each connection sends its next request when the last answer is in) with
// a Lua script for the POST body and headers, and returns its summary as an object.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const luaString = (s) => `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`;

/** The Lua script: method, body and headers, and a done() that prints one JSON line. */
export function wrkScript({ method = 'POST', body, headers = {} }) {
  const lines = [`wrk.method = ${luaString(method)}`];
  if (body !== undefined) lines.push(`wrk.body = ${luaString(body)}`);
  for (const [k, v] of Object.entries(headers)) {
    lines.push(`wrk.headers[${luaString(k)}] = ${luaString(v)}`);
  }
  lines.push(`
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nWRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.2f,"p50":%d,"p90":%d,"p99":%d,"max":%d}}\\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max))
end
`);
  return lines.join('\n');
}

/**
 * One wrk run. Resolves with `{ rps, requests, errors, errorCount, latencyUs }`.
 * `signal` aborts it (wrk is killed).
 */
export function runWrk({
  wrk = 'wrk',
  url,
  connections,
  durationS,
  threads = 1,
  body,
  headers,
  timeoutS = 10,
  signal,
}) {
  const dir = mkdtempSync(join(tmpdir(), 'inferplane-wrk-'));
  const script = join(dir, 'post.lua');
  writeFileSync(script, wrkScript({ body, headers }));
  return new Promise((resolve, reject) => {
    const child = spawn(
      wrk,
      [
        '-t',
        String(threads),
        '-c',
        String(connections),
        '-d',
        `${Math.max(1, Math.round(durationS))}s`,
        '--timeout',
        `${timeoutS}s`,
        '-s',
        script,
        url,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    child.stdout.on('data', (d) => (out += d.toString('utf8')));
    child.stderr.on('data', (d) => (out += d.toString('utf8')));
    const onAbort = () => child.kill('SIGKILL');
    signal?.addEventListener('abort', onAbort, { once: true });
    child.once('error', (e) => {
      rmSync(dir, { recursive: true, force: true });
      reject(e);
    });
    child.once('exit', (code) => {
      signal?.removeEventListener('abort', onAbort);
      rmSync(dir, { recursive: true, force: true });
      const line = out.split('\n').find((l) => l.startsWith('WRKJSON '));
      if (code !== 0 || !line) {
        reject(new Error(`wrk failed (${code}): ${out.trim().slice(-500)}`));
        return;
      }
      const j = JSON.parse(line.slice('WRKJSON '.length));
      const e = j.errors;
      const errorCount = e.connect + e.read + e.write + e.status + e.timeout;
      resolve({
        rps: j.requests / (j.duration_us / 1e6),
        requests: j.requests,
        errors: e,
        errorCount,
        latencyUs: j.latency_us,
      });
    });
  });
}
