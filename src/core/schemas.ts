// Shared zod schemas; types are inferred from them, JSON Schema is exported for the OpenAPI document.
import { z } from 'zod';
import { InferplaneError, type ErrorDetail } from './errors.js';
import { ROUTING_POLICIES } from './types.js';

/** DNS-1123 label: lower-case letters, digits and '-', starting and ending alphanumeric. */
export const NameSchema = z
  .string()
  .min(1)
  .max(63)
  .regex(/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/, {
    message:
      "must be lower-case letters, digits and '-', starting and ending with a letter or digit",
  });

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
});

export const DeploymentSpecSchema = z
  .strictObject({
    kind: z.literal('Deployment').optional(),
    name: NameSchema.describe('Unique deployment name; clients send it as the model name.'),
    tenant: NameSchema.describe('The team that owns the deployment.'),
    model: z.string().min(1).max(256).describe('The model served, e.g. llama-3.1-8b.'),
    engine: z.strictObject({
      name: z.string().min(1).max(32).describe('Engine adapter: sim, llamacpp, vllm, ...'),
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

export const TenantCreateSchema = z.strictObject({
  name: NameSchema,
  limits: TenantLimitsSchema.optional(),
});

/** A change to a tenant's limits: a number sets the field, null clears it, absent keeps it. */
export const TenantLimitsPatchSchema = z.strictObject({
  requestsPerSecond: TenantLimitsSchema.shape.requestsPerSecond.unwrap().nullable().optional(),
  tokensPerMinute: TenantLimitsSchema.shape.tokensPerMinute.unwrap().nullable().optional(),
  maxConcurrency: TenantLimitsSchema.shape.maxConcurrency.unwrap().nullable().optional(),
});
export type TenantLimitsPatch = z.infer<typeof TenantLimitsPatchSchema>;

/** Body of PATCH /api/v1/tenants/{name}. */
export const TenantPatchSchema = z.strictObject({
  limits: TenantLimitsPatchSchema,
});
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
