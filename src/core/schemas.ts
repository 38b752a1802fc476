// Shared zod schemas; types are inferred from them, JSON Schema is exported for the OpenAPI document.
import { z } from 'zod';
import { InferplaneError, type ErrorDetail } from './errors.js';
import { tokenizerKnown } from './tokens.js';
import { PREFIX_BLOCKS, PREFIX_SOURCES, ROUTING_POLICIES } from './types.js';

/** DNS-1123 label: lower-case letters, digits and '-', starting and ending alphanumeric. */
export const NameSchema = z
  .string()
  .min(1)
  .max(63)
  .regex(/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/, {
    message:
      "must be lower-case letters, digits and '-', starting and ending with a letter or digit",
  });

/** An engine version: letters, digits, '.', '_' and '-' (b5000, 0.8.5, v1.2.0-rc1). */
const ENGINE_VERSION_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

export const EngineArgValueSchema = z.union([z.string(), z.number(), z.boolean()]);

const WeightSchema = z.number().min(0).max(100).optional();

export const RoutingSpecSchema = z.strictObject({
  policy: z
    .enum(ROUTING_POLICIES)
    .optional()
    .describe('round-robin, least-loaded or prefix-aware (default: prefix-aware).'),
  weights: z
    .strictObject({
      prefix: WeightSchema,
      queue: WeightSchema,
      kv: WeightSchema,
      affinity: WeightSchema,
    })
    .optional()
    .describe("Overrides of the policy's scorer weights (each 0..100)."),
  prefixSource: z
    .enum(PREFIX_SOURCES)
    .optional()
    .describe(
      "Prefix scorer's source: auto (the engine's KV event stream where the engine publishes one — the simulator — else the approximate index), approximate, or precise (default: auto).",
    ),
  prefixBlocks: z
    .enum(PREFIX_BLOCKS)
    .optional()
    .describe(
      "Blocks of the approximate prefix index: text (128-byte blocks of the prompt), tokens (the engine's KV blocks, hashed as the engine does; only where the gateway knows the engine's tokenizer — the simulator) or auto (tokens where known and prefixSource is approximate, else text; default).",
    ),
});

/** Latency targets of a deployment (p99, milliseconds); a team's policy may require them. */
export const SloSpecSchema = z.strictObject({
  ttftP99Ms: z.number().positive().max(3_600_000).optional().describe('p99 time to first token.'),
  itlP99Ms: z.number().positive().max(3_600_000).optional().describe('p99 inter-token latency.'),
  e2eP99Ms: z.number().positive().max(3_600_000).optional().describe('p99 end-to-end latency.'),
});
export type SloSpec = z.infer<typeof SloSpecSchema>;

/** A duration: milliseconds as a number, or a string such as "500ms", "30s", "2m", "1h". */
export const DurationSchema = z.union([
  z.int().min(0).max(86_400_000),
  z.string().regex(/^\d+(\.\d+)?(ms|s|m|h)$/, {
    message: 'expected milliseconds or a duration such as 500ms, 30s, 2m, 1h',
  }),
]);
export type Duration = z.infer<typeof DurationSchema>;

/** Milliseconds of a Duration ("30s" → 30000, 1500 → 1500). */
export function durationMs(d: Duration): number {
  if (typeof d === 'number') return d;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(d);
  if (!m) return 0;
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 'ms' | 's' | 'm' | 'h'];
  return Math.round(Number(m[1]) * unit);
}

/**
 * A safe rollout of a changed template (see src/deploy/rollout.ts): canary replicas of the new
 * version, warmed up, then take `steps` of traffic; `gates` are evaluated on the canary's own
 * gateway metrics every `interval`; a failed gate rolls back (traffic first, then teardown).
 */
