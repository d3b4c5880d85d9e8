// `runctl plan`: what a reconcile pass would change, run by run, from the desired state (the spec
// files) and what the store remembers. Pure: no clock, no I/O, no provider. `apply` computes the
// same plan from the same inputs before it reconciles, and the reconciler's decisions (derive.ts,
// prune-guard.ts) are the ones mirrored here, so plan and apply cannot disagree.
import type { PersistedRun } from '../machine/snapshot.js';
import type { RungQuote } from '../providers/types.js';
import { parseDuration } from '../spec/duration.js';
import type { LoadedRun, RunSpec } from '../spec/types.js';
import type { Phase, RunStatus } from '../state/types.js';
import type { DesiredState } from './controller.js';
import type { PlannedOrphanInstance } from './plan-orphans.js';
import { prelaunchEnabled, prelaunchOnRebalance } from './prelaunch.js';
import { pruneRefusal } from './prune-guard.js';
import { specChanges, type FieldChange } from './spec-diff.js';

export type PlanAction = 'create' | 'no-op' | 'update' | 'new-generation' | 'suspend' | 'resume' | 'prune' | 'orphaned';

/**
 * Actions a pass carries out (everything but no-op and orphaned): these make `--detailed-exitcode`
 * return 2. `orphaned` is a run whose spec file is gone but which is not pruned: it is left alone.
 * Orphaned *instances* (Plan.orphanedInstances) are another thing: those a pass terminates.
 */
export const CHANGING_ACTIONS: ReadonlySet<PlanAction> = new Set(['create', 'update', 'new-generation', 'suspend', 'resume', 'prune']);

export interface PriceEstimate {
  /** USD per instance-hour; null when it cannot be known without asking the cloud. */
  hourlyUSD: number | null;
  note: string;
  /**
   * The most expensive case: the highest hourly price the run may pay (a spot rung's ceiling is
   * spec.resources.maxSpotPrice, else EC2's default, the on-demand price) times
   * spec.timeouts.training, in USD; null when a price it needs is unknown.
   */
  worstCaseUSD?: number | null;
}

export interface PlannedRun {
  run: string;
  action: PlanAction;
  /** One line: why this action. */
  reason: string;
  /** What happens to the run, in particular to a running attempt. */
  effect: string;
  /** The spec file (desired), or the file it last came from (removed runs). */
  file?: string;
  /** Phase now; undefined for runs not created yet. */
  phase?: Phase;
  /** Generation now and after the pass. */
  generation: { from?: number; to: number };
  /** Fields that differ from what was last applied: trained ones for a new generation, supervision ones otherwise. */
  changes: FieldChange[];
  price: PriceEstimate;
  /**
   * How an interruption will be recovered, with spec.recovery.prelaunch's effective value (an unset
   * field is on for the spot markets): set for a run about to start and when a prelaunch field changed.
   */
  recovery?: RecoveryPlan;
}

export interface RecoveryPlan {
  /** prelaunchEnabled(spec): whether a notice launches the replacement at once. */
  prelaunch: boolean;
  /** One line for people, saying where the value comes from. */
  note: string;
}

export interface Plan {
  runs: PlannedRun[];
  /** Set when prune was asked for but refused this pass (see prune-guard.ts). */
  pruneRefused?: string;
  /** Files with errors: the plan is incomplete and `plan` exits 1. */
  invalidFiles: string[];
  counts: Record<PlanAction, number>;
  /**
   * Instances of this controller no run will terminate (run finished, deleted, unknown or
   * re-created), which the pass's orphan sweep terminates (plan-orphans.ts). Undefined when not
   * looked for (--no-cloud-checks, or the listing failed).
   */
  orphanedInstances?: PlannedOrphanInstance[];
  /** Number of runs a pass would change, plus orphaned instances it would terminate. */
  changes: number;
}

export interface PlanInput {
  desired: DesiredState;
  statuses: readonly RunStatus[];
  prune: boolean;
  allowEmptyPrune?: boolean;
}

