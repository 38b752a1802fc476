/**
 * Fault injection for the simulated engine: the failure modes a serving platform must survive,
 * switched on at start (`--fault-*` flags) or at run time (`POST /admin/faults`).
 *
 * A {@link FaultSpec} (validated with zod) says what is broken:
 *
 * - `crash: 'now'` — the replica dies right after answering the admin call that set it;
 *   `crash: {afterRequests: n}` — it serves n more generation requests and dies when request n+1
 *   arrives (that request gets no answer). Only `/v1/completions` and `/v1/chat/completions` count.
 *   What "dies" means is the `onCrash` action of the owner: a single-replica process exits with
 *   status 1; in a fleet (several replicas in one process) only that replica's server is torn down
 *   abruptly (sockets destroyed, port closed) and the others keep serving.
 * - `hang: true` — new generation requests are accepted (connection kept open) and never answered;
 *   `/health` hangs too, so a liveness probe with a timeout fails and can restart the engine. The
 *   observability and admin endpoints keep answering (so the hang can be cleared). Requests parked
 *   while hung stay unanswered until the client gives up or the server closes.
 * - `slowFactor: x` — every engine step takes x times longer (TTFT and ITL grow by ~x).
 * - `errorRate: p` — each generation request fails with probability p with an OpenAI-shaped
 *   HTTP 500 before anything is generated (after request validation).
 * - `disconnect: {afterTokens: n, rate?: p}` — with probability p (default 1) per request, the
 *   connection is dropped (socket destroyed, no [DONE], no final chunk) once n tokens were
 *   generated; non-streaming requests are dropped the same way before their answer.
 * - `gpu: {index?, xid?, eccSbe?, eccDbe?, thermal?}` — GPU-level faults visible in
 *   `GET /telemetry/gpus` on GPU `index` (default 0) of the replica: `xid` appends an Xid event
 *   (each time it is set), `eccSbe`/`eccDbe` set the aggregate ECC counters, `thermal` reports
 *   92 °C with the `HW Thermal Slowdown` throttle reason and slows the engine by 1.5× (on top of
 *   `slowFactor`). Xid and ECC faults are telemetry only: combine them with `crash`/`errorRate`
 *   to also simulate what the engine does about them.
 *
 * Randomness (errorRate, disconnect rate) comes from a seeded generator, so a given seed always
 * picks the same requests.
 */
import { seededRandom } from '../core/random.js';
import { z } from 'zod';

/** Xid codes a simulated GPU can report, with the driver's description. */
export const XID_MESSAGES: Readonly<Record<number, string>> = Object.freeze({
  13: 'Graphics Engine Exception',
  31: 'GPU memory page fault',
  43: 'GPU stopped processing',
  48: 'Double Bit ECC Error',
  63: 'ECC page retirement or row remapping recording event',
  64: 'ECC page retirement or row remapper recording failure',
  74: 'NVLink Error',
  79: 'GPU has fallen off the bus',
  92: 'High single-bit ECC error rate',
  94: 'Contained ECC error',
  95: 'Uncontained ECC error',
});

const rate = z.number().min(0).max(1);

export const gpuFaultSchema = z.strictObject({
  /** GPU of the replica the fault is on (0 … tp-1). Default 0. */
  index: z.int().min(0).optional(),
  xid: z.int().positive().optional(),
  eccSbe: z.int().min(0).optional(),
  eccDbe: z.int().min(0).optional(),
  thermal: z.boolean().optional(),
});

export const faultSpecSchema = z.strictObject({
  crash: z.union([z.literal('now'), z.strictObject({ afterRequests: z.int().min(0) })]).optional(),
  hang: z.boolean().optional(),
  slowFactor: z.number().positive().max(1000).optional(),
  errorRate: rate.optional(),
  disconnect: z.strictObject({ afterTokens: z.int().min(0), rate: rate.optional() }).optional(),
  gpu: gpuFaultSchema.optional(),
});

export type FaultSpec = z.infer<typeof faultSpecSchema>;
export type GpuFaultSpec = z.infer<typeof gpuFaultSchema>;

/**
 * Body of `POST /admin/faults`: a patch merged into the current spec. A key set to `null` removes
 * that fault; `gpu` is merged key by key; `{"clear": true}` first resets everything (including the
 * Xid history and the request counter).
 */
