// The node agent: reports this node's inventory (and, later, GPU telemetry and health) to the
// control plane. On simulated nodes the GPUs are described from a catalogue of real GPU types.
import { hostname } from 'node:os';
import { createHash } from 'node:crypto';
import type { GpuInfo, NodeInfo } from '../core/types.js';

/** GPU types the simulator can stand in for (memory as the driver reports it). */
export const SIM_GPU_TYPES: Readonly<Record<string, { memoryMiB: number; product: string }>> = {
  'H100-80GB': { memoryMiB: 81559, product: 'NVIDIA H100 80GB HBM3' },
  'H200-141GB': { memoryMiB: 143771, product: 'NVIDIA H200' },
  'A100-80GB': { memoryMiB: 81920, product: 'NVIDIA A100-SXM4-80GB' },
  'L40S-48GB': { memoryMiB: 46068, product: 'NVIDIA L40S' },
  'B200-180GB': { memoryMiB: 183359, product: 'NVIDIA B200' },
};

export interface SimNodeOptions {
  name?: string;
  gpus: number;
  gpuType: string;
}

export function simulatedNode(opts: SimNodeOptions): NodeInfo {
  const type = SIM_GPU_TYPES[opts.gpuType];
  if (!type) {
    throw new Error(
      `unknown simulated GPU type ${opts.gpuType} (known: ${Object.keys(SIM_GPU_TYPES).join(', ')})`,
    );
  }
  const name = opts.name ?? hostname();
  const gpus: GpuInfo[] = Array.from({ length: opts.gpus }, (_, index) => ({
    index,
    uuid: `GPU-sim-${createHash('sha1').update(`${name}/${index}`).digest('hex').slice(0, 24)}`,
    type: opts.gpuType,
    memoryMiB: type.memoryMiB,
    vendor: 'sim',
  }));
  return {
    name,
    labels: { 'inferplane.dev/gpu-type': opts.gpuType, 'inferplane.dev/simulated': 'true' },
    gpus,
  };
}

export interface NvidiaNodeOptions {
  name?: string;
  /**
   * Replicas that may share one GPU (time-slicing, like the NVIDIA device plugin's `replicas`):
   * each physical GPU is offered as this many slots of 1/N of its memory. Default 1.
   */
  sharing?: number;
}

/** What the node agent reads of one physical GPU (the subset of an nvidia-smi sample it needs). */
export interface PhysicalGpu {
  index: number;
  uuid: string;
  name: string;
  memoryTotalMiB: number;
  type: string;
  healthy: boolean;
}

/** The GPU type name of a product: the simulator's name when it knows the product. */
export function knownGpuType(product: string): string | undefined {
  for (const [type, info] of Object.entries(SIM_GPU_TYPES))
    if (info.product === product) return type;
  return undefined;
}

/**
 * This node's inventory from real GPUs. Unhealthy GPUs (uncorrected ECC errors, a fatal Xid) are
 * left out, so placement does not use them. With sharing N, GPU p is offered as slots p·N … p·N+N−1;
 * slot s is device ⌊s / N⌋ (engines' `cudaDevices`).
 */
export function nvidiaNode(gpus: readonly PhysicalGpu[], opts: NvidiaNodeOptions = {}): NodeInfo {
  const name = opts.name ?? hostname();
  const sharing = Math.max(1, Math.floor(opts.sharing ?? 1));
  const out: GpuInfo[] = [];
  for (const g of gpus) {
    if (!g.healthy) continue;
    for (let k = 0; k < sharing; k++) {
      out.push({
        index: g.index * sharing + k,
        uuid: sharing === 1 ? g.uuid : `${g.uuid}/${k}`,
        type: g.type,
        memoryMiB: Math.floor(g.memoryTotalMiB / sharing),
        vendor: 'nvidia',
      });
    }
  }
  const types = [...new Set(gpus.map((g) => g.type))];
  return {
    name,
    labels: {
      ...(types.length === 1 ? { 'inferplane.dev/gpu-type': types[0] ?? '' } : {}),
      'inferplane.dev/gpu-product': gpus[0]?.name ?? '',
      ...(sharing > 1 ? { 'inferplane.dev/gpu-sharing': String(sharing) } : {}),
    },
    gpus: out,
  };
}
