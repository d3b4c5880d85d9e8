// reconcile(run): read spec and status, observe, derive events, transition, record the intent,
// execute the effects through the provider, persist snapshot, status and events.
//
// Crash safety rests on two rules. (1) Intent before effect: a transition with effects is first
// written to status as `pending` (with the snapshot it leads to); the effects run; only then is the
// snapshot committed. A controller killed anywhere in between replays the pending effects, which are
// idempotent (launch adopts by tags, terminate of a gone instance succeeds, ...). (2) Outbox: events
// are written inside the status document first and appended to the log right after; ids are
// deterministic, so a replayed append is a no-op and no event is lost or doubled.
import { createHash } from 'node:crypto';
import type { Effect, RunEvent as MachineEvent } from '../machine/events.js';
import type { RunSnapshot } from '../machine/snapshot.js';
import { initialSnapshot, persist, phaseOf, restore, step, subPhaseOf, type PersistedRun } from '../machine/snapshot.js';
import {
  CapacityError,
  ProviderError,
  RetryableError,
  TerminalError,
  type AgentStatus,
  type AttemptKey,
  type BootAgent,
  type CapacityPool,
  type InstanceObservation,
  type LaunchIntent,
  type Provider,
} from '../providers/types.js';
import type { LoadedRun, RunSpec } from '../spec/types.js';
import { eventIdBase, newUid, providerUid } from '../state/identity.js';
import type { EffectRecord, InstanceRecord, RunEvent, RunStatus, StateStore } from '../state/types.js';
import { mergeConditions, wantedConditions } from './conditions.js';
import { deriveObservedEvent, deriveSpecEvent, type Desired } from './derive.js';
import { absorbFaults, reportedFaults } from './faults.js';
import { receiversFor, stampNotifications, type NotificationReceiver } from '../notify/receivers.js';
import { priceInstances, withLedger } from './ledger-refresh.js';
import { limitsFromSpec } from './limits.js';
import { reclaimedPool } from './prelaunch.js';
import { describeChange, specChanges } from './spec-diff.js';

export interface ReconcileDeps {
  store: StateStore;
  provider(name: RunSpec['provider']): Promise<Provider>;
  /** Instances of one run, from a batched observation no older than `freshAfter` (epoch ms). */
  observe(provider: Provider, run: string, freshAfter: number): Promise<InstanceObservation[]>;
  controller: string;
  repoRoot: string;
  now(): number;
  /** Called at every point where a crash would leave work half done (tests kill the process here). */
  boundary?(label: string): void;
  /** Called with every event as it is appended. */
  onEvent?(event: RunEvent): void;
  /** Called before every effect on a run; throws to stop (e.g. the run's lease has lapsed). */
  beforeEffect?(run: string): void;
  /** runctl.yaml's notification receivers: events they want are stamped for delivery (src/notify/). */
  notifications?: readonly NotificationReceiver[];
}

export interface ReconcileResult {
  status?: RunStatus;
  /** Ask to be reconciled again after this long; undefined = settled. */
  requeueAfterMs?: number;
  /** Epoch ms of the last effect executed, so the next observation is taken after it. */
  lastEffectAt?: number;
}

const MAX_STEPS_PER_RECONCILE = 16;
const CAPACITY_RETRY_MS = [15_000, 30_000, 60_000, 120_000];

const iso = (ms: number) => new Date(ms).toISOString();

export async function reconcileRun(deps: ReconcileDeps, name: string, desired: Desired): Promise<ReconcileResult> {
  let status = await deps.store.getStatus(name);
  if (!status) {
    if (!desired.loaded) return {};
    status = await createStatus(deps, desired.loaded, desired.revision);
  }
  // Replayed, not announced: these events were announced by whoever wrote them (this process
  // before a crash, or another controller that held the run).
  await flushOutbox(deps, status, false);
  status = await recordSource(deps, status, desired);

  let lastEffectAt: number | undefined;
  if (status.pending) {
    status = await applyPending(deps, status);
    lastEffectAt = deps.now();
  }

  const provider = await deps.provider(status.spec.provider);
  let observed: { instances: InstanceObservation[]; agent?: AgentStatus } | undefined;
  let observedAfter = 0;

  for (let i = 0; i < MAX_STEPS_PER_RECONCILE; i++) {
    const snapshot = restore(status.snapshot as PersistedRun);
    if (phaseOf(snapshot.value) === 'Deleted') break;
    status = applySpecBookkeeping(status, desired);

    let event: MachineEvent | undefined = deriveSpecEvent(snapshot, status, desired, deps.now());
    if (!event && status.fatal) {
      event = { type: 'FATAL', reason: status.fatal.reason, message: status.fatal.message, at: deps.now() };
    }
    // A wish the machine already honours (e.g. DELETE while stopping for deletion) is no news.
    if (event && !step(snapshot, event).changed) event = undefined;
    if (!event) {
      if (!observed || (lastEffectAt !== undefined && observedAfter < lastEffectAt)) {
        observedAfter = deps.now();
        observed = await observe(deps, provider, status, snapshot, lastEffectAt ?? 0);
        await recordFinalSync(deps, status, snapshot, observed.agent);
        await recordRestore(deps, status, snapshot, observed.agent);
        await recordSetupCache(deps, status, snapshot, observed.agent);
        status = await absorbAgentFaults(deps, status, snapshot, observed.agent);
        status = absorbObservation(status, snapshot, observed, deps.now());
        status = await refreshLedger(deps, provider, status, snapshot);
      }
      event = deriveObservedEvent(snapshot, status, { now: deps.now(), ...observed });
    }
    if (!event) break;

    const next = step(snapshot, event);
    if (!next.changed) break;
    status = await commitTransition(deps, status, snapshot, next.snapshot, event, next.effects, desired);
    if (next.effects.length > 0) {
      status = await applyPending(deps, status);
      lastEffectAt = deps.now();
    }
  }

  status = await finishRun(deps, status, desired);
  return { status, requeueAfterMs: requeueAfter(status, provider, deps.now(), lastEffectAt), lastEffectAt };
}

