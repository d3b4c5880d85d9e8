// The real CLI, as CI runs it: `node bin/runctl.js validate …` and `runctl schema`.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { localSpec, REPO_ROOT, tempRepo } from './helpers.js';

const BIN = path.join(REPO_ROOT, 'bin/runctl.js');

function runctl(args: string[], cwd = REPO_ROOT): { code: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [BIN, ...args], { cwd, encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

const MARKET = 'test/fixtures/invalid/market-typo.yaml';
const MARKET_LINE = `${MARKET}:12:13 error spec.resources.market: must be one of spot, on-demand, spot-then-on-demand (got "spto"; did you mean "spot"?)`;

describe('runctl validate', () => {
  it('exits 0 and says so when every run is valid (warnings do not fail)', () => {
    const { code, stdout, stderr } = runctl(['validate', 'test/fixtures/valid']);
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(stdout.trim().split('\n').at(-1)).toBe('8 runs in 7 files: valid, 2 warnings');
  });

  it('exits 1 with one line per problem, then a summary', () => {
    const { code, stdout } = runctl(['validate', MARKET, 'test/fixtures/invalid/env-number.yaml']);
    expect(code).toBe(1);
    expect(stdout.split('\n')).toEqual([
      `test/fixtures/invalid/env-number.yaml:11:11 error spec.env.SEED: must be a string (got 42; quote it: "42")`,
      MARKET_LINE,
      '2 errors in 2 of 2 files',
      '',
    ]);
  });

  it('--format json prints an array of diagnostics', () => {
    const { code, stdout } = runctl(['validate', '--format', 'json', MARKET]);
    expect(code).toBe(1);
    expect(JSON.parse(stdout)).toEqual([
      {
        file: MARKET,
        line: 12,
        column: 13,
        path: 'spec.resources.market',
        message: 'must be one of spot, on-demand, spot-then-on-demand (got "spto"; did you mean "spot"?)',
        severity: 'error',
      },
    ]);
    expect(JSON.parse(runctl(['validate', '--format', 'json', 'test/fixtures/valid/minimal-local.yaml']).stdout)).toEqual([]);
  });

  it('--format github prints workflow commands GitHub turns into annotations', () => {
    const { code, stdout } = runctl(['validate', '--format=github', MARKET, 'test/fixtures/valid/local-with-warnings.yaml']);
    expect(code).toBe(1);
    expect(stdout.split('\n').slice(0, 3)).toEqual([
      `::error file=${MARKET},line=12,col=13::spec.resources.market: must be one of spot, on-demand, spot-then-on-demand (got "spto"; did you mean "spot"?)`,
      '::warning file=test/fixtures/valid/local-with-warnings.yaml,line=11,col=5::spec.env.WANDB_API_KEY: looks like a credential in plain text; put it in SSM and reference it from spec.secrets (ssm:/…)',
      '::warning file=test/fixtures/valid/local-with-warnings.yaml,line=13,col=5::spec.resources.instanceTypes: is ignored by provider local',
    ]);
  });

  it('validates the whole invalid fixture folder without a stack trace', () => {
    const { code, stdout, stderr } = runctl(['validate', 'test/fixtures/invalid']);
    expect(code).toBe(1);
    expect(stderr).toBe('');
    expect(stdout).not.toMatch(/\n\s+at /);
    expect(stdout).toContain(MARKET_LINE);
  });

  it('reads runs/ at the repository root by default', () => {
    const repo = tempRepo();
    repo.write('runs/a.yaml', localSpec('a'));
    const { code, stdout } = runctl(['validate'], path.join(repo.root, 'code'));
    expect(code).toBe(0);
    expect(stdout).toBe('1 run in 1 file: valid\n');
  });

  it.each([
    [['validate', 'no/such/path'], 'runctl: no such file or directory: no/such/path'],
    [['validate', '--format', 'xml', 'runs'], "error: option '--format <format>' argument 'xml' is invalid. Allowed choices are text, json, github."],
    [['validate', '--repo-root', 'no/such/dir'], 'runctl: --repo-root: no such directory: no/such/dir'],
  ])('exits 2 for usage mistakes: %j', (args, message) => {
    const { code, stderr, stdout } = runctl(args);
    expect(code).toBe(2);
    expect(stdout).toBe('');
    expect(stderr.split('\n')[0]).toBe(message);
  });

  it('exits 2 when there is no runs/ folder and no path', () => {
    const repo = tempRepo();
    const { code, stderr } = runctl(['validate'], repo.root);
    expect(code).toBe(2);
    expect(stderr).toBe(`runctl: no runs/ folder in ${repo.root}; name the files or folders to validate\n`);
  });
});

describe('runctl schema', () => {
  it('prints the TrainingRun schema, or with --project the runctl.yaml schema', () => {
    expect(runctl(['schema']).stdout).toBe(readFileSync(path.join(REPO_ROOT, 'schema/trainingrun.schema.json'), 'utf8'));
    expect(runctl(['schema', '--project']).stdout).toBe(readFileSync(path.join(REPO_ROOT, 'schema/project.schema.json'), 'utf8'));
  });
});
