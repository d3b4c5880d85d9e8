// Every AWS failure becomes one of the port's three error kinds, with a message that says what to
// do and the AWS request id kept for the event log. The codes come from the EC2, SSM and S3 API
// references; anything unrecognised falls back on the HTTP status (5xx retryable, 4xx terminal).
import { CapacityError, ProviderError, RetryableError, TerminalError } from '../types.js';

export interface AwsCallContext {
  service: 'ec2' | 'ssm' | 's3' | 'iam' | 'sts' | 'servicequotas' | 'pricing';
  /** API operation, e.g. `RunInstances`. */
  operation: string;
  region?: string;
  /** Instance type being launched, used to name the quota to raise. */
  instanceType?: string;
  market?: 'spot' | 'on-demand';
}

interface SdkErrorShape {
  name?: string;
  code?: string;
  Code?: string;
  message?: string;
  $fault?: 'client' | 'server';
  $metadata?: { httpStatusCode?: number; requestId?: string; extendedRequestId?: string };
  $response?: { statusCode?: number };
}

const THROTTLING = new Set([
  'RequestLimitExceeded',
  'Throttling',
  'ThrottlingException',
  'ThrottledException',
  'TooManyRequestsException',
  'RequestThrottled',
  'RequestThrottledException',
  'SlowDown',
  'EC2ThrottledException',
  'BandwidthLimitExceeded',
  'PriorRequestNotComplete',
  'TransactionInProgressException',
]);

const TRANSIENT = new Set([
  'InternalError',
  'InternalFailure',
  'InternalServerError',
  'ServiceUnavailable',
  'Unavailable',
  'RequestTimeout',
  'RequestTimeoutException',
  'TimeoutError',
  'RequestAbortedError',
  'ECONNRESET',
  'ECONNREFUSED',
  'EPIPE',
  'ETIMEDOUT',
  'EAI_AGAIN',
  'ENOTFOUND',
]);

/** Capacity for this instance type / zone / market is not there now: try the next rung. */
export const CAPACITY_CODES = new Set([
  'InsufficientInstanceCapacity',
  'InsufficientCapacity',
  'InsufficientHostCapacity',
  'InsufficientReservedInstanceCapacity',
  'InsufficientCapacityOnHost',
  'SpotMaxPriceTooLow',
  'MaxSpotInstanceCountExceeded',
  'UnfulfillableCapacity',
]);

/**
 * Quotas: the account (or a subnet) is out of something that frees up when other instances or
 * volumes go away. EC2 user guide: terminated instances count against the limits for a while.
 */
export const QUOTA_CODES = new Set([
  'VcpuLimitExceeded',
  'InstanceLimitExceeded',
  'MaxSpotInstanceCountExceeded',
  'VolumeLimitExceeded',
  'MaxIOPSLimitExceeded',
  'ResourceLimitExceeded',
  'InsufficientFreeAddressesInSubnet',
]);

const PERMISSION_CODES = new Set([
  'UnauthorizedOperation',
  'AccessDenied',
  'AccessDeniedException',
  'AuthFailure',
  'Forbidden',
]);

const CREDENTIAL_CODES = new Set([
  'InvalidClientTokenId',
  'UnrecognizedClientException',
  'SignatureDoesNotMatch',
  'ExpiredToken',
  'ExpiredTokenException',
  'RequestExpired',
  'CredentialsProviderError',
  'TokenProviderError',
  'InvalidAccessKeyId',
]);

const ACCOUNT_CODES = new Set(['OptInRequired', 'Blocked', 'PendingVerification']);

/** IAM actions an operation needs besides its own name (`service:Operation`). */
const EXTRA_PERMISSIONS: Record<string, string[]> = {
  RunInstances: ['ec2:CreateTags (on create)', 'iam:PassRole (for the instance profile)'],
  SendCommand: ['ssm:SendCommand on document AWS-RunShellScript and on the tagged instances'],
  GetObject: ['s3:GetObject on the storage prefix'],
  PutObject: ['s3:PutObject on the storage prefix'],
  ListObjectsV2: ['s3:ListBucket on the bucket'],
  HeadObject: ['s3:GetObject on the storage prefix (HEAD needs it)'],
  CreateMultipartUpload: ['s3:PutObject on the storage prefix'],
};