const ACTIVE: ReadonlySet<Phase> = new Set(['Provisioning', 'Syncing', 'Installing', 'Training', 'Interrupted', 'Resuming']);
const ENDED: ReadonlySet<Phase> = new Set(['Completed', 'Failed']);

export function planChanges(input: PlanInput): Plan {
  const { desired } = input;
  const byName = new Map(desired.runs.map((r) => [r.run.metadata.name, r]));
  const statuses = new Map(input.statuses.map((s) => [s.run, s]));
  const invalid = new Set(desired.invalidFiles);
  const refusal = input.prune
    ? pruneRefusal({
        desired: [...byName.keys()],
        stored: input.statuses.filter((s) => s.phase !== 'Deleted').map((s) => ({ run: s.run, file: s.source?.file })),
        invalidFiles: desired.invalidFiles,
        unreadable: desired.unreadable ?? [],
        allowEmpty: input.allowEmptyPrune,
      })
    : undefined;

  const runs: PlannedRun[] = [];
  for (const name of [...new Set([...byName.keys(), ...statuses.keys()])].sort()) {
    const loaded = byName.get(name);
    const status = statuses.get(name);
    if (loaded && !status) runs.push(planCreate(loaded));
    else if (loaded && status) runs.push(planExisting(loaded, status));
    else if (status && status.phase !== 'Deleted') {
      runs.push(planRemoved(status, { prune: input.prune, refusal, invalidSource: Boolean(status.source && invalid.has(status.source.file)) }));
    }
  }

  const counts = { create: 0, 'no-op': 0, update: 0, 'new-generation': 0, suspend: 0, resume: 0, prune: 0, orphaned: 0 } as Record<PlanAction, number>;
  for (const r of runs) counts[r.action]++;
  const plan: Plan = {
    runs,
    invalidFiles: [...desired.invalidFiles],
    counts,
    changes: runs.filter((r) => CHANGING_ACTIONS.has(r.action)).length,
  };
  if (refusal) plan.pruneRefused = refusal;
  return plan;
}

/** The plan with the orphaned instances a pass terminates; each counts as a change. */
export function withOrphanedInstances(plan: Plan, instances: readonly PlannedOrphanInstance[]): Plan {
  const runChanges = plan.runs.filter((r) => CHANGING_ACTIONS.has(r.action)).length;
  return { ...plan, orphanedInstances: [...instances], changes: runChanges + instances.length };
}

function planCreate(loaded: LoadedRun): PlannedRun {
  const spec = loaded.run.spec;
  return {
    run: loaded.run.metadata.name,
    action: 'create',
    reason: `new in ${loaded.file}`,
    effect: spec.suspend ? 'recorded as Suspended (spec.suspend is true): nothing is launched' : `generation 1 starts: ${launchWords(spec)}`,
    file: loaded.file,
    generation: { to: 1 },
    changes: [],
    price: estimatePrice(spec),
    ...(spec.suspend ? {} : { recovery: recoveryPlan(spec) }),
  };
}

