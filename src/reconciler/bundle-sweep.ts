// Which code bundles are still in use, per storage location, from what the store remembers. Pure.
// A bundle is in use while an instance it was given to lives; once a run ends (or moves to a new
// generation) its bundle is unused and the provider may delete it after a grace period. Where it
// cannot be known which bundle a live attempt runs (a launch or deploy in flight, or a status
// written before runctl recorded bundles), that storage location is left alone this round.
import type { RunSpec } from '../spec/types.js';
import type { RunStatus } from '../state/types.js';

export interface BundleSweep {
  /** A spec that names the storage location (the provider resolves region and defaults from it). */
  spec: RunSpec;
  /** Display name of the location. */
  storage: string;
  /** sha256s of bundles live instances run. */
  referenced: Set<string>;
  /**
   * Setup cache keys (spec.setup.cache, issue 12) runs in the store hold: each run's newest
   * generation's key (status.setupCache), whatever its phase, so a run that is resumed or edited
   * back finds its cache while the run exists.
   */
  setupCacheKeys: Set<string>;
}

export interface SweepPlan {
  sweeps: BundleSweep[];
  /** Locations left alone this round, and why. */
  skipped: Array<{ storage: string; reason: string }>;
}

const DEPLOYING_EFFECTS = new Set(['launch', 'deployAgent']);

export function planBundleSweeps(statuses: readonly RunStatus[]): SweepPlan {
  const groups = new Map<string, BundleSweep & { unsure?: string }>();
  for (const status of statuses) {
    const spec = status.spec;
    const storage = spec.checkpoints.storage ?? `the ${spec.provider} provider's default storage`;
    const id = `${spec.provider}\u0000${spec.checkpoints.storage ?? ''}`;
    let group = groups.get(id);
    if (!group) {
      group = { spec, storage, referenced: new Set(), setupCacheKeys: new Set() };
      groups.set(id, group);
    }
    if (status.setupCache) group.setupCacheKeys.add(status.setupCache.key);
    for (const instance of status.instances) {
      if (instance.endedAt) continue;
      if (instance.codeBundle) group.referenced.add(instance.codeBundle);
      else group.unsure ??= `${status.run} has instance ${instance.id} without a recorded code bundle`;
    }
    if (status.pending?.effects.some((e) => DEPLOYING_EFFECTS.has(e.type))) {
      group.unsure ??= `${status.run} is launching or deploying`;
    }
  }
  const plan: SweepPlan = { sweeps: [], skipped: [] };
  for (const { unsure, ...sweep } of groups.values()) {
    if (unsure) plan.skipped.push({ storage: sweep.storage, reason: unsure });
    else plan.sweeps.push(sweep);
  }
  return plan;
}
