// Level-triggered event derivation: from what is wanted (spec), what is remembered (status) and
// what is observed now (instances, agent status), the one event the machine should see next.
// Pure: the clock is an argument. The reconciler calls these repeatedly until they return nothing.
import type { RunEvent } from '../machine/events.js';
import type { RunSnapshot } from '../machine/snapshot.js';
import { phaseOf, subPhaseOf } from '../machine/snapshot.js';
import type { AgentStatus, InstanceObservation } from '../providers/types.js';
import { parseDuration } from '../spec/duration.js';
import type { LoadedRun } from '../spec/types.js';
import type { RunStatus } from '../state/types.js';
import { limitsFromSpec, sameLimits } from './limits.js';
import { prelaunchEnabled, prelaunchOnRebalance } from './prelaunch.js';

/** An instance launched this recently may not be visible to observation yet (EC2 is eventually consistent). */
export const LAUNCH_VISIBILITY_GRACE_MS = 60_000;
/** An agent silent this long on a live instance is started again (it adopts the running job). */
export const AGENT_SILENCE_MS = 60_000;

export interface Desired {
  /** Undefined when the run's file is gone. */
  loaded?: LoadedRun;
  prune: boolean;
  /** The revision (git commit) the loaded spec came from, when known. */
  revision?: string;
}

/** What a spec change means for the machine, or undefined. Also returns bookkeeping for status. */
export function deriveSpecEvent(
  snapshot: RunSnapshot,
  status: RunStatus,
  desired: Desired,
  now: number,
): RunEvent | undefined {
  const phase = phaseOf(snapshot.value);
  if (phase === 'Deleted') return undefined;
  const ctx = snapshot.context;
  if (!desired.loaded) {
    return desired.prune ? { type: 'DELETE', at: now } : undefined;
  }
  const spec = desired.loaded.run.spec;
  const wantedHash = desired.loaded.specHash;
  const pendingHash = status.nextSpec?.specHash;
  if (wantedHash !== status.specHash && wantedHash !== pendingHash) {
    const generation = Math.max(status.generation, status.nextSpec?.generation ?? 0) + 1;
    return { type: 'NEW_GENERATION', generation, at: now };
  }
  const limits = limitsFromSpec(spec);
  if (!sameLimits(limits, ctx.limits)) return { type: 'LIMITS', limits, at: now };
  if (spec.suspend) {
    const stoppingForSuspend = phase === 'Terminating' && ctx.stopReason === 'suspend';
    if (!['Suspended', 'Completed', 'Failed'].includes(phase) && !stoppingForSuspend) {
      if (phase !== 'Terminating' || ctx.stopReason === 'new-generation') return { type: 'SUSPEND', at: now };
    }
  } else if (phase === 'Suspended') {
    return { type: 'RESUME', at: now };
  }
  return undefined;
}

export interface Observed {
  now: number;
  /** Every instance of this run the provider sees (any generation or attempt). */
  instances: InstanceObservation[];
  /** The agent's status for the current generation and attempt, if it wrote one. */
  agent?: AgentStatus;
}

const LIVE = (o: InstanceObservation) => o.state !== 'terminated';
const STOPPED_AGENT = new Set(['interrupted', 'stopped', 'succeeded', 'failed', 'lost']);

function currentInstance(ctx: RunSnapshot['context'], obs: Observed): InstanceObservation | undefined {
  return obs.instances.find((o) => o.generation === ctx.generation && o.attempt === ctx.attempt);
}

function recordedInstance(status: RunStatus, ctx: RunSnapshot['context']) {
  return status.instances.find((i) => i.generation === ctx.generation && i.attempt === ctx.attempt);
}

/**
 * The attempt's instance was launched and is now terminated, stopped (or stopping: a user or AWS
 * stop, a scheduled instance-stop, a spot `stop`/`hibernate` interruption), or no longer seen at
 * all. A stopped instance runs nothing: the attempt is over and the run resumes elsewhere (the
 * Resuming phase terminates the stopped instance, which would otherwise keep its volume billed).
 */
