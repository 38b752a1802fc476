// Precise prefix routing end to end: the in-process gateway (unchanged wiring: its SignalScraper
// owns the KV event subscriptions) in front of three real simulator servers, over real sockets.
// The receipts (x-inferplane-debug: route) say which source each replica's match came from.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { blockHashes, chatPromptText, lookupBlocks, tokenize } from '../../src/core/tokens.js';
import { hashApiKey } from '../../src/core/ids.js';
import type { RouteModel, RoutingSnapshot } from '../../src/core/types.js';
import { Gateway } from '../../src/gateway/gateway.js';
import type { RouteReceipt } from '../../src/gateway/routing/picker.js';
import { seededRandom } from '../../src/gateway/routing/pipeline.js';
import { createSimServer, type SimServer } from '../../src/sim/server.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { createMetrics } from '../../src/telemetry/metrics.js';

const KEY = 'ipk_precise_key';
const sims: SimServer[] = [];
const urls: string[] = [];
let gateway: Gateway;

function snapshot(version: number, routing?: RouteModel['routing']): RoutingSnapshot {
  return {
    version,
    keys: [{ hash: hashApiKey(KEY), keyId: 'k', role: 'tenant', tenantId: 'a', tenantName: 'a' }],
    models: [
      {
        model: 'm',
        deployment: 'm',
        tenantId: 'a',
        tenantName: 'a',
        engine: 'sim',
        createdAt: new Date(0).toISOString(),
        endpoints: urls.map((url, i) => ({ replicaId: `r${i}`, index: i, url })),
        ...(routing ? { routing } : {}),
      },
    ],
  };
}

