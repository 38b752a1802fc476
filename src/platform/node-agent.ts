// The node agent of this machine, as the platform runs it: simulated GPUs (`--agent sim`, the
// default) or the real ones read with nvidia-smi (`--agent nvidia`). Real GPUs are sampled on a
// timer; each sample updates the GPU gauges on /metrics, and a change in which GPUs are healthy
// re-registers the node, so placement stops using a GPU with uncorrected ECC errors or a fatal Xid.
import { nvidiaNode, simulatedNode } from '../agent/agent.js';
import { createGpuMetrics, exportGpuSnapshot } from '../agent/gpu-metrics.js';
import { NvidiaSmi, type NvidiaSnapshot } from '../agent/nvidia-smi.js';
import { InferplaneError } from '../core/errors.js';
import type { NodeInfo } from '../core/types.js';
import { setGpuSharing } from '../engines/llamacpp.js';
import type { Inventory } from '../schedule/inventory.js';
import type { Logger } from '../telemetry/logger.js';
import type { Metrics } from '../telemetry/metrics.js';
import type { PlatformConfig } from './config.js';

export interface NodeAgent {
  readonly node: NodeInfo;
  /** The last GPU snapshot (real GPUs only). */
  readonly snapshot: NvidiaSnapshot | undefined;
  stop(): void;
}

export async function startNodeAgent(
  config: PlatformConfig,
  deps: { inventory: Inventory; metrics: Metrics; logger: Logger; smi?: NvidiaSmi },
): Promise<NodeAgent> {
  const { inventory, metrics, logger } = deps;
  const name = config.nodeName;
  if (config.agent === 'sim') {
    const node = simulatedNode({
      gpus: config.gpus,
      gpuType: config.gpuType,
      ...(name ? { name } : {}),
    });
    await inventory.registerNode(node);
    for (const g of node.gpus) {
      metrics.gpuMemoryTotal.set(
        { node: node.name, gpu: String(g.index), type: g.type, vendor: g.vendor },
        g.memoryMiB * 1024 * 1024,
      );
    }
    return { node, snapshot: undefined, stop: () => undefined };
  }

  const smi = deps.smi ?? new NvidiaSmi();
  let snapshot: NvidiaSnapshot;
  try {
    snapshot = await smi.sample();
  } catch (e) {
    throw new InferplaneError(
      'IP_VALIDATION',
      `--agent nvidia: nvidia-smi failed (${e instanceof Error ? e.message.split('\n')[0] : String(e)})`,
    );
  }
  if (snapshot.gpus.length === 0) {
    throw new InferplaneError('IP_VALIDATION', '--agent nvidia: nvidia-smi reports no GPU');
  }
  setGpuSharing(config.gpuSharing);
  const gpuMetrics = createGpuMetrics(metrics.registry);
  let node = nvidiaNode(snapshot.gpus, { sharing: config.gpuSharing, ...(name ? { name } : {}) });
  await inventory.registerNode(node);
  exportGpuSnapshot(gpuMetrics, metrics.gpuMemoryTotal, node.name, snapshot);
  logger.info(
    {
      node: node.name,
      gpus: snapshot.gpus.map((g) => `${g.index}: ${g.name} (${g.type}, ${g.memoryTotalMiB} MiB)`),
      driver: snapshot.gpus[0]?.driverVersion,
      sharing: config.gpuSharing,
    },
    'node agent: nvidia GPUs',
  );

  let healthyKey = snapshot.gpus.map((g) => `${g.index}:${g.healthy}`).join(',');
  let busy = false;
  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    smi
      .sample()
      .then(async (s) => {
        snapshot = s;
        exportGpuSnapshot(gpuMetrics, metrics.gpuMemoryTotal, node.name, s);
        const key = s.gpus.map((g) => `${g.index}:${g.healthy}`).join(',');
        if (key !== healthyKey) {
          healthyKey = key;
          node = nvidiaNode(s.gpus, { sharing: config.gpuSharing, name: node.name });
          await inventory.registerNode(node);
          logger.warn(
            { unhealthy: s.gpus.filter((g) => !g.healthy).map((g) => g.index) },
            'node agent: GPU health changed; inventory updated',
          );
        }
      })
      .catch((e: unknown) => logger.warn({ err: e }, 'node agent: nvidia-smi sample failed'))
      .finally(() => {
        busy = false;
      });
  }, config.telemetryIntervalMs);
  timer.unref();
  return {
    get node() {
      return node;
    },
    get snapshot() {
      return snapshot;
    },
    stop: () => clearInterval(timer),
  };
}
