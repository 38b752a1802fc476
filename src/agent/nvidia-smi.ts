// The node agent on a machine with NVIDIA GPUs: inventory and telemetry read from `nvidia-smi`
// (CSV query output and `topo -m`) and Xid events from the kernel log. Parsers are pure and tested
// on output captured on an H100 (test/fixtures/nvidia-smi/); the runner calls the tools.
import { execFile } from 'node:child_process';

/** Fields asked of `nvidia-smi --query-gpu=… --format=csv,noheader,nounits`, in this order. */
export const NVIDIA_SMI_QUERY_FIELDS = [
  'index',
  'uuid',
  'name',
  'pci.bus_id',
  'driver_version',
  'memory.total',
  'memory.used',
  'utilization.gpu',
  'temperature.gpu',
  'power.draw',
  'power.limit',
  'ecc.errors.corrected.aggregate.total',
  'ecc.errors.uncorrected.aggregate.total',
  'clocks_event_reasons.active',
  'compute_cap',
] as const;

/** One GPU as `nvidia-smi` reports it; null where it says N/A or [Not Supported]. */
export interface NvidiaGpuSample {
  index: number;
  uuid: string;
  name: string;
  pciBusId: string;
  driverVersion: string;
  memoryTotalMiB: number;
  memoryUsedMiB: number | null;
  utilizationGpuPct: number | null;
  temperatureC: number | null;
  powerW: number | null;
  powerLimitW: number | null;
  eccCorrected: number | null;
  eccUncorrected: number | null;
  /** Names of the active clock event (throttle) reasons, from the bit mask. */
  clockEventReasons: string[];
  computeCap: string | null;
}

/** Clock event reason bits (nvml.h `nvmlClocksEventReason*`). */
const CLOCK_EVENT_BITS: ReadonlyArray<[bigint, string]> = [
  [0x1n, 'GPU Idle'],
  [0x2n, 'Applications Clocks Setting'],
  [0x4n, 'SW Power Cap'],
  [0x8n, 'HW Slowdown'],
  [0x10n, 'Sync Boost'],
  [0x20n, 'SW Thermal Slowdown'],
  [0x40n, 'HW Thermal Slowdown'],
  [0x80n, 'HW Power Brake Slowdown'],
  [0x100n, 'Display Clock Setting'],
];

/** The reasons named by a `clocks_event_reasons.active` mask such as 0x0000000000000001. */
export function clockEventReasons(mask: string): string[] {
  const t = mask.trim();
  if (!/^0x[0-9a-f]+$/i.test(t)) return [];
  const v = BigInt(t);
  return CLOCK_EVENT_BITS.filter(([bit]) => (v & bit) !== 0n).map(([, name]) => name);
}

function optNumber(field: string): number | null {
  const t = field.trim().replace(/\s*(MiB|W|%|C)$/, '');
  if (t === '' || /^\[?(N\/A|Not Supported|Unknown Error|Insufficient Permissions)\]?$/i.test(t))
    return null;
  const n = Number(t);
  return Number.isFinite(n) ? n : null;
}

/** Splits one CSV line of nvidia-smi (fields are ", "-separated; names hold no commas). */
function csvFields(line: string): string[] {
  return line.split(',').map((f) => f.trim());
}

/**
 * Parses `nvidia-smi --query-gpu=<fields> --format=csv,noheader,nounits` (a header line, as with
 * `--format=csv`, is skipped; units left on values are stripped). Lines that do not carry every
 * field, or whose index is not a number, are ignored.
 */
export function parseQueryGpuCsv(
  text: string,
  fields: readonly string[] = NVIDIA_SMI_QUERY_FIELDS,
): NvidiaGpuSample[] {
  const out: NvidiaGpuSample[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    const cols = csvFields(line);
    if (cols.length < fields.length) continue;
    const get = (f: string): string => cols[fields.indexOf(f)] ?? '';
    const index = Number(get('index'));
    if (!Number.isInteger(index) || get('index') === '') continue;
    const total = optNumber(get('memory.total'));
    const cap = get('compute_cap');
    out.push({
      index,
      uuid: get('uuid'),
      name: get('name'),
      pciBusId: get('pci.bus_id'),
      driverVersion: get('driver_version'),
      memoryTotalMiB: total ?? 0,
      memoryUsedMiB: optNumber(get('memory.used')),
      utilizationGpuPct: optNumber(get('utilization.gpu')),
      temperatureC: optNumber(get('temperature.gpu')),
      powerW: optNumber(get('power.draw')),
      powerLimitW: optNumber(get('power.limit')),
      eccCorrected: optNumber(get('ecc.errors.corrected.aggregate.total')),
      eccUncorrected: optNumber(get('ecc.errors.uncorrected.aggregate.total')),
      clockEventReasons: clockEventReasons(get('clocks_event_reasons.active')),
      computeCap: /^\d+\.\d+$/.test(cap) ? cap : null,
    });
  }
  return out;
}