async function until(cond: () => boolean, what: string, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

beforeAll(async () => {
  for (let i = 0; i < 3; i++) {
    const s = createSimServer({ model: 'llama-3.1-8b', servedModelName: 'm', timeScale: 0.05 });
    sims.push(s);
    urls.push(`http://127.0.0.1:${await s.listen(0)}`);
  }
  gateway = new Gateway({
    metrics: createMetrics({ defaultMetrics: false }),
    logger: createLogger({ level: 'silent' }),
    routing: { scrapeIntervalMs: 50, staleMs: 60_000, random: seededRandom(1) },
  });
  gateway.update(snapshot(1));
  const hub = gateway.signals.kvEvents;
  await until(
    () => ['r0', 'r1', 'r2'].every((id) => !gateway.signals.view(id).stale && hub.live(id)),
    'fresh signals and live KV event streams',
  );
});

afterAll(async () => {
  await gateway.close();
  await Promise.all(sims.map((s) => s.close()));
});

const SYSTEM = 'You answer questions about the attached manual, citing sections. '.repeat(50);

/** The chat the tests send: a system prompt (SYSTEM unless given) and a question. */
const chatOf = (question: string, system = SYSTEM) => [
  { role: 'system', content: system },
  { role: 'user', content: question },
];

async function ask(
  question: string,
  system = SYSTEM,
): Promise<{ replica: number; receipt: RouteReceipt }> {
  const res = await gateway.routes().request('/chat/completions', {
    method: 'POST',
    headers: {
      authorization: `Bearer ${KEY}`,
      'content-type': 'application/json',
      'x-inferplane-debug': 'route',
    },
    body: JSON.stringify({ model: 'm', messages: chatOf(question, system), max_tokens: 2 }),
  });
  expect(res.status).toBe(200);
  await res.text();
  return {
    replica: Number(res.headers.get('x-inferplane-replica')),
    receipt: JSON.parse(res.headers.get('x-inferplane-route')!) as RouteReceipt,
  };
}

/** Blocks of the shared part (`<|system|>…\n<|user|>`) the engine caches for every question. */
const sharedBlocks = Math.floor(tokenize(`<|system|>${SYSTEM}\n`).length / 16) - 1;

describe('precise prefix routing through the gateway', () => {
  it('sends a prompt to the replica whose engine reported its blocks, with a precise receipt', async () => {
    const hub = gateway.signals.kvEvents;
    const first = await ask('What does section 1 say?');
    expect(first.receipt.prefixSource).toBe('precise');
    expect(first.receipt.matchedBlocks).toBe(0);
    // The engine's BlockStored events for the first prompt reach the gateway.
    const ids = tokenize(
      chatPromptText([
        { role: 'system', content: SYSTEM },
        { role: 'user', content: 'What does section 1 say?' },
      ]),
    );
    const stored = blockHashes(ids, 16).length;
    await until(() => hub.stats(`r${first.replica}`)!.blocks >= stored, 'BlockStored events');

    const second = await ask('And section 2?');
    expect(second.replica).toBe(first.replica);
    expect(second.receipt.prefixSource).toBe('precise');
    expect(second.receipt.blockTokens).toBe(16);
    expect(second.receipt.matchedBlocks).toBeGreaterThanOrEqual(sharedBlocks);
    for (const [id, s] of Object.entries(second.receipt.scores)) {
      expect(s.prefixSource).toBe('precise');
      if (id !== `r${first.replica}`) expect(s.matchedBlocks).toBe(0);
    }

    // The very same prompt again: every block the engine looks up is matched.
    const same = await ask('And section 2?');
    expect(same.replica).toBe(first.replica);
    const n = tokenize(
      chatPromptText([
        { role: 'system', content: SYSTEM },
        { role: 'user', content: 'And section 2?' },
      ]),
    ).length;
    expect(same.receipt.matchedBlocks).toBe(lookupBlocks(n, 16));
    expect(same.receipt.promptBlocks).toBe(lookupBlocks(n, 16));
  });

  it('an engine that drops its cache (AllBlocksCleared) stops matching at once', async () => {
    const hub = gateway.signals.kvEvents;
    const before = await ask('What about section 3?');
    const id = `r${before.replica}`;
    expect(before.receipt.matchedBlocks).toBeGreaterThanOrEqual(sharedBlocks);
    sims[before.replica]!.engine.resetPrefixCache();
    await until(() => hub.stats(id)!.blocks === 0, 'AllBlocksCleared');
    const after = await ask('What about section 3?');
    // Whoever gets it, nobody holds the prefix any more (the approximate index would still say
    // the old replica does).
    expect(after.receipt.prefixSource).toBe('precise');
    expect(after.receipt.matchedBlocks).toBe(0);
    expect(after.receipt.scores[id]!.matchedBlocks).toBe(0);
  });

  it('a replica whose stream is down falls back to the approximate index (auto)', async () => {
    const hub = gateway.signals.kvEvents;
    const warm = await ask('Section 4, please.');
    const id = `r${warm.replica}`;
    // Kill the engine's process-equivalent: its event stream ends with it.
    sims[warm.replica]!.kill();
    await until(() => !hub.live(id), 'the stream to drop');
    const pipeline = gateway.pipeline!;
    const route = snapshot(1).models[0]!;
    const d = pipeline.pick(route, {
      exclude: new Set(),
      prompt: ['<system>\n', SYSTEM, '\n', '<user>\n', 'Section 4, please.', '\n'],
    })!;
    pipeline.release(d.endpoint.replicaId);
    expect(d.receipt.scores[id]!.prefixSource).toBe('approximate');
    expect(d.receipt.scores[id]!.matchedBlocks).toBeGreaterThan(0);
    for (const other of ['r0', 'r1', 'r2'].filter((x) => x !== id)) {
      expect(d.receipt.scores[other]!.prefixSource).toBe('precise');
    }
  });

  it("prefixSource approximate on the simulator: the gateway's token-block index predicts the engine's hits", async () => {
    gateway.update(snapshot(4, { prefixSource: 'approximate' }));
    expect(gateway.signals.kvEvents.replicaIds).toEqual([]);
    const hits = async (replica: number): Promise<number> => {
      const text = await (await fetch(`${urls[replica]}/metrics`)).text();
      const m = /^vllm:prefix_cache_hits_total(?:\{[^}]*\})? (\S+)$/m.exec(text);
      return Number(m![1]);
    };
    const system = 'Token blocks: a new manual, never sent before. '.repeat(40);
    const send = (question: string) => ask(question, system);
    const first = await send('Chapter one?');
    expect(first.receipt).toMatchObject({ prefixSource: 'approximate', blockTokens: 16 });
    expect(first.receipt.matchedBlocks).toBe(0);
    for (const question of ['Chapter two?', 'Chapter one?']) {
      const before = await hits(first.replica);
      const d = await send(question);
      expect(d.replica).toBe(first.replica);
      expect(d.receipt).toMatchObject({ prefixSource: 'approximate', blockTokens: 16 });
      const n = tokenize(chatPromptText(chatOf(question, system))).length;
      expect(d.receipt.promptBlocks).toBe(lookupBlocks(n, 16));
      // What the engine then served from its cache, in tokens, is what the receipt predicted
      // (a match ends on a checkpoint of the index: exact up to 16 blocks, else ≤ 12.5 % short).
      const served = (await hits(first.replica)) - before;
      expect(d.receipt.matchedBlocks).toBeGreaterThan(20);
      expect(served).toBeGreaterThanOrEqual(d.receipt.matchedBlocks * 16);
      expect(d.receipt.matchedBlocks * 16).toBeGreaterThanOrEqual(served * 0.875);
    }
    gateway.update(snapshot(5));
  });

  it('prefixSource approximate unsubscribes; switching back subscribes again', () => {
    const hub = gateway.signals.kvEvents;
    gateway.update(snapshot(6, { prefixSource: 'approximate' }));
    expect(hub.replicaIds).toEqual([]);
    gateway.update(snapshot(7));
    expect(hub.replicaIds.sort()).toEqual(['r0', 'r1', 'r2']);
  });
});
