import { describe, expect, it } from 'vitest';
import type { DeploymentDetail, DeploymentSummary } from '../../src/core/api-types.js';
import { formatAge, formatJson, formatTable, truncate } from '../../src/cli/output.js';
import { tenantsTable } from '../../src/cli/commands/tenant.js';
import {
  deploymentsTable,
  describeDeployment,
  formatLabels,
  nodesTable,
  recentEvents,
} from '../../src/cli/render.js';

const NOW = new Date('2025-01-02T00:00:00Z');
const ago = (secs: number): string => new Date(NOW.getTime() - secs * 1000).toISOString();

const summary: DeploymentSummary = {
  name: 'team-a-llama-8b',
  tenant: 'demo',
  model: 'llama-3.1-8b',
  engine: 'sim',
  replicas: { desired: 2, ready: 1 },
  resources: { gpus: 1, gpuType: 'H100-80GB' },
  phase: 'Progressing',
  generation: 3,
  createdAt: ago(300),
  updatedAt: ago(30),
};

describe('formatTable', () => {
  it('aligns columns, fills empty cells with - and leaves no trailing spaces', () => {
    expect(
      formatTable(
        ['NAME', 'X', 'LAST'],
        [
          ['a', 'long value', ''],
          ['bbbbbb', '', 'z'],
        ],
      ),
    ).toBe(
      ['NAME     X            LAST', 'a        long value   -', 'bbbbbb   -            z', ''].join(
        '\n',
      ),
    );
  });

  it('keeps multi-line cells on one row', () => {
    expect(formatTable(['A'], [['x\ny']])).toBe('A\nx y\n');
  });
});

describe('formatAge', () => {
  it.each([
    [0, '0s'],
    [45, '45s'],
    [119, '119s'],
    [120, '2m'],
    [3599, '59m'],
    [3600, '1h'],
    [47 * 3600, '47h'],
    [48 * 3600, '2d'],
    [400 * 86400, '1y'],
  ])('%i seconds → %s', (secs, want) => {
    expect(formatAge(ago(secs), NOW)).toBe(want);
  });

  it('handles missing, bad and future times', () => {
    expect(formatAge(null, NOW)).toBe('-');
    expect(formatAge('yesterday', NOW)).toBe('-');
    expect(formatAge(ago(-60), NOW)).toBe('0s');
  });
});

describe('formatJson / truncate', () => {
  it('indents by 2 and ends with a newline', () => {
    expect(formatJson({ a: [1] })).toBe('{\n  "a": [\n    1\n  ]\n}\n');
  });
  it('truncates with an ellipsis', () => {
    expect(truncate('abcdef', 4)).toBe('abc…');
    expect(truncate('abc', 4)).toBe('abc');
  });
});

describe('resource tables', () => {
  it('deployments', () => {
    const out = deploymentsTable([summary], NOW).split('\n');
    expect(out[0]).toMatch(/^NAME\s+TENANT\s+MODEL\s+ENGINE\s+READY\s+GPUS\s+PHASE\s+AGE$/);
    expect(out[1]).toMatch(
      /^team-a-llama-8b\s+demo\s+llama-3\.1-8b\s+sim\s+1\/2\s+1x H100-80GB\s+Progressing\s+5m$/,
    );
    // columns line up: READY starts at the same offset in header and row
    expect(out[0]!.indexOf('READY')).toBe(out[1]!.indexOf('1/2'));
  });

  it('tenants', () => {
    const out = tenantsTable(
      [
        { id: 't1', name: 'demo', createdAt: ago(7200), keys: 2, deployments: 1, limits: {} },
        {
          id: 't2',
          name: 'team-b',
          createdAt: ago(60),
          keys: 1,
          deployments: 0,
          limits: { requestsPerSecond: 5, tokensPerMinute: 60000, maxConcurrency: 4 },
        },
      ],
      NOW,
    ).split('\n');
    expect(out[0]).toMatch(/^NAME\s+KEYS\s+DEPLOYMENTS\s+LIMITS\s+AGE$/);
    expect(out[1]).toMatch(/^demo\s+2\s+1\s+-\s+2h$/);
    expect(out[2]).toMatch(/^team-b\s+1\s+0\s+5 rps, 60k tpm, 4 conc\s+\S+$/);
  });

  it('nodes', () => {
    const out = nodesTable([
      {
        name: 'local',
        state: 'Ready',
        lastSeen: ago(1),
        gpus: [
          {
            index: 0,
            uuid: 'g0',
            type: 'H100-80GB',
            memoryMiB: 81559,
            vendor: 'sim',
            replica: 'r1',
          },
          {
            index: 1,
            uuid: 'g1',
            type: 'H100-80GB',
            memoryMiB: 81559,
            vendor: 'sim',
            replica: null,
          },
        ],
        gpuTotal: 2,
        gpuFree: 1,
        labels: { zone: 'a', sim: 'true' },
      },
    ]);
    expect(out).toBe(
      'NAME    STATE   GPUS   TYPE        LABELS\nlocal   Ready   1/2    H100-80GB   sim=true,zone=a\n',
    );
    expect(formatLabels({})).toBe('<none>');
  });
});

