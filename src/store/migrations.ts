import { sql, type Kysely, type Migration, type MigrationProvider } from 'kysely';

// Migrations live in code so the compiled CLI carries them; never edit one that has shipped.
const migrations: Record<string, Migration> = {
  '0001_initial': {
    async up(db: Kysely<unknown>): Promise<void> {
      await db.schema
        .createTable('tenants')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('name', 'text', (c) => c.notNull().unique())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('api_keys')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('tenant_id', 'text', (c) => c.references('tenants.id').onDelete('cascade'))
        .addColumn('role', 'text', (c) => c.notNull())
        .addColumn('hash', 'text', (c) => c.notNull().unique())
        .addColumn('prefix', 'text', (c) => c.notNull())
        .addColumn('description', 'text')
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('revoked_at', 'text')
        .execute();
      await db.schema
        .createTable('deployments')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('name', 'text', (c) => c.notNull().unique())
        .addColumn('tenant_id', 'text', (c) => c.notNull().references('tenants.id'))
        .addColumn('spec', 'text', (c) => c.notNull())
        .addColumn('generation', 'integer', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('replicas')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('deployment_id', 'text', (c) =>
          c.notNull().references('deployments.id').onDelete('cascade'),
        )
        .addColumn('idx', 'integer', (c) => c.notNull())
        .addColumn('generation', 'integer', (c) => c.notNull())
        .addColumn('state', 'text', (c) => c.notNull())
        .addColumn('node', 'text')
        .addColumn('gpus', 'text', (c) => c.notNull())
        .addColumn('port', 'integer')
        .addColumn('pid', 'integer')
        .addColumn('restarts', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('started_at', 'text')
        .addColumn('last_error', 'text')
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addUniqueConstraint('replicas_deployment_idx', ['deployment_id', 'idx'])
        .execute();
      await db.schema
        .createTable('events')
        .addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement())
        .addColumn('deployment_id', 'text', (c) => c.notNull())
        .addColumn('time', 'text', (c) => c.notNull())
        .addColumn('type', 'text', (c) => c.notNull())
        .addColumn('reason', 'text', (c) => c.notNull())
        .addColumn('message', 'text', (c) => c.notNull())
        .addColumn('replica_idx', 'integer')
        .execute();
      await db.schema
        .createIndex('events_deployment')
        .on('events')
        .columns(['deployment_id', 'id'])
        .execute();
      await db.schema
        .createTable('nodes')
        .addColumn('name', 'text', (c) => c.primaryKey())
        .addColumn('labels', 'text', (c) => c.notNull())
        .addColumn('gpus', 'text', (c) => c.notNull())
        .addColumn('state', 'text', (c) => c.notNull())
        .addColumn('last_seen', 'text', (c) => c.notNull())
        .execute();
      void sql; // keep the import for later raw migrations
    },
  },
  // Per-tenant gateway limits (TenantLimits as JSON; '{}' = unlimited).
  '0002_tenant_limits': {
    async up(db: Kysely<unknown>): Promise<void> {
      await db.schema
        .alterTable('tenants')
        .addColumn('limits', 'text', (c) => c.notNull().defaultTo('{}'))
        .execute();
    },
  },
  // Team quotas and deployment policy (TenantQuota / TenantPolicy as JSON; '{}' = none).
  '0004_tenant_quota_policy': {
    async up(db: Kysely<unknown>): Promise<void> {
      await db.schema
        .alterTable('tenants')
        .addColumn('quota', 'text', (c) => c.notNull().defaultTo('{}'))
        .execute();
      await db.schema
        .alterTable('tenants')
        .addColumn('policy', 'text', (c) => c.notNull().defaultTo('{}'))
        .execute();
    },
  },
};

export const migrationProvider: MigrationProvider = {
  getMigrations: () => Promise.resolve(migrations),
};
