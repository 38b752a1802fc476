// One error catalogue with stable codes and HTTP statuses. Tests assert the code, not the message.
// Whether a failure may be retried is part of its definition, so retry logic never reads messages.

export interface ErrorDef {
  readonly status: number;
  readonly retryable: boolean;
  /** OpenAI error `type` used when the error crosses the gateway edge. */
  readonly openaiType: string;
}

export const ERRORS = {
  IP_BAD_REQUEST: { status: 400, retryable: false, openaiType: 'invalid_request_error' },
  IP_VALIDATION: { status: 400, retryable: false, openaiType: 'invalid_request_error' },
  IP_UNAUTHENTICATED: { status: 401, retryable: false, openaiType: 'authentication_error' },
  IP_FORBIDDEN: { status: 403, retryable: false, openaiType: 'permission_error' },
  IP_NOT_FOUND: { status: 404, retryable: false, openaiType: 'invalid_request_error' },
  IP_MODEL_NOT_FOUND: { status: 404, retryable: false, openaiType: 'invalid_request_error' },
  IP_DEPLOYMENT_NOT_FOUND: { status: 404, retryable: false, openaiType: 'invalid_request_error' },
  IP_TENANT_NOT_FOUND: { status: 404, retryable: false, openaiType: 'invalid_request_error' },
  IP_REPLICA_NOT_FOUND: { status: 404, retryable: false, openaiType: 'invalid_request_error' },
  IP_METHOD_NOT_ALLOWED: { status: 405, retryable: false, openaiType: 'invalid_request_error' },
  IP_TENANT_EXISTS: { status: 409, retryable: false, openaiType: 'invalid_request_error' },
  IP_CONFLICT: { status: 409, retryable: false, openaiType: 'invalid_request_error' },
  IP_RATE_LIMITED: { status: 429, retryable: true, openaiType: 'rate_limit_exceeded' },
  IP_PAYLOAD_TOO_LARGE: { status: 413, retryable: false, openaiType: 'invalid_request_error' },
  IP_UNSUPPORTED_MEDIA_TYPE: { status: 415, retryable: false, openaiType: 'invalid_request_error' },
  /** The client went away before the response was complete (nginx's 499). */
  IP_CLIENT_CLOSED: { status: 499, retryable: false, openaiType: 'invalid_request_error' },
  IP_PLACEMENT_FAILED: { status: 422, retryable: true, openaiType: 'invalid_request_error' },
  /**
   * Admission: the change would take a team over one of its quotas (GPUs of a type, replicas).
   * 403 as for Kubernetes' ResourceQuota: the request is valid, the team may not have it now.
   */
  IP_QUOTA_EXCEEDED: { status: 403, retryable: false, openaiType: 'permission_error' },
  /** Admission: the spec breaks one of the team's policy rules (engine, GPUs per replica, SLO). */
  IP_POLICY_VIOLATION: { status: 403, retryable: false, openaiType: 'permission_error' },
  IP_NO_READY_REPLICA: { status: 503, retryable: true, openaiType: 'service_unavailable' },
  IP_UPSTREAM_UNAVAILABLE: { status: 502, retryable: true, openaiType: 'api_error' },
  IP_UPSTREAM_TIMEOUT: { status: 504, retryable: true, openaiType: 'api_error' },
  IP_INTERNAL: { status: 500, retryable: false, openaiType: 'api_error' },
  IP_OVERLOADED: { status: 503, retryable: true, openaiType: 'service_unavailable' },
  IP_SHUTTING_DOWN: { status: 503, retryable: true, openaiType: 'service_unavailable' },
  /** An artifact's bytes do not match its registered sha256 (or size); nothing is served from them. */
  IP_ARTIFACT_CORRUPT: { status: 422, retryable: false, openaiType: 'api_error' },
  /** An artifact could not be fetched (missing file, HTTP error, network failure). */
  IP_ARTIFACT_UNAVAILABLE: { status: 502, retryable: true, openaiType: 'api_error' },
} as const satisfies Record<string, ErrorDef>;

export type ErrorCode = keyof typeof ERRORS;

export interface ErrorDetail {
  path: string;
  message: string;
  /** IP_QUOTA_EXCEEDED: the quota, e.g. `gpus[H100-80GB]` or `replicas`. */
  quota?: string;
  /** IP_POLICY_VIOLATION: the rule, e.g. `allowedEngines`, `maxGpusPerReplica`, `requireSlo`. */
  rule?: string;
  /** Quota: what the team's other deployments use now. */
  used?: number;
  /** Quota: what this deployment asks for in total; policy: the offending number, if any. */
  requested?: number;
  /** Quota or policy: the limit. */
  limit?: number;
  /** Policy allowedEngines: the entries allowed. */
  allowed?: string[];
}

export class InferplaneError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly retryable: boolean;
  readonly details: readonly ErrorDetail[] | undefined;
  /** Seconds a client should wait before retrying (Retry-After), where it applies. */
  readonly retryAfterS: number | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    opts: { details?: ErrorDetail[]; retryAfterS?: number; cause?: unknown } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'InferplaneError';
    this.code = code;
    this.status = ERRORS[code].status;
    this.retryable = ERRORS[code].retryable;
    this.details = opts.details;
    this.retryAfterS = opts.retryAfterS;
  }

  /** The control-plane API's error body. */
  toJSON(): {
    error: { code: ErrorCode; message: string; status: number; details?: ErrorDetail[] };
  } {
    return {
      error: {
        code: this.code,
        message: this.message,
        status: this.status,
        ...(this.details ? { details: [...this.details] } : {}),
      },
    };
  }

  /** The OpenAI-shaped error body used at the gateway edge. */
  toOpenAI(): { error: { message: string; type: string; param: string | null; code: string } } {
    return {
      error: {
        message: this.message,
        type: ERRORS[this.code].openaiType,
        param: this.details?.[0]?.path ?? null,
        code: this.code,
      },
    };
  }
}

export function isInferplaneError(e: unknown): e is InferplaneError {
  return e instanceof InferplaneError;
}

/** Wraps anything thrown into an InferplaneError (unknown failures become IP_INTERNAL). */
export function toInferplaneError(e: unknown): InferplaneError {
  if (e instanceof InferplaneError) return e;
  const message = e instanceof Error ? e.message : String(e);
  return new InferplaneError('IP_INTERNAL', `internal error: ${message}`, { cause: e });
}
