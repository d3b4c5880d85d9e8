// `runctl doctor` for the aws provider: for the runs given, and each region, storage location,
// instance profile, image and network they use, checks that the account is ready before anything
// is launched. Every check is read-only except the storage probe (one object written, read back
// and deleted). Each region starts with the caller's identity; without it, the region's other
// checks are skipped (they would all fail the same way). Checks shared by several runs are made
// once and name all of them.
import { GetCallerIdentityCommand } from '@aws-sdk/client-sts';
import type { RunSpec } from '../../../spec/types.js';
import type { DoctorCheck, DoctorTarget } from '../../types.js';
import type { AwsClients } from '../clients.js';
import { awsCall } from '../errors.js';
import { gaveUp } from '../offerings.js';
import { RetryableError } from '../../types.js';
import { checkImage } from '../image-check.js';
import type { ImageResolver } from '../image.js';
import { describeInstanceTypes, type InstanceTypeFacts } from '../instance-types.js';
import { parseStorageUrl, type StorageLocation } from '../storage.js';
import { checkStorage } from './bucket.js';
import type { DoctorClients } from './clients.js';
import { checkSubnets } from './network.js';
import { checkQuotas, marketsOf } from './quotas.js';
import { checkInstanceProfile, checkRole, checkSpotRole, type RoleNeeds } from './role.js';
import { codeOf, isDenied, line, unable } from './result.js';

export interface DoctorDeps {
  clientsFor(region: string): AwsClients;
  doctorClientsFor(region: string): DoctorClients;
  regionFor(spec: RunSpec): Promise<string>;
  images: ImageResolver;
  /** runctl.yaml defaults.storage, for specs without checkpoints.storage. */
  defaultStorage?: string;
  /** The STS endpoint override in force (--endpoint-url, AWS_ENDPOINT_URL…), named when AWS cannot be reached. */
  stsEndpoint?: string;
}

/** Groups items by a key, keeping the runs that share it. */
function groupBy<T>(items: T[], key: (t: T) => string): Map<string, T[]> {
  const out = new Map<string, T[]>();
  for (const item of items) out.set(key(item), [...(out.get(key(item)) ?? []), item]);
  return out;
}

const SECRET = /^ssm:(\/.+)$/;

