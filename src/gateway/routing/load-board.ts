// The load board: what the gateway processes of one machine (`up --gateway-workers N`) know of each
// other's requests, without messages. Each process counts its own in-flight requests per replica
// exactly; the replicas' scraped queues lag by a scrape period; so, for processes that share the
// replicas, each one's counts and pick times have to reach the others before their next pick.
// Relayed as messages (worker → primary → worker) they arrived 0.5 ms late at the median and 5 ms
// at p99, long enough that two processes often sent a prefill to the same idle replica.
//
// Here they are a table in one file on tmpfs (/dev/shm, else the temp dir), which every process
// reads and writes with pread/pwrite: the page cache is shared, so a write is visible to the
// next read of any process at once (~1 µs a call on this machine). Each process owns one slot
// and writes only there; a decision reads the peers' slots (one read per peer).
//
// A slot, in float64s:  [layout, n, pid, 0]  then n entries  [tag, inflight, lastPick]
// - tag: a 48-bit hash of the replica id (the reader maps it back through its own routing table);
// - inflight: the writer's in-flight requests there; lastPick: when it last picked it (ms since
//   the epoch, sub-ms: comparable between processes);
// - entries are appended (n grows, layout stays); when a replica leaves, the slot is rewritten
//   under a new layout (header with n = 0 first, then the entries, then n), and a reader that sees
//   a new layout rereads the tags. The primary empties a dead worker's slot the same way.
// The file is named after the primary's pid (inferplane-gw-<pid>-<random>) and removed when the
// workers stop; one left by a primary that was killed is removed by the next one that starts.
// Reads are not atomic against a concurrent write; a value that is not a plausible count or time,
// or an entry whose tag is not the replica's, is read as none (the writer's next change rewrites
// it; the reader rereads the tags).
import process from 'node:process';
import { Buffer } from 'node:buffer';
import { createHash } from 'node:crypto';
import {
  closeSync,
  existsSync,
  ftruncateSync,
  openSync,
  readSync,
  readdirSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { processAlive } from '../../core/process.js';

/** Entries a slot holds (replicas beyond these are not shared). */
export const BOARD_CAPACITY = 4096;
const HEADER = 4;
const ENTRY = 3;
const SLOT_DOUBLES = HEADER + ENTRY * BOARD_CAPACITY;
const SLOT_BYTES = SLOT_DOUBLES * 8;
/** In-flight counts above this are read as torn. */
const MAX_COUNT = 1_000_000;

/** What the routing pipeline needs of its peers (RoutingPipeline `board`). */
export interface PeerBoard {
  /** Reads the peers' slots (once per decision). */
  refresh(): void;
  /** The peers' in-flight requests to the replica, as of the last refresh. */
  inflight(replicaId: string): number;
  /** When a peer last picked the replica (ms since the epoch; -1: never), as of the last refresh. */
  lastPick(replicaId: string): number;
  /** This process's in-flight count of the replica and when it last picked it. */
  publish(replicaId: string, inflight: number, lastPick: number): void;
  /** The routing table's replicas: others are dropped from this process's slot. */
  retain(ids: ReadonlySet<string>): void;
}

/** A 48-bit hash of a replica id (exact in a float64). */
export function boardTag(replicaId: string): number {
  return createHash('sha1').update(replicaId).digest().readUIntBE(0, 6);
}

/** Where board files go: tmpfs when the machine has it. */
export function boardDir(): string {
  return existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
}

/** Where a board file goes. */
export function boardPath(name: string): string {
  return join(boardDir(), name);
}

/**
 * Removes the board files (`inferplane-gw-<pid>-…`) whose primary is no longer running — left
 * by one that was killed before it could remove its own. Returns the names removed.
 */
export function removeStaleBoards(dir = boardDir()): string[] {
  const removed: string[] = [];
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return removed;
  }
  for (const name of names) {
    const m = /^inferplane-gw-(\d+)-[0-9a-f]+$/.exec(name);
    if (!m || processAlive(Number(m[1]))) continue;
    try {
      unlinkSync(join(dir, name));
      removed.push(name);
    } catch {
      /* another primary removed it first, or it is not ours to remove */
    }
  }
  return removed;
}

/** Creates (or empties) the board file for `slots` processes; the primary does this. */
export function createBoardFile(path: string, slots: number): void {
  const fd = openSync(path, 'w+', 0o600);
  try {
    // Sparse: only the pages written take memory.
    ftruncateSync(fd, slots * SLOT_BYTES);
  } finally {
    closeSync(fd);
  }
}

/** Empties a slot whose process is gone (its requests died with it). */
export function clearBoardSlot(path: string, slot: number): void {
  let fd: number;
  try {
    fd = openSync(path, 'r+');
  } catch {
    return;
  }
  try {
    emptySlot(fd, slot * SLOT_BYTES);
  } finally {
    closeSync(fd);
  }
}