/** `nvidia-smi topo -m`: links between GPUs (X, NV#, PIX, PXB, PHB, NODE, SYS) and affinities. */
export interface GpuTopology {
  /** Device names of the rows that are GPUs, in order (GPU0, GPU1, …). */
  gpus: string[];
  /** links[a][b]: the connection between GPU a and GPU b (`X` for itself). */
  links: Record<string, Record<string, string>>;
  cpuAffinity: Record<string, string>;
  numaAffinity: Record<string, string>;
  /** NICs listed in the matrix (NIC0, …), when any. */
  nics: string[];
}

// ESC [ … m (the header is underlined on a terminal).
const ANSI = new RegExp(String.fromCharCode(27) + '\\[[0-9;]*m', 'g');

/** Parses the matrix of `nvidia-smi topo -m` (the legend after it is ignored). */
export function parseTopoMatrix(text: string): GpuTopology {
  const lines = text.replace(ANSI, '').split('\n');
  const topo: GpuTopology = { gpus: [], links: {}, cpuAffinity: {}, numaAffinity: {}, nics: [] };
  const headerAt = lines.findIndex((l) => /^\s+GPU0\b/.test(l) || /^\t+GPU0\b/.test(l));
  if (headerAt < 0) return topo;
  const header = (lines[headerAt] ?? '')
    .trim()
    .split('\t')
    .map((c) => c.trim())
    .filter(Boolean);
  const devices = header.filter((h) => /^(GPU|NIC)\d+$/.test(h));
  const cpuCol = header.indexOf('CPU Affinity');
  const numaCol = header.indexOf('NUMA Affinity');
  for (let i = headerAt + 1; i < lines.length; i++) {
    const line = lines[i] ?? '';
    if (line.trim() === '') break;
    const cells = line.split('\t').map((c) => c.trim());
    const name = cells[0] ?? '';
    if (!/^(GPU|NIC)\d+$/.test(name)) break;
    const values = cells.slice(1);
    if (name.startsWith('NIC')) {
      topo.nics.push(name);
      continue;
    }
    topo.gpus.push(name);
    const row: Record<string, string> = {};
    devices.forEach((d, k) => {
      const v = values[k];
      if (v !== undefined && v !== '' && d.startsWith('GPU')) row[d] = v;
    });
    topo.links[name] = row;
    if (cpuCol >= 0 && values[cpuCol]) topo.cpuAffinity[name] = values[cpuCol];
    if (numaCol >= 0 && values[numaCol]) topo.numaAffinity[name] = values[numaCol];
  }
  return topo;
}

/** An Xid event from the kernel log (`NVRM: Xid (PCI:0000:00:06): 79, pid=…, …`). */
export interface XidEvent {
  pciBusId: string;
  code: number;
  message: string;
  /** Seconds since boot, as `dmesg` prints it (null when the line has no timestamp). */
  uptimeS: number | null;
}

/** Xid events in `dmesg` output. */
export function parseXidEvents(text: string): XidEvent[] {
  const out: XidEvent[] = [];
  const re = /^(?:\[\s*(\d+\.\d+)\]\s*)?.*NVRM: Xid \(PCI:([0-9a-fA-F:.]+)\): (\d+),\s*(.*)$/;
  for (const line of text.split('\n')) {
    const m = re.exec(line.trim());
    if (!m) continue;
    out.push({
      pciBusId: m[2] ?? '',
      code: Number(m[3]),
      message: (m[4] ?? '').trim(),
      uptimeS: m[1] !== undefined ? Number(m[1]) : null,
    });
  }
  return out;
}

/** Xids that take a GPU out of service (NVIDIA's Xid catalogue: fallen off the bus, DBE, …). */
export const FATAL_XIDS: ReadonlySet<number> = new Set([48, 63, 64, 74, 79, 92, 94, 95, 119, 120]);

