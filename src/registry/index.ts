// The registry layer: models → versions → artifacts, the node artifact cache, the audit log.
export {
  AUDIT_GENESIS_HASH,
  AuditLog,
  actorOf,
  auditRecordHash,
  canonicalJson,
  type ActorPrincipal,
  type AuditEntry,
  type AuditFilter,
} from './audit.js';
export {
  ArtifactCache,
  type ArtifactCacheOptions,
  type ArtifactPhase,
  type ArtifactProgress,
  type CacheArtifact,
  type ProgressFn,
} from './artifact-cache.js';
export { sha256File, type HashProgress } from './hash.js';
export {
  ModelRegistry,
  formatFromUri,
  versionContentHash,
  type ModelRef,
  type ModelRegistryOptions,
  type ModelScope,
  type RegistryPrincipal,
} from './registry.js';
