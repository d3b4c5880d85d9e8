// loadRuns as the controller and the CLI use it: which files it reads, how it names them, what it
// does with runctl.yaml, and that bad input of any size comes back as diagnostics.
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { formatDiagnostic, formatGithubAnnotation } from '../../src/spec/diagnostics.js';
import { findRepoRoot } from '../../src/spec/files.js';
import { loadProjectConfig, loadRuns } from '../../src/spec/load.js';
import { MAX_SPEC_BYTES } from '../../src/spec/source.js';
import { awsSpec, localSpec, NO_PROJECT, shown, tempRepo } from './helpers.js';

describe('finding files', () => {
  it('searches folders recursively for .yaml and .yml, skipping hidden folders, node_modules and other files', async () => {
    const repo = tempRepo();
    repo.write('runs/a.yaml', localSpec('a'));
    repo.write('runs/team/b.yml', localSpec('b'));
    repo.write('runs/team/deeper/c.YAML', localSpec('c'));
    repo.write('runs/.drafts/d.yaml', localSpec('d'));
    repo.write('runs/node_modules/e.yaml', localSpec('e'));
    repo.write('runs/notes.txt', 'not a spec');
    const { runs, files } = await loadRuns([path.join(repo.root, 'runs')], { repoRoot: repo.root, project: NO_PROJECT });
    expect(runs.map((r) => r.run.metadata.name)).toEqual(['a', 'b', 'c']);
    expect(files).toEqual(['runs/a.yaml', 'runs/team/b.yml', 'runs/team/deeper/c.YAML'].map((f) => shown(path.join(repo.root, f))));
  });

  it('reads runs/ at the repository root when given no paths', async () => {
    const repo = tempRepo();
    repo.write('runs/a.yaml', localSpec('a'));
    repo.write('elsewhere/b.yaml', localSpec('b'));
    const { runs } = await loadRuns([], { repoRoot: repo.root, project: NO_PROJECT });
    expect(runs.map((r) => r.run.metadata.name)).toEqual(['a']);
  });

  it('reads a file named explicitly whatever its extension, once even if named twice', async () => {
    const repo = tempRepo();
    const file = repo.write('specs/run.txt', localSpec('txt'));
    const { runs, files } = await loadRuns([file, file, path.dirname(file)], { repoRoot: repo.root, project: NO_PROJECT });
    expect(runs.map((r) => r.run.metadata.name)).toEqual(['txt']);
    expect(files).toHaveLength(1);
  });

  it('does not follow symlinked folders (no cycles)', async () => {
    const repo = tempRepo();
    repo.write('runs/a.yaml', localSpec('a'));
    symlinkSync(path.join(repo.root, 'runs'), path.join(repo.root, 'runs/loop'));
    const { runs } = await loadRuns([path.join(repo.root, 'runs')], { repoRoot: repo.root, project: NO_PROJECT });
    expect(runs.map((r) => r.run.metadata.name)).toEqual(['a']);
  });

  it('reports a path that does not exist as a diagnostic, not an exception', async () => {
    const repo = tempRepo();
    const { diagnostics, runs } = await loadRuns([path.join(repo.root, 'nope')], { repoRoot: repo.root, project: NO_PROJECT });
    expect(runs).toEqual([]);
    expect(diagnostics.map(formatDiagnostic)).toEqual([`${shown(path.join(repo.root, 'nope'))}:1:1 error no such file or directory`]);
  });

  it('finds the repository root from .git or runctl.yaml upwards', () => {
    const repo = tempRepo();
    mkdirSync(path.join(repo.root, 'a/b/c'), { recursive: true });
    expect(findRepoRoot(path.join(repo.root, 'a/b/c'))).toBe(repo.root);
    writeFileSync(path.join(repo.root, 'a/runctl.yaml'), 'prune: false\n');
    expect(findRepoRoot(path.join(repo.root, 'a/b/c'))).toBe(path.join(repo.root, 'a'));
  });
});

