// The agent's s3:// storage path, through the real AWS CLI against moto's S3: bundle download,
// status and log segments, checkpoint publish (manifest last), retention, and restore.
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBundle } from '../../src/agent/bundle.js';
import { bundleKey, checkpointsPrefix, logsPrefix, statusKey } from '../../src/agent/layout.js';
import type { AgentStatus, CheckpointManifest } from '../../src/providers/types.js';
import { createBucket, useMoto } from '../support/moto.js';
import { FakeImds, Sandbox, TEST_JOB } from './support.js';

const BUCKET = 'runctl-agent-test';
const PREFIX = 'team/runctl';

let moto: { url: string; release(): Promise<void> };
let imds: FakeImds;
let box: Sandbox;
let env: NodeJS.ProcessEnv;

function aws(args: string[]): string {
  return execFileSync('aws', [...args, '--endpoint-url', moto.url, '--region', 'us-east-1'], { env, encoding: 'utf8' });
}
const s3Url = (key: string) => `s3://${BUCKET}/${PREFIX}/${key}`;
const s3Get = (key: string) => aws(['s3', 'cp', s3Url(key), '-']);
function s3Keys(prefix: string): string[] {
  try {
    return aws(['s3', 'ls', '--recursive', s3Url(prefix)])
      .trim()
      .split('\n')
      .map((line) => line.split(/\s+/).slice(3).join(' ').slice(`${PREFIX}/${prefix}`.length))
      .sort();
  } catch {
    return [];
  }
}

beforeAll(async () => {
  moto = await useMoto();
  await createBucket(moto.url, BUCKET);
  imds = await new FakeImds().start();
  box = await Sandbox.create();
  env = {
    ...process.env,
    AWS_ACCESS_KEY_ID: 'testing',
    AWS_SECRET_ACCESS_KEY: 'testing',
    AWS_DEFAULT_REGION: 'us-east-1',
    AWS_CONFIG_FILE: path.join(box.root, 'no-aws-config'),
    AWS_SHARED_CREDENTIALS_FILE: path.join(box.root, 'no-aws-credentials'),
  };
  delete env.AWS_PROFILE;
});
afterAll(async () => {
  await box?.cleanup();
  await imds?.close();
  await moto?.release();
});

describe('agent with s3:// storage', () => {
  // One attempt covers every storage operation: list + download + verify (restore), download
  // (bundle), uploads (status, log segments, checkpoint files, manifest last), deletes (retention).
  // Each AWS CLI call costs about a second of CPU here, so the background calls are kept sparse.
  it('restores, runs, publishes and prunes through the AWS CLI', { timeout: 180_000 }, async () => {
    await box.bundle({ 'job.sh': TEST_JOB });
    const bundle = await createBundle(box.root, { path: 'code', exclude: [] }, { outDir: path.join(box.root, 'out') });
    aws(['s3', 'cp', '--only-show-errors', bundle.file, s3Url(bundleKey(bundle.sha256))]);
    await box.publishCheckpoint('remote', 1, '00000001', { step: '3\n' }, 3); // an earlier attempt's, on local disk
    aws(['s3', 'cp', '--only-show-errors', '--recursive', box.checkpoints('remote', 1)[0]!.dir, s3Url(`${checkpointsPrefix('remote', 1)}00000001/`)]);

    const key = { run: 'remote', generation: 1, attempt: 2 };
    const config = box.config(key, bundleKey(bundle.sha256), imds.url, {
      storage: `s3://${BUCKET}/${PREFIX}`,
      s3EndpointUrl: moto.url,
      region: 'us-east-1',
      heartbeatSeconds: 5,
      noticePollSeconds: 5,
      syncIntervalSeconds: 600,
      keep: 1,
      env: { STEPS: '5', DELAY: '0.1' },
    });
    await box.run(config, env);

    const status = JSON.parse(s3Get(statusKey(key))) as AgentStatus;
    expect(status).toMatchObject({
      phase: 'succeeded',
      exitCode: 0,
      progress: { step: 5, total: 5 },
      restoredFrom: { id: '00000001' },
      lastCheckpoint: { id: '00000002', step: 5 },
    });
    const segments = s3Keys(logsPrefix(key));
    expect(segments.map((k) => s3Get(`${logsPrefix(key)}${k}`)).join('')).toMatch(/resuming=1[\s\S]*step=4\/5[\s\S]*step=5\/5[\s\S]*job done/);
    // keep: 1 — the restored checkpoint, manifest and files, is gone; the new one is complete.
    expect(s3Keys(checkpointsPrefix('remote', 1))).toEqual(['00000002/MANIFEST.json', '00000002/step']);
    const manifest = JSON.parse(s3Get(`${checkpointsPrefix('remote', 1)}00000002/MANIFEST.json`)) as CheckpointManifest;
    expect(manifest).toMatchObject({ id: '00000002', run: 'remote', generation: 1, attempt: 2, step: 5 });
    expect(s3Get(`${checkpointsPrefix('remote', 1)}00000002/step`)).toBe('5\n');
  });
});