export const RolloutSpecSchema = z.strictObject({
  steps: z
    .array(
      z.strictObject({
        weight: z.number().min(0).max(100).describe('Share of traffic (%) to the new version.'),
        pause: DurationSchema.default(0).describe('How long to hold this step (gates passing).'),
      }),
    )
    .min(1)
    .max(20)
    .describe('Traffic steps; after the last one passes the new version is promoted to 100%.'),
  gates: z
    .strictObject({
      ttftP99Ms: z.number().positive().max(3_600_000).optional().describe('Canary p99 TTFT limit.'),
      itlP99Ms: z.number().positive().max(3_600_000).optional().describe('Canary p99 ITL limit.'),
      errorRate: z.number().min(0).max(1).optional().describe('Canary error (5xx) share limit.'),
      gpuMemoryPct: z
        .number()
        .min(0)
        .max(100)
        .optional()
        .describe("Canary replicas' GPU memory use limit (%)."),
      probe: z
        .strictObject({
          messages: z
            .array(
              z.strictObject({
                role: z.enum(['system', 'user', 'assistant']),
                content: z.string().max(100_000),
              }),
            )
            .min(1)
            .max(64),
          expect: z.string().min(1).max(1000).describe('Substring of the reply, or /regex/flags.'),
          maxTokens: z.int().positive().max(4096).optional().describe('Default 8.'),
        })
        .optional()
        .describe('One chat request to a canary replica each interval; the reply must match.'),
    })
    .default({}),
  interval: DurationSchema.default('10s').describe('How often gates are evaluated (window).'),
  minSamples: z
    .int()
    .min(1)
    .max(1_000_000)
    .default(20)
    .describe('Fewest samples in a window for a latency or error gate to be decided.'),
  warmup: z
    .strictObject({
      requests: z.int().min(0).max(1000).default(4).describe('Synthetic requests per replica.'),
      maxTokens: z.int().positive().max(4096).default(8),
    })
    .default({ requests: 4, maxTokens: 8 }),
  drainTimeout: DurationSchema.default('60s').describe(
    'Longest wait for in-flight requests before replicas are torn down.',
  ),
});
export type RolloutSpec = z.infer<typeof RolloutSpecSchema>;

export const DeploymentSpecSchema = z
  .strictObject({
    kind: z.literal('Deployment').optional(),
    name: NameSchema.describe('Unique deployment name; clients send it as the model name.'),
    tenant: NameSchema.describe('The team that owns the deployment.'),
    model: z.string().min(1).max(256).describe('The model served, e.g. llama-3.1-8b.'),
    engine: z.strictObject({
      name: z.string().min(1).max(32).describe('Engine adapter: sim, llamacpp, vllm, ...'),
      version: z
        .string()
        .regex(ENGINE_VERSION_RE, { message: 'letters, digits, . _ - only' })
        .max(64)
        .optional()
        .describe(
          'Engine version (e.g. b5000 for llama.cpp, 0.8.5 for vLLM); matched by team policy rules such as llamacpp@>=b5000.',
        ),
      args: z
        .record(z.string(), EngineArgValueSchema)
        .default({})
        .describe('Engine-specific arguments, validated by the engine adapter.'),
    }),
    replicas: z.int().min(0).max(256),
    resources: z.strictObject({
      gpus: z.int().min(0).max(64).describe('GPUs per replica.'),
      gpuType: z.string().min(1).max(64).describe('GPU type to place on, e.g. H100-80GB.'),
    }),
    routing: RoutingSpecSchema.optional().describe(
      'How the gateway picks a replica; changing it does not restart replicas.',
    ),
    slo: SloSpecSchema.optional().describe(
      "Latency targets (p99, ms); required when the team's policy has requireSlo. Changing it does not restart replicas.",
    ),
    version: z
      .string()
      .min(1)
      .max(64)
      .regex(/^[A-Za-z0-9][A-Za-z0-9._+-]*$/, {
        message: "must be letters, digits, '.', '_', '+' and '-', starting with a letter or digit",
      })
      .optional()
      .describe(
        'A label for this template (model, engine, resources); default g<generation>. Changing it is a template change.',
      ),
    rollout: RolloutSpecSchema.optional().describe(
      'Roll template changes out as a canary with traffic steps and gates; without it replicas are replaced.',
    ),
    modelVersion: z
      .strictObject({
        name: z.string().min(1).max(128).describe('Model name in the registry (the team’s own).'),
        version: z.string().min(1).max(128).describe('Registered version (immutable).'),
      })
      .optional()
      .describe(
        'The registered model version whose artifact the engine serves: fetched into the node cache and verified (sha256) before the engine starts.',
      ),
  })
  .refine((d) => d.routing?.prefixBlocks !== 'tokens' || tokenizerKnown(d.engine.name), {
    message:
      "routing.prefixBlocks 'tokens' needs an engine whose tokenizer the gateway knows (sim); use text or auto",
    path: ['routing', 'prefixBlocks'],
  })
  .describe('A deployment: a model served by an engine on N replicas.');

