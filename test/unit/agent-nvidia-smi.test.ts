// The node agent on real GPUs: nvidia-smi parsers on output captured on an H100
// (test/fixtures/nvidia-smi/README.md), the inventory it builds (health, sharing), the gauges it
// exports and `describe node`'s reading of them.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Registry, Gauge } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { knownGpuType, nvidiaNode } from '../../src/agent/agent.js';
import { createGpuMetrics, exportGpuSnapshot } from '../../src/agent/gpu-metrics.js';
import {
  NvidiaSmi,
  clockEventReasons,
  gpuTypeOf,
  parseQueryGpuCsv,
  parseTopoMatrix,
  parseXidEvents,
  samePciDevice,
} from '../../src/agent/nvidia-smi.js';
import { describeNode, gpuTelemetryOf } from '../../src/cli/commands/describe.js';
import { cudaDevices } from '../../src/engines/llamacpp.js';

const FIX = resolve(import.meta.dirname, '../fixtures/nvidia-smi/h100');
const fixture = (name: string): string => readFileSync(resolve(FIX, name), 'utf8');

describe('parseQueryGpuCsv', () => {
  it('reads the idle H100 query (noheader, nounits)', () => {
    const [g, ...rest] = parseQueryGpuCsv(fixture('query-gpu.csv'));
    expect(rest).toEqual([]);
    expect(g).toEqual({
      index: 0,
      uuid: 'GPU-6ddea713-b201-fa18-c48e-0cd45caa1b82',
      name: 'NVIDIA H100 80GB HBM3',
      pciBusId: '00000000:00:06.0',
      driverVersion: '580.159.04',
      memoryTotalMiB: 81559,
      memoryUsedMiB: 0,
      utilizationGpuPct: 0,
      temperatureC: 33,
      powerW: 71.72,
      powerLimitW: 700,
      eccCorrected: 0,
      eccUncorrected: 0,
      clockEventReasons: ['GPU Idle'],
      computeCap: '9.0',
    });
  });

  it('reads the busy query (llama.cpp serving 48 streams)', () => {
    const [g] = parseQueryGpuCsv(fixture('query-gpu-busy.csv'));
    expect(g?.memoryUsedMiB).toBe(62565);
    expect(g?.utilizationGpuPct).toBe(54);
    expect(g?.temperatureC).toBe(62);
    expect(g?.powerW).toBeCloseTo(379.18);
    expect(g?.clockEventReasons).toEqual([]);
  });

  it('skips the header of --format=csv and strips units left on values', () => {
    const [g, ...rest] = parseQueryGpuCsv(fixture('query-gpu-header.csv'));
    expect(rest).toEqual([]);
    expect(g?.memoryTotalMiB).toBe(81559);
    expect(g?.powerW).toBeCloseTo(71.73);
    expect(g?.utilizationGpuPct).toBe(0);
  });

  it('maps N/A and [Not Supported] to null, and reads several GPUs', () => {
    const text =
      '0, GPU-a, NVIDIA L4, 00000000:01:00.0, 550.54, 23034, 10, [N/A], 40, [Not Supported], 72.00, [N/A], [N/A], 0x0000000000000004, 8.9\n' +
      '1, GPU-b, NVIDIA L4, 00000000:02:00.0, 550.54, 23034, 12, 3, 41, 20.5, 72.00, 1, 2, 0x0000000000000044, 8.9\n' +
      'garbage line\n';
    const gpus = parseQueryGpuCsv(text);
    expect(gpus.map((g) => g.index)).toEqual([0, 1]);
    expect(gpus[0]).toMatchObject({
      utilizationGpuPct: null,
      powerW: null,
      eccCorrected: null,
      eccUncorrected: null,
      clockEventReasons: ['SW Power Cap'],
    });
    expect(gpus[1]).toMatchObject({ eccCorrected: 1, eccUncorrected: 2 });
    expect(gpus[1]?.clockEventReasons).toEqual(['SW Power Cap', 'HW Thermal Slowdown']);
  });

  it('names clock event bits', () => {
    expect(clockEventReasons('0x0000000000000000')).toEqual([]);
    expect(clockEventReasons('0x0000000000000001')).toEqual(['GPU Idle']);
    expect(clockEventReasons('[N/A]')).toEqual([]);
  });
});

