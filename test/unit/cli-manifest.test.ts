import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { formatManifestIssue, parseDeploymentManifest } from '../../src/cli/manifest.js';

describe('parseDeploymentManifest', () => {
  it('parses several documents separated by ---, skipping empty ones', () => {
    const text = [
      '# two deployments',
      'name: a',
      'replicas: 1',
      '---',
      '# only a comment',
      '---',
      'name: b',
      'resources: {gpus: 2, gpuType: H100-80GB}',
      '---',
      '',
    ].join('\n');
    const { documents, issues } = parseDeploymentManifest(text);
    expect(issues).toEqual([]);
    expect(documents.map((d) => [d.index, d.name, d.line])).toEqual([
      [1, 'a', 2],
      [3, 'b', 7],
    ]);
    expect(documents[1]!.spec).toEqual({
      name: 'b',
      resources: { gpus: 2, gpuType: 'H100-80GB' },
    });
  });

  it('parses the example spec', () => {
    const text = readFileSync(new URL('../../examples/deployment.yaml', import.meta.url), 'utf8');
    const { documents, issues } = parseDeploymentManifest(text);
    expect(issues).toEqual([]);
    expect(documents).toHaveLength(1);
    expect(documents[0]!.spec).toEqual({
      name: 'team-a-llama-8b',
      tenant: 'demo',
      model: 'llama-3.1-8b',
      engine: {
        name: 'sim',
        args: { maxNumSeqs: 256, maxNumBatchedTokens: 8192, gpuMemoryUtilization: 0.9 },
      },
      replicas: 2,
      resources: { gpus: 1, gpuType: 'H100-80GB' },
    });
  });

  it('reports syntax errors with line and column and returns no documents for that one', () => {
    const text = ['name: ok', '---', 'name: bad', 'engine: [sim', 'replicas: 2', ''].join('\n');
    const { documents, issues } = parseDeploymentManifest(text);
    expect(documents.map((d) => d.name)).toEqual(['ok']);
    expect(issues.length).toBeGreaterThan(0);
    expect(issues[0]!.index).toBe(2);
    expect(issues[0]!.line).toBeGreaterThanOrEqual(4);
    expect(issues[0]!.column).toBeGreaterThanOrEqual(1);
  });

  it('reports duplicate keys at their line', () => {
    const { issues } = parseDeploymentManifest('name: a\nreplicas: 1\nreplicas: 2\n');
    expect(issues).toHaveLength(1);
    expect(issues[0]!.line).toBe(3);
    expect(issues[0]!.message).toMatch(/unique/i);
  });

  it('requires a mapping with a string name', () => {
    const text = ['- a', '- b', '---', 'model: x', '---', 'name: 3', ''].join('\n');
    const { documents, issues } = parseDeploymentManifest(text);
    expect(documents).toEqual([]);
    expect(issues.map((i) => [i.index, i.line])).toEqual([
      [1, 1],
      [2, 4],
      [3, 6],
    ]);
    expect(issues[0]!.message).toContain('mapping');
    expect(issues[1]!.message).toContain('missing required field `name`');
    expect(issues[2]!.message).toContain('non-empty string');
  });

  it('rejects the same name twice', () => {
    const { issues } = parseDeploymentManifest('name: a\n---\nname: a\n');
    expect(issues).toHaveLength(1);
    expect(issues[0]!.message).toContain('document 1');
  });

  it('rejects empty input', () => {
    expect(parseDeploymentManifest('').issues).toHaveLength(1);
    expect(parseDeploymentManifest('# nothing\n---\n').issues[0]!.message).toContain('empty');
  });
});

describe('formatManifestIssue', () => {
  it('prints file:line:col and the document', () => {
    expect(
      formatManifestIssue('d.yaml', { index: 2, line: 4, column: 9, message: 'bad indent' }),
    ).toBe('d.yaml:4:9: document 2: bad indent');
    expect(formatManifestIssue('<stdin>', { index: 0, message: 'empty' })).toBe('<stdin>: empty');
  });
});