async function createStatus(deps: ReconcileDeps, loaded: LoadedRun, revision: string | undefined): Promise<RunStatus> {
  const now = deps.now();
  const spec = loaded.run.spec;
  const snapshot = initialSnapshot({ run: loaded.run.metadata.name, generation: 1, limits: limitsFromSpec(spec) });
  const status: RunStatus = {
    run: loaded.run.metadata.name,
    uid: newUid(),
    phase: 'Pending',
    generation: 1,
    specHash: loaded.specHash,
    observedGeneration: 0,
    attempt: 0,
    interruptions: 0,
    errorRetries: 0,
    conditions: [],
    instances: [],
    deadlines: {},
    snapshot: persist(snapshot),
    source: revision ? { file: loaded.file, revision } : { file: loaded.file },
    spec,
    createdAt: iso(now),
    updatedAt: iso(now),
    eventSeq: 1,
    costUSD: 0,
  };
  status.outbox = [
    event(status, now, {
      id: `${eventIdBase(status.run, status.uid)}:created`,
      kind: 'spec',
      action: 'created',
      message: `generation 1 from ${loaded.file}${revision ? ` at ${shortRevision(revision)}` : ''}`,
      data: revision ? { specHash: loaded.specHash, revision } : { specHash: loaded.specHash },
    }),
  ];
  return putStatus(deps, status, 'status:create');
}

/**
 * Records where the desired spec came from (file, git revision) and logs a `spec` event whenever
 * its content, file or revision changes, listing the fields, so the event log says which commit
 * every change came from. The revision moves only with the spec's content (or from a dirty tree to
 * a commit), not with every unrelated commit. The event id is derived from what it records, so a
 * replay after a crash appends nothing new.
 */
async function recordSource(deps: ReconcileDeps, status: RunStatus, desired: Desired): Promise<RunStatus> {
  const loaded = desired.loaded;
  if (!loaded) return status;
  const latest = status.nextSpec?.spec ?? status.spec;
  const moved = status.source?.file !== loaded.file;
  const before = status.source?.revision;
  const revision = desired.revision;
  // The common case, every pass over an unchanged run: nothing to record, no field walk.
  const revisionStays = revision === undefined || revision === before || (before !== undefined && !before.endsWith('-dirty'));
  if (!moved && revisionStays && JSON.stringify(latest) === JSON.stringify(loaded.run.spec)) return status;
  const changes = specChanges(latest, loaded.run.spec);
  const contentChanged = changes.length > 0 || moved;
  const revisionNow = contentChanged ? revision : revision !== undefined && (before === undefined || (before.endsWith('-dirty') && revision !== before)) ? revision : before;
  if (!contentChanged && revisionNow === before) return status;

  const trained = changes.some((c) => c.trained) && loaded.specHash !== status.specHash && loaded.specHash !== status.nextSpec?.specHash;
  const what = changes.length
    ? `spec ${trained ? 'changed what is trained (new generation)' : 'changed in place'}: ${changes.map(describeChange).join('; ')}`
    : moved
      ? `spec moved from ${status.source?.file ?? '(unknown)'} to ${loaded.file}`
      : `spec unchanged, now at revision ${shortRevision(revisionNow ?? '')}`;
  const at = revisionNow && contentChanged ? ` (${loaded.file} at ${shortRevision(revisionNow)})` : '';
  const digest = createHash('sha256')
    .update(JSON.stringify([loaded.specHash, loaded.run.spec, loaded.file, revisionNow ?? null, status.specHash]))
    .digest('hex')
    .slice(0, 16);
  const next: RunStatus = { ...status, source: revisionNow ? { file: loaded.file, revision: revisionNow } : { file: loaded.file } };
  await appendNow(deps, next, {
    id: `${eventIdBase(status.run, status.uid)}:spec:${digest}`,
    kind: 'spec',
    action: changes.length ? (trained ? 'new-generation' : 'updated') : moved ? 'moved' : 'revision',
    message: `${what}${at}`,
    data: {
      fields: changes.map((c) => c.path),
      file: loaded.file,
      // Lets a record be rebuilt from the log (rebuild.ts): which spec each generation came from.
      specHash: trained ? loaded.specHash : status.specHash,
      ...(revisionNow ? { revision: revisionNow } : {}),
    },
  });
  return next;
}

function shortRevision(revision: string): string {
  return revision.replace(/^([0-9a-f]{12})[0-9a-f]+/, '$1');
}

/** Keeps status.spec current: supervision fields apply in place; a new spec hash waits as nextSpec. */
function applySpecBookkeeping(status: RunStatus, desired: Desired): RunStatus {
  const loaded = desired.loaded;
  if (!loaded) return status;
  if (loaded.specHash === status.specHash) {
    if (JSON.stringify(loaded.run.spec) === JSON.stringify(status.spec) && !status.nextSpec) return status;
    return { ...status, spec: loaded.run.spec, nextSpec: undefined, source: { ...status.source, file: loaded.file } };
  }
  if (status.nextSpec?.specHash === loaded.specHash) {
    return { ...status, nextSpec: { ...status.nextSpec, spec: loaded.run.spec } };
  }
  return status;
}

async function observe(
  deps: ReconcileDeps,
  provider: Provider,
  status: RunStatus,
  snapshot: RunSnapshot,
  freshAfter: number,
): Promise<{ instances: InstanceObservation[]; agent?: AgentStatus }> {
  const instances = await observeOwn(deps, provider, status, freshAfter);
  const ctx = snapshot.context;
  const phase = phaseOf(snapshot.value);
  const needsAgent = ['Syncing', 'Installing', 'Training', 'Interrupted', 'Terminating'].includes(phase);
  if (!needsAgent || ctx.attempt === 0) return { instances };
  const key = attemptKey(status, ctx.generation, ctx.attempt);
  const agent = await provider.readAgentStatus(key, specFor(status, ctx.generation));
  return agent ? { instances, agent } : { instances };
}

/**
 * Once per attempt, the event saying how the final sync after a notice or stop went: how many
 * seconds before the notice's termination time the final checkpoint was safe in storage, or that
 * it was not and which checkpoint a resume gets (issue 9). The id is per attempt, so a replay
 * appends nothing new; status.agent.finalSync records that it was written.
 */
