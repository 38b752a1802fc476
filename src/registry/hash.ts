// Streaming sha256 of a file, with progress.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';

export interface HashProgress {
  bytes: number;
  total: number;
}

/** sha256 (hex) and size of a file, read once in 1 MiB chunks; onProgress per chunk. */
export async function sha256File(
  path: string,
  onProgress?: (p: HashProgress) => void,
  signal?: AbortSignal,
): Promise<{ sha256: string; size: number }> {
  const total = (await stat(path)).size;
  const hash = createHash('sha256');
  let bytes = 0;
  const stream = createReadStream(path, {
    highWaterMark: 1 << 20,
    ...(signal ? { signal } : {}),
  });
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    hash.update(chunk);
    bytes += chunk.length;
    onProgress?.({ bytes, total });
  }
  return { sha256: hash.digest('hex'), size: bytes };
}