export function errorCode(err: unknown): string | undefined {
  if (!err || typeof err !== 'object') return undefined;
  const e = err as SdkErrorShape;
  const code = e.Code ?? e.code ?? e.name;
  return typeof code === 'string' && code !== 'Error' ? code : undefined;
}

export function httpStatus(err: unknown): number | undefined {
  if (!err || typeof err !== 'object') return undefined;
  const e = err as SdkErrorShape;
  return e.$metadata?.httpStatusCode ?? e.$response?.statusCode;
}

export function requestIdOf(err: unknown): string | undefined {
  if (!err || typeof err !== 'object') return undefined;
  const meta = (err as SdkErrorShape).$metadata;
  return meta?.requestId ?? meta?.extendedRequestId;
}

export function isThrottling(err: unknown): boolean {
  const code = errorCode(err);
  return (code !== undefined && THROTTLING.has(code)) || httpStatus(err) === 429;
}

export function isCapacity(err: unknown): boolean {
  const code = errorCode(err);
  return code !== undefined && CAPACITY_CODES.has(code);
}

/** Worth repeating unchanged after a pause: throttling, server faults, the network. */
export function isTransient(err: unknown): boolean {
  if (isCapacity(err)) return false;
  if (isThrottling(err)) return true;
  const code = errorCode(err);
  if (code !== undefined && TRANSIENT.has(code)) return true;
  const status = httpStatus(err);
  if (status !== undefined) return status >= 500;
  // No HTTP response at all: the request never completed (socket errors carry their errno as code).
  const errno = (err as { code?: unknown } | undefined)?.code;
  return typeof errno === 'string' && TRANSIENT.has(errno);
}

function instanceFamily(type: string | undefined): string | undefined {
  return type?.match(/^([a-z]+(?:-[a-z0-9]+)?)\d/i)?.[1]?.toLowerCase() ?? type?.match(/^([a-z]+)/i)?.[1]?.toLowerCase();
}

/**
 * The EC2 vCPU quota group ("instance bucket") of an instance type, as Service Quotas names them:
 * Standard (A, C, D, H, I, M, R, T, Z), G and VT, P, F, X, Inf, DL, Trn, HPC, High Memory. The
 * longer prefixes are matched first (`inf` before `i`, `dl` before `d`, `trn` before `t`, `hpc`
 * before `h`). Source: EC2 user guide, "On-Demand Instance quotas".
 */
export function quotaGroup(instanceType: string | undefined): string {
  const family = instanceFamily(instanceType) ?? '';
  const groups: [RegExp, string][] = [
    [/^inf/, 'Inf'],
    [/^trn/, 'Trn'],
    [/^dl/, 'DL'],
    [/^hpc/, 'HPC'],
    [/^(g|vt)/, 'G and VT'],
    [/^p/, 'P'],
    [/^f/, 'F'],
    [/^x/, 'X'],
    [/^u/, 'High Memory'],
  ];
  return groups.find(([re]) => re.test(family))?.[1] ?? 'Standard (A, C, D, H, I, M, R, T, Z)';
}

/** The Service Quotas name that limits this instance type, as shown in the console. */
export function quotaName(instanceType: string | undefined, market: 'spot' | 'on-demand' | undefined): string {
  const group = quotaGroup(instanceType);
  return market === 'spot' ? `All ${group} Spot Instance Requests` : `Running On-Demand ${group} instances`;
}

