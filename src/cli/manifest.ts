// Parsing of `apply -f` input: one or more YAML documents, each a deployment spec.
import { LineCounter, parseAllDocuments } from 'yaml';

export interface DeploymentDocument {
  /** 1-based position of the document in the file. */
  index: number;
  /** 1-based line where the document's content starts. */
  line: number;
  name: string;
  spec: Record<string, unknown>;
}

export interface ManifestIssue {
  /** 1-based document position; 0 when the issue is about the file as a whole. */
  index: number;
  line?: number;
  column?: number;
  message: string;
}

export interface ParsedManifest {
  documents: DeploymentDocument[];
  /** When non-empty, nothing must be sent. */
  issues: ManifestIssue[];
}

/**
 * Parses a multi-document YAML stream into deployment specs. Empty documents (e.g. a trailing
 * `---` or a comments-only document) are skipped. Every syntax error is reported with its line
 * and column; a document that is not a mapping, or has no string `name`, is an issue too; so is
 * a name that appears in two documents.
 */
export function parseDeploymentManifest(text: string): ParsedManifest {
  const lineCounter = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter, prettyErrors: false });
  const documents: DeploymentDocument[] = [];
  const issues: ManifestIssue[] = [];
  const seen = new Map<string, number>();

  docs.forEach((doc, i) => {
    const index = i + 1;
    if (doc.errors.length > 0) {
      for (const e of doc.errors) {
        const pos = lineCounter.linePos(e.pos[0]);
        issues.push({ index, line: pos.line, column: pos.col, message: e.message });
      }
      return;
    }
    const start = doc.contents?.range[0] ?? doc.range[0];
    const line = lineCounter.linePos(start).line;
    let value: unknown;
    try {
      value = doc.toJS({ maxAliasCount: 100 });
    } catch (err) {
      issues.push({ index, line, message: err instanceof Error ? err.message : String(err) });
      return;
    }
    if (value === null || value === undefined) return; // empty document
    if (typeof value !== 'object' || Array.isArray(value)) {
      issues.push({
        index,
        line,
        message: `expected a deployment spec (a mapping with a name), got ${Array.isArray(value) ? 'a list' : typeof value}`,
      });
      return;
    }
    const spec = value as Record<string, unknown>;
    const name = spec.name;
    if (typeof name !== 'string' || name.trim() === '') {
      issues.push({
        index,
        line,
        message:
          name === undefined
            ? 'missing required field `name`'
            : '`name` must be a non-empty string',
      });
      return;
    }
    const first = seen.get(name);
    if (first !== undefined) {
      issues.push({
        index,
        line,
        message: `deployment ${JSON.stringify(name)} is also defined in document ${first}`,
      });
      return;
    }
    seen.set(name, index);
    documents.push({ index, line, name, spec });
  });

  if (issues.length === 0 && documents.length === 0) {
    issues.push({ index: 0, message: 'no deployment specs found (the input is empty)' });
  }
  return { documents, issues };
}

/** `file:line:col: document N: message` (parts that are unknown are left out). */
export function formatManifestIssue(source: string, issue: ManifestIssue): string {
  let where = source;
  if (issue.line !== undefined) where += `:${issue.line}`;
  if (issue.line !== undefined && issue.column !== undefined) where += `:${issue.column}`;
  const doc = issue.index > 0 ? `document ${issue.index}: ` : '';
  return `${where}: ${doc}${issue.message}`;
}
