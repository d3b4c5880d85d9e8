// The schema is the public contract and src/spec/types.ts its mirror: the two must list the same
// fields, optional exactly where the types say so, every field described for editors, and the
// precompiled validators must be built from the schema as it is now.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { generateValidatorSource, GENERATED_VALIDATORS_FILE } from '../../src/spec/compile-validators.js';
import { DURATION_PATTERN } from '../../src/spec/duration.js';
import { MESSAGE_KINDS } from '../../src/spec/schema-messages.js';
import { PROJECT_SCHEMA_FILE, readSchema, TRAINING_RUN_SCHEMA_FILE, type JsonSchema } from '../../src/spec/schemas.js';
import type { ProjectConfig, RunSpec, TrainingRun } from '../../src/spec/types.js';
import { projectValidator, trainingRunValidator } from '../../src/spec/validators.js';
import { loadRuns } from '../../src/spec/load.js';
import { REPO_ROOT } from './helpers.js';

type DeepRequired<T> = T extends Array<infer U> ? Array<DeepRequired<U>> : T extends object ? { [K in keyof T]-?: DeepRequired<T[K]> } : T;
type OptionalKeys<T> = { [K in keyof T]-?: object extends Pick<T, K> ? K : never }[keyof T];
type Equal<A, B> = (<X>() => X extends A ? 1 : 2) extends <X>() => X extends B ? 1 : 2 ? true : false;

// Compile-time: the optional fields below are exactly the optional fields of the types.
const optionalSpec: Equal<OptionalKeys<RunSpec>, 'setup' | 'rehearsal' | 'notifications' | 'progress'> = true;
const optionalProgress: Equal<OptionalKeys<NonNullable<RunSpec['progress']>>, 'pattern'> = true;
const optionalResources: Equal<OptionalKeys<RunSpec['resources']>, 'maxSpotPrice' | 'region' | 'image' | 'iamInstanceProfile' | 'subnetId'> = true;
const optionalCheckpoints: Equal<OptionalKeys<RunSpec['checkpoints']>, 'storage'> = true;
const optionalReceiver: Equal<OptionalKeys<NonNullable<RunSpec['notifications']>[number]>, 'url' | 'urlFrom'> = true;
const optionalBudget: Equal<OptionalKeys<RunSpec['budget']>, 'maxCostUSD'> = true;
const optionalDefaults: Equal<OptionalKeys<ProjectConfig['defaults']>, 'region' | 'storage' | 'profile' | 'iamInstanceProfile'> = true;
const optionalProject: Equal<OptionalKeys<ProjectConfig>, 'state' | 'notifications'> = true;
void [optionalProgress, optionalReceiver, optionalSpec, optionalResources, optionalCheckpoints, optionalBudget, optionalDefaults, optionalProject];

/** Every field of TrainingRun, set: the compiler refuses a missing or an extra one. */
const everyField: DeepRequired<TrainingRun> = {
  apiVersion: 'runctl.dev/v1alpha1',
  kind: 'TrainingRun',
  metadata: { name: 'every-field', labels: { team: 'vision' } },
  spec: {
    provider: 'aws',
    code: { path: '.', exclude: ['data/**'], include: ['data/**/*.bin'] },
    setup: { run: 'pip install -r requirements.txt', cache: { paths: ['.venv'], key: ['requirements.txt'] } },
    run: 'python train.py',
    env: { WANDB_MODE: 'offline' },
    secrets: { HF_TOKEN: 'ssm:/team/hf-token' },
    resources: {
      instanceTypes: ['g5.xlarge'],
      market: 'spot',
      maxSpotPrice: 0.6,
      region: 'us-east-1',
      availabilityZones: ['us-east-1a'],
      image: 'ami-0123456789abcdef0',
      rootVolumeGiB: 100,
      iamInstanceProfile: 'runctl-instance',
      subnetId: 'subnet-0123456789abcdef0',
      securityGroupIds: ['sg-0123456789abcdef0'],
    },
    checkpoints: { dir: '/opt/runctl/checkpoints', storage: 's3://my-bucket/runctl', syncInterval: '5m', keep: 3, signal: 'SIGTERM', signalScope: 'main', gracePeriod: '90s' },
    recovery: { maxInterruptions: 20, maxRetriesOnError: 1, seedFromPreviousGeneration: false, prelaunch: true, prelaunchOnRebalance: false },
    timeouts: { provisioning: '15m', installing: '30m', training: '48h', stall: '30m' },
    budget: { maxCostUSD: 250 },
    suspend: false,
    rehearsal: { interruptAfter: '10m' },
    notifications: [
      { url: 'https://example.com/hook', urlFrom: { env: 'SLACK_WEBHOOK_URL' }, format: 'slack', events: ['Interrupted', 'Completed'], timeout: '10s' },
    ],
    progress: { pattern: 'iter (?<step>\\d+): loss (?<loss>[\\d.]+)' },
  },
};

const everyProjectField: DeepRequired<ProjectConfig> = {
  defaults: { region: 'us-east-1', storage: 's3://my-bucket/runctl', profile: 'ml', iamInstanceProfile: 'runctl-instance' },
  state: 's3://my-bucket/runctl-state',
  prune: false,
  notifications: [{ url: 'https://example.com/hook', urlFrom: { env: 'HOOK_URL' }, format: 'generic', events: ['Failed'], timeout: '30s' }],
};

