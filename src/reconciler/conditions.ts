// Kubernetes-style conditions derived from the run's phase and what the machine remembers.
// lastTransitionTime changes only when a condition's status actually flips.
import type { RunContext } from '../machine/run-machine.js';
import type { RestoredFrom } from '../providers/types.js';
import type { Condition, Phase, RunStatus } from '../state/types.js';
import { faultConditions, type WantedCondition } from './faults.js';

const ACTIVE: readonly Phase[] = ['Provisioning', 'Syncing', 'Installing', 'Training', 'Interrupted', 'Resuming', 'Terminating'];

type Wanted = WantedCondition;

export function wantedConditions(phase: Phase, ctx: RunContext, status: RunStatus): Wanted[] {
  const out: Wanted[] = [];
  out.push(
    ACTIVE.includes(phase)
      ? { type: 'Active', status: 'True', reason: phase, message: `attempt ${ctx.attempt} is ${phase.toLowerCase()}` }
      : { type: 'Active', status: 'False', reason: phase, message: `the run is ${phase.toLowerCase()}` },
  );
  if (phase === 'Completed') {
    out.push({ type: 'Completed', status: 'True', reason: 'JobSucceeded', message: `the job exited 0 on attempt ${ctx.attempt}` });
  }
  if (phase === 'Failed' && ctx.failure) {
    out.push({ type: 'Failed', status: 'True', reason: ctx.failure.reason, message: ctx.failure.message });
  }
  out.push(
    phase === 'Suspended'
      ? { type: 'Suspended', status: 'True', reason: 'SpecSuspended', message: 'spec.suspend is true; set it to false to resume from the latest checkpoint' }
      : { type: 'Suspended', status: 'False', reason: 'NotSuspended', message: '' },
  );
  // A retry after the job failed is not an interruption: it has its own condition.
  const resumingFor = phase === 'Resuming' ? (ctx.resumeCause ?? 'interruption') : undefined;
  if (ctx.interruptions > 0 || phase === 'Interrupted' || resumingFor === 'interruption') {
    const now = phase === 'Interrupted' || resumingFor === 'interruption';
    out.push({
      type: 'Interrupted',
      status: now ? 'True' : 'False',
      reason: now ? 'Interruption' : 'Recovered',
      message: `${ctx.interruptions} interruption(s) so far; last: ${ctx.lastInterruption ?? 'none'}`,
    });
  }
  if (ctx.errorRetries > 0) {
    const now = resumingFor === 'retry';
    out.push({
      type: 'Retrying',
      status: now ? 'True' : 'False',
      reason: now ? 'ErrorRetry' : 'Retried',
      message: `${ctx.errorRetries} of ${ctx.limits.maxRetriesOnError} retries on error used (spec.recovery.maxRetriesOnError); last: ${ctx.lastRetry ?? 'unknown'}`,
    });
  }
  if (status.launchBlocked && phase === 'Provisioning') {
    const reason = status.launchBlocked.reason ?? 'InsufficientCapacity';
    // A profile IAM has not propagated yet is not a capacity problem; quotas are capacity the account is granted.
    const type = reason === 'InstanceProfileNotReady' ? 'InstanceProfileReady' : 'CapacityAvailable';
    out.push({ type, status: 'False', reason, message: status.launchBlocked.message });
  }
  const unknown = status.ledger?.unknown ?? [];
  if (unknown.length > 0) {
    // The budget counts only what is priced: say what is not, and what to do.
    out.push({
      type: 'CostKnown',
      status: 'False',
      reason: 'PriceUnavailable',
      message:
        `the cost of ${unknown.join('; ')} is not known, so it is not counted${status.spec.budget.maxCostUSD !== undefined ? ' against spec.budget.maxCostUSD' : ''}; ` +
        'grant the controller pricing:GetProducts and ec2:DescribeSpotPriceHistory (`runctl iam-policy`), or see the reason above',
    });
  }
  const fallback = checkpointFallback(status.agent?.restoredFrom);
  if (fallback) out.push(fallback);
  // Faults the agent reports (the fault channel): one condition per reason, after the run's own.
  out.push(...faultConditions(status.faults));
  return out;
}

export function mergeConditions(existing: Condition[], wanted: Wanted[], now: string): Condition[] {
  const byType = new Map(existing.map((c) => [c.type, c]));
  const merged: Condition[] = [];
  for (const w of wanted) {
    const old = byType.get(w.type);
    byType.delete(w.type);
    const flipped = !old || old.status !== w.status;
    const { at, ...condition } = w;
    merged.push({ ...condition, lastTransitionTime: flipped ? (at ?? now) : (old as Condition).lastTransitionTime });
  }
  // Conditions no longer derived (e.g. CapacityAvailable after capacity was found) are kept as history
  // only when they carry information; transient ones are dropped.
  for (const old of byType.values()) {
    if (old.type === 'CheckpointFallback') merged.push(old);
  }
  return merged;
}

/**
 * `CheckpointFallback`: the attempt restored an older checkpoint than the newest kept. Reasons:
 * `ResumeFailed` when an earlier attempt restored a newer one and failed before publishing newer
 * training state (evidence against it and against what that attempt published from it, issue 9;
 * docs/checkpoints.md "Falling back after a failed resume"); `NewestCheckpointCorrupt` when the newest
 * failed verification. The message names the checkpoints passed over and why.
 */
export function checkpointFallback(restored: RestoredFrom | undefined): Wanted | undefined {
  if (!restored) return undefined;
  const avoided = restored.avoided ?? [];
  if (avoided.length > 0) {
    const why = avoided.map((a) =>
      a.descendsFrom
        ? `checkpoint ${a.id} was published by attempt ${a.attempt} from ${a.descendsFrom} without newer training state before it failed (${a.reason})`
        : `checkpoint ${a.id} was restored by attempt ${a.attempt}, which failed before publishing a newer one (${a.reason})`,
    );
    const corrupt = restored.fallbackFrom && !avoided.some((a) => a.id === restored.fallbackFrom) ? `; checkpoint ${restored.fallbackFrom} failed verification (${restored.reason ?? 'checksum mismatch'})` : '';
    return { type: 'CheckpointFallback', status: 'True', reason: 'ResumeFailed', message: `${why.join('; ')}${corrupt}; restored ${restored.id} instead` };
  }
  if (restored.fallbackFrom) {
    return {
      type: 'CheckpointFallback',
      status: 'True',
      reason: 'NewestCheckpointCorrupt',
      message: `checkpoint ${restored.fallbackFrom} failed verification (${restored.reason ?? 'checksum mismatch'}); restored ${restored.id} instead`,
    };
  }
  return undefined;
}