async function recordFinalSync(deps: ReconcileDeps, status: RunStatus, snapshot: RunSnapshot, agent: AgentStatus | undefined): Promise<void> {
  const ctx = snapshot.context;
  const report = agent?.finalSync;
  if (!agent || !report || agent.attempt !== ctx.attempt || agent.generation !== ctx.generation) return;
  if (status.agent?.attempt === agent.attempt && status.agent.finalSync) return;
  await appendNow(deps, status, {
    id: `${status.run}:final-sync:g${agent.generation}:a${agent.attempt}`,
    kind: 'observation',
    action: 'final checkpoint',
    result: report.safe ? 'ok' : 'error',
    message: report.message,
    data: {
      safe: report.safe,
      generation: agent.generation,
      attempt: agent.attempt,
      ...(agent.progress ? { lastStep: agent.progress.step } : {}),
      ...(checkpointStep(agent, report.checkpoint) !== undefined ? { checkpointStep: checkpointStep(agent, report.checkpoint) } : {}),
      ...(report.checkpoint ? { checkpoint: report.checkpoint } : {}),
      ...(report.newest ? { newest: report.newest } : {}),
      ...(report.terminationTime ? { terminationTime: report.terminationTime } : {}),
      ...(report.safeSecondsBeforeTermination !== undefined ? { safeSecondsBeforeTermination: report.safeSecondsBeforeTermination } : {}),
    },
  });
}

/** The step a checkpoint the agent listed holds, when known. */
function checkpointStep(agent: AgentStatus, id: string | undefined): number | undefined {
  if (!id) return undefined;
  if (agent.lastCheckpoint?.id === id && agent.lastCheckpoint.step !== undefined) return agent.lastCheckpoint.step;
  return agent.checkpoints?.find((c) => c.id === id)?.step;
}

/**
 * Once per attempt, the event naming the checkpoint the agent restored before the job started and
 * the step it holds: the ledger's "steps redone" ends there. The id is per attempt, so a replay
 * appends nothing new; status.agent.restoredFrom records that it was written.
 */
async function recordRestore(deps: ReconcileDeps, status: RunStatus, snapshot: RunSnapshot, agent: AgentStatus | undefined): Promise<void> {
  const ctx = snapshot.context;
  const restored = agent?.restoredFrom;
  if (!agent || !restored || agent.attempt !== ctx.attempt || agent.generation !== ctx.generation) return;
  if (status.agent?.attempt === agent.attempt && status.agent.restoredFrom) return;
  const step = restored.generation === undefined || restored.generation === agent.generation ? checkpointStep(agent, restored.id) : undefined;
  await appendNow(deps, status, {
    id: `${status.run}:restored:g${agent.generation}:a${agent.attempt}`,
    kind: 'observation',
    action: 'restored checkpoint',
    result: 'ok',
    message: `attempt ${agent.attempt} restored checkpoint ${restored.id}${restored.generation !== undefined ? ` of generation ${restored.generation}` : ''}${step !== undefined ? ` (step ${step})` : ''}`,
    data: {
      generation: agent.generation,
      attempt: agent.attempt,
      checkpoint: restored.id,
      ...(restored.generation !== undefined ? { fromGeneration: restored.generation } : {}),
      ...(step !== undefined ? { step } : {}),
    },
  });
}

/**
 * Once per attempt, the event saying what setup did (issue 12): restored from the setup cache
 * (setup skipped; how long the restore took and the seconds saved), rebuilt (setup ran, and why the
 * cache was not used: none yet, a changed key, a corrupt or missing archive), or ran without a
 * cache. The ledger reads `data.cache`, `data.seconds` and `data.savedSeconds`. A corrupt or
 * missing archive, or output that could not be stored, is an `error` result: it costs the next
 * attempt a setup.
 */
async function recordSetupCache(deps: ReconcileDeps, status: RunStatus, snapshot: RunSnapshot, agent: AgentStatus | undefined): Promise<void> {
  const ctx = snapshot.context;
  const report = agent?.setupCache;
  if (!agent || !report || agent.attempt !== ctx.attempt || agent.generation !== ctx.generation) return;
  if (status.agent?.attempt === agent.attempt && status.agent.setupCache) return;
  const cache = report.result === 'restored' ? 'restored' : report.result === 'rebuilt' ? 'rebuilt' : 'ran';
  const seconds = report.result === 'restored' ? report.seconds : report.setupSeconds;
  const trouble = report.missed === 'corrupt' || report.missed === 'missing' || report.result === 'unavailable' || (report.result === 'rebuilt' && report.stored === false);
  await appendNow(deps, status, {
    id: `${status.run}:setup:g${agent.generation}:a${agent.attempt}`,
    kind: 'observation',
    action: `setup ${report.result}`,
    result: trouble ? 'error' : 'ok',
    message: report.message,
    data: {
      cache,
      ...(seconds !== undefined ? { seconds } : {}),
      ...(report.savedSeconds !== undefined ? { savedSeconds: report.savedSeconds } : {}),
      ...(report.setupSeconds !== undefined ? { setupSeconds: report.setupSeconds } : {}),
      ...(report.key ? { key: report.key } : {}),
      ...(report.missed ? { missed: report.missed } : {}),
      ...(report.stored !== undefined ? { stored: report.stored } : {}),
      ...(report.bytes !== undefined ? { bytes: report.bytes } : {}),
    },
  });
}

/**
 * The fault channel: folds the faults the current attempt's agent lists into the run's faults and
 * conditions, and appends an event for each fault that appeared or cleared. Event ids are derived
 * from the fault (reason and first-seen time), so a replay after a crash appends nothing twice.
 */
async function absorbAgentFaults(deps: ReconcileDeps, status: RunStatus, snapshot: RunSnapshot, agent: AgentStatus | undefined): Promise<RunStatus> {
  const ctx = snapshot.context;
  if (!agent || agent.attempt !== ctx.attempt || agent.generation !== ctx.generation) return status;
  const reported = reportedFaults(agent.faults);
  if (reported.length === 0 && !(status.faults ?? []).some((f) => !f.clearedAt)) return status;
  const now = iso(deps.now());
  const change = absorbFaults(status.faults, reported, { run: status.run, generation: ctx.generation, attempt: ctx.attempt }, now);
  if (JSON.stringify(change.faults) === JSON.stringify(status.faults ?? [])) return status;
  const next: RunStatus = { ...status, faults: change.faults };
  next.conditions = mergeConditions(status.conditions, wantedConditions(phaseOf(snapshot.value), ctx, next), now);
  for (const f of change.appeared) {
    await appendNow(deps, next, notifyOf(deps, next, {
      id: `${status.run}:fault:g${f.generation}:a${f.attempt}:${f.reason}:${f.since}`,
      kind: 'observation',
      action: `fault ${f.reason}`,
      result: 'error',
      message: f.file ? `${f.message} (file: ${f.file})` : f.message,
      data: { reason: f.reason, since: f.since, ...(f.file ? { file: f.file } : {}) },
    }));
  }
  for (const f of change.cleared) {
    await appendNow(deps, next, {
      id: `${status.run}:fault:g${f.generation}:a${f.attempt}:${f.reason}:${f.since}:cleared`,
      kind: 'observation',
      action: `fault ${f.reason} cleared`,
      result: 'ok',
      message: `the agent no longer reports ${f.reason}`,
      data: { reason: f.reason, since: f.since },
    });
  }
  return next;
}

