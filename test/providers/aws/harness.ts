// Shared arrangement for the aws provider tests: moto (shared or private), the fleet simulator in
// front of it, an instance profile and a bucket in moto, and a provider whose SDK clients record
// every call (once per operation, and once per HTTP attempt, retries included).
import { randomUUID } from 'node:crypto';
import { createClients, type AwsClients } from '../../../src/providers/aws/clients.js';
import { createAwsProvider, type AwsProvider, type AwsProviderOptions } from '../../../src/providers/aws/index.js';
import type { RunSpec } from '../../../src/spec/types.js';
import { startFleet, type Fleet, type FleetTiming } from '../../support/fleet/index.js';
import { createBucket, createInstanceProfile, useMoto } from '../../support/moto.js';

export const REGION = 'us-east-1';
export const PROFILE = 'runctl-test-instance';
export const CREDENTIALS = { accessKeyId: 'testing', secretAccessKey: 'testing' };

export interface SdkCall {
  service: string;
  operation: string;
  input: Record<string, unknown>;
}

/**
 * Acceptance 3, enforced on every launch of every test that uses these clients: a RunInstances
 * request without IMDSv2 required, encrypted volumes, or all four ownership tags on both the
 * instance and its volumes never reaches EC2; the call fails instead, and with it the test.
 */
export function launchRequestProblems(input: Record<string, unknown>): string[] {
  const problems: string[] = [];
  const i = input as {
    MetadataOptions?: { HttpTokens?: string };
    BlockDeviceMappings?: { Ebs?: { Encrypted?: boolean } }[];
    TagSpecifications?: { ResourceType?: string; Tags?: { Key?: string; Value?: string }[] }[];
  };
  if (i.MetadataOptions?.HttpTokens !== 'required') problems.push('MetadataOptions.HttpTokens is not "required"');
  const mappings = i.BlockDeviceMappings ?? [];
  if (mappings.length === 0 || mappings.some((m) => m.Ebs?.Encrypted !== true)) problems.push('a block device is not encrypted');
  for (const resource of ['instance', 'volume']) {
    const tags = i.TagSpecifications?.find((t) => t.ResourceType === resource)?.Tags ?? [];
    for (const key of ['runctl:run', 'runctl:generation', 'runctl:attempt', 'runctl:controller']) {
      if (!tags.some((t) => t.Key === key && t.Value)) problems.push(`${resource} lacks tag ${key}`);
    }
  }
  return problems;
}

export interface Recorder {
  /** One entry per operation the provider asked for. */
  calls: SdkCall[];
  /** One entry per HTTP attempt (retries included). */
  attempts: SdkCall[];
  /** RunInstances requests that passed launchRequestProblems on their way out. */
  launchesChecked: number;
  reset(): void;
  count(service: string, operation?: string, which?: 'calls' | 'attempts'): number;
}

export function recordingClients(endpointUrl: string, opts: { retry?: AwsProviderOptions['retry'] } = {}): {
  factory: (region: string) => AwsClients;
  recorder: Recorder;
} {
  const recorder: Recorder = {
    calls: [],
    attempts: [],
    reset() {
      recorder.calls.length = 0;
      recorder.attempts.length = 0;
    },
    count(service, operation, which = 'calls') {
      return recorder[which].filter((c) => c.service === service && (!operation || c.operation === operation)).length;
    },
    launchesChecked: 0,
  };
  const factory = (region: string) => {
    const clients = createClients(region, { endpointUrl, credentials: CREDENTIALS, retry: opts.retry });
    for (const [service, client] of [
      ['ec2', clients.ec2],
      ['ssm', clients.ssm],
      ['s3', clients.s3],
    ] as const) {
      const stack = client.middlewareStack as unknown as {
        add(mw: unknown, opts: { step: string; name: string; priority?: string }): void;
      };
      const entry = (list: SdkCall[]) => (next: (a: unknown) => Promise<unknown>, context: { commandName?: string }) => async (args: { input: Record<string, unknown> }) => {
        list.push({ service, operation: (context.commandName ?? '').replace(/Command$/, ''), input: args.input });
        return next(args);
      };
      stack.add(entry(recorder.calls), { step: 'initialize', name: 'testRecordCalls' });
      if (service === 'ec2') {
        stack.add(
          (next: (a: unknown) => Promise<unknown>, context: { commandName?: string }) => async (args: { input: Record<string, unknown> }) => {
            if (context.commandName === 'RunInstancesCommand') {
              const problems = launchRequestProblems(args.input);
              if (problems.length > 0) throw new Error(`unsafe launch request: ${problems.join('; ')}`);
              recorder.launchesChecked++;
            }
            return next(args);
          },
          { step: 'initialize', name: 'testCheckLaunches' },
        );
      }
      stack.add(entry(recorder.attempts), { step: 'deserialize', name: 'testRecordAttempts' });
    }
    return clients;
  };
  return { factory, recorder };
}

