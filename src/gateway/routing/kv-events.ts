// Precise prefix-cache data: per replica, the set of KV block hashes its engine holds now, kept from
// the engine's KV event stream (the simulator's `GET /kv/events`, server-sent events). The way
// llm-d's precise prefix-cache scorer follows vLLM's KV events, with one simplification: the
// simulator's block hashes are stable across processes (src/core/tokens.ts), so the router
// computes the same keys from the prompt and needs no engine-key → router-key mapping.
//
// Per replica one subscription: `GET <url>/kv/events`; each `data:` line is a batch
// {ts, replica, events: [BlockStored {blockHashes} | BlockRemoved {blockHashes} | AllBlocksCleared]},
// applied in order to the replica's set. The stream has no snapshot of what is cached already, so
// a fresh or re-established subscription starts from an EMPTY set (a cold cache: the router may
// under-estimate what a replica holds, never over-estimate it). A stream that fails, ends, sends
// something unreadable or stays silent past `idleTimeoutMs` (the simulator sends a keepalive every
// 15 s) is closed and its set dropped: the replica's precise data is unavailable (`live` false:
// the pipeline falls back to the approximate index) until a new subscription answers. Reconnects
// back off exponentially (reconnectMinMs doubling to reconnectMaxMs; an endpoint answering non-200
// — an engine without the stream — waits reconnectMaxMs).
//
// Memory: a set never holds more than its cap — the engine's num_gpu_blocks (from the scraped
// `vllm:cache_config_info`, see `setCapacity`) bounded by the hard cap `maxBlocksPerReplica`. The
// engine itself cannot hold more cached blocks than that, so a set that would outgrow it has missed
// events: it is cleared (starts cold, as after a reconnect) and counted in `overflows`.
//
// Sets are open-addressing hash tables of (hi, lo) uint32 halves in one typed array (linear
// probing, backward-shift deletion, at most half full): no Map, no strings kept, ≤ 80 bytes a block
// (hash, parent hash, children count: the set knows whether it is ancestor-closed, see BlockSet).
import http from 'node:http';

export interface KvEventOptions {
  /** First reconnect delay (ms), doubling per failed attempt. Default 200. */
  reconnectMinMs?: number;
  /** Longest reconnect delay (ms). Default 5000. */
  reconnectMaxMs?: number;
  /** Connect + response-head timeout (ms). Default 2000. */
  connectTimeoutMs?: number;
  /** A stream silent this long (no event, no keepalive) is dropped (ms). Default 45 000. */
  idleTimeoutMs?: number;
  /** Hard cap of blocks per replica, whatever the engine reports. Default 1,048,576. */
  maxBlocksPerReplica?: number;
  /** Called when a replica's precise data becomes available (true) or unavailable (false). */
  onLive?: (replicaId: string, live: boolean) => void;
}

/** How a block's parent is known (see {@link BlockSet}). */
const K_ROOT = 0; // the prompt's first block: no parent
const K_PARENT = 1; // parent hash known (kept in aux)
const K_UNKNOWN = 2; // parent not known: the set cannot be proved ancestor-closed while it is there
const KIND_MASK = 3;
const CHILD = 4; // meta += CHILD: one more present child
/** Counters of a BlockSet's first-block filter (see `hasFirst`): 2^FIRST_BITS. */
const FIRST_BITS = 8;

/**
 * Counts per 64-bit key (uint32 halves): open addressing over (hi, lo, count) triples, linear
 * probing, backward-shift deletion, (0, 0) never stored. Small: it holds the parents that are
 * absent from a {@link BlockSet} while some child of theirs is present.
 */
class PairCounts {
  private t = new Int32Array(3 * 16);
  private mask = 15;
  size = 0;

  private home(hi: number, lo: number): number {
    return (Math.imul(lo ^ Math.imul(hi, 0x85ebca6b), 0x9e3779b1) >>> 7) & this.mask;
  }

  private find(hi: number, lo: number): number {
    const { t, mask } = this;
    for (let i = this.home(hi, lo); ; i = (i + 1) & mask) {
      const h = t[3 * i]!;
      const l = t[3 * i + 1]!;
      if (h === hi && l === lo) return i;
      if (h === 0 && l === 0) return -1 - i;
    }
  }