function planExisting(loaded: LoadedRun, status: RunStatus): PlannedRun {
  const spec = loaded.run.spec;
  const phase = status.phase;
  const ctx = (status.snapshot as PersistedRun | undefined)?.context;
  const base = { run: status.run, file: loaded.file, phase, price: estimatePrice(spec) };
  const pending = status.nextSpec;
  if (phase === 'Deleted') {
    return { ...base, action: 'no-op', reason: 'the run was deleted', effect: 'nothing: give the run a new name to start it again', generation: { from: status.generation, to: status.generation }, changes: [] };
  }

  // Mirrors deriveSpecEvent: a hash that is neither the current nor the pending generation's is new.
  if (loaded.specHash !== status.specHash && loaded.specHash !== pending?.specHash) {
    const from = Math.max(status.generation, pending?.generation ?? 0);
    const to = from + 1;
    const changes = specChanges(pending?.spec ?? status.spec, spec);
    const trained = changes.filter((c) => c.trained);
    return {
      ...base,
      action: 'new-generation',
      reason: `what is trained changed: ${fieldList(trained.length ? trained : changes)}`,
      effect: newGenerationEffect(status, spec, to, ctx?.stopReason),
      generation: { from: status.generation, to },
      changes: trained.length ? trained : changes,
      ...(touchesPrelaunch(changes) ? { recovery: recoveryPlan(spec) } : {}),
    };
  }

  const applied = pending && pending.specHash === loaded.specHash ? pending.spec : status.spec;
  const changes = specChanges(applied, spec).filter((c) => c.path !== 'suspend');
  const generation = { from: status.generation, to: pending?.specHash === loaded.specHash ? pending.generation : status.generation };
  const stoppingFor = phase === 'Terminating' ? ctx?.stopReason : undefined;

  // Mirrors deriveSpecEvent's suspend and resume rules.
  if (spec.suspend && !['Suspended', 'Completed', 'Failed'].includes(phase) && stoppingFor !== 'suspend') {
    if (phase !== 'Terminating' || stoppingFor === 'new-generation') {
      return {
        ...base,
        action: 'suspend',
        reason: 'spec.suspend is true',
        effect: ACTIVE.has(phase)
          ? `attempt ${status.attempt} is checkpointed and stopped (final checkpoint sync confirmed), then its instance is terminated; checkpoints stay in storage`
          : phase === 'Terminating'
            ? 'the attempt already stopping is not replaced: the run rests as Suspended'
            : 'nothing was launched yet: the run rests as Suspended',
        generation,
        changes,
      };
    }
  }
  if (!spec.suspend && (phase === 'Suspended' || (phase === 'Pending' && status.spec.suspend))) {
    return {
      ...base,
      action: 'resume',
      reason: 'spec.suspend is false',
      effect:
        phase === 'Suspended'
          ? `attempt ${status.attempt + 1} starts on new capacity from the latest checkpoint of generation ${generation.to}`
          : `generation ${generation.to} starts: ${launchWords(spec)}`,
      generation,
      changes,
    };
  }
  if (changes.length > 0) {
    return {
      ...base,
      action: 'update',
      reason: `supervision changed: ${fieldList(changes)}`,
      effect: inPlaceEffect(phase),
      generation,
      changes,
      ...(touchesPrelaunch(changes) ? { recovery: recoveryPlan(spec) } : {}),
    };
  }
  return { ...base, action: 'no-op', reason: noOpReason(status, loaded), effect: 'nothing changes', generation, changes: [] };
}

function planRemoved(status: RunStatus, opts: { prune: boolean; refusal?: string; invalidSource: boolean }): PlannedRun {
  const file = status.source?.file;
  const base = { run: status.run, file, phase: status.phase, generation: { from: status.generation, to: status.generation }, changes: [], price: estimatePrice(status.spec) };
  if (opts.invalidSource) {
    return { ...base, action: 'no-op', reason: `${file} has errors: the run keeps its last valid spec`, effect: 'nothing changes until the file is fixed' };
  }
  const ctx = (status.snapshot as PersistedRun | undefined)?.context;
  if (status.phase === 'Terminating' && ctx?.stopReason === 'delete') {
    return { ...base, action: 'no-op', reason: 'being deleted: the attempt is stopping', effect: 'the deletion already under way goes on' };
  }
  const gone = file ? `${file} no longer defines it` : 'no spec file defines it';
  if (!opts.prune) {
    return { ...base, action: 'orphaned', reason: `${gone}; prune is off`, effect: 'left as it is (enable prune, or put the file back)' };
  }
  if (opts.refusal) {
    return { ...base, action: 'orphaned', reason: `${gone}; prune refused this pass`, effect: 'left as it is until the runs folder looks complete again' };
  }
  const stopping = ACTIVE.has(status.phase) || status.phase === 'Terminating';
  return {
    ...base,
    action: 'prune',
    reason: `${gone}; prune is on`,
    effect: stopping
      ? `attempt ${status.attempt} is checkpointed and stopped (final checkpoint sync confirmed), its instance terminated, then status and events move to the archive`
      : 'status and events move to the archive (nothing is running)',
  };
}

