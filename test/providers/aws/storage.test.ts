// S3 through the real client against moto: content-addressed bundles (multipart when large),
// checkpoints found by their manifest, logs by cursor, bundle cleanup confined to runctl's keys,
// path-style addressing with a custom endpoint, and the plan-time offerings check.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ListObjectsV2Command, PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { controlKey, logsPrefix, manifestKey, padSeq, progressKey } from '../../../src/agent/layout.js';
import { ensureBundle } from '../../../src/providers/aws/bundles.js';
import { parseStorageUrl, S3Storage } from '../../../src/providers/aws/storage.js';
import { RetryableError, TerminalError } from '../../../src/providers/types.js';
import { freePort } from '../../support/moto.js';
import { awsSpec, REGION, startRig, type AwsRig } from './harness.js';

let rig: AwsRig;
let tmp: string;
beforeAll(async () => {
  rig = await startRig();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'runctl-aws-storage-'));
});
afterAll(async () => {
  await rig?.release();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

function storageFor(prefix: string) {
  const { provider, recorder } = rig.provider();
  const s3 = provider.clientsFor(REGION).s3;
  return { provider, recorder, s3, storage: new S3Storage(s3, parseStorageUrl(`s3://${rig.bucket}/${prefix}`), REGION) };
}

async function put(s3: S3Storage['s3'], key: string, body: string): Promise<void> {
  await s3.send(new PutObjectCommand({ Bucket: rig.bucket, Key: key, Body: body }));
}

describe('S3 storage', () => {
  it('uploads a bundle once: unchanged code costs one HEAD and zero bytes; large bundles go multipart', async () => {
    const { storage, recorder } = storageFor('bundles-test');
    const small = path.join(tmp, 'small.tar.gz');
    fs.writeFileSync(small, randomBytes(1024));
    const sha = 'a'.repeat(64);
    expect(await ensureBundle(storage, { sha256: sha, file: small, bytes: 1024 })).toBe(1024);
    recorder.reset();
    expect(await ensureBundle(storage, { sha256: sha, file: small, bytes: 1024 })).toBe(0);
    expect(recorder.calls.map((c) => c.operation)).toEqual(['HeadObject']);

    const large = path.join(tmp, 'large.tar.gz');
    fs.writeFileSync(large, randomBytes(9 * 1024 * 1024));
    recorder.reset();
    await ensureBundle(storage, { sha256: 'b'.repeat(64), file: large, bytes: 9 * 1024 * 1024 });
    expect(recorder.count('s3', 'CreateMultipartUpload')).toBe(1);
    expect(recorder.count('s3', 'UploadPart')).toBe(2);
    expect(recorder.count('s3', 'CompleteMultipartUpload')).toBe(1);
    const listed = await storage.list('bundles/');
    expect(listed.map((o) => [o.Key, o.Size])).toEqual([
      [`bundles/${'a'.repeat(64)}.tar.gz`, 1024],
      [`bundles/${'b'.repeat(64)}.tar.gz`, 9 * 1024 * 1024],
    ]);
  });

  it('addresses S3 path-style when a custom endpoint is set', async () => {
    const { storage } = storageFor('path-style');
    const before = rig.fleet.calls.length;
    await storage.putText('probe.json', '{}');
    const s3Calls = rig.fleet.calls.slice(before).filter((c) => c.service === 's3');
    expect(s3Calls.map((c) => c.action)).toEqual([`PUT /${rig.bucket}/path-style/probe.json`]);
  });

  it('prunes only unreferenced, old bundles under runctl’s bundles/ prefix', async () => {
    const { provider, s3 } = storageFor('prune');
    const keep = 'c'.repeat(64);
    const drop = 'd'.repeat(64);
    for (const key of [
      `prune/bundles/${keep}.tar.gz`,
      `prune/bundles/${drop}.tar.gz`,
      'prune/bundles/notes.txt',
      `prune/runs/r/g1/checkpoints/${padSeq(1)}/MANIFEST.json`,
      `other/bundles/${drop}.tar.gz`,
    ]) {
      await put(s3, key, 'x');
    }
    const spec = awsSpec(rig.bucket, { checkpoints: { storage: `s3://${rig.bucket}/prune` } });
    const young = await provider.pruneBundles(spec, new Set([keep]), { minAgeMs: 60_000 });
    expect(young.deleted).toEqual([]);
    const result = await provider.pruneBundles(spec, new Set([keep]), { minAgeMs: 0 });
    expect(result.deleted).toEqual([`bundles/${drop}.tar.gz`]);
    const left = await s3.send(new ListObjectsV2Command({ Bucket: rig.bucket }));
    const keys = (left.Contents ?? []).map((o) => o.Key);
    expect(keys).toEqual(
      expect.arrayContaining([`prune/bundles/${keep}.tar.gz`, 'prune/bundles/notes.txt', `other/bundles/${drop}.tar.gz`]),
    );
    expect(keys).not.toContain(`prune/bundles/${drop}.tar.gz`);
  });

  it('prunes setup cache entries no run holds, then archives no kept entry names (issue 12)', async () => {
    const { provider, s3 } = storageFor('setup-cache');
    const [held, orphan, keptSha, orphanSha] = ['1', '2', 'a', 'b'].map((c) => c.repeat(64)) as [string, string, string, string];
    const entry = (key: string, sha: string) => JSON.stringify({ format: 1, key, archive: { sha256: sha, bytes: 1 } });
    await put(s3, `setup-cache/setup-cache/${held}.json`, entry(held, keptSha));
    await put(s3, `setup-cache/setup-cache/${orphan}.json`, entry(orphan, orphanSha));
    await put(s3, `setup-cache/setup-cache/archives/${keptSha}.tar.gz`, 'a');
    await put(s3, `setup-cache/setup-cache/archives/${orphanSha}.tar.gz`, 'b');
    await put(s3, 'setup-cache/setup-cache/readme.txt', 'not runctl shaped');
    const spec = awsSpec(rig.bucket, { checkpoints: { storage: `s3://${rig.bucket}/setup-cache` } });
    expect((await provider.pruneSetupCaches(spec, new Set([held]), { minAgeMs: 60_000 })).deleted).toEqual([]);
    const result = await provider.pruneSetupCaches(spec, new Set([held]), { minAgeMs: 0 });
    expect(result.deleted).toEqual([`setup-cache/${orphan}.json`, `setup-cache/archives/${orphanSha}.tar.gz`]);
    const left = await s3.send(new ListObjectsV2Command({ Bucket: rig.bucket, Prefix: 'setup-cache/' }));
    expect((left.Contents ?? []).map((o) => o.Key).sort()).toEqual([
      `setup-cache/setup-cache/${held}.json`,
      `setup-cache/setup-cache/archives/${keptSha}.tar.gz`,
      'setup-cache/setup-cache/readme.txt',
    ]);
  });

  it('finds the newest checkpoint that has a manifest, skipping one still uploading', async () => {
    const { provider, s3 } = storageFor('ckpt');
    const spec = awsSpec(rig.bucket, { checkpoints: { storage: `s3://${rig.bucket}/ckpt` } });
    expect(await provider.latestCheckpoint('r', 1, spec)).toBeUndefined();
    const manifest = (id: string, step: number) =>
      JSON.stringify({ id, run: 'r', generation: 1, attempt: 1, step, createdAt: new Date().toISOString(), files: [] });
    await put(s3, `ckpt/${manifestKey('r', 1, padSeq(1))}`, manifest(padSeq(1), 100));
    await put(s3, `ckpt/${manifestKey('r', 1, padSeq(2))}`, manifest(padSeq(2), 200));
    await put(s3, `ckpt/runs/r/g1/checkpoints/${padSeq(3)}/model.bin`, 'partial');
    await put(s3, `ckpt/${manifestKey('r', 2, padSeq(9))}`, manifest(padSeq(9), 900));
    const latest = await provider.latestCheckpoint('r', 1, spec);
    expect(latest).toMatchObject({ id: padSeq(2), step: 200 });
  });

  it('reads log segments in order and continues after a cursor', async () => {
    const { provider, s3 } = storageFor('logs');
    const spec = awsSpec(rig.bucket, { checkpoints: { storage: `s3://${rig.bucket}/logs` } });
    const key = { run: 'r', generation: 1, attempt: 2 };
    await put(s3, `logs/${logsPrefix(key)}${padSeq(1)}.log`, 'one\n');
    await put(s3, `logs/${logsPrefix(key)}${padSeq(2)}.log`, 'two\n');
    const first = await provider.readLogs(key, spec);
    expect(first).toMatchObject({ attempt: 2, text: 'one\ntwo\n' });
    await put(s3, `logs/${logsPrefix(key)}${padSeq(3)}.log`, 'three\n');
    const next = await provider.readLogs(key, spec, first.cursor);
    expect(next.text).toBe('three\n');
    expect((await provider.readLogs(key, spec, next.cursor)).text).toBe('');
  });

  it("reads an attempt's progress history, and says when there is none or it is damaged", async () => {
    const { provider, s3 } = storageFor('progress');
    const spec = awsSpec(rig.bucket, { checkpoints: { storage: `s3://${rig.bucket}/progress` } });
    const key = { run: 'r', uid: '6f1c2d3e-4a5b-4c6d-8e7f-901a2b3c4d5e', generation: 1, attempt: 2 };
    expect(await provider.readProgressHistory(key, spec)).toBeUndefined();
    const point = { time: '2026-01-01T00:00:01.000Z', step: 40, total: 100, metrics: { loss: 2.5 } };
    await put(s3, `progress/${progressKey(key)}`, JSON.stringify({ version: 1, run: 'r', generation: 1, attempt: 2, points: [point] }));
    expect(await provider.readProgressHistory(key, spec)).toEqual([point]);
    await put(s3, `progress/${progressKey(key)}`, '{"version": 1, "points": [');
    await expect(provider.readProgressHistory(key, spec)).rejects.toThrow(RetryableError);
  });

  it('asks the agent to stop, and to rehearse a spot interruption, through its control object', async () => {
    const { provider, s3 } = storageFor('control');
    const spec = awsSpec(rig.bucket, { checkpoints: { storage: `s3://${rig.bucket}/control` } });
    const key = { run: 'r', generation: 3, attempt: 2 };
    const read = async () => {
      const { GetObjectCommand } = await import('@aws-sdk/client-s3');
      const out = await s3.send(new GetObjectCommand({ Bucket: rig.bucket, Key: `control/${controlKey(key)}` }));
      return JSON.parse((await out.Body?.transformToString()) ?? '{}') as Record<string, unknown>;
    };
    await provider.requestStop(key, spec, 'suspend');
    // The agent acts on {"action": "stop", "reason": …} (src/agent/runctl_agent/agent.py, check_control).
    expect(await read()).toMatchObject({ action: 'stop', reason: 'suspend', run: 'r', generation: 3, attempt: 2 });
    await provider.deliverSpotNotice(key, 'i-0123456789abcdef0');
    expect(await read()).toMatchObject({ action: 'stop', reason: 'spot-rehearsal' });
  });

  it('rejects a storage URL that is not s3:// with a message naming the field', async () => {
    const { provider } = storageFor('x');
    const spec = awsSpec(rig.bucket, { checkpoints: { storage: 'file:///tmp/x' } });
    const err = await provider.readAgentStatus({ run: 'r', generation: 1, attempt: 1 }, spec).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TerminalError);
    expect((err as Error).message).toMatch(/spec\.checkpoints\.storage "file:\/\/\/tmp\/x" is not an S3 URL/);
  });
});

describe('instance type offerings', () => {
  const at = (i: number) => ['spec', 'resources', 'instanceTypes', i];
  // Every EC2 operation the check asked for, sorted: it must ask each question once.
  const ec2Operations = (recorder: { calls: { service: string; operation: string }[] }) =>
    recorder.calls.filter((c) => c.service === 'ec2').map((c) => c.operation).sort();

  it('reports types not offered in the region or in some of the zones, in one call', async () => {
    const { provider, recorder } = rig.provider();
    const ok = awsSpec(rig.bucket, { resources: { instanceTypes: ['g5.xlarge', 't3.micro'] } });
    expect(await provider.preflight(ok)).toEqual([]);
    // One question each: the offerings, and the image check (image, then the types' architectures).
    expect(ec2Operations(recorder)).toEqual(['DescribeImages', 'DescribeInstanceTypeOfferings', 'DescribeInstanceTypes']);

    // c5.xlarge is not offered in us-east-1e (as in AWS, and in moto's offerings data): launches
    // there move on to the next zone, so a warning.
    recorder.reset();
    const zonal = awsSpec(rig.bucket, { resources: { instanceTypes: ['c5.xlarge'], availabilityZones: ['us-east-1a', 'us-east-1e'] } });
    expect(await provider.preflight(zonal)).toEqual([
      { path: at(0), severity: 'warning', message: expect.stringMatching(/^c5\.xlarge is not offered in us-east-1e \(offered in us-east-1a\)/) },
    ]);
    // The image was described by the first check; only the new type list is asked about.
    expect(ec2Operations(recorder)).toEqual(['DescribeInstanceTypeOfferings', 'DescribeInstanceTypes']);
  });

  it('a type offered nowhere asked is an error, with the closest type the region offers', async () => {
    const { provider, recorder } = rig.provider();
    const typo = awsSpec(rig.bucket, { resources: { instanceTypes: ['g5.xlarge', 'g5.xlarg', 'zz9.enormous'] } });
    expect(await provider.preflight(typo)).toEqual([
      { path: at(1), severity: 'error', message: 'g5.xlarg is not offered in region us-east-1 (did you mean g5.xlarge?); check the spelling, or choose another type or region' },
      { path: at(2), severity: 'error', message: 'zz9.enormous is not offered in region us-east-1; check the spelling, or choose another type or region' },
    ]);
    // The check, then the region's list for the suggestion: only because something was wrong.
    const offerings = recorder.calls.filter((c) => c.operation === 'DescribeInstanceTypeOfferings');
    expect(offerings.map((c) => [c.operation, c.input.LocationType])).toEqual([
      ['DescribeInstanceTypeOfferings', 'region'],
      ['DescribeInstanceTypeOfferings', 'region'],
    ]);

    // g5.xlarge exists in us-east-1, but not in us-east-1e: offered nowhere asked, so an error.
    const elsewhere = awsSpec(rig.bucket, { resources: { instanceTypes: ['g5.xlarge'], availabilityZones: ['us-east-1e'] } });
    expect(await provider.preflight(elsewhere)).toEqual([
      { path: at(0), severity: 'error', message: expect.stringMatching(/^g5\.xlarge is not offered in any of us-east-1e \(only in other zones of us-east-1\)/) },
    ]);
  });

  it('a check that cannot be made throws a message that does not promise a retry', async () => {
    const { provider } = rig.provider({ endpointUrl: `http://127.0.0.1:${await freePort()}`, retry: { maxAttempts: 2, baseDelayMs: 1 } });
    const err = await provider.preflight(awsSpec(rig.bucket)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RetryableError);
    expect((err as Error).message).toMatch(/DescribeInstanceTypeOfferings in us-east-1 failed temporarily \(ECONNREFUSED\).*gave up after retrying/);
    expect((err as Error).message).not.toContain('runctl will retry');
  });
});
