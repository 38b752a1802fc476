// Request bodies at the edge: light validation (what routing and limits need; engines validate the
// rest), the prompt as parts for prefix hashing, and the one rewrite the gateway makes (asking a
// stream for its usage).
import { InferplaneError } from '../core/errors.js';

export type InferenceKind = 'chat' | 'completions' | 'embeddings';

export const UPSTREAM_PATH: Record<InferenceKind, string> = {
  chat: '/v1/chat/completions',
  completions: '/v1/completions',
  embeddings: '/v1/embeddings',
};

export interface InferenceBody {
  model: string;
  /** The parsed body (read for the prompt and the token estimate). */
  parsed: Record<string, unknown>;
  stream: boolean;
}

/** Light validation at the edge: what routing needs; engines validate the rest. */
export function parseInferenceBody(raw: string, kind: InferenceKind): InferenceBody {
  let body: unknown;
  try {
    body = JSON.parse(raw);
  } catch {
    throw new InferplaneError('IP_BAD_REQUEST', 'The request body is not valid JSON.');
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new InferplaneError('IP_BAD_REQUEST', 'The request body must be a JSON object.');
  }
  const b = body as Record<string, unknown>;
  if (typeof b.model !== 'string' || b.model === '') {
    throw new InferplaneError('IP_VALIDATION', 'you must provide a model parameter', {
      details: [{ path: 'model', message: 'required string' }],
    });
  }
  if (kind === 'chat' && (!Array.isArray(b.messages) || b.messages.length === 0)) {
    throw new InferplaneError('IP_VALIDATION', "'messages' must be a non-empty array", {
      details: [{ path: 'messages', message: 'required non-empty array' }],
    });
  }
  if (kind === 'completions' && typeof b.prompt !== 'string' && !Array.isArray(b.prompt)) {
    throw new InferplaneError('IP_VALIDATION', "'prompt' must be a string or an array", {
      details: [{ path: 'prompt', message: 'required' }],
    });
  }
  if (kind === 'embeddings' && typeof b.input !== 'string' && !Array.isArray(b.input)) {
    throw new InferplaneError('IP_VALIDATION', "'input' must be a string or an array", {
      details: [{ path: 'input', message: 'required' }],
    });
  }
  if (b.stream !== undefined && typeof b.stream !== 'boolean') {
    throw new InferplaneError('IP_VALIDATION', "'stream' must be a boolean", {
      details: [{ path: 'stream', message: 'must be a boolean' }],
    });
  }
  if (kind === 'embeddings' && b.stream === true) {
    throw new InferplaneError('IP_VALIDATION', 'embeddings cannot be streamed', {
      details: [{ path: 'stream', message: 'must be false or absent for embeddings' }],
    });
  }
  if (
    b.stream_options !== undefined &&
    b.stream_options !== null &&
    (typeof b.stream_options !== 'object' || Array.isArray(b.stream_options))
  ) {
    throw new InferplaneError('IP_VALIDATION', "'stream_options' must be an object", {
      details: [{ path: 'stream_options', message: 'must be an object' }],
    });
  }
  return { model: b.model, parsed: b, stream: b.stream === true };
}

/**
 * A streamed request that did not set `stream_options` gets `{"include_usage": true}` added (by
 * splicing the raw text, not re-serialising the body), so the gateway learns the token counts; the
 * usage chunk the client did not ask for is then dropped on the way back (see relay.ts).
 * Returns undefined when the body is left as it is (not streamed, or the client chose).
 */
export function withStreamUsage(raw: string, body: InferenceBody): string | undefined {
  if (!body.stream || body.parsed.stream_options !== undefined) return undefined;
  const brace = raw.indexOf('{');
  if (brace === -1) return undefined;
  return `${raw.slice(0, brace + 1)}"stream_options":{"include_usage":true},${raw.slice(brace + 1)}`;
}

/** Whether the client asked for the usage chunk of a stream itself. */
export function clientWantsStreamUsage(body: InferenceBody): boolean {
  const so = body.parsed.stream_options as { include_usage?: unknown } | null | undefined;
  return so?.include_usage === true;
}

/**
 * `<role>\n` strings of the roles seen: one string per role, not one per message. Bounded (the
 * role is the client's: at most 64 roles of at most 32 characters are kept).
 */
const ROLE_PARTS = new Map<string, string>();
function rolePart(role: string): string {
  let part = ROLE_PARTS.get(role);
  if (part === undefined) {
    part = `<${role}>\n`;
    if (ROLE_PARTS.size < 64 && role.length <= 32) ROLE_PARTS.set(role, part);
  }
  return part;
}

/**
 * The prompt for prefix hashing, as parts to read in order (no concatenated copy of a long
 * prompt): the completion prompt, or the chat messages flattened deterministically — `<role>\n`,
 * the text parts of the content, `\n` — for each message.
 */
export function promptParts(body: Record<string, unknown>, kind: InferenceKind): string[] {
  if (kind === 'completions') {
    const p = body.prompt;
    if (typeof p === 'string') return [p];
    if (Array.isArray(p)) return [p.map((x) => (typeof x === 'string' ? x : String(x))).join('\n')];
    return [];
  }
  if (kind === 'embeddings') {
    const x = body.input;
    if (typeof x === 'string') return [x];
    return [];
  }
  const messages = Array.isArray(body.messages) ? (body.messages as unknown[]) : [];
  const out: string[] = [];
  for (const m of messages) {
    if (typeof m !== 'object' || m === null) continue;
    const msg = m as { role?: unknown; content?: unknown };
    out.push(rolePart(typeof msg.role === 'string' ? msg.role : '?'));
    const content = msg.content;
    if (typeof content === 'string') out.push(content);
    else if (Array.isArray(content)) {
      for (const part of content as unknown[]) {
        const p = part as { type?: unknown; text?: unknown } | null;
        if (p && typeof p.text === 'string') out.push(p.text);
        else if (p && typeof p.type === 'string') out.push(`[${p.type}]`);
      }
    }
    out.push('\n');
  }
  return out;
}
