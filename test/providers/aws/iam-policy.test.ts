// `runctl iam-policy`: least-privilege documents, scoped by tag and bucket, printed by the real CLI.
import { execFileSync, spawnSync } from 'node:child_process';
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
    // Issue 11, fault 6: the spot service-linked role may be created, and only that role.
    expect(statement(doc, 'CreateSpotServiceLinkedRole')).toMatchObject({
      Action: ['iam:CreateServiceLinkedRole'],
      Resource: 'arn:aws:iam::*:role/aws-service-role/spot.amazonaws.com/AWSServiceRoleForEC2Spot',
      Condition: { StringLike: { 'iam:AWSServiceName': 'spot.amazonaws.com' } },
    });
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