describe('runctl.yaml', () => {
  it('fills region, s3 storage and instance profile of aws runs that leave them out', async () => {
    const repo = tempRepo();
    repo.write('runctl.yaml', 'defaults:\n  region: eu-west-1\n  storage: s3://team-bucket/runctl\n  iamInstanceProfile: team-runner\n');
    repo.write('runs/a.yaml', awsSpec('a'));
    repo.write('runs/b.yaml', awsSpec('b', '    region: us-east-2\n'));
    repo.write('runs/c.yaml', localSpec('c'));
    const { runs, diagnostics } = await loadRuns([], { repoRoot: repo.root });
    expect(diagnostics).toEqual([]);
    const [a, b, c] = runs;
    expect(a?.run.spec.resources.region).toBe('eu-west-1');
    expect(a?.run.spec.checkpoints.storage).toBe('s3://team-bucket/runctl');
    expect(a?.run.spec.resources.iamInstanceProfile).toBe('team-runner');
    expect(b?.run.spec.resources.region).toBe('us-east-2');
    // An s3 default is for aws runs; a local run keeps its own storage.
    expect(c?.run.spec.checkpoints.storage).toBeUndefined();
  });

  it('is checked like a spec, and skipped when a folder search comes across it', async () => {
    const repo = tempRepo();
    const config = repo.write('runctl.yaml', 'defaults:\n  regoin: eu-west-1\nprune: "yes"\n');
    const loaded = await loadProjectConfig(repo.root);
    expect(loaded.config).toEqual({ defaults: {}, prune: false });
    expect(loaded.diagnostics.map(formatDiagnostic)).toEqual([
      `${shown(config)}:2:3 error defaults.regoin: unknown field "regoin" (did you mean "region"?)`,
      `${shown(config)}:3:8 error prune: must be true or false (got "yes"; did you mean true?)`,
    ]);
    repo.write('runs/a.yaml', localSpec('a'));
    const { diagnostics, files } = await loadRuns([repo.root], { repoRoot: repo.root });
    expect(files).toEqual([shown(path.join(repo.root, 'runs/a.yaml'))]);
    expect(diagnostics.map((d) => d.path)).toEqual(['defaults.regoin', 'prune']);
  });

  it('is optional', async () => {
    const repo = tempRepo();
    expect(await loadProjectConfig(repo.root)).toEqual({ config: { defaults: {}, prune: false }, diagnostics: [] });
  });
});

describe('hostile input', () => {
  it('refuses an alias bomb as large as the size cap allows', async () => {
    const repo = tempRepo();
    let text = 'a: &a [' + Array(50).fill('"xxxxxxxxxx"').join(',') + ']\n';
    for (let i = 1; i < 12; i++) text += `l${i}: &l${i} [${Array(50).fill(i === 1 ? '*a' : `*l${i - 1}`).join(',')}]\n`;
    const file = repo.write('runs/bomb.yaml', text);
    const { diagnostics } = await loadRuns([file], { repoRoot: repo.root, project: NO_PROJECT });
    expect(diagnostics.map((d) => d.message)).toEqual([
      'YAML aliases expand to too much data (more than 100 alias uses); refused as a possible alias bomb',
    ]);
  });

  it.each([
    ['flow brackets', '['.repeat(MAX_SPEC_BYTES - 10)],
    ['compact sequences', '- '.repeat((MAX_SPEC_BYTES - 10) / 2)],
    ['nested mappings', Array.from({ length: 1200 }, (_, i) => `${' '.repeat(i)}k${i}:`).join('\n')],
  ])('refuses %s nested past the limit instead of crashing', async (_kind, text) => {
    const repo = tempRepo();
    const file = repo.write('runs/deep.yaml', text);
    const { diagnostics } = await loadRuns([file], { repoRoot: repo.root, project: NO_PROJECT });
    expect(diagnostics).toHaveLength(1);
    expect(diagnostics[0]?.message).toMatch(/^YAML nested deeper than 64 levels/);
  });

  it('never repeats a secret value in any diagnostic', async () => {
    const repo = tempRepo();
    const secret = 'hf_SuperSecretValue123';
    const file = repo.write(
      'runs/leak.yaml',
      localSpec('leak', `  secrets:\n    HF_TOKEN: ${secret}\n    OTHER: [${secret}]\n    NUM: {x: ${secret}}\n`),
    );
    const { diagnostics } = await loadRuns([file], { repoRoot: repo.root, project: NO_PROJECT });
    expect(diagnostics.length).toBe(3);
    for (const d of diagnostics) {
      expect(formatDiagnostic(d)).not.toContain(secret);
      expect(formatGithubAnnotation(d)).not.toContain(secret);
    }
  });
});

describe('diagnostic formats', () => {
  const d = { file: 'runs/x.yaml', line: 12, column: 7, path: 'spec.resources.market', message: 'must be one of spot, on-demand (got "a,b:c%")', severity: 'error' as const };

  it('text: file:line:column severity path: message', () => {
    expect(formatDiagnostic(d)).toBe('runs/x.yaml:12:7 error spec.resources.market: must be one of spot, on-demand (got "a,b:c%")');
    expect(formatDiagnostic({ ...d, path: '', message: 'file is empty' })).toBe('runs/x.yaml:12:7 error file is empty');
  });

  it('github: a workflow command with escaped properties and data', () => {
    expect(formatGithubAnnotation({ ...d, file: 'runs/a,b:c.yaml', message: 'x%y\nz' })).toBe(
      '::error file=runs/a%2Cb%3Ac.yaml,line=12,col=7::spec.resources.market: x%25y%0Az',
    );
    expect(formatGithubAnnotation({ ...d, severity: 'warning' })).toMatch(/^::warning file=runs\/x\.yaml,line=12,col=7::/);
  });
});
