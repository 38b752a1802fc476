// The endpoint-picker seam: the gateway asks a Picker for a replica and gets a decision with its
// receipt. The default is the pipeline (filters → scorers → picker) of ./pipeline.ts; tests may
// inject another one.
import type { RouteEndpoint, RouteModel, RoutingPolicy } from '../../core/types.js';

export interface ReplicaScores {
  prefix: number;
  queue: number;
  kv: number;
  affinity: number;
  total: number;
  /** Where this replica's prefix match came from (absent when the prefix scorer did not run). */
  prefixSource?: 'precise' | 'approximate';
  /** Matched leading blocks, in that source's blocks (engine blocks, or 128 B of text). */
  matchedBlocks?: number;
  /**
   * The load the queue scorer counted, in requests: the engine's scraped queue corrected by this
   * gateway's in-flight requests since the scrape (all its processes'). Absent for a replica with
   * stale signals (counted as saturated) and where the queue scorer did not run.
   */
  load?: number;
}

/** Why a replica was picked: returned with every decision, sent back on `x-inferplane-debug: route`. */
export interface RouteReceipt {
  policy: RoutingPolicy;
  replica: string;
  index: number;
  scores: Record<string, ReplicaScores>;
  /** The chosen replica's matched leading blocks and the prompt's blocks, in `prefixSource`'s blocks. */
  matchedBlocks: number;
  promptBlocks: number;
  /**
   * Source of the chosen replica's prefix match: `precise` (the engine's KV events; blocks of
   * `blockTokens` tokens, what the engine will look up) or `approximate` (the gateway's index;
   * blocks of 128 bytes, or of `blockTokens` tokens where it indexes the engine's token blocks).
   * Absent when the prefix scorer did not run.
   */
  prefixSource?: 'precise' | 'approximate';
  /** Tokens per block of a match in the engine's blocks (precise, or token-block approximate). */
  blockTokens?: number;
  decisionMicros: number;
  /** The version drawn by the route's `versionWeights` (absent without weights). */
  version?: string;
}

export interface RouteDecision {
  endpoint: RouteEndpoint;
  receipt: RouteReceipt;
}

/** One request's routing inputs; `hashes` is filled by the picker and reused on a retry. */
export interface PickRequest {
  /** Replica ids to skip (already failed for this request). */
  exclude: ReadonlySet<string>;
  /** Further filter (the gateway's circuit breakers): a replica is a candidate only if true. */
  allow?: (replicaId: string) => boolean;
  /** The prompt text (in parts, read in order), when the picker asked for it (`needsPrompt`). */
  prompt?: string | readonly string[];
  /**
   * Tokens the request may generate (max_tokens, else the gateway's default budget; 0 for
   * embeddings): the token-block prefix index counts the KV blocks a request allocates.
   */
  maxTokens?: number;
  /** Session id (header `x-session-id`) for affinity. */
  sessionId?: string;
  hashes?: Uint32Array;
  /**
   * The prompt as the engine sees it (parts), derived from `prompt` by the picker for the precise
   * prefix source, with `hashes` then hashing this text; null: not derivable. Reused on a retry.
   */
  enginePrompt?: readonly string[] | null;
  /**
   * The version drawn for this request (route `versionWeights`): filled by the picker, reused by
   * `saturated` and by a retry while that version still has a usable endpoint.
   */
  version?: string;
}

export interface Picker {
  /** Picks a ready endpoint of `route`, skipping replica ids in `req.exclude`. */
  pick(route: RouteModel, req: PickRequest): RouteDecision | undefined;
  /**
   * Whether every candidate endpoint of `route` is saturated (the request should wait in the
   * gateway's queue rather than be sent now). Absent: never saturated.
   */
  saturated?(route: RouteModel, req: PickRequest): boolean;
  /** Whether the prompt text is needed for this route (prefix hashing). */
  needsPrompt?(route: RouteModel): boolean;
  /** The request sent to `replicaId` finished (or failed to connect). */
  release?(replicaId: string): void;
}

/**
 * Plain rotation over the endpoints that pass `exclude` and `allow`, with a receipt; kept for
 * tests and as the simplest policy (no version weights, never saturated).
 */
export class RoundRobinPicker implements Picker {
  private readonly next = new Map<string, number>();

  pick(route: RouteModel, req: PickRequest): RouteDecision | undefined {
    const eps = route.endpoints;
    if (eps.length === 0) return undefined;
    const start = this.next.get(route.model) ?? 0;
    for (let i = 0; i < eps.length; i++) {
      const ep = eps[(start + i) % eps.length]!;
      if (req.exclude.has(ep.replicaId)) continue;
      if (req.allow && !req.allow(ep.replicaId)) continue;
      this.next.set(route.model, (start + i + 1) % eps.length);
      return {
        endpoint: ep,
        receipt: {
          policy: 'round-robin',
          replica: ep.replicaId,
          index: ep.index,
          scores: {},
          matchedBlocks: 0,
          promptBlocks: 0,
          decisionMicros: 0,
        },
      };
    }
    return undefined;
  }
}