describe('describeDeployment', () => {
  const detail: DeploymentDetail = {
    spec: {
      name: 'team-a-llama-8b',
      replicas: 2,
      engine: { name: 'sim', args: {} },
      tenant: 'team-a',
      model: 'llama-3.1-8b',
      resources: { gpus: 1, gpuType: 'H100-80GB' },
    },
    summary,
    replicas: [
      {
        id: 'r-1',
        index: 1,
        state: 'Starting',
        node: null,
        gpus: [],
        port: null,
        pid: null,
        restarts: 2,
        startedAt: null,
        lastError: 'exit code 1:\nCUDA out of memory',
      },
      {
        id: 'r-0',
        index: 0,
        state: 'Ready',
        node: 'local',
        gpus: [0, 1],
        port: 9001,
        pid: 4242,
        restarts: 0,
        startedAt: ago(60),
        lastError: null,
      },
    ],
    events: [
      {
        time: ago(50),
        type: 'Normal',
        reason: 'ReplicaReady',
        message: 'replica 0 ready',
        replica: 0,
      },
      { time: ago(200), type: 'Normal', reason: 'Scheduled', message: 'placed' },
      { time: ago(10), type: 'Warning', reason: 'BackOff', message: 'crashed', replica: 1 },
    ],
  };

  it('renders the summary, spec, replicas and events', () => {
    const out = describeDeployment(detail, NOW);
    expect(out).toContain('Name:        team-a-llama-8b');
    expect(out).toContain('Replicas:    2 desired / 1 ready');
    expect(out).toContain('Resources:   1x H100-80GB per replica');
    expect(out).toContain(
      'Spec:\n  name: team-a-llama-8b\n  replicas: 2\n  engine:\n    name: sim\n    args: {}\n  tenant: team-a\n',
    );
    const lines = out.split('\n');
    const header = lines.findIndex((l) => l.includes('INDEX') && l.includes('LAST-ERROR'));
    expect(header).toBeGreaterThan(0);
    expect(lines[header + 1]).toMatch(
      /^ {2}0\s+r-0\s+Ready\s+local\s+0,1\s+9001\s+4242\s+0\s+60s\s+-$/,
    );
    expect(lines[header + 2]).toMatch(
      /^ {2}1\s+r-1\s+Starting\s+-\s+-\s+-\s+-\s+2\s+-\s+exit code 1: CUDA out of memory$/,
    );
    const ev = lines.findIndex((l) => /AGE\s+TYPE\s+REASON\s+REPLICA\s+MESSAGE/.test(l));
    expect(lines.slice(ev + 1, ev + 4).map((l) => l.trim().split(/\s+/)[2])).toEqual([
      'Scheduled',
      'ReplicaReady',
      'BackOff',
    ]);
  });

  it('keeps the most recent events', () => {
    const events = Array.from({ length: 30 }, (_, i) => ({
      time: ago(100 - i),
      type: 'Normal' as const,
      reason: `R${i}`,
      message: '',
    }));
    const recent = recentEvents(events, 5);
    expect(recent.map((e) => e.reason)).toEqual(['R25', 'R26', 'R27', 'R28', 'R29']);
  });
});
