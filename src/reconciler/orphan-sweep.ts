// Orphaned instances: instances carrying this controller's tags that no run will ever terminate,
// because their run is finished (Completed, Failed, Suspended, Deleted) or unknown to the store and
// to the runs folder. Every other path terminates instances through a run; this sweep is the net
// for what slipped through (an instance EC2 did not show yet when its run ended, issue 11 fault 3).
// Only instances the provider lists as this controller's own are ever considered.
import type { InstanceObservation } from '../providers/types.js';
import { providerUid } from '../state/identity.js';
import type { RunStatus } from '../state/types.js';

const FINISHED = new Set(['Completed', 'Failed', 'Suspended', 'Deleted']);

/** An instance of an unknown run is left alone this long after its launch (another process may be creating the run). */
export const UNKNOWN_RUN_GRACE_MS = 10 * 60_000;

/** Why nothing else will terminate the instance: its run ended or was deleted, is unknown, or was re-created under another uid. */
export type OrphanCause = 'finished' | 'deleted' | 'unknown' | 're-created';

export interface Orphan {
  observation: InstanceObservation;
  cause: OrphanCause;
  /** Why it is an orphan, for the event or notice. */
  why: string;
  /** The run's status, when the store knows the run. */
  status?: RunStatus;
}

/**
 * Which live instances to terminate. `statuses` must be read AFTER `instances` were listed, so a
 * run that launched in between shows its new phase. A run's instance of a later attempt or
 * generation than its status records is never an orphan (its launch is being recorded); nor is
 * the instance of a run in the runs folder without a status (launch adopts instances by tags), nor
 * anything of a run with an effect still pending.
 */
export function findOrphans(
  instances: readonly InstanceObservation[],
  statuses: ReadonlyMap<string, RunStatus>,
  desired: ReadonlySet<string>,
  now: number,
): Orphan[] {
  const out: Orphan[] = [];
  for (const o of instances) {
    if (o.state === 'terminated' || o.state === 'shutting-down') continue;
    const status = statuses.get(o.run);
    if (!status) {
      if (desired.has(o.run)) continue;
      if (now - Date.parse(o.instance.launchedAt) < UNKNOWN_RUN_GRACE_MS) continue;
      out.push({ observation: o, cause: 'unknown', why: `run ${o.run} is unknown to this controller's state store and runs folder` });
      continue;
    }
    // An instance of an earlier incarnation of a run of the same name: nothing will adopt it.
    if (o.uid !== providerUid(status.uid)) {
      out.push({ observation: o, status, cause: 're-created', why: `it belongs to an earlier run named ${o.run} (uid ${o.uid ?? 'none'}), since deleted and re-created` });
      continue;
    }
    if (status.pending || !FINISHED.has(status.phase)) continue;
    if (o.generation > status.generation || (o.generation === status.generation && o.attempt > status.attempt)) continue;
    out.push({ observation: o, status, cause: status.phase === 'Deleted' ? 'deleted' : 'finished', why: `run ${o.run} is ${status.phase}` });
  }
  return out;
}