/** Folds what was observed into status fields that are facts, not transitions. */
function absorbObservation(
  status: RunStatus,
  snapshot: RunSnapshot,
  observed: { instances: InstanceObservation[]; agent?: AgentStatus },
  now: number,
): RunStatus {
  const ctx = snapshot.context;
  const next: RunStatus = { ...status, instances: status.instances.map((i) => ({ ...i })) };
  for (const record of next.instances) {
    const seen = observed.instances.find((o) => o.instance.id === record.id);
    if (!record.endedAt && seen?.state === 'terminated') {
      record.endedAt = iso(now);
      record.endReason = seen.spotInterruption?.reason ?? seen.stateReason ?? 'terminated';
    }
  }
  const agent = observed.agent;
  if (agent && agent.attempt === ctx.attempt && agent.generation === ctx.generation) {
    const prev = next.agent?.attempt === agent.attempt ? next.agent : undefined;
    next.agent = {
      attempt: agent.attempt,
      phase: agent.phase,
      seq: agent.seq,
      heartbeatAt: agent.heartbeatAt,
      deployedAt: prev?.deployedAt,
      message: agent.message,
      logTail: agent.logTail,
      restoredFrom: agent.restoredFrom ?? prev?.restoredFrom,
      failureReason: agent.failureReason,
      finalSync: agent.finalSync ?? prev?.finalSync,
      setupCache: agent.setupCache ?? prev?.setupCache,
      jobStartedAt: agent.jobStartedAt ?? prev?.jobStartedAt,
      stoppingSince: agent.stoppingSince ?? prev?.stoppingSince,
    };
    if (agent.setupCache?.key && (next.setupCache === undefined || next.setupCache.generation <= agent.generation)) {
      next.setupCache = { generation: agent.generation, key: agent.setupCache.key };
    }
    if (agent.progress) next.progress = agent.progress;
    if (agent.lastCheckpoint) next.lastCheckpoint = { ...agent.lastCheckpoint, generation: agent.generation };
    if (agent.checkpoints) next.checkpoints = agent.checkpoints;
  }
  return next;
}

/**
 * The instance's moments behind a transition the agent's own report caused (issue 12): `agentAt`,
 * AGENT_TRAINING at the job's start and a SPOT_NOTICE when the agent began stopping the job, which
 * the ledger prefers to the transition's time (it trails them by a heartbeat and a poll); and
 * `jobStartedAt` on a notice or the job's end, for a job no look saw training (it ended, or was
 * noticed, between two polls), only while the transition still names that attempt (a retried
 * failure names the next). A moment later than the transition (a clock ahead of the controller's)
 * is not trusted.
 */
function agentMoment(status: RunStatus, ev: MachineEvent, attempt: number, attemptAfter: number): { agentAt?: string; jobStartedAt?: string } {
  const agent = status.agent?.attempt === attempt ? status.agent : undefined;
  if (!agent) return {};
  const trusted = (at: string | undefined) => (at !== undefined && Date.parse(at) <= ev.at ? at : undefined);
  const started = trusted(agent.jobStartedAt);
  if (ev.type === 'AGENT_TRAINING') return started ? { agentAt: started } : {};
  const stopping = ev.type === 'SPOT_NOTICE' ? trusted(agent.stoppingSince) : undefined;
  const ended = attemptAfter === attempt && (ev.type === 'SPOT_NOTICE' || ev.type === 'JOB_SUCCEEDED' || ev.type === 'JOB_FAILED');
  return { ...(stopping ? { agentAt: stopping } : {}), ...(ended && started ? { jobStartedAt: started } : {}) };
}

async function commitTransition(
  deps: ReconcileDeps,
  status: RunStatus,
  before: RunSnapshot,
  after: RunSnapshot,
  ev: MachineEvent,
  effects: Effect[],
  desired: Desired,
): Promise<RunStatus> {
  const now = deps.now();
  const from = phaseOf(before.value);
  const to = phaseOf(after.value);
  const seq = status.eventSeq + 1;
  const transitionId = `${eventIdBase(status.run, status.uid)}:${seq}`;
  const record = notifyOf(deps, status, event(status, now, {
    id: transitionId,
    seq,
    kind: 'transition',
    action: transitionLabel(before, after, ev),
    message: describeEvent(ev),
    data: {
      event: ev.type,
      generation: after.context.generation,
      attempt: after.context.attempt,
      // The ledger's "steps redone" starts from the progress at the notice.
      ...((ev.type === 'SPOT_NOTICE' || ev.type === 'INSTANCE_GONE') && status.progress ? { step: status.progress.step } : {}),
      // The moment on the instance, when its agent reported it: the controller sees it a poll later.
      ...agentMoment(status, ev, before.context.attempt, after.context.attempt),
    },
  }));
  record.generation = after.context.generation;
  record.attempt = after.context.attempt;
  let next: RunStatus = { ...status, eventSeq: seq, outbox: [record] };
  if (ev.type === 'NEW_GENERATION' && desired.loaded) {
    next.nextSpec = { generation: ev.generation, specHash: desired.loaded.specHash, spec: desired.loaded.run.spec };
  }
  if (ev.type === 'FATAL') next.fatal = undefined;
  if (effects.length > 0) {
    next.pending = {
      transitionId,
      phaseAfter: to,
      effects: effects.map((e) => ('params' in e ? { type: e.type, params: e.params } : { type: e.type })),
      snapshotAfter: persist(after),
    };
    return putStatus(deps, next, `intent:${transitionId}`);
  }
  next = settleSnapshot(next, after, now);
  return putStatus(deps, next, `commit:${transitionId}`);
}

