// Rebuilding a run's status record that cannot be read (issue 10, input 5). The record is a cache
// of two sources that survive it: the run's append-only event log (its uid, creation time,
// generations, attempts, every transition and launch) and what the provider observes (the
// instances tagged with the run's uid). From them runctl writes a record it can act on:
// - a run whose last transition ended it (Completed, Failed, Suspended) is rebuilt ended;
// - a run that was in flight is rebuilt as Pending one attempt *before* its last, so the next pass
//   re-enters that attempt: launch adopts its instance by tags (uid, generation, attempt) and
//   deployAgent adopts the running agent. Nothing is launched twice, nothing restarts from zero.
// When the sources are not enough (no event log and no tagged instance, an unreadable event log,
// or no spec for the run) rebuildStatus says exactly what the user must do, and the run is left
// alone. The damaged record is never deleted: the store keeps it beside the new one.
import { initialSnapshot } from '../machine/snapshot.js';
import type { PersistedRun } from '../machine/snapshot.js';
import type { RunContext } from '../machine/run-machine.js';
import type { InstanceObservation } from '../providers/types.js';
import type { LoadedRun } from '../spec/types.js';
import { StateCorruptError } from '../state/event-log.js';
import { eventIdBase, eventsOfIncarnation, isUid, legacyUid } from '../state/identity.js';
import type { StatusUnreadableError } from '../state/status-record.js';
import type { InstanceRecord, Phase, RunEvent, RunStatus, StateStore } from '../state/types.js';
import { mergeConditions, wantedConditions } from './conditions.js';
import { limitsFromSpec } from './limits.js';

export type RebuildResult = { status: RunStatus; from: string } | { problem: string };

export interface RebuildInput {
  run: string;
  error: StatusUnreadableError;
  store: StateStore;
  /** The run's spec as the runs folder has it now, if it is there. */
  loaded?: LoadedRun;
  /** Every instance the provider shows under the run's name (any uid). */
  observed: InstanceObservation[];
  now: number;
}

const ENDED: readonly Phase[] = ['Completed', 'Failed', 'Suspended'];

/** A status record built from the event log and the observed instances, or why it cannot be. */
export async function rebuildStatus(input: RebuildInput): Promise<RebuildResult> {
  const { run, error, loaded } = input;
  let events: RunEvent[];
  try {
    events = await input.store.readEvents(run);
  } catch (err) {
    if (!(err instanceof StateCorruptError)) throw err;
    return { problem: `its event log cannot be read either (${err.message}). ${startOverAdvice(run, error.file, input.observed)}` };
  }
  const uid = incarnationOf(events, input.observed);
  if (!uid) {
    return { problem: `there is nothing to rebuild it from: no event log and no instance tagged with its uid. ${startOverAdvice(run, error.file, input.observed)}` };
  }
  if (!loaded) {
    return {
      problem:
        `its spec is no longer in the runs folder, and the record needs it. Put the run's file back (e.g. \`git checkout <commit> -- runs/${run}.yaml\`) ` +
        'so runctl can rebuild the record and then stop or prune the run properly; ' +
        startOverAdvice(run, error.file, input.observed, 'or, to forget the run instead, ')
    };
  }

  const mine = eventsOfIncarnation(uid, events).sort((a, b) => a.seq - b.seq);
  const transitions = mine.filter((e) => e.kind === 'transition');
  const last = transitions.at(-1);
  const lastPhase = last ? phaseAfter(last.action) : 'Pending';
  const generation = Math.max(1, ...mine.map((e) => e.generation));
  const attempt = Math.max(0, ...mine.filter((e) => e.generation === generation).map((e) => e.attempt));
  const interruptions = transitions.filter((e) => e.action.endsWith('-> Interrupted')).length;
  const errorRetries = transitions.filter((e) => e.data?.event === 'JOB_FAILED' && e.action.endsWith('-> Resuming')).length;
  const created = mine.find((e) => e.action === 'created');
  const createdAt = created?.at ?? mine[0]?.at ?? new Date(input.now).toISOString();
  const specHash = specHashOf(mine) ?? loaded.specHash;
  const spec = loaded.run.spec;
  const limits = limitsFromSpec(spec);
  const ended = ENDED.includes(lastPhase);

  const base = initialSnapshot({ run, generation, limits }).context;
  const context: RunContext = {
    ...base,
    attempt: ended ? attempt : Math.max(0, attempt - 1),
    interruptions,
    errorRetries,
    rehearsalDone: true,
    ...(lastPhase === 'Failed' ? { failure: { reason: 'Failed', message: last?.message ?? 'the run failed (rebuilt record: see the event log)' } } : {}),
  };
  const value = ended ? lastPhase : 'Pending';
  const snapshot: PersistedRun = { value, context };
  const now = new Date(input.now).toISOString();
  const status: RunStatus = {
    run,
    uid,
    phase: value,
    generation,
    specHash,
    observedGeneration: ended ? generation : 0,
    attempt: context.attempt,
    interruptions,
    errorRetries,
    conditions: [],
    instances: instancesOf(uid, mine, input.observed),
    deadlines: {},
    snapshot,
    spec,
    source: { file: loaded.file },
    createdAt,
    updatedAt: now,
    eventSeq: Math.max(0, ...mine.map((e) => e.seq)),
    costUSD: 0,
    ...(context.failure ? { failure: context.failure } : {}),
  };
  status.conditions = mergeConditions([], wantedConditions(value, context, status), now);
  const from = `${mine.length} event${mine.length === 1 ? '' : 's'} and ${status.instances.length} instance${status.instances.length === 1 ? '' : 's'}`;
  return { status, from };
}