function newGenerationEffect(status: RunStatus, spec: RunSpec, to: number, stopReason: string | undefined): string {
  const from = status.generation;
  const seed = spec.recovery.seedFromPreviousGeneration
    ? `seeded from generation ${from}'s latest checkpoint (spec.recovery.seedFromPreviousGeneration)`
    : 'from scratch (spec.recovery.seedFromPreviousGeneration is false)';
  const phase = status.phase;
  if (phase === 'Pending') return `generation ${to} replaces generation ${from} before anything started`;
  if (phase === 'Suspended') {
    return spec.suspend
      ? `generation ${to} replaces generation ${from}; the run stays Suspended until spec.suspend is false`
      : `generation ${to} replaces generation ${from} and starts ${seed}`;
  }
  if (ACTIVE.has(phase)) {
    return `attempt ${status.attempt} of generation ${from} is checkpointed and stopped (final checkpoint sync confirmed), its instance terminated, then generation ${to} starts ${seed}`;
  }
  if (phase === 'Terminating') {
    return stopReason === 'delete'
      ? `the run is being deleted; generation ${to} is remembered but the deletion goes ahead`
      : `generation ${to} starts ${seed} once the attempt already stopping has stopped`;
  }
  if (ENDED.has(phase)) return `generation ${to} starts on new capacity ${seed}`;
  return `generation ${to} replaces generation ${from}`;
}

function inPlaceEffect(phase: Phase): string {
  if (ACTIVE.has(phase) || phase === 'Terminating') {
    return 'applied in place, no restart: limits (timeouts, budget, recovery) apply now; checkpoint settings from the next attempt';
  }
  if (ENDED.has(phase)) return `recorded; the run is ${phase} so nothing runs`;
  return 'recorded in place';
}

function noOpReason(status: RunStatus, loaded: LoadedRun): string {
  const pending = status.nextSpec;
  if (pending && pending.specHash === loaded.specHash) {
    return `up to date; generation ${pending.generation} starts once attempt ${status.attempt} of generation ${status.generation} has stopped`;
  }
  if (status.phase === 'Terminating') return 'up to date; the run is stopping';
  return `up to date: ${status.phase}, generation ${status.generation}`;
}

/**
 * What an interruption will do, with recovery.prelaunch's effective value and where it comes from
 * (mirrors prelaunchEnabled, which derive.ts asks on every notice). Runs stored before the default
 * changed hold prelaunch: false in their applied spec; the line says what the value is now.
 */
export function recoveryPlan(spec: RunSpec): RecoveryPlan {
  const prelaunch = prelaunchEnabled(spec);
  const explicit = spec.recovery.prelaunch;
  const source = explicit !== undefined ? `recovery.prelaunch: ${explicit}` : `recovery.prelaunch unset: ${prelaunch ? 'on' : 'off'} for market ${spec.resources.market}`;
  const what = prelaunch
    ? `a notice launches the next attempt's capacity at once; its job starts once the final checkpoint is safe${prelaunchOnRebalance(spec) ? ' (also on a rebalance recommendation)' : ''}`
    : 'after a notice the replacement is launched once the interrupted attempt has stopped';
  return { prelaunch, note: `prelaunch ${prelaunch ? 'on' : 'off'} (${source}): ${what}` };
}

function touchesPrelaunch(changes: readonly FieldChange[]): boolean {
  return changes.some((c) => c.path === 'recovery.prelaunch' || c.path === 'recovery.prelaunchOnRebalance' || c.path === 'resources.market');
}

function launchWords(spec: RunSpec): string {
  if (spec.provider === 'local') return 'a local sandbox is launched';
  const types = spec.resources.instanceTypes.join(' or ') || 'an instance';
  return `${types} (${spec.resources.market}) is launched`;
}

function fieldList(changes: readonly FieldChange[]): string {
  const paths = changes.map((c) => c.path);
  return paths.length > 6 ? `${paths.slice(0, 6).join(', ')} and ${paths.length - 6} more` : paths.join(', ');
}

/**
 * Hourly price while the run has an instance. Local runs cost nothing; AWS prices are not known
 * without asking AWS (spot moves, on-demand needs the Price List API), so they say "unknown"
 * rather than guess, with the spec's own ceiling when it sets one.
 */