describe('parseTopoMatrix', () => {
  it('reads the one-GPU H100 matrix (ANSI-underlined header, legend after it)', () => {
    const t = parseTopoMatrix(fixture('topo-m.txt'));
    expect(t.gpus).toEqual(['GPU0']);
    expect(t.links).toEqual({ GPU0: { GPU0: 'X' } });
    expect(t.cpuAffinity).toEqual({ GPU0: '0-15' });
    expect(t.numaAffinity).toEqual({ GPU0: '0' });
    expect(t.nics).toEqual([]);
  });

  it('reads links between GPUs and skips NIC rows (the layout of a multi-GPU node)', () => {
    const text = [
      '\tGPU0\tGPU1\tNIC0\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID',
      'GPU0\t X \tNV18\tPXB\t0-55\t0\t\tN/A',
      'GPU1\tNV18\t X \tSYS\t56-111\t1\t\tN/A',
      'NIC0\tPXB\tSYS\t X ',
      '',
      'Legend:',
    ].join('\n');
    const t = parseTopoMatrix(text);
    expect(t.gpus).toEqual(['GPU0', 'GPU1']);
    expect(t.links.GPU0).toEqual({ GPU0: 'X', GPU1: 'NV18' });
    expect(t.links.GPU1).toEqual({ GPU0: 'NV18', GPU1: 'X' });
    expect(t.cpuAffinity).toEqual({ GPU0: '0-55', GPU1: '56-111' });
    expect(t.nics).toEqual(['NIC0']);
  });

  it('gives an empty topology for output it does not recognize', () => {
    expect(parseTopoMatrix('NVIDIA-SMI has failed').gpus).toEqual([]);
  });
});

describe('Xid events', () => {
  it('finds none in the captured kernel log', () => {
    expect(parseXidEvents(fixture('dmesg-xid.txt'))).toEqual([]);
  });

  it("reads the kernel's Xid lines and matches their PCI address to nvidia-smi's", () => {
    const log =
      '[ 1234.567890] NVRM: Xid (PCI:0000:00:06): 79, pid=1234, name=llama-server, GPU has fallen off the bus.\n' +
      '[ 1300.000001] NVRM: Xid (PCI:0000:3b:00): 13, Graphics SM Warp Exception\n';
    const x = parseXidEvents(log);
    expect(x).toEqual([
      {
        pciBusId: '0000:00:06',
        code: 79,
        message: 'pid=1234, name=llama-server, GPU has fallen off the bus.',
        uptimeS: 1234.56789,
      },
      {
        pciBusId: '0000:3b:00',
        code: 13,
        message: 'Graphics SM Warp Exception',
        uptimeS: 1300.000001,
      },
    ]);
    expect(samePciDevice('0000:00:06', '00000000:00:06.0')).toBe(true);
    expect(samePciDevice('0000:3b:00', '00000000:3B:00.0')).toBe(true);
    expect(samePciDevice('0000:00:07', '00000000:00:06.0')).toBe(false);
  });
});

describe('inventory from real GPUs', () => {
  const sample = (csv: string, dmesg = '') => {
    const runs: string[][] = [];
    const smi = new NvidiaSmi({
      run: (cmd, args) => {
        runs.push([cmd, ...args]);
        if (cmd === 'dmesg') return Promise.resolve(dmesg);
        if (args[0] === 'topo') return Promise.resolve(fixture('topo-m.txt'));
        return Promise.resolve(csv);
      },
    });
    return { smi, runs };
  };

  it('names GPU types like the simulator does', () => {
    expect(knownGpuType('NVIDIA H100 80GB HBM3')).toBe('H100-80GB');
    expect(gpuTypeOf('NVIDIA H100 80GB HBM3', 81559)).toBe('H100-80GB');
    expect(gpuTypeOf('NVIDIA H200', 143771)).toBe('H200-141GB');
    expect(gpuTypeOf('NVIDIA L40S', 46068)).toBe('L40S-48GB');
    expect(gpuTypeOf('NVIDIA GeForce RTX 4090', 24564)).toBe('GeForce-RTX-4090');
  });

  it('samples nvidia-smi once for the query and once for the topology', async () => {
    const { smi, runs } = sample(fixture('query-gpu.csv'));
    const a = await smi.sample(new Date('2026-11-23T00:00:00Z'));
    await smi.sample();
    expect(runs.filter((r) => r[1] === 'topo')).toHaveLength(1);
    expect(runs.filter((r) => r[1]?.startsWith('--query-gpu='))).toHaveLength(2);
    expect(a.gpus[0]).toMatchObject({ type: 'H100-80GB', healthy: true, xid: [] });
    expect(a.topology.cpuAffinity.GPU0).toBe('0-15');
  });

  it('offers healthy GPUs to placement, shared N ways when asked', async () => {
    const { smi } = sample(fixture('query-gpu.csv'));
    const s = await smi.sample();
    const one = nvidiaNode(s.gpus, { name: 'h100' });
    expect(one.gpus).toEqual([
      {
        index: 0,
        uuid: 'GPU-6ddea713-b201-fa18-c48e-0cd45caa1b82',
        type: 'H100-80GB',
        memoryMiB: 81559,
        vendor: 'nvidia',
      },
    ]);
    expect(one.labels['inferplane.dev/gpu-type']).toBe('H100-80GB');
    const two = nvidiaNode(s.gpus, { name: 'h100', sharing: 2 });
    expect(two.gpus.map((g) => [g.index, g.memoryMiB])).toEqual([
      [0, 40779],
      [1, 40779],
    ]);
    expect(two.labels['inferplane.dev/gpu-sharing']).toBe('2');
    // Both slots are CUDA device 0; slots 2 and 3 would be device 1.
    expect(cudaDevices([0, 1], 2)).toEqual([0]);
    expect(cudaDevices([1, 2], 2)).toEqual([0, 1]);
    expect(cudaDevices([3], 1)).toEqual([3]);
  });

  it('leaves out a GPU with a fatal Xid or uncorrected ECC errors', async () => {
    const xid = '[ 99.1] NVRM: Xid (PCI:0000:00:06): 79, pid=1, GPU has fallen off the bus.\n';
    const { smi } = sample(fixture('query-gpu.csv'), xid);
    const s = await smi.sample();
    expect(s.gpus[0]?.healthy).toBe(false);
    expect(s.gpus[0]?.xid.map((x) => x.code)).toEqual([79]);
    expect(nvidiaNode(s.gpus, { name: 'h100' }).gpus).toEqual([]);
    const ecc = fixture('query-gpu.csv').replace(', 0, 0, 0x', ', 0, 2, 0x');
    const s2 = await sample(ecc).smi.sample();
    expect(s2.gpus[0]?.eccUncorrected).toBe(2);
    expect(s2.gpus[0]?.healthy).toBe(false);
  });
});

