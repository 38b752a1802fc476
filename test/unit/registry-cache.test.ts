// The node artifact cache: miss (copy / hard link / http download from a real loopback server),
// hit by sha256, concurrent fetches shared, and corrupted bytes → IP_ARTIFACT_CORRUPT with
// nothing left in the cache under the hash.
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  existsSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { InferplaneError } from '../../src/core/errors.js';
import { ArtifactCache, type ArtifactProgress } from '../../src/registry/artifact-cache.js';

let dir: string;
let cache: ArtifactCache;
let server: Server | undefined;
let requests: string[];

const sha = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');
const BYTES = Buffer.from(Array.from({ length: 200_000 }, (_, i) => (i * 31) % 251));
const HASH = sha(BYTES);

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'inferplane-cache-'));
  cache = new ArtifactCache({ dir: join(dir, 'cache') });
  requests = [];
});

afterEach(async () => {
  await cache.close();
  if (server) {
    const s = server;
    server = undefined;
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }
  rmSync(dir, { recursive: true, force: true });
});

/** A loopback HTTP server: /good (the bytes), /bad (one byte flipped), /missing (404), /moved. */
async function startServer(): Promise<string> {
  const bad = Buffer.from(BYTES);
  bad[1234] = (bad[1234]! + 1) % 256;
  server = createServer((req, res) => {
    requests.push(req.url ?? '');
    if (req.url === '/good') {
      res.writeHead(200, { 'content-length': BYTES.length });
      // In two chunks, to exercise progress.
      res.write(BYTES.subarray(0, 100_000));
      setTimeout(() => res.end(BYTES.subarray(100_000)), 5);
    } else if (req.url === '/bad') {
      res.writeHead(200, { 'content-length': bad.length });
      res.end(bad);
    } else if (req.url === '/moved') {
      res.writeHead(302, { location: '/good' });
      res.end();
    } else {
      res.writeHead(404);
      res.end('not here');
    }
  });
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (e instanceof InferplaneError) return e.code;
    throw e;
  }
  return 'no error';
}

function cachedFiles(): string[] {
  const d = join(dir, 'cache', 'sha256');
  return existsSync(d) ? readdirSync(d) : [];
}

function tmpFiles(): string[] {
  const d = join(dir, 'cache', 'tmp');
  return existsSync(d) ? readdirSync(d) : [];
}