/** How to raise a named EC2 quota: where it is in the console, and the CLI calls that find and raise it. */
export function quotaFix(quota: string, region: string | undefined): string {
  const where = region ? ` for ${region}` : '';
  return (
    `raise "${quota}" in Service Quotas${where} (console: Service Quotas > AWS services > Amazon EC2; or ` +
    `\`aws service-quotas list-service-quotas --service-code ec2 --query "Quotas[?QuotaName=='${quota}'].QuotaCode"\` ` +
    'then `aws service-quotas request-service-quota-increase --service-code ec2 --quota-code <code> --desired-value <vCPUs>`)'
  );
}

function describe(ctx: AwsCallContext): string {
  return `${ctx.service.toUpperCase()} ${ctx.operation}${ctx.region ? ` in ${ctx.region}` : ''}`;
}

function withRequestId(message: string, requestId: string | undefined): string {
  return requestId ? `${message} (request id ${requestId})` : message;
}

function awsMessage(err: unknown): string {
  const m = (err as SdkErrorShape | undefined)?.message;
  if (!m || m === 'UnknownError' || m === errorCode(err)) return '';
  // Encoded authorization messages are long and opaque; say how to decode them instead.
  return m.replace(/Encoded authorization failure message: \S+/, 'decode the details with `aws sts decode-authorization-message`');
}

/** Translate any error thrown by an AWS SDK call into a RetryableError, CapacityError or TerminalError. */
export function classifyAwsError(err: unknown, ctx: AwsCallContext): ProviderError {
  if (err instanceof ProviderError) return err;
  const code = errorCode(err) ?? `HTTP ${httpStatus(err) ?? 'error'}`;
  const requestId = requestIdOf(err);
  const detail = awsMessage(err);
  const what = describe(ctx);
  const opts = { code, requestId, cause: err };
  const said = detail ? `: ${detail}` : '';

  if (isCapacity(err)) {
    return new CapacityError(withRequestId(`${what} found no capacity (${code})${said}`, requestId), opts);
  }
  if (isTransient(err)) {
    return new RetryableError(withRequestId(`${what} failed temporarily (${code})${said}; runctl will retry`, requestId), opts);
  }
  if (QUOTA_CODES.has(code)) {
    const fix =
      code === 'VcpuLimitExceeded' || code === 'InstanceLimitExceeded'
        ? `raise the EC2 quota "${quotaName(ctx.instanceType, ctx.market)}" in Service Quotas${ctx.region ? ` for ${ctx.region}` : ''}, or choose a smaller instance type`
        : code === 'InsufficientFreeAddressesInSubnet'
          ? 'free addresses in the subnet or set spec.resources.subnetId to a larger one'
          : 'raise the named quota in Service Quotas or release unused resources';
    return new TerminalError(withRequestId(`${what} hit a quota (${code})${said}; to fix: ${fix}`, requestId), opts);
  }
  if (PERMISSION_CODES.has(code)) {
    const action = `${ctx.service}:${ctx.operation}`;
    const extra = EXTRA_PERMISSIONS[ctx.operation];
    const also = extra ? `; it may also need ${extra.join(', ')}` : '';
    return new TerminalError(
      withRequestId(
        `${what} was denied (${code}): the credentials runctl uses lack ${action}${also}. ` +
          `Run \`runctl iam-policy\` for the policy the controller needs${said ? ` (AWS said${said})` : ''}`,
        requestId,
      ),
      opts,
    );
  }
  if (CREDENTIAL_CODES.has(code)) {
    return new TerminalError(
      withRequestId(
        `${what} rejected the AWS credentials (${code})${said}. Check AWS_PROFILE / the profile in runctl.yaml, ` +
          'refresh an SSO session with `aws sso login`, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY',
        requestId,
      ),
      opts,
    );
  }
  if (ACCOUNT_CODES.has(code)) {
    return new TerminalError(withRequestId(`${what}: the AWS account cannot use this yet (${code})${said}`, requestId), opts);
  }
  return new TerminalError(withRequestId(`${what} failed (${code})${said}`, requestId), opts);
}

/** Runs one SDK call and rethrows any failure classified, with the call's context in the message. */
export async function awsCall<T>(ctx: AwsCallContext, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw classifyAwsError(err, ctx);
  }
}
