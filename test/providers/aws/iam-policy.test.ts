// `runctl iam-policy`: least-privilege documents, scoped by tag and bucket, printed by the real CLI.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { controllerPolicy, instancePolicy } from '../../../src/providers/aws/iam-policy.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const cli = path.join(root, 'bin', 'runctl.js');

type Doc = ReturnType<typeof controllerPolicy>;
const statement = (doc: Doc, sid: string) => doc.Statement.find((s) => s.Sid === sid);
const actions = (doc: Doc) => doc.Statement.flatMap((s) => s.Action);

describe('iam-policy', () => {
  it('grants the controller every EC2, SSM and S3 action the aws provider calls, and nothing broader', () => {
    const doc = controllerPolicy({ bucket: 'ml-bucket', prefix: 'runctl' });
    for (const action of [
      'ec2:RunInstances',
      'ec2:CreateTags',
      'ec2:TerminateInstances',
      'ec2:DescribeInstances',
      'ec2:DescribeImages',
      'ec2:DescribeInstanceTypeOfferings',
      'ec2:DescribeSpotPriceHistory',
      'pricing:GetProducts',
      'ssm:SendCommand',
      'ssm:GetCommandInvocation',
      'ssm:DescribeInstanceInformation',
      'ssm:GetParameter',
      'iam:PassRole',
      's3:GetObject',
      's3:PutObject',
      's3:DeleteObject',
      's3:ListBucket',
    ]) {
      expect(actions(doc)).toContain(action);
    }
    expect(actions(doc).some((a) => a.endsWith(':*') || a === '*')).toBe(false);
  });

  it('scopes launches to tagged instances, tags to launch time, termination to owned instances and storage to the prefix', () => {
    const doc = controllerPolicy({ bucket: 'ml-bucket', prefix: '/runctl/', controller: 'ci' });
    expect(statement(doc, 'LaunchOnlyTaggedInstancesAndVolumes')?.Condition).toEqual({
      Null: { 'aws:RequestTag/runctl:run': 'false', 'aws:RequestTag/runctl:controller': 'false' },
    });
    expect(statement(doc, 'TagOnlyAtLaunch')?.Condition).toEqual({ StringEquals: { 'ec2:CreateAction': 'RunInstances' } });
    expect(statement(doc, 'TerminateOwnInstances')?.Condition).toEqual({ StringEquals: { 'aws:ResourceTag/runctl:controller': 'ci' } });
    expect(statement(doc, 'RunAgentInstallOnOwnInstances')?.Condition).toEqual({ StringEquals: { 'ssm:resourceTag/runctl:controller': 'ci' } });
    expect(statement(doc, 'StorageObjects')?.Resource).toBe('arn:aws:s3:::ml-bucket/runctl/*');
    expect(statement(doc, 'StorageList')?.Condition).toEqual({ StringLike: { 's3:prefix': ['runctl/*', 'runctl'] } });
    expect(statement(doc, 'PassInstanceRole')).toMatchObject({
      Resource: 'arn:aws:iam::*:role/runctl-instance',
      Condition: { StringEquals: { 'iam:PassedToService': 'ec2.amazonaws.com' } },
    });
  });

  it('gives the instance SSM registration, storage, and secrets only under the path given', () => {
    const without = instancePolicy({ bucket: 'ml-bucket', prefix: 'runctl' });
    expect(actions(without)).toContain('ssm:UpdateInstanceInformation');
    expect(actions(without)).not.toContain('ssm:GetParameter');
    expect(actions(without)).not.toContain('ec2:RunInstances');
    const withSecrets = instancePolicy({ bucket: 'ml-bucket', prefix: 'runctl', secretParameters: '/team/runctl/*' });
    expect(statement(withSecrets, 'ReadSecrets')?.Resource).toBe('arn:aws:ssm:*:*:parameter/team/runctl/*');
  });

  it('prints JSON from the CLI and rejects a bad bucket name with a usage error', () => {
    const out = execFileSync(process.execPath, [cli, 'iam-policy', '--bucket', 'ml-bucket', '--prefix', 'runctl', '--only', 'controller'], {
      encoding: 'utf8',
    });
    const doc = JSON.parse(out) as Doc;
    expect(doc.Version).toBe('2012-10-17');
    expect(statement(doc, 'StorageObjects')?.Resource).toBe('arn:aws:s3:::ml-bucket/runctl/*');

    const all = JSON.parse(execFileSync(process.execPath, [cli, 'iam-policy'], { encoding: 'utf8' })) as Record<string, unknown>;
    expect(Object.keys(all)).toEqual(['controller', 'instance', 'trust']);

    const bad = spawnSync(process.execPath, [cli, 'iam-policy', '--bucket', 'Not_A_Bucket'], { encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/--bucket "Not_A_Bucket" is not an S3 bucket name/);
    expect(bad.stderr).not.toMatch(/at .*\.js:\d+/);
  });
});

// Every AWS SDK command the aws provider (and the shared state store) sends, found in the source,
// with the IAM action that authorizes it. A new call without its action in the policy fails here.
const S3_ACTION: Record<string, string | null> = {
  HeadObject: 's3:GetObject',
  GetObject: 's3:GetObject',
  PutObject: 's3:PutObject',
  DeleteObject: 's3:DeleteObject',
  DeleteObjects: 's3:DeleteObject',
  ListObjectsV2: 's3:ListBucket',
  HeadBucket: 's3:ListBucket',
  GetBucketLocation: 's3:GetBucketLocation',
  // lib-storage's Upload: multipart parts are authorized by s3:PutObject, cleanup by AbortMultipartUpload.
  CreateMultipartUpload: 's3:PutObject',
  UploadPart: 's3:PutObject',
  CompleteMultipartUpload: 's3:PutObject',
  AbortMultipartUpload: 's3:AbortMultipartUpload',
};
const PREFIX: Record<string, string> = { ec2: 'ec2', s3: 's3', ssm: 'ssm', iam: 'iam', sts: 'sts', 'service-quotas': 'servicequotas', pricing: 'pricing' };
/** Calls that need no permission (AWS STS API reference: GetCallerIdentity). */
const FREE = new Set(['sts:GetCallerIdentity']);

function sdkActions(): Set<string> {
  const actions = new Set<string>();
  const files = fs.readdirSync(path.join(root, 'src/providers/aws'), { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts'));
  for (const file of files) {
    const text = fs.readFileSync(path.join(root, 'src/providers/aws', file), 'utf8');
    for (const m of text.matchAll(/import\s*\{([^}]*)\}\s*from\s*'@aws-sdk\/(client-[a-z0-9-]+|lib-storage)'/g)) {
      const pkg = m[2]!.replace(/^client-/, '');
      if (pkg === 'lib-storage') {
        for (const op of ['CreateMultipartUpload', 'UploadPart', 'CompleteMultipartUpload', 'AbortMultipartUpload']) actions.add(S3_ACTION[op]!);
        continue;
      }
      for (const raw of m[1]!.split(',')) {
        const name = raw.trim().replace(/^type\s+/, '');
        const op = name.match(/^([A-Z][A-Za-z0-9]+)Command$/)?.[1] ?? name.match(/^paginate([A-Z][A-Za-z0-9]+)$/)?.[1];
        if (!op || raw.trim().startsWith('type ')) continue;
        const action = pkg === 's3' ? S3_ACTION[op] : `${PREFIX[pkg]}:${op}`;
        expect(action, `no IAM action known for S3 ${op} (${file})`).toBeDefined();
        if (action && !FREE.has(action)) actions.add(action);
      }
    }
  }
  return actions;
}

describe('iam-policy covers what the code calls', () => {
  it('allows every action of every SDK command the provider, the state store and doctor send', () => {
    const used = sdkActions();
    // Sanity: the scan sees the calls it must (a broken scan would pass vacuously).
    for (const a of ['ec2:RunInstances', 'ssm:SendCommand', 's3:PutObject', 'ec2:DescribeInstanceTypes']) expect(used).toContain(a);
    const allowed = new Set(actions(controllerPolicy({ bucket: 'ml-bucket', prefix: 'runctl', state: 's3://ml-state/runctl' })));
    const missing = [...used].filter((a) => !allowed.has(a));
    expect(missing).toEqual([]);
    // The ledger prices spot hours from their history and on-demand hours from the Price List API.
    expect(used).toContain('pricing:GetProducts');
    expect(used).toContain('ec2:DescribeSpotPriceHistory');
  });

  it('passes a role with a path, and names the spot service-linked role alone for creation', () => {
    const doc = controllerPolicy({ instanceRole: '/ml/team/runctl-instance' });
    expect(statement(doc, 'PassInstanceRole')?.Resource).toBe('arn:aws:iam::*:role/ml/team/runctl-instance');
    expect(statement(doc, 'CreateSpotServiceLinkedRole')).toEqual({
      Sid: 'CreateSpotServiceLinkedRole',
      Effect: 'Allow',
      Action: ['iam:CreateServiceLinkedRole'],
      Resource: 'arn:aws:iam::*:role/aws-service-role/spot.amazonaws.com/AWSServiceRoleForEC2Spot',
      Condition: { StringEquals: { 'iam:AWSServiceName': 'spot.amazonaws.com' } },
    });
    expect(actions(doc)).toContain('sts:DecodeAuthorizationMessage');
    expect(() => controllerPolicy({ instanceRole: 'bad role' })).toThrow(/--instance-role "bad role" is not an IAM role name or \/path\/name/);
  });

  it('grants the shared state prefix its own S3 statements', () => {
    const doc = controllerPolicy({ bucket: 'ml-bucket', prefix: 'runctl', state: 's3://ml-state/teams/a/' });
    expect(statement(doc, 'StateObjects')?.Resource).toBe('arn:aws:s3:::ml-state/teams/a/*');
    expect(statement(doc, 'StateList')).toMatchObject({ Resource: 'arn:aws:s3:::ml-state', Condition: { StringLike: { 's3:prefix': ['teams/a/*', 'teams/a'] } } });
    expect(statement(doc, 'DoctorBucketRegion')?.Resource).toEqual(['arn:aws:s3:::ml-bucket', 'arn:aws:s3:::ml-state']);
    expect(() => controllerPolicy({ state: 'file:///tmp/x' })).toThrow(/--state "file:\/\/\/tmp\/x" is not s3:\/\/bucket\/prefix/);
  });

  it('uses customer-managed KMS keys only through EC2 (EBS default encryption) and S3 (SSE-KMS bucket)', () => {
    const ebs = 'arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab';
    const bucketKey = 'arn:aws:kms:us-east-1:123456789012:key/abcd1234-12ab-34cd-56ef-1234567890ab';
    const doc = controllerPolicy({ bucket: 'ml-bucket', ebsKmsKey: ebs, bucketKmsKey: bucketKey });
    expect(statement(doc, 'EbsDefaultEncryptionKey')).toMatchObject({
      Resource: ebs,
      Action: ['kms:Decrypt', 'kms:GenerateDataKeyWithoutPlaintext', 'kms:ReEncryptFrom', 'kms:ReEncryptTo', 'kms:DescribeKey'],
      Condition: { StringLike: { 'kms:ViaService': 'ec2.*.amazonaws.com' } },
    });
    expect(statement(doc, 'EbsDefaultEncryptionKeyGrants')).toMatchObject({
      Action: ['kms:CreateGrant'],
      Condition: { StringLike: { 'kms:ViaService': 'ec2.*.amazonaws.com' }, Bool: { 'kms:GrantIsForAWSResource': 'true' } },
    });
    for (const d of [doc, instancePolicy({ bucket: 'ml-bucket', bucketKmsKey: bucketKey })]) {
      expect(statement(d, 'BucketKey')).toMatchObject({
        Resource: bucketKey,
        Action: ['kms:GenerateDataKey', 'kms:Decrypt'],
        Condition: { StringLike: { 'kms:ViaService': 's3.*.amazonaws.com' } },
      });
    }
    // Without keys, no KMS access at all.
    expect(actions(controllerPolicy({ bucket: 'ml-bucket' })).some((a) => a.startsWith('kms:'))).toBe(false);
    expect(() => controllerPolicy({ ebsKmsKey: 'my-key' })).toThrow(/--ebs-kms-key "my-key" is not a KMS key ARN/);
  });

  it('every statement is well-formed: unique Sid, Allow, actions as service:Operation, ARNs or "*"', () => {
    for (const doc of [
      controllerPolicy({ bucket: 'b-1', prefix: 'p', state: 's3://s-1/x', ebsKmsKey: 'arn:aws:kms:eu-west-1:123456789012:key/k', bucketKmsKey: 'arn:aws:kms:eu-west-1:123456789012:alias/b' }),
      instancePolicy({ bucket: 'b-1', prefix: 'p', secretParameters: '/t/*', bucketKmsKey: 'arn:aws:kms:eu-west-1:123456789012:key/k' }),
    ]) {
      expect(doc.Version).toBe('2012-10-17');
      const sids = doc.Statement.map((s) => s.Sid);
      expect(new Set(sids).size).toBe(sids.length);
      for (const s of doc.Statement) {
        expect(s.Sid).toMatch(/^[A-Za-z0-9]+$/);
        expect(s.Effect).toBe('Allow');
        for (const a of s.Action) expect(a).toMatch(/^[a-z0-9-]+:[A-Za-z0-9]+$/);
        for (const r of [s.Resource].flat()) expect(r === '*' || r.startsWith('arn:aws:')).toBe(true);
      }
    }
  });

  it('the CLI takes the new options', () => {
    const out = execFileSync(
      process.execPath,
      [cli, 'iam-policy', '--only', 'controller', '--instance-role', '/ml/runctl-instance', '--state', 's3://ml-state/runctl', '--ebs-kms-key', 'arn:aws:kms:us-east-1:123456789012:key/k'],
      { encoding: 'utf8' },
    );
    const doc = JSON.parse(out) as Doc;
    expect(statement(doc, 'PassInstanceRole')?.Resource).toBe('arn:aws:iam::*:role/ml/runctl-instance');
    expect(statement(doc, 'StateObjects')?.Resource).toBe('arn:aws:s3:::ml-state/runctl/*');
    expect(statement(doc, 'EbsDefaultEncryptionKey')?.Resource).toBe('arn:aws:kms:us-east-1:123456789012:key/k');
  });
});