/** Empties the slot at `base` (a new layout, no entries); returns its new layout. */
function emptySlot(fd: number, base: number): number {
  const head = new Float64Array(2);
  const hb = Buffer.from(head.buffer);
  readSync(fd, hb, 0, 16, base);
  head[0] = (Number.isFinite(head[0]) ? head[0]! : 0) + 1;
  head[1] = 0;
  writeSync(fd, hb, 0, 16, base);
  return head[0];
}

export function removeBoardFile(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    /* already gone */
  }
}

interface PeerSlot {
  slot: number;
  buf: Buffer;
  f64: Float64Array;
  /** The slot's layout and entry count when last read. */
  layout: number;
  n: number;
  /** Entry → this process's dense index of its replica (-1: a replica it does not route). */
  at: Int32Array;
}

/** One process's view of the board: its own slot to write, the others to read. */
export class LoadBoard implements PeerBoard {
  private readonly fd: number;
  private readonly base: number;
  private readonly peers: PeerSlot[] = [];
  /** This process's slot, mirrored. */
  private readonly own: Float64Array = new Float64Array(SLOT_DOUBLES);
  private readonly ownBuf: Buffer;
  private readonly ownAt = new Map<string, number>();
  /**
   * The replicas this process knows (its routing table, what it published), densely indexed:
   * id → index, index → tag, tag → index; and per index the peers' sum of in-flight requests
   * and latest pick, as of the last refresh.
   */
  private readonly known = new Map<string, number>();
  private readonly tagAt: number[] = [];
  private readonly byTag = new Map<number, number>();
  private sums = new Float64Array(64);
  private lasts = new Float64Array(64).fill(-1);
  private closed = false;

  constructor(
    readonly path: string,
    readonly slot: number,
    slots: number,
  ) {
    if (!(slot >= 0 && slot < slots)) throw new RangeError(`board slot ${slot} of ${slots}`);
    this.fd = openSync(path, 'r+');
    this.base = slot * SLOT_BYTES;
    this.ownBuf = Buffer.from(this.own.buffer);
    // Whatever a previous owner of the slot left: a new layout, empty; then this pid.
    this.own[0] = emptySlot(this.fd, this.base);
    this.own[2] = process.pid;
    writeSync(this.fd, this.ownBuf, 16, 8, this.base + 16);
    for (let s = 0; s < slots; s++) {
      if (s === slot) continue;
      const buf = Buffer.alloc((HEADER + ENTRY * 64) * 8);
      this.peers.push({
        slot: s,
        buf,
        f64: new Float64Array(buf.buffer, buf.byteOffset, buf.length / 8),
        layout: -1,
        n: 0,
        at: new Int32Array(64),
      });
    }
  }

  /** The replica's dense index (a new one for a replica not known yet). */
  private indexOf(id: string): number {
    let k = this.known.get(id);
    if (k === undefined) {
      k = this.tagAt.length;
      const t = boardTag(id);
      this.known.set(id, k);
      this.tagAt.push(t);
      this.byTag.set(t, k);
      if (k >= this.sums.length) {
        const sums = new Float64Array(2 * this.sums.length);
        sums.set(this.sums);
        this.sums = sums;
        const lasts = new Float64Array(2 * this.lasts.length).fill(-1);
        lasts.set(this.lasts);
        this.lasts = lasts;
      }
      // A peer's entry for it may have been read before this process knew the replica.
      for (const p of this.peers) p.layout = -1;
    }
    return k;
  }

  private tagOf(id: string): number {
    return this.tagAt[this.indexOf(id)]!;
  }

  retain(ids: ReadonlySet<string>): void {
    if (this.closed) return;
    // Replicas left: index the ones that stay anew (every peer slot's tags are read again).
    for (const id of this.known.keys()) {
      if (!ids.has(id)) {
        this.known.clear();
        this.tagAt.length = 0;
        this.byTag.clear();
        // What was read is by the old indexes: none until the next refresh.
        this.sums.fill(0);
        this.lasts.fill(-1);
        for (const p of this.peers) p.layout = -1;
        break;
      }
    }
    for (const id of ids) this.indexOf(id);
    let gone = false;
    for (const id of this.ownAt.keys()) if (!ids.has(id)) gone = true;
    if (!gone) return;
    // Rewrite the slot under a new layout with the replicas that stay.
    const own = this.own;
    const kept: Array<[string, number, number]> = [];
    for (const [id, j] of this.ownAt) {
      if (ids.has(id)) kept.push([id, own[HEADER + j * ENTRY + 1]!, own[HEADER + j * ENTRY + 2]!]);
    }
    own[0] = own[0]! + 1;
    own[1] = 0;
    writeSync(this.fd, this.ownBuf, 0, 16, this.base);
    this.ownAt.clear();
    kept.forEach(([id, inflight, at], j) => {
      const o = HEADER + j * ENTRY;
      own[o] = this.tagOf(id);
      own[o + 1] = inflight;
      own[o + 2] = at;
      this.ownAt.set(id, j);
    });
    if (kept.length > 0) {
      writeSync(this.fd, this.ownBuf, HEADER * 8, kept.length * ENTRY * 8, this.base + HEADER * 8);
    }
    own[1] = kept.length;
    writeSync(this.fd, this.ownBuf, 8, 8, this.base + 8);
  }