export type DeploymentSpec = z.infer<typeof DeploymentSpecSchema>;
export type DeploymentSpecInput = z.input<typeof DeploymentSpecSchema>;

/** Per-tenant gateway limits (see TenantLimits in types.ts); an absent field means unlimited. */
export const TenantLimitsSchema = z.strictObject({
  requestsPerSecond: z.number().positive().max(1e6).optional(),
  tokensPerMinute: z.int().positive().max(1e12).optional(),
  maxConcurrency: z.int().positive().max(1e6).optional(),
});

/**
 * A team's admission quotas (see TenantQuota in types.ts); an absent field means unlimited.
 * Requests/s and tokens/min are the gateway `limits`, shown beside these as the team's quotas.
 */
export const TenantQuotaSchema = z.strictObject({
  gpus: z
    .record(z.string().min(1).max(64), z.int().min(0).max(1_000_000))
    .optional()
    .describe("GPUs by type across the team's deployments (replicas × GPUs per replica)."),
  replicas: z
    .int()
    .min(0)
    .max(1_000_000)
    .optional()
    .describe("Replicas across the team's deployments."),
});

/**
 * An allowedEngines entry: `name` (any version), `name@version` (exactly that version) or
 * `name@>=version` (that version or newer; see engineVersionAtLeast in src/tenancy/quota.ts).
 */
export const EngineRuleSchema = z
  .string()
  .max(100)
  .regex(/^[a-z0-9][a-z0-9_-]*(@(>=)?[A-Za-z0-9][A-Za-z0-9._-]*)?$/, {
    message: 'expected name, name@version or name@>=version (e.g. sim, llamacpp@>=b5000)',
  });

/** A team's deployment policy (see TenantPolicy in types.ts); an absent field means no rule. */
export const TenantPolicySchema = z.strictObject({
  allowedEngines: z
    .array(EngineRuleSchema)
    .min(1)
    .max(64)
    .optional()
    .describe('Engines (and versions) the team may deploy: sim, llamacpp@>=b5000, vllm@0.8.5.'),
  maxGpusPerReplica: z.int().min(0).max(64).optional().describe('Most GPUs one replica may use.'),
  requireSlo: z
    .boolean()
    .optional()
    .describe('Deployments must carry an slo block with at least one target.'),
});

export const TenantCreateSchema = z.strictObject({
  name: NameSchema,
  limits: TenantLimitsSchema.optional(),
  quota: TenantQuotaSchema.optional(),
  policy: TenantPolicySchema.optional(),
});

/** A change to a tenant's limits: a number sets the field, null clears it, absent keeps it. */
export const TenantLimitsPatchSchema = z.strictObject({
  requestsPerSecond: TenantLimitsSchema.shape.requestsPerSecond.unwrap().nullable().optional(),
  tokensPerMinute: TenantLimitsSchema.shape.tokensPerMinute.unwrap().nullable().optional(),
  maxConcurrency: TenantLimitsSchema.shape.maxConcurrency.unwrap().nullable().optional(),
});
export type TenantLimitsPatch = z.infer<typeof TenantLimitsPatchSchema>;

/** A change to a quota: a value sets a field (gpus: per type), null clears it, absent keeps it. */
export const TenantQuotaPatchSchema = z.strictObject({
  gpus: z
    .record(z.string().min(1).max(64), z.int().min(0).max(1_000_000).nullable())
    .nullable()
    .optional(),
  replicas: z.int().min(0).max(1_000_000).nullable().optional(),
});
export type TenantQuotaPatch = z.infer<typeof TenantQuotaPatchSchema>;

/** A change to a policy: a value sets a rule, null clears it, absent keeps it. */
export const TenantPolicyPatchSchema = z.strictObject({
  allowedEngines: TenantPolicySchema.shape.allowedEngines.unwrap().nullable().optional(),
  maxGpusPerReplica: TenantPolicySchema.shape.maxGpusPerReplica.unwrap().nullable().optional(),
  requireSlo: z.boolean().nullable().optional(),
});
export type TenantPolicyPatch = z.infer<typeof TenantPolicyPatchSchema>;

/**
 * Body of PATCH /api/v1/tenants/{name}: any of limits, quota, policy. Within each, a value sets a
 * field, null clears it and an absent field is kept; `quota: null` / `policy: null` clear all.
 */