  /** Adds `n` to the key's count. */
  add(hi: number, lo: number, n: number): void {
    let i = this.find(hi, lo);
    if (i < 0) {
      if ((this.size + 1) * 2 > this.mask + 1) {
        this.grow();
        i = this.find(hi, lo);
      }
      i = -1 - i;
      this.t[3 * i] = hi;
      this.t[3 * i + 1] = lo;
      this.size++;
    }
    this.t[3 * i + 2]! += n;
  }

  /** Subtracts one from the key's count (removed at 0). */
  dec(hi: number, lo: number): void {
    const i = this.find(hi, lo);
    if (i < 0) return;
    if (--this.t[3 * i + 2]! <= 0) this.remove(i);
  }

  /** The key's count, and removes it. */
  take(hi: number, lo: number): number {
    if (this.size === 0) return 0;
    const i = this.find(hi, lo);
    if (i < 0) return 0;
    const n = this.t[3 * i + 2]!;
    this.remove(i);
    return n;
  }

  clear(): void {
    if (this.size === 0) return;
    this.t = new Int32Array(3 * 16);
    this.mask = 15;
    this.size = 0;
  }

  private remove(i: number): void {
    const { t, mask } = this;
    let hole = i;
    for (let j = (i + 1) & mask; ; j = (j + 1) & mask) {
      const h = t[3 * j]!;
      const l = t[3 * j + 1]!;
      if (h === 0 && l === 0) break;
      const home = this.home(h, l);
      if (((j - home) & mask) >= ((j - hole) & mask)) {
        t[3 * hole] = h;
        t[3 * hole + 1] = l;
        t[3 * hole + 2] = t[3 * j + 2]!;
        hole = j;
      }
    }
    t[3 * hole] = 0;
    t[3 * hole + 1] = 0;
    t[3 * hole + 2] = 0;
    this.size--;
  }

  private grow(): void {
    const old = this.t;
    this.t = new Int32Array(old.length * 2);
    this.mask = this.mask * 2 + 1;
    const t = this.t;
    for (let o = 0; o < old.length; o += 3) {
      if (old[o] === 0 && old[o + 1] === 0) continue;
      let i = this.home(old[o]!, old[o + 1]!);
      while (t[3 * i] !== 0 || t[3 * i + 1] !== 0) i = (i + 1) & this.mask;
      t[3 * i] = old[o]!;
      t[3 * i + 1] = old[o + 1]!;
      t[3 * i + 2] = old[o + 2]!;
    }
  }
}

/** The first-block filter's bucket of a hash (its own mix: not the table's slot bits). */
function firstBucket(hi: number, lo: number): number {
  return Math.imul(hi ^ Math.imul(lo, 0xcc9e2d51), 0x1b873593) >>> (32 - FIRST_BITS);
}

/**
 * A set of 64-bit block hashes given as two uint32 halves: open addressing over one Int32Array of
 * (hi, lo) pairs (one cache line per probe), linear probing, backward-shift deletion; (0, 0) marks
 * an empty slot, so the hash 0 itself is kept in a flag.
 *
 * It also knows whether it is ANCESTOR-CLOSED (`closed`): every block's parent (the block before it
 * in its prompt, from BlockStored's `parentBlockHash` and the order of its `blockHashes`) is in the
 * set too. Then the blocks of any prompt that the set holds are a prefix of the prompt's blocks
 * (block i's hash determines block i − 1's), so the matcher may binary-search the first missing
 * block instead of probing every one. The engine frees a request's blocks tail first, so its
 * cache is closed nearly always; a set is not closed after a cold start (children stored before
 * the subscription began are missing their parents) or after two requests computed the same block
 * at once (the engine caches one copy, whose eviction can precede the other request's children's).
 * Counted, not assumed: `orphans` = blocks whose parent is absent, `unknown` = blocks added without
 * a known parent (`add`); per block its parent and its present children's count (aux), per absent
 * parent its present children's count (a small side table).
 */
/** Source of BlockSet.removedAt values (unique across sets). */
let removalEpochs = 0;

export class BlockSet {
  /**
   * Changes whenever the set loses blocks (a removal or a clear), and differs between sets:
   * what a router assumed about this set before that may no longer hold.
   */
  removedAt = ++removalEpochs;
  private keys = new Int32Array(128);
  /** Per slot: parent hi, parent lo, kind | present children × CHILD. */
  private aux = new Int32Array(192);
  private mask = 63;
  private zero = false;
  /** Children (count) of parents that are absent. */
  private readonly absent = new PairCounts();
  size = 0;
  /** Blocks whose known parent is absent. */
  orphans = 0;
  /** Blocks whose parent is not known (`add`, or the hash 0). */
  unknown = 0;
  /**
   * Per filter bucket, the blocks in the set that may be a prompt's first block: roots and blocks
   * whose parent is not known (see `hasFirst`).
   */
  private readonly firsts = new Int32Array(1 << FIRST_BITS);

