// GPU telemetry as Prometheus gauges. The names follow the fields of the simulator's nvidia-smi-like
// telemetry (src/sim/telemetry.ts: memory_used_mib, utilization_gpu_pct, temperature_c, power_w,
// power_limit_w, ecc_sbe_total / ecc_dbe_total, xid_events, clocks_throttle_reasons) and share
// labels with inferplane_gpu_memory_total_bytes{node,gpu,type,vendor}, which every node exports.
import { Gauge, type Registry } from 'prom-client';
import type { NvidiaSnapshot } from './nvidia-smi.js';

const LABELS = ['node', 'gpu', 'type', 'vendor'] as const;

export function createGpuMetrics(registry: Registry) {
  const g = <L extends string>(name: string, help: string, labelNames: readonly L[]) =>
    new Gauge({ name, help, labelNames, registers: [registry] });
  return {
    memoryUsed: g(
      'inferplane_gpu_memory_used_bytes',
      'GPU memory in use (nvidia-smi memory.used).',
      LABELS,
    ),
    utilization: g(
      'inferplane_gpu_utilization_ratio',
      'Share of the last sample period a kernel ran on the GPU (nvidia-smi utilization.gpu / 100).',
      LABELS,
    ),
    temperature: g('inferplane_gpu_temperature_celsius', 'GPU core temperature.', LABELS),
    power: g('inferplane_gpu_power_watts', 'Board power draw.', LABELS),
    powerLimit: g('inferplane_gpu_power_limit_watts', 'Board power limit.', LABELS),
    ecc: g(
      'inferplane_gpu_ecc_errors',
      'ECC errors since the driver counted (aggregate), by kind: corrected (SBE) or uncorrected (DBE).',
      [...LABELS, 'kind'],
    ),
    xid: g('inferplane_gpu_xid_events', 'Xid events in the kernel log, by code.', [
      ...LABELS,
      'code',
    ]),
    healthy: g(
      'inferplane_gpu_healthy',
      '1 when the GPU is offered to placement (no uncorrected ECC error, no fatal Xid), else 0.',
      LABELS,
    ),
    clockEvent: g(
      'inferplane_gpu_clock_event_active',
      '1 for each active clock event (throttle) reason.',
      [...LABELS, 'reason'],
    ),
    info: g('inferplane_gpu_info', 'GPU identity (value 1).', [
      'node',
      'gpu',
      'uuid',
      'name',
      'pci_bus_id',
      'driver_version',
      'compute_cap',
      'cpu_affinity',
      'numa_affinity',
    ]),
    link: g(
      'inferplane_gpu_link_info',
      'Connection between two GPUs from nvidia-smi topo -m (X, NV#, PIX, PXB, PHB, NODE, SYS); value 1.',
      ['node', 'gpu', 'peer', 'link'],
    ),
    sampled: g(
      'inferplane_gpu_telemetry_timestamp_seconds',
      'When the node agent last read its GPUs (Unix time).',
      ['node'],
    ),
  };
}

export type GpuMetrics = ReturnType<typeof createGpuMetrics>;

/**
 * Writes one snapshot into the gauges (series of GPUs no longer reported are dropped). `memoryTotal`
 * is the platform's inferplane_gpu_memory_total_bytes gauge, set per physical GPU here.
 */
export function exportGpuSnapshot(
  m: GpuMetrics,
  memoryTotal: Pick<Gauge<'node' | 'gpu' | 'type' | 'vendor'>, 'set'>,
  node: string,
  snap: NvidiaSnapshot,
): void {
  for (const gauge of Object.values(m)) gauge.reset();
  const MIB = 1024 * 1024;
  for (const s of snap.gpus) {
    const l = { node, gpu: String(s.index), type: s.type, vendor: 'nvidia' };
    memoryTotal.set(l, s.memoryTotalMiB * MIB);
    if (s.memoryUsedMiB !== null) m.memoryUsed.set(l, s.memoryUsedMiB * MIB);
    if (s.utilizationGpuPct !== null) m.utilization.set(l, s.utilizationGpuPct / 100);
    if (s.temperatureC !== null) m.temperature.set(l, s.temperatureC);
    if (s.powerW !== null) m.power.set(l, s.powerW);
    if (s.powerLimitW !== null) m.powerLimit.set(l, s.powerLimitW);
    if (s.eccCorrected !== null) m.ecc.set({ ...l, kind: 'corrected' }, s.eccCorrected);
    if (s.eccUncorrected !== null) m.ecc.set({ ...l, kind: 'uncorrected' }, s.eccUncorrected);
    const codes = new Map<number, number>();
    for (const x of s.xid) codes.set(x.code, (codes.get(x.code) ?? 0) + 1);
    for (const [code, n] of codes) m.xid.set({ ...l, code: String(code) }, n);
    m.healthy.set(l, s.healthy ? 1 : 0);
    for (const reason of s.clockEventReasons) m.clockEvent.set({ ...l, reason }, 1);
    const dev = `GPU${s.index}`;
    m.info.set(
      {
        node,
        gpu: String(s.index),
        uuid: s.uuid,
        name: s.name,
        pci_bus_id: s.pciBusId,
        driver_version: s.driverVersion,
        compute_cap: s.computeCap ?? '',
        cpu_affinity: snap.topology.cpuAffinity[dev] ?? '',
        numa_affinity: snap.topology.numaAffinity[dev] ?? '',
      },
      1,
    );
    for (const [peer, link] of Object.entries(snap.topology.links[dev] ?? {})) {
      m.link.set({ node, gpu: String(s.index), peer: peer.replace(/^GPU/, ''), link }, 1);
    }
  }
  m.sampled.set({ node }, Date.parse(snap.takenAt) / 1000);
}
