// Launching one attempt's instance: adopt it if it already exists, otherwise walk the capacity
// ladder (markets × instance types × zones) with RunInstances until one rung has capacity.
//
// Exactly-once launches rest on two things, because each covers the other's gap:
// - a lookup by the attempt's tags before every launch (moto ignores ClientToken; a controller that
//   crashed after RunInstances finds its instance here and adopts it);
// - a deterministic ClientToken per attempt and rung (real EC2 returns the existing instance for a
//   repeated token, covering the seconds in which a new instance is not yet visible to Describe).
import { createHash } from 'node:crypto';
import {
  DescribeInstancesCommand,
  RunInstancesCommand,
  type Instance,
  type RunInstancesCommandInput,
} from '@aws-sdk/client-ec2';
import type { ResourcesSpec } from '../../spec/types.js';
import {
  CapacityError,
  ProviderError,
  RetryableError,
  TerminalError,
  type AttemptKey,
  type LaunchRequest,
  type LaunchResult,
  type MarketKind,
} from '../types.js';
import type { AwsClients } from './clients.js';
import { awsCall, classifyAwsError, errorCode, quotaName } from './errors.js';
import type { ImageResolver, ResolvedImage } from './image.js';
import { preferLive, toInstanceRef } from './instance-ref.js';
import type { SpotPrices } from './pricing.js';
import { TAG_ATTEMPT, TAG_CONTROLLER, TAG_GENERATION, TAG_RUN, attemptFromTags, ownershipTags, sameAttempt } from './tags.js';

export interface Rung {
  /** Stable id, e.g. `spot/g5.xlarge/us-east-1a`; the reconciler passes exhausted ids back in `exhausted`. */
  id: string;
  market: MarketKind;
  instanceType: string;
  zone?: string;
}

/**
 * The order in which capacity is tried: every spot rung before any on-demand rung (spot is what the
 * user asked for first), and within a market the instance types in the spec's order, each across
 * the zones in the spec's order. A subnet fixes the zone, so zones are then left to the subnet.
 */
export function marketLadder(resources: ResourcesSpec): Rung[] {
  const markets: MarketKind[] =
    resources.market === 'spot' ? ['spot'] : resources.market === 'on-demand' ? ['on-demand'] : ['spot', 'on-demand'];
  const zones: (string | undefined)[] =
    resources.subnetId || resources.availabilityZones.length === 0 ? [undefined] : resources.availabilityZones;
  const rungs: Rung[] = [];
  for (const market of markets) {
    for (const instanceType of resources.instanceTypes) {
      for (const zone of zones) rungs.push({ id: `${market}/${instanceType}/${zone ?? '*'}`, market, instanceType, zone });
    }
  }
  return rungs;
}

/**
 * ≤ 64 ASCII characters, the same for the same attempt and rung on every controller restart, and
 * different for a run re-created under the same name (the uid is hashed in): EC2 keeps a token's
 * launch for some time, and a reused token would hand back the deleted run's instance or refuse.
 * Runs recorded before uids keep the token they had.
 */
export function clientToken(key: AttemptKey, controller: string, rungId: string): string {
  const identity = key.uid ? [controller, key.run, key.uid, key.generation, key.attempt, rungId] : [controller, key.run, key.generation, key.attempt, rungId];
  const digest = createHash('sha256').update(JSON.stringify(identity)).digest('hex');
  return `runctl-g${key.generation}-a${key.attempt}-${digest}`.slice(0, 64);
}

