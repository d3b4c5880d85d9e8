// Plan-time check that every instance type in a spec is offered where the spec asks for it
// (DescribeInstanceTypeOfferings for the region, or for each availability zone), instead of
// guessing from type-name prefixes.
import { paginateDescribeInstanceTypeOfferings } from '@aws-sdk/client-ec2';
import type { ResourcesSpec } from '../../spec/types.js';
import type { PreflightProblem } from '../types.js';
import type { AwsClients } from './clients.js';
import { awsCall } from './errors.js';


/** Problems found (a type offered nowhere asked: error; in some of the zones: warning); an empty list means every type is offered in every zone (or in the region). */
export async function checkInstanceTypeOfferings(clients: AwsClients, resources: ResourcesSpec): Promise<PreflightProblem[]> {
  const types = resources.instanceTypes;
  if (types.length === 0) return [];
  const zones = resources.availabilityZones;
  const byZone = zones.length > 0;
  const offered = new Map<string, Set<string>>();
  await awsCall({ service: 'ec2', operation: 'DescribeInstanceTypeOfferings', region: clients.region }, async () => {
    const pages = paginateDescribeInstanceTypeOfferings(
      { client: clients.ec2 },
      {
        LocationType: byZone ? 'availability-zone' : 'region',
        Filters: [
          { Name: 'instance-type', Values: types },
          ...(byZone ? [{ Name: 'location', Values: zones }] : []),
        ],
      },
    );
    for await (const page of pages) {
      for (const o of page.InstanceTypeOfferings ?? []) {
        if (!o.InstanceType || !o.Location) continue;
        const set = offered.get(o.InstanceType) ?? new Set<string>();
        set.add(o.Location);
        offered.set(o.InstanceType, set);
      }
    }
  });

  const problems: PreflightProblem[] = [];
  types.forEach((type, i) => {
    const where = offered.get(type);
    const path = ['spec', 'resources', 'instanceTypes', i];
    if (!where || where.size === 0) {
      problems.push({
        path,
        severity: 'error',
        message: `${type} is not offered in ${byZone ? `any of ${zones.join(', ')}` : `region ${clients.region}`}; check the spelling (e.g. g5.xlarge) or choose another type or region`,
      });
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
