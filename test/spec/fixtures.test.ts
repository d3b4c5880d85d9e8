// Every invalid fixture holds one mistake and says, in `# expect:` header lines, exactly which
// diagnostics it must produce: line:column, severity, field path and message. Loading the whole
// folder at once also checks run names across files.
import { readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { isUtf8 } from 'node:buffer';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { formatDiagnostic } from '../../src/spec/diagnostics.js';
import { loadRuns } from '../../src/spec/load.js';
import { MAX_SPEC_BYTES } from '../../src/spec/source.js';
import { FIXTURES, loadFixtures, localSpec, NO_PROJECT, shown, tempDir, tempRepo } from './helpers.js';

const INVALID = path.join(FIXTURES, 'invalid');

/** Files that cannot carry a comment. */
const HEADERLESS: Record<string, string[]> = {
  'empty.yaml': ['1:1 error file is empty; expected a TrainingRun document'],
};

function expectations(file: string): string[] {
  const name = path.basename(file);
  if (HEADERLESS[name]) return HEADERLESS[name];
  const bytes = readFileSync(file);
  const text =
    bytes[0] === 0xff && bytes[1] === 0xfe
      ? bytes.subarray(2).toString('utf16le')
      : bytes.toString(isUtf8(bytes) ? 'utf8' : 'latin1');
  const dir = shown(INVALID);
  return [...text.matchAll(/^# expect: (.*)$/gm)].map((m) => (m[1] as string).replaceAll('test/fixtures/invalid/', `${dir}/`));
}

const files = readdirSync(INVALID)
  .filter((f) => !f.startsWith('.'))
  .sort()
  .map((f) => path.join(INVALID, f));

describe('invalid fixtures', async () => {
  const result = await loadFixtures([INVALID]);

  it('holds at least 60 specs, each expecting at least one diagnostic', () => {
    expect(files.length).toBeGreaterThanOrEqual(60);
    for (const file of files) expect(expectations(file), path.basename(file)).not.toHaveLength(0);
  });

  it.each(files.map((f) => [path.basename(f), f]))('%s', (_name, file) => {
    const actual = result.diagnostics.filter((d) => d.file === shown(file)).map(formatDiagnostic);
    const expected = expectations(file).map((e) => `${shown(file)}:${e}`);
    expect(actual).toEqual(expected);
    for (const d of result.diagnostics.filter((x) => x.file === shown(file))) {
      expect(d.line).toBeGreaterThanOrEqual(1);
      expect(d.column).toBeGreaterThanOrEqual(1);
    }
  });

  it('returns only valid documents as runs', () => {
    // The first document of multi-doc-second-invalid.yaml is valid on its own; every other
    // fixture's only document has a mistake.
    expect(result.runs.map((r) => [r.file, r.documentIndex, r.run.metadata.name])).toEqual([
      [shown(path.join(INVALID, 'multi-doc-second-invalid.yaml')), 0, 'multi-doc-first'],
    ]);
  });

  it('covers every check the issue lists', () => {
    const names = new Set(files.map((f) => path.basename(f, '.yaml')));
    const checks = {
      'YAML syntax': ['syntax-unclosed-flow', 'syntax-bad-indent', 'syntax-tab-indent'],
      'duplicate keys': ['duplicate-key', 'duplicate-key-nested'],
      'duplicate run names': ['duplicate-name-a', 'duplicate-name-b'],
      'DNS-1123 names': ['name-uppercase', 'name-too-long', 'name-trailing-dash'],
      durations: ['duration-words', 'duration-number', 'duration-zero', 'duration-too-long', 'duration-too-short', 'grace-too-long'],
      's3:// URIs': ['storage-bucket-uppercase', 'storage-no-scheme', 'storage-file-two-slashes'],
      'instance types': ['instance-type-dash', 'instance-type-duplicate', 'instance-types-scalar'],
      'code.path': ['code-path-missing', 'code-path-absolute', 'code-path-dotdot', 'code-path-file'],
      'aws requirements': ['aws-missing-region', 'aws-missing-storage', 'aws-file-storage', 'aws-missing-image', 'aws-missing-profile', 'aws-no-instance-types'],
      'maxSpotPrice needs spot': ['max-spot-price-on-demand'],
      'prelaunchOnRebalance needs prelaunch': ['prelaunch-on-rebalance-prelaunch-false', 'prelaunch-on-rebalance-on-demand'],
      secrets: ['secret-plaintext', 'secret-number', 'secret-bad-ref'],
      'bad files': ['empty', 'comments-only', 'binary', 'latin1', 'utf16'],
      'alias bombs and nesting': ['alias-bomb', 'deep-nesting'],
      'unknown fields': ['unknown-field-typo', 'unknown-field-misplaced', 'unknown-field-top', 'unknown-field-no-match'],
      enums: ['market-typo', 'provider-enum', 'signal-enum', 'signal-scope-enum'],
    };
    for (const [check, fixtures] of Object.entries(checks)) {
      for (const fixture of fixtures) expect(names.has(fixture), `${check}: ${fixture}`).toBe(true);
    }
  });
});

describe('valid fixtures', () => {
  it('load with no errors, every document a run', async () => {
    const result = await loadFixtures([path.join(FIXTURES, 'valid')]);
    expect(result.diagnostics.filter((d) => d.severity === 'error')).toEqual([]);
    expect(result.runs.map((r) => r.run.metadata.name).sort()).toEqual([
      'anchors',
      'local-with-warnings',
      'minimal-local',
      'prelaunch-spot-default',
      'resnet50-baseline',
      'setup-cache',
      'sweep-lr-0001',
      'sweep-lr-0003',
    ]);
    const warnings = result.diagnostics.map(formatDiagnostic);
    const file = shown(path.join(FIXTURES, 'valid/local-with-warnings.yaml'));
    expect(warnings).toEqual([
      `${file}:11:5 warning spec.env.WANDB_API_KEY: looks like a credential in plain text; put it in SSM and reference it from spec.secrets (ssm:/…)`,
      `${file}:13:5 warning spec.resources.instanceTypes: is ignored by provider local`,
    ]);
  });

  it('fill in every default the schema declares', async () => {
    const { runs } = await loadFixtures([path.join(FIXTURES, 'valid/minimal-local.yaml')]);
    expect(runs[0]?.run).toEqual({
      apiVersion: 'runctl.dev/v1alpha1',
      kind: 'TrainingRun',
      metadata: { name: 'minimal-local', labels: {} },
      spec: {
        provider: 'local',
        code: { path: './test/fixtures/code/trainer', exclude: [] },
        run: 'python3 train.py',
        env: {},
        secrets: {},
        resources: { instanceTypes: [], market: 'spot', availabilityZones: [], rootVolumeGiB: 100, securityGroupIds: [] },
        checkpoints: { dir: '/opt/runctl/checkpoints', syncInterval: '5m', keep: 3, signal: 'SIGTERM', signalScope: 'main', gracePeriod: '90s' },
        recovery: { maxInterruptions: 20, maxRetriesOnError: 1, seedFromPreviousGeneration: false, prelaunchOnRebalance: false },
        timeouts: { provisioning: '15m', installing: '30m', training: '48h' },
        budget: {},
        suspend: false,
      },
    });
  });

  it('number documents by their place in the file, counting empty ones', async () => {
    const { runs } = await loadFixtures([path.join(FIXTURES, 'valid/multi-doc.yml')]);
    expect(runs.map((r) => [r.run.metadata.name, r.documentIndex])).toEqual([
      ['sweep-lr-0001', 1],
      ['sweep-lr-0003', 2],
    ]);
  });
});

describe('cases built at test time', () => {
  it('refuses a file over 1 MiB without reading it', async () => {
    const repo = tempRepo();
    const file = repo.write('runs/huge.yaml', localSpec('huge', `# ${'x'.repeat(MAX_SPEC_BYTES)}\n`));
    const { diagnostics, runs } = await loadRuns([file], { repoRoot: repo.root, project: NO_PROJECT });
    expect(runs).toEqual([]);
    expect(diagnostics.map(formatDiagnostic)).toEqual([`${shown(file)}:1:1 error file is 1.0 MiB; spec files are limited to 1 MiB`]);
  });

  it('refuses a code.path that leaves the repository through a symlink', async () => {
    const repo = tempRepo();
    const outside = tempDir('runctl-outside-');
    writeFileSync(path.join(outside, 'secrets.txt'), 'not yours');
    symlinkSync(outside, path.join(repo.root, 'escape'));
    const file = repo.write('runs/escape.yaml', localSpec('escape').replace('./code', './escape'));
    const { diagnostics } = await loadRuns([file], { repoRoot: repo.root, project: NO_PROJECT });
    expect(diagnostics.map(formatDiagnostic)).toEqual([
      `${shown(file)}:7:16 error spec.code.path: resolves outside the repository through a symlink (escape)`,
    ]);
  });

  it('accepts a code.path through a symlink that stays inside the repository', async () => {
    const repo = tempRepo();
    symlinkSync(path.join(repo.root, 'code'), path.join(repo.root, 'alias'));
    const file = repo.write('runs/inside.yaml', localSpec('inside').replace('./code', './alias'));
    const { diagnostics, runs } = await loadRuns([file], { repoRoot: repo.root, project: NO_PROJECT });
    expect(diagnostics).toEqual([]);
    expect(runs).toHaveLength(1);
  });
});
