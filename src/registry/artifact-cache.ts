// A node's artifact cache, content-addressed by sha256. `ensure()` returns a local path whose
// bytes hash to the artifact's sha256: a hit reuses the cached file; a miss copies (or hard
// links) a file:// source or downloads an http(s):// URL into a temporary file, verifies it, and
// only then renames it into place. Bytes that do not match are never left under their hash:
// the temporary file is deleted (or moved to quarantine/) and IP_ARTIFACT_CORRUPT is thrown.
//
// Layout under `dir`: sha256/<hex> (verified files), tmp/ (in progress), quarantine/ (bad bytes,
// only with `quarantine: true`).
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, type Stats } from 'node:fs';
import { link, mkdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { Agent, interceptors, request, type Dispatcher } from 'undici';
import { InferplaneError } from '../core/errors.js';
import { sha256File } from './hash.js';

export interface CacheArtifact {
  uri: string;
  /** Expected sha256, 64 lower-case hex digits. */
  sha256: string;
  /** Expected size in bytes, checked when known. */
  size?: number | null;
}

export type ArtifactPhase = 'hit' | 'link' | 'copy' | 'download' | 'verify' | 'done';

export interface ArtifactProgress {
  phase: ArtifactPhase;
  sha256: string;
  /** Bytes done in this phase. */
  bytes: number;
  /** Bytes expected (null when unknown, e.g. a download without content-length). */
  total: number | null;
}

export type ProgressFn = (p: ArtifactProgress) => void;

export interface ArtifactCacheOptions {
  /** Cache root, e.g. <stateDir>/artifacts. */
  dir: string;
  /** Hard-link file:// sources on the same filesystem instead of copying (default true). */
  hardLink?: boolean;
  /** Re-hash a cached file on every hit (default false: files are verified when they enter). */
  verifyOnHit?: boolean;
  /** Move bad bytes to quarantine/ instead of deleting them (default false). */
  quarantine?: boolean;
  /** undici dispatcher for downloads (default: an Agent following up to 5 redirects). */
  dispatcher?: Dispatcher;
  /** Time to wait for response headers / between body chunks (default 30 s / 60 s). */
  headersTimeoutMs?: number;
  bodyTimeoutMs?: number;
}

const SHA256 = /^[0-9a-f]{64}$/;

export class ArtifactCache {
  readonly dir: string;
  private readonly opts: ArtifactCacheOptions;
  private readonly inflight = new Map<string, Promise<string>>();
  private ownDispatcher: Agent | undefined;

  constructor(opts: ArtifactCacheOptions) {
    this.opts = { ...opts };
    this.dir = opts.dir;
  }

  /** Where a verified artifact with this sha256 lives (whether or not it is there). */
  pathFor(sha256: string): string {
    checkSha(sha256);
    return join(this.dir, 'sha256', sha256);
  }

  /** Whether a verified file for this sha256 is cached. */
  async has(sha256: string): Promise<boolean> {
    return (await statOrUndefined(this.pathFor(sha256)))?.isFile() === true;
  }

  /** Drops a cached artifact (no error when absent). */
  async remove(sha256: string): Promise<void> {
    await rm(this.pathFor(sha256), { force: true });
  }

  /**
   * The local path of the artifact's verified bytes, fetching them on a miss. Concurrent calls
   * for the same sha256 share one fetch. Throws IP_ARTIFACT_CORRUPT when the bytes do not match
   * (sha256 or size), IP_ARTIFACT_UNAVAILABLE when they cannot be fetched, IP_VALIDATION for a
   * bad sha256 or an unsupported URI.
   */
  ensure(artifact: CacheArtifact, onProgress?: ProgressFn, signal?: AbortSignal): Promise<string> {
    const bad = shaError(artifact.sha256);
    if (bad) return Promise.reject(bad);
    const key = artifact.sha256;
    const running = this.inflight.get(key);
    if (running) return running;
    const p = this.ensureOnce(artifact, onProgress ?? noop, signal).finally(() => {
      this.inflight.delete(key);
    });
    this.inflight.set(key, p);
    return p;
  }

  /** Closes the download agent this cache created (not one passed in options). */
  async close(): Promise<void> {
    const d = this.ownDispatcher;
    this.ownDispatcher = undefined;
    if (d) await d.close();
  }

  private async ensureOnce(
    a: CacheArtifact,
    progress: ProgressFn,
    signal?: AbortSignal,
  ): Promise<string> {
    const final = this.pathFor(a.sha256);
    const cached = await statOrUndefined(final);
    if (cached?.isFile()) {
      const sizeOk = a.size === undefined || a.size === null || cached.size === a.size;
      let ok = sizeOk;
      if (ok && this.opts.verifyOnHit) {
        const h = await sha256File(
          final,
          (p) => progress({ phase: 'verify', sha256: a.sha256, ...p }),
          signal,
        );
        ok = h.sha256 === a.sha256;
      }
      if (ok) {
        progress({ phase: 'hit', sha256: a.sha256, bytes: cached.size, total: cached.size });
        return final;
      }
      // A cached file that no longer matches (changed on disk): drop it and fetch again.
      await this.discard(final, a.sha256, 'cached');
    }

    await mkdir(join(this.dir, 'sha256'), { recursive: true });
    await mkdir(join(this.dir, 'tmp'), { recursive: true });
    const tmp = join(
      this.dir,
      'tmp',
      `${a.sha256}.${process.pid}.${randomBytes(4).toString('hex')}.part`,
    );
    let linked = false;
    try {
      let got: { sha256: string; size: number };
      const url = parseUri(a.uri);
      if (url.protocol === 'file:') {
        const src = fileURLToPath(url);
        const srcStat = await statOrUndefined(src);
        if (!srcStat?.isFile()) {
          throw new InferplaneError(
            'IP_ARTIFACT_UNAVAILABLE',
            `artifact ${a.uri}: no such file ${src}`,
          );
        }
        linked = this.opts.hardLink !== false && (await tryLink(src, tmp));
        if (linked) {
          progress({ phase: 'link', sha256: a.sha256, bytes: srcStat.size, total: srcStat.size });
          got = await sha256File(
            tmp,
            (p) => progress({ phase: 'verify', sha256: a.sha256, ...p }),
            signal,
          );
        } else {
          got = await this.copy(src, srcStat.size, tmp, a.sha256, progress, signal);
        }
      } else {
        got = await this.download(url, a, tmp, progress, signal);
      }
      if (
        got.sha256 !== a.sha256 ||
        (a.size !== undefined && a.size !== null && got.size !== a.size)
      ) {
        const what =
          got.sha256 !== a.sha256
            ? `sha256 ${got.sha256} does not match the registered ${a.sha256}`
            : `size ${got.size} does not match the registered ${a.size}`;
        await this.discard(tmp, a.sha256, linked ? 'link' : 'fetched');
        throw new InferplaneError(
          'IP_ARTIFACT_CORRUPT',
          `artifact ${a.uri} is corrupt: ${what}; the bytes were ${linked || !this.opts.quarantine ? 'discarded' : 'quarantined'} and nothing is served from them`,
          {
            details: [
              { path: 'sha256', message: `expected ${a.sha256}, got ${got.sha256}` },
              ...(a.size !== undefined && a.size !== null
                ? [{ path: 'size', message: `expected ${a.size}, got ${got.size}` }]
                : []),
            ],
          },
        );
      }
      await rename(tmp, final);
      progress({ phase: 'done', sha256: a.sha256, bytes: got.size, total: got.size });
      return final;
    } catch (e) {
      await rm(tmp, { force: true }).catch(() => undefined);
      if (e instanceof InferplaneError) throw e;
      if (signal?.aborted) {
        throw new InferplaneError('IP_ARTIFACT_UNAVAILABLE', `artifact ${a.uri}: fetch aborted`, {
          cause: e,
        });
      }
      throw new InferplaneError(
        'IP_ARTIFACT_UNAVAILABLE',
        `artifact ${a.uri}: ${e instanceof Error ? e.message : String(e)}`,
        { cause: e },
      );
    }
  }

  private async copy(
    src: string,
    total: number,
    tmp: string,
    sha256: string,
    progress: ProgressFn,
    signal?: AbortSignal,
  ): Promise<{ sha256: string; size: number }> {
    const hash = createHash('sha256');
    let bytes = 0;
    await pipeline(
      createReadStream(src, { highWaterMark: 1 << 20 }),
      async function* (source: AsyncIterable<Buffer>) {
        for await (const chunk of source) {
          hash.update(chunk);
          bytes += chunk.length;
          progress({ phase: 'copy', sha256, bytes, total });
          yield chunk;
        }
      },
      createWriteStream(tmp, { flags: 'wx' }),
      ...(signal ? [{ signal }] : []),
    );
    return { sha256: hash.digest('hex'), size: bytes };
  }

  private async download(
    url: URL,
    a: CacheArtifact,
    tmp: string,
    progress: ProgressFn,
    signal?: AbortSignal,
  ): Promise<{ sha256: string; size: number }> {
    const res = await request(url, {
      method: 'GET',
      dispatcher: this.dispatcher(),
      headersTimeout: this.opts.headersTimeoutMs ?? 30_000,
      bodyTimeout: this.opts.bodyTimeoutMs ?? 60_000,
      ...(signal ? { signal } : {}),
    });
    if (res.statusCode < 200 || res.statusCode >= 300) {
      await res.body.dump().catch(() => undefined);
      throw new InferplaneError(
        'IP_ARTIFACT_UNAVAILABLE',
        `artifact ${a.uri}: the server answered HTTP ${res.statusCode}`,
      );
    }
    const len = Number(res.headers['content-length']);
    const total = Number.isFinite(len) && len >= 0 ? len : (a.size ?? null);
    const hash = createHash('sha256');
    let bytes = 0;
    const sha256 = a.sha256;
    await pipeline(
      res.body,
      async function* (source: AsyncIterable<Buffer>) {
        for await (const chunk of source) {
          hash.update(chunk);
          bytes += chunk.length;
          progress({ phase: 'download', sha256, bytes, total });
          yield chunk;
        }
      },
      createWriteStream(tmp, { flags: 'wx' }),
    );
    return { sha256: hash.digest('hex'), size: bytes };
  }

  private dispatcher(): Dispatcher {
    if (this.opts.dispatcher) return this.opts.dispatcher;
    this.ownDispatcher ??= new Agent().compose(
      interceptors.redirect({ maxRedirections: 5 }),
    ) as unknown as Agent;
    return this.ownDispatcher;
  }

  /** Removes bad bytes, or moves them to quarantine/ (never for a hard link to the source). */
  private async discard(
    path: string,
    sha256: string,
    kind: 'cached' | 'fetched' | 'link',
  ): Promise<void> {
    if (this.opts.quarantine && kind !== 'link') {
      const q = join(this.dir, 'quarantine');
      await mkdir(q, { recursive: true });
      await rename(path, join(q, `${sha256}.${Date.now()}.${randomBytes(3).toString('hex')}.bad`));
      return;
    }
    await rm(path, { force: true });
  }
}

function noop(): void {}

function shaError(sha256: string): InferplaneError | undefined {
  return SHA256.test(sha256)
    ? undefined
    : new InferplaneError('IP_VALIDATION', `invalid sha256 ${JSON.stringify(sha256)}`, {
        details: [{ path: 'sha256', message: 'must be 64 lower-case hex digits' }],
      });
}

function checkSha(sha256: string): void {
  const e = shaError(sha256);
  if (e) throw e;
}

function parseUri(uri: string): URL {
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    throw new InferplaneError('IP_VALIDATION', `invalid artifact URI ${JSON.stringify(uri)}`);
  }
  if (!['file:', 'http:', 'https:'].includes(url.protocol)) {
    throw new InferplaneError(
      'IP_VALIDATION',
      `unsupported artifact URI scheme ${url.protocol} (file://, http:// and https:// are)`,
    );
  }
  return url;
}

async function statOrUndefined(path: string): Promise<Stats | undefined> {
  try {
    return await stat(path);
  } catch {
    return undefined;
  }
}

/** Hard-links src to dst; false where linking is not possible (another filesystem, no rights). */
async function tryLink(src: string, dst: string): Promise<boolean> {
  try {
    await link(src, dst);
    return true;
  } catch {
    return false;
  }
}