export async function runDoctor(deps: DoctorDeps, targets: DoctorTarget[]): Promise<DoctorCheck[]> {
  const checks: DoctorCheck[] = [];
  const withRegion = await Promise.all(targets.map(async (t) => ({ ...t, region: await deps.regionFor(t.spec) })));
  let account: string | undefined;
  let iamRegion: string | undefined;

  for (const [region, group] of groupBy(withRegion, (t) => t.region)) {
    const runs = group.map((t) => t.run);
    const clients = deps.clientsFor(region);
    const extra = deps.doctorClientsFor(region);

    try {
      const me = await gaveUp(() => awsCall({ service: 'sts', operation: 'GetCallerIdentity', region }, () => extra.sts.send(new GetCallerIdentityCommand({}))));
      account = me.Account ?? account;
      iamRegion ??= region;
      checks.push(line('credentials', region, runs, 'pass', `${me.Arn ?? 'caller'} (account ${me.Account ?? '?'})`));
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      checks.push(
        line(
          'credentials',
          region,
          runs,
          'fail',
          `${message}; the other checks for ${region} were skipped`,
          // Refused connections, DNS failures, timeouts and 5xx after the SDK's retries: the
          // credentials were never looked at, so the fix is the way to AWS, not a new login.
          err instanceof RetryableError
            ? `AWS did not answer${deps.stsEndpoint ? ` at ${deps.stsEndpoint}` : ''}: check the endpoint (AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_<SERVICE>, --endpoint-url), a proxy (HTTPS_PROXY) and the network, then run \`runctl doctor\` again`
            : 'refresh or choose credentials: `aws sso login`, AWS_PROFILE (or defaults.profile in runctl.yaml), or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY',
        ),
      );
      continue;
    }
    const acct = account ?? '?';

    // Storage: one set of checks per location.
    const storages = new Map<string, { location: StorageLocation; runs: string[] }>();
    for (const t of group) {
      const url = t.spec.checkpoints.storage ?? deps.defaultStorage;
      try {
        const location = parseStorageUrl(url);
        const key = `s3://${location.bucket}/${location.prefix}`;
        storages.set(key, { location, runs: [...(storages.get(key)?.runs ?? []), t.run] });
      } catch (err) {
        checks.push(line('bucket', url ?? '(none)', [t.run], 'fail', (err as Error).message, 'set spec.checkpoints.storage, or defaults.storage in runctl.yaml, to s3://bucket/prefix'));
      }
    }
    for (const { location, runs: who } of storages.values()) checks.push(...(await checkStorage(clients, location, region, who)));

    // Instance profiles and what their roles must allow.
    for (const [profile, users] of groupBy(group.filter((t) => t.spec.resources.iamInstanceProfile), (t) => t.spec.resources.iamInstanceProfile!)) {
      const who = users.map((u) => u.run);
      const { check, role } = await checkInstanceProfile(extra, profile, acct, who);
      checks.push(check);
      if (!role) continue;
      const needs: RoleNeeds = { storages: [], parameters: [] };
      for (const u of users) {
        const url = u.spec.checkpoints.storage ?? deps.defaultStorage;
        const s = [...storages.values()].find((x) => url !== undefined && x.runs.includes(u.run));
        if (s) {
          const known = needs.storages.find((n) => n.location === s.location);
          if (known) known.runs.push(u.run);
          else needs.storages.push({ location: s.location, runs: [u.run] });
        }
        for (const ref of Object.values(u.spec.secrets)) {
          const name = ref.match(SECRET)?.[1];
          if (!name) continue;
          const known = needs.parameters.find((p) => p.name === name);
          if (known) known.runs.push(u.run);
          else needs.parameters.push({ name, runs: [u.run] });
        }
      }
      checks.push(...(await checkRole(extra, role, acct, needs, who)));
    }

    // Instance types of the region, once: architectures for the image check, vCPUs for the quotas.
    let types = new Map<string, InstanceTypeFacts>();
    try {
      types = await describeInstanceTypes(clients, group.flatMap((t) => t.spec.resources.instanceTypes));
    } catch (err) {
      checks.push(unable('instance-types', region, runs, err, 'ec2:DescribeInstanceTypes'));
    }

    // Images: one check per image, instance-type list and root volume size.
    for (const users of groupBy(group, (t) => JSON.stringify([t.spec.resources.image, t.spec.resources.instanceTypes, t.spec.resources.rootVolumeGiB])).values()) {
      const r = users[0]!.spec.resources;
      const who = users.map((u) => u.run);
      const subject = r.image ?? '(none)';
      if (!r.image) {
        checks.push(line('image', subject, who, 'fail', 'spec.resources.image is not set', 'set spec.resources.image to an AMI id or an SSM parameter path (docs/aws.md)'));
        continue;
      }
      try {
        const { image, findings } = await checkImage(clients, r, deps.images, types);
        for (const f of findings) {
          const at = f.check === 'architecture' ? String(r.instanceTypes[f.path[3] as number]) : subject;
          checks.push(line(f.check, at, who, f.severity === 'error' ? 'fail' : 'warn', f.problem, f.fix));
        }
        if (!image) continue;
        const named = `${image.imageId}${image.from ? ` (from ${image.from})` : ''}`;
        checks.push(line('image', subject, who, 'pass', `image ${named} exists in ${region}${image.architecture ? ` (${image.architecture})` : ''}`));
        if (image.architecture && !findings.some((f) => f.check === 'architecture')) {
          const known = r.instanceTypes.filter((t) => types.has(t));
          if (known.length > 0) checks.push(line('architecture', known.join(', '), who, 'pass', `${known.join(', ')} ${known.length === 1 ? 'runs' : 'run'} ${image.architecture}, as the image does`));
        }
        if (image.rootSnapshotGiB !== undefined && !findings.some((f) => f.check === 'root-volume')) {
          checks.push(line('root-volume', subject, who, 'pass', `rootVolumeGiB ${r.rootVolumeGiB} holds the image's ${image.rootSnapshotGiB} GiB root snapshot`));
        }
      } catch (err) {
        checks.push(imageUnchecked(subject, region, acct, who, err));
      }
    }

    // Network: one check per subnet or zone list.
    for (const users of groupBy(group, (t) => JSON.stringify([t.spec.resources.subnetId, t.spec.resources.availabilityZones])).values()) {
      checks.push(await checkSubnets(clients, users[0]!.spec.resources, users.map((u) => u.run)));
    }

    // vCPU quotas of the families and markets the runs use.
    checks.push(...(await checkQuotas(extra, group.map((t) => ({ run: t.run, market: t.spec.resources.market, instanceTypes: t.spec.resources.instanceTypes })), types)));
  }

  // The spot service-linked role is account-wide (IAM is global): once, when any run may use spot.
  const spot = withRegion.filter((t) => marketsOf(t.spec.resources.market).includes('spot')).map((t) => t.run);
  if (spot.length > 0 && iamRegion) checks.push(await checkSpotRole(deps.doctorClientsFor(iamRegion), account ?? '?', spot));
  return checks;
}

/**
 * The line for an image that could not be checked. A parameter path is read with ssm:GetParameter
 * before DescribeImages; SSM's denial (AccessDeniedException, where EC2 says UnauthorizedOperation)
 * needs that permission on the parameter, which the controller policy has only under /aws/service/.
 */
function imageUnchecked(image: string, region: string, account: string, runs: string[], err: unknown): DoctorCheck {
  if (!image.startsWith('/') || !isDenied(err) || codeOf(err) !== 'AccessDeniedException') return unable('image', image, runs, err, 'ec2:DescribeImages');
  const message = err instanceof Error ? err.message : String(err);
  const published = image.startsWith('/aws/service/');
  const arn = `arn:aws:ssm:${region}:${published ? '' : account}:parameter${image}`;
  return line(
    'image',
    image,
    runs,
    'warn',
    `could not check: ${message}`,
    published
      ? `allow ssm:GetParameter on ${arn} to whoever runs doctor (\`runctl iam-policy --only controller\` includes it)`
      : `allow ssm:GetParameter on ${arn} to whoever runs doctor and to the controller, which resolves it at launch (\`runctl iam-policy\` covers only /aws/service/ parameters)`,
  );
}
