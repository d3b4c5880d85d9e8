// What the CLI tests against moto share: moto holding the bucket (and instance profile) their runs
// name, a project folder for the real `runctl` to run in, and the manifests of those runs.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { manifestHead } from '../spec/helpers.js';
import { createBucket, createInstanceProfile, useMoto } from '../support/moto.js';

/** What {@link useMotoProject} gives a test file; both are set once its beforeAll has run. */
export interface MotoProject {
  /** moto's endpoint: the run's shared server, or one started for this file. */
  moto: { readonly url: string };
  /** The project folder: `runs/` (empty) and `code/train.py`. */
  project: { readonly dir: string };
}

/**
 * Registers a beforeAll that starts (or joins) moto, creates `bucket` (us-east-1) and, when given,
 * the IAM instance profile `profile` there, and makes a project folder under the OS temp dir named
 * `prefix` plus random characters; and an afterAll that releases moto and removes the folder. Call
 * it at the top level of the test file, before its own hooks, which then run after this beforeAll
 * and before this afterAll.
 */
export function useMotoProject(opts: { prefix: string; bucket: string; profile?: string }): MotoProject {
  let server: { url: string; release(): Promise<void> } | undefined;
  let dir: string | undefined;
  beforeAll(async () => {
    server = await useMoto();
    await createBucket(server.url, opts.bucket);
    if (opts.profile) await createInstanceProfile(server.url, opts.profile);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), opts.prefix));
    fs.mkdirSync(path.join(dir, 'runs'));
    fs.mkdirSync(path.join(dir, 'code'));
    fs.writeFileSync(path.join(dir, 'code', 'train.py'), 'print(1)\n');
  });
  afterAll(async () => {
    await server?.release();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });
  const ready = <T>(value: T | undefined, what: string): T => {
    if (value === undefined) throw new Error(`${what} is not set up yet: use it in a test or a hook`);
    return value;
  };
  return {
    moto: {
      get url() {
        return ready(server, 'moto').url;
      },
    },
    project: {
      get dir() {
        return ready(dir, 'the project folder');
      },
    },
  };
}

/**
 * A TrainingRun manifest for the moto account: provider aws, the code folder and `python3
 * train.py`, region us-east-1 with `resources` (lines under spec.resources), and checkpoints in
 * s3://<bucket>/runs. `spec` lines go right after spec.provider. Line numbers in expected
 * messages count from this layout.
 */
export function motoRunManifest(name: string, m: { bucket: string; resources: string[]; spec?: string[] }): string {
  return [
    ...manifestHead(name, 'aws'),
    ...(m.spec ?? []).map((line) => `  ${line}`),
    '  code: {path: ./code}',
    '  run: python3 train.py',
    '  resources:',
    '    region: us-east-1',
    ...m.resources.map((line) => `    ${line}`),
    '  checkpoints:',
    `    storage: s3://${m.bucket}/runs`,
    '',
  ].join('\n');
}