/** Runs the pending effects (again, after a crash) and commits the snapshot they lead to. */
async function applyPending(deps: ReconcileDeps, status: RunStatus): Promise<RunStatus> {
  const pending = status.pending;
  if (!pending) return status;
  const after = restore(pending.snapshotAfter as PersistedRun);
  let next: RunStatus = { ...status, instances: status.instances.map((i) => ({ ...i })) };
  const results: RunEvent[] = [];
  for (const [index, effect] of pending.effects.entries()) {
    const id = `${pending.transitionId}/${index}:${effect.type}`;
    deps.beforeEffect?.(status.run);
    deps.boundary?.(`before-effect:${id}`);
    try {
      const outcome = await executeEffect(deps, next, after, effect, index);
      next = outcome.status;
      results.push(event(next, deps.now(), { id, kind: 'effect', action: effect.type, result: outcome.result, message: outcome.message, requestId: outcome.requestId, data: outcome.data }));
    } catch (err) {
      if (err instanceof CapacityError && effect.type === 'launch') {
        const failures = (next.launchBlocked?.failures ?? 0) + 1;
        const wait = CAPACITY_RETRY_MS[Math.min(failures - 1, CAPACITY_RETRY_MS.length - 1)] as number;
        next.launchBlocked = {
          since: next.launchBlocked?.since ?? iso(deps.now()),
          message: err.message,
          retryAt: iso(deps.now() + wait),
          failures,
          reason: err.reason,
        };
        results.push(event(next, deps.now(), { id, kind: 'effect', action: 'launch', result: 'error', message: `${err.message}; trying again in ${Math.round(wait / 1000)}s`, requestId: err.requestId }));
      } else if (err instanceof TerminalError) {
        next.fatal = { reason: effect.type === 'launch' ? 'LaunchFailed' : 'ProviderError', message: err.message };
        results.push(event(next, deps.now(), { id, kind: 'effect', action: effect.type, result: 'error', message: err.message, requestId: err.requestId }));
      } else {
        // Retryable (or unknown): leave the intent in place; the queue backs off and replays it.
        const message = err instanceof Error ? err.message : String(err);
        await appendNow(deps, next, {
          id: `${id}:error:${deps.now()}`,
          kind: 'error',
          action: effect.type,
          result: 'error',
          message,
          requestId: err instanceof ProviderError ? err.requestId : undefined,
        });
        throw err;
      }
    }
    deps.boundary?.(`after-effect:${id}`);
  }
  next = settleSnapshot({ ...next, pending: undefined, outbox: results, eventSeq: next.eventSeq }, after, deps.now());
  return putStatus(deps, next, `commit:${pending.transitionId}`);
}

interface EffectOutcome {
  status: RunStatus;
  result: RunEvent['result'];
  message?: string;
  requestId?: string;
  data?: Record<string, unknown>;
}

async function executeEffect(deps: ReconcileDeps, status: RunStatus, after: RunSnapshot, effect: EffectRecord, index: number): Promise<EffectOutcome> {
  const ctx = after.context;
  const spec = specFor(status, ctx.generation);
  const provider = await deps.provider(spec.provider);
  const key = attemptKey(status, ctx.generation, ctx.attempt);
  switch (effect.type) {
    case 'launch': {
      const launched = await launchFor(deps, status, effect, index, provider, spec, key, undefined, bootAgent(deps, status, spec, key, false));
      return { ...launched, status: { ...launched.status, launchBlocked: undefined } };
    }
    case 'prelaunch': {
      // The next attempt's capacity, launched during the notice under that attempt's own launch
      // key: its Provisioning later adopts this instance, and a replay after a crash adopts it too.
      // Best effort: a refusal is recorded and the run recovers the usual way (it launches then).
      const next = attemptKey(status, ctx.generation, Number(effect.params?.attempt ?? ctx.attempt + 1));
      const interrupted = status.instances.find((i) => i.generation === ctx.generation && i.attempt === ctx.attempt && !i.endedAt);
      try {
        // Its agent starts at boot with the start gate closed: code, setup cache, then the gate.
        const launched = await launchFor(deps, status, effect, index, provider, spec, next, reclaimedPool(interrupted), bootAgent(deps, status, spec, next, true));
        return { ...launched, message: `${launched.message}, during the notice (spec.recovery.prelaunch)` };
      } catch (err) {
        if (err instanceof ProviderError && !(err instanceof RetryableError)) {
          return {
            status,
            result: 'error',
            message: `could not launch attempt ${next.attempt}'s instance during the notice (${err.message}); it is launched once attempt ${ctx.attempt} has stopped`,
            requestId: err.requestId,
          };
        }
        throw err;
      }
    }
    case 'deployReplacement': {
      // Ship the code and start the replacement's agent with its start gate closed: it sets up
      // (or restores the setup cache), then waits until openStartGate.
      const next = attemptKey(status, ctx.generation, Number(effect.params?.attempt ?? ctx.attempt + 1));
      const instance = status.instances.find((i) => i.generation === next.generation && i.attempt === next.attempt && !i.endedAt);
      if (!instance) return { status, result: 'skipped', message: `no live instance recorded for attempt ${next.attempt}` };
      const seedGeneration = seedGenerationFor(status, spec, next.generation);
      let report;
      try {
        report = await provider.deployAgent({ ...next, spec, instance, repoRoot: deps.repoRoot, seedGeneration, startGate: true });
      } catch (err) {
        // Best effort, like the launch: the attempt's own Syncing deploys the agent again.
        if (!(err instanceof ProviderError) || err instanceof RetryableError) throw err;
        return { status, result: 'error', message: `could not start attempt ${next.attempt}'s agent during the notice (${err.message}); it is started once attempt ${ctx.attempt} has stopped`, requestId: err.requestId };
      }
      const codeBundle = report?.codeBundle;
      const instances = codeBundle ? status.instances.map((i) => (i === instance ? { ...i, codeBundle } : i)) : status.instances;
      return {
        status: { ...status, instances },
        result: 'ok',
        message: `agent for attempt ${next.attempt} started on ${instance.id}, waiting at its start gate for attempt ${ctx.attempt} to stop${codeBundle ? ` (code bundle ${codeBundle.slice(0, 12)})` : ''}`,
      };
    }
    case 'openStartGate': {
      const next = attemptKey(status, ctx.generation, Number(effect.params?.attempt ?? ctx.attempt));
      await provider.openStartGate(next, spec);
      return {
        status,
        result: 'ok',
        message: `start gate of attempt ${next.attempt} opened: attempt ${next.attempt - 1} has stopped, so its final checkpoint is the one restored`,
        data: { attempt: next.attempt },
      };
    }
    case 'deployAgent': {
      const instance = status.instances.find((i) => i.generation === key.generation && i.attempt === key.attempt && !i.endedAt);
      if (!instance) throw new ProviderError(`no live instance recorded for attempt ${key.attempt}`);
      const seedGeneration = seedGenerationFor(status, spec, key.generation);
      const report = await provider.deployAgent({ ...key, spec, instance, repoRoot: deps.repoRoot, seedGeneration });
      const now = iso(deps.now());
      const codeBundle = report?.codeBundle;
      const instances = codeBundle ? status.instances.map((i) => (i === instance ? { ...i, codeBundle } : i)) : status.instances;
      return {
        status: { ...status, instances, agent: { attempt: key.attempt, phase: 'starting', seq: 0, heartbeatAt: now, deployedAt: now } },
        result: 'ok',
        message: `agent started on ${instance.id}${codeBundle ? ` (code bundle ${codeBundle.slice(0, 12)})` : ''}`,
      };
    }
    case 'requestStop': {
      const reason = (effect.params?.reason ?? 'delete') as Parameters<Provider['requestStop']>[2];
      await provider.requestStop(key, spec, reason);
      return { status, result: 'ok', message: `asked the agent to checkpoint and stop (${reason})` };
    }
    case 'deliverSpotNotice': {
      const instance = status.instances.find((i) => i.generation === key.generation && i.attempt === key.attempt && !i.endedAt);
      if (!instance) return { status, result: 'skipped', message: 'no live instance to interrupt' };
      await provider.deliverSpotNotice(key, instance.id);
      return { status, result: 'ok', message: `rehearsal: spot interruption notice delivered to ${instance.id}` };
    }
    case 'terminate': {
      const reason = String(effect.params?.reason ?? 'terminate');
      // A prelaunched replacement is spared: it is the run's next attempt, not leftover capacity.
      const spare = typeof effect.params?.spare === 'number' ? effect.params.spare : undefined;
      const spared = (generation: number, attempt: number) => spare !== undefined && generation === ctx.generation && attempt === spare;
      const live = await liveInstanceIds(deps, provider, status, spared);
      for (const id of live) await provider.terminate(id, launchInfo(status, id));
      const now = iso(deps.now());
      const instances = status.instances.map((i) => (live.includes(i.id) && !i.endedAt ? { ...i, endedAt: now, endReason: reason } : i));
      return {
        status: { ...status, instances },
        result: live.length ? 'ok' : 'skipped',
        message: live.length ? `terminated ${live.join(', ')} (${reason})` : `nothing to terminate (${reason})`,
      };
    }
    default:
      throw new ProviderError(`unknown effect ${effect.type}`);
  }
}

