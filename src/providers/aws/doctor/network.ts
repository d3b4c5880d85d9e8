// Where instances would be launched: spec.resources.subnetId exists (and lies in a requested zone),
// or, without one, EC2 uses the default VPC's default subnet of each requested zone (EC2 User
// Guide, "Default VPCs": RunInstances without a subnet picks the default subnet of the zone).
import { DescribeSubnetsCommand, type DescribeSubnetsCommandInput } from '@aws-sdk/client-ec2';
import type { ResourcesSpec } from '../../../spec/types.js';
import type { DoctorCheck } from '../../types.js';
import type { AwsClients } from '../clients.js';
import { awsCall } from '../errors.js';
import { codeOf, line, unable } from './result.js';

export async function checkSubnets(clients: AwsClients, resources: Pick<ResourcesSpec, 'subnetId' | 'availabilityZones'>, runs: string[]): Promise<DoctorCheck> {
  const region = clients.region;
  const zones = resources.availabilityZones;
  const call = (input: DescribeSubnetsCommandInput) =>
    awsCall({ service: 'ec2', operation: 'DescribeSubnets', region }, () => clients.ec2.send(new DescribeSubnetsCommand(input)));
  const listFix = `set spec.resources.subnetId to one of \`aws ec2 describe-subnets --region ${region} --query 'Subnets[].[SubnetId,AvailabilityZone]'\``;

  if (resources.subnetId) {
    const id = resources.subnetId;
    try {
      const subnet = (await call({ SubnetIds: [id] })).Subnets?.[0];
      if (!subnet) throw Object.assign(new Error('not found'), { code: 'InvalidSubnetID.NotFound' });
      const zone = subnet.AvailabilityZone ?? '?';
      if (zones.length > 0 && !zones.includes(zone)) {
        return line('subnets', id, runs, 'warn', `subnet ${id} is in ${zone}, not in the requested zones ${zones.join(', ')}; the subnet decides the zone`, `remove spec.resources.availabilityZones, or choose a subnet in ${zones.join(' or ')}`);
      }
      return line('subnets', id, runs, 'pass', `subnet ${id} exists in ${zone} (${subnet.VpcId ?? 'VPC unknown'})`);
    } catch (err) {
      if (codeOf(err) === 'InvalidSubnetID.NotFound' || (err as { code?: string }).code === 'InvalidSubnetID.NotFound') {
        return line('subnets', id, runs, 'fail', `subnet ${id} does not exist in ${region}`, listFix);
      }
      return unable('subnets', id, runs, err, 'ec2:DescribeSubnets');
    }
  }

  const subject = zones.length > 0 ? zones.join(', ') : region;
  try {
    const subnets = (await call({ Filters: [{ Name: 'default-for-az', Values: ['true'] }, ...(zones.length > 0 ? [{ Name: 'availability-zone', Values: zones }] : [])] })).Subnets ?? [];
    const have = new Set(subnets.map((s) => s.AvailabilityZone).filter((z): z is string => !!z));
    if (zones.length === 0) {
      if (have.size === 0) {
        return line('subnets', subject, runs, 'fail', `${region} has no default VPC subnets: a launch without spec.resources.subnetId has nowhere to go`, `aws ec2 create-default-vpc --region ${region}, or ${listFix}`);
      }
      return line('subnets', subject, runs, 'pass', `the default VPC has subnets in ${[...have].sort().join(', ')}`);
    }
    const missing = zones.filter((z) => !have.has(z));
    if (missing.length > 0) {
      return line(
        'subnets',
        subject,
        runs,
        'fail',
        `no default subnet in ${missing.join(', ')}${have.size ? ` (there is one in ${[...have].sort().join(', ')})` : ''}: launches there fail`,
        `${missing.map((z) => `aws ec2 create-default-subnet --region ${region} --availability-zone ${z}`).join(' && ')}; or remove ${missing.join(', ')} from spec.resources.availabilityZones, or ${listFix}`,
      );
    }
    return line('subnets', subject, runs, 'pass', `default subnets exist in ${zones.join(', ')}`);
  } catch (err) {
    return unable('subnets', subject, runs, err, 'ec2:DescribeSubnets');
  }
}
