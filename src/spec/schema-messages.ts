// Turns ajv's errors into messages a person can act on: what is wrong, what would be valid, what
// was found, and the likely intended value. Secret references are never quoted back.
import type { ErrorObject } from 'ajv';
import { clockDurations, suggestDuration } from './duration.js';
import { formatPath, pointerSegments, type Segment } from './field-path.js';
import { KNOWN_REGIONS } from './known-values.js';
import { describeValue, error, isSecretPath, kindOf, type Problem } from './problem.js';
import type { JsonSchema } from './schemas.js';
import { closestMatch } from './suggest.js';

/** Kinds of string checked by a pattern, named after the schema's $defs. */
const PATTERN_KINDS = [
  'duration',
  'dnsLabel',
  'labelKey',
  'envName',
  'ssmRef',
  'instanceType',
  'region',
  'zone',
  'image',
  'instanceProfile',
  'subnetId',
  'securityGroupId',
  'absolutePath',
  'storageUri',
  's3Uri',
  'awsProfile',
] as const;
export type PatternKind = (typeof PATTERN_KINDS)[number];
export const MESSAGE_KINDS: readonly string[] = PATTERN_KINDS;

/** What to add after "is required" for fields people leave out. */
const REQUIRED_HINTS: Record<string, string> = {
  apiVersion: 'add apiVersion: runctl.dev/v1alpha1',
  kind: 'add kind: TrainingRun',
  metadata: 'add metadata: {name: …} with a DNS-1123 run name',
  spec: 'add spec: with provider, code and run',
  'metadata.name': 'a DNS-1123 label such as resnet50-baseline',
  'spec.provider': 'aws or local',
  'spec.code': 'code: {path: ./your/project}, relative to the repository root',
  'spec.code.path': 'the directory to ship, relative to the repository root',
  'spec.run': 'the shell command that trains',
  'spec.rehearsal.interruptAfter': 'a duration such as 10m',
  'spec.setup.run': 'the shell command that installs, e.g. pip install -r requirements.txt',
  'spec.setup.cache.paths': 'the folders setup creates, relative to code.path, e.g. [.venv]',
  'spec.setup.cache.key': 'the files whose content decides what setup builds, e.g. [requirements.txt]',
};

export interface SchemaProblems {
  problems: Problem[];
  /** Fields that unknown-field errors suggest ("did you mean"): a missing one is a consequence, not news. */
  suggestedPaths: Set<string>;
}

/** The text a field's scalar was written as in the source (`3.10`, `0x1F`, `~`), when known. */
export type SourceOf = (path: readonly Segment[]) => string | undefined;

export function schemaProblems(errors: readonly ErrorObject[], data: unknown, root: JsonSchema, sourceOf: SourceOf = () => undefined): SchemaProblems {
  const problems: Problem[] = [];
  const suggestedPaths = new Set<string>();
  const seen = new Set<string>();
  const missing = new Set<Problem>();
  for (const err of errors) {
    if (err.keyword === 'propertyNames') continue; // reported through the inner error, which names the key
    const problem = toProblem(err, data, root, suggestedPaths, sourceOf);
    const key = `${formatPath(problem.path)}\u0000${problem.message}`;
    if (seen.has(key)) continue;
    seen.add(key);
    problems.push(problem);
    if (err.keyword === 'required') missing.add(problem);
  }
  // "metdata: unknown field (did you mean metadata?)" already explains why metadata is missing.
  const explained = problems.filter((p) => !(missing.has(p) && suggestedPaths.has(formatPath(p.path))));
  return { problems: explained, suggestedPaths };
}

function valueAt(data: unknown, path: readonly Segment[]): unknown {
  let node = data;
  for (const segment of path) {
    if (node === null || typeof node !== 'object') return undefined;
    node = (node as Record<string | number, unknown>)[segment];
  }
  return node;
}

function patternKind(schemaPath: string): PatternKind | undefined {
  const m = /^#\/\$defs\/([^/]+)\//.exec(schemaPath);
  return m && (PATTERN_KINDS as readonly string[]).includes(m[1] as string) ? (m[1] as PatternKind) : undefined;
}

/** `notifications[i].url` (in a run's spec or runctl.yaml): messages never quote it. */
function isWebhookUrlPath(path: readonly Segment[]): boolean {
  return path.length >= 3 && path[path.length - 1] === 'url' && path[path.length - 3] === 'notifications';
}

