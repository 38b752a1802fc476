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