export const faultPatchSchema = z.strictObject({
  clear: z.boolean().optional(),
  crash: faultSpecSchema.shape.crash.unwrap().nullable().optional(),
  hang: z.boolean().nullable().optional(),
  slowFactor: z.number().positive().max(1000).nullable().optional(),
  errorRate: rate.nullable().optional(),
  disconnect: faultSpecSchema.shape.disconnect.unwrap().nullable().optional(),
  gpu: z
    .strictObject({
      index: z.int().min(0).nullable().optional(),
      xid: z.int().positive().nullable().optional(),
      eccSbe: z.int().min(0).nullable().optional(),
      eccDbe: z.int().min(0).nullable().optional(),
      thermal: z.boolean().nullable().optional(),
    })
    .nullable()
    .optional(),
});

export type FaultPatch = z.infer<typeof faultPatchSchema>;

/** Temperature a thermal fault reports, in °C. */
export const THERMAL_FAULT_TEMPERATURE_C = 92;
/** Extra slowdown of a thermal fault. */
export const THERMAL_SLOW_FACTOR = 1.5;

export interface XidEvent {
  /** GPU index within the replica. */
  gpu: number;
  code: number;
  /** ISO 8601 time the event was recorded. */
  time: string;
  message: string;
}

export { seededRandom };

/** What to do with an arriving generation request. */
export type ArrivalDecision = 'crash' | 'hang' | 'error' | 'serve';

export interface FaultControllerOptions {
  spec?: FaultSpec;
  /** Seed of the errorRate/disconnect draws. Default: random. */
  seed?: number;
  /** Called whenever the effective slow factor changes (the server forwards it to the engine). */
  onSlowFactor?: (factor: number) => void;
  /** Clock for Xid event times (tests). */
  now?: () => Date;
}

function formatZodError(err: z.ZodError): string {
  return err.issues
    .map((i) => (i.path.length > 0 ? `${i.path.join('.')}: ${i.message}` : i.message))
    .join('; ');
}

/** Parses a fault spec; throws an Error with a readable message when invalid. */
export function parseFaultSpec(input: unknown): FaultSpec {
  const r = faultSpecSchema.safeParse(input);
  if (!r.success) throw new Error(`invalid fault spec: ${formatZodError(r.error)}`);
  return r.data;
}

/** Parses a fault patch; throws an Error with a readable message when invalid. */
export function parseFaultPatch(input: unknown): FaultPatch {
  const r = faultPatchSchema.safeParse(input);
  if (!r.success) throw new Error(`invalid fault patch: ${formatZodError(r.error)}`);
  return r.data;
}

function withoutUndefined<T extends object>(o: T): T {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined && v !== null) out[k] = v;
  return out as T;
}

/**
 * The live fault state of one replica: the spec, the request counter for `crash.afterRequests`,
 * the seeded draws and the Xid history. Pure bookkeeping: the server acts on its decisions.
 */
export class FaultController {
  readonly seed: number;
  #spec: FaultSpec = {};
  #requestsSinceCrashSet = 0;
  #xids: XidEvent[] = [];
  #errorRng: () => number;
  #disconnectRng: () => number;
  readonly #onSlowFactor: ((factor: number) => void) | undefined;
  readonly #now: () => Date;
  #slowFactor = 1;

  constructor(opts: FaultControllerOptions = {}) {
    this.seed = (opts.seed ?? Math.floor(Math.random() * 0x1_0000_0000)) >>> 0;
    this.#errorRng = seededRandom(this.seed);
    this.#disconnectRng = seededRandom(this.seed ^ 0x5bd1e995);
    this.#onSlowFactor = opts.onSlowFactor;
    this.#now = opts.now ?? (() => new Date());
    if (opts.spec) this.set(parseFaultSpec(opts.spec));
  }