export function runInstancesInput(req: LaunchRequest, rung: Rung, image: ResolvedImage, token: string): RunInstancesCommandInput {
  const r = req.spec.resources;
  const tags = ownershipTags(req, req.controller);
  const profile = r.iamInstanceProfile;
  return {
    ImageId: image.imageId,
    InstanceType: rung.instanceType as RunInstancesCommandInput['InstanceType'],
    MinCount: 1,
    MaxCount: 1,
    ClientToken: token,
    ...(rung.market === 'spot'
      ? {
          InstanceMarketOptions: {
            MarketType: 'spot',
            SpotOptions: {
              SpotInstanceType: 'one-time',
              InstanceInterruptionBehavior: 'terminate',
              ...(r.maxSpotPrice !== undefined ? { MaxPrice: String(r.maxSpotPrice) } : {}),
            },
          },
        }
      : {}),
    ...(rung.zone ? { Placement: { AvailabilityZone: rung.zone } } : {}),
    ...(r.subnetId ? { SubnetId: r.subnetId } : {}),
    ...(r.securityGroupIds.length ? { SecurityGroupIds: r.securityGroupIds } : {}),
    ...(profile ? { IamInstanceProfile: profile.startsWith('arn:') ? { Arn: profile } : { Name: profile } } : {}),
    // IMDSv2 only; hop limit 2 so a job in a container on the instance still reaches IMDS.
    MetadataOptions: { HttpTokens: 'required', HttpEndpoint: 'enabled', HttpPutResponseHopLimit: 2 },
    BlockDeviceMappings: [
      {
        DeviceName: image.rootDeviceName,
        Ebs: { VolumeSize: r.rootVolumeGiB, VolumeType: 'gp3', Encrypted: true, DeleteOnTermination: true },
      },
    ],
    // A job that powers the machine off must not leave a stopped instance accruing volume charges.
    InstanceInitiatedShutdownBehavior: 'terminate',
    TagSpecifications: [
      { ResourceType: 'instance', Tags: tags },
      { ResourceType: 'volume', Tags: tags },
    ],
  };
}

/**
 * Every instance tagged with this attempt (run incarnation included) and controller, in any state.
 * The uid is matched here rather than in the filter: a run recorded before uids owns exactly the
 * instances *without* a `runctl:uid` tag, which EC2 filters cannot express.
 */
export async function findAttemptInstances(clients: AwsClients, key: AttemptKey, controller: string): Promise<Instance[]> {
  const out = await awsCall({ service: 'ec2', operation: 'DescribeInstances', region: clients.region }, () =>
    clients.ec2.send(
      new DescribeInstancesCommand({
        Filters: [
          { Name: `tag:${TAG_RUN}`, Values: [key.run] },
          { Name: `tag:${TAG_GENERATION}`, Values: [String(key.generation)] },
          { Name: `tag:${TAG_ATTEMPT}`, Values: [String(key.attempt)] },
          { Name: `tag:${TAG_CONTROLLER}`, Values: [controller] },
        ],
      }),
    ),
  );
  return (out.Reservations ?? [])
    .flatMap((r) => r.Instances ?? [])
    .filter((i) => {
      const tagged = attemptFromTags(i.Tags);
      return tagged !== undefined && sameAttempt(tagged, key);
    })
    .sort(preferLive);
}

export interface LaunchDeps {
  clients: AwsClients;
  images: ImageResolver;
  prices: SpotPrices;
}

function requireProfile(req: LaunchRequest): void {
  if (!req.spec.resources.iamInstanceProfile) {
    throw new TerminalError(
      'spec.resources.iamInstanceProfile is required for the aws provider: the instance needs a role to register ' +
        'with SSM and to read and write its storage (see `runctl iam-policy` for the instance policy)',
      { code: 'MissingInstanceProfile' },
    );
  }
  if (req.spec.resources.instanceTypes.length === 0) {
    throw new TerminalError('spec.resources.instanceTypes is empty: list at least one EC2 instance type', { code: 'NoInstanceTypes' });
  }
}

/** Extra words for launch errors whose AWS message does not say which spec field to change. */
function launchHint(err: ProviderError, req: LaunchRequest): ProviderError {
  const text = `${err.code ?? ''} ${err.message}`;
  const r = req.spec.resources;
  let hint: string | undefined;
  if (/iamInstanceProfile|NoSuchEntity|instance profile/i.test(text)) {
    hint = `check spec.resources.iamInstanceProfile ("${r.iamInstanceProfile}") names an instance profile that exists in this account`;
  } else if (/InvalidSubnetID/.test(text)) {
    hint = `check spec.resources.subnetId ("${r.subnetId}") exists in region ${req.spec.resources.region ?? 'configured'}`;
  } else if (/InvalidGroup|security group/i.test(text)) {
    hint = `check spec.resources.securityGroupIds (${r.securityGroupIds.join(', ')}) exist and belong to the subnet's VPC`;
  }
  if (!hint || !(err instanceof TerminalError)) return err;
  return new TerminalError(`${err.message}; ${hint}`, { code: err.code, requestId: err.requestId, cause: err.cause });
}

