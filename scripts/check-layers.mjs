#!/usr/bin/env node
// Enforces the layer boundaries of DESIGN.md: dependencies point one way, the gateway never
// reads the store, engines and the simulator know nothing of the control plane, and there are
// no import cycles between files. Exit 1 with every violation listed.
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

const SRC = resolve(import.meta.dirname, '..', 'src');
const ALLOWED = {
  core: [],
  store: ['core'],
  sim: ['core'],
  engines: ['core', 'sim'],
  telemetry: ['core'],
  tenancy: ['core', 'store'],
  registry: ['core', 'store'],
  schedule: ['core', 'store'],
  agent: ['core'],
  runtime: ['core', 'engines', 'telemetry'],
  deploy: ['core', 'store', 'tenancy', 'schedule', 'runtime', 'engines', 'telemetry', 'registry'],
  gateway: ['core', 'telemetry'],
  api: ['core', 'deploy', 'tenancy', 'schedule', 'telemetry', 'registry'],
  platform: [
    'core',
    'store',
    'tenancy',
    'schedule',
    'agent',
    'runtime',
    'engines',
    'deploy',
    'gateway',
    'api',
    'telemetry',
    'registry',
  ],
  bench: ['core', 'sim'],
  cli: ['core', 'platform', 'telemetry', 'sim', 'bench', 'engines'],
};

function walk(dir) {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? walk(p) : p.endsWith('.ts') ? [p] : [];
  });
}

const files = walk(SRC);
const graph = new Map();
const problems = [];
const IMPORT =
  /(?:^|\n)\s*(?:import|export)\s[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g;

for (const file of files) {
  const layer = relative(SRC, file).split('/')[0];
  const text = readFileSync(file, 'utf8');
  const deps = [];
  for (const m of text.matchAll(IMPORT)) {
    const spec = m[1] ?? m[2];
    if (!spec.startsWith('.')) continue;
    const target = resolve(dirname(file), spec).replace(/\.js$/, '.ts');
    const tlayer = relative(SRC, target).split('/')[0];
    deps.push(target);
    if (tlayer === layer) continue;
    const allowed = ALLOWED[layer];
    if (!allowed)
      problems.push(`${relative(SRC, file)}: layer '${layer}' has no rule in check-layers`);
    else if (!allowed.includes(tlayer)) {
      problems.push(`${relative(SRC, file)}: '${layer}' may not import '${tlayer}' (${spec})`);
    }
  }
  graph.set(file, deps);
}

// Cycle detection (iterative DFS, white/grey/black).
const state = new Map();
for (const start of files) {
  if (state.get(start)) continue;
  const stack = [[start, 0]];
  const path = [];
  while (stack.length) {
    const top = stack[stack.length - 1];
    const [node, i] = top;
    if (i === 0) {
      state.set(node, 1);
      path.push(node);
    }
    const deps = graph.get(node) ?? [];
    if (i < deps.length) {
      top[1]++;
      const d = deps[i];
      if (state.get(d) === 1) {
        const cyc = path
          .slice(path.indexOf(d))
          .concat(d)
          .map((p) => relative(SRC, p));
        problems.push(`import cycle: ${cyc.join(' → ')}`);
      } else if (!state.get(d) && graph.has(d)) stack.push([d, 0]);
    } else {
      state.set(node, 2);
      path.pop();
      stack.pop();
    }
  }
}

if (problems.length) {
  console.error(
    `check-layers: ${problems.length} problem(s)\n` + problems.map((p) => '  ' + p).join('\n'),
  );
  process.exit(1);
}
console.log(`check-layers: ${files.length} files, layers and cycles OK`);