describe('ArtifactCache', () => {
  it('copies a file:// artifact on a miss (verified), then reuses it on a hit', async () => {
    const src = join(dir, 'model.gguf');
    writeFileSync(src, BYTES);
    const copying = new ArtifactCache({ dir: join(dir, 'cache'), hardLink: false });
    const seen: ArtifactProgress[] = [];
    const path = await copying.ensure(
      { uri: pathToFileURL(src).href, sha256: HASH, size: BYTES.length },
      (p) => seen.push(p),
    );
    expect(path).toBe(join(dir, 'cache', 'sha256', HASH));
    expect(readFileSync(path).equals(BYTES)).toBe(true);
    expect(statSync(path).ino).not.toBe(statSync(src).ino);
    expect(seen.some((p) => p.phase === 'copy')).toBe(true);
    expect(seen.at(-1)).toMatchObject({ phase: 'done', bytes: BYTES.length });

    // A hit: by sha256, whatever the URI; the source is not read.
    rmSync(src);
    const hits: ArtifactProgress[] = [];
    expect(
      await copying.ensure({ uri: 'file:///elsewhere/x.gguf', sha256: HASH }, (p) => hits.push(p)),
    ).toBe(path);
    expect(hits).toEqual([
      { phase: 'hit', sha256: HASH, bytes: BYTES.length, total: BYTES.length },
    ]);
    expect(await copying.has(HASH)).toBe(true);
    expect(tmpFiles()).toEqual([]);
  });

  it('hard-links a file:// source on the same filesystem, verifying it', async () => {
    const src = join(dir, 'model.gguf');
    writeFileSync(src, BYTES);
    const seen: string[] = [];
    const path = await cache.ensure({ uri: pathToFileURL(src).href, sha256: HASH }, (p) =>
      seen.push(p.phase),
    );
    expect(statSync(path).ino).toBe(statSync(src).ino);
    expect(seen).toContain('link');
    expect(seen).toContain('verify');
  });

  it('downloads an http artifact from a loopback server with progress, then hits', async () => {
    const base = await startServer();
    const seen: ArtifactProgress[] = [];
    const path = await cache.ensure({ uri: `${base}/good`, sha256: HASH }, (p) => seen.push(p));
    expect(readFileSync(path).equals(BYTES)).toBe(true);
    const dl = seen.filter((p) => p.phase === 'download');
    expect(dl.length).toBeGreaterThan(1);
    expect(dl.at(-1)).toMatchObject({ bytes: BYTES.length, total: BYTES.length });
    expect(await cache.ensure({ uri: `${base}/good`, sha256: HASH })).toBe(path);
    expect(requests).toEqual(['/good']);
  });

  it('follows redirects, and shares one fetch between concurrent callers', async () => {
    const base = await startServer();
    const [a, b] = await Promise.all([
      cache.ensure({ uri: `${base}/moved`, sha256: HASH }),
      cache.ensure({ uri: `${base}/moved`, sha256: HASH }),
    ]);
    expect(a).toBe(b);
    expect(requests).toEqual(['/moved', '/good']);
  });

  it('a corrupted byte over http: IP_ARTIFACT_CORRUPT and nothing cached', async () => {
    const base = await startServer();
    let err: InferplaneError | undefined;
    try {
      await cache.ensure({ uri: `${base}/bad`, sha256: HASH });
    } catch (e) {
      err = e as InferplaneError;
    }
    expect(err?.code).toBe('IP_ARTIFACT_CORRUPT');
    expect(err?.retryable).toBe(false);
    expect(err?.message).toMatch(/does not match/);
    expect(cachedFiles()).toEqual([]);
    expect(tmpFiles()).toEqual([]);
    expect(await cache.has(HASH)).toBe(false);
  });

  it('a corrupted file:// source (copy or link): IP_ARTIFACT_CORRUPT, source untouched', async () => {
    const src = join(dir, 'model.gguf');
    const bad = Buffer.from(BYTES);
    bad[0] = bad[0]! ^ 0xff;
    writeFileSync(src, bad);
    for (const hardLink of [true, false]) {
      const c = new ArtifactCache({ dir: join(dir, 'cache'), hardLink });
      expect(await codeOf(c.ensure({ uri: pathToFileURL(src).href, sha256: HASH }))).toBe(
        'IP_ARTIFACT_CORRUPT',
      );
      expect(cachedFiles()).toEqual([]);
      expect(tmpFiles()).toEqual([]);
      expect(readFileSync(src).equals(bad)).toBe(true);
    }
    // A size mismatch is corrupt too.
    writeFileSync(src, BYTES);
    expect(
      await codeOf(cache.ensure({ uri: pathToFileURL(src).href, sha256: HASH, size: 5 })),
    ).toBe('IP_ARTIFACT_CORRUPT');
    expect(cachedFiles()).toEqual([]);
  });

  it('quarantines bad downloaded bytes when asked, never under their hash', async () => {
    const base = await startServer();
    const q = new ArtifactCache({ dir: join(dir, 'cache'), quarantine: true });
    expect(await codeOf(q.ensure({ uri: `${base}/bad`, sha256: HASH }))).toBe(
      'IP_ARTIFACT_CORRUPT',
    );
    await q.close();
    expect(cachedFiles()).toEqual([]);
    const quarantined = readdirSync(join(dir, 'cache', 'quarantine'));
    expect(quarantined.length).toBe(1);
    expect(quarantined[0]).toMatch(new RegExp(`^${HASH}\\..*\\.bad$`));
  });

  it('re-fetches a cached file changed on disk when verifyOnHit is set', async () => {
    const src = join(dir, 'model.gguf');
    writeFileSync(src, BYTES);
    const c = new ArtifactCache({ dir: join(dir, 'cache'), hardLink: false, verifyOnHit: true });
    const path = await c.ensure({ uri: pathToFileURL(src).href, sha256: HASH });
    const tampered = Buffer.from(BYTES);
    tampered[9] = tampered[9]! ^ 1;
    writeFileSync(path, tampered);
    const phases: string[] = [];
    await c.ensure({ uri: pathToFileURL(src).href, sha256: HASH }, (p) => phases.push(p.phase));
    expect(phases).toContain('copy');
    expect(readFileSync(path).equals(BYTES)).toBe(true);
  });

  it('unavailable sources and bad input have their own codes', async () => {
    const base = await startServer();
    expect(await codeOf(cache.ensure({ uri: `${base}/missing`, sha256: HASH }))).toBe(
      'IP_ARTIFACT_UNAVAILABLE',
    );
    expect(await codeOf(cache.ensure({ uri: 'file:///nonexistent/x.gguf', sha256: HASH }))).toBe(
      'IP_ARTIFACT_UNAVAILABLE',
    );
    expect(await codeOf(cache.ensure({ uri: 'http://127.0.0.1:1/x', sha256: HASH }))).toBe(
      'IP_ARTIFACT_UNAVAILABLE',
    );
    expect(await codeOf(cache.ensure({ uri: 's3://b/x', sha256: HASH }))).toBe('IP_VALIDATION');
    expect(await codeOf(cache.ensure({ uri: `${base}/good`, sha256: 'abc' }))).toBe(
      'IP_VALIDATION',
    );
    expect(cachedFiles()).toEqual([]);
    expect(tmpFiles()).toEqual([]);
  });
});