export interface AwsRig {
  motoUrl: string;
  fleet: Fleet;
  bucket: string;
  release(): Promise<void>;
  /** A provider talking to the fleet proxy, with its own controller tag unless one is given. */
  provider(opts?: Partial<AwsProviderOptions>): { provider: AwsProvider; recorder: Recorder; controller: string };
}

export async function startRig(fleetOpts: { bootDelayMs?: number; timing?: Partial<FleetTiming> } = {}): Promise<AwsRig> {
  const moto = await useMoto();
  const fleet = await startFleet({ motoUrl: moto.url, region: REGION, ...fleetOpts });
  const bucket = `runctl-test-${randomUUID().slice(0, 8)}`;
  await createInstanceProfile(moto.url, PROFILE);
  await createBucket(moto.url, bucket, REGION);
  const providers: AwsProvider[] = [];
  return {
    motoUrl: moto.url,
    fleet,
    bucket,
    provider(opts = {}) {
      const { factory, recorder } = recordingClients(opts.endpointUrl ?? fleet.endpoint, { retry: { baseDelayMs: 20, ...opts.retry } });
      const controller = opts.controller ?? `test-${randomUUID().slice(0, 8)}`;
      const provider = createAwsProvider({
        region: REGION,
        endpointUrl: fleet.endpoint,
        credentials: CREDENTIALS,
        controller,
        clients: factory,
        pollIntervalMs: 200,
        ssmPollMs: 200,
        ssmDeadlineMs: 30_000,
        ...opts,
      });
      providers.push(provider);
      return { provider, recorder, controller };
    },
    async release() {
      for (const p of providers) await p.close();
      await fleet.close();
      await moto.release();
    },
  };
}

export function awsSpec(bucket: string, overrides: { resources?: Partial<RunSpec['resources']>; checkpoints?: Partial<RunSpec['checkpoints']> } & Partial<Omit<RunSpec, 'resources' | 'checkpoints'>> = {}): RunSpec {
  const { resources, checkpoints, ...rest } = overrides;
  return {
    provider: 'aws',
    code: { path: '.', exclude: [] },
    run: 'python3 train.py',
    env: {},
    secrets: {},
    resources: {
      instanceTypes: ['g5.xlarge', 'g6.xlarge'],
      market: 'spot-then-on-demand',
      region: REGION,
      availabilityZones: [],
      image: 'ami-12c6146b',
      rootVolumeGiB: 50,
      iamInstanceProfile: PROFILE,
      securityGroupIds: [],
      ...resources,
    },
    checkpoints: {
      dir: '/opt/runctl/checkpoints',
      storage: `s3://${bucket}/runctl`,
      syncInterval: '5m',
      keep: 3,
      signal: 'SIGTERM',
      signalScope: 'main',
      gracePeriod: '90s',
      ...checkpoints,
    },
    recovery: { maxInterruptions: 5, maxRetriesOnError: 1, seedFromPreviousGeneration: false },
    timeouts: { provisioning: '15m', installing: '30m', training: '48h' },
    budget: {},
    suspend: false,
    ...rest,
  };
}