function instanceGone(status: RunStatus, ctx: RunSnapshot['context'], obs: Observed): { spot: boolean; reason: string } | undefined {
  const record = recordedInstance(status, ctx);
  if (!record) return undefined;
  const seen = currentInstance(ctx, obs);
  const stopped = seen?.state === 'stopping' || seen?.state === 'stopped';
  if (seen && seen.state !== 'terminated' && !stopped) return undefined;
  if (!seen && obs.now - Date.parse(record.launchedAt) < LAUNCH_VISIBILITY_GRACE_MS) return undefined;
  const reason = seen?.spotInterruption?.reason ?? seen?.stateReason ?? 'instance no longer exists';
  const spot = Boolean(seen?.spotInterruption) || /spot/i.test(reason);
  if (stopped) return { spot, reason: `instance ${seen?.instance.id} was stopped (${reason}); resuming on another instance` };
  return { spot, reason: spot ? `spot interruption (${reason})` : `instance ended outside runctl: ${reason}` };
}

/**
 * EC2 state reasons of an instance that ended before it was ever usable, with what to do (EC2
 * user guide, "Troubleshoot Amazon EC2 instance launch issues" and "State change reasons"). Such an
 * end is a launch error, not an interruption: retrying the same launch fails the same way.
 */
const LAUNCH_FAILURES: Record<string, string> = {
  'Client.InternalError':
    'usually the KMS key of the account\'s EBS default encryption (or of the image\'s snapshots) cannot be used: ' +
    'the key must be enabled and its key policy must let EC2 and the launching role use it (kms:CreateGrant, kms:Decrypt, ' +
    'kms:GenerateDataKeyWithoutPlaintext, kms:ReEncrypt*); see `aws ec2 get-ebs-default-kms-key-id`',
  'Client.InvalidKMSKey.InvalidState': 'the KMS key for the volume is disabled or pending deletion: enable it, or change the EBS default encryption key',
  'Client.VolumeLimitExceeded': 'the account\'s EBS volume quota is reached: delete unused volumes, raise the quota in Service Quotas (Amazon EBS), or lower spec.resources.rootVolumeGiB',
  'Client.InvalidSnapshot.NotFound': 'a snapshot of the image no longer exists: choose another spec.resources.image',
};

/** A launch error from the state reason of the attempt's instance, if it ended at launch. */
function launchFailure(status: RunStatus, ctx: RunSnapshot['context'], obs: Observed): string | undefined {
  const seen = currentInstance(ctx, obs);
  if (!seen || seen.state !== 'terminated' || seen.spotInterruption || !seen.stateReason) return undefined;
  const code = seen.stateReason.match(/^([A-Za-z]+\.[A-Za-z.]+)/)?.[1];
  const advice = code ? LAUNCH_FAILURES[code] : undefined;
  if (!advice) return undefined;
  const record = recordedInstance(status, ctx);
  return `EC2 terminated ${seen.instance.id}${record?.type ? ` (${record.type})` : ''} as it launched: ${seen.stateReason}; ${advice}`;
}

/**
 * "the job exited with code 1 on attempt 3; last output: …". The agent's own message is used as
 * the head when it already says how the attempt ended (it names setup or the job), and added in
 * parentheses only when it says something more, so the message never repeats itself.
 */
export function failureMessage(agent: AgentStatus): string {
  const own = agent.message?.trim();
  const saysHowItEnded = own !== undefined && /(exited with code -?\d+|disappeared without (writing )?an exit code)$/.test(own);
  const head = saysHowItEnded || (agent.reason && own)
    ? `${own}${agent.phase === 'lost' ? ' (lost)' : ''}`
    : agent.phase === 'lost'
      ? 'the job process vanished without an exit code (lost)'
      : agent.exitCode === undefined && own
        ? own
        : `the job exited with code ${agent.exitCode ?? 'unknown'}`;
  const extra = own && !saysHowItEnded && !agent.reason && head !== own ? ` (${own})` : '';
  const tail = agent.logTail?.length ? `; last output:\n${agent.logTail.join('\n')}` : '';
  return `${head} on attempt ${agent.attempt}${extra}${tail}`;
}

