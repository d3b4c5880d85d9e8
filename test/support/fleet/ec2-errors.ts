// EC2 errors as AWS sends them: code, HTTP status and message text, so the fleet proxy can answer
// exactly what a real account would. Codes and statuses: EC2 API reference, "Error codes for the
// Amazon EC2 API" (client errors are 4xx, server errors 5xx); messages: the text EC2 returns.
import type { FaultRule } from './faults.js';

type ErrorRule = Extract<FaultRule, { kind: 'error' }>;
type Narrowing = Partial<Pick<ErrorRule, 'times' | 'instanceTypes' | 'market' | 'instanceIds'>>;

const runInstances = (status: number, code: string, message: string, narrow: Narrowing): ErrorRule => ({
  kind: 'error',
  service: 'ec2',
  action: 'RunInstances',
  status,
  code,
  message,
  ...narrow,
});

export const ec2Errors = {
  /** On-demand vCPU quota of the instance type's family group ("instance bucket"). */
  vcpuLimitExceeded: (narrow: Narrowing = {}, limit = 0) =>
    runInstances(
      400,
      'VcpuLimitExceeded',
      `You have requested more vCPU capacity than your current vCPU limit of ${limit} allows for the instance bucket that the ` +
        'specified instance type belongs to. Please visit http://aws.amazon.com/contact-us/ec2-request to request an adjustment to this limit.',
      narrow,
    ),
  instanceLimitExceeded: (narrow: Narrowing = {}, limit = 0) =>
    runInstances(
      400,
      'InstanceLimitExceeded',
      `You have requested more instances (1) than your current instance limit of ${limit} allows for the specified instance type. ` +
        'Please visit http://aws.amazon.com/contact-us/ec2-request to request an adjustment to this limit.',
      narrow,
    ),
  /** Only spot requests draw on the spot quota. */
  maxSpotInstanceCountExceeded: (narrow: Narrowing = {}) =>
    runInstances(400, 'MaxSpotInstanceCountExceeded', 'Max spot instance count exceeded', { market: 'spot', ...narrow }),
  insufficientFreeAddressesInSubnet: (subnet: string, narrow: Narrowing = {}) =>
    runInstances(
      400,
      'InsufficientFreeAddressesInSubnet',
      `There are not enough free addresses in subnet '${subnet}' to satisfy the requested number of instances.`,
      narrow,
    ),
  /** The type is not offered in the zone (DescribeInstanceTypeOfferings would have said so). */
  unsupportedInZone: (type: string, zone: string, offered: string[], narrow: Narrowing = {}) =>
    runInstances(
      400,
      'Unsupported',
      `Your requested instance type (${type}) is not supported in your requested Availability Zone (${zone}). ` +
        `Please retry your request by not specifying an Availability Zone or choosing ${offered.join(', ')}.`,
      { instanceTypes: [type], ...narrow },
    ),
  architectureMismatch: (typeArch: string, amiArch: string, narrow: Narrowing = {}) =>
    runInstances(
      400,
      'InvalidParameterValue',
      `The architecture '${typeArch}' of the specified instance type does not match the architecture '${amiArch}' of the specified AMI. ` +
        "Specify an instance type and an AMI that have matching architectures, and try again. You can use 'describe-instance-types' " +
        "or 'describe-images' to discover the architecture of the instance type or AMI.",
      narrow,
    ),
  /** What EC2 says for a profile that does not exist, and for seconds after one is created. */
  invalidInstanceProfile: (profile: string, narrow: Narrowing = {}) =>
    runInstances(400, 'InvalidParameterValue', `Value (${profile}) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name`, narrow),
  /** The first spot request of an account whose caller may not create AWSServiceRoleForEC2Spot. */
  spotServiceLinkedRoleMissing: (narrow: Narrowing = {}) =>
    runInstances(
      403,
      'AuthFailure.ServiceLinkedRoleCreationNotPermitted',
      'The provided credentials do not have permission to create the service-linked role for EC2 Spot Instances.',
      { market: 'spot', ...narrow },
    ),
  /**
   * SSM refuses a DescribeInstanceInformation that names an instance shutting down or terminated
   * (SSM API reference, InvalidInstanceId), even while EC2 still reports it running.
   */
  ssmInstanceGoingAway: (instanceIds: string[]): ErrorRule => ({
    kind: 'error',
    service: 'ssm',
    action: 'DescribeInstanceInformation',
    status: 400,
    code: 'InvalidInstanceId',
    message: `Instances [${instanceIds.join(', ')}] not in a valid state for account 123456789012`,
    instanceIds,
  }),
  /** Right after RunInstances an instance may be unknown to other calls (EC2 API reference, "Eventual consistency"). */
  terminateNotFound: (instanceIds: string[], times?: number): ErrorRule => ({
    kind: 'error',
    service: 'ec2',
    action: 'TerminateInstances',
    status: 400,
    code: 'InvalidInstanceID.NotFound',
    message: `The instance ID '${instanceIds.join(', ')}' does not exist`,
    instanceIds,
    ...(times !== undefined ? { times } : {}),
  }),
};
