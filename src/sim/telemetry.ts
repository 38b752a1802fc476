/**
 * Simulated GPU telemetry of one replica, shaped like what a node agent parses from
 *
 *   nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used,utilization.gpu,\
 *     temperature.gpu,power.draw,ecc.errors.corrected.aggregate.total,\
 *     ecc.errors.uncorrected.aggregate.total,clocks_throttle_reasons.active --format=csv
 *
 * plus the Xid events a real agent would read from the kernel log (`NVRM: Xid (PCI:…): 79, …`).
 * Served by the sim server at `GET /telemetry/gpus`:
 *
 *   { "replica": 0, "timestamp": "…", "driver_version": "sim", "gpus": [ {
 *       "index": 0, "uuid": "GPU-…", "name": "NVIDIA H100 80GB HBM3",
 *       "memory_total_mib": 81559, "memory_used_mib": 73000, "utilization_gpu_pct": 87,
 *       "temperature_c": 69, "power_w": 602, "power_limit_w": 700,
 *       "ecc_sbe_total": 0, "ecc_dbe_total": 0,
 *       "xid_events": [ {"code": 79, "time": "…", "message": "GPU has fallen off the bus"} ],
 *       "clocks_throttle_reasons": [] } ] }
 *
 * A replica with tensor parallelism `tp` has `tp` GPUs; their indices are `replicaIndex × tp + i`
 * (as if the replicas of a fleet sat on consecutive GPUs of one node). Memory used is the engine's
 * reservation (weights / tp + the KV-cache blocks it allocated / tp), as vLLM grabs it at start.
 * Utilization is the share of the last two seconds the engine had requests running (sampled every
 * 100 ms); temperature and power follow utilization. Faults (see faults.ts) add Xid events, ECC
 * counts and the thermal throttle state on the GPU they name.
 */
import { createHash } from 'node:crypto';
import type { FaultController } from './faults.js';
import { THERMAL_FAULT_TEMPERATURE_C } from './faults.js';

const MIB = 1024 * 1024;

/** Product names and board power limits of the GPU types the simulator knows. */
export const GPU_BOARD_INFO: Readonly<
  Record<string, { product: string; powerLimitW: number; idleW: number; memoryMiB: number }>
> = Object.freeze({
  'H100-80GB': { product: 'NVIDIA H100 80GB HBM3', powerLimitW: 700, idleW: 72, memoryMiB: 81559 },
  'H200-141GB': { product: 'NVIDIA H200', powerLimitW: 700, idleW: 78, memoryMiB: 143771 },
  'A100-80GB': { product: 'NVIDIA A100-SXM4-80GB', powerLimitW: 400, idleW: 60, memoryMiB: 81920 },
  'L40S-48GB': { product: 'NVIDIA L40S', powerLimitW: 350, idleW: 35, memoryMiB: 46068 },
  'B200-180GB': { product: 'NVIDIA B200', powerLimitW: 1000, idleW: 140, memoryMiB: 183359 },
});

export interface GpuXidRecord {
  code: number;
  time: string;
  message: string;
}

export interface GpuTelemetryRecord {
  index: number;
  uuid: string;
  name: string;
  memory_total_mib: number;
  memory_used_mib: number;
  utilization_gpu_pct: number;
  temperature_c: number;
  power_w: number;
  power_limit_w: number;
  ecc_sbe_total: number;
  ecc_dbe_total: number;
  xid_events: GpuXidRecord[];
  clocks_throttle_reasons: string[];
}

export interface GpuTelemetrySnapshot {
  replica: number;
  timestamp: string;
  driver_version: string;
  gpus: GpuTelemetryRecord[];
}

export interface GpuTelemetryOptions {
  replicaIndex: number;
  /** GPUs of the replica (tensor parallelism). */
  tp: number;
  /** The node's GPU indices this replica runs on (as placed); default replicaIndex × tp + i. */
  gpuIndices?: readonly number[];
  /** GPU type, e.g. H100-80GB (a product name is derived from it when known). */
  gpuType: string;
  /** Memory of one GPU in bytes (default: from {@link GPU_BOARD_INFO}, else 80 GiB). */
  memoryTotalBytes?: number;
  /** Bytes the engine reserved on each GPU (weights shard + KV cache shard); read on each snapshot. */
  memoryUsedBytesPerGpu: () => number;
  /** Whether the engine is stepping now (sampled). */
  busy: () => boolean;
  faults: FaultController;
  /** Extra key making UUIDs distinct between fleets (e.g. the served model name). */
  uuidKey?: string;
  sampleMs?: number;
  windowMs?: number;
}

