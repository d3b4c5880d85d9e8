// Plan-time check that every instance type in a spec is offered where the spec asks for it
// (DescribeInstanceTypeOfferings for the region, or for each availability zone), instead of
// guessing from type-name prefixes.
import { paginateDescribeInstanceTypeOfferings, type DescribeInstanceTypeOfferingsCommandInput } from '@aws-sdk/client-ec2';
import { closestMatch } from '../../spec/suggest.js';
import type { ResourcesSpec } from '../../spec/types.js';
import { RetryableError, type PreflightProblem } from '../types.js';
import type { AwsClients } from './clients.js';
import { awsCall } from './errors.js';

/**
 * Problems found: a type offered nowhere asked is an error, a type offered in only some of the
 * zones a warning; an empty list means every type is offered in every zone (or in the region).
 * One call; a second one, for a suggestion, only when a type is offered nowhere asked.
 */
export async function checkInstanceTypeOfferings(clients: AwsClients, resources: ResourcesSpec): Promise<PreflightProblem[]> {
  const types = resources.instanceTypes;
  if (types.length === 0) return [];
  const zones = resources.availabilityZones;
  const byZone = zones.length > 0;
  const offered = await offerings(clients, {
    LocationType: byZone ? 'availability-zone' : 'region',
    Filters: [{ Name: 'instance-type', Values: [...new Set(types)] }, ...(byZone ? [{ Name: 'location', Values: zones }] : [])],
  });

  const problems: PreflightProblem[] = [];
  const nowhere = types.filter((type) => !offered.get(type)?.size);
  // What the region offers, to say what was probably meant (a failure here only loses the hint).
  const inRegion = nowhere.length > 0 ? [...(await offerings(clients, { LocationType: 'region' }).catch(() => new Map<string, Set<string>>())).keys()].sort() : [];
  types.forEach((type, i) => {
    const where = offered.get(type);
    const path = ['spec', 'resources', 'instanceTypes', i];
    if (!where || where.size === 0) {
      problems.push({ path, severity: 'error', message: notOffered(type, byZone ? zones : undefined, clients.region, inRegion) });
      return;
    }
    const missing = byZone ? zones.filter((z) => !where.has(z)) : [];
    if (missing.length > 0 && missing.length < zones.length) {
      problems.push({
        path,
        severity: 'warning',
        message: `${type} is not offered in ${missing.join(', ')} (offered in ${[...where].sort().join(', ')}); launches there fail and runctl moves on to the next zone`,
      });
    }
  });
  return problems;
}

function notOffered(type: string, zones: readonly string[] | undefined, region: string, inRegion: readonly string[]): string {
  if (zones && inRegion.includes(type)) {
    return `${type} is not offered in any of ${zones.join(', ')} (only in other zones of ${region}); list other availability zones, or choose another type`;
  }
  const where = zones ? `any of ${zones.join(', ')}` : `region ${region}`;
  const closest = closestMatch(type, inRegion);
  return `${type} is not offered in ${where}${closest ? ` (did you mean ${closest}?)` : ''}; check the spelling, or choose another type or region`;
}

/** Instance type -> locations (region or zones) offering it. */
async function offerings(clients: AwsClients, input: DescribeInstanceTypeOfferingsCommandInput): Promise<Map<string, Set<string>>> {
  const offered = new Map<string, Set<string>>();
  await gaveUp(() =>
    awsCall({ service: 'ec2', operation: 'DescribeInstanceTypeOfferings', region: clients.region }, async () => {
      for await (const page of paginateDescribeInstanceTypeOfferings({ client: clients.ec2 }, input)) {
        for (const o of page.InstanceTypeOfferings ?? []) {
          if (!o.InstanceType || !o.Location) continue;
          const set = offered.get(o.InstanceType) ?? new Set<string>();
          set.add(o.Location);
          offered.set(o.InstanceType, set);
        }
      }
    }),
  );
  return offered;
}

/**
 * Runs a one-shot check (plan, doctor). The SDK has already retried a transient failure with
 * bounded backoff; nothing comes back to a one-shot check, so its message must not promise a retry.
 */
export async function gaveUp<T>(check: () => Promise<T>): Promise<T> {
  try {
    return await check();
  } catch (err) {
    throw gaveUpOn(err);
  }
}

/** `gaveUp` for an error already caught: a RetryableError's message says the retries are over; others unchanged. */
export function gaveUpOn(err: unknown): unknown {
  if (err instanceof RetryableError && err.message.includes('; runctl will retry')) {
    return new RetryableError(err.message.replace('; runctl will retry', ' (gave up after retrying)'), { code: err.code, requestId: err.requestId, cause: err });
  }
  return err;
}