/**
 * Launches (or adopts) the instance of attempt `key`. Intent before effect, per rung: the rung and
 * token about to be requested are written into the pending effect first, so a controller restarted
 * after an unrecorded launch replays that request (EC2 returns the same instance for the same
 * token) before trying any other rung.
 */
async function launchFor(
  deps: ReconcileDeps,
  status: RunStatus,
  effect: EffectRecord,
  index: number,
  provider: Provider,
  spec: RunSpec,
  key: AttemptKey,
  avoidPools?: CapacityPool[],
  bootAgent?: BootAgent,
): Promise<EffectOutcome> {
  const recorded = launchIntentOf(effect);
  let current = status;
  const beforeRunInstances = async (intent: LaunchIntent): Promise<void> => {
    const pending = current.pending;
    if (!pending || (recorded?.rung === intent.rung && recorded.token === intent.token)) return;
    const effects = pending.effects.map((e, i) => (i === index ? { ...e, params: { ...e.params, inFlight: { ...intent } } } : e));
    current = await putStatus(deps, { ...current, pending: { ...pending, effects } }, `launch-intent:${pending.transitionId}/${index}`);
  };
  const { instance, adopted, bootAgent: boot } = await provider.launch({
    ...key,
    spec,
    controller: deps.controller,
    ...(recorded ? { inFlight: recorded } : {}),
    ...(avoidPools?.length ? { avoidPools } : {}),
    ...(bootAgent ? { bootAgent } : {}),
    beforeRunInstances,
  });
  const instances = current.instances.some((i) => i.id === instance.id)
    ? current.instances
    : [...current.instances, { ...instance, generation: key.generation, attempt: key.attempt }];
  const where = [instance.type, instance.zone, instance.market].filter(Boolean).join(', ');
  return {
    status: { ...current, instances },
    result: adopted ? 'adopted' : 'ok',
    message:
      `${adopted ? 'adopted' : 'launched'} ${instance.id}${where ? ` (${where})` : ''} for attempt ${key.attempt}` +
      (boot ? (boot.started ? ', its agent starting at boot' : `; its agent starts once the instance is ready (${boot.reason})`) : ''),
    data: { instanceId: instance.id, generation: key.generation, attempt: key.attempt, ...(boot ? { agentAtBoot: boot.started } : {}) },
  };
}

/** The launch request a pending launch effect recorded before it was sent, if any. */
function launchIntentOf(effect: EffectRecord): LaunchIntent | undefined {
  const v = effect.params?.inFlight as Partial<LaunchIntent> | undefined;
  return typeof v?.rung === 'string' && typeof v.token === 'string' ? { rung: v.rung, token: v.token } : undefined;
}

/** The generation an attempt of `generation` restores from when it has no checkpoint of its own (spec.recovery.seedFromPreviousGeneration). */
function seedGenerationFor(status: RunStatus, spec: RunSpec, generation: number): number | undefined {
  return spec.recovery.seedFromPreviousGeneration ? previousGeneration(status, generation) : undefined;
}

/** What a launch needs to start attempt `key`'s agent at boot: as its deploy would, gate closed for a replacement launched during a notice. */
function bootAgent(deps: ReconcileDeps, status: RunStatus, spec: RunSpec, key: AttemptKey, startGate: boolean): BootAgent {
  const seedGeneration = seedGenerationFor(status, spec, key.generation);
  return { repoRoot: deps.repoRoot, ...(startGate ? { startGate } : {}), ...(seedGeneration !== undefined ? { seedGeneration } : {}) };
}