/** Adopt the attempt's instance if one exists; otherwise launch on the first rung with capacity. */
export async function launchAttempt(deps: LaunchDeps, req: LaunchRequest): Promise<LaunchResult> {
  const { clients } = deps;
  requireProfile(req);
  const existing = (await findAttemptInstances(clients, req, req.controller))[0];
  if (existing) {
    const ref = toInstanceRef(existing);
    const price = await deps.prices.pricePerHour(clients, ref.market ?? 'on-demand', ref.type, ref.zone);
    return { instance: toInstanceRef(existing, price), adopted: true };
  }

  const image = await deps.images.resolve(clients, req.spec.resources.image);
  const ladder = marketLadder(req.spec.resources);
  const exhausted = new Set(req.exhausted ?? []);
  // Rungs found empty earlier in this attempt are skipped, unless that leaves nothing: capacity returns.
  const rungs = ladder.every((r) => exhausted.has(r.id)) ? ladder : ladder.filter((r) => !exhausted.has(r.id));
  const failures: string[] = [];
  let spotQuotaReached = false;
  const spotQuotas = new Set<string>();

  for (const rung of rungs) {
    if (rung.market === 'spot' && spotQuotaReached) continue;
    const input = runInstancesInput(req, rung, image, clientToken(req, req.controller, rung.id));
    const ctx = { service: 'ec2' as const, operation: 'RunInstances', region: clients.region, instanceType: rung.instanceType, market: rung.market };
    try {
      const out = await clients.ec2.send(new RunInstancesCommand(input));
      const instance = out.Instances?.[0];
      if (!instance?.InstanceId) {
        throw new RetryableError(`EC2 RunInstances returned no instance for ${rung.id}`, { code: 'EmptyRunInstances' });
      }
      const ref = toInstanceRef(instance);
      const price = await deps.prices.pricePerHour(clients, rung.market, rung.instanceType, ref.zone ?? rung.zone);
      return { instance: toInstanceRef(instance, price), adopted: false };
    } catch (err) {
      if (err instanceof ProviderError) throw err;
      const code = errorCode(err);
      if (code === 'IdempotentParameterMismatch') {
        // This token already launched an instance, with other parameters (e.g. the image parameter
        // now points at a newer AMI). It is ours: wait until Describe shows it, then adopt it.
        throw new RetryableError(
          `an instance for ${req.run} generation ${req.generation} attempt ${req.attempt} was already requested (${rung.id}); ` +
            'waiting for EC2 to show it so it can be adopted',
          { code, cause: err },
        );
      }
      const classified = classifyAwsError(err, ctx);
      if (!(classified instanceof CapacityError)) throw launchHint(classified, req);
      failures.push(`${rung.id}: ${code}`);
      if (code === 'MaxSpotInstanceCountExceeded') {
        spotQuotaReached = true;
        spotQuotas.add(quotaName(rung.instanceType, 'spot'));
      }
    }
  }

  const market = req.spec.resources.market;
  const advice =
    market === 'spot'
      ? 'runctl keeps retrying until timeouts.provisioning; to fall back to on-demand capacity set resources.market: spot-then-on-demand, or add instance types or zones'
      : 'runctl keeps retrying until timeouts.provisioning; adding instance types or availability zones widens the search';
  const quota = spotQuotaReached
    ? `; the spot request quota is reached: raise ${[...spotQuotas].map((q) => `"${q}"`).join(' and ')} in Service Quotas for ${clients.region}`
    : '';
  throw new CapacityError(`no capacity on any rung of the ladder (${failures.join('; ')})${quota}. ${advice}`, {
    code: 'InsufficientInstanceCapacity',
  });
}
