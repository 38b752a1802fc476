// The OpenAPI 3.1 document of the control-plane API; request schemas come from the zod schemas.
import { z } from 'zod';
import {
  DeploymentSpecSchema,
  KeyCreateSchema,
  ModelVersionCreateSchema,
  TenantCreateSchema,
  TenantLimitsSchema,
  TenantPatchSchema,
  TenantPolicySchema,
  TenantQuotaSchema,
} from '../core/schemas.js';

const ErrorBody = {
  type: 'object',
  properties: {
    error: {
      type: 'object',
      properties: {
        code: { type: 'string', description: 'Stable error code, e.g. IP_VALIDATION' },
        message: { type: 'string' },
        status: { type: 'integer' },
        details: {
          type: 'array',
          items: {
            type: 'object',
            properties: {
              path: { type: 'string' },
              message: { type: 'string' },
              quota: { type: 'string', description: 'IP_QUOTA_EXCEEDED: e.g. gpus[H100-80GB]' },
              rule: { type: 'string', description: 'IP_POLICY_VIOLATION: e.g. allowedEngines' },
              used: { type: 'number', description: "The team's other deployments' use" },
              requested: { type: 'number', description: 'What this deployment asks for' },
              limit: { type: 'number' },
              allowed: { type: 'array', items: { type: 'string' } },
            },
          },
        },
      },
      required: ['code', 'message', 'status'],
    },
  },
};

const errors = {
  '400': {
    description: 'Invalid input',
    content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } },
  },
  '401': {
    description: 'Missing or invalid API key',
    content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } },
  },
  '404': {
    description: 'Not found',
    content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } },
  },
};

const admissionRefused = {
  description:
    "Refused by the team's quota (IP_QUOTA_EXCEEDED: details name the quota, used, requested, limit) or policy (IP_POLICY_VIOLATION: details name the rule), or the key may not act for that tenant (IP_FORBIDDEN)",
  content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } },
};
const tenantView = (description: string) => ({
  description,
  content: { 'application/json': { schema: { $ref: '#/components/schemas/TenantView' } } },
});
const ok = (description: string) => ({ description, content: { 'application/json': {} } });
const tenantBody = (description: string) => ({
  description,
  content: {
    'application/json': {
      schema: {
        type: 'object',
        properties: { tenant: { $ref: '#/components/schemas/Tenant' } },
        required: ['tenant'],
      },
    },
  },
});
const forbidden = {
  description: 'Needs an operator key',
  content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } },
};
const nameParam = { name: 'name', in: 'path', required: true, schema: { type: 'string' } };
const tenantQuery = {
  name: 'tenant',
  in: 'query',
  description: 'The owning tenant (operators, when a model name exists in several tenants)',
  schema: { type: 'string' },
};

let cached: Record<string, unknown> | undefined;

