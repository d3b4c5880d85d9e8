// One set of SDK clients per region. Region and credentials follow the documented order: the
// spec's region, then the project default (runctl.yaml, passed in as `region`), then the standard
// AWS chain (AWS_REGION, the profile's config); credentials always come from the standard chain
// (env, SSO, profiles, IMDS) unless given explicitly, optionally with a named profile.
import { EC2Client } from '@aws-sdk/client-ec2';
import { PricingClient } from '@aws-sdk/client-pricing';
import { S3Client } from '@aws-sdk/client-s3';
import { SSMClient } from '@aws-sdk/client-ssm';
import { TerminalError } from '../types.js';
import { BoundedRetryStrategy, DEFAULT_RETRY, type RetryOptions } from './retry.js';

export interface AwsCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

export interface AwsClients {
  region: string;
  ec2: EC2Client;
  ssm: SSMClient;
  s3: S3Client;
}

export interface ClientOptions {
  /** Project default region (runctl.yaml `defaults.region`); a spec's own region wins. */
  region?: string;
  /** Custom endpoint for every service (moto, LocalStack, an S3-compatible store); implies S3 path-style. */
  endpointUrl?: string;
  profile?: string;
  credentials?: AwsCredentials;
  retry?: Partial<RetryOptions>;
}

/**
 * The SDK warns on every process start under Node < 22 that future SDK releases will need it. That
 * warning is about the SDK's release plans, not about anything a runctl user can act on, so it is
 * switched off with the SDK's own switch (other warnings are untouched). A user who sets the
 * variable explicitly keeps their choice.
 */
function silenceSdkNodeVersionWarning(): void {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
}

/** The endpoint override in force: the option, else the SDK's own environment variables. */
export function customEndpoint(opts: ClientOptions, service: 'S3' | 'EC2' | 'SSM' | 'STS'): string | undefined {
  return opts.endpointUrl ?? process.env[`AWS_ENDPOINT_URL_${service}`] ?? process.env.AWS_ENDPOINT_URL;
}

export function createClients(region: string, opts: ClientOptions): AwsClients {
  silenceSdkNodeVersionWarning();
  const common = {
    region,
    retryStrategy: new BoundedRetryStrategy({ ...DEFAULT_RETRY, ...opts.retry }),
    maxAttempts: opts.retry?.maxAttempts ?? DEFAULT_RETRY.maxAttempts,
    ...(opts.endpointUrl ? { endpoint: opts.endpointUrl } : {}),
    ...(opts.profile ? { profile: opts.profile } : {}),
    ...(opts.credentials ? { credentials: opts.credentials } : {}),
  };
  return {
    region,
    ec2: new EC2Client(common),
    ssm: new SSMClient(common),
    s3: new S3Client({
      ...common,
      forcePathStyle: customEndpoint(opts, 'S3') !== undefined,
      followRegionRedirects: true,
    }),
  };
}

/**
 * A Price List API client for one of its endpoint regions (price-list.ts), with the same
 * credentials, retries and custom endpoint as the other clients.
 */
export function createPricingClient(endpointRegion: string, opts: ClientOptions): PricingClient {
  silenceSdkNodeVersionWarning();
  return new PricingClient({
    region: endpointRegion,
    retryStrategy: new BoundedRetryStrategy({ ...DEFAULT_RETRY, ...opts.retry }),
    maxAttempts: opts.retry?.maxAttempts ?? DEFAULT_RETRY.maxAttempts,
    ...(opts.endpointUrl ? { endpoint: opts.endpointUrl } : {}),
    ...(opts.profile ? { profile: opts.profile } : {}),
    ...(opts.credentials ? { credentials: opts.credentials } : {}),
  });
}

/** The region from the standard chain (AWS_REGION, profile config), or a TerminalError saying where to set one. */
export async function chainRegion(opts: ClientOptions): Promise<string> {
  silenceSdkNodeVersionWarning();
  const probe = new EC2Client(opts.profile ? { profile: opts.profile } : {});
  try {
    const region = await probe.config.region();
    if (region) return region;
  } catch {
    // fall through to the explanation below
  } finally {
    probe.destroy();
  }
  throw new TerminalError(
    'no AWS region configured: set spec.resources.region, `defaults.region` in runctl.yaml, ' +
      'AWS_REGION, or a region in your AWS profile',
    { code: 'NoRegion' },
  );
}