  /** The current spec (a copy). */
  get spec(): FaultSpec {
    return structuredClone(this.#spec);
  }

  /** Xid events recorded so far (oldest first). */
  get xidEvents(): readonly XidEvent[] {
    return this.#xids;
  }

  /** Generation requests counted since `crash` was set. */
  get requestsSinceCrashSet(): number {
    return this.#requestsSinceCrashSet;
  }

  /** Effective engine slow factor: slowFactor × 1.5 under a thermal fault. */
  get slowFactor(): number {
    return this.#slowFactor;
  }

  get hung(): boolean {
    return this.#spec.hang === true;
  }

  get thermal(): boolean {
    return this.#spec.gpu?.thermal === true;
  }

  /** Replaces the whole spec (validated). */
  set(spec: FaultSpec): void {
    const next = parseFaultSpec(spec);
    this.#install(this.#spec, next, next.gpu?.xid);
  }

  /** Resets every fault, the Xid history and the counters. */
  clear(): void {
    this.#xids = [];
    this.#errorRng = seededRandom(this.seed);
    this.#disconnectRng = seededRandom(this.seed ^ 0x5bd1e995);
    this.#requestsSinceCrashSet = 0;
    this.#install(this.#spec, {});
  }

  /** Merges a patch (see {@link faultPatchSchema}); returns the new spec. */
  apply(input: unknown): FaultSpec {
    const patch = parseFaultPatch(input);
    if (patch.clear) this.clear();
    const prev = this.#spec;
    const next: Record<string, unknown> = { ...prev };
    for (const key of ['crash', 'hang', 'slowFactor', 'errorRate', 'disconnect'] as const) {
      const v = patch[key];
      if (v === null) delete next[key];
      else if (v !== undefined) next[key] = v;
    }
    if (patch.gpu === null) delete next.gpu;
    else if (patch.gpu !== undefined) {
      const gpu = withoutUndefined({ ...(prev.gpu ?? {}) }) as Record<string, unknown>;
      for (const [k, v] of Object.entries(patch.gpu)) {
        if (v === null) delete gpu[k];
        else if (v !== undefined) gpu[k] = v;
      }
      if (Object.keys(gpu).length > 0) next.gpu = gpu;
      else delete next.gpu;
    }
    this.#install(prev, parseFaultSpec(next), patch.gpu?.xid ?? undefined);
    return this.spec;
  }

  /** Installs `next`; `xid`, when given, is recorded as a new Xid event. */
  #install(prev: FaultSpec, next: FaultSpec, xid?: number): void {
    if (JSON.stringify(prev.crash) !== JSON.stringify(next.crash)) this.#requestsSinceCrashSet = 0;
    this.#spec = next;
    if (xid !== undefined) {
      this.#xids.push({
        gpu: next.gpu?.index ?? 0,
        code: xid,
        time: this.#now().toISOString(),
        message: XID_MESSAGES[xid] ?? 'Unknown Xid',
      });
      if (this.#xids.length > 1000) this.#xids.shift();
    }
    const factor = (next.slowFactor ?? 1) * (next.gpu?.thermal ? THERMAL_SLOW_FACTOR : 1);
    if (factor !== this.#slowFactor) {
      this.#slowFactor = factor;
      this.#onSlowFactor?.(factor);
    }
  }

  /**
   * Decides the fate of an arriving generation request (call once per request, on arrival):
   * 'crash' when it is request n+1 after `crash: {afterRequests: n}` was set, 'hang' while hung,
   * otherwise 'serve'. ('error' is decided later, by {@link shouldError}, after validation.)
   */
  onArrival(): ArrivalDecision {
    const crash = this.#spec.crash;
    if (crash === 'now') return 'crash';
    if (crash !== undefined) {
      if (this.#requestsSinceCrashSet >= crash.afterRequests) return 'crash';
      this.#requestsSinceCrashSet++;
    }
    if (this.#spec.hang) return 'hang';
    return 'serve';
  }

  /** Whether this (valid) request fails with a simulated HTTP 500. One seeded draw per call. */
  shouldError(): boolean {
    const p = this.#spec.errorRate ?? 0;
    if (p <= 0) return false;
    return this.#errorRng() < p;
  }

  /** After how many generated tokens this request's connection is dropped, or null. */
  disconnectAfter(): number | null {
    const d = this.#spec.disconnect;
    if (!d) return null;
    const p = d.rate ?? 1;
    if (p <= 0) return null;
    if (p < 1 && this.#disconnectRng() >= p) return null;
    return d.afterTokens;
  }
}
