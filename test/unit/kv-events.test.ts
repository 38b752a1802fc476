// KV event subscriptions (precise prefix source) through real sockets: a real simulator server
// from src/sim, and a scripted SSE server for the events the simulator rarely emits on demand.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { blockHashes, chatPromptText, hashHex, tokenize } from '../../src/core/tokens.js';
import { seededRandom } from '../../src/core/random.js';
import { RoutingSpecSchema } from '../../src/core/schemas.js';
import type { RouteModel } from '../../src/core/types.js';
import { BlockSet, KvEventHub, parseBlockHash } from '../../src/gateway/routing/kv-events.js';
import { RoutingPipeline } from '../../src/gateway/routing/pipeline.js';
import { enginePromptParts, PromptBlockHashes } from '../../src/gateway/routing/precise-prefix.js';
import { blockHashes as textHashes } from '../../src/gateway/routing/prefix-index.js';
import { freshView, simRoute } from './routing-fixtures.js';
import { createSimServer } from '../../src/sim/server.js';

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (closers.length > 0) await closers.pop()!();
});

async function until(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A scripted `/kv/events` server: `send` writes a batch to every open stream. */
async function scriptedEngine(): Promise<{
  url: string;
  send: (events: unknown[]) => void;
  raw: (text: string) => void;
  dropAll: () => void;
  streams: () => number;
  close: () => Promise<void>;
}> {
  const open = new Set<http.ServerResponse>();
  const server = http.createServer((req, res) => {
    if (req.url !== '/kv/events') {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.write(': hello\n\n');
    open.add(res);
    res.once('close', () => open.delete(res));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    send: (events) => {
      for (const r of open) r.write(`data: ${JSON.stringify({ ts: 0, replica: 0, events })}\n\n`);
    },
    raw: (text) => {
      for (const r of open) r.write(text);
    },
    dropAll: () => {
      for (const r of open) r.destroy();
    },
    streams: () => open.size,
    close: async () => {
      for (const r of open) r.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

const hex = (i: number): string => i.toString(16).padStart(16, '0');
const has = (hub: KvEventHub, id: string, h: string): boolean => {
  const p = parseBlockHash(h)!;
  return hub.blocks(id)?.has(p[0], p[1]) ?? false;
};

describe('BlockSet', () => {
  it('adds, finds and deletes (backward-shift) under churn like a Set', () => {
    const rnd = seededRandom(5);
    const set = new BlockSet();
    const ref = new Set<string>();
    for (let k = 0; k < 20_000; k++) {
      const hi = Math.floor(rnd() * 50);
      const lo = Math.floor(rnd() * 2 ** 32);
      const key = `${hi}:${lo % 500}`;
      if (rnd() < 0.6) {
        expect(set.add(hi, lo % 500)).toBe(!ref.has(key));
        ref.add(key);
      } else {
        expect(set.delete(hi, lo % 500)).toBe(ref.has(key));
        ref.delete(key);
      }
    }
    expect(set.size).toBe(ref.size);
    for (const key of ref) {
      const [hi, lo] = key.split(':').map(Number) as [number, number];
      expect(set.has(hi, lo)).toBe(true);
    }
  });
});

describe('KvEventHub', () => {
  it('applies BlockStored, BlockRemoved and AllBlocksCleared from the stream', async () => {
    const eng = await scriptedEngine();
    closers.push(eng.close);
    const hub = new KvEventHub();
    closers.push(() => hub.close());
    hub.sync([{ replicaId: 'r0', url: eng.url }]);
    await until(() => hub.live('r0') && eng.streams() === 1, 'the stream');
    eng.send([
      { type: 'BlockStored', blockHashes: [hex(1), hex(2), hex(3)], parentBlockHash: null },
    ]);
    await until(() => hub.stats('r0')!.blocks === 3, 'stored blocks');
    expect(has(hub, 'r0', hex(2))).toBe(true);
    eng.send([{ type: 'BlockRemoved', blockHashes: [hex(2)] }]);
    await until(() => hub.stats('r0')!.blocks === 2, 'a removal');
    expect(has(hub, 'r0', hex(2))).toBe(false);
    expect(has(hub, 'r0', hex(3))).toBe(true);
    eng.send([{ type: 'AllBlocksCleared' }]);
    await until(() => hub.stats('r0')!.blocks === 0, 'the clear');
    expect(hub.live('r0')).toBe(true);
  });

  it('a dropped stream makes the data unavailable; the reconnected one starts cold', async () => {
    const eng = await scriptedEngine();
    closers.push(eng.close);
    const changes: string[] = [];
    const hub = new KvEventHub({
      reconnectMinMs: 20,
      onLive: (id, live) => changes.push(`${id} ${live}`),
    });
    closers.push(() => hub.close());
    hub.sync([{ replicaId: 'r0', url: eng.url }]);
    await until(() => hub.live('r0') && eng.streams() === 1, 'the stream');
    eng.send([{ type: 'BlockStored', blockHashes: [hex(7)] }]);
    await until(() => has(hub, 'r0', hex(7)), 'the block');
    eng.dropAll();
    await until(() => !hub.live('r0'), 'the drop');
    expect(hub.blocks('r0')).toBeUndefined();
    await until(() => hub.live('r0') && eng.streams() === 1, 'the reconnect');
    // No snapshot on the stream: cold, although the engine may still hold hex(7).
    expect(hub.stats('r0')!.blocks).toBe(0);
    expect(has(hub, 'r0', hex(7))).toBe(false);
    expect(hub.stats('r0')!.connects).toBe(2);
    expect(changes).toEqual(['r0 true', 'r0 false', 'r0 true']);
  });

  it('drops a stream that sends an unreadable batch, and reconnects', async () => {
    const eng = await scriptedEngine();
    closers.push(eng.close);
    const hub = new KvEventHub({ reconnectMinMs: 20 });
    closers.push(() => hub.close());
    hub.sync([{ replicaId: 'r0', url: eng.url }]);
    await until(() => hub.live('r0') && eng.streams() === 1, 'the stream');
    eng.send([{ type: 'BlockStored', blockHashes: [hex(9)] }]);
    await until(() => has(hub, 'r0', hex(9)), 'the block');
    eng.raw('data: {not json\n\n');
    await until(() => hub.stats('r0')!.connects === 2 && hub.live('r0'), 'the reconnect');
    expect(hub.stats('r0')!.blocks).toBe(0);
  });

  it('holds its memory cap: the engine num_gpu_blocks, within the hard cap', async () => {
    const eng = await scriptedEngine();
    closers.push(eng.close);
    const hub = new KvEventHub({ maxBlocksPerReplica: 100 });
    closers.push(() => hub.close());
    hub.sync([{ replicaId: 'r0', url: eng.url }]);
    await until(() => hub.live('r0') && eng.streams() === 1, 'the stream');
    expect(hub.stats('r0')!.cap).toBe(100);
    hub.setCapacity('r0', 40);
    expect(hub.stats('r0')!.cap).toBe(40);
    let sent = 0;
    let max = 0;
    for (let b = 0; b < 10; b++) {
      eng.send([
        { type: 'BlockStored', blockHashes: Array.from({ length: 25 }, () => hex(++sent)) },
      ]);
      await until(() => hub.stats('r0')!.events === b + 1, 'the batch');
      max = Math.max(max, hub.stats('r0')!.blocks);
    }
    // An engine with 40 blocks cannot cache 250: the set overflowed, was cleared, stayed ≤ 40.
    expect(max).toBeLessThanOrEqual(40);
    expect(hub.stats('r0')!.overflows).toBeGreaterThan(0);
    const bytes = hub.stats('r0')!.bytes;
    expect(bytes).toBeLessThanOrEqual(40 * 32);
    hub.setCapacity('r0', 10_000);
    expect(hub.stats('r0')!.cap).toBe(100); // the hard cap
  });

  it('follows a real simulator: the prompt hashes the router computes are the ones it stores', async () => {
    const sim = createSimServer({ model: 'llama-3.1-8b', servedModelName: 'm', timeScale: 0.02 });
    const url = `http://127.0.0.1:${await sim.listen(0)}`;
    closers.push(() => sim.close());
    const hub = new KvEventHub();
    closers.push(() => hub.close());
    hub.sync([{ replicaId: 'r0', url }]);
    await until(() => hub.live('r0'), 'the stream');
    const messages = [
      { role: 'system', content: 'You are a careful assistant. '.repeat(40) },
      { role: 'user', content: 'What is the answer, briefly?' },
    ];
    const res = await fetch(url + '/v1/chat/completions', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'm', messages, max_tokens: 2 }),
    });
    expect(res.status).toBe(200);
    const ids = tokenize(chatPromptText(messages));
    const want = blockHashes(ids, 16);
    await until(() => hub.stats('r0')!.blocks >= want.length, 'BlockStored events');
    for (const h of want) expect(has(hub, 'r0', h)).toBe(true);
    sim.engine.resetPrefixCache();
    await until(() => hub.stats('r0')!.blocks === 0, 'AllBlocksCleared');
  });
});

describe('precise prompt hashes', () => {
  it('maps the gateway chat parts back to the engine text', () => {
    const parts = ['<system>\n', 'Be brief.', '\n', '<user>\n', 'Hi', '[image_url]', '\n'];
    expect(enginePromptParts(parts)!.join('')).toBe(
      chatPromptText([
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'Hi' },
      ]),
    );
    expect(enginePromptParts(['just a prompt'])).toEqual(['just a prompt']);
    expect(enginePromptParts(['no role', 'x'])).toBeUndefined();
  });

  it('reuses checkpoints across prompts sharing a prefix and gives the same hashes', () => {
    const ph = new PromptBlockHashes();
    const ctx = 'The quick brown fox jumps over the lazy dog. '.repeat(200);
    const run = (text: string): { hex: string[]; tokens: number } => {
      ph.begin([text], textHashes(text), 16);
      const n = ph.ensure(Infinity);
      return {
        hex: Array.from({ length: n }, (_, i) => hashHex(ph.hi(i), ph.lo(i))),
        tokens: ph.promptTokens,
      };
    };
    const a = run(ctx + 'first question?');
    expect(ph.saved).toBeGreaterThan(5);
    const ids = tokenize(ctx + 'second question?');
    const b = run(ctx + 'second question?');
    expect(ph.reused).toBeGreaterThan(5);
    expect(b.hex).toEqual(blockHashes(ids, 16));
    expect(b.tokens).toBe(ids.length);
    expect(a.hex.slice(0, 100)).toEqual(b.hex.slice(0, 100));
  });
});

describe('pipeline: precise prefix source', () => {
  const view = freshView({ kvUtilization: 0.1, ageMs: 1 });
  const route = (urls: string[], prefixSource?: 'auto' | 'precise' | 'approximate'): RouteModel =>
    simRoute(urls, prefixSource ? { prefixSource } : undefined);

  /** Three scripted engines, subscribed to by a pipeline routing `rt` over them. */
  async function fleet(o: { seed: number; pendingMs?: number }) {
    const engines = [await scriptedEngine(), await scriptedEngine(), await scriptedEngine()];
    for (const e of engines) closers.push(e.close);
    const hub = new KvEventHub({ reconnectMinMs: 5000 });
    closers.push(() => hub.close());
    const p = new RoutingPipeline({
      signals: { view: () => view },
      kvEvents: hub,
      random: seededRandom(o.seed),
      ...(o.pendingMs !== undefined ? { pendingMs: o.pendingMs } : {}),
    });
    const rt = route(engines.map((e) => e.url));
    p.sync({ models: [rt] });
    await until(() => ['r0', 'r1', 'r2'].every((id) => hub.live(id)), 'three streams');
    return { engines, hub, p, rt };
  }

  it('the replica that stored the prompt wins; removal and clear drop it; a dead stream falls back', async () => {
    // These scripted engines send events only when told to: the gateway's own recent picks
    // would stand in for them (see the next test).
    const { engines, hub, p, rt } = await fleet({ seed: 3, pendingMs: 0 });
    await until(() => engines.every((e) => e.streams() === 1), 'server side');

    const system = 'Answer in one sentence, citing the context. '.repeat(60);
    const parts = (q: string): string[] => ['<system>\n', system, '\n', '<user>\n', q, '\n'];
    const engineIds = tokenize(chatPromptText([{ role: 'system', content: system }]));
    const stored = blockHashes(engineIds, 16);
    engines[2]!.send([{ type: 'BlockStored', blockHashes: stored, parentBlockHash: null }]);
    await until(() => hub.stats('r2')!.blocks === stored.length, 'r2 stores the prefix');

    // The least loaded would be r0 (ties); the precise match sends it to r2.
    const d = p.pick(rt, { exclude: new Set(), prompt: parts('Who wrote it?') })!;
    expect(d.endpoint.replicaId).toBe('r2');
    expect(d.receipt.prefixSource).toBe('precise');
    expect(d.receipt.blockTokens).toBe(16);
    // `<|system|>` + system + `\n` tokenizes as a prefix of the full prompt except its last
    // token (the `\n` run may merge with what follows), so all but at most one block match.
    expect(d.receipt.matchedBlocks).toBeGreaterThanOrEqual(stored.length - 1);
    expect(d.receipt.scores['r0']!.prefixSource).toBe('precise');
    expect(d.receipt.scores['r0']!.matchedBlocks).toBe(0);
    p.release('r2');

    // BlockRemoved of the first block: nothing of the prefix is usable on r2 any more.
    engines[2]!.send([{ type: 'BlockRemoved', blockHashes: [stored[0]] }]);
    await until(() => hub.stats('r2')!.blocks === stored.length - 1, 'the removal');
    const d2 = p.pick(rt, { exclude: new Set(), prompt: parts('Who wrote it?') })!;
    expect(d2.receipt.scores['r2']!.matchedBlocks).toBe(0);
    p.release(d2.endpoint.replicaId);

    // Stored on r1, then cleared.
    engines[1]!.send([{ type: 'BlockStored', blockHashes: stored }]);
    await until(() => hub.stats('r1')!.blocks === stored.length, 'r1 stores');
    const d3 = p.pick(rt, { exclude: new Set(), prompt: parts('And when?') })!;
    expect(d3.endpoint.replicaId).toBe('r1');
    p.release('r1');
    engines[1]!.send([{ type: 'AllBlocksCleared' }]);
    await until(() => hub.stats('r1')!.blocks === 0, 'the clear');
    const d4 = p.pick(rt, { exclude: new Set(), prompt: parts('And when?') })!;
    expect(d4.receipt.scores['r1']!.matchedBlocks).toBe(0);
    p.release(d4.endpoint.replicaId);

    // r1's stream dies: auto falls back to the approximate index for r1, which recorded d3.
    engines[1]!.dropAll();
    await until(() => !hub.live('r1'), 'r1 down');
    const d5 = p.pick(rt, { exclude: new Set(), prompt: parts('And when?') })!;
    expect(d5.receipt.scores['r1']!.prefixSource).toBe('approximate');
    expect(d5.receipt.scores['r1']!.matchedBlocks).toBeGreaterThan(0);
    expect(d5.receipt.scores['r0']!.prefixSource).toBe('precise');
    expect(d5.endpoint.replicaId).toBe('r1');
    expect(d5.receipt.prefixSource).toBe('approximate');
    p.release('r1');

    // precise only: r1 (no stream) scores 0 on prefix.
    const strict = route(
      engines.map((e) => e.url),
      'precise',
    );
    const d6 = p.pick(strict, { exclude: new Set(), prompt: parts('And when?') })!;
    expect(d6.receipt.scores['r1']!.prefix).toBe(0);
    expect(d6.receipt.scores['r1']!.prefixSource).toBeUndefined();
    p.release(d6.endpoint.replicaId);
  });

  it("a repeat sent before the engine's events arrive goes where the first one went, until the engine says otherwise", async () => {
    const { engines, hub, p, rt } = await fleet({ seed: 5 });
    const system = 'Keep answers short and cite the context. '.repeat(60);
    const parts = ['<system>\n', system, '\n', '<user>\n', 'What is it?', '\n'];
    // No events yet anywhere: the first pick is by load; the repeats follow it (released in
    // between, so load alone would rotate over the replicas).
    const first = p.pick(rt, { exclude: new Set(), prompt: parts })!;
    const home = first.endpoint.replicaId;
    expect(first.receipt.scores[home]!.matchedBlocks).toBe(0);
    p.release(home);
    for (let i = 0; i < 3; i++) {
      const d = p.pick(rt, { exclude: new Set(), prompt: parts })!;
      expect(d.endpoint.replicaId).toBe(home);
      expect(d.receipt.prefixSource).toBe('approximate');
      expect(d.receipt.matchedBlocks).toBeGreaterThan(0);
      p.release(home);
    }
    // The engine evicts something: from then on only its events count for it.
    const e = engines[Number(home.slice(1))]!;
    e.send([{ type: 'BlockStored', blockHashes: ['00000000000000aa'], parentBlockHash: null }]);
    e.send([{ type: 'BlockRemoved', blockHashes: ['00000000000000aa'] }]);
    await until(() => hub.stats(home)!.events >= 2, 'the eviction');
    const after = p.pick(rt, { exclude: new Set(), prompt: parts })!;
    expect(after.receipt.scores[home]!.matchedBlocks).toBe(0);
    expect(after.receipt.scores[home]!.prefixSource).toBe('precise');
    p.release(after.endpoint.replicaId);
  });

  it('validates routing.prefixSource in deployment specs', () => {
    for (const prefixSource of ['auto', 'approximate', 'precise'])
      expect(RoutingSpecSchema.safeParse({ prefixSource }).success).toBe(true);
    expect(RoutingSpecSchema.safeParse({ prefixSource: 'exact' }).success).toBe(false);
  });

  it('does not subscribe for approximate routes or other engines', () => {
    const hub = new KvEventHub();
    closers.push(() => hub.close());
    const p = new RoutingPipeline({ signals: { view: () => view }, kvEvents: hub });
    p.sync({ models: [route(['http://127.0.0.1:9'], 'approximate')] });
    expect(hub.replicaIds).toEqual([]);
    p.sync({ models: [{ ...route(['http://127.0.0.1:9']), engine: 'vllm' }] });
    expect(hub.replicaIds).toEqual([]);
    p.sync({ models: [route(['http://127.0.0.1:9'])] });
    expect(hub.replicaIds).toEqual(['r0']);
  });
});
