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
  type CapacityPool,
  type LaunchRequest,
  type LaunchResult,
  type MarketKind,
} from '../types.js';
import type { AwsClients } from './clients.js';
import { awsCall, classifyAwsError, errorCode, quotaFix, quotaGroup, quotaName, requestIdOf } from './errors.js';
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

/** RunInstances' input for one rung; `userData` is the raw script (base64-encoded here, as EC2 requires). */
export function runInstancesInput(req: LaunchRequest, rung: Rung, image: ResolvedImage, token: string, userData?: string): RunInstancesCommandInput {
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
    ...(userData !== undefined ? { UserData: Buffer.from(userData, 'utf8').toString('base64') } : {}),
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
  /**
   * The user data to launch with (LaunchRequest.bootAgent), asked for once and only when an
   * instance is about to be requested (not when one is adopted): the script, or why there is none.
   */
  userData?: () => Promise<{ script: string } | { reason: string }>;
}

/** EC2's limit on user data, in bytes before base64 (EC2 User Guide, "Run commands when you launch an EC2 instance with user data input"). */
export const USER_DATA_MAX_BYTES = 16 * 1024;

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

/**
 * What one refused RunInstances means for the rest of the ladder (EC2 API reference, error codes):
 * - `capacity`: this rung has none now (InsufficientInstanceCapacity, SpotMaxPriceTooLow, ...);
 * - `quota`: a quota shared by other rungs refused it; every rung in the same `bucket` is skipped
 *   (vCPU quotas are per market and instance family group, spot requests per group, free addresses
 *   per subnet, EBS storage per account), the others are still tried;
 * - `unusable`: this rung can never launch as specified (`Unsupported`: the type is not offered in
 *   that zone or market; an AMI architecture that does not match the type); skipped, not retried;
 * - `no-spot`: the account cannot use spot at all yet (the spot service-linked role is missing and
 *   the caller may not create it); every spot rung is skipped, on-demand rungs are tried;
 * - `profile-not-ready`: IAM has not propagated a just-created instance profile (every rung shares it);
 * - `fatal`: anything else, classified as usual.
 */
export type LaunchRefusal =
  | { kind: 'capacity'; code: string }
  | { kind: 'quota'; code: string; bucket: string; quota: string; fix: string }
  | { kind: 'unusable'; code: string; why: string }
  | { kind: 'no-spot'; code: string; why: string }
  | { kind: 'profile-not-ready'; code: string; message: string }
  | { kind: 'fatal'; error: ProviderError };

const SPOT_ROLE_FIX =
  'create the spot service-linked role once with `aws iam create-service-linked-role --aws-service-name spot.amazonaws.com` ' +
  '(an administrator), or grant the controller iam:CreateServiceLinkedRole for spot.amazonaws.com (`runctl iam-policy` includes it)';