describe('GPU gauges and describe node', () => {
  it('exports a snapshot under the inferplane_gpu_* names', async () => {
    const registry = new Registry();
    const total = new Gauge({
      name: 'inferplane_gpu_memory_total_bytes',
      help: 'x',
      labelNames: ['node', 'gpu', 'type', 'vendor'] as const,
      registers: [registry],
    });
    const m = createGpuMetrics(registry);
    const smi = new NvidiaSmi({
      run: (cmd, args) =>
        Promise.resolve(
          cmd === 'dmesg'
            ? ''
            : args[0] === 'topo'
              ? fixture('topo-m.txt')
              : fixture('query-gpu-busy.csv'),
        ),
    });
    exportGpuSnapshot(m, total, 'h100', await smi.sample(new Date(1_795_405_052_991)));
    const text = await registry.metrics();
    const l = 'node="h100",gpu="0",type="H100-80GB",vendor="nvidia"';
    expect(text).toContain(`inferplane_gpu_memory_total_bytes{${l}} 85520809984`);
    expect(text).toContain(`inferplane_gpu_memory_used_bytes{${l}} ${62565 * 1024 * 1024}`);
    expect(text).toContain(`inferplane_gpu_utilization_ratio{${l}} 0.54`);
    expect(text).toContain(`inferplane_gpu_temperature_celsius{${l}} 62`);
    expect(text).toContain(`inferplane_gpu_power_watts{${l}} 379.18`);
    expect(text).toContain(`inferplane_gpu_ecc_errors{${l},kind="uncorrected"} 0`);
    expect(text).toContain(`inferplane_gpu_healthy{${l}} 1`);
    expect(text).toContain('inferplane_gpu_link_info{node="h100",gpu="0",peer="0",link="X"} 1');
    expect(text).toContain(
      'inferplane_gpu_telemetry_timestamp_seconds{node="h100"} 1795405052.991',
    );
  });

  it('reads the series the platform served on the H100 back into a node view', () => {
    const t = gpuTelemetryOf(fixture('metrics-busy.prom'), 'h100');
    expect(t).toHaveLength(1);
    expect(t[0]?.info.name).toBe('NVIDIA H100 80GB HBM3');
    expect(t[0]?.values.utilization_ratio).toBe(0.84);
    expect(t[0]?.values.memory_used_bytes).toBe(65604157440);
    expect(gpuTelemetryOf(fixture('metrics-busy.prom'), 'other')).toEqual([]);
    const text = describeNode(
      {
        name: 'h100',
        state: 'ready',
        lastSeen: '2026-11-23T03:34:12.980Z',
        labels: { 'inferplane.dev/gpu-type': 'H100-80GB' },
        gpuTotal: 1,
        gpuFree: 0,
        gpus: [
          {
            index: 0,
            uuid: 'u',
            type: 'H100-80GB',
            memoryMiB: 81559,
            vendor: 'nvidia',
            replica: 'r1',
          },
        ],
      },
      t,
    );
    expect(text).toContain('memory 61.1 / 79.6 GiB  util 84%  temp 66 C  power 507 / 700 W');
    expect(text).toContain('healthy yes  ECC corrected 0 uncorrected 0  Xid none');
  });
});