const OPTIONAL_PATHS = [
  'spec.setup',
  'spec.setup.cache',
  'spec.code.include',
  'spec.rehearsal',
  'spec.progress',
  'spec.progress.pattern',
  'spec.resources.maxSpotPrice',
  'spec.resources.region',
  'spec.resources.image',
  'spec.resources.iamInstanceProfile',
  'spec.resources.subnetId',
  'spec.checkpoints.storage',
  'spec.budget.maxCostUSD',
  'spec.recovery.prelaunch',
  'spec.timeouts.stall',
  'spec.notifications',
];
const OPTIONAL_PROJECT_PATHS = ['defaults.region', 'defaults.storage', 'defaults.profile', 'defaults.iamInstanceProfile', 'state', 'notifications'];

function deref(root: JsonSchema, node: JsonSchema): JsonSchema {
  const ref = node.$ref;
  return typeof ref === 'string' ? { ...(root.$defs as Record<string, JsonSchema>)[ref.replace('#/$defs/', '')], ...node } : node;
}

/** Visits every object schema that lists properties, with the matching value of `sample`. */
function walkObjects(root: JsonSchema, visit: (at: string, schema: JsonSchema, value: Record<string, unknown>) => void): (sample: unknown) => void {
  const go = (schema: JsonSchema, value: unknown, at: string): void => {
    const properties = schema.properties as Record<string, JsonSchema> | undefined;
    if (!properties) return;
    visit(at, schema, value as Record<string, unknown>);
    for (const [key, child] of Object.entries(properties)) {
      go(deref(root, child), (value as Record<string, unknown>)[key], at ? `${at}.${key}` : key);
    }
  };
  return (sample) => go(root, sample, '');
}

describe.each([
  ['trainingrun.schema.json', TRAINING_RUN_SCHEMA_FILE, everyField as unknown, OPTIONAL_PATHS, trainingRunValidator],
  ['project.schema.json', PROJECT_SCHEMA_FILE, everyProjectField as unknown, OPTIONAL_PROJECT_PATHS, projectValidator],
] as const)('%s', (_name, file, sample, optionalPaths, validator) => {
  const root = readSchema(file);

  it('is JSON Schema 2020-12', () => {
    expect(root.$schema).toBe('https://json-schema.org/draft/2020-12/schema');
  });

  it('has exactly the fields of the TypeScript types', () => {
    walkObjects(root, (at, schema, value) => {
      expect(Object.keys(schema.properties as object).sort(), at || '(root)').toEqual(Object.keys(value).sort());
    })(sample);
  });

  it('accepts a document with every field set', () => {
    const validate = validator();
    expect(validate(structuredClone(sample)), JSON.stringify(validate.errors)).toBe(true);
  });

  it('makes a field optional (no default, not required) exactly where the types do', () => {
    const optional: string[] = [];
    walkObjects(root, (at, schema) => {
      const required = new Set((schema.required as string[] | undefined) ?? []);
      for (const [key, child] of Object.entries(schema.properties as Record<string, JsonSchema>)) {
        if (!required.has(key) && !('default' in child)) optional.push(at ? `${at}.${key}` : key);
      }
    })(sample);
    expect(optional.sort()).toEqual([...optionalPaths].sort());
  });

  it('describes every field and closes every object', () => {
    const problems: string[] = [];
    const check = (node: JsonSchema, at: string): void => {
      if (typeof node.description !== 'string' || node.description.length < 10) problems.push(`${at}: no description`);
      if (node.type === 'object' && node.additionalProperties === undefined) problems.push(`${at}: additionalProperties not set`);
      if (node.additionalProperties === true) problems.push(`${at}: additionalProperties true`);
      for (const [key, child] of Object.entries((node.properties as Record<string, JsonSchema>) ?? {})) check(child, `${at}.${key}`);
      if (node.items && typeof node.items === 'object') check(node.items as JsonSchema, `${at}[]`);
      if (node.additionalProperties && typeof node.additionalProperties === 'object') check(node.additionalProperties as JsonSchema, `${at}.*`);
    };
    check(root, '(root)');
    for (const [name, def] of Object.entries(root.$defs as Record<string, JsonSchema>)) check(def, `$defs.${name}`);
    expect(problems).toEqual([]);
  });

  it('has a message for every string pattern', () => {
    for (const [name, def] of Object.entries(root.$defs as Record<string, JsonSchema>)) {
      if (def.pattern) expect(MESSAGE_KINDS, name).toContain(name);
    }
  });
});

describe('schema files', () => {
  it('share their string shapes (region, storage, instance profile, notification receivers)', () => {
    const run = readSchema(TRAINING_RUN_SCHEMA_FILE).$defs as Record<string, unknown>;
    const project = readSchema(PROJECT_SCHEMA_FILE).$defs as Record<string, unknown>;
    for (const name of ['region', 'storageUri', 'instanceProfile', 'duration', 'envName', 'notificationReceiver']) expect(project[name], name).toEqual(run[name]);
  });

  it('use the same duration grammar as parseDuration', () => {
    expect((readSchema(TRAINING_RUN_SCHEMA_FILE).$defs as Record<string, JsonSchema>).duration?.pattern).toBe(DURATION_PATTERN);
  });

  it('are compiled into the checked-in standalone validators (regenerate: npx tsx src/spec/compile-validators.ts)', () => {
    expect(readFileSync(GENERATED_VALIDATORS_FILE, 'utf8')).toBe(generateValidatorSource());
  });

  it('accept the quickstart shipped in runs/', async () => {
    const result = await loadRuns([path.join(REPO_ROOT, 'runs/quickstart.yaml')], { repoRoot: REPO_ROOT, project: { defaults: {}, prune: false } });
    expect(result.diagnostics).toEqual([]);
    expect(result.runs.map((r) => r.run.metadata.name)).toEqual(['quickstart']);
  });
});