/** The next event from observation, deadlines, budget and rehearsal; undefined when nothing is due. */
export function deriveObservedEvent(
  snapshot: RunSnapshot,
  status: RunStatus,
  obs: Observed,
): RunEvent | undefined {
  const at = obs.now;
  const ctx = snapshot.context;
  const phase = phaseOf(snapshot.value);
  const agent = obs.agent && obs.agent.attempt === ctx.attempt && obs.agent.generation === ctx.generation ? obs.agent : undefined;
  const deadlinePassed = ctx.deadline !== undefined && at >= ctx.deadline.at;
  const instance = currentInstance(ctx, obs);
  const budget = status.spec.budget.maxCostUSD;
  const overBudget = budget !== undefined && status.costUSD >= budget;

  switch (phase) {
    case 'Pending':
      return status.spec.suspend ? undefined : { type: 'START', at };

    case 'Provisioning': {
      if (instance?.spotInterruption) return { type: 'SPOT_NOTICE', reason: instance.spotInterruption.reason, at };
      if (instance && instance.state === 'running' && instance.ready) return { type: 'INSTANCE_READY', at };
      const failedLaunch = launchFailure(status, ctx, obs);
      if (failedLaunch) return { type: 'FATAL', reason: 'LaunchFailed', message: failedLaunch, at };
      if (instance?.degraded) return { type: 'SPOT_NOTICE', reason: instance.degraded.message, at };
      const gone = instanceGone(status, ctx, obs);
      if (gone) return { type: 'INSTANCE_GONE', ...gone, at };
      if (overBudget) return { type: 'BUDGET_EXCEEDED', message: budgetMessage(status, budget), at };
      const blocked = status.launchBlocked;
      if (deadlinePassed && blocked && !recordedInstance(status, ctx)) {
        // The generic timeout message would hide why: say what kept refusing the launch.
        return {
          type: 'FATAL',
          reason: blocked.reason === 'InstanceProfileNotReady' ? 'InstanceProfileNotFound' : blocked.reason === 'QuotaExceeded' ? 'QuotaExceeded' : 'ProvisioningTimeout',
          message: `no instance could be launched within spec.timeouts.provisioning (${ctx.limits.text.provisioning}) on attempt ${ctx.attempt}; the last refusal: ${blocked.message}`,
          at,
        };
      }
      if (deadlinePassed) return { type: 'TICK', at };
      if (!recordedInstance(status, ctx) && blocked && at >= Date.parse(blocked.retryAt)) {
        return { type: 'RETRY_LAUNCH', at };
      }
      return undefined;
    }

    case 'Syncing':
    case 'Installing':
    case 'Training': {
      // spec.recovery.prelaunch: a notice launches the next attempt's capacity at once (issue 12).
      const prelaunch = prelaunchEnabled(status.spec);
      if (agent?.phase === 'succeeded') return { type: 'JOB_SUCCEEDED', at };
      // Retrying cannot help: every kept checkpoint was restored by an attempt that then failed.
      if (agent?.phase === 'failed' && agent.failureReason === 'NoCheckpointLeft') {
        return { type: 'FATAL', reason: 'NoCheckpointLeft', message: `attempt ${agent.attempt} did not start the job: ${agent.message ?? 'no checkpoint is left to restore'}`, at };
      }
      if (agent?.phase === 'failed' || agent?.phase === 'lost') {
        return agent.reason
          ? { type: 'JOB_FAILED', message: failureMessage(agent), reason: agent.reason, at }
          : { type: 'JOB_FAILED', message: failureMessage(agent), at };
      }
      if (instance?.spotInterruption) return { type: 'SPOT_NOTICE', reason: instance.spotInterruption.reason, prelaunch, at };
      // A scheduled retirement, stop or reboot, or failed status checks: move before EC2 does
      // (Interrupted then waits for the agent's stop, up to the stop grace period).
      if (instance?.degraded) return { type: 'SPOT_NOTICE', reason: instance.degraded.message, prelaunch, at };
      if (agent && ['interrupting', 'interrupted', 'stopping', 'stopped'].includes(agent.phase)) {
        return { type: 'SPOT_NOTICE', reason: agent.message ?? `agent reported ${agent.phase}`, prelaunch, at };
      }
      const gone = instanceGone(status, ctx, obs);
      if (gone) return { type: 'INSTANCE_GONE', ...gone, at };
      if (phase === 'Syncing' && agent?.phase === 'installing') return { type: 'AGENT_INSTALLING', at };
      if (phase !== 'Training' && agent?.phase === 'training') return { type: 'AGENT_TRAINING', at };
      if (overBudget) return { type: 'BUDGET_EXCEEDED', message: budgetMessage(status, budget), at };
      if (phase === 'Training' && replacementReady(ctx, obs)) return { type: 'REPLACEMENT_READY', at };
      if (phase === 'Training' && agent?.rebalanceRecommendation && ctx.replacement === undefined && prelaunchOnRebalance(status.spec)) {
        return { type: 'REBALANCE_RECOMMENDED', at };
      }
      if (deadlinePassed) return { type: 'TICK', at };
      const rehearsal = status.spec.rehearsal;
      if (
        phase === 'Training' &&
        rehearsal &&
        !ctx.rehearsalDone &&
        ctx.attempt === 1 &&
        status.trainingStartedAt &&
        at >= Date.parse(status.trainingStartedAt) + parseDuration(rehearsal.interruptAfter)
      ) {
        return { type: 'REHEARSE', at };
      }
      if (instance && instance.state === 'running' && agentSilent(status, agent, at)) return { type: 'REDEPLOY', at };
      return undefined;
    }

    case 'Interrupted': {
      if (agent?.phase === 'succeeded') return { type: 'JOB_SUCCEEDED', at };
      if (agent && STOPPED_AGENT.has(agent.phase)) return { type: 'AGENT_STOPPED', at };
      const gone = instanceGone(status, ctx, obs);
      if (gone || !instance || instance.state === 'terminated') {
        return { type: 'INSTANCE_GONE', spot: true, reason: gone?.reason ?? 'instance gone', at };
      }
      // Interrupted before the agent was started (still provisioning): nothing to checkpoint, move on.
      if (!status.agent || status.agent.attempt !== ctx.attempt || !status.agent.deployedAt) return { type: 'AGENT_STOPPED', at };
      // The prelaunched replacement's instance is up: ship the code and set up while the old job saves.
      if (replacementReady(ctx, obs)) return { type: 'REPLACEMENT_READY', at };
      if (deadlinePassed) return { type: 'TICK', at };
      return undefined;
    }

    case 'Resuming': {
      // The old job has stopped: the prelaunched replacement takes over now, its old instance
      // terminating meanwhile. Otherwise wait until every instance but the replacement is gone.
      if (ctx.replacement !== undefined && ctx.previousStopped) return { type: 'HANDOVER', at };
      const isReplacement = (o: InstanceObservation) => ctx.replacement !== undefined && o.generation === ctx.generation && o.attempt === ctx.replacement;
      return obs.instances.some((o) => LIVE(o) && !isReplacement(o)) ? undefined : { type: 'INSTANCE_GONE', spot: false, reason: 'released', at };
    }

    case 'Terminating': {
      const sub = subPhaseOf(snapshot.value);
      const anyLive = obs.instances.some(LIVE);
      if (sub === 'Releasing') {
        return anyLive ? undefined : { type: 'INSTANCE_GONE', spot: false, reason: 'released', at };
      }
      if (!anyLive && !recentlyLaunched(status, ctx, at)) {
        return { type: 'INSTANCE_GONE', spot: false, reason: 'no instance', at };
      }
      if (agent && STOPPED_AGENT.has(agent.phase)) return { type: 'AGENT_STOPPED', at };
      // Never deployed for this attempt: there is nothing to checkpoint, release at once.
      if (!status.agent || status.agent.attempt !== ctx.attempt || !status.agent.deployedAt) {
        return { type: 'AGENT_STOPPED', at };
      }
      if (deadlinePassed) return { type: 'TICK', at };
      return undefined;
    }

    default:
      return undefined;
  }
}