  /** Whether every block's parent is known and present (see the class comment). */
  get closed(): boolean {
    return this.orphans === 0 && this.unknown === 0;
  }

  private slot(hi: number, lo: number): number {
    return (Math.imul(lo ^ Math.imul(hi, 0x85ebca6b), 0x9e3779b1) >>> 7) & this.mask;
  }

  /**
   * `has` for a prompt's first block (one with no parent: a root, or a block added without a
   * known one). A matcher asks every candidate replica's set for the prompt's first block, and
   * most do not hold it: a small table of counters per set (2^FIRST_BITS buckets of the hash,
   * 1 KiB, which stays in the CPU's cache between decisions) answers most of those no's without
   * a probe into the set's table, each at a random place in memory (64 cache misses per
   * decision at 64 replicas). A bucket in use falls through to `has`.
   */
  hasFirst(hi: number, lo: number): boolean {
    if (this.firsts[firstBucket(hi, lo)] === 0) return false;
    return this.has(hi, lo);
  }

  has(hi: number, lo: number): boolean {
    hi |= 0;
    lo |= 0;
    if (hi === 0 && lo === 0) return this.zero;
    const { keys, mask } = this;
    for (let i = this.slot(hi, lo); ; i = (i + 1) & mask) {
      const h = keys[2 * i]!;
      const l = keys[2 * i + 1]!;
      if (h === hi && l === lo) return true;
      if (h === 0 && l === 0) return false;
    }
  }

  /** Slot of a non-zero hash, or −1. */
  private find(hi: number, lo: number): number {
    const { keys, mask } = this;
    for (let i = this.slot(hi, lo); ; i = (i + 1) & mask) {
      const h = keys[2 * i]!;
      const l = keys[2 * i + 1]!;
      if (h === hi && l === lo) return i;
      if (h === 0 && l === 0) return -1;
    }
  }

  /** Adds a block whose parent is not known; returns false when it was there already. */
  add(hi: number, lo: number): boolean {
    return this.insert(hi | 0, lo | 0, K_UNKNOWN, 0, 0);
  }

  /** Adds the first block of a prompt (no parent); false when it was there already. */
  addRoot(hi: number, lo: number): boolean {
    return this.insert(hi | 0, lo | 0, K_ROOT, 0, 0);
  }

  /** Adds a block whose parent is (phi, plo); false when it was there already. */
  addChild(hi: number, lo: number, phi: number, plo: number): boolean {
    phi |= 0;
    plo |= 0;
    return this.insert(hi | 0, lo | 0, phi === 0 && plo === 0 ? K_UNKNOWN : K_PARENT, phi, plo);
  }

  private insert(hi: number, lo: number, kind: number, phi: number, plo: number): boolean {
    if (hi === 0 && lo === 0) {
      if (this.zero) return false;
      this.zero = true;
      this.size++;
      this.unknown++;
      this.firsts[firstBucket(0, 0)]!++;
      return true;
    }
    if ((this.size + 1) * 4 > this.keys.length) this.grow();
    const { keys, mask } = this;
    let i = this.slot(hi, lo);
    for (; ; i = (i + 1) & mask) {
      const h = keys[2 * i]!;
      const l = keys[2 * i + 1]!;
      if (h === hi && l === lo) return false;
      if (h === 0 && l === 0) break;
    }
    if (kind === K_PARENT) {
      const ps = this.find(phi, plo);
      if (ps >= 0) this.aux[3 * ps + 2]! += CHILD;
      else {
        this.orphans++;
        this.absent.add(phi, plo, 1);
      }
    } else if (kind === K_UNKNOWN) this.unknown++;
    if (kind !== K_PARENT) this.firsts[firstBucket(hi, lo)]!++;
    keys[2 * i] = hi;
    keys[2 * i + 1] = lo;
    // Children already present (orphans until now) have their parent back.
    const c = this.absent.take(hi, lo);
    this.orphans -= c;
    const aux = this.aux;
    aux[3 * i] = phi;
    aux[3 * i + 1] = plo;
    aux[3 * i + 2] = kind + c * CHILD;
    this.size++;
    return true;
  }

