// Whether a run launches its replacement during an interruption notice (issue 12), and which
// capacity pool the replacement should not be taken from. Pure.
import type { CapacityPool } from '../providers/types.js';
import type { RunSpec } from '../spec/types.js';
import type { InstanceRecord } from '../state/types.js';

/**
 * Whether spec.recovery.prelaunch is in effect for a run. An explicit value wins; unset, it is on
 * for the spot markets (`spot`, `spot-then-on-demand`), where a two-minute notice is the normal way
 * an attempt ends (EC2 user guide, "Spot Instance interruption notices"; issue 12), and off for
 * `on-demand`, where a notice never comes and a replacement would only be billed twice. The local
 * provider's market defaults to spot like any other run's, so its rehearsal prelaunches too.
 * Both providers' paths are tested end to end: the local one in test/e2e/prelaunch.test.ts, the aws
 * one on moto with the fleet's timing model in test/e2e/aws-prelaunch.test.ts (it has passed).
 */
export function prelaunchEnabled(spec: RunSpec): boolean {
  const explicit = spec.recovery.prelaunch;
  if (explicit !== undefined) return explicit;
  return prelaunchDefault(spec.resources.market);
}

/** The value of spec.recovery.prelaunch when the spec leaves it out: true for the spot markets. */
export function prelaunchDefault(market: RunSpec['resources']['market']): boolean {
  return market === 'spot' || market === 'spot-then-on-demand';
}

/** spec.recovery.prelaunchOnRebalance (default false); only with prelaunch. */
export function prelaunchOnRebalance(spec: RunSpec): boolean {
  return prelaunchEnabled(spec) && spec.recovery.prelaunchOnRebalance === true;
}

/**
 * The pool of the instance being reclaimed, to be tried last by the replacement's launch: spot
 * capacity is reclaimed pool by pool, so the same pool is the likeliest to refuse or interrupt again.
 */
export function reclaimedPool(instance: InstanceRecord | undefined): CapacityPool[] {
  if (!instance || (!instance.type && !instance.zone)) return [];
  return [{ ...(instance.market ? { market: instance.market } : {}), ...(instance.type ? { type: instance.type } : {}), ...(instance.zone ? { zone: instance.zone } : {}) }];
}
