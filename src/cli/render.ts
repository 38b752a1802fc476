// Human-readable views of API resources (tables for `get`, the block for `describe`).
import { stringify } from 'yaml';
import type {
  DeploymentDetail,
  DeploymentEvent,
  DeploymentSummary,
  NodeSummary,
  Replica,
} from '../core/api-types.js';
import { formatAge, formatFields, formatTable, oneLine, truncate } from './output.js';

/** How many events `describe` shows (the most recent ones). */
export const DESCRIBE_EVENTS = 20;
const LAST_ERROR_WIDTH = 60;

/** `1x H100-80GB`: GPUs per replica and their type. */
export function formatGpus(resources: { gpus: number; gpuType: string }): string {
  return resources.gpuType ? `${resources.gpus}x ${resources.gpuType}` : `${resources.gpus}`;
}

export function deploymentsTable(items: readonly DeploymentSummary[], now: Date): string {
  return formatTable(
    ['NAME', 'TENANT', 'MODEL', 'ENGINE', 'READY', 'GPUS', 'PHASE', 'AGE'],
    items.map((d) => [
      d.name,
      d.tenant,
      d.model,
      d.engine,
      `${d.replicas.ready}/${d.replicas.desired}`,
      formatGpus(d.resources),
      d.phase,
      formatAge(d.createdAt, now),
    ]),
  );
}

export function nodesTable(items: readonly NodeSummary[]): string {
  return formatTable(
    ['NAME', 'STATE', 'GPUS', 'TYPE', 'LABELS'],
    items.map((n) => [
      n.name,
      n.state,
      `${n.gpuFree}/${n.gpuTotal}`,
      [...new Set(n.gpus.map((g) => g.type))].join(',') || '<none>',
      formatLabels(n.labels),
    ]),
  );
}

/** `k1=v1,k2=v2` sorted by key, or `<none>`. */
export function formatLabels(labels: Record<string, string> | undefined): string {
  const entries = Object.entries(labels ?? {}).sort(([a], [b]) => a.localeCompare(b));
  return entries.length === 0 ? '<none>' : entries.map(([k, v]) => `${k}=${v}`).join(',');
}

export function replicasTable(replicas: readonly Replica[], now: Date): string {
  return formatTable(
    ['INDEX', 'ID', 'STATE', 'NODE', 'GPUS', 'PORT', 'PID', 'RESTARTS', 'AGE', 'LAST-ERROR'],
    [...replicas]
      .sort((a, b) => a.index - b.index)
      .map((r) => [
        String(r.index),
        r.id,
        r.state,
        r.node ?? '',
        r.gpus.join(','),
        r.port === null ? '' : String(r.port),
        r.pid === null ? '' : String(r.pid),
        String(r.restarts),
        formatAge(r.startedAt, now),
        truncate(oneLine(r.lastError ?? ''), LAST_ERROR_WIDTH),
      ]),
  );
}

/** Where each replica's latest (re)start spent its time, ms per phase ('-': not applicable). */
export function coldStartTable(replicas: readonly Replica[]): string {
  const ms = (v: number | undefined): string => (v === undefined ? '-' : String(v));
  return formatTable(
    [
      'INDEX',
      'FETCH',
      'VERIFY',
      'ENGINE-START',
      'MODEL-LOAD',
      'WARMUP',
      'READY',
      'FIRST-TOKEN',
      'NOTE',
    ],
    [...replicas]
      .sort((a, b) => a.index - b.index)
      .map((r) => {
        const c = r.coldStart ?? {};
        return [
          String(r.index),
          ms(c.artifactFetchMs),
          ms(c.artifactVerifyMs),
          ms(c.engineStartMs),
          ms(c.modelLoadMs),
          ms(c.warmupMs),
          ms(c.readyMs),
          ms(c.firstTokenMs),
          [c.restart ? 'restart' : '', c.artifactCacheHit ? 'cache hit' : '']
            .filter(Boolean)
            .join(', '),
        ];
      }),
  );
}

/** The last `limit` events, oldest first. */
export function recentEvents(
  events: readonly DeploymentEvent[],
  limit = DESCRIBE_EVENTS,
): DeploymentEvent[] {
  const sorted = events
    .map((e, i) => ({ e, i, t: Date.parse(e.time) }))
    .sort((a, b) => (a.t || 0) - (b.t || 0) || a.i - b.i)
    .map(({ e }) => e);
  return sorted.slice(Math.max(0, sorted.length - limit));
}

export function eventsTable(events: readonly DeploymentEvent[], now: Date): string {
  return formatTable(
    ['AGE', 'TYPE', 'REASON', 'REPLICA', 'MESSAGE'],
    events.map((e) => [
      formatAge(e.time, now),
      e.type,
      e.reason,
      e.replica === undefined ? '' : String(e.replica),
      e.message,
    ]),
  );
}

/** The `describe deployment` block. */
export function describeDeployment(detail: DeploymentDetail, now: Date): string {
  const s = detail.summary;
  const when = (t: string): string =>
    formatAge(t, now) === '-' ? t : `${t} (${formatAge(t, now)} ago)`;
  const parts: string[] = [
    formatFields([
      ['Name', s.name],
      ['Tenant', s.tenant],
      ['Model', s.model],
      ['Engine', s.engine],
      ['Phase', s.phase],
      ['Replicas', `${s.replicas.desired} desired / ${s.replicas.ready} ready`],
      ['Resources', `${formatGpus(s.resources)} per replica`],
      ['Generation', String(s.generation)],
      ['Created', when(s.createdAt)],
      ['Updated', when(s.updatedAt)],
    ]),
  ];
  parts.push('Spec:\n' + indent(stringify(detail.spec ?? {}, { lineWidth: 0 })));
  parts.push(
    'Replicas:\n' +
      (detail.replicas.length === 0 ? '  <none>\n' : indent(replicasTable(detail.replicas, now))),
  );
  const cold = detail.replicas.filter((r) => r.coldStart);
  if (cold.length > 0) {
    parts.push('Cold start (ms):\n' + indent(coldStartTable(cold)));
  }
  const events = recentEvents(detail.events);
  const more = detail.events.length - events.length;
  parts.push(
    `Events${more > 0 ? ` (last ${events.length} of ${detail.events.length})` : ''}:\n` +
      (events.length === 0 ? '  <none>\n' : indent(eventsTable(events, now))),
  );
  return parts.join('\n');
}

/** Indents every non-empty line by two spaces. */
export function indent(text: string, prefix = '  '): string {
  return text
    .split('\n')
    .map((l) => (l === '' ? l : prefix + l))
    .join('\n')
    .replace(/\n*$/, '\n');
}
