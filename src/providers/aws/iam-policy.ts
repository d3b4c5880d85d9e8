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
  /**
   * The instance role the controller passes to EC2 (iam:PassRole): a name, or a path and a name
   * (`/team/runctl-instance`), since a role's ARN includes its path (IAM User Guide, "IAM ARNs").
   */
  instanceRole?: string;
  /** SSM parameter path the instance may read secrets from, e.g. /team/runctl/*. */
  secretParameters?: string;
  /** Shared state store (`state:` in runctl.yaml, `--state`): s3://bucket/prefix; the controller reads and writes under it. */
  state?: string;
  /**
   * ARN of the customer-managed KMS key of the account's EBS default encryption. EC2 uses it on
   * the controller's behalf to encrypt the root volume at launch, so the controller needs grants on
   * it through EC2 (EBS User Guide, "Permissions for IAM users": kms:CreateGrant, Decrypt,
   * GenerateDataKeyWithoutPlaintext, ReEncrypt*, DescribeKey with kms:ViaService ec2).
   */
  ebsKmsKey?: string;
  /**
   * ARN of the KMS key of a bucket encrypted with SSE-KMS: whoever writes needs kms:GenerateDataKey,
   * whoever reads kms:Decrypt, through S3 (kms:ViaService s3). Both the controller and the instance.
   */
  bucketKmsKey?: string;
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
/** An IAM role name, optionally after a path (`/team/`): path segments and name from IAM's character set. */
const ROLE = /^(?:\/?(?:[\w+=,.@-]+\/)*)?[\w+=,.@-]{1,64}$/;
const KMS_KEY = /^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(?:key|alias)\/[\w/+=,.@-]+$/;

/** `role/<path><name>` for an ARN, from a name or `/path/name`. */
function roleResource(role: string): string {
  const trimmed = role.replace(/^\/+/, '');
  return `role/${trimmed}`;
}

function validate(opts: PolicyOptions): { bucket: string; prefix: string } {
  if (opts.bucket !== undefined && !BUCKET.test(opts.bucket)) {
    throw new PolicyInputError(`--bucket "${opts.bucket}" is not an S3 bucket name (3-63 lowercase letters, digits, dots, hyphens)`);
  }
  const prefix = (opts.prefix ?? '').replace(/^\/+|\/+$/g, '');
  if (/[*?]/.test(prefix)) throw new PolicyInputError(`--prefix "${opts.prefix}" must not contain wildcards`);
  if (opts.instanceRole !== undefined && !ROLE.test(opts.instanceRole)) {
    throw new PolicyInputError(`--instance-role "${opts.instanceRole}" is not an IAM role name or /path/name`);
  }
  for (const [flag, key] of [['--ebs-kms-key', opts.ebsKmsKey], ['--bucket-kms-key', opts.bucketKmsKey]] as const) {
    if (key !== undefined && !KMS_KEY.test(key)) {
      throw new PolicyInputError(`${flag} "${key}" is not a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>)`);
    }
  }
  if (opts.state !== undefined) parseState(opts.state);
  if (opts.secretParameters !== undefined && !opts.secretParameters.startsWith('/')) {
    throw new PolicyInputError(`--secret-parameters "${opts.secretParameters}" must be an SSM parameter path starting with /`);
  }
  return { bucket: opts.bucket ?? '*', prefix };
}

function parseState(url: string): { bucket: string; prefix: string } {
  const m = url.match(/^s3:\/\/([^/]+)\/?(.*)$/);
  if (!m || !BUCKET.test(m[1]!)) throw new PolicyInputError(`--state "${url}" is not s3://bucket/prefix`);
  const prefix = (m[2] ?? '').replace(/^\/+|\/+$/g, '');
  if (/[*?]/.test(prefix)) throw new PolicyInputError(`--state "${url}" must not contain wildcards`);
  return { bucket: m[1]!, prefix };
}

/** kms actions on `key`, only when the call comes through `service` (kms:ViaService, any region). */
function kmsThrough(sid: string, key: string, service: 'ec2' | 's3', actions: string[]): Statement {
  return {
    Sid: sid,
    Effect: 'Allow',
    Action: actions,
    Resource: key,
    Condition: { StringLike: { 'kms:ViaService': `${service}.*.amazonaws.com` } },
  };
}

