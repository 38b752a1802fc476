import type { RequestRecord } from '../../src/bench/types.js';

const MS = 1e6;

/** A profiling record from times in ms (start, chunk arrivals, end). */
export function rec(
  startMs: number,
  chunksMs: number[],
  o: Partial<RequestRecord> & { endMs?: number } = {},
): RequestRecord {
  const { endMs, ...rest } = o;
  return {
    sessionNum: 0,
    requestId: 'r',
    correlationId: 'c',
    conversationId: 'conv',
    turnIndex: 0,
    phase: 'profiling',
    intendedNs: null,
    startNs: startMs * MS,
    ackNs: null,
    endNs: (endMs ?? chunksMs[chunksMs.length - 1] ?? startMs) * MS,
    chunkNs: chunksMs.map((c) => c * MS),
    streaming: true,
    usagePromptTokens: null,
    usageCompletionTokens: null,
    usageCachedTokens: null,
    clientInputTokens: 0,
    outputText: '',
    cancelled: false,
    cancellationNs: null,
    error: null,
    ...rest,
  };
}