/** Classifies a RunInstances failure on one rung; see LaunchRefusal. */
export function classifyLaunchRefusal(err: unknown, rung: Rung, resources: ResourcesSpec, region: string): LaunchRefusal {
  const code = errorCode(err) ?? '';
  const message = String((err as { message?: unknown } | undefined)?.message ?? '');
  const ctx = { service: 'ec2' as const, operation: 'RunInstances', region, instanceType: rung.instanceType, market: rung.market };
  if (code === 'VcpuLimitExceeded' || code === 'InstanceLimitExceeded' || code === 'MaxSpotInstanceCountExceeded') {
    const market = code === 'MaxSpotInstanceCountExceeded' ? 'spot' : rung.market;
    const quota = quotaName(rung.instanceType, market);
    return { kind: 'quota', code, bucket: `${market}:${quotaGroup(rung.instanceType)}`, quota, fix: quotaFix(quota, region) };
  }
  if (code === 'InsufficientFreeAddressesInSubnet') {
    const subnet = resources.subnetId ?? (rung.zone ? `the default subnet of ${rung.zone}` : 'the default subnet');
    return {
      kind: 'quota',
      code,
      bucket: `subnet:${resources.subnetId ?? rung.zone ?? '*'}`,
      quota: `free IP addresses in ${subnet}`,
      fix: 'terminate unused instances or network interfaces in that subnet, or set spec.resources.subnetId to a larger subnet',
    };
  }
  if (code === 'VolumeLimitExceeded' || code === 'MaxIOPSLimitExceeded') {
    const quota = code === 'VolumeLimitExceeded' ? 'Storage for General Purpose SSD (gp3) volumes, in TiB' : 'IOPS for General Purpose SSD (gp3) volumes';
    return {
      kind: 'quota',
      code,
      bucket: 'ebs',
      quota,
      fix: `raise "${quota}" in Service Quotas for ${region} (service Amazon Elastic Block Store), delete unused volumes, or lower spec.resources.rootVolumeGiB`,
    };
  }
  if (code === 'Unsupported') {
    return { kind: 'unusable', code, why: message || `${rung.instanceType} is not supported here` };
  }
  if ((code === 'InvalidParameterValue' || code === 'InvalidParameterCombination') && /architecture/i.test(message)) {
    return { kind: 'unusable', code, why: `${message} (spec.resources.image must match every type in spec.resources.instanceTypes, or the mismatched type is skipped)` };
  }
  if (code === 'AuthFailure.ServiceLinkedRoleCreationNotPermitted' && rung.market === 'spot') {
    return { kind: 'no-spot', code, why: `${message || code}; to use spot: ${SPOT_ROLE_FIX}` };
  }
  if (code === 'InvalidParameterValue' && /Invalid IAM Instance Profile|iamInstanceProfile/i.test(message)) {
    const profile = resources.iamInstanceProfile ?? '';
    return {
      kind: 'profile-not-ready',
      code,
      message:
        `EC2 does not accept the instance profile "${profile}" (spec.resources.iamInstanceProfile): either it does not exist ` +
        'in this account (create it: see `runctl iam-policy` and docs/aws.md), or it was created moments ago and IAM has not ' +
        'propagated it to EC2 yet (that takes seconds, sometimes minutes); runctl keeps trying until spec.timeouts.provisioning',
    };
  }
  const classified = classifyAwsError(err, ctx);
  if (classified instanceof CapacityError) return { kind: 'capacity', code };
  return { kind: 'fatal', error: classified };
}