export function s3Statements(bucket: string, prefix: string, sid: string, write: boolean): Statement[] {
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
  const role = roleResource(opts.instanceRole ?? 'runctl-instance');
  const state = opts.state !== undefined ? parseState(opts.state) : undefined;
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
          // Scheduled events (instance-retirement, instance-stop, reboots) and failed status checks (issue 11, fault 5).
          'ec2:DescribeInstanceStatus',
          'ec2:DescribeImages',
          'ec2:DescribeInstanceTypeOfferings',
          'ec2:DescribeInstanceTypes',
          // The ledger (issue 12): spot prices over each instance's life, on-demand prices from the
          // Price List API (it supports no resource-level permissions: Resource must be "*").
          'ec2:DescribeSpotPriceHistory',
          'pricing:GetProducts',
          'ssm:DescribeInstanceInformation',
          'ssm:GetCommandInvocation',
          // Error messages carry an encoded authorization message and tell the user to decode it.
          'sts:DecodeAuthorizationMessage',
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
        Resource: `arn:aws:iam::*:${role}`,
        Condition: { StringEquals: { 'iam:PassedToService': 'ec2.amazonaws.com' } },
      },
      {
        // The first spot launch in an account creates AWSServiceRoleForEC2Spot (EC2 User Guide,
        // "Service-linked role for Spot Instance requests"); only that role, only for spot.
        Sid: 'CreateSpotServiceLinkedRole',
        Effect: 'Allow',
        Action: ['iam:CreateServiceLinkedRole'],
        Resource: 'arn:aws:iam::*:role/aws-service-role/spot.amazonaws.com/AWSServiceRoleForEC2Spot',
        Condition: { StringEquals: { 'iam:AWSServiceName': 'spot.amazonaws.com' } },
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
      ...(state ? s3Statements(state.bucket, state.prefix, 'State', true) : []),
      ...doctorStatements(bucket, role, state),
      ...(opts.ebsKmsKey
        ? [
            kmsThrough('EbsDefaultEncryptionKey', opts.ebsKmsKey, 'ec2', [
              'kms:Decrypt',
              'kms:GenerateDataKeyWithoutPlaintext',
              'kms:ReEncryptFrom',
              'kms:ReEncryptTo',
              'kms:DescribeKey',
            ]),
            {
              Sid: 'EbsDefaultEncryptionKeyGrants',
              Effect: 'Allow' as const,
              Action: ['kms:CreateGrant'],
              Resource: opts.ebsKmsKey,
              Condition: { StringLike: { 'kms:ViaService': 'ec2.*.amazonaws.com' }, Bool: { 'kms:GrantIsForAWSResource': 'true' } },
            },
          ]
        : []),
      ...(opts.bucketKmsKey ? [kmsThrough('BucketKey', opts.bucketKmsKey, 's3', ['kms:GenerateDataKey', 'kms:Decrypt'])] : []),
    ],
  };
}

/**
 * What `runctl doctor` reads beyond the controller's own calls: who the caller is (sts:GetCallerIdentity
 * needs no permission), the bucket's region, the instance profile and a simulation of its role, the
 * spot service-linked role, subnets, and the EC2 vCPU quotas. All read-only.
 */
function doctorStatements(bucket: string, role: string, state?: { bucket: string }): Statement[] {
  return [
    {
      Sid: 'DoctorReadOnly',
      Effect: 'Allow',
      Action: ['ec2:DescribeSubnets', 'servicequotas:GetServiceQuota', 'servicequotas:GetAWSDefaultServiceQuota'],
      Resource: '*',
    },
    {
      Sid: 'DoctorBucketRegion',
      Effect: 'Allow',
      Action: ['s3:GetBucketLocation'],
      Resource: [...new Set([bucket, ...(state ? [state.bucket] : [])])].map((b) => `arn:aws:s3:::${b}`),
    },
    {
      Sid: 'DoctorInstanceProfileAndRoles',
      Effect: 'Allow',
      Action: ['iam:GetInstanceProfile', 'iam:GetRole', 'iam:SimulatePrincipalPolicy'],
      Resource: [
        'arn:aws:iam::*:instance-profile/*',
        `arn:aws:iam::*:${role}`,
        'arn:aws:iam::*:role/aws-service-role/spot.amazonaws.com/AWSServiceRoleForEC2Spot',
      ],
    },
  ];
}

/** The actions of the AWS managed policy AmazonSSMManagedInstanceCore that Run Command needs on the instance. */
export const SSM_CORE_ACTIONS: string[] = [
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
];

/** What the agent on the instance needs: SSM to receive the install command, storage, and its secrets. */
export function instancePolicy(opts: PolicyOptions = {}): PolicyDocument {
  const { bucket, prefix } = validate(opts);
  const statements: Statement[] = [
    {
      // The actions of the AWS managed policy AmazonSSMManagedInstanceCore that Run Command needs.
      Sid: 'SsmManagedInstance',
      Effect: 'Allow',
      Action: [...SSM_CORE_ACTIONS],
      Resource: '*',
    },
    ...s3Statements(bucket, prefix, 'Storage', true),
  ];
  if (opts.bucketKmsKey) statements.push(kmsThrough('BucketKey', opts.bucketKmsKey, 's3', ['kms:GenerateDataKey', 'kms:Decrypt']));
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
