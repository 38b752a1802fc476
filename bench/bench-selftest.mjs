#!/usr/bin/env node
// The benchmark tool's own ceiling (build first: npx tsc -p tsconfig.build.json): non-streaming
// requests/s at high concurrency, streamed chunks/s, and the send timing error at 1,000 req/s
// Poisson, against a built-in zero-latency OpenAI target running in a worker thread.
import { runSelfTest } from '../dist/bench/selftest.js';

const r = await runSelfTest({ log: (s) => console.error(s) });
const row = (name, value, target) =>
  console.log(`${name.padEnd(44)} ${value.padStart(12)}   (target ${target})`);
row(
  'non-streaming requests/s (concurrency 128)',
  r.nonStreamingRequestsPerSec.toFixed(0),
  '>= 3,000',
);
row('streamed chunks/s', r.streamedChunksPerSec.toFixed(0), '>= 100,000');
row(`send timing error p50 @ ${r.poissonRate}/s Poisson (ms)`, r.sendLagP50Ms.toFixed(3), '-');
row(`send timing error p99 @ ${r.poissonRate}/s Poisson (ms)`, r.sendLagP99Ms.toFixed(3), '< 1');
row('send timing error max (ms)', r.sendLagMaxMs.toFixed(3), '-');
console.log(
  `requests: ${r.nonStreamingRequests} non-streaming, ${r.streamedChunks} chunks streamed, ${r.poissonRequests} Poisson; errors: ${r.errors}`,
);
