// `plan`'s orphaned instances: instances carrying this controller's tags that the controller's
// orphan sweep (orphan-sweep.ts) will terminate on the next pass, so `plan` shows what `apply` does
// (issue 11, fault 3). The rule is the sweep's own (findOrphans); the observation is the sweep's
// too: one tag-filtered listing per provider (aws: one paginated DescribeInstances per region),
// never a call per run. Read-only. A listing that cannot be made is reported, never fatal.
import type { Provider } from '../providers/types.js';
import type { RunStatus } from '../state/types.js';
import type { RunSpec } from '../spec/types.js';
import type { DesiredState } from './controller.js';
import { findOrphans, type OrphanCause } from './orphan-sweep.js';

/** One instance the next pass's orphan sweep terminates. */
export interface PlannedOrphanInstance {
  /** Provider instance id, e.g. `i-0abc…`. */
  instanceId: string;
  run: string;
  /** The `runctl:uid` tag (the run's incarnation); null on instances launched before uids. */
  uid: string | null;
  generation: number;
  attempt: number;
  /** Provider state, e.g. `running`, `pending`, `stopped`. */
  state: string;
  /** ISO time of the instance's launch. */
  launchedAt: string;
  cause: OrphanCause;
  /** One line: why no run will terminate it. */
  reason: string;
}

export interface OrphanCheck {
  instances: PlannedOrphanInstance[];
  /** Providers whose instances could not be listed, and why (said as a warning). */
  unchecked: Array<{ provider: RunSpec['provider']; message: string }>;
}

/**
 * The instances the next pass's sweep terminates, for the providers the desired runs and stored
 * runs use (as the controller's sweep). `statuses` may be read before the listing: an instance of
 * a run launched since is of a later attempt or a desired run, which findOrphans never counts.
 * `now` is epoch milliseconds (an unknown run's instance is left alone for its first 10 minutes).
 */
export async function findPlannedOrphans(
  desired: DesiredState,
  statuses: readonly RunStatus[],
  provider: (name: RunSpec['provider']) => Promise<Provider>,
  now: number,
): Promise<OrphanCheck> {
  const specs = new Map<RunSpec['provider'], Map<string, RunSpec>>();
  const note = (run: string, spec: RunSpec) => {
    const byRun = specs.get(spec.provider) ?? new Map<string, RunSpec>();
    if (!byRun.has(run)) byRun.set(run, spec);
    specs.set(spec.provider, byRun);
  };
  for (const r of desired.runs) note(r.run.metadata.name, r.run.spec);
  for (const s of statuses) note(s.run, s.spec);
  const byRun = new Map(statuses.map((s) => [s.run, s]));
  const names = new Set(desired.runs.map((r) => r.run.metadata.name));
  const out: OrphanCheck = { instances: [], unchecked: [] };
  for (const [name, runs] of [...specs].sort(([a], [b]) => a.localeCompare(b))) {
    try {
      const p = await provider(name);
      if (!p.listOwned) continue;
      // The regions the runs name are the regions looked at, as in the controller.
      for (const [run, spec] of runs) p.track?.(run, spec);
      const listed = await p.listOwned({ oneShot: true });
      for (const o of findOrphans(listed, byRun, names, now)) {
        const obs = o.observation;
        out.instances.push({
          instanceId: obs.instance.id,
          run: obs.run,
          uid: obs.uid ?? null,
          generation: obs.generation,
          attempt: obs.attempt,
          state: obs.state,
          launchedAt: obs.instance.launchedAt,
          cause: o.cause,
          reason: o.why,
        });
      }
    } catch (err) {
      out.unchecked.push({ provider: name, message: err instanceof Error ? err.message : String(err) });
    }
  }
  out.instances.sort((a, b) => a.run.localeCompare(b.run) || a.instanceId.localeCompare(b.instanceId));
  return out;
}

