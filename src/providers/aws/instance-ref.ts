// The port's view of an EC2 instance, shared by launch (adoption) and observation.
import type { Instance } from '@aws-sdk/client-ec2';
import type { InstanceRef, InstanceState, MarketKind } from '../types.js';

const STATES: readonly InstanceState[] = ['pending', 'running', 'stopping', 'stopped', 'shutting-down', 'terminated'];

export function marketOf(instance: Instance): MarketKind {
  return instance.InstanceLifecycle === 'spot' ? 'spot' : 'on-demand';
}

export function stateOf(instance: Instance): InstanceState {
  const name = instance.State?.Name as InstanceState | undefined;
  return name && STATES.includes(name) ? name : 'pending';
}

export function toInstanceRef(instance: Instance, pricePerHour?: number): InstanceRef {
  return {
    id: instance.InstanceId ?? '',
    type: instance.InstanceType,
    zone: instance.Placement?.AvailabilityZone,
    market: marketOf(instance),
    ...(pricePerHour !== undefined ? { pricePerHour } : {}),
    launchedAt: (instance.LaunchTime ?? new Date()).toISOString(),
  };
}

/** Live instances first, then the most recently launched. */
export function preferLive(a: Instance, b: Instance): number {
  const dead = (i: Instance) => (['shutting-down', 'terminated'].includes(stateOf(i)) ? 1 : 0);
  return dead(a) - dead(b) || (b.LaunchTime?.getTime() ?? 0) - (a.LaunchTime?.getTime() ?? 0);
}
