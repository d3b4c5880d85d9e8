// Least-privilege IAM policies for the two principals runctl involves: the controller (whoever runs
// `runctl reconcile` / `apply`: a laptop profile, a CI role, a control host's role) and the
// instance role behind spec.resources.iamInstanceProfile. Scoped by the runctl tags and the bucket
// prefix wherever the service supports resource-level permissions; the Describe* and SSM
// inventory calls do not, and say so by using "*".
import { TAG_CONTROLLER, TAG_RUN } from './tags.js';

export interface PolicyOptions {
  /** Bucket of checkpoints.storage; "*" when not given (then narrow it yourself). */
  bucket?: string;
  /** Prefix within the bucket, without leading or trailing slash. */
  prefix?: string;
  /** Restrict termination and commands to instances tagged with this controller. */
  controller?: string;
  /** Name of the instance role the controller passes to EC2 (iam:PassRole). */
  instanceRole?: string;
  /** SSM parameter path the instance may read secrets from, e.g. /team/runctl/*. */
  secretParameters?: string;
}

interface Statement {
  Sid: string;
  Effect: 'Allow';
  Action: string[];
  Resource: string | string[];
  Condition?: Record<string, Record<string, string | string[]>>;
}

export interface PolicyDocument {
  Version: '2012-10-17';
  Statement: Statement[];
}

export class PolicyInputError extends Error {
  override name = 'PolicyInputError';
}

const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

function validate(opts: PolicyOptions): { bucket: string; prefix: string } {
  if (opts.bucket !== undefined && !BUCKET.test(opts.bucket)) {
    throw new PolicyInputError(`--bucket "${opts.bucket}" is not an S3 bucket name (3-63 lowercase letters, digits, dots, hyphens)`);
  }
  const prefix = (opts.prefix ?? '').replace(/^\/+|\/+$/g, '');
  if (/[*?]/.test(prefix)) throw new PolicyInputError(`--prefix "${opts.prefix}" must not contain wildcards`);
  if (opts.instanceRole !== undefined && !/^[\w+=,.@-]{1,64}$/.test(opts.instanceRole)) {
    throw new PolicyInputError(`--instance-role "${opts.instanceRole}" is not an IAM role name`);
  }
  if (opts.secretParameters !== undefined && !opts.secretParameters.startsWith('/')) {
    throw new PolicyInputError(`--secret-parameters "${opts.secretParameters}" must be an SSM parameter path starting with /`);
  }
  return { bucket: opts.bucket ?? '*', prefix };
}

function s3Statements(bucket: string, prefix: string, sid: string, write: boolean): Statement[] {
  const objects = `arn:aws:s3:::${bucket}/${prefix ? `${prefix}/` : ''}*`;
  const list: Statement = {
    Sid: `${sid}List`,
    Effect: 'Allow',
    Action: ['s3:ListBucket'],
    Resource: `arn:aws:s3:::${bucket}`,
    ...(prefix ? { Condition: { StringLike: { 's3:prefix': [`${prefix}/*`, prefix] } } } : {}),
  };
  const rw: Statement = {
    Sid: `${sid}Objects`,
    Effect: 'Allow',
    Action: write
      ? ['s3:GetObject', 's3:PutObject', 's3:DeleteObject', 's3:AbortMultipartUpload', 's3:ListMultipartUploadParts']
      : ['s3:GetObject'],
    Resource: objects,
  };
  return [list, rw];
}

