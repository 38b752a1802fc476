// The load board: a real file in the temp dir, several LoadBoard views of it (as the gateway
// workers hold them), and two routing pipelines that share replicas through it.
import {
  closeSync,
  mkdtempSync,
  openSync,
  readSync,
  readdirSync,
  rmSync,
  statSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  BOARD_CAPACITY,
  LoadBoard,
  clearBoardSlot,
  createBoardFile,
  removeBoardFile,
  removeStaleBoards,
  type PeerBoard,
} from '../../src/gateway/routing/load-board.js';
import { RoutingPipeline, seededRandom } from '../../src/gateway/routing/pipeline.js';
import type { SignalSource } from '../../src/gateway/routing/signals.js';
import { freshView, simRoute } from './routing-fixtures.js';

let dir: string;
let path: string;
const open: LoadBoard[] = [];
const board = (slot: number, slots = 2): LoadBoard => {
  const b = new LoadBoard(path, slot, slots);
  open.push(b);
  return b;
};

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'ip-board-'));
  path = join(dir, 'board');
});
afterEach(() => {
  for (const b of open.splice(0)) b.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('LoadBoard', () => {
  it("shows each process the others' in-flight counts and pick times at once, not its own", () => {
    createBoardFile(path, 3);
    const ids = new Set(['r0', 'r1', 'r2']);
    const [a, b, c] = [board(0, 3), board(1, 3), board(2, 3)];
    for (const x of [a, b, c]) x.retain(ids);
    a.publish('r0', 2, 1000.5);
    b.publish('r0', 1, 1001.25);
    b.publish('r2', 4, 999);
    c.refresh();
    expect([c.inflight('r0'), c.inflight('r1'), c.inflight('r2')]).toEqual([3, 0, 4]);
    expect([c.lastPick('r0'), c.lastPick('r1'), c.lastPick('r2')]).toEqual([1001.25, -1, 999]);
    a.refresh();
    expect(a.inflight('r0')).toBe(1); // B's only: its own count is not a peer's
    // A change is one write; the next read sees it.
    a.publish('r0', 0, 1000.5);
    c.refresh();
    expect(c.inflight('r0')).toBe(1);
    // Until the next read, a reader keeps what it read.
    b.publish('r2', 0, 999);
    expect(c.inflight('r2')).toBe(4);
    c.refresh();
    expect(c.inflight('r2')).toBe(0);
    // Sparse: three slots of 4,096 entries take no more disk than the pages written.
    expect(statSync(path).size).toBeGreaterThan(3 * BOARD_CAPACITY * 24);
  });

  it('rewrites a slot when replicas leave, and reads a replica learnt late', () => {
    createBoardFile(path, 2);
    const [a, b] = [board(0), board(1)];
    a.retain(new Set(['r0', 'r1', 'r2']));
    b.retain(new Set(['r0', 'r1']));
    for (const [i, id] of ['r0', 'r1', 'r2'].entries()) a.publish(id, i + 1, 10 + i);
    b.refresh();
    expect([b.inflight('r0'), b.inflight('r1'), b.inflight('r2')]).toEqual([1, 2, 0]);
    // B learns r2 (a new routing table): A's entry for it, already read, now counts.
    b.retain(new Set(['r0', 'r1', 'r2']));
    b.refresh();
    expect(b.inflight('r2')).toBe(3);
    // r0 leaves A's table: its slot is rewritten (new layout) with r1 and r2 only.
    a.retain(new Set(['r1', 'r2']));
    b.refresh();
    expect([b.inflight('r0'), b.inflight('r1'), b.inflight('r2')]).toEqual([0, 2, 3]);
    expect(b.lastPick('r2')).toBe(12);
    // A request to r0 ending after r0 left A's table: nothing to tell, nothing appended.
    a.publish('r0', 0, 10);
    const head = Buffer.alloc(16);
    const fd = openSync(path, 'r');
    readSync(fd, head, 0, 16, 0);
    closeSync(fd);
    expect(head.readDoubleLE(8)).toBe(2);
    // r2 leaves B's table: what B read is by its old indexes, none until its next read.
    b.retain(new Set(['r0', 'r1']));
    expect([b.inflight('r0'), b.inflight('r1'), b.lastPick('r1')]).toEqual([0, 0, -1]);
    b.refresh();
    expect([b.inflight('r1'), b.inflight('r2')]).toEqual([2, 0]);
    a.publish('r1', 5, 20);
    a.publish('r0', 1, 21); // back again: appended
    b.refresh();
    expect([b.inflight('r0'), b.inflight('r1'), b.lastPick('r0')]).toEqual([1, 5, 21]);
  });

  it("empties a dead process's slot, and a new owner of the slot starts empty", () => {
    createBoardFile(path, 2);
    const [a, b] = [board(0), board(1)];
    for (const x of [a, b]) x.retain(new Set(['r0']));
    a.publish('r0', 7, 5);
    b.refresh();
    expect(b.inflight('r0')).toBe(7);
    clearBoardSlot(path, 0); // what the primary does when worker A exits
    b.refresh();
    expect([b.inflight('r0'), b.lastPick('r0')]).toEqual([0, -1]);
    const a2 = board(0); // a replacement takes the slot over
    b.refresh();
    expect(b.inflight('r0')).toBe(0);
    a2.retain(new Set(['r0']));
    a2.publish('r0', 1, 6);
    b.refresh();
    expect(b.inflight('r0')).toBe(1);
    // Closing empties the slot too; a removed file is no error for the primary.
    a2.close();
    b.refresh();
    expect(b.inflight('r0')).toBe(0);
    removeBoardFile(path);
    removeBoardFile(path);
    clearBoardSlot(path, 0);
  });

  it('reads an entry whose tag is not the expected one as none, then rereads the tags', () => {
    createBoardFile(path, 2);
    const [a, b] = [board(0), board(1)];
    for (const x of [a, b]) x.retain(new Set(['r0', 'r1']));
    a.publish('r0', 1, 10);
    a.publish('r1', 2, 20);
    b.refresh();
    expect([b.inflight('r0'), b.inflight('r1')]).toEqual([1, 2]);
    // Slot 0's two entries swapped in place, layout and count unchanged: what a read crossing a
    // rewrite of the slot can see.
    const fd = openSync(path, 'r+');
    const e = Buffer.alloc(48);
    readSync(fd, e, 0, 48, 32);
    writeSync(fd, Buffer.concat([e.subarray(24), e.subarray(0, 24)]), 0, 48, 32);
    closeSync(fd);
    b.refresh();
    expect([b.inflight('r0'), b.inflight('r1')]).toEqual([0, 0]);
    b.refresh();
    expect([b.inflight('r0'), b.inflight('r1'), b.lastPick('r1')]).toEqual([1, 2, 20]);
  });

  it('removes board files whose primary is gone, and only those', () => {
    // 4194305 is above Linux's largest pid_max: no process has it.
    const names = [
      'inferplane-gw-4194305-0badf00d',
      `inferplane-gw-${process.pid}-00c0ffee`,
      'inferplane-gw-4194305-not-hex',
      'other-file',
    ];
    for (const n of names) createBoardFile(join(dir, n), 1);
    expect(removeStaleBoards(dir)).toEqual(['inferplane-gw-4194305-0badf00d']);
    expect(readdirSync(dir).sort()).toEqual(names.slice(1).sort());
    expect(removeStaleBoards(join(dir, 'missing'))).toEqual([]);
  });

  it('reads many replicas (more than its first read covers) and refuses a slot out of range', () => {
    createBoardFile(path, 2);
    const [a, b] = [board(0), board(1)];
    const ids = new Set(Array.from({ length: 300 }, (_, i) => `r${i}`));
    for (const x of [a, b]) x.retain(ids);
    for (let i = 0; i < 300; i++) a.publish(`r${i}`, i % 5, i);
    b.refresh();
    let sum = 0;
    for (const id of ids) sum += b.inflight(id);
    expect(sum).toBe(60 * (0 + 1 + 2 + 3 + 4));
    expect(b.lastPick('r299')).toBe(299);
    expect(() => new LoadBoard(path, 2, 2)).toThrow(RangeError);
  });
});

describe('RoutingPipeline on a load board', () => {
  it("counts the other process's requests and picks in the very next decision", () => {
    createBoardFile(path, 2);
    const source: SignalSource = { view: () => freshView() };
    const route = simRoute(3, { policy: 'least-loaded' });
    const a = new RoutingPipeline({ signals: source, random: seededRandom(5), board: board(0) });
    const b = new RoutingPipeline({
      signals: source,
      random: seededRandom(3),
      board: board(1),
      saturation: { maxInflight: 2 },
    });
    for (const p of [a, b]) p.sync({ models: [route] });
    // A sends to r0 and r1 and keeps them in flight: B's next picks go to r2, then — with r2
    // holding B's own request — to whichever A's replicas was picked longest ago (r0).
    const pa = [
      a.pick(route, { exclude: new Set(['r1', 'r2']) })!,
      a.pick(route, { exclude: new Set(['r0', 'r2']) })!,
    ];
    expect(pa.map((d) => d.endpoint.replicaId)).toEqual(['r0', 'r1']);
    const d1 = b.pick(route, { exclude: new Set() })!;
    expect(d1.endpoint.replicaId).toBe('r2');
    expect(d1.receipt.scores.r0!.load).toBe(1);
    expect(b.peerInflightOf('r0')).toBe(1);
    expect(b.pick(route, { exclude: new Set() })!.endpoint.replicaId).toBe('r0');
    // The in-flight cap (2) counts both: r0 2, r1 1, r2 1.
    expect(b.saturated(route, { exclude: new Set() })).toBe(false);
    b.pick(route, { exclude: new Set(['r0', 'r2']) }); // r1: 2
    expect(b.saturated(route, { exclude: new Set(['r2']) })).toBe(true);
    // A's requests end: B sees them gone at once (this test waits out the read coalescing).
    a.release('r0');
    a.release('r1');
    const until = performance.now() + 0.2;
    while (performance.now() < until) {
      /* spin past BOARD_READ_MS */
    }
    expect(b.saturated(route, { exclude: new Set(['r2']) })).toBe(false);
    expect(b.peerInflightOf('r0')).toBe(0);
  });

  it('withdraws a pick when the other process took the same replica at the same moment', () => {
    createBoardFile(path, 2);
    const source: SignalSource = { view: () => freshView() };
    const route = simRoute(2, { policy: 'least-loaded' });
    const shared = board(0);
    // A's board runs B's whole decision right after A's first read: B publishes its pick of the
    // same replica after A read the board and before A publishes (two cores, the same instant).
    let between: (() => void) | undefined;
    const seen: PeerBoard = {
      refresh: () => {
        shared.refresh();
        const f = between;
        between = undefined;
        f?.();
      },
      inflight: (id) => shared.inflight(id),
      lastPick: (id) => shared.lastPick(id),
      publish: (id, n, at) => shared.publish(id, n, at),
      retain: (ids) => shared.retain(ids),
    };
    let races = 0;
    const a = new RoutingPipeline({
      signals: source,
      random: seededRandom(5),
      board: seen,
      onRace: () => races++,
    });
    const b = new RoutingPipeline({ signals: source, random: seededRandom(3), board: board(1) });
    for (const p of [a, b]) p.sync({ models: [route] });
    // r0 then r1 picked and finished (by B): r0 is the least recently picked, for both.
    for (const only of ['r0', 'r1']) {
      const d = b.pick(route, { exclude: new Set([only === 'r0' ? 'r1' : 'r0']) })!;
      b.release(d.endpoint.replicaId);
    }
    let bPick = '';
    between = () => {
      bPick = b.pick(route, { exclude: new Set() })!.endpoint.replicaId;
    };
    const spin = performance.now() + 0.2;
    while (performance.now() < spin) {
      /* past BOARD_READ_MS: A's next decision reads the board */
    }
    const d = a.pick(route, { exclude: new Set() })!;
    expect(bPick).toBe('r0');
    expect(d.endpoint.replicaId).toBe('r1');
    expect(races).toBe(1);
    // The withdrawn pick left nothing behind: A holds one request (r1), B one (r0).
    expect([a.inflightOf('r0'), a.inflightOf('r1'), b.inflightOf('r0')]).toEqual([0, 1, 1]);
    b.pick(route, { exclude: new Set(['r0']) }); // refreshes B's view
    expect(b.peerInflightOf('r0')).toBe(0);
    expect(b.peerInflightOf('r1')).toBe(1);
    // Without a race, nothing is withdrawn.
    a.release('r1');
    a.pick(route, { exclude: new Set() });
    expect(races).toBe(1);
  });
});