export function estimatePrice(spec: RunSpec): PriceEstimate {
  if (spec.provider === 'local') return { hourlyUSD: 0, note: '$0.00/h (local)', worstCaseUSD: 0 };
  const ceiling = spec.resources.maxSpotPrice;
  switch (spec.resources.market) {
    case 'spot': {
      const worst = ceiling !== undefined ? Math.round(ceiling * (parseDuration(spec.timeouts.training) / 3_600_000) * 100) / 100 : null;
      return {
        hourlyUSD: null,
        note:
          `unknown (spot price is read at launch${ceiling !== undefined ? `; at most $${ceiling.toFixed(2)}/h by spec.resources.maxSpotPrice` : ''})` +
          (worst !== null ? `; most expensive case $${worst.toFixed(2)} (x ${spec.timeouts.training}, spec.timeouts.training)` : ''),
        worstCaseUSD: worst,
      };
    }
    case 'spot-then-on-demand':
      return {
        hourlyUSD: null,
        note: `unknown (spot price is read at launch${ceiling !== undefined ? `, at most $${ceiling.toFixed(2)}/h` : ''}; on-demand price if spot is short)`,
      };
    case 'on-demand':
      return { hourlyUSD: null, note: 'unknown (on-demand price is not known offline)' };
  }
}

/**
 * The price of a run from the provider's quotes of its ladder (Provider.quoteSpec): the hourly
 * price of the first rung (what a launch tries first) and the range over the rungs, and the most
 * expensive case: the highest price the run may pay for an hour times spec.timeouts.training. A
 * spot rung may pay up to its ceiling (spec.resources.maxSpotPrice, else the on-demand price, EC2's
 * default ceiling), not just today's spot price. Unknown prices are named, never filled in.
 */
export function priceFromQuotes(spec: RunSpec, quotes: readonly RungQuote[]): PriceEstimate {
  if (quotes.length === 0) return estimatePrice(spec);
  const known = quotes.filter((q) => q.usdPerHour !== undefined);
  const first = quotes[0] as RungQuote;
  const where = (q: RungQuote) => [q.market, q.instanceType, q.zone].filter(Boolean).join(' ');
  const usd = (n: number) => `$${n < 1 ? n.toFixed(4) : n.toFixed(2)}`;
  const missing = quotes.filter((q) => q.usdPerHour === undefined);
  let note =
    first.usdPerHour !== undefined
      ? `${usd(first.usdPerHour)}/h (${where(first)}, ${first.source})`
      : `unknown for ${where(first)} (${first.unknown ?? 'no price'})`;
  if (known.length > 1) {
    const prices = known.map((q) => q.usdPerHour as number);
    note += `; ${usd(Math.min(...prices))}-${usd(Math.max(...prices))}/h over ${quotes.length} rungs`;
  }
  if (missing.length > 0 && first.usdPerHour !== undefined) note += `; ${missing.length} rung(s) unpriced: ${missing[0]?.unknown ?? 'no price'}`;
  // The ceiling of each rung: what it may cost per hour at worst.
  const ceilings = quotes.map((q) => {
    if (q.market === 'on-demand') return q.usdPerHour;
    if (spec.resources.maxSpotPrice !== undefined) return spec.resources.maxSpotPrice;
    return quotes.find((o) => o.market === 'on-demand' && o.instanceType === q.instanceType)?.usdPerHour;
  });
  const hours = parseDuration(spec.timeouts.training) / 3_600_000;
  let worstCaseUSD: number | null = null;
  if (ceilings.every((c) => c !== undefined)) {
    const worst = Math.max(...(ceilings as number[]));
    worstCaseUSD = Math.round(worst * hours * 100) / 100;
    note += `; most expensive case ${usd(worst)}/h x ${spec.timeouts.training} (spec.timeouts.training) = $${worstCaseUSD.toFixed(2)}`;
  } else {
    note += '; most expensive case unknown (a spot rung has no ceiling: set spec.resources.maxSpotPrice, or allow pricing:GetProducts)';
  }
  return { hourlyUSD: first.usdPerHour ?? null, note, worstCaseUSD };
}