function toProblem(err: ErrorObject, data: unknown, root: JsonSchema, suggestedPaths: Set<string>, sourceOf: SourceOf): Problem {
  const base = pointerSegments(err.instancePath, data);
  const propertyName = (err as ErrorObject & { propertyName?: string }).propertyName;
  if (propertyName !== undefined) return propertyNameProblem(err, [...base, propertyName]);
  const value = valueAt(data, base);
  const secret = isSecretPath(base);
  const kind = patternKind(err.schemaPath);
  const params = err.params as Record<string, unknown>;
  switch (err.keyword) {
    case 'additionalProperties':
      return unknownField(base, String(params.additionalProperty), root, suggestedPaths);
    case 'required': {
      const path = [...base, String(params.missingProperty)];
      const hint = REQUIRED_HINTS[formatPath(path)];
      return error(path, hint ? `is required: ${hint}` : 'is required');
    }
    case 'type':
      return error(base, typeMessage(base, String(params.type), value, secret, kind, secret ? undefined : sourceOf(base)));
    case 'enum': {
      const allowed = (params.allowedValues as unknown[]).map(String);
      const suggestion = typeof value === 'string' ? closestMatch(value, allowed) : undefined;
      const got = `got ${describeValue(value)}${suggestion ? `; did you mean "${suggestion}"?` : ''}`;
      return error(base, `must be one of ${allowed.join(', ')} (${got})`);
    }
    case 'const':
      return error(base, `must be ${JSON.stringify(params.allowedValue)} (got ${describeValue(value)})`);
    case 'pattern':
      if (isWebhookUrlPath(base)) return error(base, 'must be an http:// or https:// URL without spaces (value not shown: a webhook URL is often a credential)');
      return error(base, kind ? patternMessage(kind, value, secret) : `has the wrong form (got ${describeValue(value)})`);
    case 'minLength':
      return error(base, 'must not be empty');
    case 'maxLength':
      return error(base, `must be at most ${params.limit} characters (got ${typeof value === 'string' ? [...value].length : '?'})`);
    case 'minimum':
      return error(base, `must be at least ${params.limit} (got ${describeValue(value)})`);
    case 'maximum':
      return error(base, `must be at most ${params.limit} (got ${describeValue(value)})`);
    case 'exclusiveMinimum':
      return error(base, `must be greater than ${params.limit} (got ${describeValue(value)})`);
    case 'minItems':
      return error(base, `must list at least ${params.limit} item${params.limit === 1 ? '' : 's'}${formatPath(base).startsWith('spec.setup.cache') ? '; leave out cache to run setup on every attempt' : ''}`);
    case 'maxItems':
      return error(base, `must list at most ${params.limit} items (got ${Array.isArray(value) ? value.length : '?'})`);
    case 'uniqueItems': {
      const later = Math.max(Number(params.i), Number(params.j));
      const earlier = Math.min(Number(params.i), Number(params.j));
      const item = Array.isArray(value) ? value[later] : undefined;
      return error([...base, later], `repeats ${describeValue(item)} (already item ${earlier}); list each value once`);
    }
    default:
      return error(base, err.message ?? `fails the ${err.keyword} check`);
  }
}

function propertyNameProblem(err: ErrorObject, path: Segment[]): Problem {
  const name = String(path[path.length - 1]);
  const kind = patternKind(err.schemaPath);
  if (err.keyword === 'maxLength') {
    return error(path, `is too long for a ${kind === 'labelKey' ? 'label key' : 'key'}: at most ${(err.params as { limit: number }).limit} characters (got ${[...name].length})`, 'key');
  }
  if (kind === 'envName') {
    const fixed = name.replace(/[^A-Za-z0-9_]/g, '_').replace(/^([0-9])/, '_$1');
    const hint = fixed !== name && fixed.replace(/_/g, '') !== '' ? `; did you mean "${fixed}"?` : '';
    return error(path, `is not a valid environment variable name: use letters, digits and '_', not starting with a digit${hint}`, 'key');
  }
  if (kind === 'labelKey') {
    return error(path, `is not a valid label key: use letters, digits, '.', '_', '-' and '/', starting and ending with a letter or digit`, 'key');
  }
  return error(path, `is not a valid key`, 'key');
}

/** Names of the properties a schema node allows, and where else in the schema each name is a field. */
function schemaAt(root: JsonSchema, path: readonly Segment[]): JsonSchema | undefined {
  let node: JsonSchema | undefined = deref(root, root);
  for (const segment of path) {
    if (!node) return undefined;
    const properties = node.properties as Record<string, JsonSchema> | undefined;
    if (typeof segment === 'string' && properties?.[segment]) node = deref(root, properties[segment]);
    else if (typeof segment === 'number' && node.items && typeof node.items === 'object') node = deref(root, node.items as JsonSchema);
    else if (node.additionalProperties && typeof node.additionalProperties === 'object') {
      node = deref(root, node.additionalProperties as JsonSchema);
    } else return undefined;
  }
  return node;
}