/** Whether a rung asks for capacity of this pool (a rung or pool without a zone spans every zone). */
export function inPool(rung: Rung, pool: CapacityPool): boolean {
  return (
    (pool.market === undefined || pool.market === rung.market) &&
    (pool.type === undefined || pool.type === rung.instanceType) &&
    (pool.zone === undefined || rung.zone === undefined || pool.zone === rung.zone)
  );
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
  const boot = deps.userData ? await deps.userData() : undefined;
  const userData = boot && 'script' in boot ? boot.script : undefined;
  const bootAgent: LaunchResult['bootAgent'] = boot ? ('script' in boot ? { started: true } : { started: false, reason: boot.reason }) : undefined;
  const ladder = marketLadder(req.spec.resources);
  const exhausted = new Set(req.exhausted ?? []);
  // Rungs found empty earlier in this attempt are skipped, unless that leaves nothing: capacity returns.
  let rungs = ladder.every((r) => exhausted.has(r.id)) ? ladder : ladder.filter((r) => !exhausted.has(r.id));
  // A replacement launched during a notice tries the reclaimed pool last (issue 12).
  const avoided = (r: Rung) => (req.avoidPools ?? []).some((p) => inPool(r, p));
  rungs = [...rungs.filter((r) => !avoided(r)), ...rungs.filter(avoided)];
  // A rung whose RunInstances was sent before a crash goes first, with the same token: EC2 returns
  // the instance it launched even while Describe does not show it yet (exactly-once across rungs).
  const replay = req.inFlight ? rungs.find((r) => r.id === req.inFlight?.rung) : undefined;
  if (replay) rungs = [replay, ...rungs.filter((r) => r !== replay)];

  const failures: string[] = [];
  const blocked = new Map<string, { quota: string; fix: string; code: string }>();
  const unusable: string[] = [];
  let noSpot: string | undefined;
  let capacityRefusals = 0;
  let quotaRefusals = 0;

  for (const rung of rungs) {
    if (rung.market === 'spot' && noSpot) continue;
    const bucket = quotaBuckets(rung, req.spec.resources).find((b) => blocked.has(b));
    if (bucket) {
      failures.push(`${rung.id}: skipped, ${blocked.get(bucket)?.quota} refused`);
      continue;
    }
    const token = replay === rung && req.inFlight ? req.inFlight.token : clientToken(req, req.controller, rung.id);
    await req.beforeRunInstances?.({ rung: rung.id, token });
    const input = runInstancesInput(req, rung, image, token, userData);
    try {
      const out = await clients.ec2.send(new RunInstancesCommand(input));
      const instance = out.Instances?.[0];
      if (!instance?.InstanceId) {
        throw new RetryableError(`EC2 RunInstances returned no instance for ${rung.id}`, { code: 'EmptyRunInstances' });
      }
      const ref = toInstanceRef(instance);
      const price = await deps.prices.pricePerHour(clients, rung.market, rung.instanceType, ref.zone ?? rung.zone);
      return { instance: toInstanceRef(instance, price), adopted: false, ...(bootAgent ? { bootAgent } : {}) };
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
      const refusal = classifyLaunchRefusal(err, rung, req.spec.resources, clients.region);
      switch (refusal.kind) {
        case 'fatal':
          throw launchHint(refusal.error, req);
        case 'profile-not-ready':
          throw new CapacityError(withRequest(refusal.message, err), { code: refusal.code, cause: err, reason: 'InstanceProfileNotReady' });
        case 'capacity':
          capacityRefusals++;
          failures.push(`${rung.id}: ${refusal.code}`);
          break;
        case 'quota':
          quotaRefusals++;
          blocked.set(refusal.bucket, refusal);
          failures.push(`${rung.id}: ${refusal.code} (${refusal.quota})`);
          break;
        case 'unusable':
          unusable.push(`${rung.id}: ${refusal.code}: ${refusal.why}`);
          failures.push(`${rung.id}: ${refusal.code}`);
          break;
        case 'no-spot':
          noSpot = refusal.why;
          failures.push(`${rung.id}: ${refusal.code}`);
          break;
      }
    }
  }

  const market = req.spec.resources.market;
  if (capacityRefusals + quotaRefusals === 0) {
    // Nothing that waiting can fix: every rung was unusable, or spot is impossible and spot is all the spec allows.
    const why = [...unusable, ...(noSpot ? [`spot: ${noSpot}`] : [])];
    throw new TerminalError(`no rung of the ladder can launch: ${why.join('; ')}`, {
      code: noSpot && unusable.length === 0 ? 'AuthFailure.ServiceLinkedRoleCreationNotPermitted' : 'Unsupported',
    });
  }
  const advice =
    market === 'spot'
      ? 'runctl keeps retrying until timeouts.provisioning; to fall back to on-demand capacity set resources.market: spot-then-on-demand, or add instance types or zones'
      : 'runctl keeps retrying until timeouts.provisioning; adding instance types or availability zones widens the search';
  const quotas = [...new Map([...blocked.values()].map((b) => [b.quota, b])).values()];
  const quotaText = quotas.length ? `; quota refused: ${quotas.map((q) => `${q.quota} (${q.code}): to fix, ${q.fix}`).join('; ')}` : '';
  const extra = [...unusable.map((u) => `; skipped for good: ${u}`), ...(noSpot ? [`; spot skipped: ${noSpot}`] : [])].join('');
  const onlyQuota = quotaRefusals > 0 && capacityRefusals === 0;
  throw new CapacityError(`no rung of the ladder could launch (${failures.join('; ')})${quotaText}${extra}. ${advice}`, {
    code: onlyQuota ? quotas[0]?.code : 'InsufficientInstanceCapacity',
    reason: onlyQuota ? 'QuotaExceeded' : 'InsufficientCapacity',
  });
}

/** Every quota bucket a rung draws from (see LaunchRefusal). */
function quotaBuckets(rung: Rung, resources: ResourcesSpec): string[] {
  return [`${rung.market}:${quotaGroup(rung.instanceType)}`, `subnet:${resources.subnetId ?? rung.zone ?? '*'}`, 'ebs'];
}

function withRequest(message: string, err: unknown): string {
  const id = requestIdOf(err);
  return id ? `${message} (request id ${id})` : message;
}