/** What the controller needs: launch and terminate tagged instances, run the agent install command, use storage. */
export function controllerPolicy(opts: PolicyOptions = {}): PolicyDocument {
  const { bucket, prefix } = validate(opts);
  const role = opts.instanceRole ?? 'runctl-instance';
  const owned: Record<string, Record<string, string | string[]>> = opts.controller
    ? { StringEquals: { [`aws:ResourceTag/${TAG_CONTROLLER}`]: opts.controller } }
    : { Null: { [`aws:ResourceTag/${TAG_RUN}`]: 'false' } };
  return {
    Version: '2012-10-17',
    Statement: [
      {
        Sid: 'ReadOnlyInventory',
        Effect: 'Allow',
        Action: [
          'ec2:DescribeInstances',
          'ec2:DescribeImages',
          'ec2:DescribeInstanceTypeOfferings',
          'ec2:DescribeSpotPriceHistory',
          'ssm:DescribeInstanceInformation',
          'ssm:GetCommandInvocation',
        ],
        Resource: '*',
      },
      {
        Sid: 'LaunchOnlyTaggedInstancesAndVolumes',
        Effect: 'Allow',
        Action: ['ec2:RunInstances'],
        Resource: ['arn:aws:ec2:*:*:instance/*', 'arn:aws:ec2:*:*:volume/*'],
        Condition: { Null: { [`aws:RequestTag/${TAG_RUN}`]: 'false', [`aws:RequestTag/${TAG_CONTROLLER}`]: 'false' } },
      },
      {
        Sid: 'LaunchUsingNetworkImagesAndSpot',
        Effect: 'Allow',
        Action: ['ec2:RunInstances'],
        Resource: [
          'arn:aws:ec2:*::image/*',
          'arn:aws:ec2:*:*:subnet/*',
          'arn:aws:ec2:*:*:security-group/*',
          'arn:aws:ec2:*:*:network-interface/*',
          'arn:aws:ec2:*:*:spot-instances-request/*',
        ],
      },
      {
        Sid: 'TagOnlyAtLaunch',
        Effect: 'Allow',
        Action: ['ec2:CreateTags'],
        Resource: ['arn:aws:ec2:*:*:instance/*', 'arn:aws:ec2:*:*:volume/*', 'arn:aws:ec2:*:*:spot-instances-request/*'],
        Condition: { StringEquals: { 'ec2:CreateAction': 'RunInstances' } },
      },
      {
        Sid: 'TerminateOwnInstances',
        Effect: 'Allow',
        Action: ['ec2:TerminateInstances'],
        Resource: 'arn:aws:ec2:*:*:instance/*',
        Condition: owned,
      },
      {
        Sid: 'PassInstanceRole',
        Effect: 'Allow',
        Action: ['iam:PassRole'],
        Resource: `arn:aws:iam::*:role/${role}`,
        Condition: { StringEquals: { 'iam:PassedToService': 'ec2.amazonaws.com' } },
      },
      {
        // The first spot request of an account creates AWSServiceRoleForEC2Spot; without this EC2
        // answers AuthFailure.ServiceLinkedRoleCreationNotPermitted (EC2 user guide, "Service-linked
        // role for Spot Instances"). Scoped to that one role and service.
        Sid: 'CreateSpotServiceLinkedRole',
        Effect: 'Allow',
        Action: ['iam:CreateServiceLinkedRole'],
        Resource: 'arn:aws:iam::*:role/aws-service-role/spot.amazonaws.com/AWSServiceRoleForEC2Spot',
        Condition: { StringLike: { 'iam:AWSServiceName': 'spot.amazonaws.com' } },
      },
      {
        Sid: 'RunAgentInstallOnOwnInstances',
        Effect: 'Allow',
        Action: ['ssm:SendCommand'],
        Resource: 'arn:aws:ec2:*:*:instance/*',
        Condition: opts.controller
          ? { StringEquals: { [`ssm:resourceTag/${TAG_CONTROLLER}`]: opts.controller } }
          : { StringLike: { [`ssm:resourceTag/${TAG_RUN}`]: '*' } },
      },
      {
        Sid: 'RunAgentInstallDocument',
        Effect: 'Allow',
        Action: ['ssm:SendCommand'],
        Resource: 'arn:aws:ssm:*::document/AWS-RunShellScript',
      },
      {
        Sid: 'ResolvePublicImageParameters',
        Effect: 'Allow',
        Action: ['ssm:GetParameter'],
        Resource: 'arn:aws:ssm:*::parameter/aws/service/*',
      },
      ...s3Statements(bucket, prefix, 'Storage', true),
    ],
  };
}

/** What the agent on the instance needs: SSM to receive the install command, storage, and its secrets. */
export function instancePolicy(opts: PolicyOptions = {}): PolicyDocument {
  const { bucket, prefix } = validate(opts);
  const statements: Statement[] = [
    {
      // The actions of the AWS managed policy AmazonSSMManagedInstanceCore that Run Command needs.
      Sid: 'SsmManagedInstance',
      Effect: 'Allow',
      Action: [
        'ssm:UpdateInstanceInformation',
        'ssmmessages:CreateControlChannel',
        'ssmmessages:CreateDataChannel',
        'ssmmessages:OpenControlChannel',
        'ssmmessages:OpenDataChannel',
        'ec2messages:AcknowledgeMessage',
        'ec2messages:DeleteMessage',
        'ec2messages:FailMessage',
        'ec2messages:GetEndpoint',
        'ec2messages:GetMessages',
        'ec2messages:SendReply',
      ],
      Resource: '*',
    },
    ...s3Statements(bucket, prefix, 'Storage', true),
  ];
  if (opts.secretParameters) {
    statements.push({
      Sid: 'ReadSecrets',
      Effect: 'Allow',
      Action: ['ssm:GetParameter'],
      Resource: `arn:aws:ssm:*:*:parameter${opts.secretParameters}`,
    });
  }
  return { Version: '2012-10-17', Statement: statements };
}

/** Trust policy of the instance role: EC2 may assume it. */
export function instanceTrustPolicy(): Record<string, unknown> {
  return {
    Version: '2012-10-17',
    Statement: [{ Effect: 'Allow', Principal: { Service: 'ec2.amazonaws.com' }, Action: 'sts:AssumeRole' }],
  };
}
