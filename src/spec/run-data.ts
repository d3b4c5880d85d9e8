// Checks a TrainingRun as plain data (whichever parser produced it): the schema with its
// defaults, runctl.yaml's defaults, then the checks beyond the schema. Problems come back without
// source positions; the caller places them.
import { checkRun } from './checks.js';
import type { CodePathChecker } from './code-path.js';
import { formatPath, isPrefix } from './field-path.js';
import type { Problem } from './problem.js';
import { schemaProblems, type SourceOf } from './schema-messages.js';
import { readSchema, TRAINING_RUN_SCHEMA_FILE } from './schemas.js';
import { API_VERSION, KIND, type ProjectConfig, type TrainingRun } from './types.js';
import { trainingRunValidator } from './validators.js';

export interface RunDataContext {
  project: ProjectConfig;
  codePaths: CodePathChecker;
  /** The text a field's scalar was written as, when the caller has the source (advice quotes it). */
  sourceOf?: SourceOf;
}

export interface RunDataResult {
  /** The run with every default filled in, when there is no error. */
  run?: TrainingRun;
  problems: Problem[];
  /** metadata.name when it is usable for finding duplicates (even if the run is invalid). */
  name?: string;
}

const NAME = /^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?$/;

/** Validates `data` in place (defaults are written into it). */
export function checkRunData(data: unknown, ctx: RunDataContext): RunDataResult {
  const root = asObject(data);
  const name = nameOf(root);
  // Before the schema fills in defaults: which resources the file itself asks for.
  const explicitResourceKeys = new Set(Object.keys(asObject(asObject(root?.spec)?.resources) ?? {}));

  const validate = trainingRunValidator();
  const schemaValid = validate(data);
  const { problems, suggestedPaths } = schemaProblems(validate.errors ?? [], data, readSchema(TRAINING_RUN_SCHEMA_FILE), ctx.sourceOf);
  // A document of another kind (or version) would fail every other check too; say only that.
  const identity = problems.filter((p) => p.path.length === 1 && (p.path[0] === 'apiVersion' || p.path[0] === 'kind'));
  if (root && identity.length > 0) return { problems: identity, name };
  if (!root) return { problems, name };

  applyProjectDefaults(root, ctx.project);
  const schemaPaths = problems.map((p) => p.path);
  for (const problem of checkRun({ data: root, explicitResourceKeys, codePaths: ctx.codePaths })) {
    // A field the schema already rejected (or a field an unknown-field error suggests) is not news.
    if (schemaPaths.some((p) => isPrefix(p, problem.path))) continue;
    if (suggestedPaths.has(formatPath(problem.path))) continue;
    problems.push(problem);
  }
  const valid = schemaValid && !problems.some((p) => p.severity === 'error');
  return { run: valid ? (root as unknown as TrainingRun) : undefined, problems, name };
}

function nameOf(root: Record<string, unknown> | undefined): string | undefined {
  const value = asObject(root?.metadata)?.name;
  if (typeof value !== 'string' || !NAME.test(value) || value.length > 63) return undefined;
  return root?.apiVersion === API_VERSION && root?.kind === KIND ? value : undefined;
}

function asObject(value: unknown): Record<string, unknown> | undefined {
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
}

/**
 * runctl.yaml's defaults fill what an aws run leaves out (region, s3 storage, instance profile);
 * a local run only takes a file:/// storage default. Fields the spec sets always win.
 */
function applyProjectDefaults(root: Record<string, unknown>, project: ProjectConfig): void {
  const spec = asObject(root.spec);
  if (!spec) return;
  const resources = asObject(spec.resources);
  const checkpoints = asObject(spec.checkpoints);
  const defaults = project.defaults ?? {};
  if (spec.provider === 'aws') {
    if (resources && resources.region === undefined && defaults.region) resources.region = defaults.region;
    if (resources && resources.iamInstanceProfile === undefined && defaults.iamInstanceProfile) {
      resources.iamInstanceProfile = defaults.iamInstanceProfile;
    }
    if (checkpoints && checkpoints.storage === undefined && defaults.storage?.startsWith('s3://')) {
      checkpoints.storage = defaults.storage;
    }
  } else if (spec.provider === 'local') {
    if (checkpoints && checkpoints.storage === undefined && defaults.storage?.startsWith('file:///')) {
      checkpoints.storage = defaults.storage;
    }
  }
}