export const TenantPatchSchema = z
  .strictObject({
    limits: TenantLimitsPatchSchema.optional(),
    quota: TenantQuotaPatchSchema.nullable().optional(),
    policy: TenantPolicyPatchSchema.nullable().optional(),
  })
  .refine((p) => p.limits !== undefined || p.quota !== undefined || p.policy !== undefined, {
    message: 'required: at least one of limits, quota, policy',
    path: ['limits'],
  });
export type TenantPatch = z.infer<typeof TenantPatchSchema>;
export const KeyCreateSchema = z.strictObject({
  description: z.string().max(200).optional(),
});

/** Turns zod issues into error details with a dotted path per bad field. */
export function zodDetails(error: z.ZodError, prefix = ''): ErrorDetail[] {
  return error.issues.map((issue) => {
    const path = [prefix, ...issue.path.map(String)].filter((p) => p !== '').join('.');
    return { path: path === '' ? '(root)' : path, message: issue.message };
  });
}

/** Parses `input` with `schema` or throws IP_VALIDATION listing every bad field. */
export function parseOrThrow<S extends z.ZodType>(
  schema: S,
  input: unknown,
  what: string,
  prefix = '',
): z.infer<S> {
  const result = schema.safeParse(input);
  if (!result.success) {
    const details = zodDetails(result.error, prefix);
    throw new InferplaneError(
      'IP_VALIDATION',
      `invalid ${what}: ${details.map((d) => `${d.path}: ${d.message}`).join('; ')}`,
      { details },
    );
  }
  return result.data;
}

// Model registry (src/registry): models → immutable versions → artifacts.

/** Artifact file formats the registry knows. */
export const ARTIFACT_FORMATS = ['gguf', 'safetensors', 'onnx', 'trt-engine'] as const;
export type ArtifactFormat = (typeof ARTIFACT_FORMATS)[number];

/** A model name: lower-case letters, digits, '.', '_' and '-' (e.g. llama-3.1-8b). */
export const ModelNameSchema = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$/, {
    message:
      "must be lower-case letters, digits, '.', '_' and '-', starting and ending with a letter or digit",
  });

/** A version label (e.g. 1, v2, 2025-06-01, 1.0.0-rc.1+build.5). */
export const ModelVersionLabelSchema = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[A-Za-z0-9][A-Za-z0-9._+-]*$/, {
    message: "must be letters, digits, '.', '_', '+' and '-', starting with a letter or digit",
  });

export const Sha256Schema = z
  .string()
  .regex(/^[0-9a-f]{64}$/, { message: 'must be 64 lower-case hex digits (sha256)' });

export const ArtifactInputSchema = z.strictObject({
  uri: z
    .string()
    .min(1)
    .max(2048)
    .refine((u) => /^(file:\/\/\/|https?:\/\/)/.test(u), {
      message: 'must be an absolute file:/// URI or an http(s):// URL',
    })
    .describe('file:///abs/path or http(s)://host/path'),
  sha256: Sha256Schema.optional().describe(
    'sha256 of the bytes; computed at registration for a file:// URI when omitted',
  ),
  size: z.int().min(0).max(Number.MAX_SAFE_INTEGER).optional().describe('Size in bytes.'),
  format: z
    .enum(ARTIFACT_FORMATS)
    .optional()
    .describe('File format; inferred from the extension when omitted.'),
});
export type ArtifactInput = z.infer<typeof ArtifactInputSchema>;

/** Body of POST /api/v1/models/{name}/versions: registers an immutable model version. */
export const ModelVersionCreateSchema = z.strictObject({
  version: ModelVersionLabelSchema,
  tenant: NameSchema.optional().describe(
    'Owning tenant; a tenant key registers into its own tenant, an operator must name one.',
  ),
  artifacts: z.array(ArtifactInputSchema).min(1).max(64),
  source: z.string().min(1).max(1024).optional().describe('Where the model came from.'),
  license: z.string().min(1).max(256).optional(),
  reason: z.string().min(1).max(1024).optional().describe('Why (kept in the audit log).'),
});
export type ModelVersionCreate = z.infer<typeof ModelVersionCreateSchema>;

/** Filters of GET /api/v1/audit. */
export const AuditQuerySchema = z.strictObject({
  resource: z.string().min(1).max(512).optional(),
  actor: z.string().min(1).max(512).optional(),
  action: z.string().min(1).max(128).optional(),
  since: z.iso.datetime({ offset: true }).optional(),
  limit: z.coerce.number().int().min(1).max(10_000).optional(),
});
export type AuditQuery = z.infer<typeof AuditQuerySchema>;