  publish(replicaId: string, inflight: number, lastPick: number): void {
    if (this.closed) return;
    const own = this.own;
    let j = this.ownAt.get(replicaId);
    if (j === undefined) {
      // (A count of none for a replica not on the slot — a request ending after its replica left
      // the routing table — has nothing to tell.)
      if (inflight === 0) return;
      j = own[1]!;
      if (j >= BOARD_CAPACITY) return;
      this.ownAt.set(replicaId, j);
      const o = HEADER + j * ENTRY;
      own[o] = this.tagOf(replicaId);
      own[o + 1] = inflight;
      own[o + 2] = lastPick;
      writeSync(this.fd, this.ownBuf, o * 8, ENTRY * 8, this.base + o * 8);
      own[1] = j + 1;
      writeSync(this.fd, this.ownBuf, 8, 8, this.base + 8);
      return;
    }
    const o = HEADER + j * ENTRY + 1;
    own[o] = inflight;
    own[o + 1] = lastPick;
    writeSync(this.fd, this.ownBuf, o * 8, 16, this.base + o * 8);
  }

  refresh(): void {
    if (this.closed) return;
    const m = this.tagAt.length;
    this.sums.fill(0, 0, m);
    this.lasts.fill(-1, 0, m);
    for (const p of this.peers) this.read(p);
  }

  /** Reads a peer's slot and adds its entries to the sums. */
  private read(p: PeerSlot): void {
    const want = HEADER + ENTRY * Math.min(BOARD_CAPACITY, p.n + 8);
    if (p.f64.length < want) {
      p.buf = Buffer.alloc(want * 2 * 8);
      p.f64 = new Float64Array(p.buf.buffer, p.buf.byteOffset, p.buf.length / 8);
    }
    readSync(this.fd, p.buf, 0, want * 8, p.slot * SLOT_BYTES);
    let n = p.f64[1]!;
    if (!(Number.isInteger(n) && n >= 0 && n <= BOARD_CAPACITY)) n = 0;
    if (HEADER + ENTRY * n > want) {
      // It grew by more than the slack: read it whole.
      const need = HEADER + ENTRY * n;
      p.buf = Buffer.alloc(need * 8);
      p.f64 = new Float64Array(p.buf.buffer, p.buf.byteOffset, need);
      readSync(this.fd, p.buf, 0, need * 8, p.slot * SLOT_BYTES);
    }
    const g = p.f64;
    // Entries new to this reader (all of them under a new layout): their replicas' indexes.
    let from = p.n;
    if (g[0] !== p.layout || n < from) {
      p.layout = g[0]!;
      from = 0;
    }
    if (p.at.length < n) {
      const at = new Int32Array(Math.max(n, 2 * p.at.length));
      at.set(p.at);
      p.at = at;
    }
    for (let j = from; j < n; j++) p.at[j] = this.byTag.get(g[HEADER + j * ENTRY]!) ?? -1;
    p.n = n;
    const tags = this.tagAt;
    const sums = this.sums;
    const lasts = this.lasts;
    for (let j = 0; j < n; j++) {
      const k = p.at[j]!;
      if (k < 0) continue;
      const o = HEADER + j * ENTRY;
      if (g[o] !== tags[k]) {
        // Read across a rewrite of the slot: none this time, its tags read anew next time.
        p.layout = -1;
        continue;
      }
      const v = g[o + 1]!;
      if (v > 0 && v <= MAX_COUNT && Number.isInteger(v)) sums[k] = sums[k]! + v;
      const t = g[o + 2]!;
      if (t > lasts[k]! && Number.isFinite(t)) lasts[k] = t;
    }
  }

  inflight(replicaId: string): number {
    const k = this.known.get(replicaId);
    return k === undefined ? 0 : this.sums[k]!;
  }

  lastPick(replicaId: string): number {
    const k = this.known.get(replicaId);
    return k === undefined ? -1 : this.lasts[k]!;
  }

  /** Empties this process's slot and closes the file. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      emptySlot(this.fd, this.base);
    } catch {
      /* the file may be gone */
    }
    closeSync(this.fd);
  }
}
