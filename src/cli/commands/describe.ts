// `inferplane describe deployment|tenant <name>`: everything about one deployment or tenant.
import { Argument, type Command } from 'commander';
import type {
  DeploymentDetail,
  ListResponse,
  NodeSummary,
  TenantView,
} from '../../core/api-types.js';
import { InferplaneError } from '../../core/errors.js';
import { formatJson, processIo, type Io } from '../output.js';
import { describeDeployment } from '../render.js';
import {
  clientFor,
  deploymentPath,
  examples,
  resourceParser,
  type ResourceKind,
} from './common.js';
import { describeTenant } from './tenant.js';

interface DescribeOptions {
  json?: boolean;
}

export function registerDescribe(program: Command, io: Io = processIo): void {
  program
    .command('describe')
    .summary('show a deployment, tenant or node in detail')
    .description(
      'show a deployment in detail (summary, spec, replicas and recent events), or a tenant\n' +
        '(limits, policy, and each quota with its use and limit), or a node (its GPUs with the\n' +
        "node agent's telemetry: memory, utilization, temperature, power, ECC, Xid, topology)\n" +
        '(aliases: deployment, deploy, dep; tenant; node)',
    )
    .addArgument(
      new Argument('<resource>', 'deployment | tenant | node').argParser(
        resourceParser(['deployments', 'tenants', 'nodes']),
      ),
    )
    .argument('<name>', 'deployment, tenant or node name')
    .option('--json', 'print the raw API JSON')
    .addHelpText(
      'after',
      examples(
        'inferplane describe deployment team-a-llama-8b',
        'inferplane describe dep team-a-llama-8b --json',
        'inferplane describe tenant team-a        # quotas: used / limit',
        'inferplane describe node gpu-node-1      # GPUs and their telemetry (operator key)',
      ),
    )
    .action(async (kind: ResourceKind, name: string, opts: DescribeOptions, cmd: Command) => {
      const client = clientFor(cmd, io);
      if (kind === 'tenants') {
        const view = await client.request<TenantView>(
          'GET',
          `/tenants/${encodeURIComponent(name)}`,
        );
        io.out(opts.json ? formatJson(view) : describeTenant(view, io.now()));
        return;
      }
      if (kind === 'nodes') {
        const nodes = await client.request<ListResponse<NodeSummary>>('GET', '/nodes');
        const node = nodes.items.find((n) => n.name === name);
        if (!node) {
          throw new InferplaneError('IP_NOT_FOUND', `node ${name} not found`, {
            details: [
              { path: 'name', message: `known: ${nodes.items.map((n) => n.name).join(', ')}` },
            ],
          });
        }
        const telemetry = gpuTelemetryOf(await client.text('/metrics'), name);
        io.out(opts.json ? formatJson({ ...node, telemetry }) : describeNode(node, telemetry));
        return;
      }
      const detail = await client.request<DeploymentDetail>('GET', deploymentPath(name));
      io.out(opts.json ? formatJson(detail) : describeDeployment(detail, io.now()));
    });
}

/** One GPU's telemetry as the node agent exports it on /metrics (inferplane_gpu_* series). */
export interface GpuTelemetryView {
  gpu: string;
  info: Record<string, string>;
  values: Record<string, number>;
  ecc: Record<string, number>;
  xid: Record<string, number>;
  clockEvents: string[];
  links: Record<string, string>;
}

const SERIES = /^(inferplane_gpu_[a-z_]+)\{([^}]*)\}\s+(\S+)/;

function labelsOf(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of text.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
    out[m[1] as string] = (m[2] as string).replace(/\\(.)/g, (_, c: string) =>
      c === 'n' ? '\n' : c,
    );
  }
  return out;
}