  delete(hi: number, lo: number): boolean {
    hi |= 0;
    lo |= 0;
    if (hi === 0 && lo === 0) {
      if (!this.zero) return false;
      this.removedAt = ++removalEpochs;
      this.zero = false;
      this.size--;
      this.unknown--;
      this.firsts[firstBucket(0, 0)]!--;
      return true;
    }
    const i = this.find(hi, lo);
    if (i < 0) return false;
    this.removedAt = ++removalEpochs;
    const { keys, aux, mask } = this;
    const phi = aux[3 * i]!;
    const plo = aux[3 * i + 1]!;
    const meta = aux[3 * i + 2]!;
    // Backward-shift deletion: move later entries of the run into the hole when their home slot
    // is not between the hole and them.
    let hole = i;
    for (let j = (i + 1) & mask; ; j = (j + 1) & mask) {
      const h = keys[2 * j]!;
      const l = keys[2 * j + 1]!;
      if (h === 0 && l === 0) break;
      const home = this.slot(h, l);
      if (((j - home) & mask) >= ((j - hole) & mask)) {
        keys[2 * hole] = h;
        keys[2 * hole + 1] = l;
        aux[3 * hole] = aux[3 * j]!;
        aux[3 * hole + 1] = aux[3 * j + 1]!;
        aux[3 * hole + 2] = aux[3 * j + 2]!;
        hole = j;
      }
    }
    keys[2 * hole] = 0;
    keys[2 * hole + 1] = 0;
    this.size--;
    // Its present children lose their parent...
    const c = meta >>> 2;
    if (c > 0) {
      this.orphans += c;
      this.absent.add(hi, lo, c);
    }
    // ...and it leaves its parent's children (or the orphans).
    const kind = meta & KIND_MASK;
    if (kind === K_PARENT) {
      const ps = this.find(phi, plo);
      if (ps >= 0) aux[3 * ps + 2]! -= CHILD;
      else {
        this.orphans--;
        this.absent.dec(phi, plo);
      }
    } else if (kind === K_UNKNOWN) this.unknown--;
    if (kind !== K_PARENT) this.firsts[firstBucket(hi, lo)]!--;
    return true;
  }

  clear(): void {
    this.removedAt = ++removalEpochs;
    this.keys = new Int32Array(128);
    this.aux = new Int32Array(192);
    this.mask = 63;
    this.zero = false;
    this.size = 0;
    this.orphans = 0;
    this.unknown = 0;
    this.firsts.fill(0);
    this.absent.clear();
  }

  /** Bytes of the tables. */
  get bytes(): number {
    return this.keys.byteLength + this.aux.byteLength;
  }

  /** Doubles the table (kept at most half full). */
  private grow(): void {
    const old = this.keys;
    const oldAux = this.aux;
    const slots = old.length; // twice the old slot count
    const keys = new Int32Array(slots * 2);
    const aux = new Int32Array(slots * 3);
    this.keys = keys;
    this.aux = aux;
    this.mask = slots - 1;
    const mask = this.mask;
    for (let o = 0; o < old.length / 2; o++) {
      const h = old[2 * o]!;
      const l = old[2 * o + 1]!;
      if (h === 0 && l === 0) continue;
      let i = this.slot(h, l);
      while (keys[2 * i] !== 0 || keys[2 * i + 1] !== 0) i = (i + 1) & mask;
      keys[2 * i] = h;
      keys[2 * i + 1] = l;
      aux[3 * i] = oldAux[3 * o]!;
      aux[3 * i + 1] = oldAux[3 * o + 1]!;
      aux[3 * i + 2] = oldAux[3 * o + 2]!;
    }
  }
}

/** The two uint32 halves of a 16-hex-digit block hash; undefined when malformed. */
export function parseBlockHash(s: unknown): [number, number] | undefined {
  if (typeof s !== 'string' || s.length === 0 || s.length > 16) return undefined;
  const p = s.length === 16 ? s : s.padStart(16, '0');
  const hi = parseInt(p.slice(0, 8), 16);
  const lo = parseInt(p.slice(8, 16), 16);
  if (!Number.isFinite(hi) || !Number.isFinite(lo)) return undefined;
  return [hi >>> 0, lo >>> 0];
}

type State = 'connecting' | 'live' | 'down';