/**
 * The generation a new one is seeded from: the latest earlier generation that ran. Not simply
 * generation - 1: edits made while an attempt was stopping skip generations that never ran.
 */
function previousGeneration(status: RunStatus, generation: number): number | undefined {
  const earlier = status.instances.map((i) => i.generation).filter((g) => g < generation);
  return earlier.length ? Math.max(...earlier) : undefined;
}

function launchInfo(status: RunStatus, id: string): { launchedAt?: string } {
  const launchedAt = status.instances.find((i) => i.id === id)?.launchedAt;
  return launchedAt ? { launchedAt } : {};
}

/**
 * Every instance of the run that may still be alive: observed live, or recorded and not ended;
 * less those of an attempt `spared` (a prelaunched replacement).
 */
async function liveInstanceIds(
  deps: ReconcileDeps,
  provider: Provider,
  status: RunStatus,
  spared: (generation: number, attempt: number) => boolean = () => false,
): Promise<string[]> {
  const observed = await observeOwn(deps, provider, status, deps.now());
  const ids = new Set(observed.filter((o) => o.state !== 'terminated' && !spared(o.generation, o.attempt)).map((o) => o.instance.id));
  for (const r of status.instances) {
    const seen = observed.find((o) => o.instance.id === r.id);
    if (!r.endedAt && (!seen || seen.state !== 'terminated') && !spared(r.generation, r.attempt)) ids.add(r.id);
  }
  return [...ids];
}

/** Commits a snapshot into status: phase, generation promotion, counters, conditions. */
function settleSnapshot(status: RunStatus, snapshot: RunSnapshot, now: number): RunStatus {
  const ctx = snapshot.context;
  const phase = phaseOf(snapshot.value);
  let next: RunStatus = {
    ...status,
    phase,
    snapshot: persist(snapshot),
    attempt: ctx.attempt,
    interruptions: ctx.interruptions,
    errorRetries: ctx.errorRetries,
    failure: ctx.failure,
    deadlines: ctx.deadline ? { [ctx.deadline.kind]: iso(ctx.deadline.at) } : {},
  };
  if (next.nextSpec && ctx.generation === next.nextSpec.generation) {
    next = {
      ...next,
      generation: next.nextSpec.generation,
      specHash: next.nextSpec.specHash,
      spec: next.nextSpec.spec,
      nextSpec: undefined,
      progress: undefined,
      lastCheckpoint: undefined,
      checkpoints: undefined,
      trainingStartedAt: undefined,
    };
  }
  if (phase === 'Training' && status.phase !== 'Training') next.trainingStartedAt = iso(now);
  if (phase === 'Provisioning' && status.phase !== 'Provisioning') next.progress = status.progress;
  if (!['Pending', 'Terminating'].includes(phase) && !next.nextSpec) next.observedGeneration = next.generation;
  next.conditions = mergeConditions(status.conditions, wantedConditions(phase, ctx, next), iso(now));
  return next;
}

/** Terminal housekeeping: no instance outlives a finished run, and deleted runs are archived. */
async function finishRun(deps: ReconcileDeps, status: RunStatus, desired: Desired): Promise<RunStatus> {
  let next = status;
  const terminal = ['Completed', 'Failed', 'Suspended', 'Deleted'].includes(status.phase);
  if (terminal && !status.pending) {
    const provider = await deps.provider(status.spec.provider);
    const live = await liveInstanceIds(deps, provider, status);
    if (live.length > 0) {
      for (const id of live) await provider.terminate(id, launchInfo(status, id));
      const now = iso(deps.now());
      next = {
        ...next,
        instances: next.instances.map((i) => (live.includes(i.id) && !i.endedAt ? { ...i, endedAt: now, endReason: `cleanup after ${status.phase}` } : i)),
      };
      await appendNow(deps, next, {
        id: `${eventIdBase(status.run, status.uid)}:cleanup:${deps.now()}`,
        kind: 'effect',
        action: 'terminate',
        result: 'ok',
        message: `terminated ${live.join(', ')}: no instance outlives a ${status.phase.toLowerCase()} run`,
      });
    }
  }
  if (next.phase !== 'Deleted') next = await refreshLedger(deps, await deps.provider(next.spec.provider), next, restore(next.snapshot as PersistedRun));
  const changed = JSON.stringify({ ...next, updatedAt: '' }) !== JSON.stringify({ ...(await lastWritten(deps, status)), updatedAt: '' });
  if (changed) next = await putStatus(deps, next, 'status:observe');
  if (next.phase === 'Deleted' && !desired.loaded) {
    await deps.store.deleteStatus(next.run);
  }
  return next;
}

// The last document this process wrote for each run, to skip writes that would change nothing.
const written = new WeakMap<ReconcileDeps, Map<string, RunStatus>>();

async function lastWritten(deps: ReconcileDeps, status: RunStatus): Promise<RunStatus | undefined> {
  return written.get(deps)?.get(status.run) ?? (await deps.store.getStatus(status.run));
}

async function putStatus(deps: ReconcileDeps, status: RunStatus, label: string): Promise<RunStatus> {
  const next = { ...status, updatedAt: iso(deps.now()) };
  deps.boundary?.(`before-write:${label}`);
  await deps.store.putStatus(next);
  let cache = written.get(deps);
  if (!cache) written.set(deps, (cache = new Map()));
  cache.set(next.run, next);
  deps.boundary?.(`after-write:${label}`);
  await flushOutbox(deps, next);
  return next;
}

// Runs whose event log grew since their ledger was last derived from it (per controller process).
const ledgerStale = new WeakMap<ReconcileDeps, Set<string>>();

function markEventsAppended(deps: ReconcileDeps, run: string): void {
  let runs = ledgerStale.get(deps);
  if (!runs) ledgerStale.set(deps, (runs = new Set()));
  runs.add(run);
}

/**
 * Prices the run's instances where due and brings its ledger up to date: re-derived from the event
 * log when events were appended since (or it has none yet), else re-costed. Sets the `CostKnown`
 * condition when a cost cannot be had, so a budget that cannot count it is not silently trusted.
 */