/**
 * Whether an Xid's PCI address (`0000:00:06`) names the GPU whose `pci.bus_id` is
 * `00000000:00:06.0` (nvidia-smi pads the domain to 8 digits; the kernel log to 4, no function).
 */
export function samePciDevice(xidBus: string, gpuBus: string): boolean {
  const norm = (b: string): string => {
    const parts = b.toLowerCase().split(':');
    const dev = (parts.pop() ?? '').split('.')[0] ?? '';
    const bus = parts.pop() ?? '';
    const domain = parts.pop() ?? '0';
    return `${Number.parseInt(domain, 16)}:${bus.padStart(2, '0')}:${dev.padStart(2, '0')}`;
  };
  return norm(xidBus) === norm(gpuBus);
}

/** Normalized GPU type name of a product, e.g. "NVIDIA H100 80GB HBM3" → H100-80GB. */
export function gpuTypeOf(product: string, memoryMiB: number): string {
  const known: ReadonlyArray<[RegExp, string]> = [
    [/\bH100\b/, 'H100'],
    [/\bH200\b/, 'H200'],
    [/\bH20\b/, 'H20'],
    [/\bA100\b/, 'A100'],
    [/\bL40S\b/, 'L40S'],
    [/\bL4\b/, 'L4'],
    [/\bB200\b/, 'B200'],
    [/\bA10G?\b/, 'A10'],
  ];
  // The memory class as products are sold (81,559 MiB → 80GB, 143,771 → 141GB).
  const gb = (memoryMiB * 1024 * 1024) / 1e9;
  const mem = [16, 24, 40, 48, 80, 94, 141, 180, 192].reduce(
    (best, s) => (Math.abs(s - gb) < Math.abs(best - gb) ? s : best),
    80,
  );
  for (const [re, family] of known) if (re.test(product)) return `${family}-${mem}GB`;
  return (
    product
      .replace(/^NVIDIA\s+/i, '')
      .trim()
      .replace(/[^A-Za-z0-9]+/g, '-')
      .replace(/^-|-$/g, '') || 'unknown'
  );
}

/** A snapshot of the node's GPUs: the latest query, Xid events seen, and the topology. */
export interface NvidiaSnapshot {
  takenAt: string;
  gpus: Array<NvidiaGpuSample & { xid: XidEvent[]; healthy: boolean; type: string }>;
  topology: GpuTopology;
}

export type CommandRunner = (cmd: string, args: string[]) => Promise<string>;

export const execRunner: CommandRunner = (cmd, args) =>
  new Promise<string>((resolve, reject) => {
    execFile(cmd, args, { timeout: 10_000, maxBuffer: 8 << 20 }, (err, stdout) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')}: ${err.message}`));
      else resolve(String(stdout));
    });
  });

/**
 * Reads the GPUs of this machine with nvidia-smi. `topo -m` is read once (it does not change);
 * the query and the kernel log on each {@link NvidiaSmi.sample}. A kernel log that cannot be read
 * (no permission) gives no Xid events.
 */
export class NvidiaSmi {
  #topology: GpuTopology | undefined;
  readonly #run: CommandRunner;
  readonly #bin: string;

  constructor(opts: { run?: CommandRunner; bin?: string } = {}) {
    this.#run = opts.run ?? execRunner;
    this.#bin = opts.bin ?? 'nvidia-smi';
  }

  async sample(now = new Date()): Promise<NvidiaSnapshot> {
    const csv = await this.#run(this.#bin, [
      `--query-gpu=${NVIDIA_SMI_QUERY_FIELDS.join(',')}`,
      '--format=csv,noheader,nounits',
    ]);
    if (this.#topology === undefined) {
      this.#topology = parseTopoMatrix(await this.#run(this.#bin, ['topo', '-m']).catch(() => ''));
    }
    const xids = parseXidEvents(await this.#run('dmesg', []).catch(() => ''));
    const gpus = parseQueryGpuCsv(csv).map((g) => {
      const xid = xids.filter((x) => samePciDevice(x.pciBusId, g.pciBusId));
      const healthy = (g.eccUncorrected ?? 0) === 0 && !xid.some((x) => FATAL_XIDS.has(x.code));
      return { ...g, xid, healthy, type: gpuTypeOf(g.name, g.memoryTotalMiB) };
    });
    return { takenAt: now.toISOString(), gpus, topology: this.#topology };
  }
}