interface Subscription {
  replicaId: string;
  url: string;
  state: State;
  blocks: BlockSet;
  /** Engine num_gpu_blocks (0: unknown). */
  capacity: number;
  attempts: number;
  req: http.ClientRequest | undefined;
  timer: NodeJS.Timeout | undefined;
  idle: NodeJS.Timeout | undefined;
  stopped: boolean;
  connects: number;
  events: number;
  overflows: number;
}

/** Counters of one replica's subscription (tests, debugging). */
export interface KvEventStats {
  state: State;
  blocks: number;
  bytes: number;
  cap: number;
  connects: number;
  events: number;
  overflows: number;
}

/** One KV event subscription per replica; follows the replica set given to `sync`. */
export class KvEventHub {
  private readonly subs = new Map<string, Subscription>();
  private readonly minMs: number;
  private readonly maxMs: number;
  private readonly connectMs: number;
  private readonly idleMs: number;
  readonly hardCap: number;
  private closed = false;

  constructor(private readonly o: KvEventOptions = {}) {
    this.minMs = o.reconnectMinMs ?? 200;
    this.maxMs = o.reconnectMaxMs ?? 5000;
    this.connectMs = o.connectTimeoutMs ?? 2000;
    this.idleMs = o.idleTimeoutMs ?? 45_000;
    this.hardCap = o.maxBlocksPerReplica ?? 1 << 20;
  }

  /** Subscribes to new replicas and drops those no longer listed (keyed by replica id). */
  sync(targets: Iterable<{ replicaId: string; url: string }>): void {
    if (this.closed) return;
    const want = new Map<string, string>();
    for (const t of targets) want.set(t.replicaId, t.url);
    for (const [id, s] of this.subs) if (want.get(id) !== s.url) this.stop(s);
    for (const [replicaId, url] of want) {
      if (this.subs.has(replicaId)) continue;
      const s: Subscription = {
        replicaId,
        url,
        state: 'down',
        blocks: new BlockSet(),
        capacity: 0,
        attempts: 0,
        req: undefined,
        timer: undefined,
        idle: undefined,
        stopped: false,
        connects: 0,
        events: 0,
        overflows: 0,
      };
      this.subs.set(replicaId, s);
      this.connect(s);
    }
  }

  /** The engine's num_gpu_blocks (the set's cap, within the hard cap); 0 = unknown. */
  setCapacity(replicaId: string, numGpuBlocks: number): void {
    const s = this.subs.get(replicaId);
    if (!s || !(numGpuBlocks >= 0)) return;
    s.capacity = Math.floor(numGpuBlocks);
    if (s.blocks.size > this.capOf(s)) this.overflow(s);
  }

  /** Whether the replica's precise data is available (its stream is up). */
  live(replicaId: string): boolean {
    return this.subs.get(replicaId)?.state === 'live';
  }

  /** The replica's block set while its stream is up, else undefined. */
  blocks(replicaId: string): BlockSet | undefined {
    const s = this.subs.get(replicaId);
    return s?.state === 'live' ? s.blocks : undefined;
  }

  /** Replica ids subscribed (whatever their state). */
  get replicaIds(): string[] {
    return [...this.subs.keys()];
  }

  stats(replicaId: string): KvEventStats | undefined {
    const s = this.subs.get(replicaId);
    if (!s) return undefined;
    return {
      state: s.state,
      blocks: s.blocks.size,
      bytes: s.blocks.bytes,
      cap: this.capOf(s),
      connects: s.connects,
      events: s.events,
      overflows: s.overflows,
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const s of [...this.subs.values()]) this.stop(s);
    await Promise.resolve();
  }

  private capOf(s: Subscription): number {
    return s.capacity > 0 ? Math.min(s.capacity, this.hardCap) : this.hardCap;
  }