async function refreshLedger(deps: ReconcileDeps, provider: Provider, status: RunStatus, snapshot: RunSnapshot): Promise<RunStatus> {
  const now = deps.now();
  let next = await priceInstances(provider, status, now);
  const stale = ledgerStale.get(deps)?.has(status.run) || !next.ledger;
  const events = stale ? await deps.store.readEvents(status.run) : undefined;
  if (stale) ledgerStale.get(deps)?.delete(status.run);
  next = withLedger(next, now, events);
  if (JSON.stringify(next.ledger?.unknown ?? []) !== JSON.stringify(status.ledger?.unknown ?? [])) {
    next.conditions = mergeConditions(next.conditions, wantedConditions(phaseOf(snapshot.value), snapshot.context, next), iso(now));
  }
  return next;
}

// Event ids this process has already appended and announced, so replays stay quiet.
const announced = new WeakMap<ReconcileDeps, Set<string>>();

async function flushOutbox(deps: ReconcileDeps, status: RunStatus, announce = true): Promise<void> {
  let seen = announced.get(deps);
  if (!seen || seen.size > 50_000) announced.set(deps, (seen = new Set()));
  const fresh = (status.outbox ?? []).filter((e) => !seen.has(e.id));
  if (fresh.length === 0) return;
  await deps.store.appendEvents(status.run, fresh);
  markEventsAppended(deps, status.run);
  for (const e of fresh) {
    seen.add(e.id);
    if (announce) deps.onEvent?.(e);
  }
}

async function appendNow(deps: ReconcileDeps, status: RunStatus, partial: Omit<RunEvent, 'seq' | 'at' | 'run' | 'generation' | 'attempt'> & { seq?: number }): Promise<void> {
  const e = event(status, deps.now(), partial);
  await deps.store.appendEvents(status.run, [e]);
  markEventsAppended(deps, status.run);
  deps.onEvent?.(e);
}

/**
 * The event, marked (`data.notify`) for the notification receivers that want it: the project's and
 * the run's own, as configured now. Written with the event, so delivery (src/notify/) needs no
 * other record of who was subscribed when it happened.
 */
function notifyOf<E extends Pick<RunEvent, 'kind' | 'action' | 'data'> & { attempt?: number }>(deps: ReconcileDeps, status: RunStatus, e: E): E {
  if (!deps.notifications?.length && !status.spec.notifications?.length) return e;
  return stampNotifications(e, receiversFor(deps.notifications, status.spec.notifications));
}

function event(
  status: RunStatus,
  now: number,
  partial: Omit<RunEvent, 'seq' | 'at' | 'run' | 'generation' | 'attempt'> & { seq?: number },
): RunEvent {
  return {
    seq: partial.seq ?? status.eventSeq,
    at: iso(now),
    run: status.run,
    uid: status.uid,
    generation: status.generation,
    attempt: status.attempt,
    ...partial,
  };
}

/**
 * The provider's key for an attempt of this run incarnation: carries the uid, so tags, storage
 * prefixes and launch tokens are this incarnation's only (legacy runs: undefined, see identity.ts).
 */
export function attemptKey(status: Pick<RunStatus, 'run' | 'uid'>, generation: number, attempt: number): AttemptKey {
  const uid = providerUid(status.uid);
  return uid === undefined ? { run: status.run, generation, attempt } : { run: status.run, uid, generation, attempt };
}

/** Instances observed under the run's name that belong to this incarnation: matched on uid, never on the name alone. */
async function observeOwn(deps: ReconcileDeps, provider: Provider, status: RunStatus, freshAfter: number): Promise<InstanceObservation[]> {
  const uid = providerUid(status.uid);
  return (await deps.observe(provider, status.run, freshAfter)).filter((o) => o.uid === uid);
}

function specFor(status: RunStatus, generation: number): RunSpec {
  return status.nextSpec && status.nextSpec.generation === generation ? status.nextSpec.spec : status.spec;
}

/** Milliseconds until the run is looked at again, or undefined when it needs no more looks (a final phase, suspended). */
export function requeueAfter(status: RunStatus, provider: Pick<Provider, 'pollIntervalMs' | 'noticePollIntervalMs'>, now: number, lastEffectAt: number | undefined): number | undefined {
  if (['Completed', 'Failed', 'Deleted'].includes(status.phase)) return undefined;
  if (status.phase === 'Suspended') return undefined;
  if (status.phase === 'Pending' && status.spec.suspend) return undefined;
  if (status.pending) return 1_000;
  if (lastEffectAt !== undefined) return Math.min(provider.pollIntervalMs, 500);
  if (status.launchBlocked && !status.instances.some((i) => !i.endedAt)) {
    return Math.max(500, Math.min(provider.pollIntervalMs * 5, Date.parse(status.launchBlocked.retryAt) - now));
  }
  if (provider.noticePollIntervalMs !== undefined && noticeMayCome(status)) return Math.min(provider.pollIntervalMs, provider.noticePollIntervalMs);
  return provider.pollIntervalMs;
}

/**
 * While a spot attempt trains (a notice may come any second) or is stopping after one (its final
 * checkpoint opens the replacement's gate): the phases where the controller's reaction time is
 * part of what an interruption costs.
 */
function noticeMayCome(status: RunStatus): boolean {
  if (status.phase !== 'Training' && status.phase !== 'Interrupted') return false;
  const live = status.instances.find((i) => i.attempt === status.attempt && !i.endedAt);
  return live?.market === 'spot';
}

function transitionLabel(before: RunSnapshot, after: RunSnapshot, ev: MachineEvent): string {
  const from = phaseOf(before.value);
  const to = phaseOf(after.value);
  if (from !== to) return `${from} -> ${to}`;
  const subFrom = subPhaseOf(before.value);
  const subTo = subPhaseOf(after.value);
  if (subFrom !== subTo) return `${from}: ${subFrom ?? '-'} -> ${subTo ?? '-'}`;
  return `${from} (${ev.type})`;
}

function describeEvent(ev: MachineEvent): string {
  switch (ev.type) {
    case 'JOB_FAILED':
    case 'FATAL':
    case 'BUDGET_EXCEEDED':
      return ev.message;
    case 'SPOT_NOTICE':
    case 'INSTANCE_GONE':
      return ev.reason;
    case 'NEW_GENERATION':
      return `spec changed what is trained: generation ${ev.generation}`;
    default:
      return ev.type;
  }
}
