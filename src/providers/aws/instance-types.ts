// What EC2 says about instance types: vCPUs (what the per-family vCPU quotas count) and the CPU
// architectures an image must match. Asked with the `instance-type` filter rather than the
// InstanceTypes parameter, so a misspelled type (which plan reports from the offerings check) is
// simply absent instead of failing the whole call with InvalidInstanceType.
import { paginateDescribeInstanceTypes } from '@aws-sdk/client-ec2';
import type { AwsClients } from './clients.js';
import { awsCall } from './errors.js';

export interface InstanceTypeFacts {
  /** DefaultVCpus: what Service Quotas' vCPU quotas count for one running instance. */
  vcpus: number;
  /** ProcessorInfo.SupportedArchitectures, e.g. ['x86_64'] or ['arm64']. */
  architectures: string[];
}

/** Facts per instance type, for the types that exist in the region (unknown names are left out). */
export async function describeInstanceTypes(clients: AwsClients, types: readonly string[]): Promise<Map<string, InstanceTypeFacts>> {
  const facts = new Map<string, InstanceTypeFacts>();
  const wanted = [...new Set(types)];
  if (wanted.length === 0) return facts;
  await awsCall({ service: 'ec2', operation: 'DescribeInstanceTypes', region: clients.region }, async () => {
    for await (const page of paginateDescribeInstanceTypes({ client: clients.ec2 }, { Filters: [{ Name: 'instance-type', Values: wanted }] })) {
      for (const t of page.InstanceTypes ?? []) {
        if (!t.InstanceType) continue;
        facts.set(t.InstanceType, {
          vcpus: t.VCpuInfo?.DefaultVCpus ?? 0,
          architectures: t.ProcessorInfo?.SupportedArchitectures ?? [],
        });
      }
    }
  });
  return facts;
}
