import { afterEach, describe, expect, it } from 'vitest';
import { FaultController } from '../../src/sim/faults.js';
import { createSimServer, type SimServer } from '../../src/sim/server.js';
import { GpuTelemetry } from '../../src/sim/telemetry.js';

const servers: SimServer[] = [];

afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

interface Gpu {
  index: number;
  uuid: string;
  name: string;
  memory_total_mib: number;
  memory_used_mib: number;
  utilization_gpu_pct: number;
  temperature_c: number;
  power_w: number;
  ecc_sbe_total: number;
  ecc_dbe_total: number;
  xid_events: unknown[];
  clocks_throttle_reasons: string[];
}

describe('GPU telemetry', () => {
  it('GET /telemetry/gpus describes the replica GPUs like nvidia-smi would', async () => {
    const server = createSimServer({ tp: 2, replicaIndex: 0, timeScale: 0.05 });
    servers.push(server);
    const port = await server.listen(0);
    const res = await fetch(`http://127.0.0.1:${port}/telemetry/gpus`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as {
      replica: number;
      timestamp: string;
      driver_version: string;
      gpus: Gpu[];
    };
    expect(body.replica).toBe(0);
    expect(Number.isNaN(Date.parse(body.timestamp))).toBe(false);
    expect(body.gpus).toHaveLength(2);
    for (const [i, g] of body.gpus.entries()) {
      expect(g.index).toBe(i);
      expect(g.uuid).toMatch(/^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
      expect(g.name).toBe('NVIDIA H100 80GB HBM3');
      expect(g.memory_total_mib).toBe(81559);
      // Weights (8B params bf16 / 2 GPUs ≈ 7.7 GiB) + the KV cache: most of the memory (0.9 util).
      expect(g.memory_used_mib).toBeGreaterThan(60_000);
      expect(g.memory_used_mib).toBeLessThanOrEqual(81559);
      expect(g.utilization_gpu_pct).toBe(0);
      expect(g.temperature_c).toBeGreaterThan(25);
      expect(g.temperature_c).toBeLessThan(45);
      expect(g.power_w).toBeGreaterThan(50);
      expect(g.power_w).toBeLessThan(120);
      expect(g).toMatchObject({
        ecc_sbe_total: 0,
        ecc_dbe_total: 0,
        xid_events: [],
        clocks_throttle_reasons: [],
      });
    }
    expect(body.gpus[0]?.uuid).not.toBe(body.gpus[1]?.uuid);
  });

  it('utilization follows the share of recent samples the engine was busy', () => {
    let busy = false;
    const t = new GpuTelemetry({
      replicaIndex: 2,
      tp: 1,
      gpuType: 'A100-80GB',
      memoryUsedBytesPerGpu: () => 10 * 2 ** 30,
      busy: () => busy,
      faults: new FaultController(),
      sampleMs: 100,
      windowMs: 1000,
    });
    for (let i = 0; i < 10; i++) t.sample();
    expect(t.snapshot().gpus[0]?.utilization_gpu_pct).toBe(0);
    busy = true;
    for (let i = 0; i < 5; i++) t.sample();
    const half = t.snapshot().gpus[0]!;
    expect(half.utilization_gpu_pct).toBe(50);
    for (let i = 0; i < 10; i++) t.sample();
    const full = t.snapshot().gpus[0]!;
    expect(full).toMatchObject({
      index: 2,
      name: 'NVIDIA A100-SXM4-80GB',
      memory_total_mib: 81920,
      memory_used_mib: 10240,
      utilization_gpu_pct: 100,
    });
    expect(full.temperature_c).toBeGreaterThan(half.temperature_c);
    expect(full.power_w).toBeGreaterThan(300);
  });

  it('reports the engine busy while it generates', async () => {
    const server = createSimServer({ timeScale: 1 });
    servers.push(server);
    const port = await server.listen(0);
    const ctl = new AbortController();
    const res = await fetch(`http://127.0.0.1:${port}/v1/completions`, {
      method: 'POST',
      body: JSON.stringify({ prompt: 'x', max_tokens: 2000, stream: true }),
      signal: ctl.signal,
    });
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    await reader.read();
    for (let i = 0; i < 20; i++) server.telemetry.sample();
    expect(server.telemetry.snapshot().gpus[0]?.utilization_gpu_pct).toBe(100);
    ctl.abort();
  });
});