/** The inferplane_gpu_* series of one node in Prometheus text, by GPU. */
export function gpuTelemetryOf(metrics: string, node: string): GpuTelemetryView[] {
  const byGpu = new Map<string, GpuTelemetryView>();
  for (const line of metrics.split('\n')) {
    const m = SERIES.exec(line);
    if (!m) continue;
    const l = labelsOf(m[2] as string);
    // inferplane_gpu_allocated is per placement slot, not per device.
    if (l.node !== node || l.gpu === undefined || m[1] === 'inferplane_gpu_allocated') continue;
    const value = Number(m[3]);
    let v = byGpu.get(l.gpu);
    if (!v) {
      v = { gpu: l.gpu, info: {}, values: {}, ecc: {}, xid: {}, clockEvents: [], links: {} };
      byGpu.set(l.gpu, v);
    }
    const name = (m[1] as string).slice('inferplane_gpu_'.length);
    if (name === 'info') {
      const { node: _n, gpu: _g, ...rest } = l;
      v.info = rest;
    } else if (name === 'ecc_errors') v.ecc[l.kind ?? ''] = value;
    else if (name === 'xid_events') v.xid[l.code ?? ''] = value;
    else if (name === 'clock_event_active') v.clockEvents.push(l.reason ?? '');
    else if (name === 'link_info') v.links[l.peer ?? ''] = l.link ?? '';
    else v.values[name] = value;
  }
  return [...byGpu.values()].sort((a, b) => Number(a.gpu) - Number(b.gpu));
}

function fmt(n: number | undefined, unit: string, digits = 0): string {
  return n === undefined || !Number.isFinite(n) ? '-' : `${n.toFixed(digits)}${unit}`;
}

/** `describe node`: the node, its placement slots, and each physical GPU's telemetry. */
export function describeNode(node: NodeSummary, telemetry: GpuTelemetryView[]): string {
  const GiB = 1024 ** 3;
  const lines = [
    `Name:       ${node.name}`,
    `State:      ${node.state}`,
    `Last seen:  ${node.lastSeen}`,
    `Labels:     ${
      Object.entries(node.labels)
        .map(([k, v]) => `${k}=${v}`)
        .join(', ') || '-'
    }`,
    `GPU slots:  ${node.gpuTotal} (${node.gpuFree} free)`,
    '',
    'Slots:',
    ...node.gpus.map(
      (g) =>
        `  ${String(g.index).padEnd(4)} ${g.type.padEnd(12)} ${String(g.memoryMiB).padStart(7)} MiB  ${g.vendor.padEnd(6)} ${g.replica ?? '-'}`,
    ),
  ];
  if (telemetry.length === 0) {
    lines.push(
      '',
      'Telemetry:  none (simulated GPUs report on their engines: GET /telemetry/gpus)',
    );
    return lines.join('\n') + '\n';
  }
  lines.push('', 'GPUs:');
  for (const t of telemetry) {
    const v = t.values;
    lines.push(
      `  GPU ${t.gpu}: ${t.info.name ?? '?'}  uuid ${t.info.uuid ?? '?'}  pci ${t.info.pci_bus_id ?? '?'}`,
      `    driver ${t.info.driver_version || '-'}  compute ${t.info.compute_cap || '-'}  ` +
        `CPU affinity ${t.info.cpu_affinity || '-'}  NUMA ${t.info.numa_affinity || '-'}`,
      `    memory ${fmt((v.memory_used_bytes ?? NaN) / GiB, '', 1)} / ${fmt((v.memory_total_bytes ?? NaN) / GiB, ' GiB', 1)}  ` +
        `util ${fmt((v.utilization_ratio ?? NaN) * 100, '%')}  temp ${fmt(v.temperature_celsius, ' C')}  ` +
        `power ${fmt(v.power_watts, '', 0)} / ${fmt(v.power_limit_watts, ' W')}`,
      `    healthy ${v.healthy === undefined ? '-' : v.healthy === 1 ? 'yes' : 'NO'}  ` +
        `ECC corrected ${fmt(t.ecc.corrected, '')} uncorrected ${fmt(t.ecc.uncorrected, '')}  ` +
        `Xid ${
          Object.entries(t.xid)
            .map(([c, n]) => `${c}×${n}`)
            .join(' ') || 'none'
        }  ` +
        `clock events ${t.clockEvents.join(', ') || 'none'}`,
      `    links ${
        Object.entries(t.links)
          .map(([p, l]) => `GPU${p}:${l}`)
          .join(' ') || '-'
      }`,
    );
  }
  return lines.join('\n') + '\n';
}