export function openApiDocument(version: string): Record<string, unknown> {
  cached ??= {
    openapi: '3.1.0',
    info: {
      title: 'Inferplane control-plane API',
      version,
      description:
        'Deploy models, manage tenants and keys, inspect nodes. Authenticate with Authorization: Bearer <key>. The OpenAI-compatible inference API is served under /v1 on the same port.',
    },
    servers: [{ url: '/api/v1' }],
    security: [{ bearer: [] }],
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
      schemas: {
        Error: ErrorBody,
        DeploymentSpec: z.toJSONSchema(DeploymentSpecSchema, { io: 'input' }),
        TenantCreate: z.toJSONSchema(TenantCreateSchema, { io: 'input' }),
        TenantPatch: z.toJSONSchema(TenantPatchSchema, { io: 'input' }),
        TenantLimits: z.toJSONSchema(TenantLimitsSchema, { io: 'output' }),
        Tenant: {
          type: 'object',
          properties: {
            id: { type: 'string' },
            name: { type: 'string' },
            createdAt: { type: 'string', format: 'date-time' },
            limits: { $ref: '#/components/schemas/TenantLimits' },
            quota: { $ref: '#/components/schemas/TenantQuota' },
            policy: { $ref: '#/components/schemas/TenantPolicy' },
          },
          required: ['id', 'name', 'createdAt', 'limits'],
        },
        TenantQuota: z.toJSONSchema(TenantQuotaSchema, { io: 'output' }),
        TenantPolicy: z.toJSONSchema(TenantPolicySchema, { io: 'output' }),
        TenantView: {
          type: 'object',
          properties: {
            tenant: { $ref: '#/components/schemas/Tenant' },
            usage: {
              type: 'object',
              description: "What the team's deployments ask for now (desired state)",
              properties: {
                deployments: { type: 'integer' },
                replicas: { type: 'integer' },
                gpus: { type: 'object', additionalProperties: { type: 'integer' } },
              },
            },
            quotas: {
              type: 'array',
              description:
                "The team's quotas together: gpus[TYPE] and replicas (admission, with used), requestsPerSecond, tokensPerMinute, maxConcurrency (gateway limits)",
              items: {
                type: 'object',
                properties: {
                  quota: { type: 'string' },
                  enforcedBy: { type: 'string', enum: ['admission', 'gateway'] },
                  used: { type: 'number' },
                  limit: { type: ['number', 'null'] },
                },
                required: ['quota', 'enforcedBy', 'limit'],
              },
            },
          },
          required: ['tenant', 'usage', 'quotas'],
        },
        KeyCreate: z.toJSONSchema(KeyCreateSchema, { io: 'input' }),
        ModelVersionCreate: z.toJSONSchema(ModelVersionCreateSchema, { io: 'input' }),
      },
    },
    paths: {
      '/deployments': {
        get: {
          summary: 'List deployments',
          responses: { '200': ok('Deployment summaries'), ...errors },
        },
      },
      '/deployments/{name}': {
        parameters: [nameParam],
        get: {
          summary: 'Describe a deployment (spec, replicas, events)',
          responses: { '200': ok('Deployment detail'), ...errors },
        },
        put: {
          summary: 'Create or update a deployment (idempotent apply)',
          requestBody: {
            required: true,
            content: {
              'application/json': { schema: { $ref: '#/components/schemas/DeploymentSpec' } },
            },
          },
          responses: {
            '200': ok('Updated or unchanged'),
            '201': ok('Created'),
            '403': admissionRefused,
            '422': { description: 'Cannot be placed on free GPUs now' },
            ...errors,
          },
        },
        delete: {
          summary: 'Delete a deployment and stop its replicas',
          responses: { '200': ok('Deleted'), ...errors },
        },
      },
      '/deployments/{name}/logs': {
        parameters: [
          nameParam,
          { name: 'replica', in: 'query', schema: { type: 'integer', minimum: 0 } },
          { name: 'tail', in: 'query', schema: { type: 'integer', minimum: 0 } },
        ],
        get: {
          summary: "A replica's engine output",
          responses: {
            '200': { description: 'Log text', content: { 'text/plain': {} } },
            ...errors,
          },
        },
      },
      '/deployments/{name}/events': {
        parameters: [nameParam],
        get: {
          summary: "The deployment's events (newest kept: 500), oldest first",
          responses: { '200': ok('Events'), ...errors },
        },
      },
      '/metrics': {
        get: {
          summary:
            "Prometheus text scoped to the caller: all series for an operator; a team key gets only its tenant's and its deployments' series",
          responses: {
            '200': { description: 'Prometheus text', content: { 'text/plain': {} } },
            ...errors,
          },
        },
      },
      '/deployments/{name}/rollout': {
        parameters: [nameParam],
        get: {
          summary:
            "The deployment's rollout: phase, step, version weights, and each gate's value against its threshold over the last interval",
          responses: { '200': ok('Rollout status'), ...errors },
        },
      },
      '/deployments/{name}/rollout/promote': {
        parameters: [nameParam],
        post: {
          summary: 'Promote the canary to 100% now (skips the remaining steps and gates)',
          responses: {
            '200': ok('Rollout status'),
            '409': { description: 'No rollout in progress' },
            ...errors,
          },
        },
      },
      '/deployments/{name}/rollout/abort': {
        parameters: [nameParam],
        post: {
          summary:
            'Roll back by hand: traffic to the stable version first, then the canary is torn down',
          responses: {
            '200': ok('Rollout status'),
            '409': { description: 'No rollout in progress' },
            ...errors,
          },
        },
      },
      '/deployments/{name}/rollout/undo': {
        parameters: [nameParam],
        post: {
          summary:
            'After a completed rollout: re-apply the previous version (it rolls out like any change)',
          responses: {
            '200': ok('Apply result'),
            '409': { description: 'Nothing to undo' },
            ...errors,
          },
        },
      },
      '/tenants': {
        get: { summary: 'List tenants', responses: { '200': ok('Tenants'), ...errors } },
        post: {
          summary: 'Create a tenant (operator)',
          requestBody: {
            required: true,
            content: {
              'application/json': { schema: { $ref: '#/components/schemas/TenantCreate' } },
            },
          },
          responses: {
            '201': tenantBody('Created'),
            '403': forbidden,
            '409': { description: 'Exists' },
            ...errors,
          },
        },
      },
      '/tenants/{name}': {
        parameters: [nameParam],
        get: {
          summary:
            'A tenant with its quota, policy, gateway limits and current usage (a tenant key sees only its own)',
          responses: { '200': tenantView('The tenant, its usage and its quotas'), ...errors },
        },
        patch: {
          summary:
            "Change a tenant's gateway limits, quota and policy (operator): a value sets a field, null clears it (unlimited / no rule), an absent field is kept; quota: null or policy: null clears all of it",
          requestBody: {
            required: true,
            content: {
              'application/json': { schema: { $ref: '#/components/schemas/TenantPatch' } },
            },
          },
          responses: {
            '200': tenantView('The tenant with its resulting limits, quota and policy'),
            '403': forbidden,
            ...errors,
          },
        },
      },
      '/tenants/{name}/keys': {
        parameters: [nameParam],
        post: {
          summary: 'Create an API key for a tenant; the key is returned once',
          requestBody: {
            content: { 'application/json': { schema: { $ref: '#/components/schemas/KeyCreate' } } },
          },
          responses: { '201': ok('The key, in plaintext, once'), ...errors },
        },
      },
      '/nodes': {
        get: {
          summary: 'Nodes and their GPUs (operator)',
          responses: { '200': ok('Nodes'), ...errors },
        },
      },
      '/models': {
        get: {
          summary:
            'List registered models (a tenant key sees its own; an operator all, or ?tenant=)',
          parameters: [tenantQuery],
          responses: { '200': ok('Model summaries'), ...errors },
        },
      },
      '/models/{name}': {
        parameters: [nameParam, tenantQuery],
        get: {
          summary: 'A model and its versions',
          responses: { '200': ok('Model detail'), ...errors },
        },
      },
      '/models/{name}/versions': {
        parameters: [nameParam],
        get: {
          summary: "A model's versions, oldest first",
          parameters: [tenantQuery],
          responses: { '200': ok('Versions'), ...errors },
        },
        post: {
          summary:
            'Register an immutable version (the model is created with its first version); the same content again is idempotent (200), different content is 409 IP_CONFLICT',
          requestBody: {
            required: true,
            content: {
              'application/json': { schema: { $ref: '#/components/schemas/ModelVersionCreate' } },
            },
          },
          responses: {
            '200': ok('Already registered with the same content'),
            '201': ok('Registered'),
            '409': { description: 'The version exists with different content' },
            ...errors,
          },
        },
      },
      '/models/{name}/versions/{version}': {
        parameters: [
          nameParam,
          { name: 'version', in: 'path', required: true, schema: { type: 'string' } },
          tenantQuery,
        ],
        get: {
          summary: 'One version: artifacts (uri, sha256, size, format) and provenance',
          responses: { '200': ok('The version'), ...errors },
        },
      },
      '/audit': {
        get: {
          summary:
            'Audit records, oldest first: the newest `limit` matching the filters (operator)',
          parameters: [
            {
              name: 'resource',
              in: 'query',
              description: 'Exact, or a prefix at a / or @ boundary (model/team-a)',
              schema: { type: 'string' },
            },
            {
              name: 'actor',
              in: 'query',
              description: 'Exact, or a prefix at a / boundary (tenant/team-a)',
              schema: { type: 'string' },
            },
            { name: 'action', in: 'query', schema: { type: 'string' } },
            { name: 'since', in: 'query', schema: { type: 'string', format: 'date-time' } },
            {
              name: 'limit',
              in: 'query',
              schema: { type: 'integer', minimum: 1, maximum: 10000, default: 100 },
            },
          ],
          responses: { '200': ok('Audit records'), '403': forbidden, ...errors },
        },
      },
      '/audit/verify': {
        post: {
          summary:
            'Verify the hash chain: {ok, checked, head, firstBad?: {seq, reason, record?}} (operator)',
          responses: { '200': ok('Verification result'), '403': forbidden, ...errors },
        },
      },
    },
  };
  return cached;
}
