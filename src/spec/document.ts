// One YAML document through every check: YAML errors, structure, aliases, the schema, project
// defaults, and the checks beyond the schema. Bad input becomes diagnostics, never an exception.
import type { LineCounter } from 'yaml';
import { checkRun } from './checks.js';
import type { CodePathChecker } from './code-path.js';
import type { Diagnostic } from './diagnostics.js';
import { formatPath, isPrefix, type Segment } from './field-path.js';
import type { Problem } from './problem.js';
import { schemaProblems } from './schema-messages.js';
import { readSchema, TRAINING_RUN_SCHEMA_FILE } from './schemas.js';
import { trainingRunValidator } from './validators.js';
import { API_VERSION, KIND, type ProjectConfig, type TrainingRun } from './types.js';
import { findStructureProblems, MAX_ALIAS_COUNT, offsetOf, positionAt, type YamlDocument } from './yaml-document.js';

export interface DocumentContext {
  file: string;
  lineCounter: LineCounter;
  project: ProjectConfig;
  codePaths: CodePathChecker;
}

export interface DocumentResult {
  run?: TrainingRun;
  diagnostics: Diagnostic[];
  /** metadata.name, when it is a usable name (even if the run is invalid), and where it is written. */
  name?: { value: string; position: () => { line: number; column: number } };
}

const NAME = /^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?$/;

export function validateDocument(doc: YamlDocument, ctx: DocumentContext): DocumentResult {
  const diagnostics: Diagnostic[] = [];
  const at = (offset: number, path: readonly Segment[], message: string, severity: Diagnostic['severity'] = 'error'): void => {
    diagnostics.push({ file: ctx.file, ...positionAt(ctx.lineCounter, offset), path: formatPath(path), message, severity });
  };

  for (const warn of doc.warnings) at(warn.pos[0], [], `YAML: ${firstLine(warn.message)}`, 'warning');
  if (doc.errors.length > 0) {
    for (const err of doc.errors) at(err.pos[0], [], `YAML syntax error: ${firstLine(err.message)}`);
    return { diagnostics };
  }

  const structure = findStructureProblems(doc, ctx.lineCounter);
  for (const p of structure.problems) at(p.offset, p.path, p.message);
  if (structure.problems.some((p) => p.fatal)) return { diagnostics };

  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (err) {
    const offset = structure.firstAliasOffset ?? doc.contents?.range[0] ?? 0;
    const message =
      err instanceof ReferenceError && /alias/i.test(err.message)
        ? `YAML aliases expand to too much data (more than ${MAX_ALIAS_COUNT} alias uses); refused as a possible alias bomb`
        : `YAML could not be read: ${firstLine(err instanceof Error ? err.message : String(err))}`;
    at(offset, [], message);
    return { diagnostics };
  }

  const place = (p: Problem): void => at(p.offset ?? offsetOf(doc, p.path, p.anchor), p.path, p.message, p.severity);
  const root = data !== null && typeof data === 'object' && !Array.isArray(data) ? (data as Record<string, unknown>) : undefined;
  const name = nameOf(root, doc, ctx);

  // Before the schema fills in defaults: which resources the file itself asks for.
  const explicitResourceKeys = new Set(Object.keys(asObject(asObject(root?.spec)?.resources) ?? {}));

  // A document of another kind (or version) would fail every other check too; say only that.
  const validate = trainingRunValidator();
  const schemaValid = validate(data);
  const { problems, suggestedPaths } = schemaProblems(validate.errors ?? [], data, readSchema(TRAINING_RUN_SCHEMA_FILE));
  const identity = problems.filter((p) => p.path.length === 1 && (p.path[0] === 'apiVersion' || p.path[0] === 'kind'));
  if (root && identity.length > 0) {
    identity.forEach(place);
    return { diagnostics, name };
  }
  problems.forEach(place);

  if (root) {
    applyProjectDefaults(root, ctx.project);
    const schemaPaths = problems.map((p) => p.path);
    for (const problem of checkRun({ data: root, explicitResourceKeys, codePaths: ctx.codePaths })) {
      // A field the schema already rejected (or a field an unknown-field error suggests) is not news.
      if (schemaPaths.some((p) => isPrefix(p, problem.path))) continue;
      if (suggestedPaths.has(formatPath(problem.path))) continue;
      place(problem);
    }
  }

  const valid = schemaValid && structure.problems.length === 0 && !diagnostics.some((d) => d.severity === 'error');
  return { run: valid ? (root as unknown as TrainingRun) : undefined, diagnostics, name };
}

function firstLine(message: string): string {
  return (message.split('\n')[0] ?? message).trim();
}

function nameOf(root: Record<string, unknown> | undefined, doc: YamlDocument, ctx: DocumentContext): DocumentResult['name'] {
  const metadata = root?.metadata;
  const value = metadata && typeof metadata === 'object' ? (metadata as Record<string, unknown>).name : undefined;
  if (typeof value !== 'string' || !NAME.test(value) || value.length > 63) return undefined;
  if (root?.apiVersion !== API_VERSION || root?.kind !== KIND) return undefined;
  // Only needed when the name turns out to be a duplicate.
  return { value, position: () => positionAt(ctx.lineCounter, offsetOf(doc, ['metadata', 'name'])) };
}

function asObject(value: unknown): Record<string, unknown> | undefined {
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
}

/**
 * runctl.yaml's defaults fill what an aws run leaves out (region, s3 storage, instance profile);
 * a local run only takes a file:/// storage default. Fields the spec sets always win.
 */
function applyProjectDefaults(root: Record<string, unknown>, project: ProjectConfig): void {
  const s = asObject(root.spec);
  if (!s) return;
  const resources = asObject(s.resources);
  const checkpoints = asObject(s.checkpoints);
  const defaults = project.defaults ?? {};
  if (s.provider === 'aws') {
    if (resources && resources.region === undefined && defaults.region) resources.region = defaults.region;
    if (resources && resources.iamInstanceProfile === undefined && defaults.iamInstanceProfile) {
      resources.iamInstanceProfile = defaults.iamInstanceProfile;
    }
    if (checkpoints && checkpoints.storage === undefined && defaults.storage?.startsWith('s3://')) {
      checkpoints.storage = defaults.storage;
    }
  } else if (s.provider === 'local') {
    if (checkpoints && checkpoints.storage === undefined && defaults.storage?.startsWith('file:///')) {
      checkpoints.storage = defaults.storage;
    }
  }
}
