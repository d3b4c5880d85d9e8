// The agent's s3:// storage path, through the real AWS CLI against moto's S3: bundle download,
// status and log segments, checkpoint publish (manifest last), retention, and restore.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBundle } from '../../src/agent/bundle.js';
import { bundleKey, checkpointsPrefix, contentKey, contentsPrefix, logsPrefix, statusKey } from '../../src/agent/layout.js';
import type { AgentStatus, CheckpointManifest } from '../../src/providers/types.js';
import { createBucket, useMoto } from '../support/moto.js';
import { FakeImds, Sandbox, TEST_JOB } from './support.js';

const BUCKET = 'runctl-agent-test';
const PREFIX = 'team/runctl';

let moto: { url: string; release(): Promise<void> };
let imds: FakeImds;
let box: Sandbox;
let env: NodeJS.ProcessEnv;

// The test itself talks to moto over plain HTTP (fast); only the agent goes through the AWS CLI.
const AUTH = { authorization: 'AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0' };
const objectUrl = (key: string) => `${moto.url}/${BUCKET}/${PREFIX}/${key}`;

async function s3Put(key: string, body: Buffer | string): Promise<void> {
  const res = await fetch(objectUrl(key), { method: 'PUT', headers: AUTH, body });
  if (!res.ok) throw new Error(`PUT ${key}: ${res.status} ${await res.text()}`);
}
async function s3Get(key: string): Promise<string> {
  const res = await fetch(objectUrl(key), { headers: AUTH });
  if (!res.ok) throw new Error(`GET ${key}: ${res.status}`);
  return res.text();
}
async function s3Keys(prefix: string): Promise<string[]> {
  const res = await fetch(`${moto.url}/${BUCKET}?list-type=2&prefix=${encodeURIComponent(`${PREFIX}/${prefix}`)}`, { headers: AUTH });
  const xml = await res.text();
  return [...xml.matchAll(/<Key>([^<]+)<\/Key>/g)].map((m) => (m[1] as string).slice(`${PREFIX}/${prefix}`.length)).sort();
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
  it('restores, runs, publishes and prunes through the AWS CLI', { timeout: 300_000 }, async () => {
    await box.bundle({ 'job.sh': TEST_JOB });
    const bundle = await createBundle(box.root, { path: 'code', exclude: [] }, { outDir: path.join(box.root, 'out') });
    await s3Put(bundleKey(bundle.sha256), readFileSync(bundle.file));
    // An earlier attempt's checkpoint in the format-1 layout (files beside the manifest, before
    // content-addressed storage), written on local disk and copied to S3: it must still restore.
    await box.publishCheckpoint('remote', 1, '00000001', { step: '3\n' }, 3);
    const earlier = box.checkpoints('remote', 1)[0]!.dir;
    await s3Put(`${checkpointsPrefix('remote', 1)}00000001/step`, readFileSync(path.join(earlier, 'step')));
    await s3Put(`${checkpointsPrefix('remote', 1)}00000001/MANIFEST.json`, readFileSync(path.join(earlier, 'MANIFEST.json')));

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

    const status = JSON.parse(await s3Get(statusKey(key))) as AgentStatus;
    expect(status).toMatchObject({
      phase: 'succeeded',
      exitCode: 0,
      progress: { step: 5, total: 5 },
      restoredFrom: { id: '00000001' },
      lastCheckpoint: { id: '00000002' },
    });
    // The job's `step` file is no layout runctl knows and the job declared nothing: the step the
    // checkpoint holds is unknown, not the progress it printed (issue 9).
    expect(status.lastCheckpoint?.step).toBeUndefined();
    const segments = await s3Keys(logsPrefix(key));
    const logs = (await Promise.all(segments.map((k) => s3Get(`${logsPrefix(key)}${k}`)))).join('');
    expect(logs).toMatch(/resuming=1[\s\S]*step=4\/5[\s\S]*step=5\/5[\s\S]*job done/);
    // keep: 1 — the restored format-1 checkpoint, manifest and files, is gone; the new one is a
    // manifest naming its content, stored once in the run's content store under its sha256.
    expect(await s3Keys(checkpointsPrefix('remote', 1))).toEqual(['00000002/MANIFEST.json']);
    const manifest = JSON.parse(await s3Get(`${checkpointsPrefix('remote', 1)}00000002/MANIFEST.json`)) as CheckpointManifest;
    expect(manifest).toMatchObject({ format: 2, id: '00000002', run: 'remote', generation: 1, attempt: 2 });
    expect(manifest.step).toBeUndefined();
    expect(manifest.sync).toEqual({ filesUploaded: 1, filesReused: 0, bytesUploaded: 2, bytesReused: 0 });
    const sha = manifest.files[0]!.sha256;
    expect(await s3Keys(contentsPrefix('remote'))).toEqual([sha]);
    expect(await s3Get(contentKey('remote', sha))).toBe('5\n');
  });

  it('collects contents with one DeleteObjects call, a missing key being no error', { timeout: 60_000 }, async () => {
    // Retention deletes the contents no kept checkpoint names in batches (storage.delete_many):
    // one AWS CLI process for up to 1,000 keys instead of one per key.
    for (const k of ['a', 'b', 'c']) await s3Put(`batch/${k}`, k);
    const script =
      'import sys; from runctl_agent.storage import S3Storage; ' +
      `S3Storage("s3://${BUCKET}/${PREFIX}", sys.argv[1], "us-east-1", print).delete_many(["batch/a", "batch/c", "batch/missing"])`;
    execFileSync('python3', ['-c', script, moto.url], { env: { ...env, PYTHONPATH: path.resolve('src/agent') } });
    expect(await s3Keys('batch/')).toEqual(['b']);
  });
});
