// Shared by the spec tests: where the repository and the fixtures are, and a loader that applies
// no runctl.yaml so fixtures mean the same thing wherever the suite runs.
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll } from 'vitest';
import { loadRuns, type LoadResult } from '../../src/spec/load.js';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const FIXTURES = path.join(REPO_ROOT, 'test/fixtures');
export const NO_PROJECT = { defaults: {}, prune: false };

export function loadFixtures(paths: string[]): Promise<LoadResult> {
  return loadRuns(paths, { repoRoot: REPO_ROOT, project: NO_PROJECT });
}

/** How loadRuns names a file: relative to the current directory, forward slashes. */
export function shown(abs: string): string {
  return path.relative(process.cwd(), abs).split(path.sep).join('/');
}

const temporary: string[] = [];
// Registered while the importing test file is collected, so it runs after that file's tests.
afterAll(() => {
  for (const dir of temporary.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** A folder removed when the test file is done. */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  temporary.push(dir);
  return dir;
}

/** A throwaway repository with a code folder, and a helper to write files into it. */
export function tempRepo(): { root: string; write(rel: string, text: string | Buffer): string } {
  const root = tempDir('runctl-spec-');
  mkdirSync(path.join(root, '.git'));
  mkdirSync(path.join(root, 'code'));
  writeFileSync(path.join(root, 'code/train.py'), 'print("train")\n');
  return {
    root,
    write(rel, text) {
      const abs = path.join(root, rel);
      mkdirSync(path.dirname(abs), { recursive: true });
      writeFileSync(abs, text);
      return abs;
    },
  };
}

/**
 * The lines every TrainingRun manifest here starts with, up to and including `spec.provider`: a
 * test adds the rest of `spec` and joins the lines with '\n'.
 */
export function manifestHead(name: string, provider: 'aws' | 'local'): string[] {
  return ['apiVersion: runctl.dev/v1alpha1', 'kind: TrainingRun', 'metadata:', `  name: ${name}`, 'spec:', `  provider: ${provider}`];
}

export function localSpec(name: string, extra = ''): string {
  return [
    ...manifestHead(name, 'local'),
    '  code: {path: ./code}',
    '  run: python3 train.py',
    '',
  ].join('\n') + extra;
}

export function awsSpec(name: string, extra = ''): string {
  return [
    ...manifestHead(name, 'aws'),
    '  code: {path: ./code}',
    '  run: python3 train.py',
    '  resources:',
    '    instanceTypes: [g5.xlarge]',
    '    image: ami-0123456789abcdef0',
    '',
  ].join('\n') + extra;
}