function deref(root: JsonSchema, node: JsonSchema): JsonSchema {
  const ref = node.$ref;
  if (typeof ref !== 'string' || !ref.startsWith('#/$defs/')) return node;
  const target = (root.$defs as Record<string, JsonSchema>)[ref.slice('#/$defs/'.length)];
  return target ? { ...target, ...node } : node;
}

const fieldIndexCache = new WeakMap<JsonSchema, Map<string, string[]>>();

/** Every property name in the schema, with the paths of the objects that define it. */
function fieldIndex(root: JsonSchema): Map<string, string[]> {
  let index = fieldIndexCache.get(root);
  if (index) return index;
  index = new Map();
  const visit = (node: JsonSchema, path: Segment[]): void => {
    const properties = node.properties as Record<string, JsonSchema> | undefined;
    if (!properties) return;
    for (const [name, child] of Object.entries(properties)) {
      const owners = index!.get(name) ?? [];
      owners.push(formatPath(path));
      index!.set(name, owners);
      visit(deref(root, child), [...path, name]);
    }
  };
  visit(root, []);
  fieldIndexCache.set(root, index);
  return index;
}

function unknownField(parent: Segment[], name: string, root: JsonSchema, suggestedPaths: Set<string>): Problem {
  const path = [...parent, name];
  if (name === '<<') {
    return error(path, 'YAML merge keys (<<) are not supported; write the fields out, or anchor and alias a whole value', 'key');
  }
  const allowed = Object.keys((schemaAt(root, parent)?.properties as Record<string, unknown> | undefined) ?? {});
  const suggestion = closestMatch(name, allowed);
  if (suggestion) {
    suggestedPaths.add(formatPath([...parent, suggestion]));
    return error(path, `unknown field "${name}" (did you mean "${suggestion}"?)`, 'key');
  }
  const elsewhere = (fieldIndex(root).get(name) ?? []).filter((owner) => owner !== formatPath(parent));
  if (elsewhere.length === 1 && elsewhere[0]) {
    return error(path, `unknown field "${name}" here (it belongs under ${elsewhere[0]})`, 'key');
  }
  const where = allowed.length ? `; allowed: ${allowed.join(', ')}` : '';
  return error(path, `unknown field "${name}"${where}`, 'key');
}

const TYPE_NAMES: Record<string, string> = {
  string: 'a string',
  object: 'a mapping',
  array: 'a list',
  boolean: 'true or false',
  number: 'a number',
  integer: 'a whole number',
};

/**
 * "must be a string (got …; quote it: …)". Advice quotes the text as written (`source`), not the
 * value YAML made of it: `3.10` reads as the number 3.1, so quoting the value would change it
 * (issue 10, input 9). When the two differ, the message says what YAML read.
 */
function typeMessage(path: readonly Segment[], expected: string, value: unknown, secret: boolean, kind: PatternKind | undefined, source: string | undefined): string {
  if (kind === 'duration' && typeof value === 'number') {
    return `must be a duration like 90s, 15m or 48h (got the number ${value}; add a unit, e.g. "${value}s")`;
  }
  if (kind === 'ssmRef') return `must be a reference like ssm:/team/hf-token (got ${kindOf(value)}; value not shown)`;
  // A field of more than one form (spec.setup: a command or a mapping) lists each.
  const want = expected.split(',').map((t) => TYPE_NAMES[t] ?? t).join(' or ');
  if (path.length === 0) return `the document must be a mapping with apiVersion, kind, metadata and spec (got ${kindOf(value)})`;
  if (secret) return `must be ${want} (got ${kindOf(value)}; value not shown)`;
  const written = source !== undefined && source.trim() !== '' ? source.trim() : undefined;
  let got = describeValue(value);
  if (written !== undefined && written !== String(value) && (typeof value === 'number' || typeof value === 'boolean' || value === null)) {
    got = `${value === null ? 'an empty value' : `the ${kindOf(value).replace(/^an? /, '')} ${String(value)}`}, which YAML reads from ${written}`;
  }
  let hint = '';
  if (expected === 'string' && (typeof value === 'number' || typeof value === 'boolean')) hint = `; quote it: ${JSON.stringify(written ?? String(value))}`;
  else if (expected === 'string' && value === null && written !== undefined) hint = `; quote it: ${JSON.stringify(written)}, or remove the field`;
  else if (expected === 'boolean' && typeof value === 'string' && /^(yes|y|on|true)$/i.test(value)) hint = '; did you mean true?';
  else if (expected === 'boolean' && typeof value === 'string' && /^(no|n|off|false)$/i.test(value)) hint = '; did you mean false?';
  else if ((expected === 'number' || expected === 'integer') && typeof value === 'string' && value.trim() !== '' && Number.isFinite(Number(value))) {
    hint = '; remove the quotes';
  } else if (expected === 'array' && (typeof value === 'string' || typeof value === 'number')) hint = `; write a list: [${typeof value === 'number' ? (written ?? value) : value}]`;
  else if (expected === 'object' && typeof value === 'string' && formatPath(path) === 'spec.code') hint = `; write {path: ${value}}`;
  else if (formatPath(path) === 'spec.setup' && Array.isArray(value)) hint = '; join the commands into one string with &&, or write {run: …, cache: …}';
  return `must be ${want} (got ${got}${hint})`;
}