export class GpuTelemetry {
  readonly #o: GpuTelemetryOptions;
  readonly #samples: Uint8Array;
  #next = 0;
  #filled = 0;
  #timer: NodeJS.Timeout | null = null;
  readonly #uuids: string[];
  readonly #board: { product: string; powerLimitW: number; idleW: number; memoryMiB: number };

  constructor(opts: GpuTelemetryOptions) {
    this.#o = opts;
    const sampleMs = opts.sampleMs ?? 100;
    const windowMs = opts.windowMs ?? 2000;
    this.#samples = new Uint8Array(Math.max(1, Math.round(windowMs / sampleMs)));
    this.#board = GPU_BOARD_INFO[opts.gpuType] ?? {
      product: `NVIDIA ${opts.gpuType}`,
      powerLimitW: 400,
      idleW: 50,
      memoryMiB: 81920,
    };
    this.#uuids = Array.from({ length: opts.tp }, (_, i) => {
      const h = createHash('sha1')
        .update(`inferplane-sim/${opts.uuidKey ?? ''}/${opts.replicaIndex}/${i}`)
        .digest('hex');
      return `GPU-${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
    });
  }

  /** Starts sampling the engine's busy state (idempotent; the timer does not keep the process up). */
  start(): void {
    if (this.#timer) return;
    this.#timer = setInterval(() => this.sample(), this.#o.sampleMs ?? 100);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  /** Takes one busy/idle sample (called by the timer; public for tests). */
  sample(): void {
    this.#samples[this.#next] = this.#o.busy() ? 1 : 0;
    this.#next = (this.#next + 1) % this.#samples.length;
    this.#filled = Math.min(this.#filled + 1, this.#samples.length);
  }

  /** Share of recent samples during which the engine was busy, 0..1. */
  utilization(): number {
    if (this.#filled === 0) return this.#o.busy() ? 1 : 0;
    let busy = 0;
    for (let i = 0; i < this.#filled; i++) busy += this.#samples[i] ?? 0;
    return busy / this.#filled;
  }

  snapshot(now = new Date()): GpuTelemetrySnapshot {
    const { faults, tp, replicaIndex } = this.#o;
    const spec = faults.spec;
    const faultGpu = spec.gpu?.index ?? 0;
    const util = this.utilization();
    const totalMib = Math.round((this.#o.memoryTotalBytes ?? this.#board.memoryMiB * MIB) / MIB);
    const usedMib = Math.min(totalMib, Math.round(this.#o.memoryUsedBytesPerGpu() / MIB));
    const gpus: GpuTelemetryRecord[] = [];
    for (let i = 0; i < tp; i++) {
      const faulty = i === faultGpu;
      const xids = faulty
        ? faults.xidEvents
            .filter((e) => e.gpu === i)
            .map((e) => ({ code: e.code, time: e.time, message: e.message }))
        : [];
      const thermal = faulty && spec.gpu?.thermal === true;
      // Slight per-GPU spread so the numbers do not look copy-pasted.
      const spread = ((replicaIndex * 7 + i * 3) % 5) - 2;
      const temperature = thermal
        ? THERMAL_FAULT_TEMPERATURE_C
        : Math.round(33 + 40 * util) + spread;
      const { idleW, powerLimitW } = this.#board;
      let power = idleW + (powerLimitW - idleW) * 0.85 * util;
      if (thermal) power = Math.min(power, powerLimitW * 0.6);
      const dbeFromXid = xids.filter((e) => e.code === 48).length;
      gpus.push({
        index: this.#o.gpuIndices?.[i] ?? replicaIndex * tp + i,
        uuid: this.#uuids[i] ?? '',
        name: this.#board.product,
        memory_total_mib: totalMib,
        memory_used_mib: usedMib,
        utilization_gpu_pct: Math.round(util * 100),
        temperature_c: temperature,
        power_w: Math.round(power + spread),
        power_limit_w: powerLimitW,
        ecc_sbe_total: faulty ? (spec.gpu?.eccSbe ?? 0) : 0,
        ecc_dbe_total: faulty ? Math.max(spec.gpu?.eccDbe ?? 0, dbeFromXid) : 0,
        xid_events: xids,
        clocks_throttle_reasons: thermal ? ['HW Thermal Slowdown'] : [],
      });
    }
    return {
      replica: replicaIndex,
      timestamp: now.toISOString(),
      driver_version: 'sim',
      gpus,
    };
  }
}