/** The `rebuilt` event: what was done, from what, and where the damaged record was kept. */
export function rebuiltEvent(status: RunStatus, error: StatusUnreadableError, from: string, keptAt: string | undefined, now: number): RunEvent {
  return {
    id: `${eventIdBase(status.run, status.uid)}:rebuilt:${now}`,
    seq: status.eventSeq,
    at: new Date(now).toISOString(),
    run: status.run,
    uid: status.uid,
    generation: status.generation,
    attempt: status.attempt,
    kind: 'observation',
    action: 'rebuilt',
    result: 'ok',
    message:
      `the status record was unreadable (${error.problem}); rebuilt from ${from} as ${status.phase}` +
      (ENDED.includes(status.phase) ? '' : `, resuming attempt ${status.attempt + 1} (its instance and agent are adopted if they still run)`) +
      (keptAt ? `; the unreadable record is kept at ${keptAt}` : ''),
  };
}

/**
 * What `status` says to do about an unreadable record, without acting: whether reconcile can
 * rebuild it (an event log with this run's events exists), and otherwise what to do by hand.
 */
export async function unreadableAdvice(store: StateStore, run: string, error: StatusUnreadableError): Promise<string> {
  let events: RunEvent[];
  try {
    events = await store.readEvents(run);
  } catch (err) {
    return `its event log cannot be read either (${err instanceof Error ? err.message : String(err)}); ${startOverAdvice(run, error.file, [])}`;
  }
  if (events.length > 0) {
    return `run \`runctl reconcile\` (or let the running controller get to it): it rebuilds the record from the run's event log (${events.length} events) and the instances it finds, and keeps the damaged file beside it`;
  }
  return `it has no event log to be rebuilt from; \`runctl reconcile\` rebuilds it if an instance tagged with the run's uid still exists, otherwise: ${startOverAdvice(run, error.file, [])}`;
}

/** The run incarnation the log (or, without one, the instances) belongs to. */
function incarnationOf(events: RunEvent[], observed: InstanceObservation[]): string | undefined {
  // The newest incarnation in the log: a log can start with a deleted predecessor's leftovers.
  for (let i = events.length - 1; i >= 0; i--) {
    const e = events[i] as RunEvent;
    if (isUid(e.uid)) return e.uid;
  }
  const created = events.find((e) => e.action === 'created');
  if (created) return legacyUid(created.run, created.at); // written before uids: createdAt is its time
  const uids = new Set(observed.filter((o) => o.state !== 'terminated' && o.uid).map((o) => o.uid as string));
  return uids.size === 1 ? [...uids][0] : undefined;
}

/** The phase a transition label ends in: `A -> B`, `A: sub -> sub`, `A (EVENT)`. */
function phaseAfter(action: string): Phase {
  const arrow = /^(\w+) -> (\w+)/.exec(action);
  if (arrow) return (arrow[2] === 'LeavingInterrupted' ? 'Interrupted' : arrow[2]) as Phase;
  return (/^(\w+)/.exec(action)?.[1] ?? 'Pending') as Phase;
}

function specHashOf(events: RunEvent[]): string | undefined {
  for (let i = events.length - 1; i >= 0; i--) {
    const hash = events[i]?.data?.specHash;
    if (typeof hash === 'string') return hash;
  }
  return undefined;
}

/** Instances from the launch events, with what the provider shows of them (same uid only). */
function instancesOf(uid: string, events: RunEvent[], observed: InstanceObservation[]): InstanceRecord[] {
  const providerUid = uid.startsWith('legacy-') ? undefined : uid;
  const seen = observed.filter((o) => o.uid === providerUid);
  const out = new Map<string, InstanceRecord>();
  for (const e of events) {
    const id = e.data?.instanceId;
    if (e.action !== 'launch' || typeof id !== 'string') continue;
    const o = seen.find((x) => x.instance.id === id);
    const ended = !o || o.state === 'terminated';
    // The attempt an instance serves: its tags when it is seen, else what the launch event recorded
    // (an event's own attempt field is the run's attempt before the launch's transition settled).
    const generation = o?.generation ?? (typeof e.data?.generation === 'number' ? e.data.generation : e.generation);
    const attempt = o?.attempt ?? (typeof e.data?.attempt === 'number' ? e.data.attempt : e.attempt);
    const lastOfAttempt = events.filter((x) => x.generation === generation && x.attempt === attempt).at(-1)?.at ?? e.at;
    out.set(id, {
      ...(o?.instance ?? { id, launchedAt: e.at }),
      generation,
      attempt,
      ...(ended ? { endedAt: lastOfAttempt, endReason: o?.stateReason ?? 'ended (rebuilt record)' } : {}),
    });
  }
  for (const o of seen) {
    if (!out.has(o.instance.id)) out.set(o.instance.id, { ...o.instance, generation: o.generation, attempt: o.attempt });
  }
  return [...out.values()];
}

function startOverAdvice(run: string, file: string, observed: InstanceObservation[], lead = 'to start the run over as a new run, '): string {
  const live = observed.filter((o) => o.state !== 'terminated').map((o) => o.instance.id);
  const instances = live.length
    ? ` The run's instances (${live.join(', ')}) are not adopted by the new run: terminate them yourself.`
    : '';
  const mv = file.startsWith('s3://') ? 'aws s3 mv' : 'mv';
  return `${lead}move the damaged record aside (\`${mv} ${file} ${file}.damaged\`, or restore it from a backup); the next \`runctl reconcile\` then creates run ${run} afresh with a new uid.${instances}`;
}