function didYouMean(value: string, suggestion: string | undefined): string {
  return suggestion && suggestion !== value ? `; did you mean "${suggestion}"?` : '';
}

function patternMessage(kind: PatternKind, value: unknown, secret: boolean): string {
  if (secret || kind === 'ssmRef') {
    return 'must be a reference like ssm:/team/hf-token; plaintext secrets are refused (value not shown)';
  }
  const text = typeof value === 'string' ? value : String(value);
  const got = `got ${describeValue(value)}`;
  switch (kind) {
    case 'duration': {
      const clock = clockDurations(text);
      const hint = /^[0-9]+(\.[0-9]+)?$/.test(text.trim())
        ? `; add a unit, e.g. "${text.trim()}s"`
        : clock.length > 0
          ? `; write ${clock.map((d) => `"${d}"`).join(' or ')}`
          : didYouMean(text, suggestDuration(text));
      return `must be a duration like 90s, 15m or 48h (${got}${hint})`;
    }
    case 'dnsLabel': {
      const fixed = text.toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 63).replace(/-+$/, '');
      return `must be a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a letter or digit (${got}${fixed ? didYouMean(text, fixed) : ''})`;
    }
    case 'instanceType': {
      const fixed = text.trim().toLowerCase().replace(/^([a-z][a-z0-9-]*?)[-_ ]([0-9]*(?:x?large|medium|small|micro|nano|metal)[a-z0-9-]*)$/, '$1.$2');
      const ok = /^[a-z][a-z0-9-]*\.[a-z0-9][a-z0-9-]*$/.test(fixed);
      return `must be an EC2 instance type like g5.xlarge, family.size (${got}${ok ? didYouMean(text, fixed) : ''})`;
    }
    case 'region':
      return `must be an AWS region like us-east-1 (${got}${didYouMean(text, closestMatch(text, KNOWN_REGIONS))})`;
    case 'zone':
      return `must be an availability zone like us-east-1a, a region followed by a letter (${got})`;
    case 'image':
      return `must be an AMI id (ami- and 8 or 17 hex digits) or an SSM parameter path starting with / (${got})`;
    case 'instanceProfile':
      return `must be an IAM instance profile name or ARN (${got})`;
    case 'subnetId':
      return `must be a subnet id like subnet-0123456789abcdef0 (${got})`;
    case 'securityGroupId':
      return `must be a security group id like sg-0123456789abcdef0 (${got})`;
    case 'absolutePath':
      return `must be an absolute path like /opt/runctl/checkpoints (${got})`;
    case 'storageUri':
    case 's3Uri':
      return storageMessage(kind, text, got);
    case 'awsProfile':
      return `must be a profile name from ~/.aws/config: letters, digits, '_', '.', '+', '@' and '-' (${got})`;
    case 'labelKey':
    case 'envName':
      return `has the wrong form (${got})`;
  }
}

function storageMessage(kind: 'storageUri' | 's3Uri', text: string, got: string): string {
  const expected = kind === 's3Uri' ? 's3://bucket/prefix' : 's3://bucket/prefix or file:///absolute/path';
  if (text.startsWith('s3://')) {
    const bucket = text.slice(5).split('/')[0] ?? '';
    const fixed = bucket.toLowerCase().replace(/_/g, '-');
    const fixedUri = `s3://${fixed}${text.slice(5 + bucket.length)}`;
    const valid = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(fixed) && !fixed.includes('..');
    return `must be ${expected}: the bucket name "${bucket}" must be 3-63 lowercase letters, digits, '.' or '-', starting and ending with a letter or digit (${got}${valid ? didYouMean(text, fixedUri) : ''})`;
  }
  if (kind === 'storageUri' && text.startsWith('file://')) {
    return `must be file:///absolute/path, with three slashes (${got})`;
  }
  const rest = text.replace(/^s3:\/*/i, '');
  const guess = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](\/\S*)?$/.test(rest) ? `s3://${rest}` : undefined;
  return `must be ${expected} (${got}${guess ? didYouMean(text, guess) : ''})`;
}
