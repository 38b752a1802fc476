// `inferplane rollout status|promote|abort|undo <deployment>`: a deployment's canary rollout
// (src/deploy/rollout.ts): step, version weights and each gate's value against its threshold.
import type { Command } from 'commander';
import type { ApplyResponse, RolloutView } from '../../core/api-types.js';
import { formatFields, formatJson, formatTable, processIo, type Io } from '../output.js';
import { clientFor, deploymentPath, examples } from './common.js';

interface RolloutOptions {
  json?: boolean;
}

function fmt(v: number | string | null, gate: string): string {
  if (v === null) return '-';
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v);
  if (gate === 'errorRate') return `${(v * 100).toFixed(2)}%`;
  if (gate === 'gpuMemoryPct') return `${v}%`;
  return `${v} ms`;
}

/** The rollout status as text: fields, then one row per gate. */
export function renderRollout(v: RolloutView): string {
  const weights = Object.entries(v.weights)
    .map(([version, w]) => `${version} ${w}%`)
    .join(', ');
  const fields: Array<[string, string]> = [
    ['Deployment', v.deployment],
    ['Phase', v.phase],
    ['Stable', `${v.stable.version} (generation ${v.stable.generation})`],
    ['Canary', v.canary ? `${v.canary.version} (generation ${v.canary.generation})` : '-'],
    ['Step', v.steps > 0 ? `${v.step}/${v.steps}` : '-'],
    ['Weights', weights],
  ];
  if (v.intervalMs !== null) fields.push(['Gate interval', `${v.intervalMs} ms`]);
  if (v.warmupMs !== null) fields.push(['Warmup', `${v.warmupMs} ms`]);
  if (v.reason) fields.push(['Reason', v.reason]);
  if (v.rollbackMs !== undefined) fields.push(['Rollback', `${v.rollbackMs} ms`]);
  let out = formatFields(fields);
  const gates = v.gates.length > 0 ? v.gates : v.failedGate ? [v.failedGate] : [];
  if (gates.length > 0) {
    out +=
      '\nGates (last interval):\n' +
      formatTable(
        ['GATE', 'VALUE', 'THRESHOLD', 'STATUS', 'SAMPLES'],
        gates.map((g) => [
          g.gate,
          fmt(g.value, g.gate),
          g.gate === 'probe' ? JSON.stringify(g.threshold) : fmt(g.threshold, g.gate),
          g.status + (g.note ? ` (${g.note})` : ''),
          g.samples === undefined ? '' : String(g.samples),
        ]),
      );
  }
  return out;
}

export function registerRollout(program: Command, io: Io = processIo): void {
  const rollout = program
    .command('rollout')
    .summary("show or steer a deployment's canary rollout")
    .description(
      "show or steer a deployment's canary rollout: status (step, weights, gates), promote\n" +
        '(to 100% now), abort (roll back: traffic first, then the canary goes), undo (after a\n' +
        'completed rollout, roll the previous version out again)',
    )
    .addHelpText(
      'after',
      examples(
        'inferplane rollout status team-a-llama-8b',
        'inferplane rollout promote team-a-llama-8b',
        'inferplane rollout abort team-a-llama-8b',
        'inferplane rollout undo team-a-llama-8b',
      ),
    );
  const action =
    (verb: 'status' | 'promote' | 'abort') =>
    async (name: string, opts: RolloutOptions, cmd: Command): Promise<void> => {
      const client = clientFor(cmd, io);
      const path = deploymentPath(name, verb === 'status' ? '/rollout' : `/rollout/${verb}`);
      const v = await client.request<RolloutView>(verb === 'status' ? 'GET' : 'POST', path);
      io.out(opts.json ? formatJson(v) : renderRollout(v));
    };
  rollout
    .command('status')
    .description('phase, step, version weights and each gate against its threshold')
    .argument('<deployment>', 'deployment name')
    .option('--json', 'print the raw API JSON')
    .action(action('status'));
  rollout
    .command('promote')
    .description('promote the canary to 100% now (skips the remaining steps and gates)')
    .argument('<deployment>', 'deployment name')
    .option('--json', 'print the raw API JSON')
    .action(action('promote'));
  rollout
    .command('abort')
    .description('roll back: traffic to the stable version first, then the canary is torn down')
    .argument('<deployment>', 'deployment name')
    .option('--json', 'print the raw API JSON')
    .action(action('abort'));
  rollout
    .command('undo')
    .description('after a completed rollout, roll the previous version out again')
    .argument('<deployment>', 'deployment name')
    .option('--json', 'print the raw API JSON')
    .action(async (name: string, opts: RolloutOptions, cmd: Command) => {
      const res = await clientFor(cmd, io).request<ApplyResponse>(
        'POST',
        deploymentPath(name, '/rollout/undo'),
      );
      io.out(opts.json ? formatJson(res) : `deployment/${res.deployment.name} ${res.result}\n`);
    });
}