  private connect(s: Subscription): void {
    if (s.stopped) return;
    s.state = 'connecting';
    let req: http.ClientRequest;
    try {
      req = http.get(s.url + '/kv/events', {
        headers: { accept: 'text/event-stream' },
        timeout: this.connectMs,
        agent: false,
      });
    } catch {
      this.down(s, undefined);
      return;
    }
    s.req = req;
    req.once('timeout', () => req.destroy(new Error('kv events: connect timeout')));
    req.once('error', () => this.down(s, req));
    req.once('response', (res) => {
      if (s.req !== req) {
        res.destroy();
        return;
      }
      if (res.statusCode !== 200) {
        res.resume();
        s.attempts = Math.max(s.attempts, 30); // not an event stream: retry rarely
        req.destroy();
        this.down(s, req);
        return;
      }
      req.setTimeout(0);
      s.blocks.clear();
      s.state = 'live';
      s.attempts = 0;
      s.connects++;
      this.o.onLive?.(s.replicaId, true);
      this.touch(s, req);
      res.setEncoding('utf8');
      let buf = '';
      let data = '';
      res.on('data', (chunk: string) => {
        if (s.req !== req) return;
        this.touch(s, req);
        buf += chunk;
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          let line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (line.endsWith('\r')) line = line.slice(0, -1);
          if (line.length === 0) {
            if (data.length > 0 && !this.apply(s, data)) {
              req.destroy();
              this.down(s, req);
              return;
            }
            data = '';
          } else if (line.startsWith('data:')) {
            const v = line.charCodeAt(5) === 32 ? line.slice(6) : line.slice(5);
            data = data.length > 0 ? data + '\n' + v : v;
          }
          // Comments (':'), other fields: ignored.
        }
        if (buf.length > 64 * 1024 * 1024) {
          req.destroy();
          this.down(s, req);
        }
      });
      res.once('end', () => this.down(s, req));
      res.once('error', () => this.down(s, req));
      res.once('close', () => this.down(s, req));
    });
  }

  /** Applies one batch; false when it cannot be read (the stream is then dropped). */
  private apply(s: Subscription, data: string): boolean {
    let batch: unknown;
    try {
      batch = JSON.parse(data);
    } catch {
      return false;
    }
    const events = (batch as { events?: unknown } | null)?.events;
    if (!Array.isArray(events)) return false;
    const set = s.blocks;
    const cap = this.capOf(s);
    for (const ev of events as unknown[]) {
      const e = ev as { type?: unknown; blockHashes?: unknown } | null;
      s.events++;
      switch (e?.type) {
        case 'BlockStored':
        case 'BlockRemoved': {
          if (!Array.isArray(e.blockHashes)) return false;
          const store = e.type === 'BlockStored';
          // Each stored block's parent: the one before it in the batch; the first's is
          // `parentBlockHash` (null: the prompt's first block; missing or unreadable: unknown).
          let parent: [number, number] | null | undefined;
          if (store) {
            const ph = (e as { parentBlockHash?: unknown }).parentBlockHash;
            parent = ph === null ? null : parseBlockHash(ph);
          }
          for (const h of e.blockHashes as unknown[]) {
            const p = parseBlockHash(h);
            if (!p) return false;
            if (!store) {
              set.delete(p[0], p[1]);
              continue;
            }
            const added =
              parent === null
                ? set.addRoot(p[0], p[1])
                : parent === undefined
                  ? set.add(p[0], p[1])
                  : set.addChild(p[0], p[1], parent[0], parent[1]);
            if (added && set.size > cap) {
              this.overflow(s);
              break;
            }
            parent = p;
          }
          break;
        }
        case 'AllBlocksCleared':
          set.clear();
          break;
        default:
          // Unknown event types (future ones) are skipped.
          break;
      }
    }
    return true;
  }

  private overflow(s: Subscription): void {
    s.overflows++;
    s.blocks.clear();
  }

  private touch(s: Subscription, req: http.ClientRequest): void {
    if (s.idle) s.idle.refresh();
    else {
      s.idle = setTimeout(() => {
        if (s.req !== req) return;
        req.destroy();
        this.down(s, req);
      }, this.idleMs);
      s.idle.unref();
    }
  }

  /** The stream `req` failed or ended: precise data off, reconnect later. */
  private down(s: Subscription, req: http.ClientRequest | undefined): void {
    if (req !== undefined && s.req !== req) return; // an older stream
    s.req = undefined;
    if (s.idle) clearTimeout(s.idle);
    s.idle = undefined;
    const was = s.state;
    s.state = 'down';
    s.blocks.clear();
    if (was === 'live') this.o.onLive?.(s.replicaId, false);
    if (s.stopped || this.closed) return;
    const delay = Math.min(this.maxMs, this.minMs * 2 ** Math.min(s.attempts, 30));
    s.attempts++;
    if (s.timer) clearTimeout(s.timer);
    s.timer = setTimeout(() => {
      s.timer = undefined;
      this.connect(s);
    }, delay);
    s.timer.unref();
  }

  private stop(s: Subscription): void {
    s.stopped = true;
    if (s.timer) clearTimeout(s.timer);
    s.timer = undefined;
    const req = s.req;
    this.down(s, undefined);
    req?.destroy();
    this.subs.delete(s.replicaId);
  }
}