/** The replacement launched during the notice is running and ready, and its agent not yet deployed. */
function replacementReady(ctx: RunSnapshot['context'], obs: Observed): boolean {
  if (ctx.replacement === undefined || ctx.replacementDeployed) return false;
  const seen = obs.instances.find((o) => o.generation === ctx.generation && o.attempt === ctx.replacement);
  return seen !== undefined && seen.state === 'running' && seen.ready;
}

function recentlyLaunched(status: RunStatus, ctx: RunSnapshot['context'], now: number): boolean {
  const record = recordedInstance(status, ctx);
  return record !== undefined && !record.endedAt && now - Date.parse(record.launchedAt) < LAUNCH_VISIBILITY_GRACE_MS;
}

function agentSilent(status: RunStatus, agent: AgentStatus | undefined, now: number): boolean {
  const deployedAt = status.agent?.deployedAt ? Date.parse(status.agent.deployedAt) : undefined;
  if (deployedAt === undefined || now - deployedAt < AGENT_SILENCE_MS) return false;
  if (!agent) return true;
  return now - Date.parse(agent.heartbeatAt) > AGENT_SILENCE_MS;
}

function budgetMessage(status: RunStatus, budget: number): string {
  return (
    `spent $${status.costUSD.toFixed(2)}, which reaches spec.budget.maxCostUSD ($${budget.toFixed(2)}); ` +
    'the job was checkpointed and stopped; its checkpoints stay in storage'
  );
}
